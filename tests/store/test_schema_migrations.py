"""Alembic migrations (schema/migrations/): `regime db init` runs them on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from regime_tasks.cli import main
from regime_tasks.store import meta
from regime_tasks.store.db import BASELINE_REVISION, alembic_config, head_revision, init_db, make_engine
from regime_tasks.store.schema import metadata
from tests.conftest import REPO_ROOT

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, cached=False)
    yield eng
    eng.dispose()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _migrate(engine: Engine, target: str, *, down: bool = False) -> None:
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, target)


def test_init_db_migrates_a_fresh_database_to_exactly_the_metadata(engine: Engine) -> None:
    changes = init_db(engine)
    assert _revision(engine) == HEAD
    assert next(c for c in changes if c.startswith("applied migration")).startswith("applied migration 0001")
    assert _tables(engine) == set(metadata.tables) | {"alembic_version"}
    with engine.connect() as conn:  # what autogenerate would write for the migrations to reach schema.py
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_server_default": True}), metadata)
    assert diff == [], f"store/schema.py changed without a migration in schema/migrations/versions/: {diff}"


def test_init_db_on_a_pre_alembic_database_stamps_it_and_keeps_its_rows(engine: Engine) -> None:
    # What init_db left before Alembic: revision 0001's tables, a schema_version row, no alembic_version.
    _migrate(engine, BASELINE_REVISION)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, description) VALUES (1, 'initial schema')"))
    meta.set_meta(engine, "probe", {"kept": True})

    changes = init_db(engine)

    assert changes[0] == f"stamped the pre-Alembic schema as revision {BASELINE_REVISION}"
    assert not any(c.startswith("applied migration 0001") for c in changes)
    created = {c.removeprefix("created table ") for c in changes if c.startswith("created table")}
    assert created <= {"token_caps"}  # only tables that revisions after the baseline add (0003)
    assert "dropped table schema_version" in changes
    assert _revision(engine) == HEAD
    assert meta.get_meta(engine, "probe") == {"kept": True}
    assert init_db(engine) == []


def test_init_db_keeps_the_hosts_own_positions_table(engine: Engine) -> None:
    with engine.begin() as conn:  # a host database (plan §2.1): its lowcap_positions has columns of its own
        conn.execute(
            sa.text(
                "CREATE TABLE lowcap_positions (id INTEGER PRIMARY KEY, token_contract VARCHAR(128) NOT NULL,"
                " token_chain VARCHAR(32) NOT NULL, timeframe VARCHAR(8) NOT NULL,"
                " book_id VARCHAR(64) NOT NULL, status VARCHAR(32) NOT NULL, bucket VARCHAR(16),"
                " features TEXT NOT NULL DEFAULT '{}', created_at TIMESTAMP, updated_at TIMESTAMP,"
                " host_note VARCHAR(64))"
            )
        )
    changes = init_db(engine)
    assert "created table lowcap_positions" not in changes and "created table tokens" in changes
    assert "host_note" in {c["name"] for c in sa.inspect(engine).get_columns("lowcap_positions")}
    assert _revision(engine) == HEAD


def test_migrations_downgrade_to_nothing_and_upgrade_again(engine: Engine) -> None:
    init_db(engine)
    _migrate(engine, "base", down=True)
    assert _tables(engine) <= {"alembic_version"}
    assert init_db(engine)[0].startswith("applied migration 0001")
    assert _revision(engine) == HEAD


def test_regime_db_init_reports_the_migrations_then_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from regime_tasks.runtime import reset_runtime

    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    reset_runtime()
    try:
        assert main(["db", "init", "--json"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert main(["db", "init", "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
    finally:
        monkeypatch.delenv("REGIME_DATABASE_URL")
        reset_runtime()
    assert any(c.startswith("applied migration") for c in first["changes"])
    assert second["changes"] == []


@pytest.mark.slow
def test_plain_alembic_command_upgrades_the_configured_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'alembic_cli.db'}"
    env = {**os.environ, "REGIME_DATABASE_URL": url}
    ini = REPO_ROOT / "schema" / "alembic.ini"
    run = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    eng = make_engine(url, cached=False)
    try:
        assert _revision(eng) == HEAD
        assert init_db(eng) == []
    finally:
        eng.dispose()


def test_docker_image_ships_the_migrations_beside_the_package() -> None:
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY schema ./schema" in dockerfile and "COPY regime_tasks ./regime_tasks" in dockerfile


def test_head_from_the_file_names_is_alembics_head() -> None:
    # init_db's fast path trusts the file names (<revision>_<slug>.py, one line of history): keep them so
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]
    assert head_revision() == HEAD


def test_a_process_on_an_up_to_date_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    eng = make_engine(url, cached=False)
    init_db(eng)
    eng.dispose()
    code = (
        "import sys; from regime_tasks.store.db import init_db, make_engine; "
        f"print(init_db(make_engine({url!r})), 'alembic' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == ["[]", "False"]
