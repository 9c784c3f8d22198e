"""Bar time rules (core/timeframes.py), each defined once: bar length, last closed bar, UTC parsing, ISO text, ms."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from regime_tasks.config import Settings, bucket_for_market_cap
from regime_tasks.core.composite import bucket_of
from regime_tasks.core.timeframes import bar_delta, check_closed, iso, last_closed_bar, parse_ts, to_ms
from regime_tasks.errors import UnknownInputError


def test_the_last_closed_bar_is_the_one_whose_close_is_not_after_now() -> None:
    assert last_closed_bar("1m", pd.Timestamp("2025-07-26T04:56:00Z")) == pd.Timestamp("2025-07-26T04:55:00Z")
    assert last_closed_bar("1m", pd.Timestamp("2025-07-26T04:56:59Z")) == pd.Timestamp("2025-07-26T04:55:00Z")
    assert last_closed_bar("1h", "2025-07-26T05:00:00+02:00") == pd.Timestamp("2025-07-26T02:00:00Z")
    assert last_closed_bar("1d", dt.datetime(2025, 7, 26, 0, 0, 30)) == pd.Timestamp("2025-07-25T00:00:00Z")
    with pytest.raises(UnknownInputError, match="unknown timeframe '2h'"):
        bar_delta("2h")


def test_a_bar_that_has_not_closed_is_refused() -> None:
    check_closed("1h", pd.Timestamp("2025-07-26T03:00:00Z"), pd.Timestamp("2025-07-26T04:00:00Z"))
    with pytest.raises(UnknownInputError, match=r"bar 2025-07-26T03:00:00Z \(1h\) has not closed at"):
        check_closed("1h", pd.Timestamp("2025-07-26T03:00:00Z"), pd.Timestamp("2025-07-26T03:59:59Z"))


def test_times_are_utc_whatever_their_form_and_print_with_a_z() -> None:
    for value in ("2025-07-26T06:30:00+02:00", "2025-07-26 04:30", dt.datetime(2025, 7, 26, 4, 30)):
        t = parse_ts(value)
        assert str(t.tz) == "UTC" and t == pd.Timestamp("2025-07-26T04:30:00Z")
        assert iso(value) == "2025-07-26T04:30:00Z"
    assert iso(None) is None
    assert to_ms("1970-01-01T00:00:01.5Z") == 1_500
    assert to_ms(pd.Timestamp("2025-07-26T04:30:00Z")) == 1_753_504_200_000


def test_bucket_thresholds_are_applied_by_one_rule_with_the_configured_bounds() -> None:
    s = Settings(bucket_nano_max_usd=1e6, bucket_small_max_usd=2e6, bucket_mid_max_usd=3e6)
    for cap in (0.5e6, 1e6, 1.5e6, 2e6, 2.99e6, 3e6, 10e9):
        assert bucket_for_market_cap(cap, s) == bucket_of(cap, **s.bucket_thresholds)
    assert [bucket_for_market_cap(c, s) for c in (0.5e6, 1e6, 2e6, 3e6)] == ["nano", "small", "mid", "big"]
    assert Settings().bucket_thresholds == {"nano_max_usd": 10e6, "small_max_usd": 50e6, "mid_max_usd": 200e6}
