"""The pipeline's steps as plain functions: load → call core → save.

Celery tasks (``tasks.py``) are thin wrappers around these; the bootstrap, the demo and the tests call them
directly too. Every step is keyed by (book, timeframe, bar time) and idempotent: running it again for the same
bar rewrites the same rows and publishes the same cache entries.

Time convention: ``until`` is the **open time of the last closed bar** to include (D5).

One module per step of a tick, in the order a tick runs them:

- ``collect``: closed bars of the majors, the lowcaps and the dominance samples into the price tables;
- ``universe``: the lowcap universe without a host (members, caps, candles) and a live bootstrap's derived
  dominance history (D16);
- ``series``: the drivers' price series — bucket composites (D3), ALT, BTC, dominance — extended or rebuilt;
- ``drivers``: per driver, TA → engine → mapper from the last processed bar (warm live histories);
- ``publish``: the timeframe's payloads to the cache, then the levers;
- ``once``: a tick's collect and series steps run once per bar whichever book ticks first (several books).
"""

from __future__ import annotations

from regime_tasks.core.timeframes import last_closed_bar  # defined there; kept for stages.* callers
from regime_tasks.stages.collect import collect, history_start, missing_ranges, source_end
from regime_tasks.stages.drivers import TRANSIENT_ERRORS, update_driver, update_driver_safely
from regime_tasks.stages.once import build_driver_series_once, collect_once
from regime_tasks.stages.publish import no_new_bar_message, publish, run_levers
from regime_tasks.stages.series import (
    LATE_BAR_WINDOW,
    MemberKey,
    bucket_members,
    bucket_membership,
    build_dominance_series,
    build_driver_series,
)
from regime_tasks.stages.universe import (
    UNIVERSE_CHAIN,
    collect_universe,
    derive_dominance_history,
    live_universe,
    member_stream_targets,
    published_dominance,
    stablecoin_supplies,
    symbol_table,
    weight_budget,
)

__all__ = [
    "LATE_BAR_WINDOW",
    "TRANSIENT_ERRORS",
    "UNIVERSE_CHAIN",
    "MemberKey",
    "bucket_members",
    "bucket_membership",
    "build_dominance_series",
    "build_driver_series",
    "build_driver_series_once",
    "collect",
    "collect_once",
    "collect_universe",
    "derive_dominance_history",
    "history_start",
    "last_closed_bar",
    "live_universe",
    "member_stream_targets",
    "missing_ranges",
    "no_new_bar_message",
    "publish",
    "published_dominance",
    "run_levers",
    "source_end",
    "stablecoin_supplies",
    "symbol_table",
    "update_driver",
    "update_driver_safely",
    "weight_budget",
]
