"""Uptrend Engine v4 (issue 4): one live step (TA on 3,000 bars + one engine step) ≤ 5 ms; a replay of 8,760 1h
bars ≤ 2 s.  Run: ``.venv/bin/python bench/bench_engine.py`` (real Binance BTC 1h, 2017–22)."""

from __future__ import annotations

import pandas as pd
from common import REAL, measure, report

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import run_engine_frame


def main() -> None:
    raw = pd.read_csv(REAL / "binance_spot_2017-2022/majors/1h/BTCUSDT.csv.gz")
    bars = fill_gaps(normalize_bars(raw, series="BTC", timeframe="1h"), "1h")[0].drop(columns="filled")
    year = bars.iloc[-8760:]
    frame = compute_ta_frame(bars.iloc[-3001:-1])
    prev = run_engine_frame(frame)[0][-1]
    window = bars.iloc[-3000:]

    def live_step() -> None:
        ta = compute_ta_frame(window)
        run_engine_frame(ta, prev_payload=prev, start_at=window.index[-1])

    def engine_only() -> None:
        run_engine_frame(frame, prev_payload=prev, start_at=frame.index[-1])

    report("live step: TA on 3,000 bars + engine step", measure(live_step, 20), 0.005)
    report("engine step only (history prepared)", measure(engine_only, 20), 0.005)
    report("replay 8,760 1h bars (TA + every step)", measure(lambda: run_engine_frame(compute_ta_frame(year)), 3), 2.0)


if __name__ == "__main__":
    main()
