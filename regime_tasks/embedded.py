"""Run the Celery graph inside one process: the embedded default (in-memory broker, SQLite, local cache).

The same canvas and tasks as production run on a Celery worker *thread* consuming the in-memory broker,
so the demo exercises the real graph, not an eager shortcut.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from regime_tasks.errors import ConfigError
from regime_tasks.runtime import get_runtime

log = logging.getLogger(__name__)


@contextlib.contextmanager
def in_process_worker() -> Iterator[None]:
    """Start a solo-pool worker thread on the in-memory broker for the duration of the block."""
    from celery.contrib.testing.worker import start_worker

    from regime_tasks.celery_app import app

    rt = get_runtime()
    if not rt.settings.embedded:
        raise ConfigError(
            f"REGIME_BROKER_URL={rt.settings.broker_url!r} is not the embedded broker (memory://): "
            "start workers with `celery -A regime_tasks worker` instead"
        )
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="WARNING"):
        yield


def run_tick(timeframe: str, until_iso: str, book_id: str, *, timeout_secs: float = 120.0) -> dict:
    """Send one timeframe tick through the broker and wait for its last task (levers)."""
    from regime_tasks.pipeline import tick_canvas

    result = tick_canvas(timeframe, until_iso, book_id).apply_async()
    return result.get(timeout=timeout_secs)
