"""Uptrend Engine v4: the single-timeframe trend-state machine of ``docs/spec/uptrend_engine_v4.md``.

One step per closed bar: ``step(history, i, prev_payload, settings)`` reads the TA of bar ``i`` (and, for EDX
and S/R levels, the bars before it) plus the previous bar's payload, and returns the new payload and, on a state
change, the ``uptrend_state_change`` event. The replay path (TA once over the history, :func:`run_engine_frame`
steps every bar) and the live path (``core/live.py``: a history that grows one bar at a time, then ``step`` for
the new bar) call the same ``step`` on the same TA values, so they cannot disagree (tests/core/test_live.py).
EDX windows use prefix sums, so a long S3 episode costs O(1) per bar, not O(episode length).

Interpretations where the spec is terse (each documented in docs/ENGINE.md):
- Bars since S3 start ``n`` counts bars of the series' own timeframe; W1 is the last ``n`` bars.
- ``slope10(X over the window)`` is the least-squares slope of X over the whole window (points per bar);
  the EMA250/EMA333 *normalised* slopes are that slope divided by the latest EMA value.
- The above-EMA333 episode (for rebuy) is the run of consecutive S2/S3 bars.
- A step only computes the checks of the state it ends in (S0→S1 runs the S1 buy check; S2→S3 the S3 checks;
  the S1→S2 bar runs no S2 check because the spec names none; the S2→S1 bar runs no S1 buy check, spec §3).
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from regime_tasks.core.constants import MIN_BARS_FOR_STATE, STATES, WARMING_UP
from regime_tasks.core.payloads import EngineMeta, EnginePayload
from regime_tasks.core.ta import NEVER, Pivot, sr_levels, swing_pivots

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


# --- history with prefix sums ------------------------------------------------------------------------------
class EngineHistory:
    """The TA frame as arrays, plus prefix sums for O(1) window regressions and AVWAP, and pivot versions."""

    _block: np.ndarray | None = None  # the frame's float block (a live history keeps growing buffers instead)
    _rows: tuple[list[float], ...] = ()  # rows _rows_from.. of the block as Python floats (a replay reads in order)
    _rows_from = -1

    def __init__(
        self,
        ta_frame: pd.DataFrame,
        settings: EngineSettings,
        *,
        first_step: int = 0,
        filled: np.ndarray | None = None,
    ) -> None:
        self._stamps: dict[int, str] = {}  # formatted lazily: a live step needs one, a replay all
        self.index = ta_frame.index
        # the grid's filled flags (bars carried forward over a gap), for the TA payload's ``filled_bars``
        self.filled = np.zeros(len(ta_frame), dtype=bool) if filled is None else np.asarray(filled, dtype=bool)
        self.first_step = first_step  # the first bar the runner will step: earlier bars are history only
        self.n = len(ta_frame)
        numeric = ta_frame.drop(columns="filled") if "filled" in ta_frame.columns else ta_frame
        block = numeric.to_numpy(dtype=np.float64)  # a view when the frame is one float block (compute_ta_frame)
        self.cols = {str(c): block[:, j] for j, c in enumerate(numeric.columns)}
        self._block = block  # its rows become Python floats on first use by values()
        self.price = self.cols["close"]
        self._prefix: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
        for name in ("ema250", "ema333", "rsi", "adx"):
            self._prefix[name] = self._make_prefix(self.cols[name])
        self.defined_from = self.first_defined(self.cols, self.n)
        vol = self.cols["volume"]
        self.has_volume = bool(np.any(vol > 0))
        self.cum_v = np.cumsum(vol)
        self.cum_cv = np.cumsum(self.price * vol)
        ratio144 = (self.cols["ema144"] - self.cols["ema333"]) / self.cols["ema333"]
        ratio250 = (self.cols["ema250"] - self.cols["ema333"]) / self.cols["ema333"]
        from regime_tasks.core.ta import ls_slope

        self.compression_slope = (ls_slope(ratio144) + ls_slope(ratio250)) / 2.0

    @property
    def index(self) -> pd.DatetimeIndex:
        """Open times of the bars."""
        return self._frame_index

    @index.setter
    def index(self, value: pd.DatetimeIndex) -> None:
        self._frame_index = value
        self._ns = value.as_unit("ns").asi8  # bar open times as int64 ns: bar counts without Timestamps
        self._stamps = {}

    def host_vo_z(self, i: int) -> float:
        """The host TA's volume z-score of bar ``i`` (``inputs = as_run``): its EWMA (N = 64, mean seeded with the
        first value, variance with 0) includes bar ``i`` itself, where ``vo_z`` compares the bar with the bars
        before it; clipped to [−4, 6], 0 without volume. Recomputed when the history has grown (a live one)."""
        cached = getattr(self, "_host_vo_z", None)
        if cached is None or len(cached) != self.n:
            vol = np.clip(self.cols["volume"][: self.n], 0.0, None)
            if not np.any(vol > 0):
                cached = np.zeros(self.n)
            else:
                alpha = 2.0 / 65.0
                x = np.log1p(vol)
                mean = pd.Series(x).ewm(alpha=alpha, adjust=False).mean().to_numpy()
                # var_t = (1 − α)·var_{t−1} + α·(1 − α)²·(x_t − mean_{t−1})², var_0 = 0: an EWMA of that term
                term = np.concatenate([[0.0], (1.0 - alpha) ** 2 * (x[1:] - mean[:-1]) ** 2])
                var = pd.Series(term).ewm(alpha=alpha, adjust=False).mean().to_numpy()
                cached = np.clip((x - mean) / np.sqrt(np.maximum(var, 1e-12)), -4.0, 6.0)
            self._host_vo_z = cached
        return float(cached[i])

    @functools.cached_property
    def bar_seconds(self) -> float:
        """The series' bar length in seconds: the smallest spacing of its rows (rows kept as given may have gaps)."""
        if self.n < 2:
            return 0.0
        return float(np.diff(self.index.as_unit("ns").asi8).min()) / 1e9

    @functools.cached_property
    def pivots(self) -> list[Pivot]:
        """Every pivot version of the frame (see ``swing_pivots``), computed on first use: EDX structure needs
        them whatever the S/R setting, S/R levels only under "swing"; bars in S0/S4 need neither."""
        # a live step (only the last bar) needs the final pivots; stepping more bars needs every version
        live = self.first_step >= self.n - 1
        pivots = swing_pivots(self.cols["high"], self.cols["low"], self.cols["atr"], keep_versions=not live)
        self._piv_conf = np.array([p.confirmed_at for p in pivots], dtype=np.int64)
        self._piv_sup = np.array([p.superseded_at for p in pivots], dtype=np.int64)
        self._piv_idx = [p.index for p in pivots]
        # the known set follows the bars: at bar t the versions confirmed at t join it, those superseded at t
        # leave it (events by bar, built once, vectorised), so a replay pays O(changes) per bar, not O(versions)
        self._joins = _events_by_bar(self._piv_conf, self.n)
        self._leaves = _events_by_bar(self._piv_sup, self.n)
        self._known: list[int] = []  # positions in ``pivots`` (sorted by index, confirmed_at) known at _known_t
        self._known_t = -1
        return pivots

    @staticmethod
    def first_defined(cols: Mapping[str, np.ndarray], n: int) -> int:
        """First bar from which EMA250, EMA333, RSI and ADX are all defined (EDX windows start there at the
        earliest: a window reaching into the warm-up would read placeholders)."""
        first = 0
        for name in ("ema250", "ema333", "rsi", "adx"):
            finite = np.flatnonzero(np.isfinite(cols[name][:n]))
            first = max(first, int(finite[0]) if len(finite) else n)
        return first

    @staticmethod
    def _make_prefix(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        finite = np.isfinite(y)
        ref = float(y[finite][0]) if finite.any() else 0.0
        yc = np.where(finite, y - ref, 0.0)
        k = np.arange(len(y), dtype=np.float64)
        return np.concatenate([[0.0], np.cumsum(yc)]), np.concatenate([[0.0], np.cumsum(k * yc)]), ref

    def stamp(self, i: int) -> str:
        """ISO-8601 UTC open time of bar ``i``."""
        s = self._stamps.get(i)
        if s is None:
            if self.n - self.first_step > 1:  # a replay: the next ROW_CHUNK bars in one call (bounded memory)
                # only bars held (a live history's buffer runs past its newest bar)
                self._stamps = dict(enumerate(format_stamps(self._ns[i : min(i + ROW_CHUNK, self.n)]), start=i))
                s = self._stamps[i]
            else:
                s = format_stamps(self._ns[i : i + 1])[0]
                self._stamps[i] = s
        return s

    def window_slope(self, name: str, start: int, end: int) -> float:
        """Least-squares slope (per bar) of column ``name`` over bars ``start..end`` inclusive, O(1)."""
        p0, p1, _ = self._prefix[name]
        n = end - start + 1
        if n < 2:
            return math.nan
        sy = p0[end + 1] - p0[start]
        sky = p1[end + 1] - p1[start]
        sxy = sky - start * sy  # Σ (k − start)·y
        sx = n * (n - 1) / 2.0
        sxx = (n - 1) * n * (2 * n - 1) / 6.0
        return (n * sxy - sx * sy) / (n * sxx - sx * sx)

    def avwaps(self, anchor: int, first: int, last: int) -> np.ndarray:
        """``avwap(anchor, k)`` for k = first..last as one array (the same operations, vectorised)."""
        base_v = self.cum_v[anchor - 1] if anchor > 0 else 0.0
        base_cv = self.cum_cv[anchor - 1] if anchor > 0 else 0.0
        v = self.cum_v[first : last + 1] - base_v
        cv = self.cum_cv[first : last + 1] - base_cv
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(v > 0, cv / v, math.nan)

    def avwap(self, anchor: int, at: int) -> float:
        v = self.cum_v[at] - (self.cum_v[anchor - 1] if anchor > 0 else 0.0)
        cv = self.cum_cv[at] - (self.cum_cv[anchor - 1] if anchor > 0 else 0.0)
        return cv / v if v > 0 else math.nan

    def pivots_at(self, t: int, start: int = 0) -> list[Pivot]:
        """Pivots known at bar t (confirmed, not superseded) with index ≥ start."""
        if t < self.first_step:
            raise ValueError(f"pivots at bar {t} requested from a history that steps from bar {self.first_step}")
        pivots = self.pivots
        known = self._known_positions(t)
        first = bisect.bisect_left(known, start, key=self._piv_idx.__getitem__) if start > 0 else 0
        return [pivots[j] for j in known[first:]]

    def _known_positions(self, t: int) -> list[int]:
        """Positions (in ``pivots``) of the versions known at bar ``t``, ascending: moved forward from the
        last bar asked for; asked for an earlier bar, it starts again from bar 0."""
        if t < self._known_t:
            self._known, self._known_t = [], -1
        known = self._known
        for b in range(self._known_t + 1, t + 1):
            for j in self._joins.get(b, ()):
                bisect.insort(known, j)
            for j in self._leaves.get(b, ()):
                del known[bisect.bisect_left(known, j)]
        self._known_t = max(self._known_t, t)
        return known

    def levels_at(self, i: int, price: float, atr: float, mode: str) -> list[dict[str, float]]:
        """S/R levels (spec §7) from the pivots known at bar ``i`` within the last 3,000 bars; none under ``none``."""
        if mode == "none" or not (atr > 0):
            return []
        return sr_levels(self.pivots_at(i, start=max(0, i - 2999)), price, atr)

    def values(self, i: int) -> dict[str, float]:
        """Every column of bar ``i`` as Python floats, plus ``price`` (= close)."""
        if self._block is not None and self.n - self.first_step > 1:  # a replay reads every row in order
            k = i - self._rows_from
            if not 0 <= k < len(self._rows):  # convert the next chunk at once (bounded memory on long files)
                self._names = list(self.cols)
                self._rows_from, k = i, 0
                self._rows = tuple(self._block[i : i + ROW_CHUNK].tolist())
            v = dict(zip(self._names, self._rows[k], strict=True))
        else:
            v = {k: float(arr[i]) for k, arr in self.cols.items()}
        v["price"] = v["close"]
        return v


def format_stamps(ns: np.ndarray) -> list[str]:
    """ISO-8601 UTC strings (``…T…Z``, whole seconds) of int64 nanosecond times, vectorised."""
    text = np.datetime_as_string(np.asarray(ns, dtype=np.int64).astype("datetime64[ns]"), unit="s").tolist()
    return [t + "Z" for t in text]


@functools.lru_cache(maxsize=4096)
def _parse_ns(ts: str) -> int:
    """Nanoseconds since the epoch of an ISO time (an episode start is parsed once, not once per bar)."""
    return int(pd.Timestamp(ts).value)


def _events_by_bar(bars: np.ndarray, n: int) -> dict[int, list[int]]:
    """``{bar: [positions whose bar it is]}`` for the positions whose bar falls inside ``0..n−1``."""
    inside = np.flatnonzero(bars < n)
    out: dict[int, list[int]] = {}
    for j, b in zip(inside.tolist(), bars[inside].tolist(), strict=True):
        out.setdefault(b, []).append(j)
    return out


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
    e250, e333 = h.cols["ema250"][t], h.cols["ema333"][t]
    norm = (h.window_slope("ema250", s, t) / e250 + h.window_slope("ema333", s, t) / e333) / 2.0
    slow = (
        sigmoid(1000.0 * norm) + sigmoid(h.window_slope("rsi", s, t) / 5.0) + sigmoid(h.window_slope("adx", s, t) / 2.0)
    ) / 3.0
    structure = _structure(h.pivots_at(t, start=s))
    if h.has_volume:
        av_arr = h.avwaps(s, max(s, t - 9), t)
        if len(av_arr) >= 2 and np.all(np.isfinite(av_arr)) and av_arr[-1] > 0:
            x = np.arange(len(av_arr)) - (len(av_arr) - 1) / 2.0
            slope = float(np.sum(x * av_arr) / np.sum(x * x))
            participation = sigmoid(-1000.0 * slope / av_arr[-1])
        else:
            participation = 0.5
    else:
        participation = 0.5
    comp = h.compression_slope[t]
    compression = sigmoid(-100.0 * comp) if length >= 144 and math.isfinite(comp) else 0.5
    return {"slow": slow, "structure": structure, "participation": participation, "compression": compression}


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
    prev_meta = dict(prev.get("meta") or {}) if prev else {}
    ema = {k: v[k] for k in EMA_KEYS}
    base: dict[str, Any] = {
        "state": WARMING_UP,
        "prev_state": prev_state,
        "bar_ts": bar_ts,
        "price": v["price"],
        "ema": {k: _json_num(v[k]) for k in (*EMA_KEYS, "ema50")},
        "buy_signal": False,
        "buy_flag": False,
        "rebuy_flag": False,
        "trim_flag": False,
        "emergency_exit": False,
        "reclaimed_ema333": False,
        "exit_position": False,
        "exit_reason": None,
        "scores": {"ts": None, "ts_with_boost": None, "sr_boost": None, "ox": None, "dx": None, "edx": None},
        "diagnostics": {},
        "meta": {"s3_start_ts": None, "trimmed_in_episode": False, "bars_since_s3": None, "episode_start_ts": None},
    }
    if i + 1 < MIN_BARS_FOR_STATE or any(math.isnan(x) for x in ema.values()) or math.isnan(v["atr"]):
        base["diagnostics"] = {"warming_up": {"bars": i + 1, "needed": MIN_BARS_FOR_STATE}} if diagnostics else None
        return base, None

    prev_known = prev_state if prev_state in STATES else None
    order = {
        "s3_order": s3_order(ema),
        "s0_order": s0_order(ema),
        "fast_band_above_60": fast_band_above_60(ema),
        "all_below_333": all_below_333(ema),
        "price_above_ema60": v["price"] > v["ema60"],
        "price_above_ema333": v["price"] > v["ema333"],
    }
    diag: dict[str, Any] = {"order": order}
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
    if prev_known in (None, "S4"):  # bootstrap and S4 follow the same rule (S3 only under "spec")
        if settings.bootstrap == "spec" and order["s3_order"]:
            state = "S3"
        elif order["s0_order"]:
            state = "S0"
        else:
            state = "S4"
        if prev_known is None:
            diag["transition"] = f"bootstrap ({settings.bootstrap})"
    elif prev_known == "S0":
        state = "S1" if order["fast_band_above_60"] and order["price_above_ema60"] else "S0"
    elif prev_known == "S1":
        if order["s0_order"]:
            state = "S0"
            flags["exit_position"] = flags["emergency_exit"] = True
            exit_reason = "s1_to_s0_bearish_order"
        elif order["price_above_ema333"]:
            state = "S2"
        else:
            state = "S1"
    elif prev_known == "S2":
        if v["price"] < v["ema333"]:
            state = "S1"
        elif order["s3_order"]:
            state = "S3"
        else:
            state = "S2"
    else:  # S3
        if order["all_below_333"]:
            state = "S0"
            flags["exit_position"] = True
            exit_reason = "all_emas_below_333"
        else:
            state = "S3"

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
    levels = h.levels_at(i, v["price"], v["atr"], settings.sr_levels) if state in ("S1", "S2", "S3") else []
    scores: dict[str, Any] = {"ts": ts, "ts_with_boost": None, "sr_boost": None, "ox": None, "dx": None, "edx": None}
    diag["ts"] = {
        "rsi_slope_10": _json_num(vs["rsi_slope_10"]),
        "adx_slope_10": _json_num(vs["adx_slope_10"]),
        "ts": ts,
        "inputs": settings.inputs,
    }
    diag["sr_levels"] = levels

    # the S1 buy check runs on the S0→S1 bar and every S1 bar, but not on the bar that drops from S2 to S1: the
    # host never sets buy_signal there (spec §3, S1)
    run_s1 = state == "S1" and prev_known != "S2"
    run_s2 = state == "S2" and prev_known == "S2"
    run_s3 = state == "S3"

    if run_s1:
        boost = sr_boost(v["ema60"], levels, atr)
        near = abs(v["price"] - v["ema60"]) <= 1.0 * atr
        slope_ok = v["ema60_slope"] > 0 or v["ema144_slope"] >= 0
        strength_ok = ts + boost >= BUY_THRESHOLD
        flags["buy_signal"] = near and slope_ok and strength_ok
        scores.update(sr_boost=boost, ts_with_boost=ts + boost)
        diag["s1_buy"] = {
            "near_ema60": near,
            "distance_atr": abs(v["price"] - v["ema60"]) / atr,
            "slope_ok": slope_ok,
            "ema60_slope": v["ema60_slope"],
            "ema144_slope": v["ema144_slope"],
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
            diag["edx"] = edx_diag
            ox = clamp(ob * (1.0 + 0.33 * clamp(edx - 0.5, 0.0, 0.5)))
            scores["edx"] = edx
        else:
            ox = clamp(ob)
        scores["ox"] = ox
        diag["ox"] = {**ox_parts, "ox_base": ob}
        near_level = [lv for lv in levels if abs(v["price"] - lv["price"]) <= 1.0 * atr]
        flags["trim_flag"] = ox >= TRIM_OX and bool(near_level)
        diag["trim"] = {
            "ox": ox,
            "ox_ok": ox >= TRIM_OX,
            "levels_within_1atr": len(near_level),
            "result": flags["trim_flag"],
        }
        boost = sr_boost(v["ema333"], levels, atr)
        # the slow-EMA slope gate; the host read the S3 DX-buy gate's inputs as 0 (the S2 retest's right)
        host_s3 = run_s3 and settings.inputs == "as_run"
        gate: dict[str, Any]  # numbers for the check, then their JSON form (None for NaN) for the diagnostics
        gate = dict.fromkeys(HOST_MISREAD_S3_GATE, 0.0) if host_s3 else {k: v[k] for k in HOST_MISREAD_S3_GATE}
        slope_ok = gate["ema250_slope"] > 0 or gate["ema333_slope"] >= 0
        gate = {k: _json_num(x) for k, x in gate.items()}
        strength_ok = ts + boost >= BUY_THRESHOLD
        scores.update(sr_boost=boost, ts_with_boost=ts + boost)
        if run_s2:
            near = abs(v["price"] - v["ema333"]) <= 0.5 * atr
            flags["buy_flag"] = near and slope_ok and strength_ok
            diag["s2_retest_buy"] = {
                "near_ema333": near,
                "distance_atr": abs(v["price"] - v["ema333"]) / atr,
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
            diag["s3_dx_buy"] = {
                "discount_zone": discount,
                **gate,
                "slope_ok": slope_ok,
                "ts_plus_boost": ts + boost,
                "strength_ok": strength_ok,
                "emergency_exit": flags["emergency_exit"],
                "dx": dx,
                "threshold": threshold,
                **thr_parts,
                "dx_parts": dx_parts,
                "result": flags["buy_flag"],
            }
        flags["rebuy_flag"] = flags["buy_flag"] and trimmed_before
        if flags["trim_flag"]:
            meta["trimmed_in_episode"] = True
        diag["rebuy"] = {
            "buy_flag": flags["buy_flag"],
            "trimmed_earlier_in_episode": trimmed_before,
            "result": flags["rebuy_flag"],
        }

    if state == "S1" and not run_s1:
        diag["s1_buy"] = {"result": False, "why": "not checked on the S2→S1 bar"}
    for name in ("s1_buy", "s2_retest_buy", "s3_dx_buy", "trim", "rebuy"):
        diag.setdefault(name, {"result": False, "why": f"not checked in {state}"})

    payload = {
        **base,
        "state": state,
        "buy_signal": flags["buy_signal"],
        "buy_flag": flags["buy_flag"],
        "rebuy_flag": flags["rebuy_flag"],
        "trim_flag": flags["trim_flag"],
        "emergency_exit": flags["emergency_exit"],
        "reclaimed_ema333": flags["reclaimed_ema333"],
        "exit_position": flags["exit_position"],
        "exit_reason": exit_reason,
        "scores": {k: _json_num(x) if isinstance(x, float) else x for k, x in scores.items()},
        "diagnostics": _clean(diag) if diagnostics else None,
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


_PLAIN = frozenset({bool, int, str, type(None)})


def _clean(obj: Any) -> Any:
    """JSON-ready copy: NaN/inf → None, numpy scalars → Python. Dispatches on the exact type first (the
    diagnostics of a replayed bar hold a few hundred values); anything else takes the general path."""
    t = type(obj)
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is dict:
        return {k: _clean(x) for k, x in obj.items()}
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


# --- runners --------------------------------------------------------------------------------------------------
Diagnostics = Literal["all", "last", "none"]


def iter_engine_frame(
    ta_frame: pd.DataFrame,
    settings: EngineSettings | None = None,
    *,
    prev_payload: Mapping[str, Any] | None = None,
    start_at: pd.Timestamp | None = None,
    diagnostics: Diagnostics = "all",
) -> Iterator[tuple[EnginePayload, dict[str, Any] | None]]:
    """(payload, state-change event or None) of each stepped bar of ``ta_frame``, one at a time, so a caller
    that reduces them (a replay's rows, a printed line per bar) holds one payload, not the whole series.

    ``diagnostics``: build ``payload["diagnostics"]`` for every bar (``all``), only the last bar of the frame
    (``last``: what the bootstrap stores) or none (``none``: a replay's per-bar rows never read them); the
    other fields do not depend on it. The rest as :func:`run_engine_frame`.
    """
    settings = settings or EngineSettings()
    if ta_frame.empty:
        return
    first = 0 if start_at is None else int(ta_frame.index.searchsorted(pd.Timestamp(start_at)))
    h = EngineHistory(ta_frame, settings, first_step=first)
    prev = dict(prev_payload) if prev_payload else None
    last = h.n - 1
    for i in range(first, h.n):
        diag = diagnostics == "all" or (diagnostics == "last" and i == last)
        payload, event = step(h, i, prev, settings, diagnostics=diag)
        yield cast("EnginePayload", payload), event
        prev = payload


def run_engine_frame(
    ta_frame: pd.DataFrame,
    settings: EngineSettings | None = None,
    *,
    prev_payload: Mapping[str, Any] | None = None,
    start_at: pd.Timestamp | None = None,
    diagnostics: Diagnostics = "all",
) -> tuple[list[EnginePayload], list[dict[str, Any]]]:
    """Step the engine over ``ta_frame`` (from ``compute_ta_frame`` on grid-filled bars).

    ``start_at``: the first bar to step (earlier rows are history only); ``prev_payload``: the payload of the bar
    before it; ``diagnostics``: see :func:`iter_engine_frame`. Returns the payloads of the stepped bars and the
    state-change events among them.
    """
    payloads, events = [], []
    for payload, event in iter_engine_frame(
        ta_frame, settings, prev_payload=prev_payload, start_at=start_at, diagnostics=diagnostics
    ):
        payloads.append(payload)
        if event is not None:
            events.append(event)
    # step() builds each payload as a plain dict; tests/core/test_payloads.py checks it has EnginePayload's shape
    return cast("list[EnginePayload]", payloads), events


__all__ = [
    "NEVER",
    "EngineHistory",
    "EngineSettings",
    "dx_score",
    "dx_threshold",
    "edx_score",
    "iter_engine_frame",
    "ox_base",
    "run_engine_frame",
    "sr_boost",
    "step",
    "trend_strength",
]
