"""configure_logging writes to the stderr of the moment, not the one it first saw."""

from __future__ import annotations

import io
import logging
import sys

from regime_tasks.logs import configure_logging


def test_records_follow_a_replaced_and_closed_stderr(monkeypatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO")
    logging.getLogger("regime_tasks.test").info("to the first")
    first.close()

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("regime_tasks.test").info("to the second")

    assert "to the second" in second.getvalue()
    assert "Logging error" not in second.getvalue()


# --- secrets never printed ---------------------------------------------------------------------------------------
SECRET = "S3cretPassw0rd"


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_redis_password_is_redacted_in_errors_and_warning_logs(caplog) -> None:
    import datetime as dt

    import pytest

    from regime_tasks.api import compute_levers
    from regime_tasks.errors import RegimeUnavailable
    from regime_tasks.store.cache import RedisRegimeCache
    from regime_tasks.store.db import make_engine

    port = _closed_port()
    cache = RedisRegimeCache(f"redis://:{SECRET}@127.0.0.1:{port}/0", socket_timeout_secs=0.2)
    dead_db = make_engine(f"postgresql+psycopg2://regime:{SECRET}@127.0.0.1:{port}/x", cached=False)
    now = dt.datetime(2025, 7, 26, 5, tzinfo=dt.UTC)

    with caplog.at_level(logging.WARNING), pytest.raises(RegimeUnavailable) as info:
        compute_levers({}, "1h", "small", cache=cache, engine=dead_db, now=now)

    assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)
    assert SECRET not in str(info.value)
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)


def test_log_lines_mask_any_url_password(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("INFO")

    logging.getLogger("regime_tasks.test").warning(
        "connect failed %s", f"redis://:{SECRET}@h:6379/0 and postgresql://regime:{SECRET}@db/regime"
    )

    line = stream.getvalue()
    assert SECRET not in line and "redis://:***@h:6379/0" in line and "postgresql://regime:***@db/regime" in line


def test_cli_error_line_masks_url_passwords(monkeypatch, capsys) -> None:
    from regime_tasks.cli import main
    from regime_tasks.config import get_settings

    monkeypatch.setenv("REGIME_REDIS_URL", f"redis://:{SECRET}@127.0.0.1:{_closed_port()}/0")
    monkeypatch.setenv("REGIME_DATABASE_URL", f"postgresql+psycopg2://regime:{SECRET}@127.0.0.1:{_closed_port()}/x")
    monkeypatch.setenv("REGIME_REDIS_SOCKET_TIMEOUT_SECS", "0.2")
    get_settings.cache_clear()
    from regime_tasks.runtime import reset_runtime

    reset_runtime()
    try:
        code = main(["levers", "--exec-tf", "1h", "--bucket", "small", "--now", "2025-07-26T05:00:00Z"])
    finally:
        get_settings.cache_clear()
        reset_runtime()

    err = capsys.readouterr().err
    assert code == 1 and SECRET not in err and ":***@" in err  # 1: a service is unavailable
