"""The Celery graph through a real worker: send ``regime.tick`` (what beat sends) → cache updated, p50 over
20 1m ticks (target ≤ 0.3 s; 1.5 s before the replay-speed work); worker RSS after the bootstrap ran inside
the worker (target ≤ 400 MB).

Run: ``.venv/bin/python bench/bench_worker.py`` from the repository root (PostgreSQL at 127.0.0.1:5432 needed; it
starts its own redis-server, venue server and worker on loopback). History: 365 days of 1h (the local server has
Binance 1h from 2024-09-14, so ~315 days exist) and 7 days of 1m (Hyperliquid 1m exists for ~4.7 days); lowcaps
and dominance are not loaded (optional drivers missing): ``REGIME_LOWCAP_SOURCE=host`` with no host rows, so the
figure is the majors' graph. The live universe's own tick (64 members a bucket) is ``bench_universe.py``.

``--books N``: a second deployment (its own PostgreSQL schema, redis-server and worker) where N books
(``onchain_crypto``, ``book2`` …) share the database and the worker pool, each bootstrapped by its own
``regime.bootstrap.run`` and ticked by its own ``regime.tick`` with its book (what one beat per book sends), all
sent at once for each bar; measured until every book's cache shows the bar. The two deployments tick the same bar
in turn (interleaved) and both medians and their ratio are printed (issue 18: 4 books ≤ 2× one book). Two
deployments, not one: in one database the N books tick together, so a "one book" round there would not be a
one-book deployment.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.harness import CeleryWorker
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


def _wait_cached(r: redis.Redis, books: list[str], want: str, t0: float) -> float:
    """Seconds from ``t0`` until every book's cache entry ``BTC|1m`` shows the bar ``want`` (publish writes a
    book's timeframe in one MULTI/EXEC, so BTC's entry stands for all eight)."""
    left = set(books)
    while left:
        for book in sorted(left):
            raw = r.hget(f"regime:{book}:latest", "BTC|1m")
            if raw and want.encode() in raw:
                left.discard(book)
        if time.perf_counter() - t0 > 120:
            raise TimeoutError(f"{want}: {sorted(left)}")
        if left:
            time.sleep(0.005)
    return time.perf_counter() - t0


def _send_tick(s: Stack, book: str, bar: str):
    """What each book's beat sends: ``regime.tick`` with its book (REGIME_BOOK_ID of that deployment)."""
    return s.client.send_task(
        "regime.tick",
        args=("1m", bar, book),
        queue="regime.compute",
        routing_key="regime.compute",
        exchange="regime.compute",
    )


ENV = {
    "REGIME_HISTORY_1H_DAYS": "365",
    "REGIME_HISTORY_1M_DAYS": "7",
    "REGIME_HISTORY_1D_DAYS": "800",
    "REGIME_LOWCAP_SOURCE": "host",
    "REGIME_TASK_SOFT_TIME_LIMIT_SECS": "300",
    "REGIME_TASK_TIME_LIMIT_SECS": "320",
    "REGIME_VISIBILITY_TIMEOUT_SECS": "3600",
}


def _deployment(books: list[str]) -> tuple[Stack, CeleryWorker, redis.Redis]:
    """A database, Redis and worker (prefork pool of 2) shared by ``books``, each bootstrapped by its own
    ``regime.bootstrap.run`` as each book's deployment would."""
    s = Stack()
    s.env.update({**ENV, "REGIME_BOOKS": ",".join(books[1:])})
    w = s.worker(f"bench{len(books)}")
    s.venues.now = pd.Timestamp("2025-07-26T03:00:30Z")
    for book in books:
        t0 = time.perf_counter()
        report = s.client.send_task(
            "regime.bootstrap.run",
            args=(book, "2025-07-26T03:00:30Z"),
            queue="regime.io",
            routing_key="regime.io",
            exchange="regime.io",
        ).get(timeout=900)
        print(
            f"bootstrap of {book} ({len(books)}-book deployment) in the worker: {time.perf_counter() - t0:.1f} s, "
            f"ok={report['ok']}, BTC bars {report['bars']['BTC']}"
        )
    return s, w, redis.Redis.from_url(s.env["REGIME_REDIS_URL"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--books",
        type=int,
        default=1,
        help="N > 1: a second deployment of N books sharing a database and worker; rounds alternate between the "
        "one-book and the N-book deployment, and the ratio of their medians is printed",
    )
    parser.add_argument("--ticks", type=int, default=20, help="measured 1m ticks per deployment")
    args = parser.parse_args()
    counts = [1] if args.books == 1 else [1, args.books]
    deployments: dict[int, tuple[Stack, CeleryWorker, redis.Redis]] = {}
    try:
        for n in counts:
            deployments[n] = _deployment([BOOK, *(f"book{k}" for k in range(2, n + 1))])
        print(f"worker RSS after bootstrap (1 book): {rss_mb(deployments[1][1].proc.pid)}  target ≤ 400 MB")
        lat: dict[int, list[float]] = {n: [] for n in counts}
        for k in range(args.ticks):
            bar = pd.Timestamp("2025-07-26T03:00:00Z") + pd.Timedelta(minutes=k)
            want = bar.strftime("%Y-%m-%dT%H:%M:%SZ")
            for n in counts:  # interleaved: the same bar on each deployment in turn
                s, _, r = deployments[n]
                books = [BOOK, *(f"book{j}" for j in range(2, n + 1))]
                s.venues.now = bar + pd.Timedelta(seconds=65)
                t0 = time.perf_counter()
                for book in books:  # every book's beat sends its tick at the same time
                    _send_tick(s, book, want)
                lat[n].append(_wait_cached(r, books, want, t0))
        p50 = statistics.median(lat[1])
        print(
            f"tick sent → cache updated, {len(lat[1])} 1m ticks of 1 book: p50={p50:.3f} s max={max(lat[1]):.3f} s  "
            f"target p50 ≤ 0.3 s  ratio={0.3 / p50:.2f}x"
        )
        if args.books > 1:
            many = lat[args.books]
            p50n = statistics.median(many)
            print(
                f"tick sent → every cache updated, {len(many)} 1m ticks of {args.books} books at one bar: "
                f"p50={p50n:.3f} s max={max(many):.3f} s; {args.books} books / 1 book = {p50n / p50:.2f}  "
                f"target ≤ 2.00"
            )
        for n in counts:
            print(f"worker RSS after the ticks ({n}-book deployment): {rss_mb(deployments[n][1].proc.pid)}")
    finally:
        for s, _, _ in deployments.values():
            s.close()


if __name__ == "__main__":
    os.environ.setdefault("CI", "")
    main()
