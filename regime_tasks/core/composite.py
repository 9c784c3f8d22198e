"""Composite driver series: chain-linked equal-weight indices (DECISIONS D3) and bucket membership.

Method, for bar t and the constituents that have a bar at t *and* a close at t−1:

    r_o = o_i(t)/c_i(t−1), r_h = h_i(t)/c_i(t−1), r_l = l_i(t)/c_i(t−1), r_c = c_i(t)/c_i(t−1)
    I(t) = I(t−1) · mean(r_c),  O = I(t−1) · mean(r_o),  H = I(t−1) · mean(r_h),  L = I(t−1) · mean(r_l)

Base 100 at the first bar (O = H = L = C = 100 there: no relative move is known yet). Volume is the sum of
the constituents' USD volume (``volume × close``); ``constituents`` counts the members that formed the bar.

Why not the plan's ``avg(open)/max(high)/min(low)/avg(close)`` of raw prices: averaging raw prices is
price-weighted (ETH at $3,000 swamps HYPE at $30); max/min across assets measures the *spread between assets*,
not volatility, so ATR explodes and every "within 1 ATR" test of the engine passes; and a constituent that
misses one bar makes the raw average jump. Means of ratios keep L ≤ O, C ≤ H (each ratio obeys it), give
every member the same weight, and a missing bar simply leaves that member out of that bar.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from regime_tasks.core.constants import BUCKETS, MAX_BUCKET_CONSTITUENTS
from regime_tasks.errors import DataValidationError

BASE_LEVEL = 100.0


def chain_linked_composite(
    constituents: Mapping[str, pd.DataFrame], *, base: float = BASE_LEVEL, usd_volume: bool = True
) -> pd.DataFrame:
    """Equal-weight chain-linked index OHLC of ``constituents`` (symbol → bar frame), see module docstring.

    A bar exists wherever at least one constituent has two consecutive bars (t−1, t); the first bar of the
    union is the base. A constituent joins on its second bar, so it never moves the index on its first.
    """
    frames = {k: v for k, v in constituents.items() if not v.empty}
    if not frames:
        raise DataValidationError("composite needs at least one constituent with bars", series="composite")
    index = frames[next(iter(frames))].index
    for f in frames.values():
        index = index.union(f.index)
    index = index.rename("timestamp")
    n_t, n_c = len(index), len(frames)
    ro = np.full((n_t, n_c), np.nan)
    rh, rl, rc = ro.copy(), ro.copy(), ro.copy()
    vol = np.zeros(n_t)
    for j, frame in enumerate(frames.values()):
        pos = index.get_indexer(frame.index)
        o, h, lo, c = (frame[col].to_numpy(dtype=np.float64) for col in ("open", "high", "low", "close"))
        v = frame["volume"].to_numpy(dtype=np.float64) * (c if usd_volume else 1.0)
        prev_close = np.concatenate([[np.nan], c[:-1]])
        # "consecutive" means the previous row of this constituent is the previous row of the union index
        consecutive = np.concatenate([[False], np.diff(pos) == 1])
        ok = consecutive & np.isfinite(prev_close)
        rows = pos[ok]
        ro[rows, j] = o[ok] / prev_close[ok]
        rh[rows, j] = h[ok] / prev_close[ok]
        rl[rows, j] = lo[ok] / prev_close[ok]
        rc[rows, j] = c[ok] / prev_close[ok]
        vol[rows] += v[ok]
    counts = np.isfinite(rc).sum(axis=1)
    safe = np.where(counts > 0, counts, 1)
    m_o, m_h, m_l, m_c = (np.nansum(a, axis=1) / safe for a in (ro, rh, rl, rc))
    has_bar = counts > 0
    has_bar[0] = True  # base bar
    m_c = np.where(counts > 0, m_c, np.nan)
    level_ratio = np.where(np.isfinite(m_c), m_c, 1.0)
    level_ratio[0] = 1.0
    close = base * np.cumprod(level_ratio)
    prev_level = np.concatenate([[base], close[:-1]])
    out = pd.DataFrame(
        {
            "open": np.where(counts > 0, prev_level * m_o, base),
            "high": np.where(counts > 0, prev_level * m_h, base),
            "low": np.where(counts > 0, prev_level * m_l, base),
            "close": close,
            "volume": vol,
            "constituents": counts.astype("int64"),
        },
        index=index,
    )
    out = out[has_bar]
    # Float rounding can put a mean a few ulps outside [L, H]; clip so downstream validation holds exactly.
    out["high"] = np.maximum.reduce([out["high"].to_numpy(), out["open"].to_numpy(), out["close"].to_numpy()])
    out["low"] = np.minimum.reduce([out["low"].to_numpy(), out["open"].to_numpy(), out["close"].to_numpy()])
    return out


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
