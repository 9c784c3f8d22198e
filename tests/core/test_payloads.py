"""core/payloads.py's TypedDicts describe what the engine and the mapper really produce, on real candles."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

import pandas as pd
import pytest

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.live import LiveHistory
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.payloads import EnginePayload, RegimeEntry
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame
from tests.conftest import real_file


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    """1,500 real BTC hours from 2017-08: warm-up, then S0, S1, S2 and S3 bars."""
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    bars = normalize_bars(raw, series="BTC", timeframe="1h")
    return fill_gaps(bars, "1h")[0].drop(columns="filled").iloc[:1_500]


@functools.cache
def _hints(tp: Any) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _mismatches(tp: Any, value: Any, where: str) -> list[str]:
    """Where ``value`` does not have type ``tp`` (the subset of typing the payload types use)."""
    if tp is Any:
        return []
    if typing.is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        hints = _hints(tp)
        out = [f"{where}.{k}: missing" for k in sorted(tp.__required_keys__ - value.keys())]
        out += [f"{where}.{k}: not in {tp.__name__}" for k in sorted(value.keys() - hints.keys())]
        for key in value.keys() & hints.keys():
            out += _mismatches(hints[key], value[key], f"{where}.{key}")
        return out
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_mismatches(arg, value, where) for arg in typing.get_args(tp)]
        return [] if any(not o for o in options) else [f"{where}: {value!r} is not {tp}"]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, expected an object"]
        key_tp, value_tp = typing.get_args(tp)
        return [m for k, v in value.items() for m in _mismatches(key_tp, k, where) + _mismatches(value_tp, v, where)]
    if tp is type(None):
        return [] if value is None else [f"{where}: {value!r} is not None"]
    if tp in (int, float) and isinstance(value, bool):
        return [f"{where}: a bool where {tp.__name__} is expected"]
    return [] if isinstance(value, tp) else [f"{where}: {type(value).__name__} is not {tp.__name__}"]


@pytest.mark.parametrize("settings", [EngineSettings(), EngineSettings(bootstrap="as_run", sr_levels="none")])
def test_every_engine_payload_and_regime_entry_has_the_typed_shape(
    btc_1h: pd.DataFrame, settings: EngineSettings
) -> None:
    payloads, _ = run_engine_frame(compute_ta_frame(btc_1h), settings)
    assert {p["state"] for p in payloads} >= {"warming_up", "S0", "S1", "S2", "S3"}  # every state's shape is seen
    problems = [m for p in payloads for m in _mismatches(EnginePayload, p, p["bar_ts"])]
    problems += [m for p in payloads for m in _mismatches(RegimeEntry, dict(map_engine_payload(p)), p["bar_ts"])]
    assert problems == []


def test_the_live_step_returns_the_typed_shape(btc_1h: pd.DataFrame) -> None:
    bars = btc_1h.iloc[:500].assign(filled=False)
    settings = EngineSettings()
    prev = run_engine_frame(compute_ta_frame(btc_1h.iloc[:499]), settings)[0][-1]
    live = LiveHistory(bars.iloc[:499], settings, capacity=600, window_start=bars.index[0])
    live.append(bars.index[499], bars.iloc[499])
    payload, _ = live.step_last(prev)
    assert _mismatches(EnginePayload, payload, "live") == []


def test_the_shape_check_notices_a_missing_key_and_a_wrong_type(btc_1h: pd.DataFrame) -> None:
    payload = dict(run_engine_frame(compute_ta_frame(btc_1h.iloc[:400]))[0][-1])
    payload.pop("exit_reason")
    payload["buy_flag"] = 1
    payload["scores"] = {**payload["scores"], "surprise": 0.0}
    problems = _mismatches(EnginePayload, payload, "p")
    assert "p.exit_reason: missing" in problems
    assert any(p.startswith("p.buy_flag: int") for p in problems)
    assert "p.scores.surprise: not in EngineScores" in problems
