"""Composite driver series: chain-linked equal-weight indices of log returns (DECISIONS D3, revised) and
point-in-time bucket membership.

Method, for bar t and the constituents that traded at t (a bar with volume > 0) and are members at t:

    r_x = x_i(t) / c_i(last),   x ∈ {o, h, l, c},   c_i(last) = the member's own last traded close before t
    I(t) = I(t−1) · exp(mean_i log r_c),   O = I(t−1) · exp(mean log r_o),   H, L the same way

Base 100 at the first bar. A member that did not trade at t (no bar, or a zero-volume bar: a quote, not a
trade) is left out of t; when it trades again its ratio is taken against its own last close, so the move over
its gap counts once, on the bar it resumes. A constituent joins on its second traded bar. A bar where no member
traded is flat at the previous level with ``constituents = 0`` (the index is known, nothing moved). Volume is the
sum of the members' USD volume (``volume × close``); ``constituents`` counts the members that formed the bar.

Why the log mean (geometric mean of the ratios): the arithmetic mean of ratios is an equal-weight portfolio
rebalanced every bar, and bid/ask bounce of thin coins then grows it with no price trend at all (twenty members
alternating ±30 % around a constant price move it ×10¹¹⁴ over 2,000 bars). Log ratios of a bounce cancel, and with
a stable membership the index's total log return is exactly the mean of the members' total log returns.

Why not the plan's ``avg(open)/max(high)/min(low)/avg(close)`` of raw prices: averaging raw prices is
price-weighted; max/min across assets measures the spread between assets, not volatility.

Reproducibility: sums run sequentially over the constituents sorted by name (``cumsum``, zeros where a member is
absent), so extending a stored index bar by bar (``after=``/``level=``) gives the same bits as a rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from regime_tasks.core.constants import BUCKETS, MAX_BUCKET_CONSTITUENTS
from regime_tasks.errors import DataValidationError

BASE_LEVEL = 100.0
_PRICE_COLS = ("open", "high", "low", "close")


class MemberBars(NamedTuple):
    """One constituent's bars as arrays, the form ``chain_linked_composite`` computes on (a bar frame is turned
    into it first): ``ns`` open times as int64 nanoseconds since the epoch, UTC, ascending; ``values`` one row per
    bar of open, high, low, close, volume (float64). A reader that has the arrays passes them as they are: per
    member, building a frame and taking it apart again was most of a bucket's extension."""

    ns: np.ndarray
    values: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> MemberBars:
        """The arrays of a bar frame (columns open…volume, a DatetimeIndex)."""
        values = np.empty((len(frame), 5))
        for k, col in enumerate((*_PRICE_COLS, "volume")):
            values[:, k] = frame[col].to_numpy(dtype=np.float64)
        return cls(_ns(frame.index), values)

    def __len__(self) -> int:  # bars, not fields
        return len(self.ns)


def _seq_sum(values: np.ndarray) -> np.ndarray:
    """Sums over members (axis 0) added one member after the other: zeros (absent members) never change a bar's
    bits, so a window holding fewer members sums exactly like the full history."""
    total = np.zeros(values.shape[1])
    for row in values:  # sequential on purpose (np.sum would pair terms by position)
        total += row
    return total


