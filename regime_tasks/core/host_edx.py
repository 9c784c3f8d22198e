"""EDX as the host system's engine computed it (``EngineSettings(edx="as_run")``), for comparison with the host.

Spec §4 defines EDX on the series' own TA (slopes of its EMA250/EMA333, RSI and ADX over each window, one causal
zig-zag). The host's engine (Lotus_Trader 8a2a1f3, ``_compute_edx_3window``) instead fetched the bars from the S3
start on — at most the first 500 — and computed every input *from each window's bars alone*:

- window lengths from the time since the S3 start in bars of 1 minute on 1m, 15 minutes on 15m, 4 hours on 4h and
  1 hour on anything else (so 24 per day on 1d); fewer than 10 → EDX 0.5; W2 = ⌊2n/3⌋ if ≥ 10, W3 = ⌊n/3⌋ if ≥ 10;
  each window is the last n (2n/3, n/3) of the fetched bars, all of them when they are fewer; fewer than 10 fetched
  bars → 0.5;
- *slow*: EMA250 and EMA333 re-seeded at the window's first close, their normalised slope over the last 10 of the
  last 20 values; RSI as a simple average of the last 14 changes, recomputed for every bar from the 15th of the
  window, slope of its last 10 values; ADX (Wilder, seeded with the window's first DX) and the slope of its last 10;
- *structure*: the host's zig-zag on the window's closes (threshold 1.2·ATR of the extreme's bar, ATR computed on
  the fetched bars, a wick relaxer of 0.25·ATR on highs/lows, +0.2 to the threshold on an illiquid window, backstep
  3, legs of at least 4 bars, the last extreme added when it has held 3 bars), swings judged on the closes at the
  pivots (an equal close counts as lower);
- *participation*: anchored VWAP from the window's first bar, slope of its last 10 values;
- *compression*: EMA144/250/333 re-seeded at the window start, slopes of the last 10 separations.

This module reimplements that behaviour from the host's published code for the comparison only (no code copied).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

HOST_FETCH_LIMIT = 500
# the host's "seconds per bar" table; every other timeframe (1d included) was counted in hours
HOST_SECONDS_PER_BAR = {60: 60, 900: 900, 3_600: 3_600, 14_400: 14_400}
RSI_N = 14


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def host_window_lengths(elapsed_seconds: float, bar_seconds: float) -> list[int] | None:
    """The host's W1 (, W2 (, W3)) lengths for a bar ``elapsed_seconds`` after the S3 start; None below 10."""
    per_bar = HOST_SECONDS_PER_BAR.get(round(bar_seconds), 3_600)
    n = int(elapsed_seconds / per_bar)
    if n < 10:
        return None
    lengths = [n]
    if int(n * 2 / 3) >= 10:
        lengths.append(int(n * 2 / 3))
        if int(n / 3) > 9:
            lengths.append(int(n / 3))
    return lengths


def _ema(x: np.ndarray, span: int) -> np.ndarray:
    """EMA seeded with the first value."""
    return pd.Series(x).ewm(span=span, adjust=False).mean().to_numpy()


def _slope_last(y: np.ndarray, window: int) -> float:
    """Least-squares slope of the last ``window`` values (0 with fewer than 3)."""
    n = min(window, len(y))
    if n < 3:
        return 0.0
    ys = np.asarray(y[-n:], dtype=np.float64)
    xs = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    return float(np.sum(xs * (ys - ys.mean())) / np.sum(xs * xs))


def _normalised_slope(series: np.ndarray, window: int) -> float:
    if len(series) < window or len(series) < 3 or series[-1] <= 0:
        return 0.0
    return _slope_last(series, window) / max(float(series[-1]), 1e-9)


def _wilder_step(prev: float, new: float, n: int = 14) -> float:
    return ((n - 1) * prev + new) / n


def _true_ranges(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum.reduce([h[1:] - lo[1:], np.abs(h[1:] - c[:-1]), np.abs(c[:-1] - lo[1:])])


def _atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int = 14) -> np.ndarray:
    """One ATR per bar: the mean of the first (up to) n true ranges on the first bars, then Wilder's."""
    tr = _true_ranges(h, lo, c)
    out = np.empty(len(c))
    atr = float(np.mean(tr[:n]))
    out[: min(len(c), n + 1)] = atr
    for k in range(n, len(tr)):
        atr = _wilder_step(atr, float(tr[k]), n)
        out[k + 1] = atr
    return out


