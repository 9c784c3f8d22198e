"""Technical analysis of one series: the inputs of the Uptrend Engine v4 (spec §1; DECISIONS D6).

``compute_ta_frame(bars)`` returns per-bar indicators (NaN while not yet defined — never 0), vectorised with
numpy/pandas: the replay runs it over the whole history, the live path (``core/live.py``) over one window, which
:class:`TAStream` then extends one bar at a time with the same values. ``ta_payload_from_frame`` makes the
``features.ta`` payload of a frame's last bar; ``compute_ta(...)`` does both for the last ``window_bars`` bars.

Library use: EMA and RSI are the ``ta`` package's definitions (``EMAIndicator`` = pandas ``ewm(span=n,
min_periods=n, adjust=False)``, seeded with the first close, NaN for the first n−1 bars; ``RSIIndicator`` = Wilder
smoothing with α = 1/14, where ``ta`` counts the first bar as a zero change — the spec notes RSI only moves TS
slightly). We make the same pandas calls ``ta`` makes, on bare numpy-backed series: ``ta``'s wrappers re-index
and copy every result, which cost ~1 ms of the 5 ms live-step budget. tests/core/test_ta.py checks that
the columns equal ``ta``'s indicators bit for bit, and against plain-Python references.
ATR and ADX are our own vectorised Wilder implementations: ``ta``'s ``AverageTrueRange`` and ``ADXIndicator``
loop over rows in Python (seconds per year of 1m bars) and return 0 during warm-up, which would read as "no
volatility" to the engine. Regression slopes are ours too (a 10-tap convolution).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from regime_tasks.core.bars import fill_gaps

# Whole series (the frame) or one bar's value (TAStream): the ±DM and DX helpers serve both.
Floats = np.ndarray | np.float64

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
def _slope_weights(window: int) -> list[float]:
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    return (x / np.sum(x * x)).tolist()


def ls_slope(values: np.ndarray, window: int = SLOPE_WINDOW) -> np.ndarray:
    """Least-squares slope of the last ``window`` values at every bar (NaN until ``window`` values exist).

    Summed oldest to newest, one multiply-add per tap, so that :class:`TAStream` (one bar at a time, in Python
    floats) gives the same bits: a convolution or a BLAS dot may reorder the sum.
    """
    y = np.asarray(values, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    n = len(y)
    if n < window:
        return out
    weights = _slope_weights(window)
    acc = weights[0] * y[: n - window + 1]
    for k in range(1, window):
        acc = acc + weights[k] * y[k : n - window + 1 + k]
    out[window - 1 :] = acc
    return out


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values (NaN until then, and wherever one of them is NaN), summed oldest to
    newest for the same reason as :func:`ls_slope` (pandas' rolling mean carries a running sum instead)."""
    y = np.asarray(values, dtype=np.float64)
    out = np.full(y.shape, np.nan)
    n = len(y)
    if n < window:
        return out
    acc = y[: n - window + 1].copy()
    for k in range(1, window):
        acc = acc + y[k : n - window + 1 + k]
    out[window - 1 :] = acc / window
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


def _directional_moves(high_prev: Floats, high: Floats, low_prev: Floats, low: Floats) -> tuple[np.ndarray, np.ndarray]:
    up = high - high_prev
    down = low_prev - low
    return np.where((up > down) & (up > 0), up, 0.0), np.where((down > up) & (down > 0), down, 0.0)


def _dx(s_p: Floats, s_m: Floats, s_tr: Floats) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        plus_di = 100.0 * s_p / s_tr
        minus_di = 100.0 * s_m / s_tr
        dx = 100.0 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    return np.where((plus_di + minus_di) == 0, 0.0, dx)


