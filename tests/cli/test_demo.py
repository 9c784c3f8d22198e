"""What `regime demo` prints for a trader: units, markers and the legend (rendering only; the run is elsewhere)."""

from __future__ import annotations

from regime_tasks.cli.pipeline import DEMO_BUCKETS, DEMO_EXEC_TIMEFRAMES, print_demo
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES


def row(driver: str, tf: str) -> dict:
    warming = driver == "BTC.d" and tf == "1d"
    return {
        "driver": driver,
        "timeframe": tf,
        "state": "warming_up" if warming else "S3",
        "prev_state": "S3",
        "flags": [],
        "transition": None,
        "delta_a_raw": 0.0 if warming else -0.00001,  # rounds to zero: must not print as -0.00
        "delta_e_raw": 0.0,
        "bar_ts": "2025-07-26T04:55:00Z",
        "age_bars": 0.2,
        "stale": False,
        "simulated": False,
        "warming_up": {"bars": 315, "needed": 333} if warming else None,
    }


def test_demo_tables_show_units_clamp_markers_warm_up_progress_and_the_state_legend(capsys) -> None:
    result = {
        "book_id": "onchain_crypto",
        "now": "2025-07-26T04:56:00Z",
        "ticks": [],
        "seconds": 1.0,
        "drivers": [row(d, tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES],
        "market_summary": {"A_value": 0.5, "E_value": 0.5, "position_size_frac": 0.35, "degraded": False},
        "levers": [
            {
                "bucket": b,
                "execution_timeframe": tf,
                "A_value": 1.0,
                "E_value": 0.3,
                "position_size_frac": 0.6,
                "A_clamped": True,
                "E_clamped": False,
            }
            for b in DEMO_BUCKETS
            for tf in DEMO_EXEC_TIMEFRAMES
        ],
        "database": "sqlite:////tmp/demo.db",
    }

    print_demo(result)
    out = capsys.readouterr().out

    assert "age (bars since close)" in out
    assert "warming_up (315/333 bars)" in out
    assert "-0.00" not in out
    assert "1.00* / 0.30 / 0.60" in out and "* = clamped to [0, 1]" in out
    assert "S0 bearish order (downtrend)" in out and "S4 uncertain" in out
    assert "REGIME_DATABASE_URL=sqlite:////tmp/demo.db regime status" in out
