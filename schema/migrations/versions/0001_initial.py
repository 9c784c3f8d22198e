"""Initial schema: the tables as they were when Alembic took over (store/schema.py at commit 444ff73).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Each table is created only if missing, as ``init_db`` did before Alembic: the host's database may
already hold its own ``lowcap_positions`` (plan §2.1, D1), and we never re-create or alter a table we
did not create. Column types are spelled out here rather than imported from ``store/schema.py``:
a migration is a frozen record of one version, and ``schema.py`` moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# The same DDL as store/schema.py's UTCDateTime, JSONType, IdType and Price types.
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PRICE = sa.Float(precision=53)
NOW = sa.func.current_timestamp()


def _ohlc() -> list[sa.Column]:
    return [
        sa.Column("open_usd", PRICE, nullable=False),
        sa.Column("high_usd", PRICE, nullable=False),
        sa.Column("low_usd", PRICE, nullable=False),
        sa.Column("close_usd", PRICE, nullable=False),
        sa.Column("volume", PRICE, nullable=False),
        sa.Column("source", sa.String(32), nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=NOW),
    ]


def _tables() -> list[tuple[str, list[sa.SchemaItem]]]:
    return [
        (
            "majors_price_data_ohlc",
            [
                sa.Column("token_contract", sa.String(32), primary_key=True),
                sa.Column("timeframe", sa.String(8), primary_key=True),
                sa.Column("timestamp", TS, primary_key=True),
                *_ohlc(),
            ],
        ),
        (
            "lowcap_price_data_ohlc",
            [
                sa.Column("token_contract", sa.String(128), primary_key=True),
                sa.Column("token_chain", sa.String(32), primary_key=True),
                sa.Column("timeframe", sa.String(8), primary_key=True),
                sa.Column("timestamp", TS, primary_key=True),
                *_ohlc(),
            ],
        ),
        (
            "regime_price_data_ohlc",
            [
                sa.Column("driver", sa.String(16), primary_key=True),
                sa.Column("timeframe", sa.String(8), primary_key=True),
                sa.Column("timestamp", TS, primary_key=True),
                *_ohlc(),
                sa.Column("constituents", sa.Integer, nullable=True),
            ],
        ),
        (
            "lowcap_positions",
            [
                sa.Column("id", ID, primary_key=True, autoincrement=True),
                sa.Column("token_contract", sa.String(128), nullable=False),
                sa.Column("token_chain", sa.String(32), nullable=False),
                sa.Column("timeframe", sa.String(8), nullable=False),
                sa.Column("book_id", sa.String(64), nullable=False, server_default="onchain_crypto"),
                sa.Column("status", sa.String(32), nullable=False),
                sa.Column("bucket", sa.String(16), nullable=True),
                sa.Column("features", JSON, nullable=False, server_default=sa.text("'{}'")),
                sa.Column("created_at", TS, nullable=False, server_default=NOW),
                sa.Column("updated_at", TS, nullable=False, server_default=NOW),
                sa.UniqueConstraint(
                    "token_contract", "token_chain", "timeframe", "book_id", name="uq_positions_identity"
                ),
            ],
        ),
        (
            "uptrend_state_events",
            [
                sa.Column("id", ID, primary_key=True, autoincrement=True),
                sa.Column("book_id", sa.String(64), nullable=False),
                sa.Column("token_contract", sa.String(128), nullable=False),
                sa.Column("token_chain", sa.String(32), nullable=False),
                sa.Column("timeframe", sa.String(8), nullable=False),
                sa.Column("bar_ts", TS, nullable=False),
                sa.Column("event_type", sa.String(32), nullable=False, server_default="uptrend_state_change"),
                sa.Column("state", sa.String(16), nullable=False),
                sa.Column("prev_state", sa.String(16), nullable=True),
                sa.Column("price", PRICE, nullable=True),
                sa.Column("payload", JSON, nullable=False),
                sa.Column("created_at", TS, nullable=False, server_default=NOW),
                sa.UniqueConstraint(
                    "book_id", "token_contract", "token_chain", "timeframe", "bar_ts", name="uq_events_bar"
                ),
            ],
        ),
        (
            "tokens",
            [
                sa.Column("token_contract", sa.String(128), primary_key=True),
                sa.Column("token_chain", sa.String(32), primary_key=True),
                sa.Column("symbol", sa.String(32), nullable=True),
                sa.Column("market_cap_usd", PRICE, nullable=True),
                sa.Column("market_cap_as_of", TS, nullable=True),
                sa.Column("source", sa.String(32), nullable=True),
                sa.Column("simulated", sa.Boolean, nullable=False, server_default=sa.false()),
                sa.Column("updated_at", TS, nullable=False, server_default=NOW),
            ],
        ),
        (
            "dominance_samples",
            [
                sa.Column("source", sa.String(32), primary_key=True),
                sa.Column("fetched_at", TS, primary_key=True),
                sa.Column("btc_d", PRICE, nullable=False),
                sa.Column("usdt_d", PRICE, nullable=False),
                sa.Column("updated_at", TS, nullable=True),
            ],
        ),
        (
            "regime_meta",
            [
                sa.Column("key", sa.String(128), primary_key=True),
                sa.Column("value", JSON, nullable=False),
                sa.Column("updated_at", TS, nullable=False, server_default=NOW),
            ],
        ),
        (
            "schema_version",
            [
                sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
                sa.Column("description", sa.String(200), nullable=False),
                sa.Column("applied_at", TS, nullable=False, server_default=NOW),
            ],
        ),
    ]


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, items in _tables():
        if name in existing:
            continue
        op.create_table(name, *items)
        if name == "lowcap_positions":
            op.create_index("ix_positions_status_book", name, ["status", "book_id"])


def downgrade() -> None:
    # Drops every table of this revision, host data in lowcap_positions included: only for tests and
    # throw-away databases, never for a shared production database.
    for name, _items in reversed(_tables()):
        op.drop_table(name)
