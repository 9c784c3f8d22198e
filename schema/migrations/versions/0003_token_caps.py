"""token_caps: market cap per token per day (D16), the history behind point-in-time bucket membership (D3).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``cap(D) = close(D) × circulating supply``; ``supply_as_of`` says which supply snapshot was used (a later one
than ``day`` is a look-ahead approximation, labelled wherever caps are shown). A new table: nothing existing is
altered. Column types are spelled out (a migration is a frozen record of one version).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
PRICE = sa.Float(precision=53)


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("token_caps"):
        return
    op.create_table(
        "token_caps",
        sa.Column("token_contract", sa.String(128), primary_key=True),
        sa.Column("token_chain", sa.String(32), primary_key=True),
        sa.Column("day", TS, primary_key=True),
        sa.Column("market_cap_usd", PRICE, nullable=False),
        sa.Column("close_usd", PRICE, nullable=True),
        sa.Column("circulating_supply", PRICE, nullable=True),
        sa.Column("supply_as_of", TS, nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.current_timestamp()),
    )


def downgrade() -> None:
    op.drop_table("token_caps")
