"""Parse + validate Binance klines (target: ≥ 200,000 candles/s for 1,000,000 klines).

Run: ``.venv/bin/python bench/bench_sources.py [--klines 1000000] [--repeat 3]``
The klines are real Binance 1h BTC candles (tests/data/real, 2017–22) in the API's 12-field row format, repeated
with shifted open times up to the requested count; the timing covers decoding the body (``decode_json``, as the
HTTP client does), conversion to a bar frame and full validation (``parse_klines``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pandas as pd

from regime_tasks.sources.binance import parse_klines
from regime_tasks.sources.http import decode_json

TARGET = 200_000
REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "real"


def body(n: int) -> bytes:
    raw = pd.read_csv(REAL / "binance_spot_2017-2022" / "majors" / "1h" / "BTCUSDT.csv.gz")
    t0 = 1_500_000_000_000 - 1_500_000_000_000 % 3_600_000
    reps = -(-n // len(raw))
    rows = []
    for i in range(n):
        r = raw.iloc[i % len(raw)]
        t = t0 + i * 3_600_000
        rows.append(
            [
                t,
                f"{r.open:.8f}",
                f"{r.high:.8f}",
                f"{r.low:.8f}",
                f"{r.close:.8f}",
                f"{r.volume:.8f}",
                t + 3_599_999,
                "0",
                0,
                "0",
                "0",
                "0",
            ]
        )
    del reps
    return json.dumps(rows).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--klines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = body(args.klines)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        frame = parse_klines(decode_json(data), symbol="BTCUSDT", interval="1h")
        times.append(time.perf_counter() - t0)
        assert len(frame) == args.klines
    med = statistics.median(times)
    rate = args.klines / med
    print(
        f"parse+validate klines={args.klines:,} median={med:.2f}s candles/s={rate:,.0f} target={TARGET:,} "
        f"ratio={rate / TARGET:.2f}x"
    )


if __name__ == "__main__":
    main()
