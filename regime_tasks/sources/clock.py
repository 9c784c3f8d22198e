"""The pipeline's clock: the wall clock, or a replay clock that plays the file source's last hours as if live.

The replay clock lets the production processes — worker, beat, Flower, `regime status` — run offline on the
bundled data (README, "Try the production setup offline"). At the wall-clock instant ``REGIME_REPLAY_CLOCK_START``
"now" is ``REGIME_REPLAY_CLOCK_LEAD_HOURS`` before the end of the file source's data (the close of its newest BTC
1m bar), and it advances ``REGIME_REPLAY_CLOCK_SPEED`` times as fast as real time::

    now = data_end - lead + (wall - start) * speed

Every process computes it from the same settings, so worker, beat and the commands agree without talking to each
other. Past the end of the data the clock goes on; ticks then find no new closed bar and say so.
"""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

from regime_tasks.config import Settings, get_settings
from regime_tasks.errors import ConfigError

# The series whose newest bar marks the end of the data: BTC is a required driver and 1m the finest timeframe.
END_SERIES = ("majors", "BTC", "1m")


@functools.lru_cache(maxsize=4)
def data_end(files_dir: Path) -> dt.datetime:
    """Close time of the newest BTC 1m bar of the file source at ``files_dir`` (read once per process)."""
    from regime_tasks.sources.files import FileSource

    kind, symbol, timeframe = END_SERIES
    frame = FileSource(files_dir).bars(kind, symbol, timeframe)
    if frame.empty:
        raise ConfigError(f"the replay clock needs {kind}/{timeframe}/{symbol} under {files_dir}; none found")
    return (frame.index[-1] + dt.timedelta(minutes=1)).to_pydatetime()


def replay_now(settings: Settings, wall: dt.datetime) -> dt.datetime:
    """The replay clock's time at wall-clock ``wall`` (``settings.replay_clock_start`` must be set)."""
    start = settings.replay_clock_start
    if start is None:
        raise ConfigError("the replay clock is off: REGIME_REPLAY_CLOCK_START is not set")
    origin = data_end(Path(settings.files_dir).resolve()) - dt.timedelta(hours=settings.replay_clock_lead_hours)
    return origin + (wall - start) * settings.replay_clock_speed


def now(settings: Settings | None = None) -> dt.datetime:
    """The pipeline's "now", timezone-aware UTC: the replay clock when it is set, else the wall clock."""
    s = settings or get_settings()
    wall = dt.datetime.now(dt.UTC)
    return wall if s.replay_clock_start is None else replay_now(s, wall)


def speed(settings: Settings | None = None) -> float | None:
    """The replay speed factor, or None on the wall clock (the beat schedule runs this much faster)."""
    s = settings or get_settings()
    return None if s.replay_clock_start is None else s.replay_clock_speed


__all__ = ["data_end", "now", "replay_now", "speed"]
