"""The collect stage (stages.collect) without a broker: a first tick backfills the configured depth, later ticks
continue after the last stored bar, a re-run writes nothing, and only a repairing collect (the bootstrap's) fetches
bars missing inside the stored history, naming the symbols it repaired.

SQLite files; the file source is the bundled real majors and the tail of the bundled dominance (``files_dir``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.core.constants import MAJORS
from regime_tasks.runtime import Runtime
from regime_tasks.sources.files import FileSource
from regime_tasks.store import bars as store_bars
from regime_tasks.store.schema import PRICE_TABLES
from tests.conftest import sqlite_runtime

UNTIL = pd.Timestamp("2025-07-25T12:00:00Z")  # open time of the last closed 1h bar to collect


@pytest.fixture()
def rt(tmp_path: Path, files_dir: Path) -> Runtime:
    return sqlite_runtime(tmp_path / "collect.db", files_dir=files_dir, source="file", history_1h_days=3)


def _stored(rt: Runtime, symbol: str) -> pd.DataFrame:
    frame = store_bars.read_bars(rt.engine, "majors", {"token_contract": symbol}, "1h")
    frame.index = frame.index.as_unit("ns")  # the store reads microseconds; the files are read in nanoseconds
    return frame[["open", "high", "low", "close", "volume"]]


def _source(files_dir: Path, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    bars = FileSource(files_dir).bars("majors", symbol, "1h")
    return bars.loc[start:end, ["open", "high", "low", "close", "volume"]]


def test_a_first_tick_backfills_the_depth_and_later_ticks_only_append(rt: Runtime, files_dir: Path) -> None:
    start = UNTIL - pd.Timedelta(days=3)
    first = stages.collect(rt, "1h", UNTIL)
    for symbol in MAJORS:
        expected = _source(files_dir, symbol, start, UNTIL)
        assert first["majors"][symbol] == len(expected) > 60
        pd.testing.assert_frame_equal(_stored(rt, symbol), expected, check_exact=True, check_freq=False)
    assert first["repaired"] == []

    later = UNTIL + pd.Timedelta(hours=3)
    second = stages.collect(rt, "1h", later)
    assert second["majors"] == dict.fromkeys(MAJORS, 3)  # the three bars after the last stored one
    assert _stored(rt, "BTC").index[-1] == later
    assert stages.collect(rt, "1h", later)["majors"] == dict.fromkeys(MAJORS, 0)  # a re-run writes nothing


def test_only_a_repairing_collect_fetches_bars_missing_inside_the_history(rt: Runtime, files_dir: Path) -> None:
    stages.collect(rt, "1h", UNTIL)
    whole = _stored(rt, "ETH")
    hole = (pd.Timestamp("2025-07-23T05:00:00Z"), pd.Timestamp("2025-07-23T09:00:00Z"))
    table = PRICE_TABLES["majors"]
    with rt.engine.begin() as conn:
        conn.execute(
            table.delete().where(
                table.c.token_contract == "ETH", table.c.timeframe == "1h", table.c.timestamp.between(*hole)
            )
        )
    assert len(_stored(rt, "ETH")) == len(whole) - 5

    tick = stages.collect(rt, "1h", UNTIL)  # a tick continues after the last stored bar: the hole stays
    assert tick["majors"]["ETH"] == 0 and len(_stored(rt, "ETH")) == len(whole) - 5

    repair = stages.collect(rt, "1h", UNTIL, repair=True)
    assert repair["repaired"] == ["ETH"]
    assert repair["majors"]["ETH"] >= 5 and repair["majors"]["BTC"] == 0
    pd.testing.assert_frame_equal(_stored(rt, "ETH"), whole, check_exact=True)
