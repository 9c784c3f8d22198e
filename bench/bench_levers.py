"""compute_levers: warm ≥ 20,000 calls/s in one process; cold (one Redis HGETALL on loopback) p99 ≤ 1 ms;
levers task over 10,000 positions ≤ 5 s (PostgreSQL); 100,000 positions ≤ 10 s.
Run: ``.venv/bin/python bench/bench_levers.py [--positions 100000] [--task-only]`` (needs Redis at 127.0.0.1:6379
and PostgreSQL at 127.0.0.1:5432)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
import uuid

import sqlalchemy as sa
from common import report

from regime_tasks.api import compute_levers, run_levers_task
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.store import positions
from regime_tasks.store.cache import RedisRegimeCache
from regime_tasks.store.db import init_db, make_engine

NOW = dt.datetime(2025, 7, 26, 5, 0, 30, tzinfo=dt.UTC)
BARS = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}
PAYLOADS = {
    f"{d}|{tf}": {"delta_a_raw": 0.2, "delta_e_raw": -0.05, "state": "S3", "bar_ts": BARS[tf]}
    for d in DRIVERS
    for tf in REGIME_TIMEFRAMES
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=10_000, help="positions for the levers task")
    ap.add_argument("--task-only", action="store_true", help="only the levers task")
    args = ap.parse_args()
    if not args.task_only:
        compute_levers_cases()
    levers_task(args.positions)


def compute_levers_cases() -> None:
    os.environ.setdefault("REGIME_BOOKS", "bench_book")  # compute_levers() accepts known books only
    redis_url = os.environ.get("REGIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    cache = RedisRegimeCache(redis_url)
    cache.publish("bench_book", PAYLOADS)
    features = {"intent_metrics": {"hi_buy": 0.5}}

    compute_levers(features, "1h", "small", book_id="bench_book", cache=cache, now=NOW)  # warm the snapshot
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        compute_levers(features, "1h", "small", book_id="bench_book", cache=cache, now=NOW)
    rate = n / (time.perf_counter() - t0)
    print(f"{'compute_levers warm (snapshot hit)':55s} calls/s={rate:,.0f}  target=20,000  ratio={rate / 20_000:.2f}x")

    os.environ["REGIME_LEVERS_SNAPSHOT_TTL_SECS"] = "0"
    from regime_tasks.config import get_settings

    get_settings.cache_clear()
    lat = []
    for _ in range(2_000):
        t0 = time.perf_counter()
        compute_levers(features, "1h", "small", book_id="bench_book", cache=cache, now=NOW)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    p99 = lat[int(0.99 * len(lat))]
    print(
        f"{'compute_levers cold (one HGETALL each call)':55s} p50={statistics.median(lat) * 1e3:.3f} ms  "
        f"p99={p99 * 1e3:.3f} ms  target p99=1 ms  ratio={0.001 / p99:.2f}x"
    )
    # the cold call against a bare redis-py HGETALL of the same hash, interleaved in the same run
    import redis

    bare_client = redis.Redis.from_url(redis_url)
    bare, cold = [], []
    for _ in range(2_000):
        t0 = time.perf_counter()
        bare_client.hgetall("regime:bench_book:latest")
        t1 = time.perf_counter()
        compute_levers(features, "1h", "small", book_id="bench_book", cache=cache, now=NOW)
        t2 = time.perf_counter()
        bare.append(t1 - t0)
        cold.append(t2 - t1)
    ratio = statistics.median(cold) / statistics.median(bare)
    print(
        f"{'compute_levers cold vs bare HGETALL (p50, interleaved)':55s} cold={statistics.median(cold) * 1e3:.3f} ms  "
        f"hgetall={statistics.median(bare) * 1e3:.3f} ms  ratio={ratio:.2f}x  target ≤ 1.5x  "
        f"{'OK' if ratio <= 1.5 else 'MISS'}"
    )
    cache.clear("bench_book")


def levers_task(n_positions: int) -> None:
    pg = os.environ.get("REGIME_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        engine = make_engine(f"{pg}?options=-csearch_path%3D{schema}", cached=False)
        init_db(engine)
        positions.ensure_driver_rows(engine, "onchain_crypto")
        ids = positions.driver_row_ids(engine, "onchain_crypto")
        positions.set_features_bulk(
            engine, [(ids[tuple(k.split("|"))], "regime_engine_v4", v) for k, v in PAYLOADS.items()]
        )
        rows = [
            {
                "token_contract": f"0x{i:040x}",
                "token_chain": "base",
                "timeframe": ["1m", "15m", "1h", "4h"][i % 4],
                "book_id": "onchain_crypto",
                "status": "active" if i % 3 else "watchlist",
                "bucket": ["nano", "small", "mid", "big"][i % 4],
                "features": {"intent_metrics": {"hi_buy": 0.2}},
            }
            for i in range(n_positions)
        ]
        from regime_tasks.store.schema import lowcap_positions

        with engine.begin() as conn:
            conn.execute(sa.insert(lowcap_positions), rows)
        from regime_tasks.store.cache import MemoryRegimeCache

        t0 = time.perf_counter()
        summary = run_levers_task(engine, MemoryRegimeCache(), book_id="onchain_crypto", now=NOW)
        secs = time.perf_counter() - t0
        assert summary["written"] == n_positions, summary
        target = 5.0 if n_positions <= 10_000 else 10.0 * n_positions / 100_000
        report(f"levers task over {n_positions:,} positions (PostgreSQL)", secs, target)
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
