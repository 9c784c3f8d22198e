"""`regime tick` sends the `regime.tick` task beat sends, so its bootstrap guard holds from the command line too.

Embedded mode (in-memory broker, an in-process worker), a SQLite file and the bundled majors as the file source.
"""

from __future__ import annotations

import json

import pytest

from regime_tasks.cli import main
from regime_tasks.runtime import get_runtime
from regime_tasks.store.positions import read_driver_features


def _stepped_series() -> dict:
    """Driver series the engine has stepped (an engine payload stored), by (driver, timeframe)."""
    rt = get_runtime()
    features = read_driver_features(rt.engine, rt.book_id, keys=("uptrend_engine_v4",))
    return {key: f["uptrend_engine_v4"]["bar_ts"] for key, f in features.items() if f.get("uptrend_engine_v4")}


@pytest.mark.slow
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


class _Sent:
    """What ``send_tick`` returns, as far as ``await_tick`` reads it: a result with an id."""

    def __init__(self, task_id: str) -> None:
        self.id = task_id


def test_waiting_for_a_sent_tick_refuses_before_a_bootstrap_and_waits_for_every_chain_it_launched() -> None:
    """The wait of `regime tick` on a real broker (no broker here: the results are looked up by task id)."""
    from regime_tasks.errors import NotBootstrappedError
    from regime_tasks.pipeline import await_tick

    results = {
        "refused": {"status": "not_bootstrapped", "book_id": "spot_crypto", "timeframe": "1h"},
        "tick": {
            "status": "launched",
            "id": "chain-1m",
            "caught_up": [{"timeframe": "1h", "until": "2025-07-26T03:00:00Z", "id": "chain-1h"}],
        },
        "chain-1m": {"book_id": "onchain_crypto", "written": 0},
        "chain-1h": {"book_id": "onchain_crypto", "written": 1},
    }
    asked: list[tuple[str, float]] = []

    def get(result, timeout_secs: float) -> dict:
        asked.append((result.id, timeout_secs))
        return results[result.id]

    with pytest.raises(NotBootstrappedError, match="the bootstrap of book 'spot_crypto' has not completed"):
        await_tick(_Sent("refused"), get, 5.0)
    assert asked == [("refused", 5.0)]  # nothing else is waited for

    asked.clear()
    out = await_tick(_Sent("tick"), get, 5.0)
    assert asked == [("tick", 5.0), ("chain-1m", 5.0), ("chain-1h", 5.0)]
    assert out == {
        "id": "chain-1m",
        "result": {"book_id": "onchain_crypto", "written": 0},
        "caught_up": [
            {"timeframe": "1h", "until": "2025-07-26T03:00:00Z", "id": "chain-1h", "result": results["chain-1h"]}
        ],
    }
