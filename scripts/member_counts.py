"""Members per bar of the four bucket composites in a database (e.g. the demo's): median, share of bars where no
member traded, and the 1m distribution.

Run: ``.venv/bin/python scripts/member_counts.py sqlite:///var/demo.db`` (after ``regime demo``).
"""

from __future__ import annotations

import sys

import pandas as pd
import sqlalchemy as sa


def main(url: str) -> None:
    engine = sa.create_engine(url)
    query = (
        "SELECT driver, timeframe, timestamp, constituents FROM regime_price_data_ohlc "
        "WHERE driver IN ('nano', 'small', 'mid', 'big')"
    )
    frame = pd.read_sql(query, engine)
    print("| bucket | tf | bars | from | median members | bars with 0 | 10th pct | 90th pct |")
    print("|---|---|---|---|---|---|---|---|")
    for (driver, tf), g in sorted(frame.groupby(["driver", "timeframe"]), key=lambda kv: (kv[0][1], kv[0][0])):
        c = g["constituents"]
        print(
            f"| {driver} | {tf} | {len(g)} | {str(g['timestamp'].min())[:10]} | {c.median():g} | "
            f"{(c == 0).mean():.1%} | {c.quantile(0.1):g} | {c.quantile(0.9):g} |"
        )
    print("\n1m: members per bar → number of bars")
    for driver in ("nano", "small", "mid", "big"):
        c = frame[(frame["driver"] == driver) & (frame["timeframe"] == "1m")]["constituents"]
        print(f"- {driver}: {dict(sorted(c.value_counts().items()))}")


if __name__ == "__main__":
    main(sys.argv[1])
