"""The build-series stage (stages.build_driver_series) without a broker: driver series extended tick by tick equal
a rebuild from the same inputs bit for bit — BTC copied from its majors bars, ALT as the chain-linked index of
SOL, ETH, BNB and HYPE continued from its stored close, BTC.d/USDT.d as imported. The buckets (point-in-time members,
membership changing at midnight) are covered on the bundled lowcaps by tests/stages/test_buckets.py.

SQLite files; the file source is the bundled real majors and the tail of the bundled dominance (``files_dir``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.core.timeframes import bar_delta
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from tests.conftest import sqlite_runtime

DRIVERS = ("BTC", "ALT", "BTC.d", "USDT.d")
# (timeframe, first tick, ticks): the 1m ticks cross an hour, the 1h ticks a day
CASES = [
    pytest.param("1m", pd.Timestamp("2025-07-26T03:40:00Z"), 30, marks=pytest.mark.slow, id="1m"),
    pytest.param("1h", pd.Timestamp("2025-07-24T20:00:00Z"), 8, id="1h"),
]


def _runtime(path: Path, files_dir: Path) -> Runtime:
    return sqlite_runtime(path, files_dir=files_dir, source="file", history_1h_days=5, history_1m_days=1)


def _tick(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict:
    stages.collect(rt, timeframe, until)
    return stages.build_driver_series(rt, timeframe, until)


def _series(rt: Runtime, timeframe: str) -> dict[str, pd.DataFrame]:
    return {d: store_bars.read_bars(rt.engine, "regime", {"driver": d}, timeframe) for d in DRIVERS}


@pytest.mark.parametrize(("timeframe", "first", "ticks"), CASES)
def test_series_extended_tick_by_tick_equal_a_rebuild_bit_for_bit(
    tmp_path: Path, files_dir: Path, timeframe: str, first: pd.Timestamp, ticks: int
) -> None:
    step = bar_delta(timeframe)
    last = first + ticks * step
    live = _runtime(tmp_path / "live.db", files_dir)
    _tick(live, timeframe, first)
    written = [_tick(live, timeframe, first + k * step)["written"] for k in range(1, ticks + 1)]
    assert all(w["BTC"] == 1 and w["ALT"] == 1 for w in written)  # each tick adds its one bar

    rebuilt = _runtime(tmp_path / "rebuilt.db", files_dir)
    stages.collect(rebuilt, timeframe, first)  # the same inputs (the backfill starts before the first tick) …
    _tick(rebuilt, timeframe, last)  # … and the driver series built once over them
    got, expected = _series(live, timeframe), _series(rebuilt, timeframe)
    for driver in DRIVERS:
        assert not expected[driver].empty and expected[driver].index[-1] == last, driver
        pd.testing.assert_frame_equal(got[driver], expected[driver], check_exact=True, obj=driver)

    # a rebuild over the ticked database (what a bootstrap does) changes nothing either
    stages.build_driver_series(live, timeframe, last, rebuild=True)
    for driver in ("BTC", "ALT"):
        pd.testing.assert_frame_equal(_series(live, timeframe)[driver], expected[driver], check_exact=True)


def test_a_tick_for_a_bar_already_built_writes_nothing(tmp_path: Path, files_dir: Path) -> None:
    rt = _runtime(tmp_path / "again.db", files_dir)
    until = pd.Timestamp("2025-07-25T06:00:00Z")
    assert _tick(rt, "1h", until)["written"]["ALT"] > 100
    before = _series(rt, "1h")
    assert all(n == 0 for n in _tick(rt, "1h", until)["written"].values())
    for driver, frame in _series(rt, "1h").items():
        pd.testing.assert_frame_equal(frame, before[driver], check_exact=True)
