"""The live path of one series: a TA + engine history that grows one bar at a time (DECISIONS D6).

A live step must cost milliseconds, so it cannot recompute 3,000 bars of TA, zig-zag pivots and prefix sums for
every new bar. :class:`LiveHistory` builds them once from a window of bars (the same vectorised code the replay
uses) and then appends bars: :class:`~regime_tasks.core.ta.TAStream` carries every recurrence,
:class:`~regime_tasks.core.ta.ZigZag` the pivots, and the prefix sums grow by one element. Each appended bar
gets bit for bit the values a rebuild of the window would give (tests/core/test_live.py), so it does not matter
which worker process holds a warm history, or whether any does.

That needs windows that do not slide with every bar: D6's "last 3,000 bars" would re-seed every EMA at each bar.
:func:`window_start` anchors windows on a grid instead — a window starts on a multiple of ``slack_bars`` bars
since 1970-01-01 and holds between ``window_bars`` and ``window_bars + slack_bars − 1`` bars — so a window is
a function of the bar's time alone, and the same bars in give the same payload out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import pandas as pd

from regime_tasks.core.bars import timeframe_delta
from regime_tasks.core.payloads import EnginePayload
from regime_tasks.core.ta import (
    SLOPE_WINDOW,
    SWING_THRESHOLD_ATR,
    TA_COLUMNS,
    Pivot,
    StreamBreak,
    TAPayload,
    TAStream,
    ZigZag,
    compute_ta_frame_and_state,
    ls_slope,
    swing_thresholds,
)
from regime_tasks.core.uptrend import EngineHistory, EngineSettings, step

EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
PREFIX_COLUMNS = ("ema250", "ema333", "rsi", "adx")


def window_start(bar_ts: pd.Timestamp, timeframe: str, window_bars: int, slack_bars: int) -> pd.Timestamp:
    """Open time of the first bar of the TA window of the bar opening at ``bar_ts``.

    Windows start on a grid of ``slack_bars`` bars counted from 1970-01-01; the window of a bar is the latest
    grid start that leaves at least ``window_bars`` bars up to and including it.
    """
    delta = timeframe_delta(timeframe)
    k = (pd.Timestamp(bar_ts) - EPOCH) // delta
    first = ((k - window_bars + 1) // slack_bars) * slack_bars
    return EPOCH + first * delta


class LiveHistory(EngineHistory):
    """An :class:`~regime_tasks.core.uptrend.EngineHistory` over a TA window that grows by appending bars.

    ``bars`` are grid-filled bars (``open``…``volume`` and the bool ``filled``) of one window. The engine can
    step only the newest bar (:meth:`step_last`), which is all the live path does after each append.
    """

    def __init__(
        self,
        bars: pd.DataFrame,
        settings: EngineSettings,
        *,
        capacity: int,
        window_start: pd.Timestamp,
        threshold_atr: float = SWING_THRESHOLD_ATR,
    ) -> None:
        n = len(bars)
        if capacity < n:
            raise ValueError(f"capacity {capacity} < {n} bars")
        frame, state = compute_ta_frame_and_state(bars[list(BAR_COLUMNS)])
        self.stream = TAStream(state)  # raises StreamBreak for a window too short to stream
        self.settings = settings
        self.window_start = pd.Timestamp(window_start)
        self.capacity = capacity
        self.names = [*BAR_COLUMNS, *TA_COLUMNS]
        self._buf = np.full((len(self.names), capacity), np.nan)
        self._buf[:, :n] = frame[self.names].to_numpy(dtype=np.float64).T
        self.cols = {name: self._buf[j] for j, name in enumerate(self.names)}
        self.price = self.cols["close"]
        self.filled = np.zeros(capacity, dtype=bool)
        self.filled[:n] = bars["filled"].to_numpy(dtype=bool)
        self._ns = np.zeros(capacity, dtype=np.int64)
        self._ns[:n] = bars.index.as_unit("ns").asi8
        self.n = n
        self.first_step = n  # nothing before the window's end is stepped from here
        self._stamps: dict[int, str] = {}
        self._index: pd.DatetimeIndex | None = None

        self._prefix = {}
        for name in PREFIX_COLUMNS:
            p0, p1, ref = self._make_prefix(self.cols[name][:n])
            b0, b1 = np.zeros(capacity + 1), np.zeros(capacity + 1)
            b0[: n + 1], b1[: n + 1] = p0, p1
            self._prefix[name] = (b0, b1, ref)
        self.defined_from = self.first_defined(self.cols, n)
        vol = self.cols["volume"]
        self.has_volume = bool(np.any(vol[:n] > 0))
        self.cum_v, self.cum_cv = np.zeros(capacity), np.zeros(capacity)
        self.cum_v[:n] = np.cumsum(vol[:n])
        self.cum_cv[:n] = np.cumsum(self.price[:n] * vol[:n])
        self.compression_slope = np.full(capacity, np.nan)
        self.compression_slope[:n] = self._compression(0, n)

        self.threshold_atr = threshold_atr
        self._high = self.cols["high"][:n].tolist()
        self._low = self.cols["low"][:n].tolist()
        self._thr = swing_thresholds(self.cols["atr"][:n], threshold_atr).tolist()
        self.zigzag = ZigZag(threshold_atr=threshold_atr)
        self.zigzag.feed(self._high, self._low, self._thr, n)
        self._pivots: list[Pivot] | None = None

    # --- EngineHistory interface -------------------------------------------------------------------------
    @property
    def index(self) -> pd.DatetimeIndex:
        if self._index is None or len(self._index) != self.n:
            self._index = pd.DatetimeIndex(self._ns[: self.n], tz="UTC")
        return self._index

    @index.setter
    def index(self, value: pd.DatetimeIndex) -> None:
        raise AttributeError("a live history's times are those of the bars appended to it")

    @property
    def pivots(self) -> list[Pivot]:  # type: ignore[override]
        if self._pivots is None:
            self._pivots = self.zigzag.result()
        return self._pivots

    def pivots_at(self, t: int, start: int = 0) -> list[Pivot]:
        """Pivots known at the newest bar with index ≥ ``start`` (a live history only steps its newest bar)."""
        if t != self.n - 1:
            raise ValueError(f"a live history answers for its newest bar {self.n - 1}, not bar {t}")
        pivots = self.pivots
        return pivots[bisect.bisect_left(pivots, start, key=lambda p: p.index) :]

    # --- growing -------------------------------------------------------------------------------------------
    def timestamps(self) -> np.ndarray:
        """Open times of the bars held, as int64 nanoseconds since the epoch."""
        return self._ns[: self.n]

    def append(self, ts: pd.Timestamp, bar: Mapping[str, Any]) -> None:
        """Add the bar after the newest one (``bar``: open/high/low/close/volume and ``filled``).

        Raises :class:`~regime_tasks.core.ta.StreamBreak` when it cannot be added bit-identically (window
        full, first volume on a series without volume); the history is unchanged then.
        """
        n = self.n
        if n >= self.capacity:
            raise StreamBreak(f"window full ({self.capacity} bars)")
        row = self.stream.next_row(self.cols, n, bar)
        for name in BAR_COLUMNS:
            self.cols[name][n] = float(bar[name])
        for name in TA_COLUMNS:
            self.cols[name][n] = row[name]
        self.filled[n] = bool(bar.get("filled", False))
        self._ns[n] = pd.Timestamp(ts).value
        for name in PREFIX_COLUMNS:
            b0, b1, ref = self._prefix[name]
            y = row[name]
            yc = y - ref if math.isfinite(y) else 0.0
            b0[n + 1] = b0[n] + yc
            b1[n + 1] = b1[n] + float(n) * yc
        v, c = float(bar["volume"]), float(bar["close"])
        self.cum_v[n] = self.cum_v[n - 1] + v
        self.cum_cv[n] = self.cum_cv[n - 1] + c * v
        self.n = n + 1
        self.compression_slope[n] = self._compression(n, n + 1)[-1]
        self._high.append(float(bar["high"]))
        self._low.append(float(bar["low"]))
        self._thr.append(float(swing_thresholds(np.array([row["atr"]]), self.threshold_atr)[0]))
        self.zigzag.feed(self._high, self._low, self._thr, self.n)
        self._pivots = None
        self._index = None

    def _compression(self, start: int, stop: int) -> np.ndarray:
        """Compression slope (mean LS slope of the EMA144/EMA333 and EMA250/EMA333 ratios) of bars start..stop−1."""
        lo = max(0, start - SLOPE_WINDOW + 1)
        e144, e250, e333 = (self.cols[k][lo:stop] for k in ("ema144", "ema250", "ema333"))
        ratio144 = (e144 - e333) / e333
        ratio250 = (e250 - e333) / e333
        return ((ls_slope(ratio144) + ls_slope(ratio250)) / 2.0)[start - lo :]

    def step_last(self, prev: Mapping[str, Any] | None) -> tuple[EnginePayload, dict[str, Any] | None]:
        """The engine's step for the newest bar."""
        payload, event = step(self, self.n - 1, prev, self.settings)
        return cast(EnginePayload, payload), event  # the shape is checked in tests/core/test_payloads.py


def ta_payload_of_history(history: EngineHistory, series: str, timeframe: str, sr_mode: str) -> dict[str, Any]:
    """``features.ta`` of a history's newest bar; S/R levels from the pivots the engine used for that bar.

    ``history.filled`` (the grid's filled flags, one per bar) gives ``filled_bars``.
    """
    i = history.n - 1
    values = history.values(i)
    clean = {k: (float(values[k]) if math.isfinite(values[k]) else None) for k in TA_COLUMNS}
    levels = history.levels_at(i, values["close"], values["atr"], sr_mode) if clean["atr"] is not None else []
    return TAPayload(
        series=series,
        timeframe=timeframe,
        bar_ts=history.stamp(i),
        latest_price=float(values["close"]),
        bars=history.n,
        filled_bars=int(np.count_nonzero(history.filled[: history.n])),
        values=clean,
        sr_levels=levels,
    ).to_dict()


__all__ = ["EPOCH", "LiveHistory", "ta_payload_of_history", "window_start"]
