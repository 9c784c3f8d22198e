"""``regime import-tokens`` validates like the candle path: one line naming line and field, nothing
written on failure, duplicates reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regime_tasks.cli import main
from regime_tasks.errors import DataValidationError
from regime_tasks.importers import import_tokens
from regime_tasks.runtime import get_runtime, reset_runtime
from regime_tasks.store.db import init_db, make_engine
from regime_tasks.store.positions import read_tokens

HEADER = "symbol,chain,market_cap_usd,as_of,simulated\n"
GOOD = "PURR,hyperliquid,409375609.07,2025-07-26T00:00:00Z,True\n"


@pytest.fixture()
def engine(db_url):
    eng = make_engine(db_url, cached=False)
    init_db(eng)
    yield eng
    eng.dispose()


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "tokens.csv"
    path.write_text(header + body)
    return path


@pytest.mark.parametrize(
    ("bad_line", "field", "why"),
    [
        ("NANC,hyperliquid,nan,2025-07-26,false\n", "market_cap_usd", "finite positive"),
        ("INFC,hyperliquid,inf,2025-07-26,false\n", "market_cap_usd", "finite positive"),
        ("NEG,hyperliquid,-5000000,2025-07-26,false\n", "market_cap_usd", "finite positive"),
        ("ZERO,hyperliquid,0,2025-07-26,false\n", "market_cap_usd", "finite positive"),
        ("TXT,hyperliquid,lots,2025-07-26,false\n", "market_cap_usd", "not a number"),
        (",hyperliquid,1000000,2025-07-26,false\n", "symbol", "is empty"),
        ("   ,hyperliquid,1000000,2025-07-26,false\n", "symbol", "is empty"),
        ("../../outside/secret,hyperliquid,1000000,2025-07-26,false\n", "symbol", "path separators"),
        ("NOCH,,1000000,2025-07-26,false\n", "chain", "is empty"),
        ("BADT,hyperliquid,1000000,someday,false\n", "as_of", "not a time"),
        ("SIM,hyperliquid,1000000,2025-07-26,maybe\n", "simulated", "true/false"),
    ],
)
def test_a_bad_row_names_line_and_field_and_nothing_is_written(
    engine, tmp_path, bad_line: str, field: str, why: str
) -> None:
    path = write(tmp_path, GOOD + bad_line)
    before = read_tokens(engine)  # the session's PostgreSQL schema may hold other tests' tokens

    with pytest.raises(DataValidationError) as info:
        import_tokens(engine, path)

    assert "line 3" in str(info.value) and f"field={field}" in str(info.value) and why in str(info.value)
    assert read_tokens(engine) == before


def test_simulated_is_parsed_strictly_not_by_truthiness(engine, tmp_path) -> None:
    path = write(
        tmp_path,
        "A,hyperliquid,1e6,2025-07-26,no\nB,hyperliquid,1e6,2025-07-26,False\nC,hyperliquid,1e6,,1\n"
        "D,hyperliquid,1e6,2025-07-26,\n",
    )

    import_tokens(engine, path)

    got = {t["symbol"]: t["simulated"] for t in read_tokens(engine)}
    assert got == {"A": False, "B": False, "C": True, "D": False}


def test_identical_duplicates_are_counted_and_conflicting_ones_refused(engine, tmp_path) -> None:
    same = write(tmp_path, GOOD + GOOD + "LIQD,hyperliquid,383595844.15,2025-07-26T00:00:00Z,True\n")
    result = import_tokens(engine, same)
    assert result == {"tokens": 2, "rows": 3, "duplicates": 1}

    conflict = write(tmp_path, GOOD + "PURR,hyperliquid,1.0,2025-07-26T00:00:00Z,True\n")
    with pytest.raises(DataValidationError, match="line 3: token PURR@hyperliquid repeats line 2"):
        import_tokens(engine, conflict)


@pytest.mark.parametrize("content", [b"", b"\x00\xff\xfe binary", b'symbol,market_cap_usd\n"unterminated,1\n'])
def test_unreadable_files_are_one_line_errors(engine, tmp_path, content: bytes) -> None:
    path = tmp_path / "tokens.csv"
    path.write_bytes(content)
    with pytest.raises(DataValidationError):
        import_tokens(engine, path)


def test_cli_import_tokens_bad_file_is_one_line_exit_2_and_good_file_reports(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'regime.db'}")
    reset_runtime()
    try:
        bad = write(tmp_path, GOOD + "NANC,hyperliquid,nan,2025-07-26,false\n")
        assert main(["import-tokens", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("regime: error: line 3: market_cap_usd") and err.count("\n") == 1
        assert read_tokens(get_runtime().engine) == []

        good = write(tmp_path, GOOD + GOOD)
        assert main(["import-tokens", str(good), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"tokens": 1, "rows": 2, "duplicates": 1}
    finally:
        reset_runtime()


def test_the_bundled_tokens_file_still_imports(engine) -> None:
    from regime_tasks.config import BUNDLED_DATA_DIR

    result = import_tokens(engine, BUNDLED_DATA_DIR / "tokens.csv")
    assert result["tokens"] == result["rows"] > 0 and result["duplicates"] == 0
