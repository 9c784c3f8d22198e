"""Thin Celery tasks: arguments in, a step from ``steps.py`` called, a JSON-able summary out.

Retries and routing live here only. I/O failures (venue down, database unreachable) are retried with
exponential backoff; every step is idempotent per (book, timeframe, bar time), so a retry or a redelivered
message after a worker crash rewrites the same rows.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from celery import Task

from regime_tasks import pipeline, steps
from regime_tasks.celery_app import app
from regime_tasks.errors import SourceError, StoreError
from regime_tasks.logs import kv
from regime_tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# Errors worth retrying: the outside world is briefly unavailable. Bad data is not retried.
TRANSIENT_ERRORS = (SourceError, StoreError, sa.exc.OperationalError, sa.exc.InterfaceError, ConnectionError)
RETRY_OPTS: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@app.task(name="regime.tick", bind=True, **RETRY_OPTS)
def tick(self: Task, timeframe: str, until: str | None = None, book_id: str | None = None) -> dict[str, Any]:
    """Entry point of beat: resolve the bar to compute (by bar time) and launch the timeframe's chain."""
    rt = get_runtime()
    book = book_id or rt.book_id
    if not pipeline.bootstrap_completed(rt, book):
        log.error("tick refused: bootstrap has not completed %s", kv(book=book, timeframe=timeframe))
        return {"status": "not_bootstrapped", "book_id": book, "timeframe": timeframe}
    bar = steps.parse_ts(until) if until else steps.last_closed_bar(timeframe, pipeline.utcnow())
    result = pipeline.tick_canvas(timeframe, steps.iso(bar), book).apply_async()
    return {"status": "launched", "book_id": book, "timeframe": timeframe, "until": steps.iso(bar), "id": result.id}


@app.task(name="regime.collect.tick", bind=True, **RETRY_OPTS)
def collect(self: Task, timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """Fetch/import the input bars of one timeframe up to ``until`` (queue regime.io)."""
    return steps.collect(get_runtime(), timeframe, steps.parse_ts(until))


@app.task(name="regime.composite.build", bind=True, **RETRY_OPTS)
def composite(self: Task, timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """Build the driver price series (BTC, ALT, buckets, dominance) of one timeframe up to ``until``."""
    return steps.build_driver_series(get_runtime(), timeframe, steps.parse_ts(until))


@app.task(name="regime.driver.update", bind=True, **RETRY_OPTS)
def driver_update(self: Task, driver: str, timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """TA + engine + mapper for one driver × timeframe; returns a status so one failure never blocks the rest."""
    return steps.update_driver_safely(get_runtime(), book_id, driver, timeframe, steps.parse_ts(until))


@app.task(name="regime.tick.publish", bind=True, **RETRY_OPTS)
def publish(self: Task, results: list[dict[str, Any]], timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """Chord body: publish the timeframe's driver payloads to the cache in one atomic write."""
    return steps.publish(get_runtime(), book_id, timeframe, results)


@app.task(name="regime.levers.run", bind=True, **RETRY_OPTS)
def levers(self: Task, until: str, book_id: str) -> dict[str, Any]:
    """Write ``features.levers`` for every active/watchlist position of the book."""
    return steps.run_levers(get_runtime(), book_id)


@app.task(name="regime.bootstrap.run", bind=True)
def bootstrap(self: Task, book_id: str | None = None, now: str | None = None) -> dict[str, Any]:
    """Run the bootstrap (plan §12) inside a worker; the CLI runs the same function in-process.

    ``now`` (ISO-8601 UTC) pins the clock, as ``regime bootstrap --now`` does.
    """
    rt = get_runtime()
    book = book_id or rt.book_id
    if rt.settings.bootstrap_in_subprocess and not rt.settings.embedded:
        return _bootstrap_in_subprocess(book, now, timeout_secs=rt.settings.task_soft_time_limit_secs)
    clock = steps.parse_ts(now).to_pydatetime() if now else None
    return pipeline.bootstrap(rt, book_id=book, now=clock).as_dict()


def _bootstrap_in_subprocess(book_id: str, now: str | None, *, timeout_secs: float) -> dict[str, Any]:
    """``regime bootstrap --json`` in a child process, so that the year of bars it replays is freed when it
    exits instead of staying in this long-lived pool process (issue 7: worker memory after a bootstrap)."""
    import contextlib
    import json
    import subprocess
    import sys

    # -v: INFO logs and, on a crash, the traceback on stderr, whose tail goes into the error below
    cmd = [sys.executable, "-m", "regime_tasks.cli", "-v", "bootstrap", "--json", "--book", book_id]
    if now:
        cmd += ["--now", now]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_secs, check=False)
    if proc.returncode in (0, 2):  # 2: it ran, but required drivers are missing (the report says which)
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(proc.stdout)
    tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
    raise RuntimeError(f"bootstrap subprocess exited with {proc.returncode} and no report:\n{tail}")


@app.task(name="regime.beat.heartbeat", bind=True)
def heartbeat(self: Task) -> dict[str, Any]:
    """Record that a beat is alive and scheduling (one row, updated in place; counted by the beat test)."""
    rt = get_runtime()
    return pipeline.record_heartbeat(rt, self.request.id)
