"""Book-independent steps of a tick run once per bar, whichever book's tick comes first.

``collect`` and ``build_driver_series`` take no book: every book's tick at the same bar would repeat them (venue
calls included: a ``/global`` sample a minute per book, the universe's weight-paced fetch). A completed run
records the bar in ``regime_meta`` (``tick:<step>:<timeframe>``, never moved back); a later tick of any book for
that bar or an older one skips the step. Skipping changes nothing a re-run would not: a tick only extends from
the last stored bar, so a re-run at the same bar finds nothing new except what arrived since (a late venue bar,
a host's late lowcap bar, another dominance sample), which the next bar's tick takes in as it does today. Only
ticks use this; the bootstrap (repair, rebuild) always runs its steps.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pandas as pd
import sqlalchemy as sa

from regime_tasks.core.timeframes import iso
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.stages.collect import collect
from regime_tasks.stages.series import build_driver_series
from regime_tasks.store import meta

log = logging.getLogger(__name__)

LOCK_WAIT_SECS = 10.0  # a tick's collect takes ~0.1–0.3 s; the universe's can wait for weight (20 s, then defers)
_LOCK_POLL_SECS = 0.005


@contextlib.contextmanager
def step_lock(rt: Runtime, name: str, wait_secs: float = LOCK_WAIT_SECS) -> Iterator[bool]:
    """Hold PostgreSQL's session advisory lock ``name`` while the block runs (True), or run it without after
    ``wait_secs`` or on another database (False). A dead holder's lock goes with its connection."""
    if rt.engine.dialect.name != "postgresql":
        yield False
        return
    key = zlib.crc32(f"regime:{name}".encode()) - 2**31  # a signed 32-bit key, in PostgreSQL's bigint space
    with rt.engine.connect() as conn:
        deadline = time.monotonic() + wait_secs
        got = False
        while not got:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            conn.commit()
            if not got and time.monotonic() > deadline:
                log.warning("step lock not had in time: running unlocked %s", kv(lock=name, waited_secs=wait_secs))
                break
            if not got:
                time.sleep(_LOCK_POLL_SECS)
        try:
            yield got
        finally:
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def _key(step: str, timeframe: str) -> str:
    return f"tick:{step}:{timeframe}"


def done_for(rt: Runtime, step: str, timeframe: str, until: pd.Timestamp) -> bool:
    """True when ``step`` of ``timeframe`` has completed for ``until`` or a later bar (any book's tick)."""
    done = meta.get_meta(rt.engine, _key(step, timeframe)) or {}
    return (done.get("until") or "") >= iso(until)


def mark_done(rt: Runtime, step: str, timeframe: str, until: pd.Timestamp) -> None:
    """Record that ``step`` of ``timeframe`` completed for ``until`` (an older bar never moves it back)."""
    if not done_for(rt, step, timeframe, until):
        meta.set_meta(rt.engine, _key(step, timeframe), {"until": iso(until)})


def collect_once(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict[str, Any]:
    """A tick's collect, skipped when another tick already collected this bar."""
    if done_for(rt, "collect", timeframe, until):
        return {"timeframe": timeframe, "until": iso(until), "skipped": "collected by an earlier tick"}
    with step_lock(rt, f"tick:collect:{timeframe}"):
        if done_for(rt, "collect", timeframe, until):  # the tick that held the lock collected this bar
            return {"timeframe": timeframe, "until": iso(until), "skipped": "collected by an earlier tick"}
        summary = collect(rt, timeframe, until)
        mark_done(rt, "collect", timeframe, until)
    return summary


def build_driver_series_once(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict[str, Any]:
    """A tick's driver series, skipped when another tick already built them up to this bar."""
    if done_for(rt, "series", timeframe, until):
        return {"timeframe": timeframe, "until": iso(until), "skipped": "built by an earlier tick"}
    with step_lock(rt, f"tick:series:{timeframe}"):
        if done_for(rt, "series", timeframe, until):
            return {"timeframe": timeframe, "until": iso(until), "skipped": "built by an earlier tick"}
        summary = build_driver_series(rt, timeframe, until)
        mark_done(rt, "series", timeframe, until)
    return summary
