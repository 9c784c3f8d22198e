"""``regime flower`` never serves Flower without authentication outside embedded mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from regime_tasks.cli.flower import flower_command
from regime_tasks.config import load_settings
from regime_tasks.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.integration.harness import free_port, wait_port


def test_flower_refuses_to_start_without_credentials_outside_embedded_mode() -> None:
    settings = load_settings(broker_url="redis://127.0.0.1:6379/1", flower_basic_auth=None)
    with pytest.raises(ConfigError, match="REGIME_FLOWER_BASIC_AUTH"):
        flower_command(settings, {})


def test_flower_listens_on_loopback_by_default_and_gets_credentials_from_its_environment() -> None:
    settings = load_settings(broker_url="redis://127.0.0.1:6379/1", flower_basic_auth="ops:s3cret")

    argv, env = flower_command(settings, {"FLOWER_BASIC_AUTH": "", "FLOWER_ADDRESS": "0.0.0.0", "PATH": "/bin"})

    assert env["FLOWER_ADDRESS"] == "127.0.0.1" and env["FLOWER_BASIC_AUTH"] == "ops:s3cret"
    assert not any("s3cret" in a for a in argv)  # not visible in `ps`
    assert argv[1:] == ["-m", "celery", "-A", "regime_tasks", "flower"]


def test_cli_flower_without_credentials_is_one_line_exit_2(monkeypatch, capsys) -> None:
    from regime_tasks.cli import main
    from regime_tasks.config import get_settings

    monkeypatch.setenv("REGIME_BROKER_URL", "redis://127.0.0.1:6379/1")
    monkeypatch.delenv("REGIME_FLOWER_BASIC_AUTH", raising=False)
    get_settings.cache_clear()
    try:
        assert main(["flower"]) == 2
    finally:
        get_settings.cache_clear()
    assert "REGIME_FLOWER_BASIC_AUTH" in capsys.readouterr().err


@pytest.mark.service
@pytest.mark.slow
def test_every_flower_page_asks_for_the_password(redis_url) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REGIME_BROKER_URL": redis_url,
        "REGIME_RESULT_BACKEND": redis_url,
        "REGIME_FLOWER_BASIC_AUTH": "ops:s3cret",
        "REGIME_FLOWER_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "regime_tasks.cli", "flower"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, 30)
        base = f"http://127.0.0.1:{port}"
        for page in ("/", "/workers", "/tasks", "/broker", "/api/workers"):
            assert requests.get(f"{base}{page}", timeout=10).status_code == 401, page
        deadline = time.monotonic() + 10
        while requests.get(f"{base}/", auth=("ops", "s3cret"), timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