def chain_linked_composite(
    constituents: Mapping[str, pd.DataFrame] | Mapping[str, MemberBars],
    *,
    membership: pd.DataFrame | None = None,
    base: float = BASE_LEVEL,
    usd_volume: bool = True,
    after: pd.Timestamp | None = None,
    level: float | None = None,
) -> pd.DataFrame:
    """Equal-weight chain-linked index of log returns of ``constituents`` (symbol → bar frame), see module doc.

    ``membership``: optional boolean frame, index = UTC days, columns = constituent names; a constituent counts
    at bar t only if ``membership.loc[floor(t, day), name]`` is True (days or names absent count as False).
    ``after`` / ``level``: continue a stored index — emit only bars after ``after``, chained from ``level``
    (the stored close at ``after``). The frames must then reach back to each member's last traded bar at or
    before ``after`` so that its first ratio is taken against its own last close.

    Returns columns open, high, low, close, volume, constituents; one row per time a member (that day) has a bar.
    A constituent may be given as :class:`MemberBars` (its arrays) instead of a frame: the same result, bit for bit.
    """
    arrays = {k: v if isinstance(v, MemberBars) else MemberBars.of(v) for k, v in constituents.items() if len(v) > 0}
    names = sorted(arrays)
    if not names:
        raise DataValidationError("composite needs at least one constituent with bars", series="composite")
    if (after is None) != (level is None):
        raise ValueError("after and level go together")
    stamps = {name: arrays[name].ns for name in names}  # ns since epoch, UTC
    table = _MembershipTable(membership)
    member_rows = {name: table.rows(stamps[name], name) for name in names}
    index_ns = np.unique(np.concatenate([stamps[name][member_rows[name]] for name in names]))
    index = pd.DatetimeIndex(index_ns.astype("datetime64[ns]"), tz="UTC", name="timestamp")
    n_t, n_c = len(index), len(names)
    # one row per member (contiguous writes); sums over members run top to bottom (_seq_sum)
    logs = np.zeros((len(_PRICE_COLS), n_c, n_t))  # open, high, low, close
    valid = np.zeros((n_c, n_t), dtype=bool)
    vol = np.zeros((n_c, n_t))
    for j, name in enumerate(names):
        prices = arrays[name].values[:, :4]
        v = arrays[name].values[:, 4]
        traded = v > 0  # a zero-volume bar is a quote: its prices are not a trade
        if traded.sum() < 2:
            continue
        close = prices[:, 3]
        # each traded member bar after its first trade: ratio against the previous traded close (its own last)
        last_traded = np.maximum.accumulate(np.where(traded, np.arange(len(v)), -1))
        prev_pos = np.concatenate([[-1], last_traded[:-1]])
        take = traded & member_rows[name] & (prev_pos >= 0)
        if not take.any():
            continue
        rows = np.searchsorted(index_ns, stamps[name][take])
        logs[:, j, rows] = np.log(prices[take] / close[prev_pos[take], None]).T
        valid[j, rows] = True
        vol[j, rows] = v[take] * (close[take] if usd_volume else 1.0)
    counts = valid.sum(axis=0)
    safe = np.maximum(counts, 1)
    means = {col: _seq_sum(logs[k]) / safe for k, col in enumerate(_PRICE_COLS)}  # 0 where none traded: flat
    start = 0
    first_level = base
    if after is not None:
        start = int(index.searchsorted(pd.Timestamp(after), side="right"))
        first_level = float(level)  # type: ignore[arg-type]
    if start >= n_t:
        return pd.DataFrame(columns=[*_PRICE_COLS, "volume", "constituents"], index=index[:0])
    growth = np.exp(means["close"][start:])
    if after is None:
        growth[0] = 1.0  # the base bar: no relative move is known yet
        close = np.cumprod(np.concatenate([[base], growth[1:]]))
        prev_level = np.concatenate([[base], close[:-1]])
    else:
        close = np.cumprod(np.concatenate([[first_level], growth]))[1:]
        prev_level = np.concatenate([[first_level], close[:-1]])
    sl = slice(start, None)
    out = pd.DataFrame(
        {
            "open": prev_level * np.exp(means["open"][sl]),
            "high": prev_level * np.exp(means["high"][sl]),
            "low": prev_level * np.exp(means["low"][sl]),
            "close": close,
            "volume": _seq_sum(vol[:, sl]),
            "constituents": counts[sl].astype("int64"),
        },
        index=index[sl],
    )
    if after is None:
        out.iloc[0, :4] = base
    # Float rounding can put a mean a few ulps outside [L, H]; clip so downstream validation holds exactly.
    o, h, lo, c = (out[k].to_numpy() for k in _PRICE_COLS)
    out["high"] = np.maximum.reduce([h, o, c])
    out["low"] = np.minimum.reduce([lo, o, c])
    return out


def _ns(index: pd.Index) -> np.ndarray:
    """Bar times as int64 nanoseconds since the epoch, UTC (whatever the index's unit)."""
    stamps = pd.DatetimeIndex(index)
    if stamps.tz is None:
        stamps = stamps.tz_localize("UTC")
    return stamps.as_unit("ns").asi8


class _MembershipTable:
    """Membership days × names as arrays, read once: which of a member's bars fall on days it is a member."""

    DAY_NS = 86_400 * 10**9

    def __init__(self, membership: pd.DataFrame | None) -> None:
        self.on = membership is not None
        if membership is None:
            return
        days = _ns(pd.DatetimeIndex(membership.index).floor("1D"))
        order = np.argsort(days, kind="stable")
        self.days = days[order]
        self.flags = membership.to_numpy(dtype=bool)[order]
        self.columns = {str(c): k for k, c in enumerate(membership.columns)}

    def rows(self, stamps_ns: np.ndarray, name: str) -> np.ndarray:
        """Bars of ``name`` on days it is a member (every bar without a table; none if it is not a column)."""
        if not self.on:
            return np.ones(len(stamps_ns), dtype=bool)
        col = self.columns.get(name)
        if col is None or len(self.days) == 0:
            return np.zeros(len(stamps_ns), dtype=bool)
        bar_days = stamps_ns - stamps_ns % self.DAY_NS
        pos = np.searchsorted(self.days, bar_days, side="right") - 1  # last row of that day (duplicates: last)
        safe = np.clip(pos, 0, None)
        return (pos >= 0) & (self.days[safe] == bar_days) & self.flags[safe, col]


