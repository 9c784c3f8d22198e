"""Small JSON facts about the deployment: bootstrap completion, last tick per timeframe."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.errors import StoreError
from regime_tasks.store.db import dumps, upsert_rows
from regime_tasks.store.schema import regime_meta


def set_meta(engine: Engine, key: str, value: Any) -> None:
    """Store a small JSON fact (e.g. ``bootstrap:onchain_crypto``)."""
    with engine.begin() as conn:
        upsert_rows(
            conn,
            regime_meta,
            [{"key": key, "value": json.loads(dumps(value)), "updated_at": dt.datetime.now(dt.UTC)}],
            conflict_cols=("key",),
            update_cols=("value", "updated_at"),
        )


def get_meta(engine: Engine, key: str) -> Any | None:
    """A stored fact, or None."""
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.select(regime_meta.c.value).where(regime_meta.c.key == key)).scalar_one_or_none()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"reading meta {key!r} failed: {exc}") from exc
    return json.loads(value) if isinstance(value, str) else value


def _like(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def read_meta(conn: sa.Connection, *, keys: Sequence[str] = (), prefixes: Sequence[str] = ()) -> dict[str, Any]:
    """The facts with any of ``keys`` or a key starting with any of ``prefixes``, in one statement on ``conn``."""
    c = regime_meta.c
    conds = [c.key.in_(list(keys))] if keys else []
    conds += [c.key.like(_like(p), escape="\\") for p in prefixes]
    if not conds:
        return {}
    try:
        rows = conn.execute(sa.select(c.key, c.value).where(sa.or_(*conds))).all()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"reading meta {[*keys, *prefixes]!r} failed: {exc}") from exc
    return {r.key: json.loads(r.value) if isinstance(r.value, str) else r.value for r in rows}


def write_meta(conn: sa.Connection, values: Mapping[str, Any]) -> None:
    """Store several facts in one statement on ``conn`` (the caller commits, or ``conn`` autocommits)."""
    if not values:
        return
    now = dt.datetime.now(dt.UTC)
    rows = [{"key": k, "value": json.loads(dumps(v)), "updated_at": now} for k, v in values.items()]
    upsert_rows(conn, regime_meta, rows, conflict_cols=("key",), update_cols=("value", "updated_at"))
