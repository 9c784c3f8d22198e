"""docker-compose.yml cannot run on CI machines (no Docker engine); keep it honest against the code."""

from __future__ import annotations

import re

import yaml

from regime_tasks.config import ENV_PREFIX, Settings
from tests.conftest import REPO_ROOT

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _command(service: str) -> str:
    cmd = SERVICES[service]["command"]
    return " ".join(cmd) if isinstance(cmd, list) else cmd


def _env(service: str) -> dict[str, str]:
    return SERVICES[service].get("environment", {})


def test_compose_has_the_production_services() -> None:
    assert {"postgres", "redis", "schema-init", "worker", "beat", "flower"} <= set(SERVICES)


def test_postgres_has_a_healthcheck_and_redis_never_evicts() -> None:
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "--maxmemory-policy noeviction" in _command("redis")


def test_schema_init_runs_the_cli_and_gates_worker_and_beat() -> None:
    assert _command("schema-init") == "regime db init"
    for svc in ("worker", "beat"):
        assert SERVICES[svc]["depends_on"]["schema-init"]["condition"] == "service_completed_successfully"


def test_worker_beat_flower_use_the_package_app_and_queues() -> None:
    from celeryconfig import task_queues

    assert _command("worker").startswith("celery -A regime_tasks worker")
    queues = re.search(r"-Q (\S+)", _command("worker")).group(1).split(",")
    assert set(queues) == {q.name for q in task_queues}
    assert "regime_tasks.beat:RegimeBeatScheduler" in _command("beat")
    assert SERVICES["beat"]["deploy"]["replicas"] == 1


def test_flower_runs_through_the_entry_point_that_enforces_auth_on_loopback() -> None:
    assert _command("flower") == "regime flower"
    value = _env("flower")["REGIME_FLOWER_BASIC_AUTH"]
    assert value.startswith("${REGIME_FLOWER_BASIC_AUTH:?"), "no default password may live in the file"
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]  # the host's loopback only


def test_no_password_has_a_default_and_redis_requires_one() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert ":-regime" not in text
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert f"${{{name}:?" in text and f"${{{name}:-" not in text
    assert "--requirepass" in _command("redis") and "-a" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    for var in ("REGIME_REDIS_URL", "REGIME_BROKER_URL", "REGIME_RESULT_BACKEND"):
        assert _env("worker")[var].startswith("redis://:${REDIS_PASSWORD:?"), var
    assert not any("ports" in SERVICES[svc] for svc in ("postgres", "redis"))


def test_env_example_names_every_variable_compose_requires() -> None:
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    example = (REPO_ROOT / ".env.example").read_text()
    defined = {line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")}
    assert required == {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "REGIME_FLOWER_BASIC_AUTH"} and required <= defined


def test_every_regime_variable_in_compose_is_a_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in SERVICES:
        for var in _env(name):
            if var.startswith(ENV_PREFIX):
                assert var.removeprefix(ENV_PREFIX) in fields, f"{name}: {var} is not a setting"
    assert {"REGIME_DATABASE_URL", "REGIME_REDIS_URL", "REGIME_BROKER_URL"} <= set(_env("worker"))
