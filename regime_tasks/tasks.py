"""Thin Celery tasks: arguments in, a step from ``stages/`` called, a JSON-able summary out.

Retries and routing live here only (the policy is described at ``RETRYABLE_ERRORS``); every step is idempotent
per (book, timeframe, bar time), so a retry, a re-run tick or a redelivered message after a worker crash rewrites
the same rows.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable
from typing import Any

from celery import Task

from regime_tasks import pipeline, stages
from regime_tasks.celery_app import app
from regime_tasks.config import Settings, get_settings
from regime_tasks.core import timeframes
from regime_tasks.logs import kv, redact_url
from regime_tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# One retry policy. Venue calls are retried by the HTTP layer alone, within its own budget
# (sources/http.py); a SourceError reaching a task means that layer has given up, so the task fails and the tick is
# re-run by bar time (pipeline.due_catch_ups). Tasks retry only database and broker/cache errors, with waits of
# 2, 4, 8 … s (at most REGIME_TASK_RETRY_BACKOFF_MAX_SECS) while their sum stays within
# REGIME_TASK_RETRY_BUDGET_SECS. Bad data is never retried.
# The errors themselves are listed once, with the steps that re-raise them: stages.TRANSIENT_ERRORS.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = stages.TRANSIENT_ERRORS


def retry_waits_secs(settings: Settings) -> list[float]:
    """The waits before each retry of a task: 2, 4, 8 … s capped at the maximum, while their sum fits the budget."""
    waits: list[float] = []
    wait = 2.0
    while sum(waits) + min(wait, settings.task_retry_backoff_max_secs) <= settings.task_retry_budget_secs:
        waits.append(min(wait, settings.task_retry_backoff_max_secs))
        wait *= 2
    return waits


class RegimeTask(Task):
    """Base of the pipeline's tasks: the retry budget decides how often a task retries, not a count."""

    max_retries = None


def within_retry_budget(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Retry a bound task on database and broker errors while the retry budget lasts; re-raise anything else.

    Wraps the task's body (as Celery's own ``autoretry_for`` does), so ``self.request`` is the worker's request.
    """

    @functools.wraps(fn)
    def run(self: Task, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except RETRYABLE_ERRORS as exc:
            if self.request.called_directly:
                raise
            # the settings alone: the runtime itself may be what failed (a fresh process's first connection)
            settings = get_settings()
            waits = retry_waits_secs(settings)
            attempt = self.request.retries
            if attempt >= len(waits):
                log.error(
                    "task gave up: retry budget spent %s",
                    kv(task=self.name, retries=attempt, waited_secs=sum(waits), error=redact_url(exc)),
                )
                raise
            # jitter only shortens a wait, so the sum never passes the budget
            countdown = waits[attempt] * (1.0 - random.uniform(0.0, settings.retry_jitter_frac))
            log.warning(
                "task retrying %s",
                kv(task=self.name, retry=attempt + 1, of=len(waits), countdown_secs=round(countdown, 1), error=exc),
            )
            raise self.retry(exc=exc, countdown=countdown) from exc

    return run


@app.task(name="regime.tick", bind=True, base=RegimeTask)
@within_retry_budget
def tick(self: Task, timeframe: str, until: str | None = None, book_id: str | None = None) -> dict[str, Any]:
    """Entry point of beat: resolve the bar to compute (by bar time) and launch the timeframe's chain."""
    rt = get_runtime()
    book = book_id or rt.book_id
    if not pipeline.bootstrap_completed(rt, book):
        log.error("tick refused: bootstrap has not completed %s", kv(book=book, timeframe=timeframe))
        return {"status": "not_bootstrapped", "book_id": book, "timeframe": timeframe}
    bar = timeframes.parse_ts(until) if until else timeframes.last_closed_bar(timeframe, pipeline.utcnow())
    timeframes.check_closed(timeframe, bar, pipeline.utcnow())  # a bar that has not closed is a caller's mistake
    task_id = pipeline.launch_tick(rt, timeframe, timeframes.iso(bar), book)
    # Bar-time catch-up: a tick of another timeframe that failed (its chord gave up during an outage)
    # or never ran is launched again as soon as a tick arrives, i.e. within one 1m beat of the outage's end.
    caught_up = [
        {
            "timeframe": tf,
            "until": timeframes.iso(target),
            "id": pipeline.launch_tick(rt, tf, timeframes.iso(target), book),
        }
        for tf, target in pipeline.due_catch_ups(rt, book, bar + timeframes.bar_delta(timeframe), skip=timeframe)
    ]
    if caught_up:
        log.warning("ticks re-run by bar time %s", kv(book=book, ticks=caught_up))
    return {
        "status": "launched",
        "book_id": book,
        "timeframe": timeframe,
        "until": timeframes.iso(bar),
        "id": task_id,
        "caught_up": caught_up,
    }


