"""regime replay: the report's numbers against a direct computation on the same data; charts are real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from regime_tasks.cli import main
from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import run_engine_frame
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # each module replays real history: part of the full run, not the fast loop

BUNDLE = REPO_ROOT / "regime_tasks" / "data"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("replay")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            [
                "replay",
                "--start",
                "2025-04-01T00:00:00Z",
                "--end",
                "2025-07-20T00:00:00Z",
                "--timeframe",
                "1h",
                "--timeframe",
                "1d",
                "--out",
                str(out),
                "--json",
            ]
        )
    assert code == 0
    return json.loads(buf.getvalue())


def test_forward_return_means_by_state_match_a_direct_computation(report) -> None:
    # Direct: BTC 1h from the bundled file, engine + mapper, 24-bar forward returns, grouped by state.
    raw = pd.read_csv(BUNDLE / "majors" / "1h" / "BTC.csv.gz")
    from regime_tasks.core.bars import normalize_bars

    bars = normalize_bars(raw, series="BTC", timeframe="1h")
    bars = bars[bars.index <= "2025-07-20T00:00:00Z"]
    filled, _ = fill_gaps(bars, "1h")
    payloads, _ = run_engine_frame(compute_ta_frame(filled.drop(columns="filled")))
    frame = pd.DataFrame(
        {"state": [p["state"] for p in payloads], "close": filled["close"].to_numpy()}, index=filled.index
    )
    frame["fwd"] = frame["close"].shift(-24) / frame["close"] - 1
    window = frame[(frame.index >= "2025-04-01") & (frame.index <= "2025-07-20")].dropna()
    direct = window[window["state"] != "warming_up"].groupby("state")["fwd"].agg(["mean", "count"])

    table = pd.read_csv(report["files"]["forward_returns_by_state"])
    ours = table[(table["driver"] == "BTC") & (table["timeframe"] == "1h") & (table["horizon_bars"] == 24)]
    ours = ours.set_index("state")
    assert set(ours.index) == set(direct.index)
    np.testing.assert_allclose(ours.loc[direct.index, "mean"], direct["mean"], rtol=1e-9)
    assert (ours.loc[direct.index, "count"] == direct["count"]).all()
    deltas = pd.read_csv(report["files"]["series"])
    btc = deltas[(deltas["driver"] == "BTC") & (deltas["timeframe"] == "1h")]
    expected = [
        map_engine_payload(p)["delta_a_raw"] for p in payloads if "2025-04-01" <= p["bar_ts"] <= "2025-07-20T00:00:00Z"
    ]
    np.testing.assert_allclose(btc["delta_a_raw"].to_numpy(), expected)


def test_time_in_state_sums_to_one_and_quintiles_cover_the_buckets(report) -> None:
    tis = pd.read_csv(report["files"]["time_in_state"])
    sums = tis.groupby(["driver", "timeframe"])["share"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0)
    q = pd.read_csv(report["files"]["forward_returns_by_A_quintile"])
    assert set(q["A_quintile"]) <= {1, 2, 3, 4, 5} and set(q["bucket"]) <= {"nano", "small", "mid", "big"}


def test_charts_exist_and_are_non_empty_images(report) -> None:
    for key in ("chart_prices", "chart_levers", "chart_heatmap"):
        with Image.open(report["files"][key]) as img:
            assert img.size[0] > 500 and img.size[1] > 200
            grey = img.convert("L")
            pixels = grey.get_flattened_data() if hasattr(grey, "get_flattened_data") else grey.getdata()  # Pillow ≥ 12
            assert len(set(pixels)) > 10  # not a blank canvas
    html = Path(report["files"]["html"]).read_text()
    assert html.count("data:image/png;base64,") == 3 and "simulated" in html.lower()
    assert report["simulated_inputs"] == []  # D16: every bundled driver input is real


@pytest.mark.slow
def test_replay_of_1d_alone_writes_a_report_with_the_1d_price_chart(tmp_path) -> None:
    # Used to crash in the price chart (it always drew 1h: "Number of rows must be a positive integer, not 0").
    out = tmp_path / "r1d"
    code = main(
        [
            *("replay", "--start", "2025-05-01T00:00:00Z", "--end", "2025-07-20T00:00:00Z"),
            *("--timeframe", "1d", "--out", str(out), "--json"),
        ]
    )

    assert code == 0
    html = (out / "report.html").read_text()
    assert "Price with state (1d)" in html
    with Image.open(out / "prices_1d.png") as img:
        assert img.size[0] > 100 and img.size[1] > 100
