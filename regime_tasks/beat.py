"""The beat scheduler: RedBeat, made to survive a Redis restart.

RedBeat keeps its lock and the schedule in Redis. Redis without persistence loses both when it restarts; stock
RedBeat then fails to extend the lock (``LockNotOwnedError``) and the beat process exits (measured: exit code 1
about 3 s after the restart), so ticks stop until something restarts it. This scheduler instead tries to take the
lock again without waiting: if it gets it, it writes the schedule again and goes on; if another beat took it in
the meantime, it exits as before, so there is still never more than one scheduler.

Use with ``celery -A regime_tasks beat -S regime_tasks.beat:RegimeBeatScheduler`` (the default of
``celeryconfig.beat_scheduler``).
"""

from __future__ import annotations

import logging

from redbeat import RedBeatScheduler
from redis.exceptions import LockNotOwnedError

log = logging.getLogger(__name__)


class RegimeBeatScheduler(RedBeatScheduler):
    """RedBeat that takes its lock back after Redis lost it, or exits if another beat holds it now."""

    def tick(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return super().tick(*args, **kwargs)
        except LockNotOwnedError:
            if self.lock is None or not self.lock.acquire(blocking=False):
                log.error("beat: lost the scheduler lock and another beat holds it now; exiting")
                raise
            log.warning("beat: Redis lost the scheduler lock (restarted?); took it again, rewriting the schedule")
            self.setup_schedule()
            return super().tick(*args, **kwargs)


__all__ = ["RegimeBeatScheduler"]
