"""The Celery application (``celery -A regime_tasks worker|beat|flower``)."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_process_init

app = Celery("regime_tasks")
app.config_from_object("celeryconfig")
app.conf.include = ["regime_tasks.tasks"]


def _schedule() -> None:
    from regime_tasks.config import get_settings
    from regime_tasks.pipeline import beat_schedule

    app.conf.beat_schedule = beat_schedule(get_settings().beat_heartbeat_secs)


_schedule()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # A prefork child must not reuse the parent's database sockets.
    from regime_tasks.store.db import dispose_engines

    dispose_engines()
