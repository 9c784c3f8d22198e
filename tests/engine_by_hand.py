"""TS, OX, DX and EDX written out from the engine spec's formulas (`uptrend_engine_v4.md` §1, §4), for checking.

Plain numpy/pandas, bar by bar, and deliberately naive (polyfit per window, a zig-zag re-run from the first bar for
every bar evaluated): it imports nothing from ``regime_tasks`` — neither the engine nor its TA — so a wrong formula
or index in the engine cannot hide behind the same mistake here. Where the spec is terse it follows the
interpretations stated in docs/ENGINE.md (slope over the whole EDX window, pivots known at the bar, AVWAP slope over
the window's last 10 bars, ``vo_z`` against the bars before; the host's own ``vo_z`` under ``inputs = as_run``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOST_MISREAD = ("rsi_slope_10", "adx_slope_10", "dsep_fast_5", "dsep_mid_5", "ema20_slope", "d_ema144_slope")


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return min(hi, max(lo, x))


def slope(y: np.ndarray) -> float:
    """Least-squares slope per bar."""
    return float(np.polyfit(np.arange(len(y), dtype=float), y, 1)[0])


# --- §1 inputs ------------------------------------------------------------------------------------------------
def wilder(x: np.ndarray, n: int = 14, first: int = 0) -> np.ndarray:
    """Wilder smoothing: the first value is the mean of the first n values from ``first``, then s += (x − s)/n."""
    out = np.full(len(x), np.nan)
    out[first + n - 1] = np.mean(x[first : first + n])
    for t in range(first + n, len(x)):
        out[t] = out[t - 1] + (x[t] - out[t - 1]) / n
    return out


def inputs(bars: pd.DataFrame) -> dict[str, np.ndarray]:
    """The per-bar series the scores read (EMAs seeded with the first close; Wilder ATR, ADX and RSI)."""
    c, h, lo, v = (bars[k].to_numpy(dtype=float) for k in ("close", "high", "low", "volume"))
    out = {f"ema{n}": pd.Series(c).ewm(span=n, adjust=False).mean().to_numpy() for n in (20, 30, 60, 144, 250, 333)}
    prev_c = np.concatenate([[c[0]], c[:-1]])
    tr = np.maximum.reduce([h - lo, np.abs(h - prev_c), np.abs(lo - prev_c)])
    out["atr"] = wilder(tr, first=1)
    up, down = np.diff(h, prepend=h[0]), -np.diff(lo, prepend=lo[0])
    plus = wilder(np.where((up > down) & (up > 0), up, 0.0), first=1)
    minus = wilder(np.where((down > up) & (down > 0), down, 0.0), first=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = 100.0 * np.abs(plus - minus) / (plus + minus)
    out["adx"] = wilder(np.nan_to_num(dx), first=14)
    gain, loss = np.maximum(np.diff(c, prepend=c[0]), 0.0), np.maximum(-np.diff(c, prepend=c[0]), 0.0)
    avg_gain = pd.Series(gain).ewm(alpha=1 / 14, adjust=False).mean().to_numpy()
    avg_loss = pd.Series(loss).ewm(alpha=1 / 14, adjust=False).mean().to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        out["rsi"] = 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)
    x = np.log1p(v)
    alpha = 2.0 / 65.0
    z_before, z_host = np.zeros(len(x)), np.zeros(len(x))
    mean, var = x[0], 0.0  # the EWMA of the bars before t …
    h_mean, h_var = x[0], 0.0  # … and the host TA's, which includes bar t
    for t in range(1, len(x)):
        if var > 0:
            z_before[t] = clamp((x[t] - mean) / math.sqrt(var), -4.0, 6.0)
        d = x[t] - mean
        mean += alpha * d
        var = (1 - alpha) * (var + alpha * d * d)
        prev = h_mean
        h_mean = alpha * x[t] + (1 - alpha) * h_mean
        h_var = (1 - alpha) * (h_var + alpha * (x[t] - prev) * (x[t] - h_mean))
        z_host[t] = clamp((x[t] - h_mean) / math.sqrt(max(h_var, 1e-12)), -4.0, 6.0)
    out["vo_z"], out["vo_z_host"] = z_before, z_host
    out.update(close=c, high=h, low=lo, volume=v)
    return out


def bar_values(s: dict[str, np.ndarray], t: int, *, host: bool, daily: bool) -> dict[str, float]:
    """What the scores read at bar t: the spec's §1 inputs, or under ``host`` what the host's engine read."""
    e = {k: float(s[k][t]) for k in ("ema20", "ema30", "ema60", "ema144", "ema250", "ema333")}
    atr = float(s["atr"][t])

    def nslope(name: str, end: int) -> float:
        return slope(s[name][end - 9 : end + 1]) / s[name][end]

    v = {
        **e,
        "price": float(s["close"][t]),
        "atr": atr,
        "atr_mean_20": float(np.mean(s["atr"][t - 19 : t + 1])),
        "adx": float(s["adx"][t]),
        "rsi_slope_10": slope(s["rsi"][t - 9 : t + 1]),
        "adx_slope_10": slope(s["adx"][t - 9 : t + 1]),
        "ema20_slope": nslope("ema20", t),
        "d_ema144_slope": nslope("ema144", t) - nslope("ema144", t - 10),
        "vo_z": float(s["vo_z"][t]),
    }
    sep_fast = [(s["ema20"][k] - s["ema60"][k]) / s["ema60"][k] for k in (t, t - 5)]
    sep_mid = [(s["ema60"][k] - s["ema144"][k]) / s["ema144"][k] for k in (t, t - 5)]
    v["dsep_fast_5"], v["dsep_mid_5"] = sep_fast[0] - sep_fast[1], sep_mid[0] - sep_mid[1]
    if host:
        v.update(dict.fromkeys(HOST_MISREAD, 0.0))
        v["atr_mean_20"] = atr  # the host's fallback for its missing key
        v["vo_z"] = float(s["vo_z_host"][t])
        if daily:
            v["adx"] = 0.0  # it read the literal key adx_1h
    return v


# --- §4 scores ------------------------------------------------------------------------------------------------
def ts(v: dict[str, float]) -> float:
    return (clamp((v["rsi_slope_10"] + 5) / 10) + clamp((v["adx_slope_10"] + 2) / 4)) / 2


def ox_base(v: dict[str, float]) -> float:
    p, a = v["price"], v["atr"]
    return (
        0.35 * sig((p - v["ema20"]) / (1.5 * a))
        + 0.20 * sig((p - v["ema60"]) / (2.0 * a))
        + 0.10 * sig((p - v["ema144"]) / (1.5 * a))
        + 0.10 * sig((p - v["ema250"]) / (2.0 * a))
        + 0.10 * sig(v["dsep_fast_5"] / 0.0015)
        + 0.05 * sig(v["dsep_mid_5"] / 0.0010)
        + 0.05 * sig(a / v["atr_mean_20"] - 1)
        + 0.05 * sig(-v["ema20_slope"] / 0.0008)
    )


def dx(v: dict[str, float], edx: float) -> float:
    p, e144, e333, a = v["price"], v["ema144"], v["ema333"], v["atr"]
    if e144 > e333:
        band, x = e144 - e333, clamp((p - e333) / (e144 - e333))
    elif e333 > e144:
        band, x = e333 - e144, clamp((p - e144) / (e333 - e144))
    else:
        band, x = 0.01 * e144, 1.0 if p <= e144 else 0.0
    comp = sig((0.03 - band / p) / 0.02)
    location = math.exp(-3 * x) * (1 + 0.3 * comp)
    adx_relief = sig(v["adx_slope_10"] / 0.3) if v["adx"] >= 18 else 0.0
    relief = 0.5 * sig((a / v["atr_mean_20"] - 0.9) / 0.05) + 0.25 * sig(v["rsi_slope_10"] / 0.5) + 0.25 * adx_relief
    base = 0.45 * location + 0.25 * sig(-v["vo_z"]) + 0.25 * relief + 0.05 * (1.0 if v["d_ema144_slope"] > 0 else 0.0)
    return clamp(base * (1 - 0.5 * clamp(edx - 0.6, 0, 0.4)))


@dataclass(frozen=True)
class Pivot:
    index: int
    price: float
    kind: str


def zigzag(high: np.ndarray, low: np.ndarray, thr: np.ndarray, stop: int, backstep: int = 3, leg: int = 4):
    """Pivots of a zig-zag run over bars 0..stop−1 (threshold ``thr`` = 1.2·ATR of the confirming bar): the
    candidate extreme is confirmed once price has retraced by the threshold, ``backstep`` bars after it, with a
    leg of at least ``leg`` bars from the previous pivot; a further extreme in the swing's direction moves the
    last pivot instead."""
    pivots: list[Pivot] = []
    hi = lo = 0
    t = 1
    while t < stop and not pivots:
        hi = t if high[t] >= high[hi] else hi
        lo = t if low[t] <= low[lo] else lo
        if lo < hi and high[hi] - low[t] >= thr[t] and t - hi >= backstep:
            pivots += [Pivot(lo, low[lo], "low"), Pivot(hi, high[hi], "high")]
            lo = t
        elif hi < lo and high[t] - low[lo] >= thr[t] and t - lo >= backstep:
            pivots += [Pivot(hi, high[hi], "high"), Pivot(lo, low[lo], "low")]
            hi = t
        t += 1
    for u in range(t, stop):
        last = pivots[-1]
        if last.kind == "low":
            if low[u] < last.price:
                pivots[-1], hi = Pivot(u, low[u], "low"), u
                continue
            hi = u if high[u] >= high[hi] else hi
            if high[hi] - low[u] >= thr[u] and u - hi >= backstep and hi - last.index >= leg:
                pivots.append(Pivot(hi, high[hi], "high"))
                lo = u
        else:
            if high[u] > last.price:
                pivots[-1], lo = Pivot(u, high[u], "high"), u
                continue
            lo = u if low[u] <= low[lo] else lo
            if high[u] - low[lo] >= thr[u] and u - lo >= backstep and lo - last.index >= leg:
                pivots.append(Pivot(lo, low[lo], "low"))
                hi = u
    return pivots


def window_components(s: dict[str, np.ndarray], t: int, length: int, pivots: list[Pivot]) -> dict[str, float]:
    if length < 10:
        return dict.fromkeys(("slow", "structure", "participation", "compression"), 0.5)
    st = t - length + 1
    norm = (slope(s["ema250"][st : t + 1]) / s["ema250"][t] + slope(s["ema333"][st : t + 1]) / s["ema333"][t]) / 2
    slow = (sig(1000 * norm) + sig(slope(s["rsi"][st : t + 1]) / 5) + sig(slope(s["adx"][st : t + 1]) / 2)) / 3
    inside = [p for p in pivots if p.index >= st]
    highs = [p.price for p in inside if p.kind == "high"]
    lows = [p.price for p in inside if p.kind == "low"]
    hh = sum(b > a for a, b in itertools.pairwise(highs))
    lh = sum(b < a for a, b in itertools.pairwise(highs))
    hl = sum(b > a for a, b in itertools.pairwise(lows))
    ll = sum(b < a for a, b in itertools.pairwise(lows))
    total = hh + lh + hl + ll
    structure = 0.5 if len(inside) < 4 or total == 0 else 1 - (hh + hl) / total
    c, v = s["close"][st : t + 1], s["volume"][st : t + 1]
    avwap = np.cumsum(c * v) / np.cumsum(v)
    last10 = avwap[-10:]
    participation = sig(-1000 * slope(last10) / last10[-1]) if v.sum() > 0 else 0.5
    compression = 0.5
    if length >= 144:
        e144, e250, e333 = (s[k][t - 9 : t + 1] for k in ("ema144", "ema250", "ema333"))
        mean_slope = (slope((e144 - e333) / e333) + slope((e250 - e333) / e333)) / 2
        compression = sig(-100 * mean_slope)
    return {"slow": slow, "structure": structure, "participation": participation, "compression": compression}


def combine(w: list[float]) -> float:
    if len(w) == 1:
        return w[0]
    if len(w) == 3 and w[2] > w[1] > w[0]:
        return 0.2 * w[0] + 0.3 * w[1] + 0.5 * w[2]
    return 0.3 * w[0] + 0.7 * w[1] if w[1] > w[0] else (w[0] + w[1]) / 2


def edx(s: dict[str, np.ndarray], t: int, bars_since_start: int, *, host_daily: bool) -> float:
    """EDX at bar t of an S3 episode that started ``bars_since_start`` bars earlier. ``host_daily``: the host's
    count on 1d — n in hours (24 per bar), each window capped at the bars from the start bar on."""
    n = 24 * bars_since_start if host_daily else bars_since_start
    if n < 10:
        return 0.5
    lengths = [n] + [k for k in ((2 * n) // 3,) if k >= 10]
    if len(lengths) == 2 and n // 3 >= 10:
        lengths.append(n // 3)
    if host_daily:
        available = bars_since_start + 1
        if available < 10:
            return 0.5
        lengths = [min(k, available) for k in lengths]
    thr = np.where(np.isfinite(s["atr"]), 1.2 * np.nan_to_num(s["atr"]), np.inf)
    pivots = zigzag(s["high"], s["low"], thr, t + 1)
    comps = [window_components(s, t, k, pivots) for k in lengths]
    c = {k: combine([w[k] for w in comps]) for k in comps[0]}
    return clamp(0.30 * c["slow"] + 0.25 * c["structure"] + 0.20 * c["participation"] + 0.10 * c["compression"])


def s3_scores(s: dict[str, np.ndarray], t: int, start: int, *, host: bool, daily: bool) -> dict[str, float]:
    """TS, OX, DX and EDX of bar t in an S3 episode that started at bar ``start``."""
    v = bar_values(s, t, host=host, daily=daily)
    e = edx(s, t, t - start, host_daily=host and daily)
    return {"ts": ts(v), "ox": clamp(ox_base(v) * (1 + 0.33 * clamp(e - 0.5, 0, 0.5))), "dx": dx(v, e), "edx": e}
