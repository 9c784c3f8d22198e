"""The Celery application (``celery -A regime_tasks worker|beat|flower``)."""

from __future__ import annotations

from celery import Celery
from celery.signals import task_postrun, worker_process_init

app = Celery("regime_tasks")
app.config_from_object("celeryconfig")
app.conf.include = ["regime_tasks.tasks"]


def _schedule() -> None:
    from regime_tasks.config import get_settings
    from regime_tasks.pipeline import beat_schedule
    from regime_tasks.sources.clock import speed

    settings = get_settings()
    app.conf.beat_schedule = beat_schedule(
        settings.beat_heartbeat_secs, replay_speed=speed(settings), book_id=settings.book_id
    )


_schedule()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # A prefork child must not reuse the parent's database sockets.
    from regime_tasks.store.db import dispose_engines
    from regime_tasks.worker_memory import reset_baseline

    dispose_engines()
    reset_baseline()


@task_postrun.connect
def _give_memory_back(task: object = None, **_: object) -> None:
    # after a task that grew this process (a bootstrap, a window rebuild of many series): collect and trim
    from regime_tasks.config import get_settings
    from regime_tasks.worker_memory import trim_if_grown

    threshold = get_settings().worker_trim_threshold_mb
    if threshold > 0:
        trim_if_grown(threshold, task=getattr(task, "name", ""))
