"""Rows of ``lowcap_positions``: the 24 regime-driver rows per book and the host's positions.

``features`` is a JSON object shared by several writers (TA, engine, mapper, levers, and a host
system's own keys). Every write here changes exactly one top-level key of one row with a single
``UPDATE … SET features = json_set(…)`` evaluated by the database, so two processes writing
different keys of the same row never lose each other's change (no read-modify-write in Python).
Rows with other statuses and columns a host adds are never touched (D1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.core.constants import (
    DRIVERS,
    LEVER_POSITION_STATUSES,
    REGIME_DRIVER_CHAIN,
    REGIME_DRIVER_STATUS,
    REGIME_TIMEFRAMES,
)
from regime_tasks.errors import DataValidationError, StoreError, UnknownInputError
from regime_tasks.logs import kv
from regime_tasks.store.db import dumps, upsert_rows
from regime_tasks.store.schema import lowcap_positions, tokens

log = logging.getLogger(__name__)

DriverKey = tuple[str, str]  # (driver, timeframe)


@dataclasses.dataclass(frozen=True, slots=True)
class PositionRow:
    """One position the levers task computes for (status active/watchlist)."""

    id: int
    token_contract: str
    token_chain: str
    timeframe: str
    book_id: str
    status: str
    bucket: str | None
    market_cap_usd: float | None
    features: dict[str, Any]
    problem: str | None = None  # why ``features`` could not be read (then it is empty); the row gets no levers


def _features(value: Any) -> dict[str, Any]:
    """A row's ``features`` as a dict; DataValidationError if it is not a JSON object (a host wrote a string, an
    array or a number there)."""
    if value is None:
        return {}
    if isinstance(value, str):  # some drivers hand JSON back as text
        try:
            value = json.loads(value)
        except ValueError:
            raise DataValidationError("features is not JSON", field="features") from None
    if not isinstance(value, Mapping):
        raise DataValidationError(f"features is a JSON {type(value).__name__}, not an object", field="features")
    return dict(value)


def _row_features(value: Any) -> tuple[dict[str, Any], str | None]:
    try:
        return _features(value), None
    except DataValidationError as exc:
        return {}, str(exc)


def ensure_driver_rows(engine: Engine, book_id: str) -> int:
    """Create the 8 drivers × 3 timeframes rows of a book if missing; returns how many were created."""
    rows: list[dict[str, Any]] = [
        {
            "token_contract": driver,
            "token_chain": REGIME_DRIVER_CHAIN,
            "timeframe": tf,
            "book_id": book_id,
            "status": REGIME_DRIVER_STATUS,
            "features": {},
        }
        for driver in DRIVERS
        for tf in REGIME_TIMEFRAMES
    ]
    with engine.begin() as conn:
        before = _count_driver_rows(conn, book_id)
        upsert_rows(
            conn,
            lowcap_positions,
            rows,
            conflict_cols=("token_contract", "token_chain", "timeframe", "book_id"),
            update_cols=None,
        )
        return _count_driver_rows(conn, book_id) - before


def _count_driver_rows(conn: sa.Connection, book_id: str) -> int:
    t = lowcap_positions
    q = sa.select(sa.func.count()).where(t.c.status == REGIME_DRIVER_STATUS, t.c.book_id == book_id)
    return int(conn.execute(q).scalar() or 0)


def driver_row_ids(engine: Engine, book_id: str) -> dict[DriverKey, int]:
    """(driver, timeframe) → row id of a book's regime-driver rows."""
    t = lowcap_positions
    q = sa.select(t.c.id, t.c.token_contract, t.c.timeframe).where(
        t.c.status == REGIME_DRIVER_STATUS, t.c.book_id == book_id, t.c.token_chain == REGIME_DRIVER_CHAIN
    )
    with engine.connect() as conn:
        return {(r.token_contract, r.timeframe): int(r.id) for r in conn.execute(q)}


def driver_row(engine: Engine, book_id: str, driver: str, timeframe: str) -> tuple[int, dict[str, Any]] | None:
    """(row id, whole ``features``) of one regime-driver row of a book in one query, or None when it is missing
    (unique by token, chain, timeframe and book)."""
    t = lowcap_positions
    q = sa.select(t.c.id, t.c.features).where(
        t.c.status == REGIME_DRIVER_STATUS,
        t.c.book_id == book_id,
        t.c.token_chain == REGIME_DRIVER_CHAIN,
        t.c.token_contract == driver,
        t.c.timeframe == timeframe,
    )
    with engine.connect() as conn:
        row = conn.execute(q).one_or_none()
    return None if row is None else (int(row.id), _features(row.features))


