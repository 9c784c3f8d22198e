"""Parity with the host system's engine (issue 13): its own outputs on real BTCUSDT 1d 2017–22 as a fixture, and
`regime engine --gaps keep` feeding the bars as they are."""

from __future__ import annotations

import json

import pandas as pd

from regime_tasks.cli import main
from tests.conftest import real_file


def _btc_1h_slice_with_a_gap(tmp_path) -> tuple[str, int]:
    # 400 real rows around Binance's 10-hour outage after 2018-06-26 01:00
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    at = int(raw.index[raw["timestamp"] == "2018-06-26T01:00:00Z"][0])
    path = tmp_path / "btc_1h_gap.csv"
    raw.iloc[at - 349 : at + 51].to_csv(path, index=False)
    return str(path), 400


def test_gaps_keep_feeds_the_rows_as_given_and_fill_lays_them_on_the_grid(tmp_path, capsys) -> None:
    path, rows = _btc_1h_slice_with_a_gap(tmp_path)
    assert main(["engine", path, "--timeframe", "1h", "--jsonl", "--gaps", "keep"]) == 0
    kept = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert main(["engine", path, "--timeframe", "1h", "--jsonl"]) == 0
    filled = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    hours = pd.Timestamp(kept[-1]["bar_ts"]) - pd.Timestamp(kept[0]["bar_ts"])
    assert len(kept) == rows and len(filled) == hours / pd.Timedelta(hours=1) + 1 == rows + 11  # 10 + 1 absent
    stamps = [p["bar_ts"] for p in kept]
    at = stamps.index("2018-06-26T01:00:00Z")
    assert stamps[at + 1] == "2018-06-26T12:00:00Z"  # no bar invented over the outage
    # warm-up counts rows: the 333rd row has a state whichever way the hours fall
    assert kept[331]["state"] == "warming_up" and kept[332]["state"] != "warming_up"
    assert {p["bar_ts"] for p in kept} < {p["bar_ts"] for p in filled}
