"""The embedded worker thread: results wake their waiter, and stopping the thread does not wait out a clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = """
import json, time
from regime_tasks.embedded import in_process_worker, wait_result
from regime_tasks.tasks import heartbeat

with in_process_worker():
    t0 = time.perf_counter()
    out = wait_result(heartbeat.apply_async(), 60.0)
    t1 = time.perf_counter()
t2 = time.perf_counter()
print(json.dumps({"result": out, "wait": t1 - t0, "stop": t2 - t1}))
"""


@pytest.mark.slow
def test_in_process_worker_runs_a_task_and_stops_without_waiting_out_the_broker_poll(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REGIME_DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.db'}",
        "REGIME_BROKER_URL": "memory://",
        "REGIME_RESULT_BACKEND": "cache+memory://",
        "REGIME_REDIS_URL": "",
        "REGIME_SOURCE": "file",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["result"]  # the heartbeat task's own answer came back through the result backend
    # Celery's solo loop blocks 2 s per broker poll and stopping used to wait out two of them (4.0 s every run)
    assert report["stop"] < 2.0, report
