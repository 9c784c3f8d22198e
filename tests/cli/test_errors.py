"""The CLI error contract, on every command the parser knows.

Every failure is one stderr line ``regime: error: <what, which input>``, exit 2 for bad input and exit 1 for an
unavailable service, never a traceback, and a command that fails on its input has written nothing. The cases are
generated from the parser, so a new command or option is covered (or the classification test asks for it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from regime_tasks import errors
from regime_tasks.cli import build_parser, exit_code, main
from regime_tasks.runtime import reset_runtime
from tests.conftest import REPO_ROOT

# Options by the kind of input they take; every option of every command must be in one of these (or be a flag or
# have fixed choices, which argparse checks itself).
DATE_OPTIONS = {"now", "until", "start", "end"}
FILE_ARGS = {"file"}
INPUT_FOLDERS = {"files"}
OUTPUT_FOLDERS = {"out"}
COUNTS = {"minutes", "tail", "seconds", "cost_bps"}
FREE_TEXT = {"book", "intent", "exec_tf", "series", "coins", "log_level"}
VALID = {  # a valid value for each required option that is not a date or a file
    "exec_tf": "1h",
    "series": "majors:BTC",
}
VALID_DATES = {"start": "2025-05-01T00:00:00Z", "end": "2025-07-20T00:00:00Z"}
HEADERS = {  # the header of each importer's file format (candle files otherwise)
    "import-dominance": "timestamp,btc_d,usdt_d",
    "import-tokens": "symbol,chain,market_cap_usd,as_of",
}
YEAR_2400_ROWS = {
    "import-dominance": "2024-01-01T00:00:00Z,50,4\n2400-01-01T00:00:00Z,50,4\n",
    "import-tokens": "PURR,hyperliquid,10000000,2400-01-01T00:00:00Z\n",
}
CANDLE_HEADER = "timestamp,open,high,low,close,volume"
CANDLE_2400 = "2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2400-01-01T00:00:00Z,1,2,0.5,1.5,3\n"


def leaf_commands(parser: argparse.ArgumentParser) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command, e.g. ``("db", "init")`` and ``("status",)``, with its parser."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = leaf_commands(sub)
                out += [((name, *path), p) for path, p in nested] if nested else [((name,), sub)]
    return out


COMMANDS = leaf_commands(build_parser())


def inputs(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions that take a value (not --help, flags or sub-command choosers)."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._StoreTrueAction | argparse._CountAction)
        and not isinstance(a, argparse._SubParsersAction)
    ]


def flag(action: argparse.Action) -> str | None:
    return action.option_strings[-1] if action.option_strings else None


def base_argv(command: tuple[str, ...], parser: argparse.ArgumentParser, valid_file: Path) -> dict[str, list[str]]:
    """dest → the argv words that give a valid value, for every required input."""
    out: dict[str, list[str]] = {}
    for a in inputs(parser):
        if not a.required:
            continue
        if a.dest in DATE_OPTIONS:
            value = VALID_DATES.get(a.dest, "2025-07-26T04:00:00Z")
        elif a.dest in FILE_ARGS:
            value = str(valid_file)
        elif a.choices:
            value = next(iter(a.choices))
        else:
            value = VALID[a.dest]
        out[a.dest] = [flag(a), value] if flag(a) else [value]
    return out


def cases() -> list:
    """(command, label, argv, expected words in the error line, files to create) for every bad input."""
    params = []
    for command, parser in COMMANDS:
        name = command[0]
        for a in inputs(parser):
            opt = flag(a)

            def argv_with(
                value: str, dest: str = a.dest, opt: str | None = opt, command: tuple[str, ...] = command
            ) -> list[str]:
                words = {**BASE[command], dest: [opt, value] if opt else [value]}
                return [*command, *(w for ws in words.values() for w in ws)]

            if a.dest in DATE_OPTIONS:
                for bad in ("yesterday", "2025-02-30T00:00:00Z", "2400-01-01T00:00:00Z"):
                    params.append((command, f"{opt}={bad}", argv_with(bad), [opt, bad], {}))
            elif a.dest in FILE_ARGS:
                header = HEADERS.get(name, CANDLE_HEADER)
                params.append(
                    (command, "missing file", argv_with("{tmp}/absent.csv"), ["no such file", "absent.csv"], {})
                )
                params.append((command, "empty file", argv_with("{tmp}/empty.csv"), ["empty.csv"], {"empty.csv": ""}))
                params.append(
                    (
                        command,
                        "header only",
                        argv_with("{tmp}/header.csv"),
                        ["header.csv"],
                        {"header.csv": header + "\n"},
                    )
                )
                rows = YEAR_2400_ROWS.get(name, CANDLE_2400)
                params.append(
                    (
                        command,
                        "year 2400",
                        argv_with("{tmp}/y2400.csv"),
                        ["y2400.csv", "1677–2262"],
                        {"y2400.csv": f"{header}\n{rows}"},
                    )
                )
            elif a.dest in INPUT_FOLDERS:
                params.append((command, f"{opt} missing", argv_with("{tmp}/nowhere"), ["no such folder"], {}))
            elif a.dest in OUTPUT_FOLDERS:
                params.append(
                    (command, f"{opt} is a file", argv_with("{tmp}/a_file"), ["not a folder"], {"a_file": "x\n"})
                )
            elif a.dest in COUNTS:
                params.append((command, f"{opt}=-1", argv_with("-1"), [opt, "-1"], {}))
        dests = {a.dest for a in inputs(parser)}
        if {"start", "end"} <= dests:
            argv = [*command, *(w for ws in BASE[command].values() for w in ws)]
            i, j = argv.index("--start"), argv.index("--end")
            argv[i + 1], argv[j + 1] = argv[j + 1], argv[i + 1]
            params.append((command, "reversed window", argv, ["is not before --end"], {}))
    return [pytest.param(*p, id=f"{' '.join(p[0])}: {p[1]}") for p in params]


VALID_FILE = REPO_ROOT / "tests" / "data" / "real" / "alts_2018_5m" / "ETH_BTC-5m.csv"
BASE = {command: base_argv(command, parser, VALID_FILE) for command, parser in COMMANDS}


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """A fresh working directory and data folder, no services: whatever a command writes lands here."""
    for var in ("REGIME_DATABASE_URL", "REGIME_REDIS_URL", "REGIME_LOG_LEVEL", "REGIME_SOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REGIME_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("REGIME_BROKER_URL", "memory://")
    monkeypatch.setenv("REGIME_RESULT_BACKEND", "cache+memory://")
    monkeypatch.chdir(tmp_path)
    reset_runtime()
    yield tmp_path
    reset_runtime()


def snapshot(root: Path) -> set[tuple[str, int, int]]:
    return {(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def assert_one_error_line(err: str, code: int, expected_code: int, words: list[str]) -> str:
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("regime: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_every_option_of_every_command_is_classified() -> None:
    # A new option must say what kind of input it takes, so the contract test below covers it.
    known = DATE_OPTIONS | FILE_ARGS | INPUT_FOLDERS | OUTPUT_FOLDERS | COUNTS | FREE_TEXT
    for command, parser in COMMANDS:
        for a in inputs(parser):
            assert a.choices or a.dest in known, f"regime {' '.join(command)}: classify {flag(a) or a.dest}"
    assert {c[0] for c, _ in COMMANDS} >= {"db", "bootstrap", "tick", "demo", "engine", "levers", "status", "replay"}


@pytest.mark.parametrize(("command", "label", "argv", "words", "files"), cases())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    isolated, capsys, command, label, argv: list[str], words: list[str], files: dict[str, str]
) -> None:
    for name, content in files.items():
        (isolated / name).write_text(content)
    before = snapshot(isolated)

    code = main([w.replace("{tmp}", str(isolated)) for w in argv])

    assert_one_error_line(capsys.readouterr().err, code, 2, words)
    assert snapshot(isolated) == before


@pytest.mark.parametrize("command", [c for c, _ in COMMANDS], ids=lambda c: " ".join(c))
def test_invalid_settings_fail_every_command_before_it_starts(isolated, monkeypatch, capsys, command) -> None:
    monkeypatch.setenv("REGIME_LOG_LEVEL", "LOUD")
    reset_runtime()
    argv = [*command, *(w for ws in BASE[command].values() for w in ws)]
    before = snapshot(isolated)

    code = main(argv)

    assert_one_error_line(capsys.readouterr().err, code, 2, ["REGIME_LOG_LEVEL"])
    assert snapshot(isolated) == before


@pytest.mark.parametrize(
    "argv",
    [["db", "init"], ["status"], ["levers", "--exec-tf", "1h"], ["import-tokens", "{tokens}"]],
    ids=lambda a: a[0],
)
def test_a_database_that_does_not_answer_is_exit_1_in_one_line(isolated, monkeypatch, capsys, argv) -> None:
    tokens = isolated / "tokens.csv"
    tokens.write_text("symbol,chain,market_cap_usd,as_of\nPURR,hyperliquid,10000000,2025-07-26T00:00:00Z\n")
    monkeypatch.setenv("REGIME_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/test")  # nothing listens
    reset_runtime()

    code = main([w.replace("{tokens}", str(tokens)) for w in argv])

    assert_one_error_line(capsys.readouterr().err, code, 1, [])


def test_an_unexpected_crash_is_one_line_and_minus_v_adds_the_traceback(isolated, monkeypatch, capsys) -> None:
    import regime_tasks.cli.status as cli_status

    def boom(*_args, **_kwargs):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(cli_status, "status_report", boom)
    line = assert_one_error_line(*_run(capsys, ["status"]), 1, ["unexpected RuntimeError: something broke"])
    assert "second line" not in line

    code = main(["-v", "status"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1] == line


def _run(capsys, argv: list[str]) -> tuple[str, int]:
    code = main(argv)
    return capsys.readouterr().err, code


def test_the_installed_command_prints_one_line_for_a_malformed_date(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "regime_tasks.cli", "status", "--now", "yesterday"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "regime: error: --now 'yesterday' is not an ISO-8601 UTC time such as 2025-07-26T04:00:00Z "
        "(see `regime status --help`)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_replay_with_start_after_end_fails_before_work_and_leaves_no_folder(isolated, capsys) -> None:
    code = main(["replay", "--start", "2025-07-20T00:00:00Z", "--end", "2025-05-01T00:00:00Z", "--out", "r"])

    assert_one_error_line(capsys.readouterr().err, code, 2, ["--start 2025-07-20T00:00:00Z is not before --end"])
    assert not (isolated / "r").exists()


def test_compute_levers_without_settings_creates_no_file_in_the_working_directory(isolated) -> None:
    from regime_tasks import compute_levers
    from regime_tasks.errors import RegimeUnavailable

    with pytest.raises(RegimeUnavailable, match=r"no database file .*regime\.db \(run `regime bootstrap`"):
        compute_levers({}, "1h", "small")
    assert list(isolated.iterdir()) == []


def test_status_on_an_empty_store_names_the_command_to_run(isolated, capsys) -> None:
    (isolated / "var").mkdir()
    (isolated / "var" / "demo.db").write_bytes(b"")  # what `regime demo` leaves behind

    code = main(["status"])

    line = assert_one_error_line(capsys.readouterr().err, code, 1, ["regime bootstrap"])
    assert f"REGIME_DATABASE_URL=sqlite:///{isolated / 'var' / 'demo.db'} regime status" in line
    assert "no such table" not in line


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.ConfigError("x"), 2),
        (errors.DataValidationError("x"), 2),
        (errors.UnknownInputError("x"), 2),
        (FileNotFoundError(2, "x"), 2),
        (errors.RegimeUnavailable("x"), 1),
        (errors.StoreError("x"), 1),
        (errors.SourceUnavailableError("x", source="binance"), 1),
        (errors.RateLimitedError("x", source="binance"), 1),
        (ConnectionRefusedError("x"), 1),
        (sa.exc.OperationalError("SELECT 1", {}, Exception("down")), 1),
        (redis.exceptions.ConnectionError("x"), 1),
        (RuntimeError("x"), 1),
    ],
    ids=lambda x: type(x).__name__ if isinstance(x, BaseException) else str(x),
)
def test_exit_codes_2_for_bad_input_1_for_unavailable_services(exc: BaseException, code: int) -> None:
    assert exit_code(exc) == code


def test_status_on_a_database_without_tables_says_what_to_run(isolated, capsys) -> None:
    import sqlite3

    (isolated / "var").mkdir()
    sqlite3.connect(isolated / "var" / "regime.db").close()  # an empty SQLite file, as a bare connect leaves

    code = main(["status"])

    line = assert_one_error_line(capsys.readouterr().err, code, 1, ["has no regime tables", "regime db init"])
    assert "no such table" not in line