@app.task(name="regime.collect.tick", bind=True, base=RegimeTask)
@within_retry_budget
def collect(self: Task, timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """Fetch/import the input bars of one timeframe up to ``until`` (queue regime.io); once per bar for all books."""
    return stages.collect_once(get_runtime(), timeframe, timeframes.parse_ts(until))


@app.task(name="regime.composite.build", bind=True, base=RegimeTask)
@within_retry_budget
def composite(self: Task, timeframe: str, until: str, book_id: str) -> dict[str, Any]:
    """Build the driver price series (BTC, ALT, buckets, dominance) of one timeframe up to ``until``; once per bar
    for all books."""
    return stages.build_driver_series_once(get_runtime(), timeframe, timeframes.parse_ts(until))


@app.task(name="regime.driver.update", bind=True, base=RegimeTask)
@within_retry_budget
def driver_update(
    self: Task, driver: str, timeframe: str, until: str, book_id: str, others: list[str] | None = None
) -> dict[str, Any]:
    """TA + engine + mapper for one driver × timeframe; returns a status so one failure never blocks the rest.

    ``others``: books taken along by this tick (pipeline.launch_tick), updated after ``book_id`` (the step is
    computed once and reused), their results under ``books``."""
    rt = get_runtime()
    bar = timeframes.parse_ts(until)
    result = stages.update_driver_safely(rt, book_id, driver, timeframe, bar)
    if others:
        result["books"] = {book: stages.update_driver_safely(rt, book, driver, timeframe, bar) for book in others}
    return result


@app.task(name="regime.tick.publish", bind=True, base=RegimeTask)
@within_retry_budget
def publish(
    self: Task,
    results: list[dict[str, Any]],
    timeframe: str,
    until: str,
    book_id: str,
    others: list[str] | None = None,
) -> dict[str, Any]:
    """Chord body: publish the timeframe's driver payloads to the cache in one atomic write (per book)."""
    rt = get_runtime()
    summary = stages.publish(rt, book_id, timeframe, [{k: v for k, v in r.items() if k != "books"} for r in results])
    pipeline.record_published(rt, book_id, timeframe, until)
    if others:
        summary["books"] = {}
        for book in others:
            summary["books"][book] = stages.publish(rt, book, timeframe, [r["books"][book] for r in results])
            pipeline.record_published(rt, book, timeframe, until)
    return summary


@app.task(name="regime.levers.run", bind=True, base=RegimeTask)
@within_retry_budget
def levers(self: Task, until: str, book_id: str, others: list[str] | None = None) -> dict[str, Any]:
    """Write ``features.levers`` for every active/watchlist position of the book (and of the books taken along)."""
    rt = get_runtime()
    summary = stages.run_levers(rt, book_id)
    if others:
        summary["books"] = {book: stages.run_levers(rt, book) for book in others}
    return summary


@app.task(name="regime.bootstrap.run", bind=True)
def bootstrap(self: Task, book_id: str | None = None, now: str | None = None) -> dict[str, Any]:
    """Run the bootstrap (plan §12) inside a worker; the CLI runs the same function in-process.

    ``now`` (ISO-8601 UTC) pins the clock, as ``regime bootstrap --now`` does.
    """
    rt = get_runtime()
    book = book_id or rt.book_id
    if rt.settings.bootstrap_in_subprocess and not rt.settings.embedded:
        return _bootstrap_in_subprocess(book, now, timeout_secs=rt.settings.task_soft_time_limit_secs)
    clock = timeframes.parse_ts(now).to_pydatetime() if now else None
    return pipeline.bootstrap(rt, book_id=book, now=clock).as_dict()


def _bootstrap_in_subprocess(book_id: str, now: str | None, *, timeout_secs: float) -> dict[str, Any]:
    """``regime bootstrap --json`` in a child process, so that the year of bars it replays is freed when it
    exits instead of staying in this long-lived pool process (worker memory after a bootstrap)."""
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
