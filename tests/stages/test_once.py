"""A tick's book-independent steps (collect, driver series) run once per bar whichever book ticks first
(stages.once): the second book's tick at that bar, or a re-run for an older bar, skips them; a newer bar, and a
step that failed, run again.

SQLite file; the file source is the bundled real majors (``files_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.runtime import Runtime
from regime_tasks.stages import once
from regime_tasks.store import bars as store_bars
from tests.conftest import sqlite_runtime

UNTIL = pd.Timestamp("2025-07-25T12:00:00Z")
HOUR = pd.Timedelta(hours=1)


@pytest.fixture()
def rt(tmp_path: Path, files_dir: Path) -> Runtime:
    return sqlite_runtime(tmp_path / "once.db", files_dir=files_dir, source="file", history_1h_days=3)


@pytest.fixture()
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, pd.Timestamp]]:
    """(step, until) of every collect and series build that actually ran."""
    calls: list[tuple[str, pd.Timestamp]] = []
    real_collect, real_build = once.collect, once.build_driver_series

    def collect(rt: Runtime, timeframe: str, until: pd.Timestamp, **kw: Any) -> dict[str, Any]:
        calls.append(("collect", until))
        return real_collect(rt, timeframe, until, **kw)

    def build(rt: Runtime, timeframe: str, until: pd.Timestamp, **kw: Any) -> dict[str, Any]:
        calls.append(("series", until))
        return real_build(rt, timeframe, until, **kw)

    monkeypatch.setattr(once, "collect", collect)
    monkeypatch.setattr(once, "build_driver_series", build)
    return calls


def _tick(rt: Runtime, until: pd.Timestamp) -> tuple[dict[str, Any], dict[str, Any]]:
    return stages.collect_once(rt, "1h", until), stages.build_driver_series_once(rt, "1h", until)


def test_the_second_book_at_a_bar_skips_collect_and_series(rt: Runtime, runs: list) -> None:
    first = _tick(rt, UNTIL)
    assert runs == [("collect", UNTIL), ("series", UNTIL)]
    assert "skipped" not in first[0] and first[1]["written"]["BTC"] > 60
    btc = store_bars.read_bars(rt.engine, "regime", {"driver": "BTC"}, "1h")
    assert btc.index[-1] == UNTIL

    second = _tick(rt, UNTIL)  # another book's tick at the same bar
    assert [s.get("skipped") for s in second] == ["collected by an earlier tick", "built by an earlier tick"]
    assert runs == [("collect", UNTIL), ("series", UNTIL)]
    pd.testing.assert_frame_equal(store_bars.read_bars(rt.engine, "regime", {"driver": "BTC"}, "1h"), btc)

    newer = _tick(rt, UNTIL + HOUR)  # the next bar runs both again, and moves the marks
    assert runs[2:] == [("collect", UNTIL + HOUR), ("series", UNTIL + HOUR)]
    assert newer[0]["majors"]["BTC"] == 1 and newer[1]["written"]["BTC"] == 1
    assert once.done_for(rt, "collect", "1h", UNTIL + HOUR) and not once.done_for(rt, "collect", "1h", UNTIL + 2 * HOUR)
    assert not once.done_for(rt, "collect", "1d", UNTIL)  # per timeframe

    # a catch-up for an older bar runs (a later bar's collect had those bars only if the source did then), and
    # leaves the newer mark
    older = _tick(rt, UNTIL)
    assert runs[4:] == [("collect", UNTIL), ("series", UNTIL)] and not any("skipped" in s for s in older)
    assert once.done_for(rt, "collect", "1h", UNTIL + HOUR)


def test_a_failed_collect_is_not_marked_and_runs_again(
    rt: Runtime, runs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("venue down")

    monkeypatch.setattr(rt.market, "majors", down)
    with pytest.raises(ConnectionError):
        stages.collect_once(rt, "1h", UNTIL)
    assert not once.done_for(rt, "collect", "1h", UNTIL)
    monkeypatch.undo()
    assert "skipped" not in stages.collect_once(rt, "1h", UNTIL)
    assert once.done_for(rt, "collect", "1h", UNTIL)


@pytest.mark.service
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # emptied afterwards, as other tests expect
def test_on_postgresql_two_books_ticking_together_collect_once(
    db_url: str, files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second tick waits for the first's lock, then finds the bar collected: the venues are called once."""
    import threading

    from regime_tasks.config import Settings
    from regime_tasks.store.db import init_db, make_engine

    settings = Settings(database_url=db_url, files_dir=files_dir, source="file", history_1h_days=3)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    rt = Runtime(settings=settings, engine=engine)
    until = UNTIL
    step = f"collect-{threading.get_ident()}"  # the session schema is shared: marks of our own
    ran: list[pd.Timestamp] = []
    inside = threading.Event()

    def slow(rt: Runtime, timeframe: str, until: pd.Timestamp, **kw: Any) -> dict[str, Any]:
        ran.append(until)
        inside.set()
        threading.Event().wait(0.3)  # the second tick arrives while this one collects
        return {"timeframe": timeframe}

    monkeypatch.setattr(once, "collect", slow)
    monkeypatch.setattr(once, "_key", lambda name, timeframe: f"tick:{step}:{name}:{timeframe}")
    results: list[dict[str, Any]] = []
    first = threading.Thread(target=lambda: results.append(stages.collect_once(rt, "1h", until)))
    first.start()
    assert inside.wait(5)
    second = stages.collect_once(rt, "1h", until)  # another book's tick at the same bar, while the first runs
    first.join()
    assert ran == [until]
    assert second["skipped"] == "collected by an earlier tick" and "skipped" not in results[0]
    engine.dispose()
