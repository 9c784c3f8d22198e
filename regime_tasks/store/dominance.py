"""Raw dominance samples (D4): every CoinGecko /global answer as it came, keyed by fetch time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.errors import DataValidationError
from regime_tasks.store.db import upsert_rows
from regime_tasks.store.events import _utc
from regime_tasks.store.schema import dominance_samples


def insert_samples(engine: Engine, frame: pd.DataFrame) -> int:
    """Store raw dominance samples (columns fetched_at, btc_d, usdt_d, updated_at, source); idempotent."""
    required = ("fetched_at", "btc_d", "usdt_d")
    for col in required:
        if col not in frame.columns:
            raise DataValidationError("missing column", series="dominance_samples", field=col)
    rows = []
    for rec in frame.to_dict("records"):
        for col in ("btc_d", "usdt_d"):
            value = rec[col]
            if value is None or pd.isna(value) or not 0 < float(value) <= 100:
                raise DataValidationError(
                    f"dominance must be in (0, 100], got {value!r}",
                    series="dominance_samples",
                    timestamp=rec["fetched_at"],
                    field=col,
                    source=rec.get("source"),
                )
        updated = rec.get("updated_at")
        rows.append(
            {
                "source": rec.get("source") or "coingecko",
                "fetched_at": _utc(rec["fetched_at"]),
                "btc_d": float(rec["btc_d"]),
                "usdt_d": float(rec["usdt_d"]),
                "updated_at": None if updated is None or pd.isna(updated) else _utc(updated),
            }
        )
    with engine.begin() as conn:
        return upsert_rows(
            conn,
            dominance_samples,
            rows,
            conflict_cols=("source", "fetched_at"),
            update_cols=("btc_d", "usdt_d", "updated_at"),
        )


def read_samples(engine: Engine, *, start: Any = None, end: Any = None) -> pd.DataFrame:
    """Raw dominance samples in [start, end), oldest first."""
    t = dominance_samples
    q = sa.select(t.c.fetched_at, t.c.btc_d, t.c.usdt_d, t.c.updated_at, t.c.source).order_by(t.c.fetched_at)
    if start is not None:
        q = q.where(t.c.fetched_at >= _utc(start))
    if end is not None:
        q = q.where(t.c.fetched_at < _utc(end))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    frame = pd.DataFrame.from_records(rows, columns=["fetched_at", "btc_d", "usdt_d", "updated_at", "source"])
    for col in ("fetched_at", "updated_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame
