"""Technical analysis of one series: the inputs of the Uptrend Engine v4 (spec §1; DECISIONS D6).

``compute_ta_frame(bars)`` returns per-bar indicators (NaN while not yet defined — never 0) and is what the
replay and the engine's history windows use; ``compute_ta(...)`` takes the last ``window_bars`` closed bars
and returns the payload of the latest bar (``features.ta``). Both are vectorised with numpy/pandas.

Library use: EMA and RSI are the ``ta`` package's definitions (``EMAIndicator`` = pandas ``ewm(span=n,
min_periods=n, adjust=False)``, seeded with the first close, NaN for the first n−1 bars; ``RSIIndicator`` = Wilder
smoothing with α = 1/14, where ``ta`` counts the first bar as a zero change — the spec notes RSI only moves TS
slightly). We make the same pandas calls ``ta`` makes, on bare numpy-backed series: ``ta``'s wrappers re-index
and copy every result, which cost ~1 ms of the 5 ms live-step budget (issue 4). tests/core/test_ta.py checks that
the columns equal ``ta``'s indicators bit for bit, and against plain-Python references.
ATR and ADX are our own vectorised Wilder implementations: ``ta``'s ``AverageTrueRange`` and ``ADXIndicator``
loop over rows in Python (seconds per year of 1m bars) and return 0 during warm-up, which would read as "no
volatility" to the engine. Regression slopes are ours too (a 10-tap convolution).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from regime_tasks.core.bars import fill_gaps

EMA_PERIODS = (20, 30, 50, 60, 144, 250, 333)
SLOPE_EMAS = (20, 60, 144, 250, 333)
DELTA_SLOPE_EMAS = (60, 144, 250, 333)
SLOPE_WINDOW = 10
ATR_PERIOD = 14
ADX_PERIOD = 14
RSI_PERIOD = 14
VOLUME_EWMA_N = 64
SWING_THRESHOLD_ATR = 1.2
SWING_BACKSTEP = 3
SWING_MIN_LEG_BARS = 4
SR_CLUSTER_ATR = 0.5
SR_MAX_LEVELS = 10

SCALAR_COLUMNS = (
    "atr",
    "atr_mean_20",
    "atr_peak_10",
    "atr_norm",
    "adx",
    "adx_slope_10",
    "rsi",
    "rsi_slope_10",
    "sep_fast",
    "sep_mid",
    "dsep_fast_5",
    "dsep_mid_5",
    "vo_z",
)
TA_COLUMNS = (
    *(f"ema{n}" for n in EMA_PERIODS),
    *(f"ema{n}_slope" for n in SLOPE_EMAS),
    *(f"d_ema{n}_slope" for n in DELTA_SLOPE_EMAS),
    *SCALAR_COLUMNS,
)


# --- building blocks -----------------------------------------------------------------------------------
def ls_slope(values: np.ndarray, window: int = SLOPE_WINDOW) -> np.ndarray:
    """Least-squares slope of the last ``window`` values at every bar (NaN until ``window`` values exist)."""
    y = np.asarray(values, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    if len(y) < window:
        return out
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    weights = x / np.sum(x * x)
    # np.convolve flips its kernel: pass the reversed weights so oldest value meets weight[0].
    out[window - 1 :] = np.convolve(y, weights[::-1], mode="valid")
    return out


def normalised_slope(values: np.ndarray, window: int = SLOPE_WINDOW) -> np.ndarray:
    """LS slope of the last ``window`` values divided by the latest value: a fraction per bar."""
    y = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return ls_slope(y, window) / y


def wilder_smooth(values: np.ndarray, period: int, start: int) -> np.ndarray:
    """Wilder's smoothing: mean of ``values[start:start+period]`` at ``start+period−1``, then
    ``s_t = s_{t−1} + (x_t − s_{t−1})/period``. NaN before; NaN inputs after the seed propagate."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    seed_at = start + period - 1
    if len(x) <= seed_at:
        return out
    seeded = x[seed_at:].copy()
    seeded[0] = np.mean(x[start : start + period])
    out[seed_at:] = pd.Series(seeded).ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()
    return out


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """True range; the first bar (no previous close) is high − low."""
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.nanmax(np.vstack([high - low, np.abs(high - prev), np.abs(low - prev)]), axis=0)
    tr[0] = high[0] - low[0]
    return tr


