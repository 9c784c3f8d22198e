"""The drift of the first composite method (mean of ratios) against the log mean (D3 revised), re-measured.

Run: ``.venv/bin/python scripts/composite_drift.py`` — reads the bundled 1h candles of the nano bucket's members
(``regime_tasks/data``) and prints each member's total return, the index under both methods (every member, no
membership, over the bundled 2025 window), then the bounce-only case (twenty members alternating ±30 % around a
constant price for 2,000 bars, built here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from regime_tasks.core.bars import normalize_bars
from regime_tasks.core.composite import arithmetic_mean_composite, chain_linked_composite

DATA = Path(__file__).resolve().parent.parent / "regime_tasks" / "data"


def main() -> None:
    members = json.loads((DATA / "MANIFEST.json").read_text())["bucket_members"]["nano"]
    frames = {}
    for s in members:
        raw = pd.read_csv(DATA / "lowcaps" / "1h" / f"{s}.csv.gz")
        bars = normalize_bars(raw, series=s, timeframe="1h")
        frames[s] = bars[(bars.index >= "2025-01-01") & (bars["volume"] > 0)]
    print("| series | first | last | total return |\n|---|---|---|---|")
    for s, f in frames.items():
        total = f["close"].iloc[-1] / f["close"].iloc[0]
        print(f"| {s} | {f.index[0]:%Y-%m-%d} | {f.index[-1]:%Y-%m-%d} | ×{total:.3g} |")
    arith = arithmetic_mean_composite(frames)
    logm = chain_linked_composite(frames)
    print(f"| index, mean of ratios (first method) | | | ×{arith.iloc[-1] / 100:.3g} |")
    print(f"| index, mean of log ratios (D3 revised) | | | ×{logm['close'].iloc[-1] / 100:.3g} |")
    bounce = {}
    for k in range(20):
        closes = 10.0 * np.where((np.arange(2000) + k) % 2 == 0, 1.3, 1 / 1.3)
        idx = pd.date_range("2025-01-01", periods=2000, freq="1h", tz="UTC", name="timestamp")
        bounce[k] = pd.DataFrame(
            {"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1.0}, index=idx
        )
    a, g = arithmetic_mean_composite(bounce).iloc[-1] / 100, chain_linked_composite(bounce)["close"].iloc[-1] / 100
    print(f"\nbounce-only, 20 members × 2,000 bars: mean of ratios ×{a:.3g}, log mean ×{g:.6g}")


if __name__ == "__main__":
    main()
