"""Book-independent steps of a tick run once per bar, whichever book's tick comes first.

``collect`` and ``build_driver_series`` take no book: every book's tick at the same bar would repeat them (venue
calls included: a ``/global`` sample a minute per book, the universe's weight-paced fetch). A completed run
records the bar in ``regime_meta`` (``tick:<step>:<timeframe>``, never moved back); a later tick of any book for
that same bar skips the step. Skipping changes nothing a re-run would not: a tick only extends from the last
stored bar, so a re-run at the same bar finds nothing new except what arrived since (a late venue bar, a host's
late lowcap bar, another dominance sample), which the next bar's tick takes in as it does today. A tick for an
older bar (a catch-up) runs the step: a later bar's collect covers the older bars only if the source had them
then. Only ticks use this; the bootstrap (repair, rebuild) always runs its steps.

Several books' ticks for one bar arrive together (one beat per book, one schedule), so on PostgreSQL the step runs
under an advisory lock: the later ticks wait for the first (at most ``LOCK_WAIT_SECS``), then find the bar done
and skip; without it the first two would both collect, calling the venues twice. Past the wait, or on SQLite (one
process), the step runs unlocked: correct, only repeated. The lock, the mark's read and its write are one
statement each on one autocommit connection (a tick's few extra round trips).
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


class Held:
    """The connection a step's decision is read and recorded on, while its lock (if any) is held: autocommit on
    PostgreSQL (one round trip a statement), else a plain connection committed after each use so that it holds no
    transaction while the step writes through others."""

    def __init__(self, conn: sa.Connection, *, autocommit: bool, locked: bool) -> None:
        self.conn = conn
        self.autocommit = autocommit
        self.locked = locked

    def read(self, *, keys: tuple[str, ...] = (), prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
        values = meta.read_meta(self.conn, keys=keys, prefixes=prefixes)
        if not self.autocommit:
            self.conn.commit()
        return values

    def write(self, values: dict[str, Any]) -> None:
        meta.write_meta(self.conn, values)
        if not self.autocommit:
            self.conn.commit()


@contextlib.contextmanager
def step_lock(rt: Runtime, name: str, wait_secs: float = LOCK_WAIT_SECS) -> Iterator[Held]:
    """Hold PostgreSQL's session advisory lock ``name`` while the block runs (``locked``), or run it without after
    ``wait_secs`` or on another database. A dead holder's lock goes with its connection."""
    if rt.engine.dialect.name != "postgresql":
        with rt.engine.connect() as conn:
            yield Held(conn, autocommit=False, locked=False)
        return
    key = zlib.crc32(f"regime:{name}".encode()) - 2**31  # a signed 32-bit key, in PostgreSQL's bigint space
    with rt.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        deadline = time.monotonic() + wait_secs
        got = False
        while not got:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            if not got and time.monotonic() > deadline:
                log.warning("step lock not had in time: running unlocked %s", kv(lock=name, waited_secs=wait_secs))
                break
            if not got:
                time.sleep(_LOCK_POLL_SECS)
        try:
            yield Held(conn, autocommit=True, locked=got)
        finally:
            if got:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def _key(step: str, timeframe: str) -> str:
    return f"tick:{step}:{timeframe}"


def done_for(rt: Runtime, step: str, timeframe: str, until: pd.Timestamp) -> bool:
    """True when ``step`` of ``timeframe`` was last completed for exactly ``until`` (by any book's tick)."""
    done = meta.get_meta(rt.engine, _key(step, timeframe)) or {}
    return bool(done.get("until") == iso(until))


def _run_once(rt: Runtime, step: str, timeframe: str, until: pd.Timestamp, run: Any, skipped: str) -> dict[str, Any]:
    key = _key(step, timeframe)
    with step_lock(rt, key) as held:
        done = held.read(keys=(key,)).get(key) or {}
        if done.get("until") == iso(until):  # another book's tick did this bar
            return {"timeframe": timeframe, "until": iso(until), "skipped": skipped}
        summary: dict[str, Any] = run(rt, timeframe, until)
        if (done.get("until") or "") < iso(until):  # a re-run for an older bar leaves the newer mark
            held.write({key: {"until": iso(until)}})
    return summary


def collect_once(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict[str, Any]:
    """A tick's collect, skipped when another tick already collected this bar."""
    return _run_once(rt, "collect", timeframe, until, collect, "collected by an earlier tick")


def build_driver_series_once(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict[str, Any]:
    """A tick's driver series, skipped when another tick already built them up to this bar."""
    return _run_once(rt, "series", timeframe, until, build_driver_series, "built by an earlier tick")
