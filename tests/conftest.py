"""Shared fixtures: real data paths, service connections and the service-test policy.

Service policy: tests marked ``service`` (PostgreSQL/Redis) or ``worker`` (a real Celery worker)
*run* whenever the service answers. When it does not: with ``CI=true`` the test **fails**
(CI must prove them); elsewhere it is skipped with the reason, so a laptop without services
still runs the rest.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real data slices copied into the repository (tests/data/README.md says where each comes from).
TEST_DATA = REPO_ROOT / "tests" / "data"
REAL_DATA = TEST_DATA / "real"
API_SAMPLES = TEST_DATA / "api_samples"

TEST_PG_URL = os.environ.get("REGIME_TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("REGIME_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg2", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> None:
    """Fail in CI, skip elsewhere, when a service does not answer."""
    if _reachable(url, default_port):
        return
    message = f"{name} not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: service tests must run)")
    pytest.skip(message)


def real_file(*parts: str) -> Path:
    """Path of a file in ``tests/data/real``; fails (never skips) if it is missing."""
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"real data file missing: {path}")
    return path


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL schema for this test session, dropped afterwards."""
    require_service("PostgreSQL", TEST_PG_URL, 5432)
    import sqlalchemy as sa

    schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(TEST_PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in TEST_PG_URL else "?"
    yield f"{TEST_PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture()
def redis_url() -> Iterator[str]:
    """URL of the test Redis database, flushed before and after the test."""
    require_service("Redis", TEST_REDIS_URL, 6379)
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    yield TEST_REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'regime.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL on each back end; the PostgreSQL one is a fresh schema, emptied per test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'regime.db'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = (
            conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars().all()
        )
        if tables:
            conn.execute(sa.text("DROP TABLE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))
    engine.dispose()


@pytest.fixture()
def redis_packets(monkeypatch) -> Iterator[list[bytes]]:
    """Every packet redis-py sends from this process (one per round trip; a pipeline is one packet).

    Counted on the client: the server's commandstats are server-wide and other test processes may share it.
    """
    from redis.connection import AbstractConnection

    packets: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def spy(self, command, check_health=True):
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)
        packets.append(b"".join(c if isinstance(c, bytes) else c.encode() for c in chunks))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", spy)
    yield packets


@pytest.fixture()
def embedded_cli(tmp_path: Path, files_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The `regime` command in embedded mode (in-memory broker, an in-process worker) on a fresh SQLite database in
    ``tmp_path``, reading ``files_dir``; short history windows keep a bootstrap quick."""
    from regime_tasks.config import get_settings
    from regime_tasks.runtime import reset_runtime

    for name, value in {
        "REGIME_DATA_DIR": str(tmp_path),
        "REGIME_FILES_DIR": str(files_dir),
        "REGIME_SOURCE": "file",
        "REGIME_BROKER_URL": "memory://",
        "REGIME_RESULT_BACKEND": "cache+memory://",
        "REGIME_REDIS_URL": "",
        "REGIME_HISTORY_1D_DAYS": "30",
        "REGIME_HISTORY_1H_DAYS": "2",
        "REGIME_HISTORY_1M_DAYS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REGIME_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    reset_runtime()
    yield tmp_path
    get_settings.cache_clear()
    reset_runtime()


@pytest.fixture(scope="session")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-source folder: the bundled majors, and the last rows of the bundled dominance files (enough for short
    history windows); no lowcaps, to keep a bootstrap quick (the bucket drivers are optional)."""
    from regime_tasks.config import BUNDLED_DATA_DIR

    root = tmp_path_factory.mktemp("files")
    for part in ("majors", "MANIFEST.json"):
        (root / part).symlink_to(BUNDLED_DATA_DIR / part)
    (root / "dominance").mkdir()
    for tf, rows in (("1d", 900), ("1h", 24 * 25), ("1m", 2_000)):
        lines = (BUNDLED_DATA_DIR / "dominance" / f"{tf}.csv").read_text().splitlines()
        (root / "dominance" / f"{tf}.csv").write_text("\n".join([lines[0], *lines[1:][-rows:]]) + "\n")
    return root


def sqlite_runtime(path: Path, **settings: object):  # -> regime_tasks.runtime.Runtime (imported lazily)
    """A Runtime on a fresh SQLite file at ``path``, its schema created; ``settings`` as for ``Settings``."""
    from regime_tasks.config import Settings
    from regime_tasks.runtime import Runtime
    from regime_tasks.store.db import init_db, make_engine

    s = Settings(database_url=f"sqlite:///{path}", **settings)
    engine = make_engine(s.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=s, engine=engine)
