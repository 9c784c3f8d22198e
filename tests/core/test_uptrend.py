"""Uptrend Engine v4 transitions, checks and scores from explicit EMA / price / ATR values (spec §2–§6)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from regime_tasks.core.ta import TA_COLUMNS
from regime_tasks.core.uptrend import (
    EngineHistory,
    EngineSettings,
    combine_windows,
    dx_score,
    dx_threshold,
    ox_base,
    sigmoid,
    sr_boost,
    step,
    trend_strength,
)

N = 340  # ≥ 333 bars so a state exists
S3_EMAS = {"ema20": 110.0, "ema30": 109.0, "ema60": 105.0, "ema144": 100.0, "ema250": 95.0, "ema333": 90.0}
S0_EMAS = {"ema20": 80.0, "ema30": 81.0, "ema60": 85.0, "ema144": 90.0, "ema250": 95.0, "ema333": 100.0}
MIXED_EMAS = {"ema20": 100.0, "ema30": 99.0, "ema60": 101.0, "ema144": 98.0, "ema250": 97.0, "ema333": 96.0}
NEUTRAL = {
    "atr": 2.0,
    "atr_mean_20": 2.0,
    "atr_peak_10": 2.0,
    "atr_norm": 0.02,
    "adx": 20.0,
    "adx_slope_10": 0.0,
    "rsi": 50.0,
    "rsi_slope_10": 0.0,
    "ema20_slope": 0.0,
    "ema60_slope": 0.0,
    "ema144_slope": 0.0,
    "ema250_slope": 0.0,
    "ema333_slope": 0.0,
    "d_ema60_slope": 0.0,
    "d_ema144_slope": 0.0,
    "d_ema250_slope": 0.0,
    "d_ema333_slope": 0.0,
    "sep_fast": 0.0,
    "sep_mid": 0.0,
    "dsep_fast_5": 0.0,
    "dsep_mid_5": 0.0,
    "vo_z": 0.0,
    "ema50": 100.0,
}
STRONG = {"rsi_slope_10": 5.0, "adx_slope_10": 2.0}  # TS = 1.0


def history(rows: list[dict], *, levels: list[dict] | None = None) -> EngineHistory:
    """N bars; the last ``len(rows)`` bars take the given values (on top of NEUTRAL and a price)."""
    base = {**NEUTRAL, **MIXED_EMAS, "close": 100.0}
    records = [dict(base) for _ in range(N - len(rows))] + [{**base, **r} for r in rows]
    frame = pd.DataFrame(records, index=pd.date_range("2024-01-01", periods=N, freq="1h", tz="UTC", name="timestamp"))
    frame["open"] = frame["close"]
    frame["high"] = frame["close"] + 0.1
    frame["low"] = frame["close"] - 0.1
    frame["volume"] = 1.0
    for col in TA_COLUMNS:
        assert col in frame.columns, col
    h = EngineHistory(frame, EngineSettings())
    if levels is not None:
        # the bar-by-bar path reads levels through levels_at (a replay's block of levels is tested in test_ta.py)
        h._replay = False
        h.levels_at = lambda i, price, atr, mode: [] if mode == "none" else levels  # type: ignore[method-assign]
    return h


def run(rows: list[dict], prev: dict | None = None, settings: EngineSettings | None = None, **kw) -> list[dict]:
    """Step the last len(rows) bars, carrying the payload; returns their payloads."""
    h = history(rows, **kw)
    out, p = [], prev
    for i in range(N - len(rows), N):
        p, _ = step(h, i, p, settings or EngineSettings())
        out.append(p)
    return out


def prev_payload(state: str, **meta) -> dict:
    return {"state": state, "meta": meta, "emergency_exit": meta.pop("emergency_exit", False)}


# --- bootstrap --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("emas", "spec_state", "as_run_state"),
    [(S3_EMAS, "S3", "S4"), (S0_EMAS, "S0", "S0"), (MIXED_EMAS, "S4", "S4")],
)
def test_bootstrap_spec_versus_as_run(emas: dict, spec_state: str, as_run_state: str) -> None:
    spec = run([{**emas, "close": 100.0}])[-1]
    as_run = run([{**emas, "close": 100.0}], settings=EngineSettings(bootstrap="as_run"))[-1]
    assert spec["state"] == spec_state and as_run["state"] == as_run_state
    if spec_state == "S3":
        assert spec["meta"]["s3_start_ts"] == spec["bar_ts"]


def test_warming_up_before_333_bars() -> None:
    h = history([{**S3_EMAS}])
    payload, event = step(h, 331, None, EngineSettings())
    assert payload["state"] == "warming_up" and event is None
    assert payload["diagnostics"]["warming_up"] == {"bars": 332, "needed": 333}


@pytest.mark.parametrize(("bootstrap", "expected"), [("spec", "S3"), ("as_run", "S4")])
def test_s4_to_s3_only_under_spec(bootstrap: str, expected: str) -> None:
    out = run([{**S3_EMAS, "close": 112.0}], prev=prev_payload("S4"), settings=EngineSettings(bootstrap=bootstrap))
    assert out[-1]["state"] == expected


def test_s4_to_s0_under_both() -> None:
    for mode in ("spec", "as_run"):
        assert run([{**S0_EMAS}], prev=prev_payload("S4"), settings=EngineSettings(bootstrap=mode))[-1]["state"] == "S0"


# --- transitions ------------------------------------------------------------------------------------------
def test_s0_to_s1_runs_the_s1_buy_check_on_that_bar() -> None:
    emas = {**S0_EMAS, "ema20": 90.0, "ema30": 89.0, "ema60": 86.0}  # fast band above EMA60
    out = run([{**emas, "close": 87.0, "ema60_slope": 0.001, **STRONG}], prev=prev_payload("S0"))[-1]
    assert out["state"] == "S1" and out["buy_signal"] is True
    assert out["diagnostics"]["s1_buy"]["result"] is True


def test_s0_stays_s0_when_price_is_below_ema60() -> None:
    emas = {**S0_EMAS, "ema20": 90.0, "ema30": 89.0, "ema60": 86.0}
    assert run([{**emas, "close": 85.0}], prev=prev_payload("S0"))[-1]["state"] == "S0"


def test_s1_to_s0_with_exit_flags() -> None:
    out = run([{**S0_EMAS, "close": 79.0}], prev=prev_payload("S1"))[-1]
    assert out["state"] == "S0" and out["exit_position"] and out["emergency_exit"]
    assert out["exit_reason"] == "s1_to_s0_bearish_order"


def test_s1_to_s2_when_price_above_ema333() -> None:
    (out,) = run([{**MIXED_EMAS, "close": 97.0}], prev=prev_payload("S1"))
    assert out["state"] == "S2" and out["meta"]["episode_start_ts"] == out["bar_ts"]


def test_s2_to_s1_when_price_below_ema333() -> None:
    assert run([{**MIXED_EMAS, "close": 95.0}], prev=prev_payload("S2"))[-1]["state"] == "S1"


def test_s2_to_s3_records_start_and_scores_on_that_bar() -> None:
    out = run([{**S3_EMAS, "close": 111.0}], prev=prev_payload("S2"))[-1]
    assert out["state"] == "S3" and out["meta"]["s3_start_ts"] == out["bar_ts"]
    assert out["scores"]["ox"] is not None and out["scores"]["dx"] is not None
    assert out["scores"]["edx"] == 0.5  # fewer than 10 bars since the S3 start


def test_s3_emergency_region_keeps_state_then_reclaims() -> None:
    below = {**S3_EMAS, "close": 88.0}
    back = {**S3_EMAS, "close": 91.0}
    first, second = run([below, back], prev=prev_payload("S3", s3_start_ts="2024-01-10T00:00:00Z"))
    assert first["state"] == "S3" and first["emergency_exit"] is True and first["buy_flag"] is False
    assert second["state"] == "S3" and second["reclaimed_ema333"] is True and second["emergency_exit"] is False


def test_s3_to_s0_when_all_emas_below_333() -> None:
    emas = {"ema20": 80.0, "ema30": 81.0, "ema60": 85.0, "ema144": 88.0, "ema250": 89.0, "ema333": 90.0}
    out = run([{**emas, "close": 79.0}], prev=prev_payload("S3", s3_start_ts="2024-01-10T00:00:00Z"))[-1]
    assert out["state"] == "S0" and out["exit_position"] and out["exit_reason"] == "all_emas_below_333"
    assert out["meta"]["s3_start_ts"] is None


def test_a_state_change_emits_an_event() -> None:
    h = history([{**S0_EMAS, "close": 79.0}])
    _, event = step(h, N - 1, prev_payload("S1"), EngineSettings())
    assert event is not None and event["state"] == "S0" and event["prev_state"] == "S1"
    _, none = step(h, N - 1, prev_payload("S0"), EngineSettings())
    assert none is None


# --- buy checks: each condition failing alone ------------------------------------------------------------
S1_EMAS = {**S0_EMAS, "ema20": 90.0, "ema30": 89.0, "ema60": 86.0}
S1_OK = {**S1_EMAS, "close": 87.0, "atr": 2.0, "ema60_slope": 0.001, **STRONG}


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        ({}, None),
        ({"close": 88.5}, "near_ema60"),
        ({"ema60_slope": -0.001, "ema144_slope": -0.001}, "slope_ok"),
        ({"rsi_slope_10": -5.0, "adx_slope_10": -2.0}, "strength_ok"),
    ],
)
def test_s1_buy_conditions(override: dict, failing: str | None) -> None:
    out = run([{**S1_OK, **override}], prev=prev_payload("S1"))[-1]
    assert out["state"] == "S1"
    assert out["buy_signal"] is (failing is None)
    if failing:
        assert out["diagnostics"]["s1_buy"][failing] is False


@pytest.mark.parametrize(
    "settings", [EngineSettings(), EngineSettings(bootstrap="as_run", sr_levels="none", edx_1d_count="as_run")]
)
def test_no_s1_buy_check_on_the_bar_that_drops_from_s2(settings: EngineSettings) -> None:
    # the same bar that gives a buy_signal staying in S1 gives none when it drops from S2 (spec §3, S1)
    dropped = run([S1_OK], prev=prev_payload("S2"), settings=settings)[-1]
    stayed = run([S1_OK], prev=prev_payload("S1"), settings=settings)[-1]
    assert dropped["state"] == stayed["state"] == "S1"
    assert dropped["buy_signal"] is False and stayed["buy_signal"] is True
    assert dropped["diagnostics"]["s1_buy"] == {"result": False, "why": "not checked on the S2→S1 bar"}
    # the next S1 bar checks again
    assert run([S1_OK, S1_OK], prev=prev_payload("S2"), settings=settings)[-1]["buy_signal"] is True


S2_OK = {**MIXED_EMAS, "close": 96.5, "atr": 2.0, "ema250_slope": 0.001, **STRONG}


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        ({}, None),
        ({"close": 97.5}, "near_ema333"),
        ({"ema250_slope": 0.0, "ema333_slope": -0.001}, "slope_ok"),
        ({"rsi_slope_10": -5.0, "adx_slope_10": -2.0}, "strength_ok"),
    ],
)
def test_s2_retest_buy_conditions(override: dict, failing: str | None) -> None:
    out = run([{**S2_OK, **override}], prev=prev_payload("S2"))[-1]
    assert out["state"] == "S2"
    assert out["buy_flag"] is (failing is None)
    if failing:
        assert out["diagnostics"]["s2_retest_buy"][failing] is False


# S3 discount: price under EMA144 but above EMA333, relief high so DX clears 0.60
S3_OK = {
    **S3_EMAS,
    "close": 92.0,
    "atr": 2.0,
    "atr_mean_20": 2.0,
    "ema250_slope": 0.001,
    "vo_z": -3.0,
    "d_ema144_slope": 0.001,
    **STRONG,
    "adx": 25.0,
}


@pytest.mark.parametrize(
    ("override", "failing"),
    [
        ({}, None),
        ({"close": 101.0}, "discount_zone"),
        ({"ema250_slope": 0.0, "ema333_slope": -0.001}, "slope_ok"),
        ({"rsi_slope_10": -5.0, "adx_slope_10": -2.0}, "strength_ok"),
        ({"close": 89.0}, "emergency_exit"),
    ],
)
def test_s3_dx_buy_conditions(override: dict, failing: str | None) -> None:
    out = run([{**S3_OK, **override}], prev=prev_payload("S3", s3_start_ts="2024-01-14T10:00:00Z"))[-1]
    diag = out["diagnostics"]["s3_dx_buy"]
    assert out["state"] == "S3"
    assert out["buy_flag"] is (failing is None), diag
    if failing == "emergency_exit":
        assert diag["emergency_exit"] is True
    elif failing:
        assert diag[failing] is False


def test_dx_threshold_arithmetic() -> None:
    assert dx_threshold(120.0, 100.0, 90.0, edx=0.4) == (
        0.60,
        {"supp": 0.0, "pos": 0.0, "q": pytest.approx(math.nan, nan_ok=True)},
    )
    thr, parts = dx_threshold(120.0, 100.0, 90.0, edx=0.6)
    assert parts["supp"] == pytest.approx(0.05) and thr == pytest.approx(0.65)
    thr, parts = dx_threshold(120.0, 100.0, 90.0, edx=0.8)
    assert parts["supp"] == 0.15 and thr == pytest.approx(0.75)
    # discount zone (P ≤ EMA144) with EMA333 above EMA144: q = (P − EMA144)/(EMA333 − EMA144) = −0.5
    thr, parts = dx_threshold(85.0, 90.0, 100.0, edx=0.0)
    q = -0.5
    assert parts["q"] == q and parts["pos"] == pytest.approx(0.10 * q - 0.05 * (1 - q))
    assert thr == pytest.approx(0.60 + 0.125)


# --- trim and rebuy --------------------------------------------------------------------------------------
HOT = {
    **S3_EMAS,
    "close": 130.0,
    "atr": 2.0,
    "atr_mean_20": 2.0,
    "dsep_fast_5": 0.01,
    "dsep_mid_5": 0.01,
    "ema20_slope": 0.01,
}


def test_trim_needs_ox_and_a_level_within_one_atr() -> None:
    prev = prev_payload("S3", s3_start_ts="2024-01-14T10:00:00Z")
    with_level = run([HOT], prev=prev, levels=[{"price": 131.5, "strength": 1.0}])[-1]
    far_level = run([HOT], prev=prev, levels=[{"price": 133.0, "strength": 1.0}])[-1]
    cold = run([{**HOT, "close": 104.0}], prev=prev, levels=[{"price": 104.5, "strength": 1.0}])[-1]
    assert with_level["scores"]["ox"] >= 0.65 and with_level["trim_flag"] is True
    assert far_level["trim_flag"] is False
    assert cold["scores"]["ox"] < 0.65 and cold["trim_flag"] is False


def test_no_trim_without_levels_as_run() -> None:
    prev = prev_payload("S3", s3_start_ts="2024-01-14T10:00:00Z")
    out = run([HOT], prev=prev, settings=EngineSettings(sr_levels="none"), levels=[{"price": 130.0, "strength": 1.0}])
    assert out[-1]["trim_flag"] is False


def test_rebuy_only_after_a_trim_in_the_same_episode() -> None:
    level = [{"price": 131.0, "strength": 1.0}, {"price": 92.5, "strength": 1.0}]
    prev = prev_payload("S3", s3_start_ts="2024-01-14T10:00:00Z", episode_start_ts="2024-01-14T10:00:00Z")
    trim, buy = run([HOT, S3_OK], prev=prev, levels=level)
    assert trim["trim_flag"] and trim["meta"]["trimmed_in_episode"]
    assert buy["buy_flag"] and buy["rebuy_flag"]
    fresh = run([S3_OK], prev=prev, levels=level)[-1]
    assert fresh["buy_flag"] and not fresh["rebuy_flag"]
    # leaving the episode (S3 → S0) clears the trim memory
    out = run([HOT, {**S0_EMAS, "ema333": 100.0, "close": 70.0}], prev=prev, levels=level)[-1]
    assert out["state"] == "S0" and out["meta"]["trimmed_in_episode"] is False


# --- score formulas ----------------------------------------------------------------------------------------
def test_trend_strength_formula() -> None:
    assert trend_strength(0.0, 0.0) == pytest.approx((0.5 + 0.5) / 2)
    assert trend_strength(2.5, -1.0) == pytest.approx((0.75 + 0.25) / 2)
    assert trend_strength(99.0, 99.0) == 1.0 and trend_strength(-99.0, -99.0) == 0.0


def test_sr_boost_formula() -> None:
    levels = [{"price": 101.0, "strength": 0.8}, {"price": 104.0, "strength": 1.0}]
    assert sr_boost(100.0, levels, atr=2.0) == pytest.approx(0.8 * (1 - 1.0 / 2.0) * 0.25)
    assert sr_boost(100.0, [], atr=2.0) == 0.0


def test_ox_base_formula_by_hand() -> None:
    v = {
        "price": 103.0,
        "atr": 2.0,
        "ema20": 100.0,
        "ema60": 99.0,
        "ema144": 97.0,
        "ema250": 95.0,
        "dsep_fast_5": 0.0015,
        "dsep_mid_5": -0.001,
        "atr_mean_20": 1.6,
        "ema20_slope": 0.0008,
    }
    base, _parts = ox_base(v)
    expected = (
        0.35 * sigmoid(3 / 3)
        + 0.20 * sigmoid(4 / 4)
        + 0.10 * sigmoid(6 / 3)
        + 0.10 * sigmoid(8 / 4)
        + 0.10 * sigmoid(1)
        + 0.05 * sigmoid(-1)
        + 0.05 * sigmoid(2.0 / 1.6 - 1)
        + 0.05 * sigmoid(-1)
    )
    assert base == pytest.approx(expected)


def test_dx_formula_by_hand() -> None:
    v = {
        "price": 95.0,
        "ema144": 100.0,
        "ema333": 90.0,
        "atr": 2.0,
        "atr_mean_20": 2.0,
        "vo_z": 1.0,
        "rsi_slope_10": 0.5,
        "adx_slope_10": 0.3,
        "adx": 20.0,
        "d_ema144_slope": 0.001,
    }
    dx, parts = dx_score(v, edx=0.8)
    x = 0.5
    comp = sigmoid((0.03 - 10 / 95) / 0.02)
    location = math.exp(-3 * x) * (1 + 0.3 * comp)
    relief = 0.5 * sigmoid(0.1 / 0.05) + 0.25 * sigmoid(1) + 0.25 * sigmoid(1)
    base = 0.45 * location + 0.25 * sigmoid(-1) + 0.25 * relief + 0.05
    assert parts["x"] == x and dx == pytest.approx(base * (1 - 0.5 * 0.2))


def test_combine_windows_rules() -> None:
    assert combine_windows([0.4]) == 0.4
    assert combine_windows([0.4, 0.6]) == pytest.approx(0.3 * 0.4 + 0.7 * 0.6)
    assert combine_windows([0.6, 0.4]) == pytest.approx(0.5)
    assert combine_windows([0.2, 0.4, 0.6]) == pytest.approx(0.2 * 0.2 + 0.3 * 0.4 + 0.5 * 0.6)
    assert combine_windows([0.2, 0.4, 0.3]) == pytest.approx(0.3 * 0.2 + 0.7 * 0.4)
    assert combine_windows([0.5, 0.4, 0.6]) == pytest.approx(0.45)


def test_edx_window_slope_matches_numpy() -> None:
    h = history([{**S3_EMAS}])
    rng = np.random.default_rng(1)
    h.cols["rsi"] = rng.normal(50, 5, N)
    h._prefix["rsi"] = h._make_prefix(h.cols["rsi"])
    for s, e in ((10, 40), (100, 339), (300, 339)):
        ref = np.polyfit(np.arange(e - s + 1), h.cols["rsi"][s : e + 1], 1)[0]
        assert h.window_slope("rsi", s, e) == pytest.approx(ref, rel=1e-9)


# --- real data ------------------------------------------------------------------------------------------
def _real_bars(path, tf: str, roll_to: str | None = None) -> pd.DataFrame:
    from regime_tasks.core.bars import fill_gaps, normalize_bars, rollup

    bars = normalize_bars(pd.read_csv(path).dropna(subset=["close"]), series=str(path), timeframe=tf)
    if roll_to:
        bars, tf = rollup(bars, roll_to), roll_to
    return fill_gaps(bars, tf)[0].drop(columns="filled")


def _replay(bars: pd.DataFrame, settings: EngineSettings | None = None) -> list[dict]:
    from regime_tasks.core.ta import compute_ta_frame
    from regime_tasks.core.uptrend import run_engine_frame

    return run_engine_frame(compute_ta_frame(bars), settings)[0]


REAL_SERIES = [
    ("btc/BTCUSD-1d-2020-01-01_2021-10-27.csv", "1d", None),
    ("alts_2018_5m/ETH_BTC-5m.csv", "5m", None),
    ("alts_2018_5m/XMR_BTC-5m.csv", "5m", None),
    ("alts_2018_5m/ADA_BTC-5m.csv", "5m", "1h"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("rel", "tf", "roll"), REAL_SERIES)
def test_engine_runs_over_full_real_files(rel: str, tf: str, roll: str | None) -> None:
    from tests.conftest import real_file

    bars = _real_bars(real_file(*rel.split("/")), tf, roll)
    payloads = _replay(bars)
    states = [p["state"] for p in payloads]
    assert len(payloads) == len(bars)
    assert set(states[:332]) == {"warming_up"}
    assert set(states[332:]) <= {"S0", "S1", "S2", "S3", "S4"}
    transitions = sum(1 for a, b in itertools.pairwise(states) if a != b)
    # plausible: at least the bootstrap settles, and far fewer changes than bars (no flapping every bar)
    assert transitions <= (len(bars) - 332) // 5
    import json

    json.dumps(payloads[-1], allow_nan=False)  # JSON-serialisable, no NaN


@pytest.mark.slow
@pytest.mark.parametrize(("rel", "tf", "roll"), [REAL_SERIES[0], REAL_SERIES[3]])
def test_one_replay_equals_bar_by_bar_with_carried_payload(rel: str, tf: str, roll: str | None) -> None:
    from regime_tasks.core.ta import compute_ta_frame
    from regime_tasks.core.uptrend import run_engine_frame
    from tests.conftest import real_file

    bars = _real_bars(real_file(*rel.split("/")), tf, roll)
    replay = _replay(bars)
    prev = None
    stepped = []
    for t in range(len(bars)):
        payloads, _ = run_engine_frame(compute_ta_frame(bars.iloc[: t + 1]), prev_payload=prev, start_at=bars.index[t])
        prev = payloads[-1]
        stepped.append(prev)
    assert [p["state"] for p in stepped] == [p["state"] for p in replay]
    flags = ("buy_signal", "buy_flag", "rebuy_flag", "trim_flag", "emergency_exit", "reclaimed_ema333")
    assert [[p[f] for f in flags] for p in stepped] == [[p[f] for f in flags] for p in replay]


def test_as_run_without_levels_keeps_a_bull_start_in_s4_on_btc_daily() -> None:
    from tests.conftest import real_file

    bars = _real_bars(real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv"), "1d")
    spec = _replay(bars)
    as_run = _replay(bars, EngineSettings(bootstrap="as_run", sr_levels="none"))
    assert spec[332]["state"] == "S3"
    # D14: under the host's bootstrap a series that starts in a bull market waits in S4 for a bearish stack
    assert {p["state"] for p in as_run[332:]} == {"S4"}
    assert not any(p["trim_flag"] for p in as_run)


# --- the host's inputs and EDX count (D14 switches) --------------------------------------------------------
def test_inputs_as_run_reads_the_host_defaults_ts_half_and_no_buy() -> None:
    emas = {**S0_EMAS, "ema20": 90.0, "ema30": 89.0, "ema60": 86.0}
    row = {**emas, "close": 87.0, "ema60_slope": 0.001, **STRONG}
    correct = run([row], prev=prev_payload("S0"))[-1]
    host = run([row], prev=prev_payload("S0"), settings=EngineSettings(inputs="as_run"))[-1]
    assert correct["buy_signal"] is True and correct["scores"]["ts"] == pytest.approx(trend_strength(5.0, 2.0))
    assert host["state"] == "S1" and host["scores"]["ts"] == 0.5 and host["buy_signal"] is False
    assert host["diagnostics"]["ts"]["inputs"] == "as_run"


def test_inputs_as_run_changes_ox_and_dx_only_through_the_misread_keys() -> None:
    row = {**S3_EMAS, "close": 111.0, "dsep_fast_5": 0.01, "ema20_slope": -0.002, "d_ema144_slope": 0.001}
    correct = run([row], prev=prev_payload("S3", s3_start_ts="2024-01-15T00:00:00Z"))[-1]
    host = run(
        [row], prev=prev_payload("S3", s3_start_ts="2024-01-15T00:00:00Z"), settings=EngineSettings(inputs="as_run")
    )[-1]
    assert correct["diagnostics"]["ox"]["exp_fast"] > 0.99 and host["diagnostics"]["ox"]["exp_fast"] == 0.5
    assert correct["diagnostics"]["s3_dx_buy"]["dx_parts"]["curl"] == 1.0
    assert host["diagnostics"]["s3_dx_buy"]["dx_parts"]["curl"] == 0.0
    assert host["diagnostics"]["ox"]["rail_fast"] == correct["diagnostics"]["ox"]["rail_fast"]  # read right by both
    assert host["state"] == correct["state"] == "S3"


def test_edx_1d_count_as_run_counts_days_in_hours_but_reads_only_bars_since_the_s3_start() -> None:
    from regime_tasks.core.uptrend import _window_components

    h = history([{**S3_EMAS, "close": 111.0}])
    h.index = pd.date_range("2020-01-01", periods=N, freq="1D", tz="UTC", name="timestamp")  # a daily series
    rng = np.random.default_rng(7)  # slow inputs that differ from bar to bar, so window lengths matter
    for name in ("ema250", "ema333", "rsi", "adx"):
        h.cols[name] = h.cols[name] + rng.normal(0, 1, N).cumsum() * 0.1
        h._prefix[name] = h._make_prefix(h.cols[name])
    start = h.index[N - 21].strftime("%Y-%m-%dT%H:%M:%SZ")  # 20 daily bars before the stepped bar
    prev = prev_payload("S3", s3_start_ts=start)
    bars = step(h, N - 1, prev, EngineSettings())[0]
    hours = step(h, N - 1, prev, EngineSettings(edx_1d_count="as_run"))[0]
    assert bars["meta"]["bars_since_s3"] == hours["meta"]["bars_since_s3"] == 20
    assert bars["diagnostics"]["edx"]["n"] == 20 and bars["diagnostics"]["edx"]["windows"] == [20, 13]
    # 480 hours → windows of 480/320/160 bars, but the host fetched only the 21 bars from the S3 start bar on
    assert hours["diagnostics"]["edx"]["n"] == min(480, N) and hours["diagnostics"]["edx"]["windows"] == [21, 21, 21]
    c = _window_components(h, N - 1, 21)
    by_hand = 0.30 * c["slow"] + 0.25 * c["structure"] + 0.20 * c["participation"] + 0.10 * c["compression"]
    assert hours["scores"]["edx"] == pytest.approx(by_hand, abs=1e-12)
    assert hours["scores"]["edx"] != pytest.approx(bars["scores"]["edx"], abs=1e-6)


def test_edx_1d_count_as_run_with_fewer_than_10_bars_since_the_start_is_half() -> None:
    h = history([{**S3_EMAS, "close": 111.0}])
    h.index = pd.date_range("2020-01-01", periods=N, freq="1D", tz="UTC", name="timestamp")
    prev = prev_payload("S3", s3_start_ts=h.index[N - 9].strftime("%Y-%m-%dT%H:%M:%SZ"))  # 9 bars fetched
    out = step(h, N - 1, prev, EngineSettings(edx_1d_count="as_run"))[0]
    assert out["scores"]["edx"] == 0.5 and out["diagnostics"]["edx"]["available"] == 9


@pytest.mark.parametrize(("freq", "adx_relief"), [("1D", 0.0), ("1min", 0.0), ("1h", 0.5)])
def test_inputs_as_run_atr_mean_falls_back_to_atr_and_adx_floor_reads_adx_1h(freq: str, adx_relief: float) -> None:
    # ATR 2.0 against a mean of 1.0: read right, ATR relief σ(20) and surge σ(1); the host read its ATR twice
    row = {**S3_EMAS, "close": 111.0, "atr": 2.0, "atr_mean_20": 1.0, "adx": 30.0}
    h = history([row])
    h.index = pd.date_range("2020-01-01", periods=N, freq=freq, tz="UTC", name="timestamp")
    prev = prev_payload("S3", s3_start_ts=h.index[N - 2].strftime("%Y-%m-%dT%H:%M:%SZ"))
    host = step(h, N - 1, prev, EngineSettings(inputs="as_run"))[0]
    correct = step(h, N - 1, prev, EngineSettings())[0]
    parts = host["diagnostics"]["s3_dx_buy"]["dx_parts"]
    assert parts["atr_relief"] == pytest.approx(0.8807970779778823, abs=1e-15)  # σ(2)
    assert host["diagnostics"]["ox"]["atr_surge"] == 0.5  # σ(0)
    assert parts["adx_relief"] == adx_relief  # σ(0) over the floor on 1h (slope read as 0), else no ADX at all
    assert correct["diagnostics"]["s3_dx_buy"]["dx_parts"]["atr_relief"] == pytest.approx(sigmoid(20.0))
    assert correct["diagnostics"]["s3_dx_buy"]["dx_parts"]["adx_relief"] == 0.5


def test_host_vo_z_includes_the_bar_in_its_own_ewma() -> None:
    from tests.conftest import real_file

    bars = _real_bars(real_file("binance_spot_2017-2022", "majors", "1d", "BTCUSDT.csv"), "1d")
    from regime_tasks.core.ta import compute_ta_frame

    h = EngineHistory(compute_ta_frame(bars), EngineSettings())
    # the host TA's loop, written out: mean seeded with the first log volume, variance with 0, bar t included
    x = np.log1p(bars["volume"].to_numpy())
    alpha, mu, var, expected = 2.0 / 65.0, x[0], 0.0, [0.0]
    for value in x[1:]:
        prev_mu = mu
        mu = alpha * value + (1 - alpha) * mu
        var = (1 - alpha) * (var + alpha * (value - prev_mu) * (value - mu))
        expected.append(min(6.0, max(-4.0, (value - mu) / math.sqrt(max(var, 1e-12)))))
    got = np.array([h.host_vo_z(i) for i in range(h.n)])
    assert np.max(np.abs(got - np.array(expected))) < 1e-12
    assert np.max(np.abs(got - h.cols["vo_z"])) > 0.5  # not the TA's vo_z (bar t compared with bars before it)


def test_edx_windows_never_reach_into_the_warm_up() -> None:
    h = history([{**S3_EMAS, "close": 111.0}])
    h.cols["ema333"][:100] = np.nan  # EMA333 defined from bar 100 only
    h.defined_from = EngineHistory.first_defined(h.cols, h.n)
    prev = prev_payload("S3", s3_start_ts="2023-01-01T00:00:00Z")  # older than the whole history
    out = step(h, N - 1, prev, EngineSettings())[0]
    assert out["diagnostics"]["edx"]["n"] == N - 100


@pytest.mark.slow
def test_no_s1_buy_on_s2_to_s1_bars_of_btc_hourly_2017_2022() -> None:
    # no S1 buy check on the S2→S1 bar (docs/ENGINE.md): before, 19 of the 261 S1 buy signals of this file fell on
    # S2→S1 bars
    from regime_tasks.cli.engine import run_file
    from tests.conftest import real_file

    path = real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz")
    payloads, _ = run_file(path, "1h", EngineSettings())
    drops = [p for p in payloads if p["prev_state"] == "S2" and p["state"] == "S1"]
    assert len(drops) == 265
    assert sum(p["buy_signal"] for p in drops) == 0
    assert sum(p["buy_signal"] for p in payloads) == 261 - 19


def test_bars_since_the_s3_start_count_rows_when_bars_are_kept_with_gaps() -> None:
    h = history([{**S3_EMAS, "close": 111.0}])
    grid = pd.date_range("2024-01-01", periods=N + 5, freq="1h", tz="UTC", name="timestamp")
    h.index = grid.delete(range(N - 10, N - 5))  # five absent hours, 10 rows before the last
    start = h.index[N - 21].strftime("%Y-%m-%dT%H:%M:%SZ")
    for settings in (EngineSettings(), EngineSettings(gaps="keep")):
        out = step(h, N - 1, prev_payload("S3", s3_start_ts=start), settings)[0]
        assert out["meta"]["bars_since_s3"] == 20  # rows, as the host counted; 25 hours have passed
        assert out["diagnostics"]["edx"]["windows"] == [20, 13]
    assert h.bar_seconds == 3600.0  # the bar length is the smallest spacing, not the first one


def test_edx_1d_count_as_run_keeps_the_edx_of_the_first_500_bars_after_the_s3_start() -> None:
    h = history([{**S3_EMAS, "close": 111.0}])
    h.index = pd.date_range("2020-01-01", periods=N, freq="1D", tz="UTC", name="timestamp")
    last = h.index[N - 1]
    host = EngineSettings(edx_1d_count="as_run")

    def at(bars_since: int, settings: EngineSettings) -> dict:
        start = (last - pd.Timedelta(days=bars_since)).strftime("%Y-%m-%dT%H:%M:%SZ")
        prev = {**prev_payload("S3", s3_start_ts=start), "scores": {"edx": 0.777}}
        return step(h, N - 1, prev, settings)[0]

    # the host fetched at most 500 bars from the S3 start: from bar 500 on it read the same bars again
    assert at(500, host)["scores"]["edx"] == 0.777 and at(800, host)["diagnostics"]["edx"]["frozen"]
    assert at(499, host)["scores"]["edx"] != 0.777  # 500 bars fetched: computed
    assert at(800, EngineSettings())["scores"]["edx"] != 0.777  # counted in bars: never frozen


def test_edx_structure_running_counts_equal_a_scan_of_the_known_pivots() -> None:
    """EngineHistory.structure (running counts, a replay) equals the structure of the pivots known at the bar with
    index ≥ the window start, counted from scratch, on every bar of a real series and several window starts."""
    from regime_tasks.core.bars import fill_gaps, normalize_bars
    from regime_tasks.core.ta import compute_ta_frame, pivots_known_at
    from regime_tasks.core.uptrend.edx import _structure
    from tests.conftest import real_file

    raw = pd.read_csv(real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv")).dropna()
    bars = fill_gaps(normalize_bars(raw, series="BTC", timeframe="1d"), "1d")[0].drop(columns="filled")
    h = EngineHistory(compute_ta_frame(bars), EngineSettings())
    versions = h.pivots
    seen = set()
    for t in range(h.n):
        for back in (10, 40, 150, t + 1):
            s = max(0, t - back + 1)
            expected = _structure(pivots_known_at(versions, t, start=s))
            assert h.structure(t, s) == expected, (t, s)
            seen.add(expected)
    assert len(seen) > 10  # many different values, not a constant 0.5


@pytest.mark.parametrize(
    ("parts", "timeframe", "rows"),
    [
        (("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"), "1h", (12_000, 16_000)),
        (("hyperliquid_snapshot_2025-07-26", "perp", "1m", "BTC.csv.gz"), "1m", (0, None)),
    ],
)
def test_replay_indexes_give_the_bar_by_bar_payloads(parts: tuple[str, ...], timeframe: str, rows: tuple) -> None:
    """A replay's per-series indexes (S/R levels by block, EDX structure from running counts, EDX windows of an
    episode computed ahead) give exactly the payloads of the bar-by-bar code on the same history, diagnostics
    included, on real series with long S3 episodes."""
    from regime_tasks.core.bars import fill_gaps, normalize_bars
    from regime_tasks.core.ta import compute_ta_frame
    from tests.conftest import real_file

    raw = pd.read_csv(real_file(*parts)).dropna(subset=["close"]).iloc[rows[0] : rows[1]]
    bars = fill_gaps(normalize_bars(raw, series="X", timeframe=timeframe), timeframe)[0].drop(columns="filled")
    frame = compute_ta_frame(bars)
    fast, slow = EngineHistory(frame, EngineSettings()), EngineHistory(frame, EngineSettings())
    assert fast._replay
    slow._replay = False  # the path a live history takes
    p_fast = p_slow = None
    s3_bars = 0
    for i in range(len(frame)):
        p_fast, _ = step(fast, i, p_fast, EngineSettings())
        p_slow, _ = step(slow, i, p_slow, EngineSettings())
        assert p_fast == p_slow, i
        s3_bars += p_fast["state"] == "S3" and p_fast["scores"]["edx"] != 0.5
    assert s3_bars > 200  # EDX was computed on many bars, not only the 0.5 of short episodes
    assert fast._edx_ahead is not None and slow._edx_ahead is None


@pytest.mark.parametrize(
    ("parts", "timeframe", "rows", "settings"),
    [
        (("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv"), "1d", (0, None), EngineSettings()),
        (
            ("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv"),
            "1d",
            (0, None),
            EngineSettings(bootstrap="as_run", sr_levels="none", inputs="as_run", edx_1d_count="as_run", edx="as_run"),
        ),
        (("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"), "1h", (-8_760, None), EngineSettings()),
        (("alts_2018_5m", "ETH_BTC-5m.csv"), "5m", (0, 4_000), EngineSettings(gaps="keep")),
        (("hyperliquid_snapshot_2025-07-26", "perp", "1m", "HYPE.csv.gz"), "1m", (0, None), EngineSettings()),
    ],
)
def test_diagnostics_are_built_json_ready(parts: tuple, timeframe: str, rows: tuple, settings: EngineSettings) -> None:
    """The diagnostics are built JSON-ready (NaN mapped to None where a value is set, Python types only), so the
    step does not walk them afterwards: on real series with the spec and the host's settings, every bar's
    diagnostics equal their cleaned copy and serialise as strict JSON."""
    import json

    from regime_tasks.core.bars import fill_gaps, normalize_bars
    from regime_tasks.core.ta import compute_ta_frame
    from regime_tasks.core.uptrend import run_engine_frame
    from regime_tasks.core.uptrend.transitions import _clean
    from tests.conftest import real_file

    raw = pd.read_csv(real_file(*parts)).dropna(subset=["close"]).iloc[rows[0] : rows[1]]
    bars = normalize_bars(raw, series="X", timeframe=timeframe)
    if settings.gaps == "fill":
        bars = fill_gaps(bars, timeframe)[0].drop(columns="filled")
    payloads, _ = run_engine_frame(compute_ta_frame(bars), settings)
    checked = 0
    for p in payloads:
        diag = p["diagnostics"]
        assert diag == _clean(diag)  # == is False for a NaN left inside
        json.dumps(diag, allow_nan=False)
        checked += "s3_dx_buy" in diag or "s1_buy" in diag
    assert checked > 100


@pytest.mark.parametrize("bootstrap", ["spec", "as_run"])
def test_trend_bars_known_ahead_are_the_replays_s1_to_s3_bars(bootstrap: str) -> None:
    """The replay computes S/R levels only for the bars that will be in S1–S3, known ahead from the EMA orders
    with the step's own transition rule: on real BTC 1h, from several bars on, they are exactly the replay's."""
    from regime_tasks.core.bars import fill_gaps, normalize_bars
    from regime_tasks.core.ta import compute_ta_frame
    from regime_tasks.core.uptrend import run_engine_frame
    from regime_tasks.core.uptrend.states import TREND_STATES, trend_bars_ahead
    from tests.conftest import real_file

    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz")).iloc[-8_760:]
    bars = fill_gaps(normalize_bars(raw, series="BTC", timeframe="1h"), "1h")[0].drop(columns="filled")
    frame = compute_ta_frame(bars)
    settings = EngineSettings(bootstrap=bootstrap)  # type: ignore[arg-type]
    states = [p["state"] for p in run_engine_frame(frame, settings, diagnostics="none")[0]]
    cols = {k: frame[k].to_numpy() for k in frame.columns}
    starts = [i for i in range(400, len(states) - 1, 97) if states[i] in TREND_STATES]
    assert len(starts) > 20
    for i in starts:
        ahead = trend_bars_ahead(cols, states[i], i, min(i + 2_048, len(states)), bootstrap)
        assert ahead.tolist() == [s in TREND_STATES for s in states[i : i + 2_048]], i
