"""Uptrend Engine v4: one live step (one series, one new bar, TA included) ≤ 5 ms; a replay of 8,760
1h bars ≤ 0.35 s (issue 18; was 2 s).  Run: ``.venv/bin/python bench/bench_engine.py`` (real Binance BTC 1h,
2017–22). ``bench_speed.py`` measures the replay in a fresh process against a baseline commit.

Each case is measured on two bars of the real series: the last one (state S0: no S/R levels, no EDX) and the
bar deepest into an S3 episode (the worst case: zig-zag pivots, S/R levels, OX, DX and EDX over three windows
of the whole episode).

- live step: what a worker does per new bar with a warm history (core/live.py) — TA of the bar from the carried
  recurrences, the zig-zag and prefix sums extended, then the engine step.
- window rebuild: what it does when it holds no history for the series (a cold process, or a new window every
  500 bars): TA over the 3,000-bar window and the engine step, vectorised.
"""

from __future__ import annotations

import statistics
import time

import pandas as pd
from common import REAL, measure, report

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.live import LiveHistory
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame

WINDOW = 3_000


def live_case(bars: pd.DataFrame, end: int) -> tuple[str, dict, pd.DataFrame]:
    """The window of ``WINDOW`` bars ending at bar ``end`` and the payload of the bar before it."""
    window = bars.iloc[end - WINDOW + 1 : end + 1]
    history = compute_ta_frame(bars.iloc[end - WINDOW : end])
    prev = run_engine_frame(history)[0][-1]
    return prev["state"], prev, window


def main() -> None:
    raw = pd.read_csv(REAL / "binance_spot_2017-2022/majors/1h/BTCUSDT.csv.gz")
    filled = fill_gaps(normalize_bars(raw, series="BTC", timeframe="1h"), "1h")[0]
    bars = filled.drop(columns="filled")
    year = bars.iloc[-8760:]

    # the bar deepest into an S3 episode, found by a replay of the whole series
    payloads = run_engine_frame(compute_ta_frame(bars))[0]
    depth = [(p["meta"]["bars_since_s3"] or 0) if p["state"] == "S3" else -1 for p in payloads]
    deepest = max(range(WINDOW, len(depth)), key=lambda i: depth[i])

    for end in (len(bars) - 1, deepest):
        state, prev, window = live_case(bars, end)
        label = f"{state}, {depth[end]} bars into S3" if state == "S3" else state
        history_bars = filled.iloc[end - WINDOW : end]
        new_ts, new_bar = filled.index[end], filled.iloc[end]

        def live_step(
            history_bars: pd.DataFrame = history_bars, prev: dict = prev, new_ts=new_ts, new_bar=new_bar
        ) -> float:
            live = LiveHistory(history_bars, EngineSettings(), capacity=WINDOW + 1, window_start=history_bars.index[0])
            t0 = time.perf_counter()
            live.append(new_ts, new_bar)
            live.step_last(prev)
            return time.perf_counter() - t0

        def rebuild(window: pd.DataFrame = window, prev: dict = prev) -> None:
            run_engine_frame(compute_ta_frame(window), prev_payload=prev, start_at=window.index[-1])

        report(f"live step: append + engine step ({label})", statistics.median(live_step() for _ in range(30)), 0.005)
        report(f"window rebuild: TA on 3,000 bars + step ({label})", measure(rebuild, 30), 0.005)
    report(
        "replay 8,760 1h bars (TA + every step, full payloads)",
        measure(lambda: run_engine_frame(compute_ta_frame(year)), 5),
        0.35,
    )
    report(
        "replay 8,760 1h bars (TA + every step, no diagnostics)",
        measure(lambda: run_engine_frame(compute_ta_frame(year), diagnostics="none"), 5),
        0.35,
    )


if __name__ == "__main__":
    main()
