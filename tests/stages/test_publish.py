"""The publish stage (stages.publish) without a broker: the drivers' payloads of one timeframe go to the cache in
one write, a failed or missing driver is left out and named, and a tick that stepped nothing says why.

SQLite file, the in-process cache; the file source is the bundled real majors and dominance tail (``files_dir``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.runtime import Runtime
from regime_tasks.store.positions import read_driver_features
from tests.conftest import sqlite_runtime

BOOK = "onchain_crypto"
UNTIL = pd.Timestamp("2025-07-25T12:00:00Z")


@pytest.fixture()
def rt(tmp_path: Path, files_dir: Path) -> Runtime:
    runtime = sqlite_runtime(tmp_path / "publish.db", files_dir=files_dir, source="file", history_1h_days=3)
    stages.collect(runtime, "1h", UNTIL)
    stages.build_driver_series(runtime, "1h", UNTIL)
    return runtime


def test_published_entries_are_the_stored_payloads_of_the_drivers_that_ran(rt: Runtime) -> None:
    results = [stages.update_driver_safely(rt, BOOK, d, "1h", UNTIL) for d in ("BTC", "ALT", "nano")]
    failed = {"driver": "mid", "status": "error", "error": "ValueError: boom", "payload": None, "bars": 0}
    summary = stages.publish(rt, BOOK, "1h", [*results, failed])

    assert [r["status"] for r in results] == ["ok", "ok", "missing"]  # no lowcaps in this source: no nano bars
    assert summary["published"] == ["ALT|1h", "BTC|1h"]
    assert summary["statuses"] == {"BTC": "ok", "ALT": "ok", "nano": "missing", "mid": "error"}
    assert summary["failed"] == ["mid"] and "message" not in summary
    cached = rt.cache.read(BOOK)
    stored = read_driver_features(rt.engine, BOOK, keys=("regime_engine_v4",))
    assert set(cached) == {"BTC|1h", "ALT|1h"}
    for driver in ("BTC", "ALT"):
        assert cached[f"{driver}|1h"] == stored[(driver, "1h")]["regime_engine_v4"]
        assert cached[f"{driver}|1h"]["bar_ts"] == "2025-07-25T12:00:00Z"


def test_a_tick_that_stepped_nothing_republishes_and_says_where_the_source_ends(rt: Runtime) -> None:
    first = [stages.update_driver_safely(rt, BOOK, d, "1h", UNTIL) for d in ("BTC", "ALT")]
    stages.publish(rt, BOOK, "1h", first)
    again = [stages.update_driver_safely(rt, BOOK, d, "1h", UNTIL) for d in ("BTC", "ALT")]
    assert [r["status"] for r in again] == ["unchanged", "unchanged"]

    summary = stages.publish(rt, BOOK, "1h", again)
    assert summary["published"] == ["ALT|1h", "BTC|1h"]  # the same payloads, written again
    # the bundled BTC 1h bars end at 03:00 on the 26th: the message says both bars
    assert (
        summary["message"] == "no new closed bar after 2025-07-25T12:00:00Z — the source ends at 2025-07-26T03:00:00Z"
    )
    assert rt.cache.read(BOOK)["BTC|1h"] == first[0]["payload"]