def _adx(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int = 14) -> np.ndarray:
    """ADX per bar (empty below n + 2 bars): Wilder means seeded with the first n moves, ADX with the first DX."""
    if len(c) < n + 2:
        return np.empty(0)
    tr = _true_ranges(h, lo, c)
    up, down = h[1:] - h[:-1], lo[:-1] - lo[1:]
    plus = np.where((up > down) & (up > 0), up, 0.0)
    minus = np.where((down > up) & (down > 0), down, 0.0)
    atr, pdm, mdm = float(np.mean(tr[:n])), float(np.mean(plus[:n])), float(np.mean(minus[:n]))

    def dx(atr: float, pdm: float, mdm: float) -> float:
        pdi, mdi = 100.0 * pdm / max(atr, 1e-9), 100.0 * mdm / max(atr, 1e-9)
        return 100.0 * abs(pdi - mdi) / max(pdi + mdi, 1e-9)

    adx = [dx(atr, pdm, mdm)]
    for k in range(n, len(tr)):
        atr, pdm, mdm = _wilder_step(atr, tr[k], n), _wilder_step(pdm, plus[k], n), _wilder_step(mdm, minus[k], n)
        adx.append(_wilder_step(adx[-1], dx(atr, pdm, mdm), n))
    return np.array([adx[0]] * (len(c) - len(adx)) + adx)


def _simple_rsi_values(c: np.ndarray, n: int = RSI_N) -> np.ndarray:
    """RSI from the simple mean of the last n changes, for each bar from the (n+1)-th on."""
    if len(c) <= n:
        return np.empty(0)
    change = np.diff(c)
    gains = np.concatenate([[0.0], np.cumsum(np.maximum(change, 0.0))])
    losses = np.concatenate([[0.0], np.cumsum(np.maximum(-change, 0.0))])
    # the bar at position i (i ≥ n) uses the changes into bars i−n+1 … i, i.e. change[i−n … i−1]
    ends = np.arange(n, len(c))
    avg_gain = (gains[ends] - gains[ends - n]) / n
    avg_loss = (losses[ends] - losses[ends - n]) / n
    avg_loss = np.where(avg_loss == 0, 1e-9, avg_loss)
    return 100.0 - 100.0 / (1.0 + avg_gain / avg_loss)


