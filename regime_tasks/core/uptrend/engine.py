"""Runners: step every bar of a TA frame (the replay path)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from typing import Any, Literal, cast

import pandas as pd

from regime_tasks.core.payloads import EnginePayload
from regime_tasks.core.uptrend.history import EngineHistory
from regime_tasks.core.uptrend.settings import EngineSettings
from regime_tasks.core.uptrend.transitions import step

# --- runners --------------------------------------------------------------------------------------------------
Diagnostics = Literal["all", "last", "none"]


def iter_engine_frame(
    ta_frame: pd.DataFrame,
    settings: EngineSettings | None = None,
    *,
    prev_payload: Mapping[str, Any] | None = None,
    start_at: pd.Timestamp | None = None,
    diagnostics: Diagnostics = "all",
) -> Iterator[tuple[EnginePayload, dict[str, Any] | None]]:
    """(payload, state-change event or None) of each stepped bar of ``ta_frame``, one at a time, so a caller
    that reduces them (a replay's rows, a printed line per bar) holds one payload, not the whole series.

    ``diagnostics``: build ``payload["diagnostics"]`` for every bar (``all``), only the last bar of the frame
    (``last``: what the bootstrap stores) or none (``none``: a replay's per-bar rows never read them); the
    other fields do not depend on it. The rest as :func:`run_engine_frame`.
    """
    settings = settings or EngineSettings()
    if ta_frame.empty:
        return
    first = 0 if start_at is None else int(ta_frame.index.searchsorted(pd.Timestamp(start_at)))
    h = EngineHistory(ta_frame, settings, first_step=first)
    prev = dict(prev_payload) if prev_payload else None
    last = h.n - 1
    for i in range(first, h.n):
        diag = diagnostics == "all" or (diagnostics == "last" and i == last)
        payload, event = step(h, i, prev, settings, diagnostics=diag)
        yield cast("EnginePayload", payload), event
        prev = payload


def run_engine_frame(
    ta_frame: pd.DataFrame,
    settings: EngineSettings | None = None,
    *,
    prev_payload: Mapping[str, Any] | None = None,
    start_at: pd.Timestamp | None = None,
    diagnostics: Diagnostics = "all",
) -> tuple[list[EnginePayload], list[dict[str, Any]]]:
    """Step the engine over ``ta_frame`` (from ``compute_ta_frame`` on grid-filled bars).

    ``start_at``: the first bar to step (earlier rows are history only); ``prev_payload``: the payload of the bar
    before it; ``diagnostics``: see :func:`iter_engine_frame`. Returns the payloads of the stepped bars and the
    state-change events among them.
    """
    payloads, events = [], []
    # The payloads hold no reference cycles, so the cyclic collector has nothing to find in them; left on, it
    # re-traverses the growing list every few hundred payloads (~15 % of a replay with diagnostics). Off for the
    # loop only, and back to how it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for payload, event in iter_engine_frame(
            ta_frame, settings, prev_payload=prev_payload, start_at=start_at, diagnostics=diagnostics
        ):
            payloads.append(payload)
            if event is not None:
                events.append(event)
    finally:
        if collecting:
            gc.enable()
    # step() builds each payload as a plain dict; tests/core/test_payloads.py checks it has EnginePayload's shape
    return cast("list[EnginePayload]", payloads), events
