"""`regime engine FILE`: the command a quant runs on any candle file."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from regime_tasks.cli import main
from tests.conftest import REPO_ROOT, real_file


def test_jsonl_has_one_line_per_bar_with_iso_times_states_flags_scores(capsys) -> None:
    path = real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv")
    assert main(["engine", str(path), "--timeframe", "1d", "--jsonl"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 666  # 662 real rows + 4 empty rows filled flat
    assert lines[0]["state"] == "warming_up" and lines[331]["state"] == "warming_up"
    assert lines[332]["state"] in {"S0", "S1", "S2", "S3", "S4"}
    assert lines[-1]["bar_ts"] == "2021-10-27T00:00:00Z"
    assert {"buy_signal", "buy_flag", "trim_flag", "rebuy_flag", "emergency_exit"} <= set(lines[-1])
    assert set(lines[-1]["scores"]) == {"ts", "ts_with_boost", "sr_boost", "ox", "dx", "edx"}


def test_engine_reads_no_settings_but_its_log_level(tmp_path) -> None:
    # a pure computation on a file: settings it does not use (here an impossible batch size) do not stop it, and
    # it does not even import them (pydantic and Celery's URL tables were a fifth of its run); the log level,
    # which it uses, is still checked (tests/cli/test_errors.py)
    path = real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv")
    code = (
        "import sys; from regime_tasks.cli import main; "
        f"rc = main(['engine', {str(path)!r}, '--timeframe', '1d', '--jsonl']); "
        "print('config loaded' if 'regime_tasks.config' in sys.modules else 'config not loaded', file=sys.stderr); "
        "sys.exit(rc)"
    )
    env = {"REGIME_DB_BATCH_ROWS": "-1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 666
    assert out.stderr.splitlines()[-1] == "config not loaded"


@pytest.mark.slow
def test_parquet_input_and_engine_settings(tmp_path, capsys) -> None:
    raw = pd.read_csv(real_file("alts_2018_5m", "ETH_BTC-5m.csv"))
    path = tmp_path / "eth.parquet"
    raw.to_parquet(path)
    assert (
        main(["engine", str(path), "--timeframe", "5m", "--bootstrap", "as_run", "--sr-levels", "none", "--json"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["bars"] == len(doc["bars"]) and doc["summary"]["flags"]["trim_flag"] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("timestamp,open,high,low,close\n2024-01-01T00:00:00Z,1,2,0.5,1.5\n", "missing column"),
        ("timestamp,open,high,low,close,volume\nyesterday,1,2,0.5,1.5,3\n", "unparsable time"),
        ("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,2,0.5,-1.5,3\n", "close must be > 0"),
    ],
)
def test_bad_files_get_a_one_line_error_and_exit_2(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "regime_tasks.cli", "engine", str(path), "--timeframe", "1h"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    err = [x for x in proc.stderr.splitlines() if x.startswith("regime: error:")]
    assert len(err) == 1 and message in err[0] and "Traceback" not in proc.stderr


def test_table_output_has_a_summary(capsys) -> None:
    path = real_file("alts_2018_5m", "ADA_BTC-5m.csv")
    assert main(["engine", str(path), "--timeframe", "5m", "--tail", "5"]) == 0
    out = capsys.readouterr().out
    assert "transitions:" in out and "per state:" in out and "filled flat" in out


def test_host_inputs_switch_silences_every_buy_flag(capsys) -> None:
    """D14: `--inputs as_run` reproduces the host's misread keys — TS stays 0.5, so no buy flag can fire; states
    are the same as with correct inputs (they depend on EMAs and price only)."""
    path = real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv")
    runs = {}
    for inputs in ("correct", "as_run"):
        assert main(["engine", str(path), "--timeframe", "1d", "--jsonl", "--inputs", inputs]) == 0
        runs[inputs] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [p["state"] for p in runs["correct"]] == [p["state"] for p in runs["as_run"]]
    flags = ("buy_signal", "buy_flag", "rebuy_flag")
    assert any(p[f] for p in runs["correct"] for f in flags)
    assert not any(p[f] for p in runs["as_run"] for f in flags)
    assert {p["scores"]["ts"] for p in runs["as_run"] if p["scores"]["ts"] is not None} == {0.5}


def test_a_timeframe_other_than_the_files_own_spacing_is_refused(capsys) -> None:
    # the bundled 1d BTC file read as 1h used to run on 96 % invented bars (rc 0)
    path = REPO_ROOT / "regime_tasks" / "data" / "majors" / "1d" / "BTC.csv"

    assert main(["engine", str(path), "--timeframe", "1h"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("regime: error:")
    assert "1 days 00:00:00 apart (median), not 1h; pass --timeframe 1d" in err[0]


def test_sparse_bars_are_refused_by_their_spacing(tmp_path, capsys) -> None:
    # 20 real 5m bars spread over 1,000 bars: the median spacing is 50 bars, not the timeframe
    raw = pd.read_csv(real_file("alts_2018_5m", "ETH_BTC-5m.csv"))
    path = tmp_path / "sparse.csv"
    raw.iloc[:1000:50].to_csv(path, index=False)

    assert main(["engine", str(path), "--timeframe", "5m"]) == 2
    assert "apart (median), not 5m" in capsys.readouterr().err


@pytest.mark.slow
def test_more_than_5_percent_filled_bars_is_refused_unless_allowed(tmp_path, capsys) -> None:
    raw = pd.read_csv(real_file("alts_2018_5m", "ETH_BTC-5m.csv"))
    path = tmp_path / "holes.csv"
    kept = raw.drop(index=raw.index[5::10])  # every tenth bar missing: 10 % filled, median spacing still 5m
    kept.to_csv(path, index=False)
    missing = len(raw) - len(kept)  # all holes are inside the file (the last row is kept)

    assert main(["engine", str(path), "--timeframe", "5m", "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would be filled flat, more than 5%; pass --allow-filled" in err[0]
    assert f"{missing} of {len(raw)} bars (10.0%)" in err[0]

    assert main(["engine", str(path), "--timeframe", "5m", "--json", "--allow-filled"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["summary"]["filled_bars"] == missing
    assert f"regime: warning: {missing} of {len(raw)} bars (10.0%) filled flat" in captured.err


def test_a_few_filled_bars_run_without_the_flag(capsys) -> None:
    path = real_file("alts_2018_5m", "ADA_BTC-5m.csv")  # 40 of 5,760 bars missing: 0.7 %
    assert main(["engine", str(path), "--timeframe", "5m", "--tail", "1"]) == 0
    assert "40 filled flat, 0.7%" in capsys.readouterr().out
