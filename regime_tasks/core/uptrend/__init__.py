"""Uptrend Engine v4: the single-timeframe trend-state machine of ``docs/spec/uptrend_engine_v4.md``.

One step per closed bar: ``step(history, i, prev_payload, settings)`` reads the TA of bar ``i`` (and, for EDX
and S/R levels, the bars before it) plus the previous bar's payload, and returns the new payload and, on a state
change, the ``uptrend_state_change`` event. The replay path (TA once over the history, :func:`run_engine_frame`
steps every bar) and the live path (``core/live.py``: a history that grows one bar at a time, then ``step`` for
the new bar) call the same ``step`` on the same TA values, so they cannot disagree (tests/core/test_live.py).
EDX windows use prefix sums, so a long S3 episode costs O(1) per bar, not O(episode length).

Interpretations where the spec is terse (each documented in docs/ENGINE.md):
- Bars since S3 start ``n`` counts bars of the series' own timeframe; W1 is the last ``n`` bars.
- ``slope10(X over the window)`` is the least-squares slope of X over the whole window (points per bar);
  the EMA250/EMA333 *normalised* slopes are that slope divided by the latest EMA value.
- The above-EMA333 episode (for rebuy) is the run of consecutive S2/S3 bars.
- A step only computes the checks of the state it ends in (S0→S1 runs the S1 buy check; S2→S3 the S3 checks;
  the S1→S2 bar runs no S2 check because the spec names none; the S2→S1 bar runs no S1 buy check, spec §3).

Layout: :mod:`.settings` (settings, host-compatibility constants), :mod:`.scores` (orders and scores),
:mod:`.history` (:class:`EngineHistory`), :mod:`.edx` (EDX), :mod:`.states` (the transition rule),
:mod:`.transitions` (``step``), :mod:`.engine` (the runners).
"""

from __future__ import annotations

from regime_tasks.core.ta import NEVER
from regime_tasks.core.uptrend.edx import _window_components, edx_score
from regime_tasks.core.uptrend.engine import Diagnostics, iter_engine_frame, run_engine_frame
from regime_tasks.core.uptrend.history import EngineHistory, format_stamps
from regime_tasks.core.uptrend.scores import (
    all_below_333,
    clamp,
    combine_windows,
    dx_score,
    dx_threshold,
    fast_band_above_60,
    ox_base,
    s0_order,
    s3_order,
    sigmoid,
    sr_boost,
    trend_strength,
)
from regime_tasks.core.uptrend.settings import (
    BUY_THRESHOLD,
    DAY_SECONDS,
    EMA_KEYS,
    HOST_EDX_FETCH_LIMIT,
    HOST_MISREAD_KEYS,
    HOST_MISREAD_S3_GATE,
    HOUR_SECONDS,
    TRIM_OX,
    EngineSettings,
    host_inputs,
)
from regime_tasks.core.uptrend.transitions import step

__all__ = [
    "BUY_THRESHOLD",
    "DAY_SECONDS",
    "EMA_KEYS",
    "HOST_EDX_FETCH_LIMIT",
    "HOST_MISREAD_KEYS",
    "HOST_MISREAD_S3_GATE",
    "HOUR_SECONDS",
    "NEVER",
    "TRIM_OX",
    "Diagnostics",
    "EngineHistory",
    "EngineSettings",
    "_window_components",
    "all_below_333",
    "clamp",
    "combine_windows",
    "dx_score",
    "dx_threshold",
    "edx_score",
    "fast_band_above_60",
    "format_stamps",
    "host_inputs",
    "iter_engine_frame",
    "ox_base",
    "run_engine_frame",
    "s0_order",
    "s3_order",
    "sigmoid",
    "sr_boost",
    "step",
    "trend_strength",
]
