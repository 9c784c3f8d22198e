"""The database schema: one SQLAlchemy Core metadata for SQLite and PostgreSQL.

This module is the single source of truth for tables (plan §6, DECISIONS D1). ``store.db.init_db``
creates what is missing and records applied versions in ``schema_version``; an upgrade is a new
entry in ``MIGRATIONS`` (never an edit of an applied one).

Prices are double precision, not the plan's NUMERIC: every consumer computes in float64
(pandas/numpy), NUMERIC would round-trip through ``Decimal`` on each read (~10× slower for a
3,000-bar window) and exchange prices carry ≤ 15 significant digits, which a double holds exactly
enough for TA.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

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

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime(), nullable=False, server_default=sa.func.current_timestamp()),
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

# (version, description). Version 1 is "every table of this metadata"; later versions add DDL steps
# in store.db.MIGRATION_STEPS under the same number.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, "initial schema: price tables, positions, events, tokens, dominance"),
    (2, "token_caps: market cap per token per day (D16)"),  # a new table: created by init_db's create_all
)
