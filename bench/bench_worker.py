"""The Celery graph through a real worker: send ``regime.tick`` (what beat sends) → cache updated, p50 over
20 1m ticks (target ≤ 0.3 s; 1.5 s before the replay-speed work); worker RSS after the bootstrap ran inside
the worker (target ≤ 400 MB).

Run: ``.venv/bin/python bench/bench_worker.py`` from the repository root (PostgreSQL at 127.0.0.1:5432 needed; it
starts its own redis-server, venue server and worker on loopback). History: 365 days of 1h (the local server has
Binance 1h from 2024-09-14, so ~315 days exist) and 7 days of 1m (Hyperliquid 1m exists for ~4.7 days); lowcaps
and dominance are not loaded (optional drivers missing): ``REGIME_LOWCAP_SOURCE=host`` with no host rows, so the
figure is the majors' graph. The live universe's own tick (64 members a bucket) is ``bench_universe.py``.

``--books N``: N books (``onchain_crypto``, ``book2`` …) share the database and the worker, each bootstrapped by
its own ``regime.bootstrap.run`` and ticked by its own ``regime.tick`` (what one beat per deployment sends). Rounds
alternate: one book ticked alone (measured; the others then follow at the same bar, unmeasured) and all N books
ticked at the same bar (measured until every book's cache shows it); prints both medians and their ratio (issue
18: 4 books ≤ 2× one book).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--books",
        type=int,
        default=1,
        help="books sharing the database and the worker pool (N > 1: rounds of one book and of N books, "
        "interleaved, and the ratio)",
    )
    parser.add_argument("--ticks", type=int, default=20, help="measured ticks per round kind")
    args = parser.parse_args()
    books = [BOOK, *(f"book{k}" for k in range(2, args.books + 1))]
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
            "REGIME_BOOKS": ",".join(books[1:]),
        }
    )
    try:
        w = s.worker("bench")
        s.venues.now = pd.Timestamp("2025-07-26T03:00:30Z")
        for book in books:  # each deployment bootstraps its book, on the same database and pool
            t0 = time.perf_counter()
            report = s.client.send_task(
                "regime.bootstrap.run",
                args=(book, "2025-07-26T03:00:30Z"),
                queue="regime.io",
                routing_key="regime.io",
                exchange="regime.io",
            ).get(timeout=900)
            print(
                f"bootstrap of {book} in the worker: {time.perf_counter() - t0:.1f} s, ok={report['ok']}, "
                f"BTC bars {report['bars']['BTC']}"
            )
        print(f"worker RSS after bootstrap: {rss_mb(w.proc.pid)}  target ≤ 400 MB")
        r = redis.Redis.from_url(s.env["REGIME_REDIS_URL"])
        one: list[float] = []
        many: list[float] = []
        kinds = ["one"] if len(books) == 1 else ["one", "many"]
        for k in range(args.ticks * len(kinds)):
            kind = kinds[k % len(kinds)]
            bar = pd.Timestamp("2025-07-26T03:00:00Z") + pd.Timedelta(minutes=k)
            want = bar.strftime("%Y-%m-%dT%H:%M:%SZ")
            s.venues.now = bar + pd.Timedelta(seconds=65)
            measured = books if kind == "many" else books[:1]
            t0 = time.perf_counter()
            for book in measured:
                _send_tick(s, book, want)
            (many if kind == "many" else one).append(_wait_cached(r, measured, want, t0))
            if kind == "one" and len(books) > 1:  # the other books follow, unmeasured, so all stay at one bar
                t1 = time.perf_counter()
                for book in books[1:]:
                    _send_tick(s, book, want)
                _wait_cached(r, books[1:], want, t1)
        p50 = statistics.median(one)
        print(
            f"tick sent → cache updated, {len(one)} 1m ticks of 1 book: p50={p50:.3f} s max={max(one):.3f} s  "
            f"target p50 ≤ 0.3 s  ratio={0.3 / p50:.2f}x"
        )
        if many:
            p50n = statistics.median(many)
            print(
                f"tick sent → every cache updated, {len(many)} 1m ticks of {len(books)} books at one bar: "
                f"p50={p50n:.3f} s max={max(many):.3f} s; {len(books)} books / 1 book = {p50n / p50:.2f}  "
                f"target ≤ 2.00"
            )
        print(f"worker RSS after the ticks: {rss_mb(w.proc.pid)}")
    finally:
        s.close()


if __name__ == "__main__":
    os.environ.setdefault("CI", "")
    main()