def _adx_parts(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = ADX_PERIOD
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ADX and the smoothed TR, +DM and −DM it comes from (the state a stream carries)."""
    plus_dm, minus_dm = np.full(high.shape, np.nan), np.full(high.shape, np.nan)
    plus_dm[1:], minus_dm[1:] = _directional_moves(high[:-1], high[1:], low[:-1], low[1:])
    tr = true_range(high, low, close)
    s_tr = wilder_smooth(tr, period, 1)
    s_p = wilder_smooth(plus_dm, period, 1)
    s_m = wilder_smooth(minus_dm, period, 1)
    first_dx = period  # index of the first defined DX (smoothing seeded at bar `period`)
    return wilder_smooth(_dx(s_p, s_m, s_tr), period, first_dx), s_tr, s_p, s_m


def _volume_z_parts(volume: np.ndarray, n: int = VOLUME_EWMA_N) -> tuple[np.ndarray, float, float]:
    """vo_z and the EWMA mean and variance after the last bar (NaN, NaN for a series without volume)."""
    v = np.asarray(volume, dtype=np.float64)
    if not np.any(v > 0):
        return np.zeros_like(v), math.nan, math.nan
    x = pd.Series(np.log1p(np.clip(v, 0, None)))
    ew = x.ewm(alpha=2.0 / (n + 1), adjust=False)
    mean_now = ew.mean().to_numpy()
    var_now = ew.var(bias=True).to_numpy()
    mean = np.concatenate([[np.nan], mean_now[:-1]])
    var = np.concatenate([[np.nan], var_now[:-1]])
    return _z_clip(x.to_numpy(), mean, var), float(mean_now[-1]), float(var_now[-1])


def _z_clip(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / np.sqrt(var)
    z = np.where(np.isfinite(z), z, 0.0)
    return np.clip(z, -4.0, 6.0)


# --- the per-bar frame --------------------------------------------------------------------------------
def ema(close: pd.Series, n: int) -> np.ndarray:
    """EMA(n) exactly as ``ta.trend.EMAIndicator(close, n).ema_indicator()`` (NaN for the first n−1 bars)."""
    return close.ewm(span=n, min_periods=n, adjust=False).mean().to_numpy()


def rsi(close: pd.Series, n: int = RSI_PERIOD) -> np.ndarray:
    """RSI(n) exactly as ``ta.momentum.RSIIndicator(close, n).rsi()``: Wilder EWM (α = 1/n) of gains and losses,
    the first bar counting as a zero change; 100 where the average loss is 0."""
    return _rsi_parts(close, n)[0]


def _rsi_parts(close: pd.Series, n: int = RSI_PERIOD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    diff = close.diff(1)
    up = diff.where(diff > 0, 0.0)
    down = -diff.where(diff < 0, 0.0)
    avg_up = up.ewm(alpha=1 / n, min_periods=n, adjust=False).mean().to_numpy()
    avg_down = down.ewm(alpha=1 / n, min_periods=n, adjust=False).mean().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(avg_down == 0, 100, 100 - (100 / (1 + avg_up / avg_down))), avg_up, avg_down


def compute_ta_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """Per-bar TA columns (docs/CONTRACTS.md §2) after the columns of ``bars`` (same index).

    When every column of ``bars`` is numeric the result is one float64 block, so that ``to_numpy()`` on it (the
    engine's history) is a view, not a copy.
    """
    return compute_ta_frame_and_state(bars)[0]


def compute_ta_frame_and_state(bars: pd.DataFrame) -> tuple[pd.DataFrame, TAState]:
    """``compute_ta_frame`` plus the recurrences' state after the last bar, from which :class:`TAStream` goes on."""
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
    cols["atr_mean_20"] = rolling_mean(atr, 20)
    cols["atr_peak_10"] = pd.Series(atr).rolling(10).max().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["atr_norm"] = atr / cols["ema50"]
    adx, s_tr, s_p, s_m = _adx_parts(h, lo, c)
    cols["adx"] = adx
    cols["adx_slope_10"] = ls_slope(adx)
    rsi_values, avg_up, avg_down = _rsi_parts(close)
    cols["rsi"] = rsi_values
    cols["rsi_slope_10"] = ls_slope(rsi_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["sep_fast"] = (cols["ema20"] - cols["ema60"]) / cols["ema60"]
        cols["sep_mid"] = (cols["ema60"] - cols["ema144"]) / cols["ema144"]
    cols["dsep_fast_5"] = _lagged_change(cols["sep_fast"], 5)
    cols["dsep_mid_5"] = _lagged_change(cols["sep_mid"], 5)
    volume = bars["volume"].to_numpy(dtype=np.float64)
    cols["vo_z"], vo_mean, vo_var = _volume_z_parts(volume)
    state = TAState(
        bars=len(bars),
        ema={n: _last(cols[f"ema{n}"]) for n in EMA_PERIODS},
        avg_up=_last(avg_up),
        avg_down=_last(avg_down),
        atr=_last(atr),
        s_tr=_last(s_tr),
        s_plus_dm=_last(s_p),
        s_minus_dm=_last(s_m),
        adx=_last(adx),
        has_volume=bool(np.any(volume > 0)),
        vo_mean=vo_mean,
        vo_var=vo_var,
    )
    ta_block = [np.asarray(cols[name], dtype=np.float64) for name in TA_COLUMNS]
    names = [*map(str, bars.columns), *TA_COLUMNS]
    if all(pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) for dt in bars.dtypes):
        block = np.column_stack([bars.to_numpy(dtype=np.float64), *ta_block])
        return pd.DataFrame(block, index=bars.index, columns=names, copy=False), state
    # a non-numeric column (e.g. the grid's ``filled`` flag) keeps its dtype: slower, but exact
    ta_frame = pd.DataFrame(np.column_stack(ta_block), index=bars.index, columns=list(TA_COLUMNS), copy=False)
    return pd.concat([bars.copy(), ta_frame], axis=1), state


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan


# --- one bar at a time ----------------------------------------------------------------------------------
STREAM_MIN_BARS = 400  # every recurrence is seeded and every rolling window full well before this


@dataclasses.dataclass(slots=True)
class TAState:
    """The recurrences of :func:`compute_ta_frame` after its last bar (EWM values as pandas keeps them)."""

    bars: int
    ema: dict[int, float]
    avg_up: float
    avg_down: float
    atr: float
    s_tr: float
    s_plus_dm: float
    s_minus_dm: float
    adx: float
    has_volume: bool
    vo_mean: float
    vo_var: float


def _pandas_alpha(*, span: float | None = None, alpha: float | None = None) -> float:
    """The α pandas' EWM kernel uses: it converts span and α to a centre of mass and back (last bits matter)."""
    com = (span - 1) / 2 if span is not None else (1 - alpha) / alpha  # type: ignore[operator]
    return 1.0 / (1.0 + float(com))


def _ewm_step(value: float, x: float, alpha: float) -> float:
    """One step of pandas' ``ewm(adjust=False).mean()`` kernel, operation for operation."""
    if value != x:
        old_wt = 1.0 * (1.0 - alpha)
        value = old_wt * value + alpha * x
        value /= old_wt + alpha
    return value


class StreamBreak(Exception):
    """The next bar cannot be streamed bit-identically (rebuild the window from bars instead)."""


class TAStream:
    """Appends one bar to a TA history and returns its TA row, bit for bit what :func:`compute_ta_frame` gives
    for that bar over the same window (tests/core/test_live.py proves it on real series).

    Past values (the last 20 at most) are read from ``cols``, the history's column arrays; the recurrences'
    state is carried in :class:`TAState`.
    """

    _EMA_ALPHA: ClassVar[dict[int, float]] = {n: _pandas_alpha(span=n) for n in EMA_PERIODS}
    _WILDER_ALPHA: ClassVar[float] = _pandas_alpha(alpha=1.0 / ATR_PERIOD)
    _RSI_ALPHA: ClassVar[float] = _pandas_alpha(alpha=1.0 / RSI_PERIOD)
    _VO_ALPHA: ClassVar[float] = _pandas_alpha(alpha=2.0 / (VOLUME_EWMA_N + 1))
    _SLOPE_W: ClassVar[list[float]] = _slope_weights(SLOPE_WINDOW)

    def __init__(self, state: TAState) -> None:
        if state.bars < STREAM_MIN_BARS:
            raise StreamBreak(f"{state.bars} bars: a stream starts from at least {STREAM_MIN_BARS}")
        self.state = state

    def next_row(self, cols: Mapping[str, np.ndarray], n: int, bar: Mapping[str, float]) -> dict[str, float]:
        """TA of bar ``n`` (``bar``: open/high/low/close/volume) given columns holding bars ``0..n−1``.

        Raises :class:`StreamBreak` when the bar would change the window's volume regime (first volume on a
        series without any), since ``vo_z`` is defined over the whole window.
        """
        st = self.state
        h, lo, c, v = float(bar["high"]), float(bar["low"]), float(bar["close"]), float(bar["volume"])
        if not st.has_volume and v > 0:
            raise StreamBreak("first volume on a series without volume")
        c_prev, h_prev, lo_prev = float(cols["close"][n - 1]), float(cols["high"][n - 1]), float(cols["low"][n - 1])
        row: dict[str, float] = {}
        ema = st.ema
        for p in EMA_PERIODS:
            ema[p] = _ewm_step(ema[p], c, self._EMA_ALPHA[p])
            row[f"ema{p}"] = ema[p]
        for p in SLOPE_EMAS:
            name = f"ema{p}"
            row[f"{name}_slope"] = self._slope(cols[name], n, ema[p]) / ema[p]
        for p in DELTA_SLOPE_EMAS:
            row[f"d_ema{p}_slope"] = row[f"ema{p}_slope"] - float(cols[f"ema{p}_slope"][n - SLOPE_WINDOW])

        tr = max(h - lo, abs(h - c_prev), abs(lo - c_prev))
        st.atr = _ewm_step(st.atr, tr, self._WILDER_ALPHA)
        row["atr"] = st.atr
        past_atr = cols["atr"]
        acc = float(past_atr[n - 19])
        for k in range(n - 18, n):
            acc = acc + float(past_atr[k])
        row["atr_mean_20"] = (acc + st.atr) / 20
        last10 = [float(x) for x in past_atr[n - 9 : n]] + [st.atr]
        row["atr_peak_10"] = math.nan if any(x != x for x in last10) else max(last10)
        row["atr_norm"] = _div(st.atr, ema[50])

        plus_dm, minus_dm = _directional_moves(np.float64(h_prev), np.float64(h), np.float64(lo_prev), np.float64(lo))
        st.s_tr = _ewm_step(st.s_tr, tr, self._WILDER_ALPHA)
        st.s_plus_dm = _ewm_step(st.s_plus_dm, float(plus_dm), self._WILDER_ALPHA)
        st.s_minus_dm = _ewm_step(st.s_minus_dm, float(minus_dm), self._WILDER_ALPHA)
        dx = float(_dx(np.float64(st.s_plus_dm), np.float64(st.s_minus_dm), np.float64(st.s_tr)))
        st.adx = _ewm_step(st.adx, dx, self._WILDER_ALPHA)
        row["adx"] = st.adx
        row["adx_slope_10"] = self._slope(cols["adx"], n, st.adx)

        diff = c - c_prev
        up = diff if diff > 0 else 0.0
        down = -(diff if diff < 0 else 0.0)
        st.avg_up = _ewm_step(st.avg_up, up, self._RSI_ALPHA)
        st.avg_down = _ewm_step(st.avg_down, down, self._RSI_ALPHA)
        rsi_now = 100.0 if st.avg_down == 0 else 100 - (100 / (1 + st.avg_up / st.avg_down))
        row["rsi"] = rsi_now
        row["rsi_slope_10"] = self._slope(cols["rsi"], n, rsi_now)

        row["sep_fast"] = _div(ema[20] - ema[60], ema[60])
        row["sep_mid"] = _div(ema[60] - ema[144], ema[144])
        row["dsep_fast_5"] = row["sep_fast"] - float(cols["sep_fast"][n - 5])
        row["dsep_mid_5"] = row["sep_mid"] - float(cols["sep_mid"][n - 5])

        if st.has_volume:
            x = float(np.log1p(np.clip(np.array([v]), 0, None))[0])
            row["vo_z"] = float(_z_clip(np.array([x]), np.array([st.vo_mean]), np.array([st.vo_var]))[0])
            st.vo_mean, st.vo_var = self._ewm_var_step(st.vo_mean, st.vo_var, x)
        else:
            row["vo_z"] = 0.0
        st.bars += 1
        return row

    def _slope(self, past: np.ndarray, n: int, now: float) -> float:
        w = self._SLOPE_W
        acc = w[0] * float(past[n - SLOPE_WINDOW + 1])
        for k in range(1, SLOPE_WINDOW - 1):
            acc = acc + w[k] * float(past[n - SLOPE_WINDOW + 1 + k])
        return acc + w[SLOPE_WINDOW - 1] * now

    def _ewm_var_step(self, mean: float, var: float, x: float) -> tuple[float, float]:
        """One step of pandas' ``ewm(adjust=False)`` mean and ``var(bias=True)`` kernels."""
        alpha = self._VO_ALPHA
        old_wt = 1.0 * (1.0 - alpha)
        old_mean = mean
        if mean != x:
            mean = ((old_wt * old_mean) + (alpha * x)) / (old_wt + alpha)
        var = ((old_wt * (var + ((old_mean - mean) * (old_mean - mean)))) + (alpha * ((x - mean) * (x - mean)))) / (
            old_wt + alpha
        )
        return mean, var


def _div(a: float, b: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


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
    atr = np.asarray(atr, dtype=np.float64)
    zz = ZigZag(threshold_atr=threshold_atr, backstep=backstep, min_leg_bars=min_leg_bars, keep_versions=keep_versions)
    zz.feed(
        np.asarray(high, dtype=np.float64).tolist(),
        np.asarray(low, dtype=np.float64).tolist(),
        swing_thresholds(atr, threshold_atr).tolist(),
        len(atr),
    )
    return zz.result()


def swing_thresholds(atr: np.ndarray, threshold_atr: float = SWING_THRESHOLD_ATR) -> np.ndarray:
    """Retracement needed to confirm a pivot at each bar: ``threshold_atr × ATR``, ∞ while ATR is undefined."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(atr) & (atr > 0)
    return np.where(usable, threshold_atr * np.where(usable, atr, 0.0), math.inf)


class ZigZag:
    """The zig-zag of :func:`swing_pivots` as a state machine that can be fed more bars later (the live path
    appends one bar at a time and gets exactly the pivots a pass over the whole window gives)."""

    def __init__(
        self,
        *,
        threshold_atr: float = SWING_THRESHOLD_ATR,
        backstep: int = SWING_BACKSTEP,
        min_leg_bars: int = SWING_MIN_LEG_BARS,
        keep_versions: bool = False,
    ) -> None:
        self.threshold_atr, self.backstep, self.min_leg_bars = threshold_atr, backstep, min_leg_bars
        self.keep_versions = keep_versions
        self.done: list[Pivot] = []  # confirmed pivots before the last one
        self.versions: list[Pivot] = []
        self.last: tuple[bool, float, int, int] | None = None  # (is low, price, bar, confirmed at)
        self.hi_i = self.lo_i = 0  # running candidates
        self.next_t = 1  # bar 0 is the first candidate

    def result(self) -> list[Pivot]:
        """Pivots so far (with every superseded version when ``keep_versions``)."""
        pivots = list(self.done)
        if self.last is not None:
            is_low, price, index, conf = self.last
            pivots.append(Pivot(index, price, "low" if is_low else "high", conf))
        if self.keep_versions:
            return sorted([*pivots, *self.versions], key=lambda p: (p.index, p.confirmed_at))
        return pivots

    def feed(self, high: list[float], low: list[float], thresholds: list[float], stop: int) -> None:
        """Run bars ``next_t .. stop−1`` (lists indexed by bar; ``thresholds`` from :func:`swing_thresholds`)."""
        backstep, min_leg_bars, keep_versions = self.backstep, self.min_leg_bars, self.keep_versions
        pivots, versions = self.done, self.versions
        hi_i, lo_i, t = self.hi_i, self.lo_i, self.next_t
        while t < stop and self.last is None:  # before the first pivot pair
            thr = thresholds[t]
            if high[t] >= high[hi_i]:
                hi_i = t
            if low[t] <= low[lo_i]:
                lo_i = t
            if lo_i < hi_i and high[hi_i] - low[t] >= thr and t - hi_i >= backstep:
                pivots.append(Pivot(lo_i, low[lo_i], "low", t))
                self.last = (False, high[hi_i], hi_i, t)
                lo_i = t
            elif hi_i < lo_i and high[t] - low[lo_i] >= thr and t - lo_i >= backstep:
                pivots.append(Pivot(hi_i, high[hi_i], "high", t))
                self.last = (True, low[lo_i], lo_i, t)
                hi_i = t
            t += 1
        if self.last is None:
            self.hi_i, self.lo_i, self.next_t = hi_i, lo_i, t
            return
        # This loop runs once per bar in Python and is most of a live step's engine time: the last pivot lives
        # in locals until the next one is confirmed (a continuing swing moves it on most bars), no allocation.
        last_low, last_price, last_index, last_conf = self.last
        for t in range(t, stop):  # noqa: B020 - goes on from where the first phase stopped
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
        self.last = (last_low, last_price, last_index, last_conf)
        self.hi_i, self.lo_i, self.next_t = hi_i, lo_i, max(stop, self.next_t)


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
    return sr_levels_sorted(sorted([p.price for p in pivots]), price, atr, cluster_atr, max_levels)


def sr_levels_sorted(
    prices: list[float],
    price: float,
    atr: float,
    cluster_atr: float = SR_CLUSTER_ATR,
    max_levels: int = SR_MAX_LEVELS,
) -> list[dict[str, float]]:
    """:func:`sr_levels` of pivot prices already sorted ascending (not empty; finite ``price``, ``atr`` > 0)."""
    reach = cluster_atr * atr
    # a running mean per cluster in locals (the engine calls this on most bars of a replay)
    sums: list[float] = []
    counts: list[int] = []
    total, count = prices[0], 1
    for p in prices[1:]:
        if p - total / count <= reach:
            total += p
            count += 1
        else:
            sums.append(total)
            counts.append(count)
            total, count = p, 1
    sums.append(total)
    counts.append(count)
    max_touches = max(counts)
    means = [t / c for t, c in zip(sums, counts, strict=True)]
    # Means ascend, so the nearest levels are next to ``price``: rank only the max_levels + 1 on each side (and
    # any further left ones whose rounded distance ties, which the (distance, price) order would put first).
    mid = bisect.bisect_left(means, price)
    lo, hi = max(0, mid - max_levels - 1), min(len(means), mid + max_levels + 1)
    while lo > 0 and abs(means[lo - 1] - price) == abs(means[lo] - price):
        lo -= 1
    order = sorted(range(lo, hi), key=lambda k: (abs(means[k] - price), means[k]))[:max_levels]
    return [{"price": means[k], "strength": counts[k] / max_touches} for k in order]


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