def read_driver_features(
    engine: Engine, book_id: str, keys: Sequence[str] | None = ("regime_engine_v4",)
) -> dict[DriverKey, dict[str, Any]]:
    """(driver, timeframe) → ``features`` of a book's driver rows, restricted to ``keys`` (None = all)."""
    t = lowcap_positions
    q = sa.select(t.c.token_contract, t.c.timeframe, t.c.features).where(
        t.c.status == REGIME_DRIVER_STATUS, t.c.book_id == book_id, t.c.token_chain == REGIME_DRIVER_CHAIN
    )
    out: dict[DriverKey, dict[str, Any]] = {}
    try:
        with engine.connect() as conn:
            for r in conn.execute(q):
                feats, problem = _row_features(r.features)
                if problem is not None:  # one unreadable driver row counts missing; it does not hide the others
                    log.warning("driver row unreadable %s", kv(book=book_id, driver=r.token_contract, error=problem))
                out[(r.token_contract, r.timeframe)] = (
                    feats if keys is None else {k: feats[k] for k in keys if k in feats}
                )
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"reading driver features of book {book_id!r} failed: {exc}") from exc
    return out


def _set_feature_stmt(dialect: str) -> sa.TextClause:
    if dialect == "postgresql":
        return sa.text(
            "UPDATE lowcap_positions SET features = jsonb_set(COALESCE(features, '{}'::jsonb), "
            "ARRAY[CAST(:key AS text)], CAST(:value AS jsonb), true), updated_at = now() WHERE id = :id"
        )
    if dialect == "sqlite":
        return sa.text(
            "UPDATE lowcap_positions SET features = json_set(COALESCE(features, '{}'), "
            "'$.\"' || :key || '\"', json(:value)), updated_at = CURRENT_TIMESTAMP WHERE id = :id"
        )
    raise StoreError(f"unsupported database dialect {dialect!r}")


def set_features_bulk(engine: Engine, updates: Iterable[tuple[int, str, Any]]) -> int:
    """Set ``features[key] = value`` for each (row id, key, value), all in one transaction.

    Only that key of that row changes; a missing row id is an error (nothing is written).
    """
    params = []
    for row_id, key, value in updates:
        if not key or '"' in key:
            raise UnknownInputError(f"invalid features key {key!r}")
        params.append({"id": int(row_id), "key": key, "value": dumps(value)})
    if not params:
        return 0
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                _set_features_pg(conn, params)
            else:
                result = conn.execute(_set_feature_stmt(conn.dialect.name), params)
                if result.rowcount is not None and 0 <= result.rowcount < len(params):
                    raise StoreError(f"features update matched {result.rowcount} of {len(params)} rows; rolled back")
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"features update of {len(params)} rows failed: {exc}") from exc
    return len(params)


PG_PAGE_ROWS = 1_000  # rows per UPDATE … FROM (VALUES …) statement


def _set_features_pg(conn: sa.Connection, params: list[dict[str, Any]]) -> None:
    """One ``UPDATE … FROM (VALUES …)`` per 1,000 rows instead of a round trip per row (executemany).

    The keys of one row are merged into one object first (later values win, as successive updates would) and
    applied with ``||``, which sets top-level keys exactly as ``jsonb_set(…, ARRAY[key], value, true)`` does;
    an UPDATE … FROM changes each row once, so a row must appear once per statement.
    """
    from psycopg2.extras import execute_values

    patches: dict[int, dict[str, str]] = {}
    for p in params:
        patches.setdefault(p["id"], {})[p["key"]] = p["value"]
    rows = [
        (row_id, "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in kv.items()) + "}") for row_id, kv in patches.items()
    ]
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    matched = 0
    cur = dbapi.cursor()
    try:
        for start in range(0, len(rows), PG_PAGE_ROWS):
            page = rows[start : start + PG_PAGE_ROWS]
            execute_values(
                cur,
                "UPDATE lowcap_positions AS p SET features = COALESCE(p.features, '{}'::jsonb) || v.patch::jsonb, "
                "updated_at = now() FROM (VALUES %s) AS v(id, patch) WHERE p.id = v.id",
                page,
                template="(%s::bigint, %s)",
                page_size=len(page),
            )
            matched += cur.rowcount
    finally:
        cur.close()
    if matched < len(rows):
        raise StoreError(f"features update matched {matched} of {len(rows)} rows; rolled back")


def set_feature(engine: Engine, row_id: int, key: str, value: Any) -> None:
    """Set one top-level key of one row's ``features``, leaving every other key as it is."""
    set_features_bulk(engine, [(row_id, key, value)])


