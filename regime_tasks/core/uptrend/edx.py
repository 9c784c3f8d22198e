"""EDX, trend decay since the S3 start (spec §4), and the bar counts it reads."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.ta import Pivot
from regime_tasks.core.uptrend.history import EngineHistory, _parse_ns
from regime_tasks.core.uptrend.scores import clamp, combine_windows, sigmoid


# --- EDX (spec §4) ---------------------------------------------------------------------------------------------
def _structure(pivots: list[Pivot]) -> float:
    if len(pivots) < 4:
        return 0.5
    highs = [p.price for p in pivots if p.kind == "high"]
    lows = [p.price for p in pivots if p.kind == "low"]
    hh = sum(1 for a, b in itertools.pairwise(highs) if b > a)
    lh = sum(1 for a, b in itertools.pairwise(highs) if b < a)
    hl = sum(1 for a, b in itertools.pairwise(lows) if b > a)
    ll = sum(1 for a, b in itertools.pairwise(lows) if b < a)
    total = hh + lh + hl + ll
    return 0.5 if total == 0 else 1.0 - (hh + hl) / total


def _window_components(h: EngineHistory, t: int, length: int) -> dict[str, float]:
    if length < 10:
        return {"slow": 0.5, "structure": 0.5, "participation": 0.5, "compression": 0.5}
    s = t - length + 1
    e250, e333 = h.cols["ema250"].item(t), h.cols["ema333"].item(t)
    norm = (h.window_slope("ema250", s, t) / e250 + h.window_slope("ema333", s, t) / e333) / 2.0
    slow = (
        sigmoid(1000.0 * norm) + sigmoid(h.window_slope("rsi", s, t) / 5.0) + sigmoid(h.window_slope("adx", s, t) / 2.0)
    ) / 3.0
    structure = h.structure(t, s)
    if structure is None:  # a history without running counts (a live one)
        structure = _structure(h.pivots_at(t, start=s))
    participation = _participation(h, s, t) if h.has_volume else 0.5
    comp = h.compression_slope.item(t)
    compression = sigmoid(-100.0 * comp) if length >= 144 and math.isfinite(comp) else 0.5
    return {"slow": slow, "structure": structure, "participation": participation, "compression": compression}


_X10 = [k - 4.5 for k in range(10)]  # np.arange(10) − 4.5
_SUM_X10_SQ = 82.5  # np.sum(_X10²), exact


def _participation(h: EngineHistory, s: int, t: int) -> float:
    """σ(−1000 · slope / last) of the AVWAP anchored at ``s`` over the last 10 bars to ``t`` (0.5 when one of
    them is undefined). A window is at least 10 bars long, so there are always 10 points; in Python floats with
    numpy's summation order for 10 values (``np.sum``: eight pairwise partial sums, then the last two added)."""
    first = max(s, t - 9)
    if t - first != 9:  # not reached (windows are ≥ 10 bars); the general form
        av_arr = h.avwaps(s, first, t)
        if len(av_arr) >= 2 and np.all(np.isfinite(av_arr)) and av_arr[-1] > 0:
            x = np.arange(len(av_arr)) - (len(av_arr) - 1) / 2.0
            return sigmoid(-1000.0 * float(np.sum(x * av_arr) / np.sum(x * x)) / av_arr[-1])
        return 0.5
    base_v = h.cum_v.item(s - 1) if s > 0 else 0.0
    base_cv = h.cum_cv.item(s - 1) if s > 0 else 0.0
    av = []
    for v, cv in zip(h.cum_v[first : t + 1].tolist(), h.cum_cv[first : t + 1].tolist(), strict=True):
        v -= base_v
        if not v > 0:
            return 0.5
        a = (cv - base_cv) / v
        if not math.isfinite(a):
            return 0.5
        av.append(a)
    last = av[9]
    if not last > 0:
        return 0.5
    w = [x * a for x, a in zip(_X10, av, strict=True)]
    total = ((w[0] + w[1]) + (w[2] + w[3])) + ((w[4] + w[5]) + (w[6] + w[7]))
    total += w[8]
    total += w[9]
    return sigmoid(-1000.0 * (total / _SUM_X10_SQ) / last)


