"""Run the Celery graph inside one process: the embedded default (in-memory broker, SQLite, local cache).

The same canvas and tasks as production run on a Celery worker *thread* consuming the in-memory broker,
so the demo exercises the real graph, not an eager shortcut.

Nothing here waits on a fixed clock: the worker thread stops as soon as it is told to (its blocking wait on the
broker is cut short, :class:`MemoryTransport`), and :func:`wait_result` wakes when a task of this process finishes
instead of polling the result every 0.5 s.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from kombu.transport import memory

from regime_tasks.errors import ConfigError
from regime_tasks.logs import redact_url
from regime_tasks.runtime import get_runtime

log = logging.getLogger(__name__)

# The longest the worker thread blocks on the empty in-memory broker before it looks at its stop flag again.
# Celery's solo loop asks for 2 s, and stopping the thread meant waiting out two of those (4 s every run).
DRAIN_WAIT_SECS = 0.05
# Ceiling of one wait for a result when no task finishes in between (a safety net, not the normal wake-up).
RESULT_RECHECK_SECS = 1.0


class MemoryTransport(memory.Transport):
    """kombu's in-memory transport with each blocking wait cut to :data:`DRAIN_WAIT_SECS`.

    A drain that finds nothing raises the usual ``socket.timeout`` sooner, so the worker loop sees a stop
    request within ~50 ms; messages, queues and their shared state are the memory transport's own.
    """

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if timeout is not None:
            timeout = min(timeout, DRAIN_WAIT_SECS)
        return super().drain_events(connection, timeout=timeout, **kwargs)


# Tasks finished in this process (any task): the generation a result wait sleeps on.
_finished = threading.Condition()
_finished_count = 0


def _task_finished(**_: object) -> None:
    global _finished_count
    with _finished:
        _finished_count += 1
        _finished.notify_all()


_connected = False


def _connect_signals() -> None:
    """Wake result waits on every task end; a chain's failure marks its last result before that signal."""
    global _connected
    if not _connected:
        from celery.signals import task_postrun

        task_postrun.connect(_task_finished, weak=False)
        _connected = True


@contextlib.contextmanager
def in_process_worker() -> Iterator[None]:
    """Start a solo-pool worker thread on the in-memory broker for the duration of the block."""
    from celery.contrib.testing.worker import start_worker

    from regime_tasks.celery_app import app

    rt = get_runtime()
    if not rt.settings.embedded:
        raise ConfigError(
            f"REGIME_BROKER_URL={redact_url(rt.settings.broker_url)!r} is not the embedded broker (memory://): "
            "start workers with `celery -A regime_tasks worker` instead"
        )
    _connect_signals()
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING"):
        yield


def wait_result(result: Any, timeout_secs: float) -> Any:
    """``result.get()`` that sleeps until a task of this process finishes rather than polling on a clock."""
    deadline = time.monotonic() + timeout_secs
    while True:
        # checked under the lock a task's end notifies under, so no wake-up is lost between check and wait
        with _finished:
            if result.ready():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break  # result.get below raises Celery's TimeoutError
            _finished.wait(timeout=min(remaining, RESULT_RECHECK_SECS))
    return result.get(timeout=max(0.0, deadline - time.monotonic()), interval=0.01)


def run_tick(timeframe: str, until_iso: str, book_id: str, *, timeout_secs: float = 120.0) -> dict[str, Any]:
    """Send the ``regime.tick`` task (as beat does) to the in-process worker and wait for the chain it launched
    and any catch-up ticks; :func:`regime_tasks.pipeline.await_tick` says what comes back and what it raises."""
    from regime_tasks.pipeline import await_tick, send_tick

    _connect_signals()
    return await_tick(send_tick(timeframe, until_iso, book_id), wait_result, timeout_secs)