def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = ATR_PERIOD) -> np.ndarray:
    """ATR: first value = mean of the first ``period`` true ranges, then Wilder smoothing."""
    return wilder_smooth(true_range(high, low, close), period, 0)


def wilder_adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = ADX_PERIOD) -> np.ndarray:
    """ADX(period), Wilder: smoothed ±DM and TR from bar 1, DX, then ADX = Wilder average of DX."""
    up = np.concatenate([[np.nan], high[1:] - high[:-1]])
    down = np.concatenate([[np.nan], low[:-1] - low[1:]])
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    plus_dm[0] = minus_dm[0] = np.nan
    tr = true_range(high, low, close)
    s_tr = wilder_smooth(tr, period, 1)
    s_p = wilder_smooth(plus_dm, period, 1)
    s_m = wilder_smooth(minus_dm, period, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        plus_di = 100.0 * s_p / s_tr
        minus_di = 100.0 * s_m / s_tr
        dx = 100.0 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    dx = np.where((plus_di + minus_di) == 0, 0.0, dx)
    first_dx = period  # index of the first defined DX (smoothing seeded at bar `period`)
    return wilder_smooth(dx, period, first_dx)


def volume_z(volume: np.ndarray, n: int = VOLUME_EWMA_N) -> np.ndarray:
    """z of log(1+volume) against the EWMA mean/variance (α = 2/(n+1)) of the *previous* bars, clipped to
    [−4, 6]; 0 when the series has no volume (dominance) or no variance yet."""
    v = np.asarray(volume, dtype=np.float64)
    if not np.any(v > 0):
        return np.zeros_like(v)
    x = pd.Series(np.log1p(np.clip(v, 0, None)))
    ew = x.ewm(alpha=2.0 / (n + 1), adjust=False)
    mean = ew.mean().shift(1).to_numpy()
    var = ew.var(bias=True).shift(1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x.to_numpy() - mean) / np.sqrt(var)
    z = np.where(np.isfinite(z), z, 0.0)
    return np.clip(z, -4.0, 6.0)


# --- the per-bar frame --------------------------------------------------------------------------------
def ema(close: pd.Series, n: int) -> np.ndarray:
    """EMA(n) exactly as ``ta.trend.EMAIndicator(close, n).ema_indicator()`` (NaN for the first n−1 bars)."""
    return close.ewm(span=n, min_periods=n, adjust=False).mean().to_numpy()


def rsi(close: pd.Series, n: int = RSI_PERIOD) -> np.ndarray:
    """RSI(n) exactly as ``ta.momentum.RSIIndicator(close, n).rsi()``: Wilder EWM (α = 1/n) of gains and losses,
    the first bar counting as a zero change; 100 where the average loss is 0."""
    diff = close.diff(1)
    up = diff.where(diff > 0, 0.0)
    down = -diff.where(diff < 0, 0.0)
    avg_up = up.ewm(alpha=1 / n, min_periods=n, adjust=False).mean().to_numpy()
    avg_down = down.ewm(alpha=1 / n, min_periods=n, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(avg_down == 0, 100, 100 - (100 / (1 + avg_up / avg_down)))


def compute_ta_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """Per-bar TA columns (docs/CONTRACTS.md §2) after the columns of ``bars`` (same index).

    When every column of ``bars`` is numeric the result is one float64 block, so that ``to_numpy()`` on it (the
    engine's history) is a view, not a copy.
    """
    close = pd.Series(bars["close"].to_numpy(dtype=np.float64))
    h, lo, c = (bars[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close"))
    cols: dict[str, np.ndarray] = {}
    for n in EMA_PERIODS:
        cols[f"ema{n}"] = ema(close, n)
    for n in SLOPE_EMAS:
        cols[f"ema{n}_slope"] = normalised_slope(cols[f"ema{n}"])
    for n in DELTA_SLOPE_EMAS:
        cols[f"d_ema{n}_slope"] = _lagged_change(cols[f"ema{n}_slope"], SLOPE_WINDOW)
    atr = wilder_atr(h, lo, c)
    cols["atr"] = atr
    atr_series = pd.Series(atr)
    cols["atr_mean_20"] = atr_series.rolling(20).mean().to_numpy()
    cols["atr_peak_10"] = atr_series.rolling(10).max().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["atr_norm"] = atr / cols["ema50"]
    adx = wilder_adx(h, lo, c)
    cols["adx"] = adx
    cols["adx_slope_10"] = ls_slope(adx)
    cols["rsi"] = rsi_values = rsi(close)
    cols["rsi_slope_10"] = ls_slope(rsi_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["sep_fast"] = (cols["ema20"] - cols["ema60"]) / cols["ema60"]
        cols["sep_mid"] = (cols["ema60"] - cols["ema144"]) / cols["ema144"]
    cols["dsep_fast_5"] = _lagged_change(cols["sep_fast"], 5)
    cols["dsep_mid_5"] = _lagged_change(cols["sep_mid"], 5)
    cols["vo_z"] = volume_z(bars["volume"].to_numpy(dtype=np.float64))
    ta_block = [np.asarray(cols[name], dtype=np.float64) for name in TA_COLUMNS]
    names = [*map(str, bars.columns), *TA_COLUMNS]
    if all(pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) for dt in bars.dtypes):
        block = np.column_stack([bars.to_numpy(dtype=np.float64), *ta_block])
        return pd.DataFrame(block, index=bars.index, columns=names, copy=False)
    # a non-numeric column (e.g. the grid's ``filled`` flag) keeps its dtype: slower, but exact
    ta_frame = pd.DataFrame(np.column_stack(ta_block), index=bars.index, columns=list(TA_COLUMNS), copy=False)
    return pd.concat([bars.copy(), ta_frame], axis=1)


def _lagged_change(values: np.ndarray, lag: int) -> np.ndarray:
    """``values[t] − values[t − lag]`` (NaN for the first ``lag`` bars)."""
    out = np.full(values.shape, np.nan)
    out[lag:] = values[lag:] - values[:-lag]
    return out


# --- swings and S/R levels (spec §4 structure, §7) ------------------------------------------------------
NEVER = 2**62  # superseded_at of a pivot version that was never moved


@dataclasses.dataclass(frozen=True, slots=True)
class Pivot:
    """A confirmed swing point: bar position of the extreme, its price, kind, the bar that confirmed it and,
    for a version later moved by a continuing swing, the bar that superseded it."""

    index: int
    price: float
    kind: str  # "high" | "low"
    confirmed_at: int
    superseded_at: int = NEVER


def swing_pivots(
    high: np.ndarray,
    low: np.ndarray,
    atr: np.ndarray,
    *,
    threshold_atr: float = SWING_THRESHOLD_ATR,
    backstep: int = SWING_BACKSTEP,
    min_leg_bars: int = SWING_MIN_LEG_BARS,
    keep_versions: bool = False,
) -> list[Pivot]:
    """Causal zig-zag pivots (one pass, O(n)).

    After a low pivot the running highest high is the candidate; it is confirmed as a high pivot when price
    has retraced from it by ``threshold_atr × ATR`` (ATR of the confirming bar), at least ``backstep`` bars
    have passed since the candidate (a fresh extreme is not trusted at once) and the leg from the previous
    pivot spans at least ``min_leg_bars`` bars. A lower low before that simply moves the previous low pivot
    (the swing was not over). Symmetric after a high pivot. Each pivot records ``confirmed_at``: replay
    uses only pivots confirmed at or before the bar it evaluates, so there is no look-ahead.

    With ``keep_versions`` the result also holds every superseded version of a moved pivot (with
    ``superseded_at``), so :func:`pivots_known_at` can give exactly what a run ending at bar t would have seen.
    """
    n = len(high)
    pivots: list[Pivot] = []
    versions: list[Pivot] = []
    if n == 0:
        return pivots
    atr = np.asarray(atr, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(atr) & (atr > 0)
    thresholds = np.where(usable, threshold_atr * np.where(usable, atr, 0.0), math.inf).tolist()
    high, low = (np.asarray(x, dtype=np.float64).tolist() for x in (high, low))

    # This loop runs once per bar in Python and is most of a live step's engine time: keep it allocation-free.
    hi_i, lo_i = 0, 0  # running candidates
    t = 1
    while t < n and not pivots:  # before the first pivot pair
        thr = thresholds[t]
        if high[t] >= high[hi_i]:
            hi_i = t
        if low[t] <= low[lo_i]:
            lo_i = t
        if lo_i < hi_i and high[hi_i] - low[t] >= thr and t - hi_i >= backstep:
            pivots.append(Pivot(lo_i, low[lo_i], "low", t))
            pivots.append(Pivot(hi_i, high[hi_i], "high", t))
            lo_i = t
        elif hi_i < lo_i and high[t] - low[lo_i] >= thr and t - lo_i >= backstep:
            pivots.append(Pivot(hi_i, high[hi_i], "high", t))
            pivots.append(Pivot(lo_i, low[lo_i], "low", t))
            hi_i = t
        t += 1
    if not pivots:
        return pivots
    # the last pivot lives in locals until the next one is confirmed: a continuing swing moves it on most bars
    last = pivots.pop()
    last_low, last_price, last_index, last_conf = last.kind == "low", last.price, last.index, last.confirmed_at
    for t in range(t, n):
        if last_low:
            lt = low[t]
            if lt < last_price:  # the down-swing continues: move the low pivot
                if keep_versions:
                    versions.append(Pivot(last_index, last_price, "low", last_conf, t))
                last_price = lt
                last_index = last_conf = hi_i = t
                continue
            if high[t] >= high[hi_i]:
                hi_i = t
            if high[hi_i] - lt >= thresholds[t] and t - hi_i >= backstep and hi_i - last_index >= min_leg_bars:
                pivots.append(Pivot(last_index, last_price, "low", last_conf))
                last_low, last_price, last_index, last_conf = False, high[hi_i], hi_i, t
                lo_i = t
        else:
            ht = high[t]
            if ht > last_price:  # the up-swing continues: move the high pivot
                if keep_versions:
                    versions.append(Pivot(last_index, last_price, "high", last_conf, t))
                last_price = ht
                last_index = last_conf = lo_i = t
                continue
            if low[t] <= low[lo_i]:
                lo_i = t
            if ht - low[lo_i] >= thresholds[t] and t - lo_i >= backstep and lo_i - last_index >= min_leg_bars:
                pivots.append(Pivot(last_index, last_price, "high", last_conf))
                last_low, last_price, last_index, last_conf = True, low[lo_i], lo_i, t
                hi_i = t
    pivots.append(Pivot(last_index, last_price, "low" if last_low else "high", last_conf))
    if keep_versions:
        return sorted([*pivots, *versions], key=lambda p: (p.index, p.confirmed_at))
    return pivots


def pivots_known_at(versions: list[Pivot], t: int, *, start: int = 0) -> list[Pivot]:
    """The pivots a causal run would hold at bar ``t`` (confirmed, not yet superseded), with index ≥ ``start``."""
    return [p for p in versions if p.confirmed_at <= t < p.superseded_at and p.index >= start]


def sr_levels(
    pivots: list[Pivot],
    price: float,
    atr: float,
    *,
    cluster_atr: float = SR_CLUSTER_ATR,
    max_levels: int = SR_MAX_LEVELS,
) -> list[dict[str, float]]:
    """Cluster pivot prices within ``cluster_atr × ATR``; level = cluster mean, strength = touches / max touches;
    the ``max_levels`` levels nearest to ``price`` (spec §7)."""
    if not pivots or not np.isfinite(atr) or atr <= 0 or not np.isfinite(price):
        return []
    prices = sorted(p.price for p in pivots)
    reach = cluster_atr * atr
    clusters: list[list[float]] = []  # [sum, count] per cluster: a running mean, no numpy per element
    for p in prices:
        if clusters and p - clusters[-1][0] / clusters[-1][1] <= reach:
            clusters[-1][0] += p
            clusters[-1][1] += 1
        else:
            clusters.append([p, 1])
    max_touches = max(c[1] for c in clusters)
    levels = [{"price": c[0] / c[1], "strength": c[1] / max_touches} for c in clusters]
    levels.sort(key=lambda lv: (abs(lv["price"] - price), lv["price"]))
    return levels[:max_levels]


# --- the payload -----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TAPayload:
    """TA of the latest closed bar of one series (``features.ta``)."""

    series: str
    timeframe: str
    bar_ts: str
    latest_price: float
    bars: int
    filled_bars: int
    values: dict[str, float | None]
    sr_levels: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        v = self.values
        return {
            "series": self.series,
            "timeframe": self.timeframe,
            "bar_ts": self.bar_ts,
            "latest_price": self.latest_price,
            "bars": self.bars,
            "filled_bars": self.filled_bars,
            "ema": {f"ema{n}": v[f"ema{n}"] for n in EMA_PERIODS},
            "slopes": {
                **{f"ema{n}_slope": v[f"ema{n}_slope"] for n in SLOPE_EMAS},
                **{f"d_ema{n}_slope": v[f"d_ema{n}_slope"] for n in DELTA_SLOPE_EMAS},
            },
            **{k: v[k] for k in SCALAR_COLUMNS},
            "sr_levels": self.sr_levels,
        }


def _clean(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def compute_ta(
    bars: pd.DataFrame,
    *,
    series: str,
    timeframe: str,
    window_bars: int = 3_000,
    sr_levels: str = "swing",
) -> TAPayload:
    """TA of the latest closed bar, on the last ``window_bars`` bars after grid filling (D5, D6).

    ``sr_levels``: ``"swing"`` computes S/R levels from zig-zag pivots (spec §7), ``"none"`` leaves them empty.
    """
    filled, _ = fill_gaps(bars[["open", "high", "low", "close", "volume"]], timeframe)
    window = filled.iloc[-window_bars:]
    frame = compute_ta_frame(window.drop(columns="filled"))
    return ta_payload_from_frame(
        frame, series=series, timeframe=timeframe, filled_bars=int(window["filled"].sum()), sr_levels=sr_levels
    )


def ta_payload_from_frame(
    frame: pd.DataFrame,
    *,
    series: str,
    timeframe: str,
    filled_bars: int,
    sr_levels: str = "swing",
    pivots: list[Pivot] | None = None,
) -> TAPayload:
    """The payload of the last row of an already computed TA frame (the live step computes the frame once)."""
    last = frame.iloc[-1]
    values = {k: _clean(last[k]) for k in TA_COLUMNS}
    levels: list[dict[str, float]] = []
    if sr_levels == "swing":
        if pivots is None:
            pivots = swing_pivots(frame["high"].to_numpy(), frame["low"].to_numpy(), frame["atr"].to_numpy())
        levels = sr_levels_from(pivots, float(last["close"]), values["atr"])
    return TAPayload(
        series=series,
        timeframe=timeframe,
        bar_ts=frame.index[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        latest_price=float(last["close"]),
        bars=len(frame),
        filled_bars=filled_bars,
        values=values,
        sr_levels=levels,
    )


def sr_levels_from(pivots: list[Pivot], price: float, atr: float | None) -> list[dict[str, float]]:
    """``sr_levels`` tolerant of an undefined ATR (warm-up): no levels then."""
    if atr is None:
        return []
    return sr_levels(pivots, price, atr)
