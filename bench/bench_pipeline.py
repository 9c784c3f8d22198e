"""A 1m tick's compute (issue 7): 8 drivers × (TA on a 3,000-bar window + engine step + mapper), no network,
one process; target ≤ 150 ms.  Run: ``.venv/bin/python bench/bench_pipeline.py``

Series: the eight 1m driver series built from the bundled data (real Hyperliquid majors, simulated lowcap 1m
and dominance 1m), the last 3,000 bars each, the engine state carried from the previous bar as in a live tick.
"""

from __future__ import annotations

from common import BUNDLE, measure, report

from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.ta import compute_ta_frame, ta_payload_from_frame
from regime_tasks.core.uptrend import run_engine_frame
from regime_tasks.replay import driver_bars
from regime_tasks.sources.files import FileSource


def main() -> None:
    caps = {"nano_max_usd": 10e6, "small_max_usd": 50e6, "mid_max_usd": 200e6}
    series = driver_bars(FileSource(BUNDLE), caps, "1m")
    windows, prevs = {}, {}
    for driver, bars in series.items():
        filled = fill_gaps(bars[["open", "high", "low", "close", "volume"]], "1m")[0].drop(columns="filled")
        windows[driver] = filled.iloc[-3000:]
        prevs[driver] = run_engine_frame(compute_ta_frame(filled.iloc[-3001:-1]))[0][-1]

    def tick() -> None:
        for driver, window in windows.items():
            frame = compute_ta_frame(window)
            payloads, _ = run_engine_frame(frame, prev_payload=prevs[driver], start_at=window.index[-1])
            map_engine_payload(payloads[-1])
            ta_payload_from_frame(frame, series=driver, timeframe="1m", filled_bars=0)

    print(f"drivers with 1m series: {sorted(windows)}")
    report(f"1m tick compute, {len(windows)} drivers x 3,000 bars", measure(tick, 10), 0.150)


if __name__ == "__main__":
    main()
