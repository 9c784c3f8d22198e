"""`regime tick` sends the `regime.tick` task beat sends, so its bootstrap guard holds from the command line too.

Embedded mode (in-memory broker, an in-process worker), a SQLite file and the bundled majors as the file source.
"""

from __future__ import annotations

import json

import pytest

from regime_tasks.cli import main
from regime_tasks.runtime import get_runtime
from regime_tasks.store.positions import read_driver_features

pytestmark = pytest.mark.slow


def _stepped_series() -> dict:
    """Driver series the engine has stepped (an engine payload stored), by (driver, timeframe)."""
    rt = get_runtime()
    features = read_driver_features(rt.engine, rt.book_id, keys=("uptrend_engine_v4",))
    return {key: f["uptrend_engine_v4"]["bar_ts"] for key, f in features.items() if f.get("uptrend_engine_v4")}


def test_tick_before_a_bootstrap_is_refused_with_one_line_and_exit_2_then_runs_after_one(embedded_cli, capsys) -> None:
    assert main(["db", "init"]) == 0
    capsys.readouterr()

    assert main(["tick", "1m", "--until", "2025-07-26T04:52:00Z", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "regime: error: tick refused: the bootstrap of book 'onchain_crypto' has not completed; run `regime bootstrap`"
    ]
    assert _stepped_series() == {}  # the refused tick launched nothing: no series was collected or stepped

    assert main(["bootstrap", "--now", "2025-07-26T04:50:30Z", "--json"]) == 0
    capsys.readouterr()
    assert main(["tick", "1m", "--until", "2025-07-26T04:52:00Z", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["new_bar"] and out["last_bar"] == "2025-07-26T04:52:00Z"
    assert out["result"]["book_id"] == "onchain_crypto"  # the chain ran to its last task (levers)
    assert out["caught_up"] == []  # the bootstrap published the 1h and 1d bars of that clock
    assert _stepped_series()[("BTC", "1m")] == "2025-07-26T04:52:00Z"
