"""Publish a timeframe's payloads to the cache, and the levers step after it."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from regime_tasks.core.timeframes import iso, parse_ts
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.stages.collect import source_end

log = logging.getLogger(__name__)


def publish(rt: Runtime, book_id: str, timeframe: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish the timeframe's driver payloads to the cache in one atomic write (D10)."""
    entries = {
        f"{r['driver']}|{timeframe}": r["payload"]
        for r in results
        if r.get("payload") and r.get("status") in {"ok", "unchanged"}
    }
    if entries:
        rt.cache.publish(book_id, entries)
    statuses = {r["driver"]: r["status"] for r in results}
    failed = sorted(d for d, s in statuses.items() if s == "error")
    if failed:
        log.error("drivers failed this tick %s", kv(timeframe=timeframe, drivers=",".join(failed)))
    out = {"timeframe": timeframe, "published": sorted(entries), "statuses": statuses, "failed": failed}
    if not any(s == "ok" for s in statuses.values()):  # nothing stepped: say so instead of looking like success
        btc = next((r for r in results if r["driver"] == "BTC"), {})
        last = (btc.get("payload") or {}).get("bar_ts")
        out["message"] = no_new_bar_message(rt, timeframe, parse_ts(last) if last else None)
        log.info("tick %s: %s", timeframe, out["message"])
    return out


def no_new_bar_message(rt: Runtime, timeframe: str, last: pd.Timestamp | None) -> str:
    """``no new closed bar after <last> — the source ends at <ts>`` for a tick that stepped nothing."""
    end = source_end(rt, timeframe)
    return f"no new closed bar after {iso(last) or 'none'} — the source ends at {iso(end) or 'no bar'}"


def run_levers(rt: Runtime, book_id: str) -> dict[str, Any]:
    """Levers for every active/watchlist position of the book (D1)."""
    from regime_tasks.api import run_levers_task

    return run_levers_task(rt.engine, rt.cache, book_id=book_id)
