"""One bar at a time: :class:`TAStream` extends a TA frame bit for bit (the live path, ``core/live.py``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from regime_tasks.core.ta.indicators import (
    ATR_PERIOD,
    DELTA_SLOPE_EMAS,
    EMA_PERIODS,
    RSI_PERIOD,
    SLOPE_EMAS,
    SLOPE_WINDOW,
    VOLUME_EWMA_N,
    _directional_moves,
    _dx,
    _slope_weights,
    _z_clip,
)

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
