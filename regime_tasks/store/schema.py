"""The database schema: one SQLAlchemy Core metadata for SQLite and PostgreSQL.

This module is the single source of truth for tables (plan §6, DECISIONS D1). A change here needs
two more steps: an Alembic migration in ``schema/migrations/versions/`` (``alembic -c
schema/alembic.ini revision --autogenerate -m "…"`` drafts it; never edit an applied one), and
``regime db dump-schema --out schema`` to regenerate ``schema/*.sql``. ``store.db.init_db`` (``regime
db init``) runs the migrations; tests fail when the migrations or the SQL files drift from here.

Prices are double precision, not the plan's NUMERIC: every consumer computes in float64
(pandas/numpy), NUMERIC would round-trip through ``Decimal`` on each read (~10× slower for a
3,000-bar window) and exchange prices carry ≤ 15 significant digits, which a double holds exactly
enough for TA.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from regime_tasks.core.constants import DEFAULT_BOOK_ID


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive UTC
    and re-attached to UTC when read. Naive inputs are rejected: a naive time is a bug upstream.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamps must be timezone-aware UTC")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY, PostgreSQL wants BIGINT for large tables.
IdType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Price = sa.Float(precision=53)

metadata = sa.MetaData()


def _ohlc_columns() -> list[sa.Column]:
    return [
        sa.Column("open_usd", Price, nullable=False),
        sa.Column("high_usd", Price, nullable=False),
        sa.Column("low_usd", Price, nullable=False),
        sa.Column("close_usd", Price, nullable=False),
        sa.Column("volume", Price, nullable=False),
        sa.Column("source", sa.String(32), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
    ]


majors_price_data_ohlc = sa.Table(
    "majors_price_data_ohlc",
    metadata,
    sa.Column("token_contract", sa.String(32), primary_key=True),  # BTC, ETH, SOL, BNB, HYPE
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("timestamp", UTCDateTime(), primary_key=True),  # bar open time, UTC
    *_ohlc_columns(),
)

lowcap_price_data_ohlc = sa.Table(
    "lowcap_price_data_ohlc",
    metadata,
    sa.Column("token_contract", sa.String(128), primary_key=True),
    sa.Column("token_chain", sa.String(32), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("timestamp", UTCDateTime(), primary_key=True),
    *_ohlc_columns(),
)

regime_price_data_ohlc = sa.Table(  # plan §6.1
    "regime_price_data_ohlc",
    metadata,
    sa.Column("driver", sa.String(16), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("timestamp", UTCDateTime(), primary_key=True),
    *_ohlc_columns(),
    sa.Column("constituents", sa.Integer, nullable=True),  # composites: members that formed the bar (D3)
)

lowcap_positions = sa.Table(  # plan §2.1, §6.2, D1; hosts may add columns: we never touch unknown ones
    "lowcap_positions",
    metadata,
    sa.Column("id", IdType, primary_key=True, autoincrement=True),
    sa.Column("token_contract", sa.String(128), nullable=False),
    sa.Column("token_chain", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("book_id", sa.String(64), nullable=False, server_default=DEFAULT_BOOK_ID),
    sa.Column("status", sa.String(32), nullable=False),  # active | watchlist | regime_driver | (host's own)
    sa.Column("bucket", sa.String(16), nullable=True),  # explicit market-cap bucket; else from tokens
    sa.Column("features", JSONType, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
    sa.UniqueConstraint("token_contract", "token_chain", "timeframe", "book_id", name="uq_positions_identity"),
    sa.Index("ix_positions_status_book", "status", "book_id"),
)

uptrend_state_events = sa.Table(
    "uptrend_state_events",
    metadata,
    sa.Column("id", IdType, primary_key=True, autoincrement=True),
    sa.Column("book_id", sa.String(64), nullable=False),
    sa.Column("token_contract", sa.String(128), nullable=False),  # driver name for regime drivers
    sa.Column("token_chain", sa.String(32), nullable=False),
    sa.Column("timeframe", sa.String(8), nullable=False),
    sa.Column("bar_ts", UTCDateTime(), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False, server_default="uptrend_state_change"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("prev_state", sa.String(16), nullable=True),
    sa.Column("price", Price, nullable=True),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
    # A re-run for the same bar must not duplicate the event.
    sa.UniqueConstraint("book_id", "token_contract", "token_chain", "timeframe", "bar_ts", name="uq_events_bar"),
)

tokens = sa.Table(  # bucket membership (D3)
    "tokens",
    metadata,
    sa.Column("token_contract", sa.String(128), primary_key=True),
    sa.Column("token_chain", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=True),
    sa.Column("market_cap_usd", Price, nullable=True),
    sa.Column("market_cap_as_of", UTCDateTime(), nullable=True),
    sa.Column("source", sa.String(32), nullable=True),
    sa.Column("simulated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
)

token_caps = sa.Table(  # market cap per token per day (D16): point-in-time bucket membership (D3)
    "token_caps",
    metadata,
    sa.Column("token_contract", sa.String(128), primary_key=True),
    sa.Column("token_chain", sa.String(32), primary_key=True),
    sa.Column("day", UTCDateTime(), primary_key=True),  # the 1d bar's open; the cap is at that bar's close
    sa.Column("market_cap_usd", Price, nullable=False),
    sa.Column("close_usd", Price, nullable=True),
    sa.Column("circulating_supply", Price, nullable=True),
    sa.Column("supply_as_of", UTCDateTime(), nullable=True),  # supply snapshot used: later than ``day`` = look-ahead
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
)

dominance_samples = sa.Table(  # raw CoinGecko /global samples (D4)
    "dominance_samples",
    metadata,
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("fetched_at", UTCDateTime(), primary_key=True),
    sa.Column("btc_d", Price, nullable=False),
    sa.Column("usdt_d", Price, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=True),  # the source's own data time
)

regime_meta = sa.Table(  # small key/value facts: bootstrap completion, last tick per timeframe
    "regime_meta",
    metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
)

PRICE_TABLES: dict[str, sa.Table] = {
    "majors": majors_price_data_ohlc,
    "lowcap": lowcap_price_data_ohlc,
    "regime": regime_price_data_ohlc,
}
# The columns that identify one series in each price table (besides timeframe and timestamp).
SERIES_KEYS: dict[str, tuple[str, ...]] = {
    "majors": ("token_contract",),
    "lowcap": ("token_contract", "token_chain"),
    "regime": ("driver",),
}


# The dialects we support, with the compiler each uses for `regime db dump-schema`.
DIALECTS: dict[str, Dialect] = {"postgresql": postgresql.dialect(), "sqlite": sqlite.dialect()}

_SQL_HEADER = """\
-- The regime-engine schema for {dialect}: every table of regime_tasks/store/schema.py.
-- Generated by `regime db dump-schema --out schema`; do not edit (tests/store/test_schema_sql.py
-- fails when this file and the metadata drift apart). Databases are created and upgraded by
-- the Alembic migrations in schema/migrations/ (`regime db init`), not from this file.
"""


def schema_sql(dialect_name: str) -> str:
    """The ``CREATE TABLE``/``CREATE INDEX`` statements of ``metadata`` compiled for one dialect.

    Tables come in dependency order, then name; each statement ends with ``;`` so the text runs in
    ``psql``/``sqlite3`` as it is.
    """
    dialect = DIALECTS.get(dialect_name)
    if dialect is None:
        raise ValueError(f"unknown dialect {dialect_name!r}: choose one of {', '.join(DIALECTS)}")
    statements: list[str] = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        indexes = sorted(table.indexes, key=lambda i: str(i.name))
        statements.extend(str(CreateIndex(index).compile(dialect=dialect)) for index in indexes)
    # SQLAlchemy indents with tabs and leaves ", " at line ends: normalise so the files diff cleanly.
    body = "\n\n".join(
        "\n".join(line.rstrip().replace("\t", "    ") for line in stmt.strip().splitlines()) + ";"
        for stmt in statements
    )
    return _SQL_HEADER.format(dialect=dialect_name) + "\n" + body + "\n"


def write_schema_sql(out_dir: Path, dialects: Iterable[str] = DIALECTS) -> list[Path]:
    """Write ``<out_dir>/<dialect>.sql`` for each dialect; return the paths written.

    Each file is written to a temporary name and renamed over the old one, so a failure leaves the
    previous file whole. Raises ``OSError`` when the folder cannot be created or written.
    """
    texts = {name: schema_sql(name) for name in dialects}  # unknown dialects fail before any write
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in texts.items():
        target = out_dir / f"{name}.sql"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".sql", dir=out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written
