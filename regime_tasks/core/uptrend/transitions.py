"""The step: one closed bar through the transitions (spec §3) and the checks of the state it ends in."""

from __future__ import annotations

import math
from collections.abc import Mapping
from math import isfinite
from typing import Any

import numpy as np

from regime_tasks.core.constants import MIN_BARS_FOR_STATE, STATES, WARMING_UP
from regime_tasks.core.payloads import EngineMeta
from regime_tasks.core.uptrend.edx import _bars_between, _host_edx_at, edx_score
from regime_tasks.core.uptrend.history import EngineHistory
from regime_tasks.core.uptrend.scores import (
    _json_num,
    clamp,
    dx_score,
    dx_threshold,
    ox_base,
    trend_strength,
)
from regime_tasks.core.uptrend.settings import (
    BUY_THRESHOLD,
    DAY_SECONDS,
    EMA_KEYS,
    HOST_EDX_FETCH_LIMIT,
    HOST_MISREAD_S3_GATE,
    TRIM_OX,
    EngineSettings,
    host_inputs,
)
from regime_tasks.core.uptrend.states import next_state


# --- the step --------------------------------------------------------------------------------------------
def step(
    h: EngineHistory, i: int, prev: Mapping[str, Any] | None, settings: EngineSettings, *, diagnostics: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Advance the engine by bar ``i``. Returns (payload, state-change event or None).

    ``diagnostics=False`` leaves ``payload["diagnostics"]`` None (for payloads nobody stores or prints: a
    replay's bars before the last); every other field is the same.
    """
    v = h.values(i)
    bar_ts = h.stamp(i)
    prev_state = prev.get("state") if prev else None
    prev_meta = (prev.get("meta") or {}) if prev else {}  # read only
    ema = {k: v[k] for k in EMA_KEYS}
    ema_json = {k: (x if isfinite(x) else None) for k in _PAYLOAD_EMAS for x in (v[k],)}
    if i + 1 < MIN_BARS_FOR_STATE or any(math.isnan(x) for x in ema.values()) or math.isnan(v["atr"]):
        return _warming_up(i, prev_state, bar_ts, v["price"], ema_json, diagnostics), None

    prev_known = prev_state if prev_state in STATES else None
    # the EMA orders of spec §2 (scores.s3_order etc., written out on locals: this runs on every bar)
    e20, e30, e60, e144, e250, e333 = v["ema20"], v["ema30"], v["ema60"], v["ema144"], v["ema250"], v["ema333"]
    s3o = e20 > e60 and e30 > e60 and e60 > e144 > e250 > e333
    s0o = e20 < e60 and e30 < e60 and e60 < e144 < e250 < e333
    fast_band = e20 > e60 and e30 > e60
    all_below = e20 < e333 and e30 < e333 and e60 < e333 and e144 < e333 and e250 < e333
    above60, above333 = v["price"] > e60, v["price"] > e333
    order = {
        "s3_order": s3o,
        "s0_order": s0o,
        "fast_band_above_60": fast_band,
        "all_below_333": all_below,
        "price_above_ema60": above60,
        "price_above_ema333": above333,
    }
    # the diagnostics are built only when asked for (a replay's bars before the last never are); nothing else
    # depends on them
    diag: dict[str, Any] = {"order": order} if diagnostics else {}
    flags = {
        k: False
        for k in (
            "buy_signal",
            "buy_flag",
            "rebuy_flag",
            "trim_flag",
            "emergency_exit",
            "reclaimed_ema333",
            "exit_position",
        )
    }
    exit_reason = None
    meta: EngineMeta = {
        "s3_start_ts": prev_meta.get("s3_start_ts"),
        "trimmed_in_episode": bool(prev_meta.get("trimmed_in_episode")),
        "bars_since_s3": None,
        "episode_start_ts": prev_meta.get("episode_start_ts"),
    }

    # --- transition (spec §3): exactly one per step
    state = next_state(
        prev_known, s3o, s0o, fast_band, all_below, above60, above333, v["price"] < e333, settings.bootstrap
    )
    if prev_known is None and diagnostics:
        diag["transition"] = f"bootstrap ({settings.bootstrap})"
    if state == "S0" and prev_known == "S1":
        flags["exit_position"] = flags["emergency_exit"] = True
        exit_reason = "s1_to_s0_bearish_order"
    elif state == "S0" and prev_known == "S3":
        flags["exit_position"] = True
        exit_reason = "all_emas_below_333"

    # --- episode metadata
    if state == "S3" and prev_known != "S3":
        meta["s3_start_ts"] = bar_ts
    if state != "S3":
        meta["s3_start_ts"] = None
    in_episode = state in ("S2", "S3")
    if in_episode and prev_known not in ("S2", "S3"):
        meta["episode_start_ts"] = bar_ts
        meta["trimmed_in_episode"] = False
    if not in_episode:
        meta["episode_start_ts"] = None
        meta["trimmed_in_episode"] = False
    trimmed_before = meta["trimmed_in_episode"]

    # --- scores and checks
    atr = v["atr"]
    # what the scores read: the TA values, or under inputs=as_run the host's defaults for the keys it misread
    vs = host_inputs(v, h.bar_seconds, h.host_vo_z(i)) if settings.inputs == "as_run" else v
    ts = trend_strength(vs["rsi_slope_10"], vs["adx_slope_10"])
    in_trend = state in ("S1", "S2", "S3")  # S/R levels count only there
    boost60, boost333, n_near = h.sr_numbers(i, v, settings.sr_levels, state) if in_trend else (0.0, 0.0, 0)
    scores: dict[str, Any] = {"ts": ts, "ts_with_boost": None, "sr_boost": None, "ox": None, "dx": None, "edx": None}
    if diagnostics:
        diag["ts"] = {
            "rsi_slope_10": _json_num(vs["rsi_slope_10"]),
            "adx_slope_10": _json_num(vs["adx_slope_10"]),
            "ts": ts,
            "inputs": settings.inputs,
        }
        diag["sr_levels"] = h.levels_at(i, v["price"], atr, settings.sr_levels) if in_trend else []

    # the S1 buy check runs on the S0→S1 bar and every S1 bar, but not on the bar that drops from S2 to S1: the
    # host never sets buy_signal there (spec §3, S1)
    run_s1 = state == "S1" and prev_known != "S2"
    run_s2 = state == "S2" and prev_known == "S2"
    run_s3 = state == "S3"

    if run_s1:
        boost = boost60
        near = abs(v["price"] - v["ema60"]) <= 1.0 * atr
        slope_ok = v["ema60_slope"] > 0 or v["ema144_slope"] >= 0
        strength_ok = ts + boost >= BUY_THRESHOLD
        flags["buy_signal"] = near and slope_ok and strength_ok
        scores.update(sr_boost=boost, ts_with_boost=ts + boost)
        if diagnostics:
            diag["s1_buy"] = {
                "near_ema60": near,
                "distance_atr": _json_num(abs(v["price"] - v["ema60"]) / atr),
                "slope_ok": slope_ok,
                "ema60_slope": _json_num(v["ema60_slope"]),
                "ema144_slope": _json_num(v["ema144_slope"]),
                "ts_plus_boost": ts + boost,
                "strength_ok": strength_ok,
                "result": flags["buy_signal"],
            }

    if run_s2 or run_s3:
        ob, ox_parts = ox_base(vs)
        edx = 0.5
        if run_s3:
            s3_start = meta["s3_start_ts"]
            n_bars = _bars_between(h, s3_start, i)
            meta["bars_since_s3"] = n_bars
            prev_edx = (prev.get("scores") or {}).get("edx") if prev and prev_known == "S3" else None
            host_daily = settings.edx_1d_count == "as_run" and h.bar_seconds == DAY_SECONDS
            if settings.edx == "as_run":
                edx, edx_diag = _host_edx_at(h, i, s3_start, prev_edx)
            elif host_daily and n_bars >= HOST_EDX_FETCH_LIMIT and prev_edx is not None:
                # the host fetched at most the first 500 bars from the S3 start: from then on it read the same bars
                edx, edx_diag = float(prev_edx), {"n": n_bars * 24, "frozen": f"first {HOST_EDX_FETCH_LIMIT} bars"}
            elif host_daily:
                # the host counted days in hours but read only the bars from the S3 start bar on
                edx, edx_diag = edx_score(h, i, n_bars * 24, since=i - n_bars)
            else:
                edx, edx_diag = edx_score(h, i, n_bars)
            if diagnostics:
                diag["edx"] = _clean(edx_diag)  # small; the host's EDX may hold anything
            ox = clamp(ob * (1.0 + 0.33 * clamp(edx - 0.5, 0.0, 0.5)))
            scores["edx"] = edx
        else:
            ox = clamp(ob)
        scores["ox"] = ox
        flags["trim_flag"] = ox >= TRIM_OX and n_near > 0
        if diagnostics:
            diag["ox"] = {**ox_parts, "ox_base": ob}
            diag["trim"] = {
                "ox": ox,
                "ox_ok": ox >= TRIM_OX,
                "levels_within_1atr": n_near,
                "result": flags["trim_flag"],
            }
        boost = boost333
        # the slow-EMA slope gate; the host read the S3 DX-buy gate's inputs as 0 (the S2 retest's right)
        host_s3 = run_s3 and settings.inputs == "as_run"
        gate: dict[str, Any]  # numbers for the check, then their JSON form (None for NaN) for the diagnostics
        gate = dict.fromkeys(HOST_MISREAD_S3_GATE, 0.0) if host_s3 else {k: v[k] for k in HOST_MISREAD_S3_GATE}
        slope_ok = gate["ema250_slope"] > 0 or gate["ema333_slope"] >= 0
        if diagnostics:
            gate = {k: _json_num(x) for k, x in gate.items()}
        strength_ok = ts + boost >= BUY_THRESHOLD
        scores.update(sr_boost=boost, ts_with_boost=ts + boost)
        if run_s2:
            near = abs(v["price"] - v["ema333"]) <= 0.5 * atr
            flags["buy_flag"] = near and slope_ok and strength_ok
            if diagnostics:
                diag["s2_retest_buy"] = {
                    "near_ema333": near,
                    "distance_atr": _json_num(abs(v["price"] - v["ema333"]) / atr),
                    **gate,
                    "slope_ok": slope_ok,
                    "ts_plus_boost": ts + boost,
                    "strength_ok": strength_ok,
                    "result": flags["buy_flag"],
                }
        else:
            flags["emergency_exit"] = v["price"] < v["ema333"]
            prev_emergency = bool(prev.get("emergency_exit")) if prev and prev_known == "S3" else False
            flags["reclaimed_ema333"] = prev_emergency and v["price"] >= v["ema333"]
            if diagnostics:
                diag["emergency"] = {
                    "price": v["price"],
                    "ema333": v["ema333"],
                    "emergency_exit": flags["emergency_exit"],
                    "prev_emergency_exit": prev_emergency,
                    "reclaimed_ema333": flags["reclaimed_ema333"],
                }
            dx, dx_parts = dx_score(vs, edx)
            threshold, thr_parts = dx_threshold(v["price"], v["ema144"], v["ema333"], edx)
            scores["dx"] = dx
            discount = v["price"] <= v["ema144"]
            flags["buy_flag"] = (
                discount and slope_ok and strength_ok and not flags["emergency_exit"] and dx >= threshold
            )
            if diagnostics:
                diag["s3_dx_buy"] = {
                    "discount_zone": discount,
                    **gate,
                    "slope_ok": slope_ok,
                    "ts_plus_boost": ts + boost,
                    "strength_ok": strength_ok,
                    "emergency_exit": flags["emergency_exit"],
                    "dx": dx,
                    "threshold": threshold,
                    **{k: _json_num(x) for k, x in thr_parts.items()},  # q is NaN above EMA144
                    "dx_parts": dx_parts,
                    "result": flags["buy_flag"],
                }
        flags["rebuy_flag"] = flags["buy_flag"] and trimmed_before
        if flags["trim_flag"]:
            meta["trimmed_in_episode"] = True
        if diagnostics:
            diag["rebuy"] = {
                "buy_flag": flags["buy_flag"],
                "trimmed_earlier_in_episode": trimmed_before,
                "result": flags["rebuy_flag"],
            }

    if diagnostics:
        if state == "S1" and not run_s1:
            diag["s1_buy"] = {"result": False, "why": "not checked on the S2→S1 bar"}
        for name in ("s1_buy", "s2_retest_buy", "s3_dx_buy", "trim", "rebuy"):
            diag.setdefault(name, {"result": False, "why": f"not checked in {state}"})

    payload = {
        "state": state,
        "prev_state": prev_state,
        "bar_ts": bar_ts,
        "price": v["price"],
        "ema": ema_json,
        "buy_signal": flags["buy_signal"],
        "buy_flag": flags["buy_flag"],
        "rebuy_flag": flags["rebuy_flag"],
        "trim_flag": flags["trim_flag"],
        "emergency_exit": flags["emergency_exit"],
        "reclaimed_ema333": flags["reclaimed_ema333"],
        "exit_position": flags["exit_position"],
        "exit_reason": exit_reason,
        "scores": {k: (x if x is None or isfinite(x) else None) for k, x in scores.items()},
        # built JSON-ready: every value that can be NaN is mapped where it is set (tests/core/test_uptrend.py
        # checks the diagnostics of real series are clean), so no per-bar walk of the whole tree
        "diagnostics": diag if diagnostics else None,
        "meta": meta,
    }
    event = None
    if state != prev_state:
        event = {
            "state": state,
            "prev_state": prev_state,
            "bar_ts": bar_ts,
            "price": v["price"],
            "flags": {
                k: payload[k]
                for k in ("buy_signal", "buy_flag", "rebuy_flag", "trim_flag", "emergency_exit", "exit_position")
            },
            "exit_reason": exit_reason,
        }
    return payload, event


def _warming_up(
    i: int, prev_state: Any, bar_ts: str, price: float, ema_json: dict[str, float | None], diagnostics: bool
) -> dict[str, Any]:
    """The payload of a bar before a state exists (fewer than 333 bars, or an EMA or the ATR undefined)."""
    return {
        "state": WARMING_UP,
        "prev_state": prev_state,
        "bar_ts": bar_ts,
        "price": price,
        "ema": ema_json,
        "buy_signal": False,
        "buy_flag": False,
        "rebuy_flag": False,
        "trim_flag": False,
        "emergency_exit": False,
        "reclaimed_ema333": False,
        "exit_position": False,
        "exit_reason": None,
        "scores": {"ts": None, "ts_with_boost": None, "sr_boost": None, "ox": None, "dx": None, "edx": None},
        "diagnostics": {"warming_up": {"bars": i + 1, "needed": MIN_BARS_FOR_STATE}} if diagnostics else None,
        "meta": {"s3_start_ts": None, "trimmed_in_episode": False, "bars_since_s3": None, "episode_start_ts": None},
    }


_PLAIN = frozenset({bool, int, str, type(None)})
_PAYLOAD_EMAS = (*EMA_KEYS, "ema50")


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf → None, numpy scalars → Python. Dispatches on the exact type first (the
    diagnostics of a replayed bar hold a few hundred values); anything else takes the general path."""
    t = type(obj)
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is dict:  # leaves handled in place: one call per container, not one per value
        out = {}
        for k, x in obj.items():
            tx = type(x)
            if tx is float:
                out[k] = x if isfinite(x) else None
            elif tx in _PLAIN:
                out[k] = x
            else:
                out[k] = _clean(x)
        return out
    if t in _PLAIN:
        return obj
    if t is list:
        return [_clean(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _clean(x) for k, x in obj.items()}
    if isinstance(obj, list):
        return [_clean(x) for x in obj]
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
