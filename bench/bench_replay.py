"""Replay: one year of 1h bars (plus the 1d series) for all drivers and buckets; target ≤ 30 s.
Run: ``.venv/bin/python bench/bench_replay.py`` (bundled data)."""

from __future__ import annotations

import pandas as pd
from common import BUNDLE, measure, report

from regime_tasks.replay import run_replay
from regime_tasks.sources.files import FileSource


def main() -> None:
    source = FileSource(BUNDLE)
    end = pd.Timestamp("2025-07-26T04:00:00Z")

    def replay() -> None:
        run_replay(source, start=end - pd.Timedelta(days=365), end=end, timeframes=("1d", "1h"))

    report("replay 1 year, 8 drivers x (1h + 1d)", measure(replay, 2), 30.0)


if __name__ == "__main__":
    main()