def raw_price_composite(constituents: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The plan's method (§5.1: avg opens/closes, max highs, min lows, summed volume) — for comparison only."""
    frames = {k: v for k, v in constituents.items() if not v.empty}
    panel = pd.concat(frames, axis=1)
    out = pd.DataFrame(
        {
            "open": panel.xs("open", axis=1, level=1).mean(axis=1),
            "high": panel.xs("high", axis=1, level=1).max(axis=1),
            "low": panel.xs("low", axis=1, level=1).min(axis=1),
            "close": panel.xs("close", axis=1, level=1).mean(axis=1),
            "volume": panel.xs("volume", axis=1, level=1).sum(axis=1),
        }
    )
    out.index = out.index.rename("timestamp")
    return out


def arithmetic_mean_composite(constituents: Mapping[str, pd.DataFrame], *, base: float = BASE_LEVEL) -> pd.Series:
    """Close of the first (2026-11) method — mean of the *ratios*, consecutive bars only — for the drift
    comparison in docs/COMPOSITES.md; never used by the product."""
    closes = pd.concat({k: v["close"] for k, v in constituents.items() if not v.empty}, axis=1).sort_index()
    ratios = closes / closes.shift(1)
    growth = ratios.mean(axis=1).fillna(1.0)
    growth.iloc[0] = 1.0
    return base * growth.cumprod()


def bucket_of(market_cap_usd: float, *, nano_max_usd: float, small_max_usd: float, mid_max_usd: float) -> str:
    """nano < nano_max ≤ small < small_max ≤ mid < mid_max ≤ big (D3)."""
    if market_cap_usd < nano_max_usd:
        return "nano"
    if market_cap_usd < small_max_usd:
        return "small"
    if market_cap_usd < mid_max_usd:
        return "mid"
    return "big"


def select_bucket_members(
    market_caps: Mapping[str, float],
    *,
    nano_max_usd: float,
    small_max_usd: float,
    mid_max_usd: float,
    max_members: int = MAX_BUCKET_CONSTITUENTS,
) -> dict[str, list[str]]:
    """Bucket → members, largest market cap first, at most ``max_members`` each; ties by name (deterministic)."""
    out: dict[str, list[str]] = {b: [] for b in BUCKETS}
    for name, cap in sorted(market_caps.items(), key=lambda kv: (-kv[1], kv[0])):
        if cap is None or not np.isfinite(cap) or cap <= 0:
            continue
        bucket = bucket_of(cap, nano_max_usd=nano_max_usd, small_max_usd=small_max_usd, mid_max_usd=mid_max_usd)
        if len(out[bucket]) < max_members:
            out[bucket].append(name)
    return out


def point_in_time_membership(
    daily_caps: pd.DataFrame,
    *,
    nano_max_usd: float,
    small_max_usd: float,
    mid_max_usd: float,
    max_members: int = MAX_BUCKET_CONSTITUENTS,
) -> dict[str, pd.DataFrame]:
    """Bucket → boolean frame (index = day d, columns = tokens): members of day d, from the caps at d−1's close.

    ``daily_caps``: index = UTC day D (the 1d bar opened at D), columns = tokens, value = market cap at the close
    of D (NaN = unknown). Day d uses row d−1 only — nothing known after d−1's close — so members enter and leave
    as their caps cross the thresholds. Per bucket and day: at most ``max_members``, largest cap first, ties by
    name.
    """
    caps = daily_caps.sort_index().reindex(columns=sorted(daily_caps.columns))
    caps.index = pd.DatetimeIndex(caps.index).floor("1D")
    caps = caps.astype("float64")
    caps = caps.where(caps > 0)
    known = caps.notna().to_numpy()
    values = caps.to_numpy()
    bucket_code = np.searchsorted(np.array([nano_max_usd, small_max_usd, mid_max_usd]), np.nan_to_num(values), "right")
    days = caps.index + pd.Timedelta(days=1)  # caps at the close of D decide day D+1
    out: dict[str, pd.DataFrame] = {}
    for code, bucket in enumerate(BUCKETS):
        in_bucket = known & (bucket_code == code)
        ranked = pd.DataFrame(np.where(in_bucket, values, np.nan), index=days, columns=caps.columns)
        rank = ranked.rank(axis=1, ascending=False, method="first")  # ties: column (name) order
        out[bucket] = (rank <= max_members) & in_bucket
        out[bucket].index = out[bucket].index.rename("day")
    return out
