"""regime evaluate: every checked number recomputed from the same bars with plain pandas/numpy; no look-ahead.

Input: real Binance daily BTC and ETH 2017-08 → 2022-10 (tests/data/README.md), laid out as a user data folder
(majors/1d/BTC.csv, majors/1d/ETH.csv): BTC is BTC, ALT is the ETH-only composite; every other driver is absent,
so the levers are "partial".
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regime_tasks.cli import main
from regime_tasks.replay.evaluate import run_evaluation
from regime_tasks.replay.history import FileHistory
from regime_tasks.sources.files import FileSource
from tests.conftest import real_file

pytestmark = pytest.mark.slow  # each module replays real history: part of the full run, not the fast loop

START, END = "2019-01-01T00:00:00Z", "2022-10-10T00:00:00Z"
COST = 10.0


def _folder(root: Path) -> Path:
    (root / "majors" / "1d").mkdir(parents=True)
    shutil.copy(real_file("binance_spot_2017-2022", "majors", "1d", "BTCUSDT.csv"), root / "majors/1d/BTC.csv")
    shutil.copy(real_file("binance_spot_2017-2022", "majors", "1d", "ETHUSDT.csv"), root / "majors/1d/ETH.csv")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("userdata"))


@pytest.fixture(scope="module")
def report(data_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("evaluate") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(
            [
                "evaluate",
                "--start",
                START,
                "--end",
                END,
                "--timeframe",
                "1d",
                "--series",
                "BTC",
                "ALT",
                "--cost-bps",
                str(COST),
                "--files",
                str(data_dir),
                "--out",
                str(out),
                "--json",
            ]
        )
    assert code == 0
    return json.loads(buf.getvalue())


def _btc_bars() -> pd.DataFrame:
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1d", "BTCUSDT.csv"))
    raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True)
    return raw.set_index("timestamp")


def _window(report: dict, key: str = "BTC 1d") -> tuple[pd.Timestamp, pd.Timestamp]:
    w = report["meta"]["windows"][key]
    return pd.Timestamp(w["first_period"]), pd.Timestamp(w["last_period"])


def _perf(report: dict, series: str, strategy: str, period: str = "whole window") -> dict:
    rows = [
        r
        for r in report["performance"]
        if r["series"] == series and r["strategy"] == strategy and r["period"] == period
    ]
    assert len(rows) == 1
    return rows[0]


def test_buy_and_hold_cagr_and_max_drawdown_match_plain_pandas(report) -> None:
    bars = _btc_bars()
    first, last = _window(report)
    opens = bars["open"]
    # held over period τ: from τ's open to the next bar's open; the first period pays the cost of buying
    r = (opens.shift(-1) / opens - 1).loc[first:last]
    net = r.copy()
    net.iloc[0] -= COST / 1e4
    equity = (1 + net).cumprod()
    cagr = equity.iloc[-1] ** (365 / len(r)) - 1
    curve = pd.concat([pd.Series([1.0]), equity.reset_index(drop=True)])
    mdd = (curve / curve.cummax() - 1).min()
    ours = _perf(report, "BTC", "buy & hold")
    assert ours["periods"] == len(r)
    assert ours["cagr"] == pytest.approx(cagr, rel=1e-9)
    assert ours["max_drawdown"] == pytest.approx(mdd, rel=1e-9)
    assert mdd < -0.5  # 2021-11 → 2022-06: the test must be able to fail on a real drawdown


def test_strategy_turnover_and_final_equity_with_costs_match_plain_pandas(report) -> None:
    bars = _btc_bars()
    first, last = _window(report)
    eq = pd.DataFrame(report["equity"])
    eq = eq[(eq["series"] == "BTC") & (eq["timeframe"] == "1d")]
    eq["timestamp"] = pd.to_datetime(eq["timestamp"], utc=True)
    w = eq.set_index("timestamp")["regime size weight"]
    assert w.index[0] == first and w.index[-1] == last
    assert w.between(0.10, 0.60).all() and w.nunique() > 5
    r = (bars["open"].shift(-1) / bars["open"] - 1).loc[first:last]
    dw = w.diff().abs()
    dw.iloc[0] = w.iloc[0]  # the first position is bought from cash
    final = float(np.prod(1 + w.to_numpy() * r.to_numpy() - COST / 1e4 * dw.to_numpy()))
    ours = _perf(report, "BTC", "regime size")
    assert ours["final_equity"] == pytest.approx(final, rel=1e-9)
    assert ours["turnover_per_year"] == pytest.approx(dw.sum() / (len(r) / 365), rel=1e-9)
    assert eq["regime size"].iloc[-1] == pytest.approx(final, rel=1e-9)


def test_one_bootstrap_interval_matches_a_naive_resampling_with_the_same_seed(report) -> None:
    states = pd.DataFrame(report_states(report))
    h, block = 24, 24
    close = states["price"]
    fwd = (close.shift(-h) / close - 1).to_numpy()
    labelled = states["state"].isin(["S0", "S1", "S2", "S3", "S4"]).to_numpy() & ~np.isnan(fwd)
    ret, st = fwd[labelled], states["state"].to_numpy()[labelled]
    n = len(ret)
    starts = np.random.default_rng(16).integers(0, n, size=(2000, math.ceil(n / block)))
    means = []
    for row in starts:
        idx = np.concatenate([(s + np.arange(block)) % n for s in row])
        pick = st[idx] == "S3"
        means.append(ret[idx][pick].mean() if pick.any() else np.nan)
    lo, hi = np.nanpercentile(means, [2.5, 97.5])
    ours = [
        r
        for r in report["forward"]
        if r["driver"] == "BTC" and r["timeframe"] == "1d" and r["horizon_bars"] == h and r["state"] == "S3"
    ]
    assert len(ours) == 1
    assert ours[0]["count"] == int((st == "S3").sum())
    assert ours[0]["mean"] == pytest.approx(ret[st == "S3"].mean(), rel=1e-9)
    assert ours[0]["ci_low"] == pytest.approx(lo, rel=1e-9) and ours[0]["ci_high"] == pytest.approx(hi, rel=1e-9)


def report_states(report: dict) -> pd.DataFrame:
    """BTC 1d bars of the window with the state of each bar, from the replay the evaluation ran (states.csv)."""
    path = Path(report["files"]["summary"]).with_name("states.csv")
    states = pd.read_csv(path)
    return states[(states["driver"] == "BTC") & (states["timeframe"] == "1d")].reset_index(drop=True)


def test_flip_count_matches_plain_pandas(report) -> None:
    states = report_states(report)["state"]
    s = states[states.isin(["S0", "S1", "S2", "S3", "S4"])]
    flips = int((s != s.shift()).sum() - 1)
    ours = next(r for r in report["stability"] if r["driver"] == "BTC" and r["timeframe"] == "1d")
    assert ours["flips"] == flips and flips > 3


def test_one_swing_latency_matches_a_direct_reading_of_the_bars(report) -> None:
    first, last = _window(report)
    states = report_states(report)
    states["timestamp"] = pd.to_datetime(states["timestamp"], utc=True)
    states = states.set_index("timestamp").loc[first:last]
    swings = [r for r in report["swings"] if r["series"] == "BTC" and r["timeframe"] == "1d"]
    assert len(swings) >= 4
    k = next(i for i, s in enumerate(swings[:-1]) if s["kind"] == "trough" and s["status"] == "reflected")
    tp, nxt = pd.Timestamp(swings[k]["turning_point"]), pd.Timestamp(swings[k + 1]["turning_point"])
    close = states["price"]
    # a trough: the lowest close between the neighbouring peaks, and the next peak is ≥ 20 % above it
    prev = pd.Timestamp(swings[k - 1]["turning_point"]) if k > 0 else close.index[0]
    assert close.loc[prev:nxt].idxmin() == tp
    assert close.loc[nxt] >= close.loc[tp] * 1.2
    after = states.loc[tp:nxt].iloc[:-1]
    first_s3 = after.index[after["state"] == "S3"][0]
    assert swings[k]["lag_bars"] == len(states.loc[tp:first_s3]) - 1


def test_truncating_history_at_a_random_bar_changes_no_earlier_decision_or_equity(data_dir) -> None:
    history = FileHistory(FileSource(data_dir))
    start, end = pd.Timestamp(START), pd.Timestamp(END)
    full = run_evaluation(history, start=start, end=end, timeframes=("1d",), series=("BTC", "ALT"), resamples=50)
    rng = np.random.default_rng(2026)
    bars = full.equity[full.equity["series"] == "BTC"]["timestamp"]
    cut = pd.Timestamp(bars.iloc[int(rng.integers(len(bars) // 3, len(bars) - 5))])
    part = run_evaluation(history, start=start, end=cut, timeframes=("1d",), series=("BTC", "ALT"), resamples=50)
    a = full.equity.set_index(["series", "timestamp"])
    b = part.equity.set_index(["series", "timestamp"])
    common = b.index.intersection(a.index)
    assert len(common) == len(b) - 0 and len(common) > 200
    cols = [c for c in a.columns if c != "timeframe"]
    pd.testing.assert_frame_equal(a.loc[common, cols], b.loc[common, cols], rtol=0, atol=1e-12)
    # the truncated run has no period needing a bar after the cut: fills are at the next bar's open
    assert b.index.get_level_values("timestamp").max() < cut


def test_simulated_inputs_are_not_evaluable_from_the_data_provenance(data_dir, tmp_path) -> None:
    folder = _folder(tmp_path / "d")
    manifest = {"files": {"majors/1d/ETH.csv": {"origin": "test: labelled simulated", "simulated": True}}}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))
    ev = run_evaluation(
        FileHistory(FileSource(folder)),
        start=pd.Timestamp(START),
        end=pd.Timestamp(END),
        timeframes=("1d",),
        series=("BTC", "ALT"),
        resamples=20,
    )
    assert {"driver": "ALT", "timeframe": "1d"}.items() <= ev.not_evaluable[0].items()
    assert set(ev.performance["series"]) == {"BTC"} and "ALT" not in set(ev.forward["driver"])
    assert "ALT 1d" in ev.meta["windows"]["BTC 1d"]["levers_missing_drivers"]
    real = run_evaluation(
        FileHistory(FileSource(data_dir)),
        start=pd.Timestamp(START),
        end=pd.Timestamp(END),
        timeframes=("1d",),
        series=("BTC", "ALT"),
        resamples=20,
    )
    assert set(real.performance["series"]) == {"BTC", "ALT"}
    assert not (ev.performance[ev.performance["series"] == "BTC"]["final_equity"].to_numpy() == 0).any()


def test_report_files_json_and_charts(report) -> None:
    files = report["files"]
    html = Path(files["html"]).read_text()
    assert html.count("data:image/png;base64,") >= 3
    assert "S3 bullish trend" in Path(files["summary"]).read_text() or "S3" in html
    on_disk = json.loads(Path(files["json"]).read_text())
    assert on_disk["performance"] == report["performance"] and on_disk["forward"] == report["forward"]
    assert report["meta"]["windows"]["BTC 1d"]["levers_partial"] is True


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2022-01-01", "--end", "2021-01-01"], "is not before --end"),
        (["--start", "2022-01-01", "--end", "2022-01-01"], "is not before --end"),
        (["--start", "yesterday-ish", "--end", "2022-01-01"], "--start"),
        (["--start", "2021-01-01", "--end", "2022-01-01", "--series", "DOGE"], "--series"),
        (["--start", "2021-01-01", "--end", "2022-01-01", "--cost-bps", "-1"], "--cost-bps"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, message) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", *argv, "--files", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regime: error:") and message in err and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("unit", ["ns", "us"])
def test_a_gap_longer_than_a_week_is_never_filled_and_never_crossed(unit) -> None:
    from regime_tasks.errors import DataValidationError
    from regime_tasks.replay.evaluate import trim_to_segment

    bars = _btc_bars()[["open", "high", "low", "close", "volume"]]
    bars.index = bars.index.as_unit(unit)  # the stored history reads back in µs, files in ns
    gapped = pd.concat([bars.loc[:"2019-12-31"], bars.loc["2020-03-01":]])
    kept = trim_to_segment("BTC", "1d", gapped, pd.Timestamp("2021-01-01", tz="UTC"))
    assert kept.index[0] == pd.Timestamp("2020-03-01", tz="UTC") and len(kept) == len(bars.loc["2020-03-01":])
    with pytest.raises(DataValidationError, match="crosses a gap in the BTC 1d history"):
        trim_to_segment("BTC", "1d", gapped, pd.Timestamp("2019-06-01", tz="UTC"))
    assert trim_to_segment("BTC", "1d", bars, pd.Timestamp("2019-06-01", tz="UTC")).equals(bars)
    notes: list[str] = []  # another driver keeps the part after the gap, and the report says so
    alt = trim_to_segment("ALT", "1d", gapped, pd.Timestamp("2019-06-01", tz="UTC"), notes)
    assert alt.index[0] == pd.Timestamp("2020-03-01", tz="UTC")
    assert notes == ["ALT 1d: gap 2019-12-31 → 2020-03-01, only the part after it used"]
