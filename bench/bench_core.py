"""Core math (issue 3): TA on 3,000 bars (≤ 20 ms) and on 525,600 1m bars (≤ 2 s); composite of 40 constituents ×
8,760 1h bars (≤ 1 s).  Run: ``.venv/bin/python bench/bench_core.py``

Inputs are real: Binance BTC 1h (2017–22) for TA; for 525,600 1m bars the real Hyperliquid BTC 1m prices are
tiled end to end (labelled simulated layout of real values); the 40 constituents are the 29 + 11 real Binance
alt 1h files of both periods, each cut to its last 8,760 bars.
"""

from __future__ import annotations

import pandas as pd
from common import REAL, measure, report

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.composite import chain_linked_composite
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
    files = sorted((REAL / "binance_spot_2017-2022/alts/1h").glob("*.csv.gz"))
    files += sorted((REAL / "binance_spot_2024-2026/alts/1h").glob("*.csv.gz"))
    members = {f"{p.parent.parent.parent.name}/{p.stem}": load(p, "1h").iloc[-8760:] for p in files[:40]}
    assert len(members) == 40
    report("composite, 40 constituents x 8,760 1h bars", measure(lambda: chain_linked_composite(members), 5), 1.0)


if __name__ == "__main__":
    main()
