"""Core math: TA on 3,000 bars (≤ 20 ms) and on 525,600 1m bars (≤ 2 s); composite of 186
members × 8,760 1h bars with daily membership (≤ 0.5 s).  Run: ``.venv/bin/python bench/bench_core.py``

Inputs come from the repository: Binance BTC 1h (2017–22, tests/data/real) for TA; for 525,600 1m bars the real
Hyperliquid BTC 1m prices are tiled end to end (a synthetic layout of real values). The composite's 186 members
are the bundle's 29 real 1h series (24 bucket members and 5 majors, regime_tasks/data), each repeated end to end
to 8,760 bars and started at 7 different offsets (again a synthetic layout of real values: 29 × 7 = 203, first
186 kept); membership is point in time from caps = daily close × a supply spread over four decades, at most 64
per bucket, and the bench uses the bucket with the most member-days.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from common import BUNDLE, REAL, measure, report

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.composite import chain_linked_composite, point_in_time_membership
from regime_tasks.core.ta import compute_ta, compute_ta_frame


def load(path, tf: str) -> pd.DataFrame:
    return normalize_bars(pd.read_csv(path), series=str(path), timeframe=tf)


def main() -> None:
    btc = fill_gaps(load(REAL / "binance_spot_2017-2022/majors/1h/BTCUSDT.csv.gz", "1h"), "1h")[0].drop(
        columns="filled"
    )
    window = btc.iloc[-3000:]
    report("TA frame, one series, 3,000 1h bars", measure(lambda: compute_ta_frame(window), 20), 0.020)
    report(
        "TA payload (frame + pivots + S/R), 3,000 bars",
        measure(lambda: compute_ta(window, series="BTC", timeframe="1h"), 20),
        0.020,
    )
    m1 = load(REAL / "hyperliquid_snapshot_2025-07-26/perp/1m/BTC.csv.gz", "1m")
    reps = -(-525_600 // len(m1))
    tiled = pd.concat([m1.reset_index(drop=True)] * reps).iloc[:525_600]
    tiled.index = pd.date_range("2024-01-01", periods=525_600, freq="1min", tz="UTC", name="timestamp")
    report("TA frame, 525,600 1m bars", measure(lambda: compute_ta_frame(tiled), 3), 2.0)
    members, membership = universe_members()
    report(
        "composite, 186 members x 8,760 1h bars, daily membership",
        measure(lambda: chain_linked_composite(members, membership=membership), 5),
        0.5,
    )


def universe_members(n: int = 186, bars: int = 8_760) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """186 members × 8,760 1h bars laid out from the bundle's real 1h series, and a daily membership table."""
    paths = sorted((BUNDLE / "lowcaps" / "1h").glob("*.csv.gz")) + sorted((BUNDLE / "majors" / "1h").glob("*.csv.gz"))
    series = [load(p, "1h").reset_index(drop=True) for p in paths]
    grid = pd.date_range("2024-01-01", periods=bars, freq="1h", tz="UTC", name="timestamp")
    members = {}
    for k in range(n):
        base = series[k % len(series)]
        offset = (k // len(series)) * 701
        rows = np.arange(offset, offset + bars) % len(base)
        frame = base.iloc[rows].reset_index(drop=True)
        frame.index = grid
        members[f"M{k:03d}"] = frame
    supplies = np.geomspace(1e4, 1e8, n)  # spreads the caps over the four buckets
    caps = pd.DataFrame(
        {name: f["close"].resample("1D").last() * supplies[k] for k, (name, f) in enumerate(members.items())}
    )
    by_bucket = point_in_time_membership(caps, nano_max_usd=10e6, small_max_usd=50e6, mid_max_usd=200e6)
    membership = max(by_bucket.values(), key=lambda m: int(m.to_numpy().sum()))
    return members, membership


if __name__ == "__main__":
    main()
