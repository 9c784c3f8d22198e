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

Layout: :mod:`.indicators` (constants and indicator building blocks), :mod:`.frame` (:func:`compute_ta_frame`),
:mod:`.stream` (:class:`TAStream`), :mod:`.pivots` (zig-zag pivots and S/R levels), :mod:`.payload` (``features.ta``).
"""

from __future__ import annotations

from regime_tasks.core.ta.frame import compute_ta_frame, compute_ta_frame_and_state
from regime_tasks.core.ta.indicators import (
    ADX_PERIOD,
    ATR_PERIOD,
    DELTA_SLOPE_EMAS,
    EMA_PERIODS,
    RSI_PERIOD,
    SCALAR_COLUMNS,
    SLOPE_EMAS,
    SLOPE_WINDOW,
    SR_CLUSTER_ATR,
    SR_MAX_LEVELS,
    SWING_BACKSTEP,
    SWING_MIN_LEG_BARS,
    SWING_THRESHOLD_ATR,
    TA_COLUMNS,
    VOLUME_EWMA_N,
    ema,
    ls_slope,
    normalised_slope,
    rolling_mean,
    rsi,
    true_range,
    wilder_atr,
    wilder_smooth,
)
from regime_tasks.core.ta.payload import TAPayload, compute_ta, ta_payload_from_frame
from regime_tasks.core.ta.pivots import (
    NEVER,
    Pivot,
    ZigZag,
    pivots_known_at,
    sr_levels,
    sr_levels_from,
    sr_levels_sorted,
    swing_pivots,
    swing_thresholds,
)
from regime_tasks.core.ta.stream import STREAM_MIN_BARS, StreamBreak, TAState, TAStream

__all__ = [
    "ADX_PERIOD",
    "ATR_PERIOD",
    "DELTA_SLOPE_EMAS",
    "EMA_PERIODS",
    "NEVER",
    "RSI_PERIOD",
    "SCALAR_COLUMNS",
    "SLOPE_EMAS",
    "SLOPE_WINDOW",
    "SR_CLUSTER_ATR",
    "SR_MAX_LEVELS",
    "STREAM_MIN_BARS",
    "SWING_BACKSTEP",
    "SWING_MIN_LEG_BARS",
    "SWING_THRESHOLD_ATR",
    "TA_COLUMNS",
    "VOLUME_EWMA_N",
    "Pivot",
    "StreamBreak",
    "TAPayload",
    "TAState",
    "TAStream",
    "ZigZag",
    "compute_ta",
    "compute_ta_frame",
    "compute_ta_frame_and_state",
    "ema",
    "ls_slope",
    "normalised_slope",
    "pivots_known_at",
    "rolling_mean",
    "rsi",
    "sr_levels",
    "sr_levels_from",
    "sr_levels_sorted",
    "swing_pivots",
    "swing_thresholds",
    "ta_payload_from_frame",
    "true_range",
    "wilder_atr",
    "wilder_smooth",
]