def _avwap(c: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Anchored VWAP from the first bar; a bar without volume repeats the previous value (the first, its close)."""
    out = np.empty(len(c))
    pv = vol = 0.0
    for k in range(len(c)):
        if v[k] > 0:
            pv += c[k] * v[k]
            vol += v[k]
            out[k] = pv / vol
        else:
            out[k] = out[k - 1] if k else c[k]
    return out


def _swings(c: np.ndarray, atr: np.ndarray, h: np.ndarray, lo: np.ndarray) -> list[tuple[int, str]]:
    """The host's zig-zag pivots (index, "H"/"L") on closes; see the module docstring."""
    n = len(c)
    ratios = [atr[k] / c[k] for k in range(n) if c[k] > 0]
    lam = 1.2 + (0.2 if ratios and sum(ratios) / len(ratios) < 0.003 else 0.0)
    relax, backstep, min_leg = 0.25, 3, 4
    pivots: list[tuple[int, str]] = []
    last_i, last_price = 0, c[0]
    direction = None
    hi_i = lo_i = 0
    hi, low = c[0], c[0]
    for k in range(1, n):
        px = c[k]
        if px > hi:
            hi, hi_i = px, k
        if px < low:
            low, lo_i = px, k
        if direction is None:
            if px - last_price >= lam * atr[last_i]:
                direction = "up"
                pivots.append((last_i, "L"))
            elif last_price - px >= lam * atr[last_i]:
                direction = "down"
                pivots.append((last_i, "H"))
            continue
        if direction == "up":
            a = atr[hi_i]
            turned = hi - px >= lam * a or hi - lo[k] >= lam * a - relax * a
            if turned and k - hi_i >= backstep and (not pivots or hi_i - pivots[-1][0] >= min_leg):
                pivots.append((hi_i, "H"))
                last_i, last_price, direction = hi_i, c[hi_i], "down"
                low, lo_i = px, k
        else:
            a = atr[lo_i]
            turned = px - low >= lam * a or h[k] - low >= lam * a - relax * a
            if turned and k - lo_i >= backstep and (not pivots or lo_i - pivots[-1][0] >= min_leg):
                pivots.append((lo_i, "L"))
                last_i, last_price, direction = lo_i, c[lo_i], "up"
                hi, hi_i = px, k
    # the last extreme counts once it has held ``backstep`` bars
    last_kind = pivots[-1][1] if pivots else None
    if (
        direction == "up"
        and last_kind != "H"
        and n - 1 - hi_i >= backstep
        and (not pivots or hi_i - pivots[-1][0] >= min_leg)
    ):
        pivots.append((hi_i, "H"))
    if (
        direction == "down"
        and last_kind != "L"
        and n - 1 - lo_i >= backstep
        and (not pivots or lo_i - pivots[-1][0] >= min_leg)
    ):
        pivots.append((lo_i, "L"))
    return pivots


def _structure(c: np.ndarray, pivots: list[tuple[int, str]]) -> float:
    if len(pivots) < 4:
        return 0.5
    counts = {"H": [0, 0], "L": [0, 0]}  # [higher, not higher]
    for kind in ("H", "L"):
        idx = [k for k, t in pivots if t == kind]
        for a, b in itertools.pairwise(idx):
            counts[kind][0 if c[b] > c[a] else 1] += 1
    total = sum(counts["H"]) + sum(counts["L"])
    return 0.5 if total == 0 else 1.0 - (counts["H"][0] + counts["L"][0]) / total


def _components(c: np.ndarray, h: np.ndarray, lo: np.ndarray, v: np.ndarray, atr: np.ndarray) -> dict[str, float]:
    if len(c) < 10:
        return dict.fromkeys(("slow", "structure", "participation", "compression"), 0.5)
    e250, e333 = _ema(c, 250), _ema(c, 333)
    sw = min(20, len(c))
    ema_part = (_normalised_slope(e250[-sw:], min(10, sw)) + _normalised_slope(e333[-sw:], min(10, sw))) / 2.0
    rsi = _simple_rsi_values(c)
    adx = _adx(h, lo, c)
    slow = (
        _sigmoid(1000.0 * ema_part)
        + (_sigmoid(_slope_last(rsi, 10) / 5.0) if len(rsi) >= 10 else 0.5)
        + (_sigmoid(_slope_last(adx, 10) / 2.0) if len(adx) >= 10 else 0.5)
    ) / 3.0
    av = _avwap(c, v)
    participation = _sigmoid(-1000.0 * _slope_last(av, 10) / max(float(av[-1]), 1e-9))
    compression = 0.5
    if len(c) >= 144:
        e144 = _ema(c, 144)
        sep144 = (e144[-10:] - e333[-10:]) / np.maximum(e333[-10:], 1e-9)
        sep250 = (e250[-10:] - e333[-10:]) / np.maximum(e333[-10:], 1e-9)
        compression = _sigmoid(-100.0 * (_slope_last(sep144, 10) + _slope_last(sep250, 10)) / 2.0)
    return {
        "slow": slow,
        "structure": _structure(c, _swings(c, atr, h, lo)),
        "participation": participation,
        "compression": compression,
    }


def host_edx(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, lengths: list[int]
) -> tuple[float, dict[str, Any]]:
    """EDX of the host on the fetched bars (from the S3 start bar, at most 500) with window ``lengths``."""
    from regime_tasks.core.uptrend import clamp, combine_windows

    if len(close) < 10:
        return 0.5, {"fetched": len(close), "windows": []}
    atr = _atr(high, low, close)
    effective = [min(k, len(close)) for k in lengths]
    per_length: dict[int, dict[str, float]] = {}
    for k in set(effective):  # on 1d the three windows are usually all the fetched bars
        s = slice(len(close) - k, None)
        per_length[k] = _components(close[s], high[s], low[s], np.maximum(volume[s], 0.0), atr[s])
    comps = [per_length[k] for k in effective]
    combined = {name: combine_windows([c[name] for c in comps]) for name in comps[0]}
    edx = clamp(
        0.30 * combined["slow"]
        + 0.25 * combined["structure"]
        + 0.20 * combined["participation"]
        + 0.10 * combined["compression"]
    )
    return edx, {"fetched": len(close), "windows": effective, "components": combined}
