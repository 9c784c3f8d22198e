"""Collect: the majors', the lowcaps' and the dominance samples' closed bars into the price tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.constants import MAJORS
from regime_tasks.core.timeframes import bar_delta, iso
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars

log = logging.getLogger(__name__)


# --- collect ------------------------------------------------------------------------------------------
def history_start(rt: Runtime, timeframe: str, until: pd.Timestamp) -> pd.Timestamp:
    """Where a first backfill of ``timeframe`` starts (settings ``REGIME_HISTORY_*_DAYS``)."""
    days = {
        "1d": rt.settings.history_1d_days,
        "1h": rt.settings.history_1h_days,
        "1m": rt.settings.history_1m_days,
    }[timeframe]
    return (until - pd.Timedelta(days=days)).floor(bar_delta(timeframe))


def missing_ranges(
    stored: pd.DatetimeIndex, start: pd.Timestamp, until: pd.Timestamp, timeframe: str, *, merge_bars: int = 1_000
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The ``[first, last]`` open-time ranges of the bars from ``start`` to ``until`` that ``stored`` lacks.

    Ranges less than ``merge_bars`` apart are fetched as one (one venue request instead of many small ones;
    re-fetching the stored bars between them rewrites the same rows).
    """
    if start > until:
        return []
    step = bar_delta(timeframe)
    missing = pd.date_range(start, until, freq=step).difference(stored)
    if missing.empty:
        return []
    breaks = np.flatnonzero((missing[1:] - missing[:-1]) > merge_bars * step)
    firsts = [0, *(breaks + 1)]
    lasts = [*breaks, len(missing) - 1]
    return [(missing[a], missing[b]) for a, b in zip(firsts, lasts, strict=True)]


def source_end(rt: Runtime, timeframe: str) -> pd.Timestamp | None:
    """Open time of the newest BTC bar of ``timeframe`` the source has: the file source knows where its data ends;
    for a venue (which serves up to now) it is the newest one stored."""
    latest = getattr(rt.market, "latest", None)
    if callable(latest):
        return latest(timeframe)
    return store_bars.last_bar_ts(rt.engine, "majors", {"token_contract": "BTC"}, timeframe)


def collect(rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> dict[str, Any]:
    """Bring every input series of ``timeframe`` up to ``until``.

    A tick continues after the last stored bar. ``repair`` (the bootstrap) fetches every missing majors bar back
    to the configured depth (``REGIME_HISTORY_*_DAYS``), holes inside the stored history included, so that a
    bootstrap after a failed or shorter one stores what a fresh one would.
    """
    market = rt.market
    summary: dict[str, Any] = {
        "timeframe": timeframe,
        "until": iso(until),
        "majors": {},
        "lowcaps": 0,
        "repaired": set(),
    }
    for symbol in MAJORS:
        key = {"token_contract": symbol}
        if repair:
            begin = history_start(rt, timeframe, until)
            stored = store_bars.bar_timestamps(rt.engine, "majors", key, timeframe, start=begin, end=until)
            ranges = missing_ranges(stored, begin, until, timeframe)
        else:
            last = store_bars.last_bar_ts(rt.engine, "majors", key, timeframe)
            start = history_start(rt, timeframe, until) if last is None else last + bar_delta(timeframe)
            ranges = [] if start > until else [(start, until)]
            stored = pd.DatetimeIndex([])
        written = 0

        def sink(frame: pd.DataFrame, _key: Mapping[str, str] = key, _stored: pd.DatetimeIndex = stored) -> None:
            nonlocal written
            frame = frame[frame.index <= until]
            if not _stored.empty and (frame.index.difference(_stored) < _stored[-1]).any():
                summary["repaired"].add(_key["token_contract"])  # new bars inside or before the stored history
            written += store_bars.upsert_bars(rt.engine, "majors", _key, timeframe, frame, source=market.name)

        for first, last_missing in ranges:
            market.majors(symbol, timeframe, first, last_missing, sink)
        summary["majors"][symbol] = written
    summary["repaired"] = sorted(summary["repaired"])
    summary["lowcaps"] = market.collect_lowcaps(rt, timeframe, until, repair=repair)
    summary["dominance"] = market.collect_dominance(rt, timeframe, until, repair=repair)
    log.info("collected %s", kv(timeframe=timeframe, until=iso(until), majors=summary["majors"]))
    return summary
