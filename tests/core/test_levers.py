"""Levers arithmetic, hand-computed (D2, D8, D11, D12)."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES, STATE_DELTAS
from regime_tasks.core.levers import (
    PreparedEntries,
    compute_levers_from_entries,
    intent_deltas,
    is_stale,
    market_summary,
    regime_book_id,
)
from regime_tasks.core.mapper import map_state
from regime_tasks.errors import UnknownInputError

NOW = dt.datetime(2025, 7, 26, 5, 0, 30, tzinfo=dt.UTC)
FRESH_BAR = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}


def entry(state: str, tf: str, *, prev: str | None = None, bar_ts: str | None = None, **flags: bool) -> dict:
    mapped = map_state(state, prev or state, buy=flags.get("buy", False), rebuy=False, trim=flags.get("trim", False))
    return {
        "state": state,
        "delta_a_raw": mapped["delta_a_raw"],
        "delta_e_raw": mapped["delta_e_raw"],
        "bar_ts": bar_ts or FRESH_BAR[tf],
    }


def all_in(state: str) -> dict:
    return {(d, tf): entry(state, tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES}


def test_d2_worked_example_all_s3_small_bucket_1h() -> None:
    res = compute_levers_from_entries(all_in("S3"), {}, "1h", "small", now=NOW)

    # Σ weights = 1 + 1.5 + 3 − 1 − 3 = 1.5; each row of multipliers sums to 1
    assert res["A_value"] == pytest.approx(0.80)
    assert res["E_value"] == pytest.approx(0.425)
    assert res["position_size_frac"] == pytest.approx(0.50)
    assert res["diagnostics"]["degraded"] is False
    assert len(res["diagnostics"]["contributions"]) == 15


def test_all_drivers_s0() -> None:
    res = compute_levers_from_entries(all_in("S0"), {}, "4h", "mid", now=NOW)

    assert res["A_value"] == pytest.approx(0.5 - 0.30 * 1.5)  # 0.05
    assert res["E_value"] == pytest.approx(0.5 + 0.30 * 1.5)  # 0.95
    assert res["position_size_frac"] == pytest.approx(0.10 + 0.50 * 0.05)


def test_dominance_is_inverted_btc_d_s3_alone_lowers_a() -> None:
    entries = {("BTC.d", tf): entry("S3", tf) for tf in REGIME_TIMEFRAMES}

    res = compute_levers_from_entries(entries, {}, "1h", "small", now=NOW)

    assert res["A_value"] == pytest.approx(0.5 - 0.20 * 1.0)
    assert res["E_value"] == pytest.approx(0.5 + 0.05 * 1.0)
    assert res["diagnostics"]["degraded"] is True  # BTC and ALT missing


def test_transition_pulse_on_one_bar_then_gone() -> None:
    pulse = map_state("S0", "S3", buy=False, rebuy=False, trim=False)
    after = map_state("S0", "S0", buy=False, rebuy=False, trim=False)
    bar1 = {
        ("BTC", "1h"): {
            "state": "S0",
            "delta_a_raw": pulse["delta_a_raw"],
            "delta_e_raw": pulse["delta_e_raw"],
            "bar_ts": FRESH_BAR["1h"],
        }
    }
    bar2 = {
        ("BTC", "1h"): {
            "state": "S0",
            "delta_a_raw": after["delta_a_raw"],
            "delta_e_raw": after["delta_e_raw"],
            "bar_ts": FRESH_BAR["1h"],
        }
    }

    a1 = compute_levers_from_entries(bar1, {}, "1h", None, now=NOW)["A_value"]
    a2 = compute_levers_from_entries(bar2, {}, "1h", None, now=NOW)["A_value"]

    assert pulse["delta_a_raw"] == pytest.approx(-0.80) and pulse["transition"] == "S3→S0"
    assert a1 == pytest.approx(0.5 - 0.80 * 1.0 * 0.55)
    assert a2 == pytest.approx(0.5 - 0.30 * 1.0 * 0.55)


def test_stale_1m_driver_is_ignored_while_1d_counts() -> None:
    entries = {
        ("BTC", "1d"): entry("S3", "1d"),
        ("BTC", "1m"): entry("S3", "1m", bar_ts="2025-07-26T04:55:00Z"),  # closed 04:56, now 05:00:30 → 4.5 bars
    }

    res = compute_levers_from_entries(entries, {}, "1m", None, now=NOW)

    assert res["A_value"] == pytest.approx(0.5 + 0.20 * 1.0 * 0.05)
    assert "BTC|1m" in res["diagnostics"]["stale"]
    assert "BTC|1d" not in res["diagnostics"]["stale"]


@pytest.mark.parametrize(
    ("tf", "bar_ts", "now", "stale"),
    [
        # the 04:56 1m bar closed at 04:57: exactly 3 bars later it still counts, one second more and it is stale
        ("1m", "2025-07-26T04:56:00Z", "2025-07-26T05:00:00Z", False),
        ("1m", "2025-07-26T04:56:00Z", "2025-07-26T05:00:01Z", True),
        ("1m", "2025-07-26T04:55:00Z", "2025-07-26T05:00:00Z", True),
        # a daily bar opened 07-22 closed 07-23 00:00: still counts at 07-26 00:00, stale a second later
        ("1d", "2025-07-22T00:00:00Z", "2025-07-26T00:00:00Z", False),
        ("1d", "2025-07-22T00:00:00Z", "2025-07-26T00:00:01Z", True),
        ("1h", "2025-07-26T01:00:00Z", "2025-07-26T05:00:00Z", False),
        ("1h", "2025-07-26T01:00:00Z", "2025-07-26T05:00:01Z", True),
    ],
)
def test_staleness_boundary_is_three_bars_after_close(tf: str, bar_ts: str, now: str, stale: bool) -> None:
    clock = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    assert is_stale({"bar_ts": bar_ts}, tf, clock) is stale


def test_entry_without_bar_time_is_stale() -> None:
    assert is_stale({"delta_a_raw": 0.2}, "1h", NOW) is True


def test_intent_is_capped_at_plus_minus_04() -> None:
    buy = intent_deltas({"intent_metrics": {"hi_buy": 1, "med_buy": 1}})
    sell = intent_deltas({"intent_metrics": {"sell": 1, "mock": 1}})

    assert buy["delta_a_raw"] == pytest.approx(0.40) and buy["delta_a"] == pytest.approx(0.40)
    assert sell["delta_a_raw"] == pytest.approx(-0.55) and sell["delta_a"] == pytest.approx(-0.40)
    assert sell["delta_e_raw"] == pytest.approx(0.85) and sell["delta_e"] == pytest.approx(0.40)


def test_clamping_at_zero_and_one() -> None:
    high = compute_levers_from_entries(
        all_in("S3"), {"intent_metrics": {"hi_buy": 1, "med_buy": 1}}, "1d", "big", now=NOW
    )
    low = compute_levers_from_entries(all_in("S0"), {"intent_metrics": {"sell": 1, "mock": 1}}, "1d", "big", now=NOW)

    assert high["A_value"] == 1.0 and high["diagnostics"]["clamped"]["A"] is True
    assert high["diagnostics"]["clamped"]["A_before"] == pytest.approx(0.5 + 0.30 + 0.40)
    assert low["A_value"] == 0.0 and low["E_value"] == 1.0
    assert low["position_size_frac"] == pytest.approx(0.10)


def test_each_bucket_reads_only_its_own_bucket_driver() -> None:
    entries = {("nano", tf): entry("S3", tf) for tf in REGIME_TIMEFRAMES}

    nano = compute_levers_from_entries(entries, {}, "1h", "nano", now=NOW)
    small = compute_levers_from_entries(entries, {}, "1h", "small", now=NOW)

    assert nano["diagnostics"]["delta_a_regime"] == pytest.approx(0.20 * 3.0)
    assert nano["A_value"] == 1.0  # 1.1 before the clamp
    assert small["A_value"] == pytest.approx(0.5)
    assert {c["driver"] for c in small["diagnostics"]["contributions"]} == {"BTC", "ALT", "small", "BTC.d", "USDT.d"}


@pytest.mark.parametrize(("exec_tf", "bucket"), [("2h", "small"), ("1h", "micro"), ("1H", None)])
def test_unknown_execution_timeframe_or_bucket_is_a_clear_error(exec_tf: str, bucket: str | None) -> None:
    with pytest.raises(UnknownInputError, match="unknown"):
        compute_levers_from_entries({}, {}, exec_tf, bucket, now=NOW)


def test_crypto_books_read_onchain_crypto_drivers() -> None:
    assert regime_book_id("spot_crypto") == "onchain_crypto"
    assert regime_book_id("perp_crypto") == "onchain_crypto"
    assert regime_book_id("stocks") == "stocks"


def test_market_summary_uses_fixed_timeframe_weights() -> None:
    res = market_summary(all_in("S3"), now=NOW)

    # BTC 1 + ALT 1.5 + buckets 4 × 3/4 + BTC.d −1 + USDT.d −3 = 1.5; TF weights sum to 1
    assert res["A_value"] == pytest.approx(0.5 + 0.20 * 1.5)
    assert STATE_DELTAS["S3"]["delta_a"] == 0.20


# --- no NaN leaves the levers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", float("nan"), float("inf"), "-inf", 10**400])
def test_non_finite_intent_metric_is_an_error_naming_the_metric(value: object) -> None:
    with pytest.raises(UnknownInputError, match=r"intent_metrics\.hi_buy"):
        compute_levers_from_entries(all_in("S3"), {"intent_metrics": {"hi_buy": value}}, "1h", "small", now=NOW)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.2", 1e300, None])
def test_corrupt_driver_entry_counts_as_missing_and_levers_stay_finite(bad: object) -> None:
    entries = all_in("S3")
    if bad is None:
        entries[("BTC", "1h")] = "not an object"  # type: ignore[assignment]
    else:
        entries[("BTC", "1h")] = {**entries[("BTC", "1h")], "delta_a_raw": bad}

    res = compute_levers_from_entries(entries, {}, "1h", "small", now=NOW)

    numbers = [res["A_value"], res["E_value"], res["position_size_frac"]]
    numbers += [c["contribution_a"] for c in res["diagnostics"]["contributions"]]
    assert all(math.isfinite(x) for x in numbers)
    assert "BTC|1h" in res["diagnostics"]["missing"] and "BTC|1h" in res["diagnostics"]["corrupt"]
    assert res["diagnostics"]["degraded"] is True
    # the D2 example minus BTC 1h's share: 0.2 × 1.0 × 0.55
    assert res["A_value"] == pytest.approx(0.80 - 0.2 * 0.55)


def test_unparsable_bar_time_counts_as_missing_not_an_exception() -> None:
    entries = all_in("S3")
    entries[("ALT", "1d")] = {**entries[("ALT", "1d")], "bar_ts": "yesterday"}

    res = compute_levers_from_entries(entries, {}, "1h", "small", now=NOW)

    assert "ALT|1d" in res["diagnostics"]["corrupt"] and res["diagnostics"]["degraded"] is True
    assert math.isfinite(res["A_value"])


@pytest.mark.parametrize(
    ("tf", "bar_ts", "now", "stale"),
    [
        ("1m", "2025-07-26T04:56:00Z", "2025-07-26T05:00:00Z", False),
        ("1m", "2025-07-26T04:56:00Z", "2025-07-26T05:00:01Z", True),
        ("1d", "2025-07-22T00:00:00Z", "2025-07-26T00:00:00Z", False),
        ("1d", "2025-07-22T00:00:00Z", "2025-07-26T00:00:00.000001Z", True),
    ],
)
def test_a_prepared_snapshot_judges_staleness_at_the_same_boundary(tf: str, bar_ts: str, now: str, stale: bool) -> None:
    clock = dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
    prepared = PreparedEntries({("BTC", tf): entry("S3", tf, bar_ts=bar_ts)})
    for _ in range(2):  # the second call is answered from the prepared sums
        res = compute_levers_from_entries(prepared, {}, "1h", None, now=clock)
        assert (f"BTC|{tf}" in res["diagnostics"]["stale"]) is stale


def test_one_prepared_snapshot_reused_across_times_and_positions_equals_a_fresh_computation() -> None:
    """The snapshot of compute_levers() and the levers task are prepared once and reused: every call must give
    what a fresh computation from the plain entries gives, whatever the order of ``now`` (forwards and back)."""
    import random

    rng = random.Random(7)
    states = list(STATE_DELTAS)
    entries: dict = {}
    for d in DRIVERS:
        for tf in REGIME_TIMEFRAMES:
            if rng.random() < 0.1:
                continue  # missing
            e = entry(
                rng.choice(states),
                tf,
                bar_ts=(NOW - dt.timedelta(minutes=rng.randrange(1, 6000))).strftime("%Y-%m-%dT%H:%M:00Z"),
            )
            if rng.random() < 0.05:
                e["delta_a_raw"] = float("nan")  # corrupt
            entries[(d, tf)] = e
    prepared = PreparedEntries(entries)
    nows = [NOW + dt.timedelta(minutes=rng.randrange(-3000, 3000), seconds=rng.randrange(60)) for _ in range(200)]
    for now in nows:
        tf = rng.choice(["1m", "15m", "1h", "4h"])
        bucket = rng.choice(["nano", "small", "mid", "big", None])
        features = {"intent_metrics": {"hi_buy": rng.random(), "sell": rng.random()}}
        got = compute_levers_from_entries(prepared, features, tf, bucket, now=now)
        assert got == compute_levers_from_entries(dict(entries), features, tf, bucket, now=now)
        # the levers task's read-only form (copy=False) gives the same result, from shared lists
        assert compute_levers_from_entries(prepared, features, tf, bucket, now=now, copy=False) == got
        got["diagnostics"]["contributions"][0]["status"] = "changed by the caller"  # must not leak into the next
        got["diagnostics"]["stale"].append("x")
        assert market_summary(prepared, now=now) == market_summary(dict(entries), now=now)
