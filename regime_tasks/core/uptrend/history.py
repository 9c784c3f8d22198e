"""The engine's view of a TA frame: arrays, prefix sums for O(1) window regressions and AVWAP, pivot versions."""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.ta import Pivot, sr_levels, swing_pivots
from regime_tasks.core.ta.levels import LevelBlock, level_block
from regime_tasks.core.uptrend.settings import ROW_CHUNK, EngineSettings

SR_LOOKBACK = 3_000  # S/R levels read the pivots of the last 3,000 bars
LEVEL_CHUNK = 2_048  # bars whose S/R levels a replay computes at once (bounded memory on long files)
REPLAY_MIN_STEPS = 64  # from this many stepped bars, S/R levels and EDX structure come from per-series indexes


# --- history with prefix sums ------------------------------------------------------------------------------
class EngineHistory:
    """The TA frame as arrays, plus prefix sums for O(1) window regressions and AVWAP, and pivot versions."""

    _block: np.ndarray | None = None  # the frame's float block (a live history keeps growing buffers instead)
    _rows: tuple[list[float], ...] = ()  # rows _rows_from.. of the block as Python floats (a replay reads in order)
    _rows_from = -1
    _replay = False  # many bars stepped in order: S/R levels by block, EDX structure from running counts
    _levels: LevelBlock | None = None
    _edx_ahead: Any = None  # the S3 episode's EDX inputs computed ahead (uptrend/edx.py)
    _level_numbers: tuple[list[float], list[float], list[int]] = ([], [], [])
    _scalar_levels: tuple[tuple[int, float, float, str] | None, list[dict[str, float]]] = (None, [])

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
        self._replay = self.n - first_step >= REPLAY_MIN_STEPS
        self._bootstrap = settings.bootstrap
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
        self._piv_price = np.array([p.price for p in pivots], dtype=np.float64)
        # a version counts for a bar's S/R levels from its confirmation until it is superseded or too old
        idx = np.array(self._piv_idx, dtype=np.int64)
        self._piv_until = np.minimum(self._piv_sup, idx + SR_LOOKBACK)
        self._piv_high = [p.kind == "high" for p in pivots]
        # the known set follows the bars: at bar t the versions confirmed at t join it, those superseded at t
        # leave it (events sorted by bar, built once, vectorised; arrays, not a dict per bar, for long files), so
        # a replay pays O(changes) per bar, not O(versions)
        self._joins = _events_sorted(self._piv_conf, self.n)
        self._leaves = _events_sorted(self._piv_sup, self.n)
        self._next_join = self._next_leave = 0
        self._known: list[int] = []  # positions in ``pivots`` (sorted by index, confirmed_at) known at _known_t
        self._known_t = -1
        self._dirty = 0  # first position of ``_known`` changed since the structure counts were last brought up
        # structure counts over the known versions, kept in step with ``_known`` (see structure())
        self._below: list[int] = [0]  # highs among known[:q], for q = 0..len(known)
        self._runs: dict[bool, tuple[list[int], list[float], list[int], list[int]]] = {
            kind: ([], [], [0], [0]) for kind in (True, False)
        }  # per kind (high?): bar indexes, prices, and counts of rises and falls up to each element
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
        sy = p0.item(end + 1) - p0.item(start)
        sky = p1.item(end + 1) - p1.item(start)
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
            self._known, self._known_t, self._dirty = [], -1, 0
            self._next_join = self._next_leave = 0
        known = self._known
        dirty = self._dirty
        # the joins up to bar t, then the leaves up to bar t: a version joins before it leaves (confirmed_at <
        # superseded_at), so the set is the same as bar by bar
        bars, positions = self._joins
        k = self._next_join
        while k < len(bars) and bars.item(k) <= t:
            j = positions.item(k)
            q = bisect.bisect_left(known, j)
            known.insert(q, j)
            dirty = min(dirty, q)
            k += 1
        self._next_join = k
        bars, positions = self._leaves
        k = self._next_leave
        while k < len(bars) and bars.item(k) <= t:
            q = bisect.bisect_left(known, positions.item(k))
            del known[q]
            dirty = min(dirty, q)
            k += 1
        self._next_leave = k
        self._dirty = dirty
        self._known_t = max(self._known_t, t)
        return known

    def structure(self, t: int, start: int) -> float | None:
        """EDX structure (spec §4) of the pivots known at bar ``t`` with index ≥ ``start``, from running counts
        (O(log pivots) a window), or None when this history does not keep them (a live one: the caller counts).

        The known versions change at the newest end only (a moved pivot is the last one), so the counts of rises
        and falls between consecutive highs and between consecutive lows are kept per known version and only
        the changed tail is recounted; a window's counts are then differences of two running counts."""
        if not self._replay:
            return None
        self.pivots  # noqa: B018 - builds the version index on first use
        known = self._known_positions(t)
        dirty = self._dirty
        if dirty < len(self._below):  # recount from the first changed position
            below = self._below
            n_high = below[dirty]
            del below[dirty + 1 :]
            for kind, keep in ((True, n_high), (False, dirty - n_high)):
                idx, price, rises, falls = self._runs[kind]
                del idx[keep:], price[keep:], rises[max(keep, 1) :], falls[max(keep, 1) :]
            for j in known[dirty:]:
                high = self._piv_high[j]
                idx, price, rises, falls = self._runs[high]
                p = float(self._piv_price[j])
                if price:
                    rises.append(rises[-1] + (p > price[-1]))
                    falls.append(falls[-1] + (p < price[-1]))
                idx.append(self._piv_idx[j])
                price.append(p)
                below.append(below[-1] + high)
            self._dirty = len(known) + 1
        h_idx, _, h_rises, h_falls = self._runs[True]
        l_idx, _, l_rises, l_falls = self._runs[False]
        a = bisect.bisect_left(h_idx, start)
        b = bisect.bisect_left(l_idx, start)
        if (len(h_idx) - a) + (len(l_idx) - b) < 4:
            return 0.5
        # pairs (m − 1, m) with m − 1 ≥ a; rises[m] counts the pairs up to element m (rises[0] = 0)
        hh = h_rises[len(h_idx) - 1] - h_rises[a] if a < len(h_idx) else 0
        lh = h_falls[len(h_idx) - 1] - h_falls[a] if a < len(h_idx) else 0
        hl = l_rises[len(l_idx) - 1] - l_rises[b] if b < len(l_idx) else 0
        ll = l_falls[len(l_idx) - 1] - l_falls[b] if b < len(l_idx) else 0
        total = hh + lh + hl + ll
        return 0.5 if total == 0 else 1.0 - (hh + hl) / total

    def sr_numbers(self, i: int, v: Mapping[str, float], mode: str, state: str) -> tuple[float, float, int]:
        """``sr_boost`` at EMA60 and at EMA333 and the number of levels within 1 ATR of the price, for bar ``i``
        (``v``: its values, ``state``: its state); a replay reads them from the block of bars computed at once."""
        if mode == "none":
            return 0.0, 0.0, 0
        if self._replay:
            r = self._level_block(i, state)[1]
            b60, b333, n_near = self._level_numbers
            return b60[r], b333[r], n_near[r]
        from regime_tasks.core.uptrend.scores import sr_boost

        atr = v["atr"]
        levels = self.levels_at(i, v["price"], atr, mode)
        self._scalar_levels = ((i, v["price"], atr, mode), levels)
        near = sum(1 for lv in levels if abs(v["price"] - lv["price"]) <= 1.0 * atr)
        return sr_boost(v["ema60"], levels, atr), sr_boost(v["ema333"], levels, atr), near

    def _level_block(self, i: int, state: str) -> tuple[LevelBlock, int]:
        """The block holding bar ``i``'s levels and its row there. A new block covers the bars from ``i`` on (up to
        LEVEL_CHUNK) that will be in S1–S3, known ahead from the EMA orders (``states.trend_bars_ahead``; a bar
        left out that asks anyway starts a block of its own)."""
        block = self._levels
        r = block.row(i) if block is not None else -1
        if block is None or r < 0:
            from regime_tasks.core.uptrend.states import trend_bars_ahead

            self.pivots  # noqa: B018 - builds the version index on first use
            stop = min(i + LEVEL_CHUNK, self.n)
            bars = i + np.flatnonzero(trend_bars_ahead(self.cols, state, i, stop, self._bootstrap))
            price, atr = self.price[bars], self.cols["atr"][bars]
            block = level_block(self._piv_conf, self._piv_until, self._piv_price, bars, price, atr)
            self._levels = block
            self._level_numbers = (
                block.boost(self.cols["ema60"][bars], atr).tolist(),
                block.boost(self.cols["ema333"][bars], atr).tolist(),
                block.near(price, atr).tolist(),
            )
            r = 0
        return block, r

    def levels_at(self, i: int, price: float, atr: float, mode: str) -> list[dict[str, float]]:
        """S/R levels (spec §7) from the pivots known at bar ``i`` within the last 3,000 bars; none under ``none``."""
        if mode == "none" or not (atr > 0):
            return []
        if self._replay:
            block = self._levels
            if block is None or block.row(i) < 0:  # levels asked outside a step (the step fills the block)
                block = self._level_block(i, "S1")[0]
            return block.levels(i)
        if self._scalar_levels[0] == (i, price, atr, mode):  # sr_numbers() just computed them (a copy: the
            return [dict(lv) for lv in self._scalar_levels[1]]  # step's diagnostics and the TA payload hold them)
        return sr_levels(self.pivots_at(i, start=max(0, i - (SR_LOOKBACK - 1))), price, atr)

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


def _events_sorted(bars: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(bars, positions) of the positions whose bar falls inside ``0..n−1``, by bar (positions ascending within
    a bar)."""
    inside = np.flatnonzero(bars < n)
    order = inside[np.argsort(bars[inside], kind="stable")]
    return bars[order], order
