"""The README's "Try the production setup offline", run as written.

The first code block of that section is read from README.md and its lines run one by one with bash: the exports,
`regime db init`, `regime bootstrap`, the worker, beat and Flower in the background and `regime status`. Only the
addresses are the test's own — a private redis-server, a private PostgreSQL schema, a free port for Flower — plus
a replay speed of 20 (a replay minute every 3 s) and a trimmed file source with short histories (the bundled
majors and the last rows of its dominance files), so the whole trial takes about a minute. It then checks what
the section promises: ticks arrive in the worker log, the cache is updated and `regime status` moves on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
import sqlalchemy as sa

from regime_tasks.config import BUNDLED_DATA_DIR
from tests.conftest import REPO_ROOT, TEST_PG_URL, require_service
from tests.integration.harness import RedisServer, free_port, wait_port

pytestmark = [pytest.mark.service, pytest.mark.worker, pytest.mark.slow]

SECTION = "## Try the production setup offline"
SPEED = 20  # replay seconds per real second: beat's 1m tick every 3 s


def readme_block() -> list[str]:
    """The lines of the first ```bash block of the section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the section has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture()
def files_dir(tmp_path: Path) -> Path:
    root = tmp_path / "files"
    root.mkdir()
    for part in ("majors", "MANIFEST.json"):
        (root / part).symlink_to(BUNDLED_DATA_DIR / part)
    (root / "dominance").mkdir()
    for tf, rows in (("1d", 500), ("1h", 24 * 12), ("1m", 1_500)):
        lines = (BUNDLED_DATA_DIR / "dominance" / f"{tf}.csv").read_text().splitlines()
        (root / "dominance" / f"{tf}.csv").write_text("\n".join([lines[0], *lines[1:][-rows:]]) + "\n")
    return root


@pytest.fixture()
def private_services() -> Iterator[dict[str, str]]:
    require_service("PostgreSQL", TEST_PG_URL, 5432)
    schema = f"offline_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(TEST_PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    server = RedisServer()
    server.start()
    sep = "&" if "?" in TEST_PG_URL else "?"
    try:
        yield {
            "REGIME_DATABASE_URL": f"{TEST_PG_URL}{sep}options=-csearch_path%3D{schema}",
            "REGIME_REDIS_URL": f"{server.url}/0",
            "REGIME_BROKER_URL": f"{server.url}/1",
            "REGIME_RESULT_BACKEND": f"{server.url}/2",
        }
    finally:
        server.stop()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _status(env: dict[str, str]) -> dict:
    out = subprocess.run(
        ["regime", "status", "--json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _bar(status: dict, driver: str, timeframe: str) -> str | None:
    return next(r["bar_ts"] for r in status["drivers"] if r["driver"] == driver and r["timeframe"] == timeframe)


def test_the_offline_trial_runs_as_written(tmp_path: Path, files_dir: Path, private_services: dict[str, str]) -> None:
    flower_port = free_port()
    overrides = {
        **private_services,
        "REGIME_REPLAY_CLOCK_SPEED": str(SPEED),
        "REGIME_FLOWER_BASIC_AUTH": "ops:s3cret",
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REGIME_")},
        # `source .venv/bin/activate`: this interpreter's scripts (regime, celery) come first on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "REGIME_FILES_DIR": str(files_dir),
        "REGIME_HISTORY_1D_DAYS": "120",  # 1d warms up; BTC and ALT are there
        "REGIME_HISTORY_1H_DAYS": "10",
        "REGIME_HISTORY_1M_DAYS": "1",
        "REGIME_BEAT_HEARTBEAT_SECS": "2",
        "FLOWER_PORT": str(flower_port),
        "FLOWER_ADDRESS": "127.0.0.1",
    }
    background: list[tuple[str, subprocess.Popen, Path]] = []
    ran: list[str] = []
    try:
        for line in readme_block():
            command = line.split("#", 1)[0].strip()
            if command == "source .venv/bin/activate":
                ran.append(command)
                continue
            export = re.fullmatch(r"export (\w+)=(.*)", command)
            if export:
                name, value = export.groups()
                if name not in overrides:  # evaluated by bash as the reader's shell would
                    value = subprocess.run(
                        ["bash", "-c", f"printf %s {value}"], env=env, capture_output=True, text=True, check=True
                    ).stdout
                env[name] = overrides.get(name, value)
                ran.append(command)
                continue
            if command.endswith("&"):
                name = shlex.split(command)[3]  # celery -A regime_tasks <worker|beat|flower>
                log_path = tmp_path / f"{name}.log"
                with log_path.open("wb") as log:
                    proc = subprocess.Popen(
                        ["bash", "-c", "exec " + command[:-1]],
                        cwd=REPO_ROOT,
                        env=dict(env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                background.append((name, proc, log_path))
                ran.append(command)
                continue
            out = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
            assert out.returncode == 0, f"{command}: {out.stderr[-2000:]}"
            ran.append(command)
        assert {n for n, _, _ in background} == {"worker", "beat", "flower"}
        assert ran[-1] == "regime status" and any(c.startswith("regime bootstrap") for c in ran)

        first = _status(env)
        btc_1m = [_bar(first, "BTC", "1m")]
        cache = redis.Redis.from_url(env["REGIME_REDIS_URL"])
        book = env.get("REGIME_BOOK_ID", "onchain_crypto")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(set(btc_1m)) < 3:  # two new bars after the bootstrap
            time.sleep(2)
            btc_1m.append(_bar(_status(env), "BTC", "1m"))
        worker_log = (tmp_path / "worker.log").read_text(errors="replace")
        assert len(set(btc_1m)) >= 3, f"regime status did not move on: {btc_1m}\n{worker_log[-3000:]}"
        assert worker_log.count("Task regime.tick[") >= 2 and "regime.tick.publish" in worker_log
        cached = {k.decode(): json.loads(v) for k, v in cache.hgetall(f"regime:{book}:latest").items()}
        assert cached["BTC|1m"]["bar_ts"] >= btc_1m[-1]  # the cache carries the bars status shows
        wait_port(flower_port, 30)
        assert requests.get(f"http://127.0.0.1:{flower_port}/api/workers", auth=("ops", "s3cret"), timeout=10).ok
    finally:
        for _, proc, _ in reversed(background):
            proc.terminate()
        for _, proc, _ in background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
