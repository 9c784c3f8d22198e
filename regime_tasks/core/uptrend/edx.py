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
    if since is None and h._replay:  # a replay: the episode's windows computed ahead, a block of bars at once
        ahead = _edx_ahead(h, t, bars_since_s3)
        if ahead is not None:
            return ahead
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
    return _edx_of(combined), {"n": n, "windows": lengths, "components": combined}


def _edx_of(combined: dict[str, float]) -> float:
    """EDX from the windows' combined components (the spec's weights): one formula for both paths."""
    return clamp(
        0.30 * combined["slow"]
        + 0.25 * combined["structure"]
        + 0.20 * combined["participation"]
        + 0.10 * combined["compression"]
    )


EDX_AHEAD_MIN, EDX_AHEAD_MAX = 64, 1_024  # bars of an S3 episode whose EDX windows a replay computes at once
EDX_AHEAD_MAX_N = 100_000  # longer episodes take the bar-by-bar path (n·(n−1)·(2n−1) stays exact in int64 below)


class _EdxAhead:
    """EDX inputs of bars ``t0 .. t1 − 1`` of an S3 episode whose bar count is ``t − anchor`` (the episode goes on
    through the block; a bar whose count differs is not read from it): per bar the window lengths and the
    slow, participation and compression components combined over the windows. Structure depends on the pivots
    known at each bar and is added bar by bar (``EngineHistory.structure``)."""

    def __init__(self, h: EngineHistory, anchor: int, t0: int, t1: int) -> None:
        self.anchor, self.t0, self.t1 = anchor, t0, t1
        t = np.arange(t0, t1)
        n = np.minimum(t - anchor, t + 1 - h.defined_from)  # as edx_score
        lengths = [n, (2 * n) // 3, n // 3]
        has = [n >= 10]
        has.append(has[0] & (lengths[1] >= 10))
        has.append(has[1] & (lengths[2] >= 10))
        parts = {k: [np.full(len(t), 0.5) for _ in range(3)] for k in ("slow", "participation", "compression")}
        for w in range(3):
            rows = np.flatnonzero(has[w])
            if len(rows):
                slow, part, comp = _window_parts(h, t[rows], lengths[w][rows])
                parts["slow"][w][rows], parts["participation"][w][rows] = slow, part
                parts["compression"][w][rows] = comp
        k = has[0].astype(int) + has[1] + has[2]
        combined = {name: _combine(values, k).tolist() for name, values in parts.items()}
        self.slow, self.participation, self.compression = (
            combined["slow"],
            combined["participation"],
            combined["compression"],
        )
        self.n = n.tolist()
        cols = [x.tolist() for x in lengths]
        self.lengths = [
            cols[0][r : r + 1] + cols[1][r : r + 1] * (kr > 1) + cols[2][r : r + 1] * (kr > 2)
            for r, kr in enumerate(k.tolist())
        ]


def _sigmoids(x: np.ndarray) -> np.ndarray:
    """``sigmoid`` of each element, with ``math.exp`` (numpy's ``exp`` may differ in the last bit)."""
    return np.array([sigmoid(v) for v in x.tolist()], dtype=np.float64)


def _window_slopes(h: EngineHistory, name: str, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``EngineHistory.window_slope`` of many windows, the same operations element-wise (windows ≥ 10 bars)."""
    p0, p1, _ = h._prefix[name]
    n = end - start + 1
    sy = p0[end + 1] - p0[start]
    sky = p1[end + 1] - p1[start]
    sxy = sky - start * sy
    sx = n * (n - 1) / 2.0
    sxx = (n - 1) * n * (2 * n - 1) / 6.0
    return (n * sxy - sx * sy) / (n * sxx - sx * sx)


def _window_parts(h: EngineHistory, t: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, ...]:
    """Slow, participation and compression of the windows of ``length`` bars ending at bars ``t``
    (``_window_components`` without the structure, element-wise)."""
    s = t - length + 1
    e250, e333 = h.cols["ema250"][t], h.cols["ema333"][t]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        norm = (_window_slopes(h, "ema250", s, t) / e250 + _window_slopes(h, "ema333", s, t) / e333) / 2.0
        slow = (
            _sigmoids(1000.0 * norm)
            + _sigmoids(_window_slopes(h, "rsi", s, t) / 5.0)
            + _sigmoids(_window_slopes(h, "adx", s, t) / 2.0)
        ) / 3.0
        participation = np.full(len(t), 0.5)
        if h.has_volume:  # as _participation: the AVWAP anchored at s over bars t − 9 .. t
            base_v = np.where(s > 0, h.cum_v[s - 1], 0.0)
            base_cv = np.where(s > 0, h.cum_cv[s - 1], 0.0)
            bars = t[:, None] + np.arange(-9, 1)[None, :]
            v = h.cum_v[bars] - base_v[:, None]
            av = (h.cum_cv[bars] - base_cv[:, None]) / v
            ok = np.all(v > 0, axis=1) & np.all(np.isfinite(av), axis=1) & (av[:, 9] > 0)
            w = np.array(_X10)[None, :] * av
            total = ((w[:, 0] + w[:, 1]) + (w[:, 2] + w[:, 3])) + ((w[:, 4] + w[:, 5]) + (w[:, 6] + w[:, 7]))
            total = total + w[:, 8]
            total = total + w[:, 9]
            rows = np.flatnonzero(ok)
            participation[rows] = _sigmoids(-1000.0 * (total[rows] / _SUM_X10_SQ) / av[rows, 9])
        comp = h.compression_slope[t]
        use = (length >= 144) & np.isfinite(comp)
        compression = np.full(len(t), 0.5)
        compression[use] = _sigmoids(-100.0 * comp[use])
    return slow, participation, compression


def _combine(values: list[np.ndarray], k: np.ndarray) -> np.ndarray:
    """``combine_windows`` of the first ``k`` windows of each bar, element-wise (the same operations)."""
    w1, w2, w3 = values
    two = np.where(w2 > w1, 0.3 * w1 + 0.7 * w2, (w1 + w2) / 2.0)
    three = np.where((w3 > w2) & (w2 > w1), 0.2 * w1 + 0.3 * w2 + 0.5 * w3, two)
    return np.where(k >= 3, three, np.where(k == 2, two, w1))


def _edx_ahead(h: EngineHistory, t: int, bars_since_s3: int) -> tuple[float, dict[str, Any]] | None:
    """EDX of bar ``t`` from the episode's block of bars computed ahead (None: take the bar-by-bar path)."""
    if bars_since_s3 > EDX_AHEAD_MAX_N:
        return None
    anchor = t - bars_since_s3
    block = h._edx_ahead
    if block is None or block.anchor != anchor or not block.t0 <= t < block.t1:
        same = block is not None and block.anchor == anchor and t == block.t1
        size = min(2 * (block.t1 - block.t0), EDX_AHEAD_MAX) if same and block is not None else EDX_AHEAD_MIN
        block = _EdxAhead(h, anchor, t, min(h.n, t + size))
        h._edx_ahead = block
    r = t - block.t0
    n = block.n[r]
    if n < 10:
        return 0.5, {"n": n, "windows": []}
    lengths = block.lengths[r]
    structures = []
    for length in lengths:
        structure = h.structure(t, t - length + 1)
        if structure is None:
            return None
        structures.append(structure)
    combined = {
        "slow": block.slow[r],
        "structure": combine_windows(structures),
        "participation": block.participation[r],
        "compression": block.compression[r],
    }
    return _edx_of(combined), {"n": n, "windows": lengths, "components": combined}


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
