"""Regime mapper tables (plan §3, D7), hand-computed."""

from __future__ import annotations

import pytest

from regime_tasks.core.mapper import engine_flags, map_engine_payload, map_state


@pytest.mark.parametrize(
    ("state", "da", "de"),
    [
        ("S0", -0.30, 0.30),
        ("S1", 0.25, -0.15),
        ("S2", 0.10, 0.05),
        ("S3", 0.20, -0.05),
        ("S4", 0.0, 0.0),
        ("warming_up", 0.0, 0.0),
    ],
)
def test_state_baselines_and_zero_for_s4_and_warming_up(state: str, da: float, de: float) -> None:
    out = map_state(state, state, buy=False, rebuy=False, trim=False)
    assert (out["delta_a_raw"], out["delta_e_raw"]) == pytest.approx((da, de))
    assert out["transition"] is None


@pytest.mark.parametrize(
    ("state", "flags", "da", "de"),
    [
        ("S1", {"buy": True}, 0.25 + 0.20, -0.15 - 0.10),
        ("S2", {"buy": True}, 0.10 + 0.10, 0.05 - 0.05),
        ("S3", {"buy": True}, 0.20 + 0.05, -0.05 - 0.05),
        ("S2", {"trim": True}, 0.10 - 0.20, 0.05 + 0.25),
        ("S3", {"trim": True}, 0.20 - 0.25, -0.05 + 0.30),
        ("S2", {"buy": True, "rebuy": True}, 0.10 + 0.15, 0.05 - 0.10),  # rebuy replaces buy
        ("S3", {"buy": True, "rebuy": True}, 0.20 + 0.20, -0.05 - 0.10),
        ("S0", {"buy": True, "trim": True}, -0.30, 0.30),  # no flag deltas exist for S0
    ],
)
def test_flag_deltas(state: str, flags: dict, da: float, de: float) -> None:
    kw = {"buy": False, "rebuy": False, "trim": False, **flags}
    out = map_state(state, state, **kw)
    assert (out["delta_a_raw"], out["delta_e_raw"]) == pytest.approx((da, de))


@pytest.mark.parametrize(("prev", "da", "de"), [("S1", -0.70, 0.70), ("S2", -0.65, 0.65), ("S3", -0.80, 0.80)])
def test_transition_pulses_stack_on_s0_baseline(prev: str, da: float, de: float) -> None:
    out = map_state("S0", prev, buy=False, rebuy=False, trim=False)
    assert (out["delta_a_raw"], out["delta_e_raw"]) == pytest.approx((da, de))
    assert out["transition"] == f"{prev}→S0"


def test_no_pulse_from_s4_or_warming_up() -> None:
    for prev in ("S4", "warming_up", None):
        assert map_state("S0", prev, buy=False, rebuy=False, trim=False)["transition"] is None


def test_engine_flags_read_the_right_keys_per_state() -> None:
    assert engine_flags({"state": "S1", "buy_signal": True, "buy_flag": False})["buy"] is True
    assert engine_flags({"state": "S1", "buy_signal": False, "buy_flag": True})["buy"] is False
    assert engine_flags({"state": "S3", "buy_flag": True, "rebuy_flag": True, "trim_flag": True}) == {
        "buy": True,
        "rebuy": True,
        "trim": True,
    }
    assert engine_flags({"state": "S0", "trim_flag": True}) == {"buy": False, "rebuy": False, "trim": False}


def test_map_engine_payload_shape() -> None:
    out = map_engine_payload({"state": "S0", "prev_state": "S3", "bar_ts": "2025-07-26T04:00:00Z"})
    assert out == {
        "delta_a_raw": pytest.approx(-0.80),
        "delta_e_raw": pytest.approx(0.80),
        "state": "S0",
        "prev_state": "S3",
        "flags": {"buy": False, "rebuy": False, "trim": False},
        "transition": "S3→S0",
        "bar_ts": "2025-07-26T04:00:00Z",
    }


def test_transition_pulse_lasts_one_bar_across_a_bar_sequence() -> None:
    states = ["S3", "S3", "S0", "S0", "S0"]
    prev: str | None = None
    out = []
    for i, state in enumerate(states):
        out.append(map_engine_payload({"state": state, "prev_state": prev, "bar_ts": f"2025-07-26T0{i}:00:00Z"}))
        prev = state

    assert [o["transition"] for o in out] == [None, None, "S3→S0", None, None]
    assert [o["delta_a_raw"] for o in out] == pytest.approx([0.20, 0.20, -0.80, -0.30, -0.30])
    assert [o["delta_e_raw"] for o in out] == pytest.approx([-0.05, -0.05, 0.80, 0.30, 0.30])


def test_rebuy_and_trim_on_the_same_bar_both_apply_and_rebuy_still_replaces_buy() -> None:
    out = map_engine_payload(
        {"state": "S3", "prev_state": "S3", "buy_flag": True, "rebuy_flag": True, "trim_flag": True, "bar_ts": "x"}
    )
    assert out["flags"] == {"buy": True, "rebuy": True, "trim": True}
    assert (out["delta_a_raw"], out["delta_e_raw"]) == pytest.approx((0.20 + 0.20 - 0.25, -0.05 - 0.10 + 0.30))
