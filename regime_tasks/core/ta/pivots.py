"""Swings and S/R levels (spec §4 structure, §7): causal zig-zag pivots and their clusters."""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from typing import cast

import numpy as np

from regime_tasks.core.ta.indicators import (
    SR_CLUSTER_ATR,
    SR_MAX_LEVELS,
    SWING_BACKSTEP,
    SWING_MIN_LEG_BARS,
    SWING_THRESHOLD_ATR,
)

NEVER = 2**62  # superseded_at of a pivot version that was never moved


@dataclasses.dataclass(frozen=True, slots=True)
class Pivot:
    """A confirmed swing point: bar position of the extreme, its price, kind, the bar that confirmed it and,
    for a version later moved by a continuing swing, the bar that superseded it."""

    index: int
    price: float
    kind: str  # "high" | "low"
    confirmed_at: int
    superseded_at: int = NEVER


def swing_pivots(
    high: np.ndarray,
    low: np.ndarray,
    atr: np.ndarray,
    *,
    threshold_atr: float = SWING_THRESHOLD_ATR,
    backstep: int = SWING_BACKSTEP,
    min_leg_bars: int = SWING_MIN_LEG_BARS,
    keep_versions: bool = False,
) -> list[Pivot]:
    """Causal zig-zag pivots (one pass, O(n)).

    After a low pivot the running highest high is the candidate; it is confirmed as a high pivot when price
    has retraced from it by ``threshold_atr × ATR`` (ATR of the confirming bar), at least ``backstep`` bars
    have passed since the candidate (a fresh extreme is not trusted at once) and the leg from the previous
    pivot spans at least ``min_leg_bars`` bars. A lower low before that simply moves the previous low pivot
    (the swing was not over). Symmetric after a high pivot. Each pivot records ``confirmed_at``: replay
    uses only pivots confirmed at or before the bar it evaluates, so there is no look-ahead.

    With ``keep_versions`` the result also holds every superseded version of a moved pivot (with
    ``superseded_at``), so :func:`pivots_known_at` can give exactly what a run ending at bar t would have seen.
    """
    atr = np.asarray(atr, dtype=np.float64)
    zz = ZigZag(threshold_atr=threshold_atr, backstep=backstep, min_leg_bars=min_leg_bars, keep_versions=keep_versions)
    # memoryviews of the arrays: indexing one gives a Python float, as a list would, without a float object per
    # bar held for the whole pass (a long 1m file's three lists were hundreds of MB)
    zz.feed(
        _floats(high),
        _floats(low),
        _floats(swing_thresholds(atr, threshold_atr)),
        len(atr),
    )
    return zz.result()


def _floats(values: np.ndarray) -> Sequence[float]:
    """A read-only sequence of Python floats over ``values`` (no copy when already contiguous float64)."""
    return cast("Sequence[float]", memoryview(np.ascontiguousarray(values, dtype=np.float64)))  # type: ignore[arg-type]


def swing_thresholds(atr: np.ndarray, threshold_atr: float = SWING_THRESHOLD_ATR) -> np.ndarray:
    """Retracement needed to confirm a pivot at each bar: ``threshold_atr × ATR``, ∞ while ATR is undefined."""
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(atr) & (atr > 0)
    return np.where(usable, threshold_atr * np.where(usable, atr, 0.0), math.inf)


