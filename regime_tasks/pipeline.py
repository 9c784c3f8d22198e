"""The task graph: which chain runs for which timeframe, the beat schedule, and the bootstrap order.

Per timeframe tick (plan §7.2)::

    collect(tf) ─▶ composite(tf) ─▶ chord( driver_update(BTC, tf) … driver_update(USDT.d, tf) )
                                          └─▶ publish(tf) ─▶ levers

``collect`` runs on the ``regime.io`` queue (rate-limited venue calls); the rest on ``regime.compute``.
A failing driver returns an ``error`` status instead of raising, so the chord always reaches ``publish``
and the other seven drivers are published; the stale rule (D8) covers the missing one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from celery import chain, chord
from celery.canvas import Signature
from celery.result import AsyncResult
from celery.schedules import crontab

from regime_tasks import stages
from regime_tasks.core.constants import (
    DRIVERS,
    MIN_BARS_FOR_STATE,
    REGIME_TIMEFRAMES,
    REQUIRED_DRIVERS,
    TIMEFRAME_SECONDS,
)
from regime_tasks.core.timeframes import bar_delta, iso, last_closed_bar, parse_ts
from regime_tasks.errors import NotBootstrappedError
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.store import meta, positions

log = logging.getLogger(__name__)

# Seconds after a bar closes before its tick starts (venues publish the closed bar with a small delay).
TICK_DELAY_SECS = {"1m": 5, "1h": 10, "1d": 30}
# A 1m tick older than this is dropped by the broker instead of replayed after an outage.
ONE_MINUTE_TICK_EXPIRES_SECS = 50


def utcnow() -> dt.datetime:
    """The pipeline's "now": the wall clock, or the replay clock when ``REGIME_REPLAY_CLOCK_START`` is set
    (``sources/clock.py``); a single place to pin time in tests and demos."""
    from regime_tasks.sources import clock

    return clock.now()


def tick_canvas(timeframe: str, until_iso: str, book_id: str, others: list[str] | None = None) -> Signature:
    """The Celery canvas of one timeframe tick for the bar whose open time is ``until_iso``.

    ``others``: more books this chain computes and publishes besides ``book_id`` (books ticking in step with it,
    :func:`launch_tick`); each driver task updates every book's row of its driver, the first computing and the
    rest reusing the step (``stages.drivers``)."""
    from regime_tasks import tasks

    extra: tuple[list[str], ...] = (others,) if others else ()
    header = [tasks.driver_update.si(driver, timeframe, until_iso, book_id, *extra) for driver in DRIVERS]
    body = chain(tasks.publish.s(timeframe, until_iso, book_id, *extra), tasks.levers.si(until_iso, book_id, *extra))
    return chain(
        tasks.collect.si(timeframe, until_iso, book_id).set(queue="regime.io"),
        tasks.composite.si(timeframe, until_iso, book_id),
        chord(header, body),
    )


# --- ticks by bar time: launches, publishes, catch-up -------------------------------------------
def _launched_key(book_id: str, timeframe: str) -> str:
    return f"tick:launched:{book_id}:{timeframe}"


def _published_key(book_id: str, timeframe: str) -> str:
    return f"tick:published:{book_id}:{timeframe}"


def send_tick(timeframe: str, until_iso: str | None, book_id: str) -> AsyncResult:
    """Send the ``regime.tick`` task, the one beat sends: every tick, whoever asks for it, passes the task's
    bootstrap guard and bar-time catch-up. ``until_iso`` None lets the task resolve the bar by its clock."""
    from regime_tasks import tasks

    return tasks.tick.apply_async(args=(timeframe, until_iso, book_id))


GetResult = Callable[[AsyncResult, float], Any]  # (result, timeout in seconds) -> the task's return value


def await_tick(sent: AsyncResult, get: GetResult, timeout_secs: float) -> dict[str, Any]:
    """Wait for a tick sent by :func:`send_tick`: the task, then the chain it launched and every catch-up tick.

    Raises :class:`NotBootstrappedError` when the task refused because the book's bootstrap has not completed.
    Returns ``{"id", "result", "caught_up"}``: the chain's last task id and result, and the catch-ups with theirs.
    """
    from regime_tasks.celery_app import app

    launched = get(sent, timeout_secs)
    if launched.get("status") == "not_bootstrapped":
        raise NotBootstrappedError(
            f"tick refused: the bootstrap of book {launched['book_id']!r} has not completed; run `regime bootstrap`"
        )
    result = get(app.AsyncResult(launched["id"]), timeout_secs)
    caught_up = [{**c, "result": get(app.AsyncResult(c["id"]), timeout_secs)} for c in launched.get("caught_up", [])]
    return {"id": launched["id"], "result": result, "caught_up": caught_up}


def launch_tick(rt: Runtime, timeframe: str, until_iso: str, book_id: str) -> str:
    """Send a timeframe's canvas for one bar and remember it (bar, id of its last task, when); returns that id.

    Several books tick the same bars (one beat per book, one schedule), and their ticks repeat the same work. The
    first tick of a bar takes along every other book in step with it — bootstrapped, and whose own last tick was
    for the bar before — and its chain computes and publishes them all; a tick of a book already taken along for its
    bar launches nothing and returns that chain's id. A book not in step (behind, just bootstrapped, beat
    stopped for more than a bar) runs its own chain. Decided under a lock, so ticks arriving together agree.

    Only the ``regime.tick`` task calls this (after its bootstrap guard); anything else sends that task
    (:func:`send_tick`)."""
    from regime_tasks.stages.once import step_lock

    requested, led_key = _requested_key(book_id, timeframe), _led_key(timeframe)
    with step_lock(rt, f"tick:lead:{timeframe}") as held:
        facts = held.read(keys=(led_key,), prefixes=(_REQUESTED, _BOOTSTRAP))
        led = facts.get(led_key) or {}
        chains: dict[str, dict[str, str]] = dict(led.get("chains") or {}) if led.get("until") == until_iso else {}
        writes: dict[str, Any] = {}
        if ((facts.get(requested) or {}).get("until") or "") < until_iso:  # this book's own tick asked for it
            writes[requested] = {"until": until_iso}
        mine = chains.get(book_id)
        if mine is not None and not _failed(rt, mine):  # in flight or done; a failed chain is launched again
            held.write(writes)
            log.info("tick taken along %s", kv(book=book_id, timeframe=timeframe, until=until_iso, id=mine["id"]))
            return str(mine["id"])
        covered = {b for b, c in chains.items() if not _failed(rt, c)}
        others = [b for b in _in_step(facts, book_id, timeframe, until_iso) if b not in covered]
        result = tick_canvas(timeframe, until_iso, book_id, others).apply_async()
        at = iso(utcnow())
        for book in (book_id, *others):
            chains[book] = {"id": result.id, "at": at}
            writes[_launched_key(book, timeframe)] = {"until": until_iso, "id": result.id, "at": at}
        writes[led_key] = {"until": until_iso, "chains": chains}
        held.write(writes)
    if others:
        log.info("tick takes along %s", kv(book=book_id, timeframe=timeframe, until=until_iso, books=others))
    return result.id


def _led_key(timeframe: str) -> str:
    return f"tick:led:{timeframe}"


def _failed(rt: Runtime, launched: dict[str, Any]) -> bool:
    """A launched chain that failed, was revoked, or outlived its lease (presumed lost)."""
    from regime_tasks.celery_app import app

    if (utcnow() - parse_ts(launched["at"])).total_seconds() > tick_lease_secs(rt):
        return True
    return app.AsyncResult(launched["id"]).state in {"FAILURE", "REVOKED"}


_REQUESTED = "tick:requested:"
_BOOTSTRAP = "bootstrap:"


def _in_step(facts: dict[str, Any], book_id: str, timeframe: str, until_iso: str) -> list[str]:
    """Books other than ``book_id`` whose bootstrap completed and whose own last tick of ``timeframe`` asked for
    the bar just before ``until_iso`` (in ``facts``, the ``tick:requested:…`` and ``bootstrap:…`` meta): they
    tick the same bars and this bar is next for them too. Only a book's own ticks count, so a book whose beat
    stopped is taken along for one bar at most."""
    before = iso(parse_ts(until_iso) - bar_delta(timeframe))
    suffix = f":{timeframe}"
    books = []
    for key, value in facts.items():
        if not (key.startswith(_REQUESTED) and key.endswith(suffix)):
            continue
        book = key[len(_REQUESTED) : -len(suffix)]
        if book and book != book_id and (value or {}).get("until") == before and _bootstrap_key(book) in facts:
            books.append(book)
    return sorted(books)


def _requested_key(book_id: str, timeframe: str) -> str:
    return f"tick:requested:{book_id}:{timeframe}"


def record_published(rt: Runtime, book_id: str, timeframe: str, until_iso: str) -> None:
    """Remember the newest bar whose tick reached publish (a late, older re-run never moves it back)."""
    previous = meta.get_meta(rt.engine, _published_key(book_id, timeframe)) or {}
    if (previous.get("until") or "") < until_iso:
        meta.set_meta(rt.engine, _published_key(book_id, timeframe), {"until": until_iso, "at": iso(utcnow())})


def tick_lease_secs(rt: Runtime) -> float:
    """How long a launched tick may stay unfinished before it is presumed lost (its messages dropped by a Redis
    restart): every task of the chain using its whole retry budget and time limit."""
    s = rt.settings
    return s.task_retry_budget_secs + 4 * s.task_time_limit_secs


def _in_flight(rt: Runtime, launched: dict[str, Any]) -> bool:
    from regime_tasks.celery_app import app

    age_secs = (utcnow() - parse_ts(launched["at"])).total_seconds()
    if age_secs > tick_lease_secs(rt):
        return False
    # The chain's last task: Celery marks it FAILURE when any earlier task (or the chord) failed.
    return app.AsyncResult(launched["id"]).state not in {"FAILURE", "REVOKED", "SUCCESS"}


def due_catch_ups(
    rt: Runtime, book_id: str, as_of: pd.Timestamp, *, skip: str | None = None
) -> list[tuple[str, pd.Timestamp]]:
    """Timeframes whose last bar closed by ``as_of`` was not published and has no tick in flight.

    ``as_of`` is bar time (the close of the bar a tick is for), not the wall clock, so a catch-up is decided the
    same way live and in tests. Only timeframes longer than ``skip`` (the one being ticked now) are considered: a
    newer bar of the same timeframe supersedes a failed one, and the 1m beat, every minute, is what re-runs a failed
    1h or 1d tick.
    """
    due = []
    for tf in REGIME_TIMEFRAMES:
        if skip is not None and TIMEFRAME_SECONDS[tf] <= TIMEFRAME_SECONDS[skip]:
            continue
        target = last_closed_bar(tf, as_of)
        published = meta.get_meta(rt.engine, _published_key(book_id, tf)) or {}
        if (published.get("until") or "") >= iso(target):
            continue
        launched = meta.get_meta(rt.engine, _launched_key(book_id, tf)) or {}
        if (launched.get("until") or "") >= iso(target) and _in_flight(rt, launched):
            continue
        due.append((tf, target))
    return due


def beat_schedule(
    heartbeat_secs: int = 30, replay_speed: float | None = None, book_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """Beat entries: each timeframe a few seconds after its bar closes; 1m entries expire (no backlog replay).

    The heartbeat entry lets operators (``regime status``) and tests see that exactly one beat is scheduling.
    On the replay clock (``replay_speed``) a tick runs every bar length of *replay* time — every 60/speed s for
    1m — since replay bars do not close on the wall clock's minutes; the tick resolves its bar by that clock.
    ``book_id`` (a beat's ``REGIME_BOOK_ID``) goes with every tick, so that a worker pool shared by several books'
    beats computes the book of the beat that sent the tick, not the worker's own default.
    """
    args: tuple[Any, ...] = () if book_id is None else (None, book_id)
    if replay_speed is not None:
        return {
            "regime-beat-heartbeat": {
                "task": "regime.beat.heartbeat",
                "schedule": float(heartbeat_secs),
                "options": {"expires": heartbeat_secs},
            },
            **{
                f"regime-tick-{tf}": {
                    "task": "regime.tick",
                    "schedule": TIMEFRAME_SECONDS[tf] / replay_speed,
                    "args": (tf, *args),
                    "options": {"expires": ONE_MINUTE_TICK_EXPIRES_SECS / replay_speed} if tf == "1m" else {},
                }
                for tf in sorted(REGIME_TIMEFRAMES, key=TIMEFRAME_SECONDS.__getitem__)
            },
        }
    return {
        "regime-beat-heartbeat": {
            "task": "regime.beat.heartbeat",
            "schedule": float(heartbeat_secs),
            "options": {"expires": heartbeat_secs},
        },
        "regime-tick-1m": {
            "task": "regime.tick",
            "schedule": crontab(minute="*"),
            "args": ("1m", *args),
            "options": {"countdown": TICK_DELAY_SECS["1m"], "expires": ONE_MINUTE_TICK_EXPIRES_SECS},
        },
        "regime-tick-1h": {
            "task": "regime.tick",
            "schedule": crontab(minute=0),
            "args": ("1h", *args),
            "options": {"countdown": TICK_DELAY_SECS["1h"]},
        },
        "regime-tick-1d": {
            "task": "regime.tick",
            "schedule": crontab(minute=0, hour=0),
            "args": ("1d", *args),
            "options": {"countdown": TICK_DELAY_SECS["1d"]},
        },
    }


def record_heartbeat(rt: Runtime, task_id: str | None) -> dict[str, Any]:
    """Store the beat heartbeat: last time, and a count of heartbeats received (for monitoring and tests)."""
    previous = meta.get_meta(rt.engine, "beat:heartbeat") or {}
    value = {"at": iso(utcnow()), "count": int(previous.get("count", 0)) + 1, "task_id": task_id}
    meta.set_meta(rt.engine, "beat:heartbeat", value)
    return value


# --- bootstrap (plan §12, D15) ----------------------------------------------------------------------
def _bootstrap_key(book_id: str) -> str:
    return f"bootstrap:{book_id}"


def bootstrap_completed(rt: Runtime, book_id: str) -> bool:
    """True once a bootstrap of the book has finished (the schedules refuse to run before)."""
    return meta.get_meta(rt.engine, _bootstrap_key(book_id)) is not None


@dataclasses.dataclass
class BootstrapReport:
    """What the bootstrap achieved per driver × timeframe: ready, warming_up, missing or error."""

    book_id: str
    status: dict[str, dict[str, str]]  # driver -> tf -> status
    bars: dict[str, dict[str, int]]
    errors: list[str]
    seconds: float
    now: str | None = None
    # per timeframe, the open time of the source's newest BTC bar, when it is older than the last closed bar at now
    source_ends: dict[str, str | None] = dataclasses.field(default_factory=dict)
    suggested_now: str | None = None  # the earliest clock at which every timeframe's newest source bar has closed

    @property
    def missing_required(self) -> list[str]:
        return [
            f"{d}/{tf}"
            for d in sorted(REQUIRED_DRIVERS)
            for tf in REGIME_TIMEFRAMES
            if self.status.get(d, {}).get(tf) in {"missing", "error"}
        ]

    @property
    def ok(self) -> bool:
        return not self.missing_required

    @property
    def hint(self) -> str | None:
        """What to do when the source's data ends before ``now`` (the file source on the real clock)."""
        if not self.source_ends:
            return None
        ends = ", ".join(f"{tf} {ts or 'none'}" for tf, ts in self.source_ends.items())
        text = f"the source's data ends before now ({self.now}): its last BTC bars are {ends}"
        if self.suggested_now:
            text += (
                f"; pass --now {self.suggested_now} (regime bootstrap --now {self.suggested_now}) or run on the "
                "replay clock (REGIME_REPLAY_CLOCK_START, README: Try the production setup offline)"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "book_id": self.book_id,
            "ok": self.ok,
            "now": self.now,
            "hint": self.hint,
            "source_ends": self.source_ends,
            "missing_required": self.missing_required,
            "status": self.status,
            "bars": self.bars,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
        }


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def bootstrap(
    rt: Runtime,
    *,
    book_id: str,
    now: dt.datetime | None = None,
    timeframes: tuple[str, ...] = REGIME_TIMEFRAMES,
    progress: Progress | None = None,
) -> BootstrapReport:
    """Create driver rows, backfill, build series, replay history through TA/engine/mapper, fill the cache.

    The backfill fetches every bar missing back to the configured depth, holes included. After a failed (or no)
    bootstrap, or when majors bars were missing inside or before the stored history, the driver series and the
    engine's history replay (D15) are rebuilt from all stored bars, so the present starts in the state its history
    implies and the bootstrap ends where a fresh one would; otherwise it extends them like a tick. The
    completion marker is written even when optional drivers are missing; without BTC or ALT the report is not
    ``ok`` and the marker is not written. When the source's data ends before ``now`` the report says where
    (``source_ends``, ``hint``).
    """
    t0 = time.perf_counter()
    clock = now or utcnow()
    positions.ensure_driver_rows(rt.engine, book_id)
    # After a completed bootstrap whose history is whole, a new one only extends it (cheap); after a failed one,
    # or when bars were missing inside or before the stored history, everything is rebuilt and replayed.
    completed_before = bootstrap_completed(rt, book_id)
    status: dict[str, dict[str, str]] = {d: {} for d in DRIVERS}
    nbars: dict[str, dict[str, int]] = {d: {} for d in DRIVERS}
    errors: list[str] = []
    steps_total = len(timeframes) * (2 + len(DRIVERS) + 1)
    done = 0

    def advance(phase: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(phase, done, steps_total)

    source_ends: dict[str, str | None] = {}
    closes: list[Any] = []
    for tf in timeframes:
        until = last_closed_bar(tf, clock)
        rebuild = not completed_before
        try:
            rebuild = bool(stages.collect(rt, tf, until, repair=True)["repaired"]) or rebuild
        except Exception as exc:
            errors.append(f"collect {tf}: {exc}")
            log.exception("bootstrap collect failed %s", kv(timeframe=tf))
        advance(f"collect {tf}")
        # only a source that knows where its data ends (the file source) can end before now; a venue's newest
        # bar may just be late
        end = stages.source_end(rt, tf) if callable(getattr(rt.market, "latest", None)) else until
        if end is not None:
            closes.append(end + bar_delta(tf))
        if end is None or end < until:
            source_ends[tf] = iso(end)
            log.warning("source ends before now %s", kv(timeframe=tf, last_bar=iso(end), until=iso(until)))
        try:
            stages.build_driver_series(rt, tf, until, rebuild=rebuild)
        except Exception as exc:
            errors.append(f"series {tf}: {exc}")
            log.exception("bootstrap series failed %s", kv(timeframe=tf))
        advance(f"series {tf}")
        results = []
        for driver in DRIVERS:
            result = stages.update_driver_safely(rt, book_id, driver, tf, until, replay=rebuild)
            results.append(result)
            nbars[driver][tf] = int(result.get("bars", 0))
            if result["status"] == "error":
                status[driver][tf] = "error"
                errors.append(f"{driver}/{tf}: {result.get('error')}")
            elif result["status"] == "missing":
                status[driver][tf] = "missing"
            elif result.get("state") == "warming_up" or nbars[driver][tf] < MIN_BARS_FOR_STATE:
                status[driver][tf] = "warming_up"
            else:
                status[driver][tf] = "ready"
            advance(f"engine {driver}/{tf}")
        stages.publish(rt, book_id, tf, results)
        record_published(rt, book_id, tf, iso(until))
        advance(f"publish {tf}")
    stages.run_levers(rt, book_id)
    report = BootstrapReport(
        book_id,
        status,
        nbars,
        errors,
        time.perf_counter() - t0,
        now=iso(clock),
        source_ends=source_ends,
        suggested_now=iso(max(closes)) if source_ends and closes else None,
    )
    if report.ok:
        meta.set_meta(rt.engine, _bootstrap_key(book_id), {"completed_at": iso(clock), **report.as_dict()})
    return report
