"""Fill → TA → engine: the one way a bar series becomes engine payloads.

The pipeline's whole-history replay (``stages.update_driver``, D15), ``regime replay`` and ``regime engine`` all
run a series through :func:`run_series`, so the three give the same payloads for the same bars.
Pure functions; no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pandas as pd

from regime_tasks.core.bars import OHLCV, fill_gaps
from regime_tasks.core.payloads import EnginePayload
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import Diagnostics, EngineSettings, iter_engine_frame

Gaps = Literal["fill", "keep"]


@dataclasses.dataclass(frozen=True)
class EngineRun:
    """A series on its way through the engine: the bars stepped, how many were filled, their TA, the payloads."""

    bars: pd.DataFrame  # OHLCV and a bool ``filled`` column: the D5 grid, or the rows as given (gaps "keep")
    n_filled: int
    ta: pd.DataFrame  # compute_ta_frame of ``bars`` (same index)
    # (payload, state-change event or None) per bar, one at a time: iterate once
    payloads: Iterator[tuple[EnginePayload, dict[str, Any] | None]]


def lay_bars(bars: pd.DataFrame, timeframe: str, gaps: Gaps = "fill") -> tuple[pd.DataFrame, int]:
    """The OHLCV bars as the engine steps them, with a bool ``filled`` column, and how many were filled.

    ``fill``: on the regular grid, absent bars flat at the previous close (D5); ``keep``: the rows as given, none
    filled (the host's engine ran on whatever bars its store held; docs/ENGINE.md).
    """
    ohlcv = bars[list(OHLCV)]
    if gaps == "keep":
        return ohlcv.assign(filled=False), 0
    return fill_gaps(ohlcv, timeframe)


def run_series(
    bars: pd.DataFrame,
    timeframe: str,
    settings: EngineSettings,
    *,
    diagnostics: Diagnostics = "none",
    check_filled: Callable[[int, int], None] | None = None,
) -> EngineRun:
    """Fill ``bars`` per ``settings.gaps`` (:func:`lay_bars`), compute TA over them, and step the engine on every bar.

    ``check_filled(n_filled, n_bars)`` may refuse the series (raise) once the gaps are known, before the TA is
    computed. ``diagnostics``: see :func:`regime_tasks.core.uptrend.iter_engine_frame`.
    """
    laid, n_filled = lay_bars(bars, timeframe, settings.gaps)
    if check_filled is not None:
        check_filled(n_filled, len(laid))
    ta = compute_ta_frame(laid.drop(columns="filled"))
    return EngineRun(laid, n_filled, ta, iter_engine_frame(ta, settings, diagnostics=diagnostics))
