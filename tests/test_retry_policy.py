"""One retry policy, no nested retries: HTTP owns venue retries; tasks retry database/broker errors within a budget."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from regime_tasks.config import load_settings
from regime_tasks.errors import RateLimitedError, SourceUnavailableError, StoreError
from regime_tasks.tasks import RETRYABLE_ERRORS, retry_waits_secs


def test_default_task_retries_wait_2_to_60_s_and_stay_within_300_s() -> None:
    waits = retry_waits_secs(load_settings())
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60] and sum(waits) <= 300


@pytest.mark.parametrize(("budget", "waits"), [(6, [2, 4]), (5, [2]), (0, []), (1, [])])
def test_retry_waits_never_add_up_past_the_budget(budget: float, waits: list[float]) -> None:
    assert retry_waits_secs(load_settings(task_retry_budget_secs=budget)) == waits


def test_tasks_do_not_retry_what_the_http_layer_gave_up_on() -> None:
    assert not issubclass(SourceUnavailableError, RETRYABLE_ERRORS)
    assert not issubclass(RateLimitedError, RETRYABLE_ERRORS)
    assert issubclass(StoreError, RETRYABLE_ERRORS)


def test_http_retry_budget_must_fit_in_the_soft_time_limit() -> None:
    from regime_tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="REGIME_HTTP_RETRY_BUDGET_SECS must be below"):
        load_settings(http_retry_budget_secs=300, task_soft_time_limit_secs=300, task_time_limit_secs=360)


# --- bar-time catch-up, on the embedded app (in-memory broker and results) -------------------------------------------
@pytest.fixture()
def rt(tmp_path, monkeypatch):
    from regime_tasks.runtime import get_runtime, reset_runtime

    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'regime.db'}")
    reset_runtime()
    yield get_runtime()
    reset_runtime()


def _publish(rt, tf: str, until: str) -> None:
    from regime_tasks.pipeline import record_published

    record_published(rt, "onchain_crypto", tf, until)


def test_catch_up_names_the_bars_closed_by_bar_time_that_were_not_published(rt) -> None:
    from regime_tasks.pipeline import due_catch_ups

    _publish(rt, "1d", "2025-07-25T00:00:00Z")
    _publish(rt, "1h", "2025-07-26T03:00:00Z")  # 04:00 closed at 05:00 and was never published

    due = due_catch_ups(rt, "onchain_crypto", pd.Timestamp("2025-07-26T05:01:00Z"), skip="1m")

    assert due == [("1h", pd.Timestamp("2025-07-26T04:00:00Z"))]


def test_a_launched_tick_is_in_flight_until_it_fails_or_its_lease_ends(rt, monkeypatch) -> None:
    from regime_tasks import pipeline
    from regime_tasks.celery_app import app
    from regime_tasks.store.meta import set_meta

    _publish(rt, "1d", "2025-07-25T00:00:00Z")
    _publish(rt, "1h", "2025-07-26T03:00:00Z")
    launched_at = dt.datetime(2025, 7, 26, 5, 0, 10, tzinfo=dt.UTC)
    set_meta(
        rt.engine,
        "tick:launched:onchain_crypto:1h",
        {"until": "2025-07-26T04:00:00Z", "id": "tick-1h-0400", "at": "2025-07-26T05:00:10Z"},
    )
    as_of = pd.Timestamp("2025-07-26T05:02:00Z")
    monkeypatch.setattr(pipeline, "utcnow", lambda: launched_at + dt.timedelta(seconds=60))

    assert pipeline.due_catch_ups(rt, "onchain_crypto", as_of, skip="1m") == []  # PENDING: still running

    app.backend.mark_as_failure("tick-1h-0400", StoreError("database gone"))  # the chord gave up
    assert [tf for tf, _ in pipeline.due_catch_ups(rt, "onchain_crypto", as_of, skip="1m")] == ["1h"]

    app.backend.store_result("tick-1h-0400", None, "PENDING")
    lease = pipeline.tick_lease_secs(rt)
    monkeypatch.setattr(pipeline, "utcnow", lambda: launched_at + dt.timedelta(seconds=lease + 1))
    assert [tf for tf, _ in pipeline.due_catch_ups(rt, "onchain_crypto", as_of, skip="1m")] == ["1h"]  # lost


def test_a_tick_catches_up_longer_timeframes_only(rt) -> None:
    from regime_tasks.pipeline import due_catch_ups

    # nothing published: a 1h tick may re-run 1d, never 1m (the next 1m tick supersedes a failed one)
    due = due_catch_ups(rt, "onchain_crypto", pd.Timestamp("2025-07-26T05:00:00Z"), skip="1h")

    assert [tf for tf, _ in due] == ["1d"]
