"""regime evaluate: one year of 1h bars for BTC, ALT and the four buckets; target ≤ 20 s.

Run: ``.venv/bin/python bench/bench_evaluate.py`` (bundled data: real bucket members, caps derived from price ×
supply; ``include_simulated=True`` only makes sure no series is left out should a user's files be simulated).
Every driver timeframe the bundle has (1d, 1h, 1m) is replayed, as the levers read all of them. ``bench_replay.py`` runs
interleaved as the baseline: the machine is shared, compare ratios.
"""

from __future__ import annotations

import pandas as pd
from common import BUNDLE, measure, report

from regime_tasks.replay import run_replay
from regime_tasks.replay.evaluate import run_evaluation
from regime_tasks.replay.history import FileHistory
from regime_tasks.sources.files import FileSource


def main() -> None:
    history = FileHistory(FileSource(BUNDLE))
    end = pd.Timestamp("2025-07-26T04:00:00Z")
    start = end - pd.Timedelta(days=365)

    def evaluate() -> None:
        ev = run_evaluation(history, start=start, end=end, timeframes=("1h",), include_simulated=True)
        # all six series replayed and backtested where their history allows (nano 1h is too short in the bundle)
        assert {f"{s} 1h" for s in ("BTC", "ALT", "nano", "small", "mid", "big")} <= set(ev.meta["drivers_replayed"])

    def replay() -> None:
        run_replay(FileSource(BUNDLE), start=start, end=end, timeframes=("1d", "1h"))

    for _ in range(1):  # interleaved with the replay baseline (one round: the shared machine is saturated)
        report("evaluate 1 year 1h, BTC + ALT + 4 buckets", measure(evaluate, 1), 20.0)
        report("baseline: replay 1 year, 8 drivers x (1h + 1d)", measure(replay, 1), 30.0)


if __name__ == "__main__":
    main()
