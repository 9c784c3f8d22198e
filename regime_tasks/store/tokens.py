"""Market caps per token per day (D16): ``cap(D) = close(D) × circulating supply``, the history behind the
point-in-time bucket membership of D3 (day d's members come from the caps at the close of d−1).

The supply is one snapshot (CoinGecko ``/coins/markets``); applied to days before the snapshot it knows a later
supply (token unlocks make supply drift): every cap row carries ``supply_as_of`` and its ``source`` so that
outputs can say "derived: price × supply of <date>".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.errors import StoreError
from regime_tasks.store.db import upsert_rows
from regime_tasks.store.schema import token_caps


def derive_caps(daily: pd.DataFrame, *, supply: float, price_multiplier: float = 1.0) -> pd.DataFrame:
    """Daily caps from traded 1d bars (volume > 0): ``close / price_multiplier × supply`` (columns day, cap, close)."""
    traded = daily[daily["volume"] > 0]
    close = traded["close"].astype("float64")
    return pd.DataFrame(
        {"day": traded.index.floor("1D"), "market_cap_usd": close / price_multiplier * supply, "close_usd": close}
    ).reset_index(drop=True)


def cap_source(supply_as_of: pd.Timestamp | dt.datetime | str | None) -> str:
    """The label shown wherever a derived cap is shown."""
    if supply_as_of is None or (isinstance(supply_as_of, float) and pd.isna(supply_as_of)):
        return "derived: price × supply (date unknown)"
    return f"derived: price × supply of {pd.Timestamp(supply_as_of):%Y-%m-%d}"


def upsert_caps(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update cap rows (token_contract, token_chain, day, market_cap_usd, close_usd, circulating_supply,
    supply_as_of, source); idempotent."""
    now = dt.datetime.now(dt.UTC)
    records = [{**r, "updated_at": now} for r in rows]
    try:
        with engine.begin() as conn:
            return upsert_rows(
                conn,
                token_caps,
                records,
                conflict_cols=("token_contract", "token_chain", "day"),
                update_cols=(
                    "market_cap_usd",
                    "close_usd",
                    "circulating_supply",
                    "supply_as_of",
                    "source",
                    "updated_at",
                ),
            )
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"write of token caps failed: {exc}") from exc


def last_cap_day(engine: Engine, token_contract: str, token_chain: str) -> pd.Timestamp | None:
    """The newest day with a stored cap for one token."""
    t = token_caps
    q = sa.select(sa.func.max(t.c.day)).where(t.c.token_contract == token_contract, t.c.token_chain == token_chain)
    with engine.connect() as conn:
        value = conn.execute(q).scalar()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def read_caps(engine: Engine, *, until: pd.Timestamp | None = None) -> pd.DataFrame:
    """Wide daily caps: index = day, columns = ``contract@chain``; only days up to ``until`` (inclusive)."""
    t = token_caps
    q = sa.select(t.c.token_contract, t.c.token_chain, t.c.day, t.c.market_cap_usd)
    if until is not None:
        q = q.where(t.c.day <= pd.Timestamp(until).to_pydatetime())
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame.from_records(rows, columns=["contract", "chain", "day", "cap"])
    frame["name"] = frame["contract"] + "@" + frame["chain"]
    frame["day"] = pd.to_datetime(frame["day"], utc=True)
    return frame.pivot(index="day", columns="name", values="cap").sort_index()


def cap_sources(engine: Engine) -> dict[str, str]:
    """``contract@chain`` → label of its newest cap row (what outputs show next to a bucket)."""
    t = token_caps
    newest = (
        sa.select(t.c.token_contract, t.c.token_chain, sa.func.max(t.c.day).label("day"))
        .group_by(t.c.token_contract, t.c.token_chain)
        .subquery()
    )
    q = sa.select(t.c.token_contract, t.c.token_chain, t.c.source).join(
        newest,
        sa.and_(
            t.c.token_contract == newest.c.token_contract,
            t.c.token_chain == newest.c.token_chain,
            t.c.day == newest.c.day,
        ),
    )
    with engine.connect() as conn:
        return {f"{r.token_contract}@{r.token_chain}": r.source for r in conn.execute(q)}
