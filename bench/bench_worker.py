"""The Celery graph through a real worker: send ``regime.tick`` (what beat sends) → cache updated, p50 over
20 1m ticks (target ≤ 0.3 s; 1.5 s before the replay-speed work); worker RSS after the bootstrap ran inside
the worker (target ≤ 400 MB).

Run: ``.venv/bin/python bench/bench_worker.py`` from the repository root (PostgreSQL at 127.0.0.1:5432 needed; it
starts its own redis-server, venue server and worker on loopback). History: 365 days of 1h (the local server has
Binance 1h from 2024-09-14, so ~315 days exist) and 7 days of 1m (Hyperliquid 1m exists for ~4.7 days); lowcaps
and dominance are not loaded (optional drivers missing): ``REGIME_LOWCAP_SOURCE=host`` with no host rows, so the
figure is the majors' graph. The live universe's own tick (64 members a bucket) is ``bench_universe.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.test_worker import BOOK, Stack


def _field_kb(path: Path, name: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def rss_mb(pid: int) -> str:
    """The worker's memory (main process + pool children), two ways, in MB.

    RSS counts every page a process maps, so pages the pool children share with the main process (numpy, pandas,
    pyarrow, SQLAlchemy imported before the fork) are counted once per process; PSS (/proc/PID/smaps_rollup)
    divides each shared page among the processes sharing it, so its sum is what the worker takes from the machine.
    """
    import subprocess

    pids = [pid, *map(int, subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())]
    rss = [_field_kb(Path(f"/proc/{p}/status"), "VmRSS") / 1024 for p in pids]
    pss = [_field_kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") / 1024 for p in pids]
    return (
        f"RSS {sum(rss):.0f} MB ({' + '.join(f'{x:.0f}' for x in rss)}: main + pool of 2); "
        f"PSS {sum(pss):.0f} MB ({' + '.join(f'{x:.0f}' for x in pss)})"
    )


def main() -> None:
    s = Stack()
    s.env.update(
        {
            "REGIME_HISTORY_1H_DAYS": "365",
            "REGIME_HISTORY_1M_DAYS": "7",
            "REGIME_HISTORY_1D_DAYS": "800",
            "REGIME_LOWCAP_SOURCE": "host",
            "REGIME_TASK_SOFT_TIME_LIMIT_SECS": "300",
            "REGIME_TASK_TIME_LIMIT_SECS": "320",
            "REGIME_VISIBILITY_TIMEOUT_SECS": "3600",
        }
    )
    try:
        w = s.worker("bench")
        s.venues.now = pd.Timestamp("2025-07-26T03:00:30Z")
        t0 = time.perf_counter()
        report = s.send_bootstrap("2025-07-26T03:00:30Z").get(timeout=900)
        print(
            f"bootstrap in the worker: {time.perf_counter() - t0:.1f} s, ok={report['ok']}, "
            f"BTC bars {report['bars']['BTC']}"
        )
        print(f"worker RSS after bootstrap: {rss_mb(w.proc.pid)}  target ≤ 400 MB")
        r = redis.Redis.from_url(s.env["REGIME_REDIS_URL"])
        lat = []
        for k in range(20):
            bar = pd.Timestamp("2025-07-26T03:00:00Z") + pd.Timedelta(minutes=k)
            s.venues.now = bar + pd.Timedelta(seconds=65)
            t0 = time.perf_counter()
            s.send_tick("1m", bar.strftime("%Y-%m-%dT%H:%M:%SZ"))
            want = bar.strftime("%Y-%m-%dT%H:%M:%SZ")
            while True:
                raw = r.hget(f"regime:{BOOK}:latest", "BTC|1m")
                if raw and want.encode() in raw:
                    break
                if time.perf_counter() - t0 > 60:
                    raise TimeoutError(want)
                time.sleep(0.005)
            lat.append(time.perf_counter() - t0)
        p50 = statistics.median(lat)
        print(
            f"tick sent → cache updated, 20 1m ticks: p50={p50:.3f} s max={max(lat):.3f} s  target p50 ≤ 0.3 s  "
            f"ratio={0.3 / p50:.2f}x"
        )
        print(f"worker RSS after the ticks: {rss_mb(w.proc.pid)}")
    finally:
        s.close()


if __name__ == "__main__":
    os.environ.setdefault("CI", "")
    main()
