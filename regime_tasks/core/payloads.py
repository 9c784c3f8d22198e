"""The shapes of the payloads that cross from the engine into the mapper, and from the mapper towards the levers.

They are JSON objects on the wire (``lowcap_positions.features``, the Redis hash), so they are ``TypedDict`` s:
a type checker sees the keys, and at run time they stay plain dicts. ``tests/core/test_payloads.py`` checks
them against real engine output, so a key added to the engine without a type here fails a test.

- :class:`EnginePayload` — ``features.uptrend_engine_v4``, one per bar (spec §8, docs/CONTRACTS.md §3).
- :class:`RegimeEntry` — ``features.regime_engine_v4`` and the cache value of one driver × timeframe (D7, D10).
  The levers read these back from Redis or the database as untrusted JSON, so ``core.levers`` takes
  ``Mapping[str, Any]`` and checks each entry (``entry_problem``) instead of trusting this type.
"""

# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] only from evaluated annotations.
from typing import Any, NotRequired, TypedDict


class EngineScores(TypedDict):
    """The engine's scores of one bar; ``None`` where the state's checks did not compute one."""

    ts: float | None
    ts_with_boost: float | None
    sr_boost: float | None
    ox: float | None
    dx: float | None
    edx: float | None


class EngineMeta(TypedDict):
    """What the next bar's step needs from this one (the S3 episode and the above-EMA333 episode)."""

    s3_start_ts: str | None
    trimmed_in_episode: bool
    bars_since_s3: int | None
    episode_start_ts: str | None


class EnginePayload(TypedDict):
    """``features.uptrend_engine_v4``: the engine's state, flags and scores of one closed bar."""

    state: str  # S0 S1 S2 S3 S4 or warming_up
    prev_state: str | None
    bar_ts: str  # bar open time, ISO-8601 UTC
    price: float | None
    ema: dict[str, float | None]
    buy_signal: bool
    buy_flag: bool
    rebuy_flag: bool
    trim_flag: bool
    emergency_exit: bool
    reclaimed_ema333: bool
    exit_position: bool
    exit_reason: str | None
    scores: EngineScores
    diagnostics: dict[str, Any]  # free-form, for people (the checks and their inputs)
    meta: EngineMeta


class MapperFlags(TypedDict):
    """The engine flags as the mapper reads them (D7)."""

    buy: bool
    rebuy: bool
    trim: bool


class RegimeEntry(TypedDict):
    """``features.regime_engine_v4`` of one driver × timeframe, and its value in the cache hash (D7, D10)."""

    delta_a_raw: float
    delta_e_raw: float
    state: str | None
    prev_state: str | None
    flags: MapperFlags
    transition: str | None  # e.g. "S3→S0" on the bar of an emergency-exit transition
    bar_ts: str | None
    ts: NotRequired[str | None]  # when the pipeline wrote it (the mapper itself reads no clock)


__all__ = ["EngineMeta", "EnginePayload", "EngineScores", "MapperFlags", "RegimeEntry"]