def edx_score(h: EngineHistory, t: int, bars_since_s3: int, since: int | None = None) -> tuple[float, dict[str, Any]]:
    """EDX (trend decay since S3 start) with the per-window components (spec §4).

    ``since``: the first bar a window may read (the host's ``edx_1d_count = as_run``: it fetched the bars from the
    S3 start on, so a window longer than those is all of them; fewer than 10 give 0.5, as the host's did).
    """
    # an episode older than the history (a live window) uses the bars whose slow inputs are all defined
    n = min(bars_since_s3, t + 1 - h.defined_from)
    if n < 10:
        return 0.5, {"n": n, "windows": []}
    lengths = [n]
    if (2 * n) // 3 >= 10:
        lengths.append((2 * n) // 3)
        if n // 3 >= 10:
            lengths.append(n // 3)
    if since is not None:
        available = t + 1 - max(since, h.defined_from)
        if available < 10:
            return 0.5, {"n": n, "windows": [], "available": available}
        lengths = [min(length, available) for length in lengths]
    comps = [_window_components(h, t, length) for length in lengths]
    combined = {
        k: combine_windows([c[k] for c in comps]) for k in ("slow", "structure", "participation", "compression")
    }
    edx = clamp(
        0.30 * combined["slow"]
        + 0.25 * combined["structure"]
        + 0.20 * combined["participation"]
        + 0.10 * combined["compression"]
    )
    return edx, {"n": n, "windows": lengths, "components": combined}


def _host_edx_at(
    h: EngineHistory, i: int, s3_start_ts: str | None, prev_edx: float | None
) -> tuple[float, dict[str, Any]]:
    """The host's EDX at bar ``i`` (``edx = as_run``): windows sized by the time since the S3 start, read from the
    bars from the S3 start bar on, at most the first 500."""
    from regime_tasks.core.host_edx import HOST_FETCH_LIMIT, host_edx, host_window_lengths

    start = pd.Timestamp(s3_start_ts)
    lengths = host_window_lengths((h.index[i] - start).total_seconds(), h.bar_seconds)
    if lengths is None:
        return 0.5, {"windows": [], "why": "fewer than 10 bars since the S3 start"}
    pos = int(h.index.searchsorted(start))
    if pos > i or h.index[pos] != start:  # the S3 start is older than the bars at hand (a live window)
        if prev_edx is None:
            return 0.5, {"windows": [], "why": "the S3 start bar is not in the history"}
        return float(prev_edx), {"windows": [], "frozen": "the S3 start bar is not in the history"}
    end = min(i, pos + HOST_FETCH_LIMIT - 1)
    if end < i and prev_edx is not None:
        # same fetched bars as the previous bar, and windows that cover them all on both bars: the same EDX
        prev_lengths = host_window_lengths((h.index[i - 1] - start).total_seconds(), h.bar_seconds)
        if prev_lengths and min(prev_lengths) >= HOST_FETCH_LIMIT:
            return float(prev_edx), {"windows": [HOST_FETCH_LIMIT] * len(lengths), "frozen": "first 500 bars"}
    cols = h.cols
    rows = slice(pos, end + 1)
    return host_edx(cols["high"][rows], cols["low"][rows], cols["close"][rows], cols["volume"][rows], lengths)


def _bars_between(h: EngineHistory, start_ts: str | None, i: int) -> int:
    """Bars from ``start_ts`` to bar ``i``: rows when the start is a row (bars kept with gaps count as the host
    counted them), else — an episode older than the history — its length in bar periods. On int64 times: the
    start is parsed once per episode, not once per bar."""
    if start_ts is None:
        return 0
    start = _parse_ns(start_ts)
    ns = h._ns
    pos = int(np.searchsorted(ns[: h.n], start))
    if pos <= i and ns[pos] == start:
        return i - pos
    step_ns = h.bar_seconds * 1e9 or 1
    return max(0, round(int(ns[i] - start) / step_ns))
