"""Median ATR(14)/close of the ALT constituents, of the chain-linked composite and of the plan's raw-price composite.

Run: ``.venv/bin/python scripts/composite_comparison.py`` (real Hyperliquid perp 1h, SOL/ETH/BNB/HYPE, common window).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from regime_tasks.core.bars import normalize_bars
from regime_tasks.core.composite import chain_linked_composite, raw_price_composite
from regime_tasks.core.ta import compute_ta_frame

FOLDER = Path(__file__).resolve().parent.parent / "regime_tasks" / "data" / "majors" / "1h"


def atr_over_close(frame: pd.DataFrame) -> float:
    ta = compute_ta_frame(frame[["open", "high", "low", "close", "volume"]])
    return float((ta["atr"] / ta["close"]).median())


def main() -> None:
    members = {
        s: normalize_bars(pd.read_csv(FOLDER / f"{s}.csv.gz"), series=s, timeframe="1h")
        for s in ("SOL", "ETH", "BNB", "HYPE")
    }
    start = max(f.index[0] for f in members.values())
    members = {s: f[f.index >= start] for s, f in members.items()}
    print("| series | median ATR(14)/close |\n|---|---|")
    for s, f in members.items():
        print(f"| {s} | {atr_over_close(f):.4f} |")
    print(f"| ALT chain-linked (ours, D3) | {atr_over_close(chain_linked_composite(members)):.4f} |")
    print(f"| ALT raw-price avg/max/min (plan §5.1) | {atr_over_close(raw_price_composite(members)):.4f} |")


if __name__ == "__main__":
    main()
