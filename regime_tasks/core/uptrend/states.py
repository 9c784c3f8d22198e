"""The transition rule of spec §3, once: the step uses it bar by bar, and a replay uses it to know ahead which
bars will be in S1–S3 (the states do not depend on any score, only on the EMA orders and the price), so that it
computes S/R levels for those bars only."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TREND_STATES = ("S1", "S2", "S3")  # the states whose checks read S/R levels


def next_state(
    prev_known: str | None,
    s3_order: bool,
    s0_order: bool,
    fast_band_above_60: bool,
    all_below_333: bool,
    price_above_ema60: bool,
    price_above_ema333: bool,
    price_below_ema333: bool,
    bootstrap: str,
) -> str:
    """The state after ``prev_known`` (None: the first bar) given the bar's EMA orders (spec §2) and where its price
    is; exactly one transition per bar (spec §3)."""
    if prev_known is None or prev_known == "S4":  # bootstrap and S4 follow the same rule (S3 only under "spec")
        if bootstrap == "spec" and s3_order:
            return "S3"
        return "S0" if s0_order else "S4"
    if prev_known == "S0":
        return "S1" if fast_band_above_60 and price_above_ema60 else "S0"
    if prev_known == "S1":
        if s0_order:
            return "S0"
        return "S2" if price_above_ema333 else "S1"
    if prev_known == "S2":
        if price_below_ema333:
            return "S1"
        return "S3" if s3_order else "S2"
    return "S0" if all_below_333 else "S3"  # S3


def trend_bars_ahead(cols: Mapping[str, np.ndarray], state: str, start: int, stop: int, bootstrap: str) -> np.ndarray:
    """Which of bars ``start .. stop − 1`` will be in S1–S3, the state of bar ``start`` being ``state``: the orders
    of every bar at once, then :func:`next_state` bar by bar (a bar whose EMAs are undefined counts as one)."""
    e20, e30, e60, e144, e250, e333 = (
        cols[k][start:stop] for k in ("ema20", "ema30", "ema60", "ema144", "ema250", "ema333")
    )
    price = cols["close"][start:stop]
    columns = zip(
        ((e20 > e60) & (e30 > e60) & (e60 > e144) & (e144 > e250) & (e250 > e333)).tolist(),
        ((e20 < e60) & (e30 < e60) & (e60 < e144) & (e144 < e250) & (e250 < e333)).tolist(),
        ((e20 > e60) & (e30 > e60)).tolist(),
        ((e20 < e333) & (e30 < e333) & (e60 < e333) & (e144 < e333) & (e250 < e333)).tolist(),
        (price > e60).tolist(),
        (price > e333).tolist(),
        (price < e333).tolist(),
        np.isfinite(np.column_stack([e20, e30, e60, e144, e250, e333])).all(axis=1).tolist(),
        strict=True,
    )
    out = [True] * (stop - start)
    current = state
    next(columns, None)  # bar ``start`` itself: its state is given
    for r, (s3o, s0o, fast_band, all_below, above60, above333, below333, defined) in enumerate(columns, start=1):
        if not defined:
            break  # unknown from here: every later bar counts
        current = next_state(current, s3o, s0o, fast_band, all_below, above60, above333, below333, bootstrap)
        out[r] = current in TREND_STATES
    return np.array(out, dtype=bool)
