"""S/R levels (spec §7) of many bars at once: what :func:`~regime_tasks.core.ta.pivots.sr_levels` gives bar by
bar, vectorised over a block of bars, bit for bit.

A pivot version is known at bar ``t`` when ``confirmed_at ≤ t < superseded_at``, and a bar's levels read the
versions with ``index ≥ t − (lookback − 1)``: so each version is active over one interval of bars,
``[confirmed_at, min(superseded_at, index + lookback))``. For a block of bars the active versions are laid out
per bar in ascending price (one row per bar), and the clustering runs once per column over all rows at once:
the same additions, divisions and comparisons in the same order as the scalar loop, so the same floats. The
ranking is the full sort by (distance, price) that ``sr_levels_sorted`` narrows to the clusters next to the
price. The engine's replay uses this (``EngineHistory``); a live step (one bar) keeps the scalar path, and
tests/core/test_live.py checks the two agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from regime_tasks.core.ta.indicators import SR_CLUSTER_ATR, SR_MAX_LEVELS


@dataclasses.dataclass(frozen=True, slots=True)
class LevelBlock:
    """Levels of the bars ``bars`` (ascending): row ``r`` holds ``count[r]`` levels of bar ``bars[r]``, nearest
    first."""

    bars: np.ndarray  # (rows,) int
    price: np.ndarray  # (rows, max_levels), NaN past count
    strength: np.ndarray  # (rows, max_levels)
    count: np.ndarray  # (rows,) int

    def row(self, i: int) -> int:
        """Row of bar ``i``, or −1 when the block does not hold it."""
        r = int(np.searchsorted(self.bars, i))
        return r if r < len(self.bars) and self.bars[r] == i else -1

    def levels(self, i: int) -> list[dict[str, float]]:
        """Bar ``i``'s levels as ``sr_levels`` returns them (a bar the block holds)."""
        r = self.row(i)
        k = int(self.count[r])
        return [
            {"price": p, "strength": s}
            for p, s in zip(self.price[r, :k].tolist(), self.strength[r, :k].tolist(), strict=True)
        ]

    def boost(self, anchor: np.ndarray, atr: np.ndarray) -> np.ndarray:
        """``sr_boost(anchor[r], levels of row r, atr[r])`` for every row (the same operations, element-wise)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.abs(self.price - anchor[:, None])
            near = d <= atr[:, None]
            value = self.strength * (1.0 - d / atr[:, None]) * 0.25
        best = np.where(near, value, 0.0).max(axis=1, initial=0.0)
        usable = (self.count > 0) & (atr > 0) & ~np.isnan(anchor)
        return np.where(usable, best, 0.0)

    def near(self, price: np.ndarray, atr: np.ndarray) -> np.ndarray:
        """How many of each row's levels lie within ``atr`` of ``price`` (the trim check's levels)."""
        with np.errstate(invalid="ignore"):
            return np.count_nonzero(np.abs(price[:, None] - self.price) <= atr[:, None], axis=1)


def level_block(
    confirmed_at: np.ndarray,
    active_until: np.ndarray,
    pivot_price: np.ndarray,
    bars: np.ndarray,
    price: np.ndarray,
    atr: np.ndarray,
    *,
    cluster_atr: float = SR_CLUSTER_ATR,
    max_levels: int = SR_MAX_LEVELS,
) -> LevelBlock:
    """Levels of the bars ``bars`` (ascending, not empty); a version ``v`` is active at the bars ``confirmed_at[v]
    ≤ t < active_until[v]``; ``price``/``atr`` are those bars' close and ATR."""
    bars = np.asarray(bars, dtype=np.int64)
    n_rows = len(bars)
    sel = np.flatnonzero((confirmed_at <= bars[-1]) & (active_until > bars[0]))
    sel = sel[np.argsort(pivot_price[sel], kind="stable")]
    p_sorted = pivot_price[sel]
    active = (confirmed_at[sel][None, :] <= bars[:, None]) & (bars[:, None] < active_until[sel][None, :])
    counts = active.sum(axis=1)
    usable = (counts > 0) & np.isfinite(atr) & (atr > 0) & np.isfinite(price)
    active &= usable[:, None]
    counts = np.where(usable, counts, 0)
    width = int(counts.max()) if n_rows else 0
    out_price = np.full((n_rows, max_levels), np.nan)
    out_strength = np.full((n_rows, max_levels), np.nan)
    if width == 0:
        return LevelBlock(bars, out_price, out_strength, np.zeros(n_rows, dtype=np.int64))
    rows, cols = np.nonzero(active)  # row-major: each row's versions in ascending price
    row_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grid = np.full((n_rows, width), np.nan)
    grid[rows, np.arange(len(rows)) - row_start[rows]] = p_sorted[cols]
    del active, rows, cols

    # the clustering of sr_levels_sorted, one column (the k-th lowest price of every bar) at a time; the rows
    # are taken longest first, so the rows that still have a k-th price are a prefix (slices, not masks)
    by_len = np.argsort(-counts, kind="stable")
    grid = grid[by_len]
    reach = (cluster_atr * atr)[by_len]
    rows_left = np.searchsorted(-counts[by_len], -np.arange(width), side="left")  # [k]: rows with more than k prices
    before_total = np.full((n_rows, width), np.nan)  # [r, k]: the open cluster's sum and size before price k
    before_count = np.zeros((n_rows, width))
    closes = np.zeros((n_rows, width), dtype=bool)  # [r, k]: price k starts a new cluster (the open one closes)
    total = grid[:, 0].copy()
    count = np.ones(n_rows)
    with np.errstate(invalid="ignore"):
        for k in range(1, width):
            m = int(rows_left[k])  # rows with more than k prices: counts > k
            p = grid[:m, k]
            t, c = total[:m], count[:m]
            joins = p - t / c <= reach[:m]
            before_total[:m, k] = t
            before_count[:m, k] = c
            np.logical_not(joins, out=closes[:m, k])
            total[:m] = np.where(joins, t + p, p)
            count[:m] = np.where(joins, c + 1.0, 1.0)
    # each row's clusters in price order: the ones closed by a new cluster (row-major), then the one left open
    sorted_counts = counts[by_len]
    last = np.flatnonzero(sorted_counts > 0)
    rows, cols = np.nonzero(closes)
    n_closed = np.bincount(rows, minlength=n_rows)
    n_clusters = n_closed + (sorted_counts > 0)
    width_c = int(n_clusters.max())
    sums = np.full((n_rows, width_c), np.nan)
    sizes = np.zeros((n_rows, width_c))
    row_start = np.concatenate([[0], np.cumsum(n_closed)[:-1]])
    slot = np.arange(len(rows)) - row_start[rows]
    sums[rows, slot] = before_total[rows, cols]
    sizes[rows, slot] = before_count[rows, cols]
    sums[last, n_closed[last]] = total[last]
    sizes[last, n_closed[last]] = count[last]
    del before_total, before_count, closes
    back = np.argsort(by_len)  # rows back in bar order
    sums, sizes, n_clusters = sums[back], sizes[back], n_clusters[back]

    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / sizes  # NaN past each row's clusters
        max_touches = sizes.max(axis=1)
        strength = sizes / max_touches[:, None]
        distance = np.abs(means - price[:, None])
    pad = np.arange(width_c)[None, :] >= n_clusters[:, None]
    distance[pad] = np.inf
    key_price = np.where(pad, np.inf, means)
    order = np.lexsort((key_price, distance), axis=1)[:, :max_levels]  # by distance, then price
    shown = np.minimum(n_clusters, max_levels)
    taken = min(width_c, max_levels)
    out_price[:, :taken] = np.take_along_axis(means, order, axis=1)
    out_strength[:, :taken] = np.take_along_axis(strength, order, axis=1)
    blank = np.arange(max_levels)[None, :] >= shown[:, None]
    out_price[blank] = np.nan
    out_strength[blank] = np.nan
    return LevelBlock(bars, out_price, out_strength, shown)
