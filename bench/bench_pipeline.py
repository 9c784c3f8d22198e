"""A 1m tick's compute: 8 drivers × (TA + engine step + mapper + TA payload), no network, one
process; target ≤ 150 ms.  Run: ``.venv/bin/python bench/bench_pipeline.py``

Series: the eight 1m driver series built from the bundled data (real Hyperliquid majors, simulated lowcap 1m
and dominance 1m), a 3,000-bar window each, the engine state carried from the previous bar as in a live tick.

- warm tick: what a worker does every minute when it holds the drivers' live histories (core/live.py).
- cold tick: a worker holding none (just started, or every driver's window starting anew, once in 500 bars):
  each window is rebuilt from its bars first.
"""

from __future__ import annotations

import statistics
import time

from common import BUNDLE, measure, report

from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.constants import DEFAULT_BUCKET_THRESHOLDS_USD
from regime_tasks.core.live import LiveHistory, ta_payload_of_history
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame
from regime_tasks.replay import driver_bars
from regime_tasks.sources.files import FileSource

WINDOW = 3_000


def main() -> None:
    series = driver_bars(FileSource(BUNDLE), dict(DEFAULT_BUCKET_THRESHOLDS_USD), "1m")
    settings = EngineSettings()
    cases = {}
    for driver, bars in series.items():
        filled = fill_gaps(bars[["open", "high", "low", "close", "volume"]], "1m")[0]
        history = filled.iloc[-WINDOW - 1 : -1]
        prev = run_engine_frame(compute_ta_frame(history.drop(columns="filled")))[0][-1]
        cases[driver] = (history, filled.index[-1], filled.iloc[-1], prev)

    def step_all(histories: dict[str, LiveHistory]) -> None:
        for driver, live in histories.items():
            _, ts, bar, prev = cases[driver]
            live.append(ts, bar)
            payload, _ = live.step_last(prev)
            map_engine_payload(payload)
            ta_payload_of_history(live, driver, "1m", settings.sr_levels)

    def build_all() -> dict[str, LiveHistory]:
        return {
            d: LiveHistory(h, settings, capacity=WINDOW + 1, window_start=h.index[0]) for d, (h, *_) in cases.items()
        }

    def warm_tick() -> float:
        histories = build_all()
        t0 = time.perf_counter()
        step_all(histories)
        return time.perf_counter() - t0

    print(f"drivers with 1m series: {sorted(cases)}")
    report(f"1m tick compute, warm, {len(cases)} drivers", statistics.median(warm_tick() for _ in range(10)), 0.150)
    report(
        f"1m tick compute, cold, {len(cases)} drivers x 3,000 bars", measure(lambda: step_all(build_all()), 10), 0.150
    )


if __name__ == "__main__":
    main()
