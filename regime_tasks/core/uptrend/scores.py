"""EMA orders (spec §2) and the scores TS, S/R boost, OX, DX, the DX threshold and window combination (spec §4–§5)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from regime_tasks.core.uptrend.settings import BUY_THRESHOLD


def sigmoid(x: float) -> float:
    """σ(x) = 1/(1 + e^(−x)), overflow-safe."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo if x < lo else hi if x > hi else x


def _json_num(x: float) -> float | None:
    return x if isinstance(x, float) and math.isfinite(x) else (None if isinstance(x, float) else x)


# --- EMA orders (spec §2) -------------------------------------------------------------------------------
def s3_order(e: Mapping[str, float]) -> bool:
    return e["ema20"] > e["ema60"] and e["ema30"] > e["ema60"] and e["ema60"] > e["ema144"] > e["ema250"] > e["ema333"]


def s0_order(e: Mapping[str, float]) -> bool:
    return e["ema20"] < e["ema60"] and e["ema30"] < e["ema60"] and e["ema60"] < e["ema144"] < e["ema250"] < e["ema333"]


def fast_band_above_60(e: Mapping[str, float]) -> bool:
    return e["ema20"] > e["ema60"] and e["ema30"] > e["ema60"]


def all_below_333(e: Mapping[str, float]) -> bool:
    return all(e[k] < e["ema333"] for k in ("ema20", "ema30", "ema60", "ema144", "ema250"))


# --- scores (spec §4) -------------------------------------------------------------------------------------
def trend_strength(rsi_slope_10: float, adx_slope_10: float) -> float:
    """TS = (clamp((rsi_slope_10 + 5)/10) + clamp((adx_slope_10 + 2)/4)) / 2; an undefined slope counts 0."""
    rs = 0.0 if math.isnan(rsi_slope_10) else rsi_slope_10
    ad = 0.0 if math.isnan(adx_slope_10) else adx_slope_10
    return (clamp((rs + 5.0) / 10.0) + clamp((ad + 2.0) / 4.0)) / 2.0


def sr_boost(anchor: float, levels: Sequence[Mapping[str, float]], atr: float) -> float:
    """Max over levels within 1.0·ATR of the anchor of ``strength × (1 − distance/halo) × 0.25`` (halo = ATR)."""
    if not levels or not (atr > 0) or math.isnan(anchor):
        return 0.0
    best = 0.0
    for lv in levels:
        d = abs(lv["price"] - anchor)
        if d <= atr:
            best = max(best, lv["strength"] * (1.0 - d / atr) * 0.25)
    return best


def ox_base(v: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """OX_base and its parts."""
    p, a = v["price"], v["atr"]

    def rail(ema: float, k: float) -> float:
        return sigmoid((p - ema) / (k * a)) if a > 0 else 0.0

    atr_mean = v["atr_mean_20"]
    parts = {
        "rail_fast": rail(v["ema20"], 1.5),
        "rail_mid": rail(v["ema60"], 2.0),
        "rail_144": rail(v["ema144"], 1.5),
        "rail_250": rail(v["ema250"], 2.0),
        "exp_fast": sigmoid(_z(v["dsep_fast_5"]) / 0.0015),
        "exp_mid": sigmoid(_z(v["dsep_mid_5"]) / 0.0010),
        "atr_surge": sigmoid(a / atr_mean - 1.0) if atr_mean > 0 else 0.5,
        "fragility": sigmoid(-_z(v["ema20_slope"]) / 0.0008),
    }
    base = (
        0.35 * parts["rail_fast"]
        + 0.20 * parts["rail_mid"]
        + 0.10 * parts["rail_144"]
        + 0.10 * parts["rail_250"]
        + 0.10 * parts["exp_fast"]
        + 0.05 * parts["exp_mid"]
        + 0.05 * parts["atr_surge"]
        + 0.05 * parts["fragility"]
    )
    return base, parts


def _z(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def dx_score(v: Mapping[str, float], edx: float) -> tuple[float, dict[str, float]]:
    """DX (discount inside the trend) and its parts (spec §4)."""
    p, e144, e333, a = v["price"], v["ema144"], v["ema333"], v["atr"]
    if e144 > e333:
        band = e144 - e333
        x = clamp((p - e333) / band)
    elif e333 > e144:
        band = e333 - e144
        x = clamp((p - e144) / band)
    else:
        band = 0.01 * e144
        x = 1.0 if p <= e144 else 0.0
    comp = sigmoid((0.03 - band / p) / 0.02)
    location = math.exp(-3.0 * x) * (1.0 + 0.3 * comp)
    exhaustion = sigmoid(-_z(v["vo_z"]))
    atr_mean = v["atr_mean_20"]
    atr_relief = sigmoid((a / atr_mean - 0.9) / 0.05) if atr_mean > 0 else 0.5
    rsi_relief = sigmoid(_z(v["rsi_slope_10"]) / 0.5)
    adx_relief = sigmoid(_z(v["adx_slope_10"]) / 0.3) if v["adx"] >= 18 else 0.0
    relief = 0.5 * atr_relief + 0.25 * rsi_relief + 0.25 * adx_relief
    curl = 1.0 if v["d_ema144_slope"] > 0 else 0.0
    base = 0.45 * location + 0.25 * exhaustion + 0.25 * relief + 0.05 * curl
    dx = clamp(base * (1.0 - 0.5 * clamp(edx - 0.6, 0.0, 0.4)))
    parts = {
        "x": x,
        "band": band,
        "comp": comp,
        "location": location,
        "exhaustion": exhaustion,
        "atr_relief": atr_relief,
        "rsi_relief": rsi_relief,
        "adx_relief": adx_relief,
        "relief": relief,
        "curl": curl,
        "dx_base": base,
    }
    return dx, parts


def dx_threshold(price: float, ema144: float, ema333: float, edx: float) -> tuple[float, dict[str, float]]:
    """``0.60 + supp − pos`` floored at 0 (spec §5, S3 DX buy)."""
    if edx >= 0.7:
        supp = 0.15
    elif edx >= 0.5:
        supp = (edx - 0.5) * 0.5
    else:
        supp = 0.0
    pos = 0.0
    q = math.nan
    if price <= ema144 and ema333 > ema144:
        q = (price - ema144) / (ema333 - ema144)
        pos = 0.10 * q - 0.05 * (1.0 - q)
    return max(0.0, BUY_THRESHOLD + supp - pos), {"supp": supp, "pos": pos, "q": q}


def combine_windows(values: list[float]) -> float:
    """Combine a component over W1 (, W2 (, W3)) per spec §4."""
    if len(values) == 1:
        return values[0]
    w1, w2 = values[0], values[1]
    if len(values) == 2:
        return 0.3 * w1 + 0.7 * w2 if w2 > w1 else (w1 + w2) / 2.0
    w3 = values[2]
    if w3 > w2 > w1:
        return 0.2 * w1 + 0.3 * w2 + 0.5 * w3
    if w2 > w1:
        return 0.3 * w1 + 0.7 * w2
    return (w1 + w2) / 2.0
