"""Alembic environment: migrates the regime-engine schema on SQLite or PostgreSQL.

`regime db init` (``store.db.init_db``) passes its open connection in ``config.attributes``; the
plain ``alembic -c schema/alembic.ini …`` command connects to the product's database setting
(``REGIME_DATABASE_URL``). ``target_metadata`` is ``store/schema.py``, so ``alembic revision
--autogenerate`` drafts a migration from a change there (review every draft: it is a proposal).
"""

from __future__ import annotations

from alembic import context

from regime_tasks.store.schema import metadata

config = context.config
target_metadata = metadata


def _configure_and_run(**kwargs: object) -> None:
    # compare_type lets autogenerate notice a changed column type, not only added/removed columns.
    context.configure(target_metadata=target_metadata, compare_type=True, **kwargs)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


def _database_url() -> str:
    from regime_tasks.config import get_settings

    return get_settings().effective_database_url


if context.is_offline_mode():  # `alembic upgrade head --sql`: print the DDL instead of running it
    _configure_and_run(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
elif (connection := config.attributes.get("connection")) is not None:
    _configure_and_run(connection=connection)
else:
    from regime_tasks.config import get_settings
    from regime_tasks.logs import configure_logging
    from regime_tasks.store.db import make_engine

    configure_logging(get_settings().log_level)
    engine = make_engine(_database_url(), cached=False)
    try:
        with engine.begin() as conn:
            _configure_and_run(connection=conn)
    finally:
        engine.dispose()
