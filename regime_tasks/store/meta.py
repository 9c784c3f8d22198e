"""Small JSON facts about the deployment: bootstrap completion, last tick per timeframe."""

from __future__ import annotations

import datetime as dt
import json
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


def get_meta_prefixed(engine: Engine, prefix: str) -> dict[str, Any]:
    """Every stored fact whose key starts with ``prefix`` (e.g. ``tick:published:``), by key."""
    c = regime_meta.c
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(c.key, c.value).where(c.key.like(pattern, escape="\\"))).all()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"reading meta {prefix!r}… failed: {exc}") from exc
    return {r.key: json.loads(r.value) if isinstance(r.value, str) else r.value for r in rows}
