"""Engines, schema migrations (Alembic) and JSON encoding shared by the store modules."""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.errors import StoreError
from regime_tasks.logs import kv

if TYPE_CHECKING:  # Alembic is imported only when a database needs migrating: ~0.2 s of every process start
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()

# schema/ (generated SQL, Alembic's ini and migrations) sits beside the package in the source tree.
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schema"
# The revision whose tables a database created before Alembic already has.
BASELINE_REVISION = "0001"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the levers reader and the pipeline writer work at once; busy_timeout waits for locks
    # instead of failing with "database is locked" when two embedded threads write.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


# SQLAlchemy sends an INSERT … ON CONFLICT DO UPDATE (every upsert of ours below the COPY threshold) with many
# parameter sets through psycopg2's plain executemany, one round trip per row: 148 ms per 1,000 bars, 17 s of the
# worker tests' setup. "values_plus_batch" keeps the one-statement form for plain INSERTs and sends the others in
# pages of 100 statements per round trip (psycopg2.extras.execute_batch). Its one cost, a rowcount that is not
# the total for an executemany UPDATE or DELETE, concerns no statement of ours on PostgreSQL (the features update
# counts its own rows: store.positions).
_PSYCOPG2_NAMES = ("postgresql", "postgresql+psycopg2")
_PSYCOPG2_OPTIONS: dict[str, Any] = {"executemany_mode": "values_plus_batch", "executemany_batch_page_size": 500}


def make_engine(url: str, *, cached: bool = True) -> Engine:
    """Create (or reuse) an engine for ``url``; SQLite files get their folder and WAL mode."""
    if cached:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(url)
            if engine is not None:
                return engine
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30}, pool_pre_ping=False, json_deserializer=loads)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            connect_args={"connect_timeout": 5} if url.startswith("postgresql") else {},
            json_deserializer=loads,  # psycopg2 decodes json/jsonb columns with it
            **(_PSYCOPG2_OPTIONS if sa.engine.make_url(url).drivername in _PSYCOPG2_NAMES else {}),
        )
    if cached:
        with _ENGINES_LOCK:
            _ENGINES.setdefault(url, engine)
            return _ENGINES[url]
    return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, worker process shutdown, after fork)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def alembic_config() -> AlembicConfig:
    """Alembic's configuration: ``schema/alembic.ini`` of the source tree this package runs from."""
    from alembic.config import Config as AlembicConfig

    ini = SCHEMA_DIR / "alembic.ini"
    if not ini.is_file():
        raise StoreError(
            f"schema migrations not found at {SCHEMA_DIR}: install from a source checkout "
            "(`pip install -e .`, as the README and Dockerfile do) so schema/ sits beside regime_tasks/"
        )
    return AlembicConfig(str(ini))


def _revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest migration, from the file names (``<revision>_<slug>.py``, one line of history) without importing
    Alembic; tests/store/test_schema_migrations.py checks it against Alembic's own answer."""
    versions = SCHEMA_DIR / "migrations" / "versions"
    revisions = sorted(path.name.split("_", 1)[0] for path in versions.glob("*_*.py"))
    return revisions[-1] if revisions else None


def _at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return False
        current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return current == [head_revision()]


def init_db(engine: Engine) -> list[str]:
    """Create or upgrade the schema by running the Alembic migrations up to head (``regime db init``).

    A database created before Alembic (our ``schema_version`` table, no ``alembic_version``) is
    stamped at the first revision, whose tables it already has, then upgraded. Tables another
    application created (a host's ``lowcap_positions``) are kept as they are. Idempotent: a second
    call changes nothing and returns ``[]``; otherwise returns one line per change.
    """
    try:
        if _at_head(engine):  # every process start lands here: no Alembic import, two small queries
            return []
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"schema check failed on {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    changes: list[str] = []
    try:
        with engine.begin() as conn:
            before = _revision(conn)
            before_tables = set(sa.inspect(conn).get_table_names())
            config.attributes["connection"] = conn
            if before is None and "schema_version" in before_tables:
                command.stamp(config, BASELINE_REVISION)
                before = BASELINE_REVISION
                changes.append(f"stamped the pre-Alembic schema as revision {BASELINE_REVISION}")
            command.upgrade(config, "head")
            after = _revision(conn)
            after_tables = set(sa.inspect(conn).get_table_names())
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"schema init failed on {engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    finally:
        config.attributes.pop("connection", None)
    if after != before:
        applied = reversed(list(script.iterate_revisions(after, before)))
        changes.extend(f"applied migration {rev.revision}: {(rev.doc or '').splitlines()[0]}" for rev in applied)
    changes.extend(f"created table {name}" for name in sorted(after_tables - before_tables - {"alembic_version"}))
    changes.extend(f"dropped table {name}" for name in sorted(before_tables - after_tables))
    database = engine.url.render_as_string(hide_password=True)
    for change in changes:
        log.info("schema changed %s", kv(database=database, change=change))
    return changes


def _clean(value: Any) -> Any:
    # JSON has no NaN/Infinity (PostgreSQL jsonb rejects them): an undefined number is null.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalar
        return _clean(value.item())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def to_json_value(value: Any) -> Any:
    """Make a payload JSON-safe: NaN/inf → null, numpy scalars → Python, datetimes → ISO strings."""
    return _clean(value)


_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str | bytes) -> Any:
    """Decode a JSON column exactly as the standard library does, in a third of its time where that is safe.

    orjson reads an integer beyond 64 bits as a float (a token amount in wei, ``1000000000000000000000``, would
    come back rounded), so a document with a run of 19 or more digits anywhere goes to the standard library, as
    does anything orjson refuses; the levers task reads 100k rows of ``features`` through this.
    """
    if isinstance(text, bytes | bytearray):
        text = text.decode()
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def dumps(value: Any) -> str:
    """Serialise a payload for a JSON column (strict JSON, no NaN).

    orjson writes NaN and ±inf as null, as :func:`to_json_value` does, and is ~10× faster than walking the payload
    first (the levers task writes 100k of them); what orjson does not take as it is (numpy scalars, non-string
    keys, datetime subclasses such as ``pd.Timestamp``) goes through :func:`to_json_value` and the standard
    library, as before.
    """
    if value.__class__ is dict:
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    return json.dumps(to_json_value(value), allow_nan=False, separators=(",", ":"))


def dialect_insert(table: sa.Table, dialect_name: str) -> Any:
    """The dialect's INSERT construct (both support ``on_conflict_do_update`` / ``_do_nothing``)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise StoreError(f"unsupported database dialect {dialect_name!r}: use SQLite or PostgreSQL")


def upsert_rows(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    *,
    conflict_cols: tuple[str, ...],
    update_cols: tuple[str, ...] | None,
    batch_rows: int = 5_000,
) -> int:
    """INSERT … ON CONFLICT on the natural key, in batches, inside the caller's transaction.

    ``update_cols=None`` means DO NOTHING on conflict (append-only facts such as events).
    """
    if not rows:
        return 0
    for start in range(0, len(rows), batch_rows):
        batch = rows[start : start + batch_rows]
        stmt = dialect_insert(table, conn.dialect.name)
        if update_cols is None:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict_cols))
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(conflict_cols), set_={c: stmt.excluded[c] for c in update_cols}
            )
        conn.execute(stmt, batch)
    return len(rows)
