"""Engine state-change events (``uptrend_state_events``): append-only, one per series and bar."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.core.constants import REGIME_DRIVER_CHAIN
from regime_tasks.core.timeframes import parse_ts
from regime_tasks.store.db import dumps, upsert_rows
from regime_tasks.store.schema import uptrend_state_events


def _utc(value: Any) -> dt.datetime:
    return parse_ts(value).to_pydatetime()


def append_events(
    engine: Engine,
    events: Iterable[Mapping[str, Any]],
    *,
    book_id: str,
    driver: str,
    timeframe: str,
    token_chain: str = REGIME_DRIVER_CHAIN,
) -> int:
    """Store engine state-change events ``{state, prev_state, bar_ts, price, …}`` of one series.

    Idempotent: an event for a bar that is already stored is ignored, so a re-run adds nothing.
    Returns how many events were offered.
    """
    rows = [
        {
            "book_id": book_id,
            "token_contract": driver,
            "token_chain": token_chain,
            "timeframe": timeframe,
            "bar_ts": _utc(ev["bar_ts"]),
            "event_type": "uptrend_state_change",
            "state": ev["state"],
            "prev_state": ev.get("prev_state"),
            "price": ev.get("price"),
            "payload": json.loads(dumps(dict(ev))),
        }
        for ev in events
    ]
    with engine.begin() as conn:
        return upsert_rows(
            conn,
            uptrend_state_events,
            rows,
            conflict_cols=("book_id", "token_contract", "token_chain", "timeframe", "bar_ts"),
            update_cols=None,
        )


def delete_events(
    engine: Engine, *, book_id: str, driver: str, timeframe: str, token_chain: str = REGIME_DRIVER_CHAIN
) -> int:
    """Remove every state-change event of one series (before a whole-history replay writes them again)."""
    t = uptrend_state_events
    query = sa.delete(t).where(
        t.c.book_id == book_id,
        t.c.token_contract == driver,
        t.c.token_chain == token_chain,
        t.c.timeframe == timeframe,
    )
    with engine.begin() as conn:
        return int(conn.execute(query).rowcount or 0)


def read_events(engine: Engine, *, book_id: str, driver: str | None = None, timeframe: str | None = None) -> list[dict]:
    """State-change events of a book (optionally one series), oldest first."""
    t = uptrend_state_events
    q = sa.select(t).where(t.c.book_id == book_id).order_by(t.c.bar_ts, t.c.id)
    if driver is not None:
        q = q.where(t.c.token_contract == driver)
    if timeframe is not None:
        q = q.where(t.c.timeframe == timeframe)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
