"""``regime levers`` and ``regime status`` on an embedded SQLite database and the in-process cache."""

from __future__ import annotations

import json

import pytest

from regime_tasks.cli import main
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.runtime import get_runtime, reset_runtime
from regime_tasks.store import positions

NOW = "2025-07-26T05:00:30Z"
BARS = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}


def payload(tf: str, *, bar_ts: str | None = None) -> dict:
    return {
        "delta_a_raw": 0.2,
        "delta_e_raw": -0.05,
        "state": "S3",
        "prev_state": "S3",
        "flags": {"buy": False, "rebuy": False, "trim": True},
        "transition": None,
        "bar_ts": bar_ts or BARS[tf],
    }


@pytest.fixture()
def all_s3(tmp_path, monkeypatch):
    """Every driver of onchain_crypto in S3 (the D2 worked example) in a fresh SQLite database."""
    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'regime.db'}")
    monkeypatch.delenv("REGIME_REDIS_URL", raising=False)
    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "0")
    reset_runtime()
    engine = get_runtime().engine
    positions.ensure_driver_rows(engine, "onchain_crypto")
    ids = positions.driver_row_ids(engine, "onchain_crypto")
    stale_1m = "2025-07-26T04:55:00Z"  # USDT.d 1m closed 04:56, 4.5 bars before NOW → stale, counts 0
    positions.set_features_bulk(
        engine,
        [
            (ids[(d, tf)], "regime_engine_v4", payload(tf, bar_ts=stale_1m if (d, tf) == ("USDT.d", "1m") else None))
            for d in DRIVERS
            for tf in REGIME_TIMEFRAMES
        ],
    )
    yield engine
    reset_runtime()


def run_json(capsys, *argv: str) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_levers_json_gives_the_d2_numbers_and_the_contribution_table(all_s3, capsys) -> None:
    res = run_json(capsys, "levers", "--bucket", "small", "--exec-tf", "1h", "--now", NOW, "--json")

    # D2 example, except USDT.d 1m is stale: it no longer subtracts 0.20 × 3 × 0.15 = 0.09 from A
    assert res["A_value"] == pytest.approx(0.80 + 0.09)
    assert res["E_value"] == pytest.approx(0.425 - 0.0225)
    assert res["diagnostics"]["stale"] == ["USDT.d|1m"]
    assert len(res["diagnostics"]["contributions"]) == 15
    assert res["diagnostics"]["source"] == "database"  # in-process cache empty → database, then repopulated


def test_levers_intent_and_book_mapping(all_s3, capsys) -> None:
    base = run_json(capsys, "levers", "--bucket", "small", "--exec-tf", "1h", "--now", NOW, "--json")
    spot = run_json(
        capsys,
        *("levers", "--bucket", "small", "--exec-tf", "1h", "--now", NOW, "--json"),
        *("--book", "spot_crypto", "--intent", "hi_buy=1"),
    )

    assert spot["diagnostics"]["regime_book_id"] == "onchain_crypto"
    assert spot["diagnostics"]["intent"]["delta_a"] == pytest.approx(0.25)
    assert spot["A_value"] == pytest.approx(min(1.0, base["A_value"] + 0.25))


