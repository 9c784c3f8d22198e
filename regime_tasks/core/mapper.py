"""Regime Mapper: an engine payload → ΔA/ΔE of one driver × timeframe (plan §3, DECISIONS D7).

A pure function of (state, previous bar's state, flags), so replay and live agree bar for bar:

- state baseline (plan §3.1); S4 and ``warming_up`` give 0, 0;
- flags (plan §3.2): ``buy`` = S1 ``buy_signal`` / S2–S3 ``buy_flag``; ``rebuy`` = ``rebuy_flag`` and it
  *replaces* the buy delta on the same bar; ``trim`` = ``trim_flag`` (S2/S3);
- transitions (plan §3.3): S1/S2/S3 → S0 on the bar whose state is S0 while the previous bar's was S1/S2/S3;
  the pulse stacks on the S0 baseline for exactly that bar.
"""

from __future__ import annotations

from typing import Any

from regime_tasks.core.constants import FLAG_DELTAS, STATE_DELTAS, TRANSITION_DELTAS
from regime_tasks.core.payloads import EnginePayload, MapperFlags, RegimeEntry


def map_state(state: str | None, prev_state: str | None, *, buy: bool, rebuy: bool, trim: bool) -> dict[str, Any]:
    """ΔA/ΔE for one bar, with the parts that make it up (for diagnostics)."""
    base = STATE_DELTAS.get(state or "", {"delta_a": 0.0, "delta_e": 0.0})
    da, de = base["delta_a"], base["delta_e"]
    applied: list[str] = []
    in_table = state in STATE_DELTAS
    if in_table and rebuy and state in FLAG_DELTAS["rebuy"]:
        da += FLAG_DELTAS["rebuy"][state]["delta_a"]
        de += FLAG_DELTAS["rebuy"][state]["delta_e"]
        applied.append("rebuy")
    elif in_table and buy and state in FLAG_DELTAS["buy"]:
        da += FLAG_DELTAS["buy"][state]["delta_a"]
        de += FLAG_DELTAS["buy"][state]["delta_e"]
        applied.append("buy")
    if in_table and trim and state in FLAG_DELTAS["trim"]:
        da += FLAG_DELTAS["trim"][state]["delta_a"]
        de += FLAG_DELTAS["trim"][state]["delta_e"]
        applied.append("trim")
    transition = None
    pulse = TRANSITION_DELTAS.get((prev_state or "", state or ""))
    if pulse is not None:
        transition = f"{prev_state}→{state}"
        da += pulse["delta_a"]
        de += pulse["delta_e"]
    return {
        "delta_a_raw": round(da, 10),
        "delta_e_raw": round(de, 10),
        "transition": transition,
        "applied_flags": applied,
    }


def engine_flags(payload: EnginePayload) -> MapperFlags:
    """The mapper's view of the engine's flags (D7): buy, rebuy, trim."""
    state = payload.get("state")
    buy = bool(payload.get("buy_signal")) if state == "S1" else bool(payload.get("buy_flag"))
    return {
        "buy": buy and state in {"S1", "S2", "S3"},
        "rebuy": bool(payload.get("rebuy_flag")) and state in {"S2", "S3"},
        "trim": bool(payload.get("trim_flag")) and state in {"S2", "S3"},
    }


def map_engine_payload(payload: EnginePayload) -> RegimeEntry:
    """``features.regime_engine_v4`` for an engine payload (CONTRACTS §4); no wall-clock time."""
    flags = engine_flags(payload)
    state, prev = payload.get("state"), payload.get("prev_state")
    mapped = map_state(state, prev, **flags)
    return {
        "delta_a_raw": mapped["delta_a_raw"],
        "delta_e_raw": mapped["delta_e_raw"],
        "state": state,
        "prev_state": prev,
        "flags": flags,
        "transition": mapped["transition"],
        "bar_ts": payload.get("bar_ts"),
    }
