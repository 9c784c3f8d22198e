"""Indicator building blocks and constants of the TA frame (EMA, RSI, Wilder ATR/ADX, slopes, volume z)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

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


def _lagged_change(values: np.ndarray, lag: int) -> np.ndarray:
    """``values[t] − values[t − lag]`` (NaN for the first ``lag`` bars)."""
    out = np.full(values.shape, np.nan)
    out[lag:] = values[lag:] - values[:-lag]
    return out
