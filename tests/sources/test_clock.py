"""The replay clock: the file source's last hours played as if live, at a chosen speed."""

from __future__ import annotations

import datetime as dt

import pytest

from regime_tasks.config import load_settings
from regime_tasks.errors import ConfigError
from regime_tasks.pipeline import beat_schedule
from regime_tasks.sources import clock

START = dt.datetime(2026, 12, 1, 23, 0, tzinfo=dt.UTC)
DATA_END = dt.datetime(2025, 7, 26, 4, 56, tzinfo=dt.UTC)  # close of the bundled BTC 1m file's last bar (04:55)


def test_the_replay_clock_starts_lead_hours_before_the_data_end_and_runs_speed_times_faster() -> None:
    s = load_settings(replay_clock_start=START, replay_clock_lead_hours=6, replay_clock_speed=30)
    assert clock.data_end(s.files_dir.resolve()) == DATA_END
    assert clock.replay_now(s, START) == DATA_END - dt.timedelta(hours=6)
    # two real minutes later: an hour of data has passed
    assert clock.replay_now(s, START + dt.timedelta(minutes=2)) == DATA_END - dt.timedelta(hours=5)
    now = clock.now(s)
    assert now.tzinfo is not None and now > DATA_END  # START is in the past: replay time is beyond the data


def test_without_a_start_the_clock_is_the_wall_clock() -> None:
    s = load_settings(replay_clock_start=None)
    before = dt.datetime.now(dt.UTC)
    assert before <= clock.now(s) <= dt.datetime.now(dt.UTC)
    assert clock.speed(s) is None


def test_the_replay_clock_needs_the_file_source() -> None:
    with pytest.raises(ConfigError, match="REGIME_SOURCE=file"):
        load_settings(replay_clock_start=START, source="live")


def test_on_the_replay_clock_beat_ticks_every_bar_of_replay_time() -> None:
    schedule = beat_schedule(30, replay_speed=20)
    assert schedule["regime-tick-1m"]["schedule"] == 3.0  # a replay minute every 3 real seconds
    assert schedule["regime-tick-1h"]["schedule"] == 180.0
    assert schedule["regime-tick-1m"]["options"]["expires"] == 2.5
    assert schedule["regime-beat-heartbeat"]["schedule"] == 30.0
    assert "crontab" in type(beat_schedule(30)["regime-tick-1m"]["schedule"]).__name__


def test_each_beat_sends_its_own_book_with_every_tick() -> None:
    # several books' beats share one worker pool: a tick must say whose it is (the worker's default is one book)
    for speed in (None, 20):
        schedule = beat_schedule(30, replay_speed=speed, book_id="book_b")
        assert [schedule[f"regime-tick-{tf}"]["args"] for tf in ("1m", "1h", "1d")] == [
            ("1m", None, "book_b"),
            ("1h", None, "book_b"),
            ("1d", None, "book_b"),
        ]
    assert beat_schedule(30)["regime-tick-1m"]["args"] == ("1m",)
