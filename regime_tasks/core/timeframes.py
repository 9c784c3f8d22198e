"""Bar time, each rule once: a bar's length, the last closed bar, UTC timestamps and their ISO-8601 text (D5).

A bar is named by its **open** time, UTC; it has closed at open + one bar length. Stages, sources, the store and
the command line all take their times through these functions. Pure functions; no I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias, overload

import pandas as pd

from regime_tasks.core.constants import TIMEFRAME_SECONDS
from regime_tasks.errors import UnknownInputError

# The payload convention for a time: ISO-8601 UTC with a Z, to the second.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

TimeLike: TypeAlias = str | pd.Timestamp | dt.datetime


def bar_delta(timeframe: str) -> pd.Timedelta:
    """The length of one bar of ``timeframe`` (UnknownInputError for a timeframe the tables do not know)."""
    try:
        return pd.Timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    except KeyError:
        raise UnknownInputError(
            f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_SECONDS)}"
        ) from None


def parse_ts(value: TimeLike) -> pd.Timestamp:
    """An ISO time, datetime or timestamp as a tz-aware UTC timestamp (a time without zone is UTC)."""
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


@overload
def iso(ts: TimeLike) -> str: ...
@overload
def iso(ts: None) -> None: ...
def iso(ts: TimeLike | None) -> str | None:
    """ISO-8601 UTC with a Z, the payload convention (``None`` stays ``None``)."""
    if ts is None:
        return None
    return parse_ts(ts).strftime(ISO_FORMAT)


def to_ms(ts: TimeLike) -> int:
    """Milliseconds since the epoch (the venues' time unit)."""
    return int(parse_ts(ts).timestamp() * 1000)


def last_closed_bar(timeframe: str, now: TimeLike) -> pd.Timestamp:
    """Open time of the newest bar of ``timeframe`` that has closed at ``now``."""
    return parse_ts(now).floor(bar_delta(timeframe)) - bar_delta(timeframe)


def check_closed(timeframe: str, bar: pd.Timestamp, now: TimeLike) -> None:
    """UnknownInputError unless the bar opening at ``bar`` has closed by ``now`` (a tick for 9999-12-31 would
    otherwise be accepted and computed on whatever data exists)."""
    if bar + bar_delta(timeframe) > pd.Timestamp(now):
        raise UnknownInputError(
            f"bar {iso(bar)} ({timeframe}) has not closed at {iso(now)}: --until is the open time of a closed bar"
        )