def test_levers_human_output_prints_a_e_size_and_the_table(all_s3, capsys) -> None:
    assert main(["levers", "--bucket", "small", "--exec-tf", "1h", "--now", NOW]) == 0
    out = capsys.readouterr().out

    assert "A = 0.8900" in out and "E = 0.4025" in out and "size = 0.5450" in out
    assert "USDT.d" in out and "stale" in out and "cap ±0.4" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--exec-tf", "2h"], "unknown execution timeframe '2h'"),
        (["--exec-tf", "1h", "--intent", "hi_bye=1"], "unknown intent metric 'hi_bye'"),
        (["--exec-tf", "1h", "--intent", "hi_buy=lots"], "--intent expects name=number"),
        (["--exec-tf", "1h", "--intent", "hi_buy=nan"], "intent_metrics.hi_buy must be a finite number"),
    ],
)
def test_levers_bad_input_is_one_line_and_exit_2(all_s3, capsys, argv: list[str], message: str) -> None:
    assert main(["levers", "--now", NOW, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regime: error: ") and message in err


def test_status_json_lists_24_drivers_judged_like_the_levers_and_the_summary(all_s3, capsys) -> None:
    rep = run_json(capsys, "status", "--now", NOW, "--json")

    rows = {(r["driver"], r["timeframe"]): r for r in rep["drivers"]}
    assert len(rows) == 24
    assert rows[("USDT.d", "1m")]["stale"] is True and rows[("USDT.d", "1m")]["age_bars"] == pytest.approx(4.5)
    assert rows[("BTC", "1h")]["stale"] is False and rows[("BTC", "1h")]["age_bars"] == pytest.approx(0.01, abs=0.01)
    assert rows[("BTC", "1h")]["flags"] == ["trim"]
    summary = rep["market_summary"]
    assert summary["stale"] == ["USDT.d|1m"] and summary["degraded"] is False
    # fixed TF weights: Σ weights 1.5 × 0.20 = 0.30, minus the stale USDT.d 1m (0.20 × −3 × 0.10 = −0.06)
    assert summary["A_value"] == pytest.approx(0.5 + 0.30 + 0.06)


def test_status_human_output(all_s3, capsys) -> None:
    assert main(["status", "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert "market summary: A=0.860" in out and "BTC.d" in out and "stale/missing: USDT.d|1m" in out


EARLY = "2025-07-26T04:30:00Z"  # the 1h bar of 04:00 and every 1m bar close after this; the 1d bar closed before


def test_status_with_an_earlier_now_counts_bars_closing_after_it_as_missing(all_s3, capsys) -> None:
    # these bars used to count as fresh with negative ages (−0.5 bars, −29 bars) and "stale/missing: none"
    rep = run_json(capsys, "status", "--now", EARLY, "--json")

    rows = {(r["driver"], r["timeframe"]): r for r in rep["drivers"]}
    later = sorted(f"{d}|{tf}" for d in DRIVERS for tf in ("1h", "1m"))
    assert sorted(rep["closes_after_now"]) == later
    assert sorted(rep["market_summary"]["missing"]) == later and rep["market_summary"]["degraded"] is True
    assert all(r["age_bars"] is None or r["age_bars"] >= 0 for r in rows.values())
    assert rows[("BTC", "1h")]["state"] == "missing" and rows[("BTC", "1h")]["stale"] is True
    assert rows[("BTC", "1d")]["state"] == "S3" and rows[("BTC", "1d")]["age_bars"] == pytest.approx(4.5 / 24, abs=0.01)
    # only the 1d entries count: Σ weights 1.5 × 0.20 × 0.50
    assert rep["market_summary"]["A_value"] == pytest.approx(0.5 + 0.15)

    assert main(["status", "--now", EARLY]) == 0
    assert "not known at --now (latest bar closes after it; counted missing): " in capsys.readouterr().out


def test_levers_with_an_earlier_now_use_only_bars_closed_by_then(all_s3, capsys) -> None:
    res = run_json(capsys, "levers", "--bucket", "small", "--exec-tf", "1h", "--now", EARLY, "--json")

    status = {f"{c['driver']}|{c['timeframe']}": c["status"] for c in res["diagnostics"]["contributions"]}
    drivers = ("BTC", "ALT", "small", "BTC.d", "USDT.d")
    assert {k for k, v in status.items() if v == "ok"} == {f"{d}|1d" for d in drivers}
    assert sorted(res["diagnostics"]["missing"]) == sorted(f"{d}|{tf}" for d in drivers for tf in ("1h", "1m"))
    assert set(res["diagnostics"]["missing"]) <= set(res["diagnostics"]["closes_after_now"])
    # 1d only: Σ weights 1.5 × 0.20 × the 1h execution multiplier of 1d
    from regime_tasks.core.constants import EXEC_TF_MULTIPLIERS

    assert res["A_value"] == pytest.approx(0.5 + 1.5 * 0.2 * EXEC_TF_MULTIPLIERS["1h"]["1d"])


def test_status_shows_the_beat_heartbeat_age(all_s3, capsys) -> None:
    # the README promises it; neither the table nor --json had it
    assert run_json(capsys, "status", "--now", NOW, "--json")["beat_heartbeat"] == {
        "at": None,
        "age_secs": None,
        "count": 0,
    }
    assert main(["status", "--now", NOW]) == 0
    assert "beat heartbeat: none recorded" in capsys.readouterr().out

    from regime_tasks.store import meta

    meta.set_meta(all_s3, "beat:heartbeat", {"at": "2025-07-26T04:59:48Z", "count": 7, "task_id": "x"})
    beat = run_json(capsys, "status", "--now", NOW, "--json")["beat_heartbeat"]
    assert beat == {"at": "2025-07-26T04:59:48Z", "age_secs": 42.0, "count": 7}
    assert main(["status", "--now", NOW]) == 0
    assert "beat heartbeat: 42 s ago (at 2025-07-26T04:59:48Z, 7 heartbeats)" in capsys.readouterr().out


def test_tables_print_no_negative_zero_and_mark_a_clamped_a(all_s3, capsys) -> None:
    assert main(["levers", "--bucket", "small", "--exec-tf", "1h", "--now", NOW, "--intent", "hi_buy=1"]) == 0
    out = capsys.readouterr().out

    assert "-0.0000" not in out and "-0.00 " not in out
    assert "A = 1.0000 (clamped from 1.1400)" in out  # 0.89 + intent 0.25
    assert "S0 bearish order" in out and "S4 uncertain" in out


def test_cli_logs_are_quiet_by_default_and_minus_v_shows_info(all_s3, capsys, monkeypatch) -> None:
    monkeypatch.delenv("REGIME_LOG_LEVEL", raising=False)
    reset_runtime()
    assert main(["status", "--now", NOW]) == 0
    assert "cache repopulated" not in capsys.readouterr().err  # was printed by every call

    reset_runtime()  # an empty in-process cache again, so the database is read and the cache repopulated
    assert main(["-v", "status", "--now", NOW]) == 0
    assert "INFO regime_tasks.api cache repopulated from the database" in capsys.readouterr().err


def test_the_readme_compute_levers_snippet_runs_as_written(all_s3, tmp_path) -> None:
    import re
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Calling it from a trading system") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL)[1]
    cwd = tmp_path / "caller"
    cwd.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=cwd, timeout=120
    )  # REGIME_DATABASE_URL (all_s3's database) is inherited

    assert proc.returncode == 0, proc.stderr
    a, e, size = (float(x) for x in proc.stdout.splitlines()[0].split())
    assert 0 <= a <= 1 and 0 <= e <= 1 and size == pytest.approx(0.10 + 0.50 * a)
    assert proc.stdout.splitlines()[1] == "15"
    assert list(cwd.iterdir()) == []  # nothing written in the caller's working directory


def test_status_says_how_far_a_warming_up_driver_is(all_s3, capsys) -> None:
    ids = positions.driver_row_ids(all_s3, "onchain_crypto")
    warm = {**payload("1d"), "state": "warming_up", "delta_a_raw": 0.0, "delta_e_raw": 0.0}
    engine_payload = {
        "state": "warming_up",
        "bar_ts": BARS["1d"],
        "diagnostics": {"warming_up": {"bars": 315, "needed": 333}},
    }
    positions.set_features_bulk(
        all_s3,
        [(ids[("BTC.d", "1d")], "regime_engine_v4", warm), (ids[("BTC.d", "1d")], "uptrend_engine_v4", engine_payload)],
    )

    rep = run_json(capsys, "status", "--now", NOW, "--json")
    rows = {(r["driver"], r["timeframe"]): r for r in rep["drivers"]}
    assert rows[("BTC.d", "1d")]["warming_up"] == {"bars": 315, "needed": 333}
    assert rows[("BTC", "1d")]["warming_up"] is None

    assert main(["status", "--now", NOW]) == 0
    assert "warming_up (315/333 bars)" in capsys.readouterr().out
