"""The bootstrap repairs history and says where the source's data ends.

A bootstrap on a clock past the bundled data fails (no 1h/1m bars in the window) and stores only the 1d bars its
window reaches; one with holes punched into the stored history follows; then a correct bootstrap must leave the
database as a fresh one leaves it: the same bars up to now, the same driver states, payloads and state-change
events. Before the fix the second run only appended after the last stored bar and BTC 1d stayed warming up.

SQLite files (no services); the file source is the bundled real majors and dominance (no lowcaps, to keep it
quick: the bucket drivers are optional).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.config import Settings
from regime_tasks.core import timeframes
from regime_tasks.core.constants import DRIVERS, MAJORS, REGIME_TIMEFRAMES
from regime_tasks.pipeline import bootstrap
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine
from regime_tasks.store.events import read_events
from regime_tasks.store.positions import read_driver_features

pytestmark = pytest.mark.slow

BOOK = "onchain_crypto"
NOW = pd.Timestamp("2025-07-26T04:00:30Z")  # inside the bundled data (its last 1m bar opens at 04:55)
PAST_THE_DATA = pd.Timestamp("2026-12-01T23:30:00Z")  # a real clock long past the bundled data
DATA_LAST_1M_CLOSE = "2025-07-26T04:56:00Z"
# 800 days of 1d as by default (BTC 1d needs 333 bars for a state); short 1h/1m windows keep the test quick
DEPTHS = {"history_1d_days": 800, "history_1h_days": 20, "history_1m_days": 1}


def _runtime(db: Path, files_dir: Path) -> Runtime:
    settings = Settings(database_url=f"sqlite:///{db}", files_dir=files_dir, source="file", **DEPTHS)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine)


def _snapshot(rt: Runtime) -> dict:
    """Everything a bootstrap decides, up to now: bars, driver payloads (without their wall-clock ts), events."""
    out: dict = {"bars": {}, "features": {}}
    for tf in REGIME_TIMEFRAMES:
        until = timeframes.last_closed_bar(tf, NOW)
        for symbol in MAJORS:
            frame = store_bars.read_bars(rt.engine, "majors", {"token_contract": symbol}, tf, end=until)
            out["bars"][("majors", symbol, tf)] = frame
        for driver in DRIVERS:
            frame = store_bars.read_bars(rt.engine, "regime", {"driver": driver}, tf, end=until)
            out["bars"][("regime", driver, tf)] = frame
    features = read_driver_features(rt.engine, BOOK, keys=("uptrend_engine_v4", "regime_engine_v4"))
    for key, feats in features.items():
        out["features"][key] = {name: {k: v for k, v in (p or {}).items() if k != "ts"} for name, p in feats.items()}
    out["events"] = [
        {k: v for k, v in ev.items() if k not in ("id", "created_at")} for ev in read_events(rt.engine, book_id=BOOK)
    ]
    return out


def test_missing_ranges_cover_the_start_the_holes_and_the_end() -> None:
    start, until = pd.Timestamp("2025-01-01T00:00Z"), pd.Timestamp("2025-01-01T23:00Z")
    stored = pd.date_range("2025-01-01T03:00Z", "2025-01-01T20:00Z", freq="1h").drop(
        [pd.Timestamp("2025-01-01T09:00Z"), pd.Timestamp("2025-01-01T10:00Z")]
    )
    ranges = stages.missing_ranges(stored, start, until, "1h", merge_bars=2)
    assert ranges == [
        (pd.Timestamp("2025-01-01T00:00Z"), pd.Timestamp("2025-01-01T02:00Z")),
        (pd.Timestamp("2025-01-01T09:00Z"), pd.Timestamp("2025-01-01T10:00Z")),
        (pd.Timestamp("2025-01-01T21:00Z"), pd.Timestamp("2025-01-01T23:00Z")),
    ]
    # close holes are fetched as one range (one request); nothing missing, nothing to fetch
    assert stages.missing_ranges(stored, start, until, "1h")[0] == (start, until)
    assert stages.missing_ranges(pd.date_range(start, until, freq="1h"), start, until, "1h") == []


def test_a_failed_bootstrap_then_a_correct_one_equals_a_fresh_one(tmp_path: Path, files_dir: Path) -> None:
    fresh = _runtime(tmp_path / "fresh.db", files_dir)
    report = bootstrap(fresh, book_id=BOOK, now=NOW.to_pydatetime())
    assert report.ok and report.status["BTC"]["1d"] == "ready" and report.hint is None
    expected = _snapshot(fresh)

    rt = _runtime(tmp_path / "repaired.db", files_dir)
    failed = bootstrap(rt, book_id=BOOK, now=PAST_THE_DATA.to_pydatetime())
    assert not failed.ok and failed.status["BTC"]["1d"] == "warming_up"  # the 308 bars
    assert failed.source_ends["1m"] == "2025-07-26T04:55:00Z" and failed.suggested_now == DATA_LAST_1M_CLOSE
    assert f"--now {DATA_LAST_1M_CLOSE}" in failed.hint
    _punch_holes(rt, ("majors", "token_contract", ("BTC", "ETH")), ("regime", "driver", ("BTC", "BTC.d")))
    repaired = bootstrap(rt, book_id=BOOK, now=NOW.to_pydatetime())
    assert repaired.ok and repaired.status == report.status and repaired.bars == report.bars
    _assert_same(_snapshot(rt), expected)

    # after a completed bootstrap: a hole in BTC's history (and its regime copy) is fetched and the 1d history
    # replayed again
    _punch_holes(rt, ("majors", "token_contract", ("BTC",)), ("regime", "driver", ("BTC",)))
    again = bootstrap(rt, book_id=BOOK, now=NOW.to_pydatetime())
    assert again.ok and again.status == report.status and again.bars["BTC"] == report.bars["BTC"]
    _assert_same(_snapshot(rt), expected)


def _punch_holes(rt: Runtime, *series: tuple[str, str, tuple[str, ...]]) -> None:
    """Three weeks of 1d bars of these series are lost."""
    from regime_tasks.store.schema import PRICE_TABLES

    with rt.engine.begin() as conn:
        for table, col, names in series:
            t = PRICE_TABLES[table]
            conn.execute(
                t.delete().where(
                    t.c[col].in_(names),
                    t.c.timeframe == "1d",
                    t.c.timestamp.between(pd.Timestamp("2025-01-01T00:00Z"), pd.Timestamp("2025-01-21T00:00Z")),
                )
            )


def _assert_same(got: dict, expected: dict) -> None:
    for key, frame in expected["bars"].items():
        pd.testing.assert_frame_equal(got["bars"][key], frame, obj=str(key))
    assert got["features"] == expected["features"]
    assert got["events"] == expected["events"]


def test_bootstrap_past_the_data_says_where_it_ends_and_what_to_pass(
    tmp_path: Path, files_dir: Path, monkeypatch, capsys
) -> None:
    from regime_tasks.cli import main
    from regime_tasks.config import get_settings
    from regime_tasks.runtime import reset_runtime

    monkeypatch.setenv("REGIME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGIME_FILES_DIR", str(files_dir))
    monkeypatch.setenv("REGIME_SOURCE", "file")
    monkeypatch.setenv("REGIME_HISTORY_1D_DAYS", "30")  # nothing of the data in any window: quick
    monkeypatch.delenv("REGIME_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    reset_runtime()
    try:
        assert main(["db", "init"]) == 0
        assert main(["bootstrap", "--now", "2026-12-01T23:30:00Z"]) == 2
    finally:
        get_settings.cache_clear()
        reset_runtime()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("regime:")]
    assert len(err) == 1 and err[0].startswith("regime: error: required drivers missing after bootstrap")
    assert "1m 2025-07-26T04:55:00Z" in err[0] and f"--now {DATA_LAST_1M_CLOSE}" in err[0]


def test_a_tick_that_finds_no_new_closed_bar_says_so(embedded_cli: Path, capsys) -> None:
    """`regime tick 1m` on a clock past the data used to return {"written": 0}, rc 0, like a success."""
    import json

    from regime_tasks.cli import main

    assert main(["db", "init"]) == 0
    assert main(["bootstrap", "--now", "2025-07-26T04:50:30Z"]) == 0
    capsys.readouterr()
    assert main(["tick", "1m", "--until", "2025-07-26T04:52:00Z", "--json"]) == 0  # two new bars
    stepped = json.loads(capsys.readouterr().out)
    assert main(["tick", "1m", "--json"]) == 0  # the wall clock, long past the data: steps 04:53 to 04:55
    rest = json.loads(capsys.readouterr().out)
    assert main(["tick", "1m", "--json"]) == 0  # nothing left
    past = json.loads(capsys.readouterr().out)
    assert main(["tick", "1m"]) == 0
    table = capsys.readouterr().out
    assert stepped["new_bar"] and stepped["last_bar"] == "2025-07-26T04:52:00Z" and "message" not in stepped
    assert rest["new_bar"] and rest["last_bar"] == "2025-07-26T04:55:00Z" and "message" not in rest
    assert not past["new_bar"] and past["last_bar"] == "2025-07-26T04:55:00Z"
    assert past["message"] == "no new closed bar after 2025-07-26T04:55:00Z — the source ends at 2025-07-26T04:55:00Z"
    assert "no new closed bar after 2025-07-26T04:55:00Z — the source ends at 2025-07-26T04:55:00Z" in table
