"""Bulk upsert of 1m bars into PostgreSQL (target: ≥ 50,000 rows/s for 500,000 bars).

Run: ``.venv/bin/python bench/bench_store.py [--rows 500000] [--repeat 3] [--url postgresql+psycopg2://…]``
Uses a fresh schema in the database at ``REGIME_TEST_DATABASE_URL`` (default: the local ``test`` db) and
drops it afterwards. The bars are real-shaped but generated (a seeded random walk): labelled simulated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import numpy as np
import pandas as pd
import sqlalchemy as sa

from regime_tasks.store.bars import count_bars, upsert_bars
from regime_tasks.store.db import init_db, make_engine

TARGET_ROWS_PER_SEC = 50_000


def simulated_bars(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 5e-4, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = np.abs(rng.normal(0, 3e-4, n)) * close
    idx = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC", name="timestamp")
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.gamma(2.0, 5.0, n),
        },
        index=idx,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--url",
        default=os.environ.get("REGIME_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"),
    )
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{schema}"
    try:
        engine = make_engine(url, cached=False)
        init_db(engine)
        frame = simulated_bars(args.rows)
        fresh, again = [], []
        for i in range(args.repeat):
            key = {"token_contract": f"SIM{i}"}
            t0 = time.perf_counter()
            upsert_bars(engine, "majors", key, "1m", frame, source="simulated")
            fresh.append(time.perf_counter() - t0)
            t0 = time.perf_counter()  # same rows again: every row hits ON CONFLICT DO UPDATE
            upsert_bars(engine, "majors", key, "1m", frame, source="simulated")
            again.append(time.perf_counter() - t0)
            assert count_bars(engine, "majors", key, "1m") == args.rows
        for label, times in (("insert (new rows)", fresh), ("upsert (all conflicts)", again)):
            med = statistics.median(times)
            rate = args.rows / med
            print(
                f"{label:24s} rows={args.rows:,} median={med:.2f}s rows/s={rate:,.0f} "
                f"target={TARGET_ROWS_PER_SEC:,} ratio={rate / TARGET_ROWS_PER_SEC:.2f}x"
            )
        engine.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