class ZigZag:
    """The zig-zag of :func:`swing_pivots` as a state machine that can be fed more bars later (the live path
    appends one bar at a time and gets exactly the pivots a pass over the whole window gives)."""

    def __init__(
        self,
        *,
        threshold_atr: float = SWING_THRESHOLD_ATR,
        backstep: int = SWING_BACKSTEP,
        min_leg_bars: int = SWING_MIN_LEG_BARS,
        keep_versions: bool = False,
    ) -> None:
        self.threshold_atr, self.backstep, self.min_leg_bars = threshold_atr, backstep, min_leg_bars
        self.keep_versions = keep_versions
        self.done: list[Pivot] = []  # confirmed pivots before the last one
        self.versions: list[Pivot] = []
        self.last: tuple[bool, float, int, int] | None = None  # (is low, price, bar, confirmed at)
        self.hi_i = self.lo_i = 0  # running candidates
        self.next_t = 1  # bar 0 is the first candidate

    def result(self) -> list[Pivot]:
        """Pivots so far (with every superseded version when ``keep_versions``)."""
        pivots = list(self.done)
        if self.last is not None:
            is_low, price, index, conf = self.last
            pivots.append(Pivot(index, price, "low" if is_low else "high", conf))
        if self.keep_versions:
            return sorted([*pivots, *self.versions], key=lambda p: (p.index, p.confirmed_at))
        return pivots

    def feed(self, high: Sequence[float], low: Sequence[float], thresholds: Sequence[float], stop: int) -> None:
        """Run bars ``next_t .. stop−1`` (sequences indexed by bar; ``thresholds`` from :func:`swing_thresholds`)."""
        backstep, min_leg_bars, keep_versions = self.backstep, self.min_leg_bars, self.keep_versions
        pivots, versions = self.done, self.versions
        hi_i, lo_i, t = self.hi_i, self.lo_i, self.next_t
        while t < stop and self.last is None:  # before the first pivot pair
            thr = thresholds[t]
            if high[t] >= high[hi_i]:
                hi_i = t
            if low[t] <= low[lo_i]:
                lo_i = t
            if lo_i < hi_i and high[hi_i] - low[t] >= thr and t - hi_i >= backstep:
                pivots.append(Pivot(lo_i, low[lo_i], "low", t))
                self.last = (False, high[hi_i], hi_i, t)
                lo_i = t
            elif hi_i < lo_i and high[t] - low[lo_i] >= thr and t - lo_i >= backstep:
                pivots.append(Pivot(hi_i, high[hi_i], "high", t))
                self.last = (True, low[lo_i], lo_i, t)
                hi_i = t
            t += 1
        if self.last is None:
            self.hi_i, self.lo_i, self.next_t = hi_i, lo_i, t
            return
        # This loop runs once per bar in Python and is most of a live step's engine time: the last pivot lives
        # in locals until the next one is confirmed (a continuing swing moves it on most bars), no allocation.
        last_low, last_price, last_index, last_conf = self.last
        for t in range(t, stop):  # noqa: B020 - goes on from where the first phase stopped
            if last_low:
                lt = low[t]
                if lt < last_price:  # the down-swing continues: move the low pivot
                    if keep_versions:
                        versions.append(Pivot(last_index, last_price, "low", last_conf, t))
                    last_price = lt
                    last_index = last_conf = hi_i = t
                    continue
                if high[t] >= high[hi_i]:
                    hi_i = t
                if high[hi_i] - lt >= thresholds[t] and t - hi_i >= backstep and hi_i - last_index >= min_leg_bars:
                    pivots.append(Pivot(last_index, last_price, "low", last_conf))
                    last_low, last_price, last_index, last_conf = False, high[hi_i], hi_i, t
                    lo_i = t
            else:
                ht = high[t]
                if ht > last_price:  # the up-swing continues: move the high pivot
                    if keep_versions:
                        versions.append(Pivot(last_index, last_price, "high", last_conf, t))
                    last_price = ht
                    last_index = last_conf = lo_i = t
                    continue
                if low[t] <= low[lo_i]:
                    lo_i = t
                if ht - low[lo_i] >= thresholds[t] and t - lo_i >= backstep and lo_i - last_index >= min_leg_bars:
                    pivots.append(Pivot(last_index, last_price, "high", last_conf))
                    last_low, last_price, last_index, last_conf = True, low[lo_i], lo_i, t
                    hi_i = t
        self.last = (last_low, last_price, last_index, last_conf)
        self.hi_i, self.lo_i, self.next_t = hi_i, lo_i, max(stop, self.next_t)


def pivots_known_at(versions: list[Pivot], t: int, *, start: int = 0) -> list[Pivot]:
    """The pivots a causal run would hold at bar ``t`` (confirmed, not yet superseded), with index ≥ ``start``."""
    return [p for p in versions if p.confirmed_at <= t < p.superseded_at and p.index >= start]


def sr_levels(
    pivots: list[Pivot],
    price: float,
    atr: float,
    *,
    cluster_atr: float = SR_CLUSTER_ATR,
    max_levels: int = SR_MAX_LEVELS,
) -> list[dict[str, float]]:
    """Cluster pivot prices within ``cluster_atr × ATR``; level = cluster mean, strength = touches / max touches;
    the ``max_levels`` levels nearest to ``price`` (spec §7)."""
    if not pivots or not np.isfinite(atr) or atr <= 0 or not np.isfinite(price):
        return []
    return sr_levels_sorted(sorted([p.price for p in pivots]), price, atr, cluster_atr, max_levels)


def sr_levels_sorted(
    prices: list[float],
    price: float,
    atr: float,
    cluster_atr: float = SR_CLUSTER_ATR,
    max_levels: int = SR_MAX_LEVELS,
) -> list[dict[str, float]]:
    """:func:`sr_levels` of pivot prices already sorted ascending (not empty; finite ``price``, ``atr`` > 0)."""
    reach = cluster_atr * atr
    # a running mean per cluster in locals (the engine calls this on most bars of a replay)
    sums: list[float] = []
    counts: list[int] = []
    total, count = prices[0], 1
    for p in prices[1:]:
        if p - total / count <= reach:
            total += p
            count += 1
        else:
            sums.append(total)
            counts.append(count)
            total, count = p, 1
    sums.append(total)
    counts.append(count)
    max_touches = max(counts)
    means = [t / c for t, c in zip(sums, counts, strict=True)]
    # Means ascend, so the nearest levels are next to ``price``: rank only the max_levels + 1 on each side (and
    # any further left ones whose rounded distance ties, which the (distance, price) order would put first).
    mid = bisect.bisect_left(means, price)
    lo, hi = max(0, mid - max_levels - 1), min(len(means), mid + max_levels + 1)
    while lo > 0 and abs(means[lo - 1] - price) == abs(means[lo] - price):
        lo -= 1
    order = sorted(range(lo, hi), key=lambda k: (abs(means[k] - price), means[k]))[:max_levels]
    return [{"price": means[k], "strength": counts[k] / max_touches} for k in order]


def sr_levels_from(pivots: list[Pivot], price: float, atr: float | None) -> list[dict[str, float]]:
    """``sr_levels`` tolerant of an undefined ATR (warm-up): no levels then."""
    if atr is None:
        return []
    return sr_levels(pivots, price, atr)
