"""Choices the product makes for the user are said, not silent."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from regime_tasks.core.bars import normalize_bars
from regime_tasks.importers import import_candles, import_dominance
from regime_tasks.store.db import init_db, make_engine


@pytest.fixture()
def engine(sqlite_url):
    eng = make_engine(sqlite_url, cached=False)
    init_db(eng)
    yield eng
    eng.dispose()


def candles(rows: list[tuple[str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"timestamp": t, "open": c, "high": c + 1, "low": c - 1, "close": c, "volume": 1.0} for t, c in rows]
    )


def test_conflicting_duplicate_candles_are_reported_with_the_row_kept(caplog) -> None:
    frame = candles(
        [
            ("2025-07-26T00:00:00Z", 10),
            ("2025-07-26T01:00:00Z", 11),
            ("2025-07-26T01:00:00Z", 12),
            ("2025-07-26T02:00:00Z", 13),
            ("2025-07-26T02:00:00Z", 13),  # identical: nothing to choose
        ]
    )

    with caplog.at_level(logging.WARNING):
        out = normalize_bars(frame, series="test:BTC", timeframe="1h")

    assert out.loc[pd.Timestamp("2025-07-26T01:00:00Z"), "close"] == 12  # last row wins, as before
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and "2025-07-26 01:00:00" in warning[0] and "last" in warning[0]
    assert "02:00" not in warning[0]
    assert out.attrs["conflicting_duplicates"] == ["2025-07-26T01:00:00Z"] and out.attrs["duplicates"] == 2


def test_import_candles_reports_conflicting_duplicates(engine, tmp_path) -> None:
    path = tmp_path / "btc.csv"
    rows = [("2025-07-26T00:00:00Z", 10), ("2025-07-26T01:00:00Z", 11), ("2025-07-26T01:00:00Z", 12)]
    candles([*rows, ("2025-07-26T02:00:00Z", 13)]).to_csv(path, index=False)

    result = import_candles(engine, path, series="majors:BTC", timeframe="1h")

    assert result["written"] == 3 and result["conflicting_duplicates"] == ["2025-07-26T01:00:00Z"]


def test_dominance_rows_off_the_grid_are_floored_and_reported(engine, tmp_path, caplog) -> None:
    path = tmp_path / "dominance.csv"
    path.write_text(
        "timestamp,btc_d,usdt_d\n"
        "2025-07-24T07:00:00Z,61.0,4.3\n2025-07-25T07:00:00Z,61.2,4.2\n2025-07-26T00:00:00Z,61.3,4.1\n"
    )

    with caplog.at_level(logging.WARNING):
        result = import_dominance(engine, path, timeframe="1d")

    assert result["floored"] == 2 and result["floored_example"] == "2025-07-24T07:00:00Z → 2025-07-24T00:00:00Z"
    assert any("floored" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_tick_for_a_bar_that_has_not_closed_is_refused(tmp_path, monkeypatch, capsys) -> None:
    from regime_tasks.cli import main
    from regime_tasks.runtime import reset_runtime

    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'regime.db'}")
    reset_runtime()
    try:
        assert main(["tick", "1h", "--until", "2200-01-01T00:00:00Z"]) == 2  # 9999-12-31 is refused as a time
    finally:
        reset_runtime()
    err = capsys.readouterr().err
    assert "regime: error:" in err and "2200-01-01T00:00:00Z" in err and "not closed" in err
