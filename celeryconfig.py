"""Celery settings of the regime pipeline, built from ``REGIME_*`` settings.

Loaded by ``regime_tasks.celery_app`` (``app.config_from_object("celeryconfig")``). The choices follow
Celery's guidance for Redis brokers:

- ``task_acks_late`` + ``worker_prefetch_multiplier = 1`` + ``task_reject_on_worker_lost``: a task whose
  worker dies (SIGKILL, OOM) is redelivered instead of lost; every task is idempotent per
  (book, driver, timeframe, bar time), so a redelivery rewrites the same rows.
- Hard time limit below the broker visibility timeout, otherwise Redis would redeliver a task that is
  still running.
- Separate queue ``regime.io`` for venue API calls (rate-limited, retried with backoff) so a slow venue
  never starves the compute queue ``regime.compute``.
- JSON only (no pickle), results expire after a day, worker/task events on for Flower.
"""

from __future__ import annotations

from kombu import Exchange, Queue

from regime_tasks.config import get_settings

_s = get_settings()

broker_url = _s.broker_url
result_backend = _s.result_backend
# kombu sweeps unacknowledged messages back onto the queue every ``unacked_restore_interval`` × ``throttle`` seconds
# (10 × 10 = 100 s by default), whatever the visibility timeout: a task whose worker died waited up to 100 s past
# its timeout. Sweep ten times per visibility timeout instead, so redelivery follows the timeout it is set by.
broker_transport_options = {
    "visibility_timeout": _s.visibility_timeout_secs,
    "unacked_restore_interval": max(1, _s.visibility_timeout_secs // 10),
    "unacked_restore_throttle": 1,
}
result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout_secs}
broker_connection_retry_on_startup = True

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# A pool process whose RSS stays above this after a task (and after regime_tasks.worker_memory gave back what it could)
# is replaced: a backstop against a leak, not the normal path (KiB; None = never).
worker_max_memory_per_child = _s.worker_max_memory_mb * 1024 if _s.worker_max_memory_mb else None
task_soft_time_limit = _s.task_soft_time_limit_secs
task_time_limit = _s.task_time_limit_secs
result_expires = 86_400
result_extended = True
task_track_started = True

worker_send_task_events = True
task_send_sent_event = True

task_default_queue = "regime.compute"
task_queues = (
    Queue("regime.compute", Exchange("regime.compute", type="direct"), routing_key="regime.compute"),
    Queue("regime.io", Exchange("regime.io", type="direct"), routing_key="regime.io"),
)
task_default_exchange = "regime.compute"
task_default_routing_key = "regime.compute"
task_routes = {
    "regime.collect.*": {"queue": "regime.io"},
    "regime.bootstrap.*": {"queue": "regime.io"},
}

# RedBeat keeps the schedule and a lock in Redis (regime_tasks.beat adds taking the lock back after a Redis
# restart): a second beat process waits for the lock instead of scheduling twice. Embedded mode runs no beat:
# `regime tick` and the demo send each tick's canvas to the in-process worker (regime_tasks.embedded).
beat_scheduler = "regime_tasks.beat:RegimeBeatScheduler"
redbeat_redis_url = _s.redis_url or _s.broker_url
redbeat_lock_timeout = _s.beat_lock_timeout_secs
redbeat_key_prefix = f"redbeat:{_s.book_id}:"
beat_max_loop_interval = 5

if _s.embedded:
    # One process, in-memory transport: poll quickly so a tick is not dominated by idle waits.
    broker_transport_options = {"polling_interval": 0.01}
    # the memory transport with short blocking waits, so the worker thread stops at once (regime_tasks.embedded)
    broker_transport = "regime_tasks.embedded:MemoryTransport"
    result_chord_retry_interval = 0.05
    worker_hijack_root_logger = False
