"""States and A/E *as known at a time*: the one implementation shared by ``regime replay`` and ``regime evaluate``.

A driver × timeframe bar's state is usable only once the bar has closed (open time + one bar), and only while it
is at most ``STALE_AFTER_BARS`` bars old (D8). At each decision time the entries a live ``compute_levers()`` call
would have read are rebuilt from the replayed series, and A/E come from :mod:`regime_tasks.core.levers` itself
(``compute_levers_from_entries`` for a position, ``market_summary`` for the market), never from a copy of its
formula.

Speed: A/E depend only on each entry's (ΔA, ΔE) and on whether it is usable, and those take few distinct
combinations over a history, so the levers function is called once per distinct combination (with the real
entries of the first time that combination occurs) and the result is reused. Tests compare this with a direct
call at every time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.constants import BUCKETS, DRIVERS, REGIME_TIMEFRAMES, STALE_AFTER_BARS, TIMEFRAME_SECONDS
from regime_tasks.core.levers import compute_levers_from_entries, market_summary

SeriesKey = tuple[str, str]  # (driver, regime timeframe)


class KnownAt:
    """For every replayed (driver, timeframe): which bar was the last closed one at each of ``times``."""

    def __init__(self, per_series: Mapping[SeriesKey, pd.DataFrame], times: pd.DatetimeIndex) -> None:
        self.times = times
        self.per_series = per_series
        self.pos: dict[SeriesKey, np.ndarray] = {}
        self.usable: dict[SeriesKey, np.ndarray] = {}
        for key, frame in per_series.items():
            step = pd.Timedelta(seconds=TIMEFRAME_SECONDS[key[1]])
            closes = frame.index + step
            pos = closes.searchsorted(times, side="right") - 1  # last bar closed at or before each time
            ok = pos >= 0
            age = np.full(len(times), np.inf)
            age[ok] = (times[ok] - closes[pos[ok]]) / step
            self.pos[key] = pos
            self.usable[key] = ok & (age <= STALE_AFTER_BARS)
        self._arrays: dict[SeriesKey, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._unique: dict[tuple[SeriesKey, ...], tuple[np.ndarray, np.ndarray]] = {}

    def column(self, key: SeriesKey, name: str, default: Any = None) -> np.ndarray:
        """``name`` of the last closed bar at each time (``default`` before the first bar closes)."""
        values = self.per_series[key][name].to_numpy()
        pos = self.pos[key]
        out = np.full(len(self.times), default, dtype=object)
        ok = pos >= 0
        out[ok] = values[pos[ok]]
        return out

    def states(self, key: SeriesKey) -> np.ndarray:
        """The driver's state as known at each time (``missing`` before its first bar closed)."""
        if key not in self.per_series:
            return np.full(len(self.times), "missing", dtype=object)
        return self.column(key, "state", "missing")

    def entry(self, key: SeriesKey, i: int) -> dict[str, Any] | None:
        """The cache entry a live reader would have seen at ``times[i]`` (None: nothing closed yet)."""
        p = int(self.pos[key][i])
        if p < 0:
            return None
        if key not in self._arrays:  # plain arrays: a pandas row lookup per entry would dominate the run time
            frame = self.per_series[key]
            self._arrays[key] = (
                frame["state"].to_numpy(),
                frame["delta_a_raw"].to_numpy(dtype=float),
                frame["delta_e_raw"].to_numpy(dtype=float),
                np.asarray(frame.index.strftime("%Y-%m-%dT%H:%M:%SZ"), dtype=object),
            )
        state, da, de, index = self._arrays[key]
        return {
            "state": state[p],
            "delta_a_raw": float(da[p]),
            "delta_e_raw": float(de[p]),
            "bar_ts": index[p],
        }

    def _key_matrix(self, keys: Iterable[SeriesKey]) -> np.ndarray:
        cols = []
        for key in keys:
            if key not in self.per_series:
                continue
            frame, pos, ok = self.per_series[key], self.pos[key], self.usable[key]
            safe = np.clip(pos, 0, None)
            cols.append(np.where(ok, frame["delta_a_raw"].to_numpy()[safe], 0.0))
            cols.append(np.where(ok, frame["delta_e_raw"].to_numpy()[safe], 0.0))
            cols.append(ok.astype(float))
        return np.column_stack(cols) if cols else np.zeros((len(self.times), 1))

    def evaluate(
        self,
        keys: Iterable[SeriesKey],
        call: Callable[[dict[SeriesKey, dict[str, Any]], dt.datetime], Mapping[str, Any]],
        fields: tuple[str, ...] = ("A_value", "E_value", "position_size_frac"),
    ) -> dict[str, np.ndarray]:
        """``call(entries, now)`` at every time, once per distinct combination of usable deltas."""
        keys = [k for k in keys if k in self.per_series]
        if len(self.times) == 0:
            return {f: np.empty(0) for f in fields}
        if tuple(keys) not in self._unique:  # the same drivers for every execution timeframe: group them once
            _, first, inverse = np.unique(self._key_matrix(keys), axis=0, return_index=True, return_inverse=True)
            self._unique[tuple(keys)] = (first, np.asarray(inverse).reshape(-1))
        first, inverse = self._unique[tuple(keys)]
        results = np.empty((len(first), len(fields)))
        for j, i in enumerate(first):
            entries = {k: e for k in keys if (e := self.entry(k, int(i))) is not None}
            res = call(entries, self.times[i].to_pydatetime())
            results[j] = [float(res[f]) for f in fields]
        return {f: results[inverse, n] for n, f in enumerate(fields)}


