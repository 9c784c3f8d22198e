"""The engine's settings and the host-compatibility constants (DECISIONS D14, spec §9)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

EMA_KEYS = ("ema20", "ema30", "ema60", "ema144", "ema250", "ema333")
BUY_THRESHOLD = 0.60
ROW_CHUNK = 4096  # TA rows a replay converts to Python floats at a time
TRIM_OX = 0.65


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """The engine's settings; each ``as_run``/``none`` value reproduces the host's running engine (DECISIONS D14).

    - ``bootstrap``: ``spec`` (S3/S0/S4 on the first bar, S4→S3 allowed) or ``as_run`` (the host: S0 or S4 only).
    - ``sr_levels``: ``swing`` (levels from zig-zag pivots, spec §7) or ``none`` (the host: no levels).
    - ``inputs``: ``correct`` or ``as_run`` — the host's TA wrote timeframe-suffixed keys its engine did not
      read (spec §9), so TS, OX expansion/fragility, DX relief/curl and the S3 DX-buy slope gate read the
      default 0 (TS is then always 0.5 and no buy flag can fire); :data:`HOST_MISREAD_KEYS`. Its missing
      ``atr_mean_20`` fell back to the ATR itself (OX ATR surge σ(0), DX ATR relief σ(2) = 0.881), and its ADX
      floor read the literal key ``adx_1h``, so on any timeframe but 1h the ADX relief is 0.
    - ``edx_1d_count``: ``bars`` or ``as_run`` — the host counted the bars since the S3 start of a 1d series in
      hours (24 per bar) for EDX, but read only the bars from the S3 start on, so its windows are capped there,
      and at most the first 500 of them, so from the 500th bar after the S3 start its EDX stays where it was.
    - ``edx``: ``spec`` or ``as_run`` — EDX as spec §4 defines it, or as the host computed it: from the first 500
      bars after the S3 start, every input recomputed from each window's bars (:mod:`regime_tasks.core.host_edx`);
      ``as_run`` includes the host's bar count, so ``edx_1d_count`` does not apply to it.
    - ``gaps``: ``fill`` or ``keep`` — how a caller that reads a file lays its bars: on the D5 grid, absent bars
      flat (``fill``), or the rows as given (``keep``, the host ran on whatever bars its store held). The engine
      counts rows either way (bars since the S3 start, EDX windows, slopes), which on a filled grid is time.
    """

    bootstrap: Literal["spec", "as_run"] = "spec"
    sr_levels: Literal["swing", "none"] = "swing"
    inputs: Literal["correct", "as_run"] = "correct"
    edx_1d_count: Literal["bars", "as_run"] = "bars"
    edx: Literal["spec", "as_run"] = "spec"
    gaps: Literal["fill", "keep"] = "fill"


# The inputs the host's engine read under unsuffixed keys its TA never wrote (spec §9): they read as 0.
HOST_MISREAD_KEYS = (
    "rsi_slope_10",  # TS, DX rsi relief
    "adx_slope_10",  # TS, DX adx relief
    "dsep_fast_5",  # OX expansion
    "dsep_mid_5",
    "ema20_slope",  # OX fragility
    "d_ema144_slope",  # DX curl
)
HOST_MISREAD_S3_GATE = ("ema250_slope", "ema333_slope")  # the S3 DX-buy slope gate (S1/S2 gates read right)
HOUR_SECONDS = 3_600
HOST_EDX_FETCH_LIMIT = 500  # bars the host's EDX fetched from the S3 start on (edx_1d_count = as_run)
DAY_SECONDS = 86_400


def host_inputs(v: Mapping[str, float], bar_seconds: float, vo_z: float) -> dict[str, float]:
    """The values the host's engine read for bar values ``v`` (``inputs = as_run``, spec §9).

    The keys in :data:`HOST_MISREAD_KEYS` read 0. The missing ``atr_mean_20`` fell back to the ATR itself (1.0
    without ATR), so OX's ATR surge is σ(0) and DX's ATR relief σ(2). The ADX floor read the literal key
    ``adx_1h``, which the host's TA writes only for 1h series: elsewhere the ADX reads 0 (no ADX relief).
    ``vo_z`` is the host's own (:meth:`EngineHistory.host_vo_z`).
    """
    out = {**v, **dict.fromkeys(HOST_MISREAD_KEYS, 0.0), "vo_z": vo_z}
    atr = v["atr"]
    out["atr_mean_20"] = atr if atr and math.isfinite(atr) else 1.0
    if bar_seconds != HOUR_SECONDS:
        out["adx"] = 0.0
    return out
