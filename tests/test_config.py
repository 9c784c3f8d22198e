"""Settings are all checked at start, each problem naming its variable."""

from __future__ import annotations

import pytest

from regime_tasks.config import get_settings, load_settings
from regime_tasks.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("value", ["5,15,60", "[5,15,60]", " 5, 15 ,60 "])
def test_retry_backoff_accepts_the_readmes_comma_format(monkeypatch, value: str) -> None:
    monkeypatch.setenv("REGIME_RETRY_BACKOFF_SECS", value)
    assert load_settings().retry_backoff_secs == (5.0, 15.0, 60.0)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("REGIME_RETRY_BACKOFF_SECS", "5,soon", "comma-separated numbers"),
        ("REGIME_RETRY_BACKOFF_SECS", "5,inf", "finite"),
        ("REGIME_REDIS_SOCKET_TIMEOUT_SECS", "inf", "finite"),
        ("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "nan", "finite"),
        ("REGIME_HTTP_TIMEOUT_SECS", "Infinity", "finite"),
        ("REGIME_DATABASE_URL", "postgres//db", "not a database URL"),
        ("REGIME_DATABASE_URL", "mysql://u@h/db", "postgresql"),
        ("REGIME_REDIS_URL", "127.0.0.1:6379", "expected a URL"),
        ("REGIME_REDIS_URL", "redis://host:port/0", "Port"),
        ("REGIME_REDIS_URL", "redis://host:6379/cache", "database must be a number"),
        ("REGIME_BROKER_URL", "reddis://host:6379/1", "expected a URL"),
        ("REGIME_RESULT_BACKEND", "nowhere://x", "expected a URL"),
        ("REGIME_BINANCE_BASE_URL", "api.binance.com", "expected a URL"),
        ("REGIME_FILES_DIR", "/no/such/folder", "not a directory"),
        ("REGIME_FLOWER_BASIC_AUTH", ":", "both parts non-empty"),
        ("REGIME_FLOWER_BASIC_AUTH", "ops:", "both parts non-empty"),
        ("REGIME_FLOWER_BASIC_AUTH", "ops", "both parts non-empty"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_variable(monkeypatch, variable: str, value: str, message: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert variable in str(info.value) and message in str(info.value)


def test_soft_time_limit_must_be_below_the_hard_one(monkeypatch) -> None:
    monkeypatch.setenv("REGIME_TASK_SOFT_TIME_LIMIT_SECS", "400")
    monkeypatch.setenv("REGIME_TASK_TIME_LIMIT_SECS", "360")
    with pytest.raises(ConfigError, match="REGIME_TASK_SOFT_TIME_LIMIT_SECS must be below REGIME_TASK_TIME_LIMIT_SECS"):
        load_settings()


def test_data_dir_that_is_a_file_is_refused(monkeypatch, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("REGIME_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="REGIME_DATA_DIR"):
        load_settings()


def test_every_command_reports_a_bad_setting_in_one_line_with_exit_2(monkeypatch, capsys) -> None:
    from regime_tasks.cli import main

    monkeypatch.setenv("REGIME_DATABASE_URL", "postgresql+psycopg2://regime:S3cretPassw0rd@/regime")

    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("regime: error: invalid settings: REGIME_DATABASE_URL") and err.count("\n") == 1
    assert "S3cretPassw0rd" not in err and "regime:***@" in err


def test_good_production_settings_pass(monkeypatch) -> None:
    monkeypatch.setenv("REGIME_DATABASE_URL", "postgresql+psycopg2://regime:pw@postgres:5432/regime")
    monkeypatch.setenv("REGIME_REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("REGIME_BROKER_URL", "rediss://:pw@redis:6380/1")
    monkeypatch.setenv("REGIME_RESULT_BACKEND", "redis://:pw@redis:6379/2")
    monkeypatch.setenv("REGIME_FLOWER_BASIC_AUTH", "ops:s3cret")
    s = load_settings()
    assert s.redis_url == "redis://:pw@redis:6379/0" and not s.embedded