def position_keys(bucket: str | None, exclude: Collection[SeriesKey] = ()) -> list[SeriesKey]:
    """The (driver, timeframe) entries a position in ``bucket`` reads (D2), minus ``exclude``."""
    drivers = ["BTC", "ALT", *([bucket] if bucket else []), "BTC.d", "USDT.d"]
    return [(d, tf) for d in drivers for tf in REGIME_TIMEFRAMES if (d, tf) not in exclude]


def summary_keys(exclude: Collection[SeriesKey] = ()) -> list[SeriesKey]:
    """The entries of the market summary (BTC, ALT, the four buckets, dominance), minus ``exclude``."""
    return [(d, tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES if (d, tf) not in exclude]


def position_levers(
    known: KnownAt, bucket: str | None, execution_timeframe: str, exclude: Collection[SeriesKey] = ()
) -> pd.DataFrame:
    """A, E, size of a position (``compute_levers_from_entries``) at each of ``known.times``."""

    def call(entries: dict[SeriesKey, dict[str, Any]], now: dt.datetime) -> Mapping[str, Any]:
        return compute_levers_from_entries(entries, None, execution_timeframe, bucket, now=now)

    out = known.evaluate(position_keys(bucket, exclude), call)
    return pd.DataFrame(out, index=known.times)


def summary_levers(known: KnownAt, exclude: Collection[SeriesKey] = ()) -> pd.DataFrame:
    """The market summary's A, E, size (``market_summary``, D2 fixed weights) at each of ``known.times``."""

    def call(entries: dict[SeriesKey, dict[str, Any]], now: dt.datetime) -> Mapping[str, Any]:
        return market_summary(entries, now=now)

    out = known.evaluate(summary_keys(exclude), call)
    return pd.DataFrame(out, index=known.times)


def levers_grid(
    per_series: Mapping[SeriesKey, pd.DataFrame],
    grid: pd.DatetimeIndex,
    exec_timeframes: Iterable[str],
) -> pd.DataFrame:
    """A/E/size per bucket × execution timeframe at each ``grid`` time (the replay's levers table)."""
    known = KnownAt(per_series, grid)
    parts = []
    for bucket in BUCKETS:
        for exec_tf in exec_timeframes:
            lv = position_levers(known, bucket, exec_tf)
            parts.append(
                pd.DataFrame(
                    {
                        "timestamp": grid,
                        "bucket": bucket,
                        "execution_timeframe": exec_tf,
                        "A_value": lv["A_value"].to_numpy(),
                        "E_value": lv["E_value"].to_numpy(),
                        "position_size_frac": lv["position_size_frac"].to_numpy(),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)