def get_features(engine: Engine, row_id: int) -> dict[str, Any]:
    """The whole ``features`` object of one row."""
    q = sa.select(lowcap_positions.c.features).where(lowcap_positions.c.id == row_id)
    with engine.connect() as conn:
        value = conn.execute(q).scalar_one_or_none()
    if value is None:
        raise StoreError(f"no lowcap_positions row with id {row_id}")
    return _features(value)


def insert_position(
    engine: Engine,
    *,
    token_contract: str,
    token_chain: str,
    timeframe: str,
    status: str,
    book_id: str = "onchain_crypto",
    bucket: str | None = None,
    features: Mapping[str, Any] | None = None,
) -> int:
    """Insert one position row (hosts normally own these; used by tests, demos and benchmarks)."""
    with engine.begin() as conn:
        result = conn.execute(
            sa.insert(lowcap_positions).values(
                token_contract=token_contract,
                token_chain=token_chain,
                timeframe=timeframe,
                status=status,
                book_id=book_id,
                bucket=bucket,
                features=json.loads(dumps(dict(features or {}))),
            )
        )
        primary_key = result.inserted_primary_key
        assert primary_key is not None  # a single-row INSERT always returns it
        return int(primary_key[0])


def iter_lever_positions(
    engine: Engine, *, book_ids: Sequence[str] | None = None, batch_rows: int = 1_000
) -> Iterator[list[PositionRow]]:
    """Positions with status active/watchlist (never regime drivers), in id order, ``batch_rows`` at a time.

    ``market_cap_usd`` comes from ``tokens`` (same contract and chain) for bucket assignment. The ids are listed
    in one statement, then each batch is read by its ids alone, which leaves the planner nothing but primary-key
    lookups; the filters are applied again here, so a row that changed status or book meanwhile is left out.
    With the filters in the batch's SQL (or paging by ``id > last … LIMIT``), PostgreSQL scanned the whole status
    index for every batch whenever the table's statistics were stale, as right after a host inserted many
    positions: quadratic, 0.86 s of a 30,000-row task against 0.08 s with fresh statistics.
    """
    p, tk = lowcap_positions, tokens
    wanted = [p.c.status.in_(LEVER_POSITION_STATUSES)]
    if book_ids is not None:
        wanted.append(p.c.book_id.in_(list(book_ids)))
    statuses, books = frozenset(LEVER_POSITION_STATUSES), None if book_ids is None else frozenset(book_ids)
    with engine.connect() as conn:
        ids = conn.execute(sa.select(p.c.id).where(*wanted).order_by(p.c.id)).scalars().all()
    for start in range(0, len(ids), batch_rows):
        q = (
            sa.select(
                p.c.id,
                p.c.token_contract,
                p.c.token_chain,
                p.c.timeframe,
                p.c.book_id,
                p.c.status,
                p.c.bucket,
                p.c.features,
                tk.c.market_cap_usd,
            )
            .select_from(
                p.outerjoin(tk, sa.and_(tk.c.token_contract == p.c.token_contract, tk.c.token_chain == p.c.token_chain))
            )
            .where(p.c.id.in_(ids[start : start + batch_rows]))
            .order_by(p.c.id)
        )
        with engine.connect() as conn:
            rows = conn.execute(q).all()
        rows = [r for r in rows if r.status in statuses and (books is None or r.book_id in books)]
        if not rows:
            continue
        yield [
            PositionRow(
                id=int(r.id),
                token_contract=r.token_contract,
                token_chain=r.token_chain,
                timeframe=r.timeframe,
                book_id=r.book_id,
                status=r.status,
                bucket=r.bucket,
                market_cap_usd=None if r.market_cap_usd is None else float(r.market_cap_usd),
                features=feats,
                problem=problem,
            )
            for r in rows
            for feats, problem in (_row_features(r.features),)
        ]


def upsert_tokens(engine: Engine, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert or update tokens (contract, chain, symbol, market_cap_usd, market_cap_as_of, source, simulated)."""
    now = dt.datetime.now(dt.UTC)
    records = [{**r, "updated_at": now} for r in rows]
    try:
        with engine.begin() as conn:
            return upsert_rows(
                conn,
                tokens,
                records,
                conflict_cols=("token_contract", "token_chain"),
                update_cols=("symbol", "market_cap_usd", "market_cap_as_of", "source", "simulated", "updated_at"),
            )
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"tokens upsert of {len(records)} rows failed: {exc}") from exc


def read_tokens(engine: Engine) -> list[dict[str, Any]]:
    """Every token with its market cap."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(tokens).order_by(tokens.c.token_contract))]
