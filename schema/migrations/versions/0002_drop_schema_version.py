"""Drop schema_version: Alembic's alembic_version table now records the schema's version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

The table is dropped only when it has exactly the columns this product created, so a host table of
the same name (a shared database, plan §2.1) is left alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

OUR_COLUMNS = {"version", "description", "applied_at"}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if not inspector.has_table("schema_version"):
        return
    if {c["name"] for c in inspector.get_columns("schema_version")} == OUR_COLUMNS:
        op.drop_table("schema_version")


def downgrade() -> None:
    op.create_table(
        "schema_version",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.current_timestamp()),
    )
