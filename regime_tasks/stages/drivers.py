"""Per driver: TA → engine → mapper, stepped bar by bar from the last processed bar (warm live histories)."""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

import kombu.exceptions
import numpy as np
import pandas as pd
import redis.exceptions
import sqlalchemy as sa

from regime_tasks.core.payloads import EnginePayload
from regime_tasks.core.timeframes import bar_delta, iso, parse_ts
from regime_tasks.errors import StoreError
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.cache import CacheUnavailable

log = logging.getLogger(__name__)


# --- per driver: TA → engine → mapper ------------------------------------------------------------------


def _driver_row(rt: Runtime, book_id: str, driver: str, timeframe: str) -> tuple[int, dict[str, Any]]:
    """The book's row of this driver × timeframe (created with the book's other driver rows if missing) and its
    features: one query on every tick."""
    from regime_tasks.store.positions import driver_row, ensure_driver_rows

    found = driver_row(rt.engine, book_id, driver, timeframe)
    if found is None:
        ensure_driver_rows(rt.engine, book_id)
        found = driver_row(rt.engine, book_id, driver, timeframe)
    if found is None:
        raise StoreError(f"no driver row {driver}/{timeframe} of book {book_id!r} after creating them")
    return found


def update_driver(
    rt: Runtime, book_id: str, driver: str, timeframe: str, until: pd.Timestamp, *, replay: bool = False
) -> dict[str, Any]:
    """Advance one driver × timeframe to ``until``: every closed bar after the last processed one is stepped.

    - No previous engine payload, or ``replay`` (the bootstrap): the whole stored history up to ``until`` is
      replayed bar by bar (D15) and the series' state-change events are replaced by the replay's, so a
      bootstrap gives the state its (possibly repaired) history implies, whatever ran before.
    - Otherwise each new bar is stepped on its anchored TA window (``core.live.window_start``): a warm
      ``LiveHistory`` kept by this process appends the bar, or one is built from the window's bars first; both
      give the same bits, so the result does not depend on which worker runs the task (bars are computed by bar
      time, not run time).
    - Re-running for a bar already processed changes nothing and returns the stored payload.
    """
    from regime_tasks.core.bars import validate_bars
    from regime_tasks.core.live import ta_payload_of_history, window_start
    from regime_tasks.core.series import run_series
    from regime_tasks.core.uptrend import EngineHistory

    key = {"driver": driver}
    row_id, features = _driver_row(rt, book_id, driver, timeframe)
    prev = None if replay else features.get("uptrend_engine_v4") or None
    prev_bar = parse_ts(prev["bar_ts"]) if prev and prev.get("bar_ts") else None
    base = {"driver": driver, "timeframe": timeframe, "until": iso(until)}
    if prev is not None and prev_bar is not None and prev_bar >= until:
        return {
            **base,
            "status": "unchanged",
            "state": prev.get("state"),
            "bars": store_bars.count_bars(rt.engine, "regime", key, timeframe),
            "payload": features.get("regime_engine_v4"),
        }

    s = rt.settings
    # The bars have no book: a series' computation is the same for every book (only the rows written differ)
    cache_key = (str(rt.engine.url), driver, timeframe)
    engine_settings = s.engine_settings()
    if prev is not None and prev_bar is not None:
        shared = _shared_step(rt, cache_key, key, timeframe, prev, prev_bar, until, engine_settings)
        if shared is not None:
            regime = _write_step(rt, row_id, book_id, driver, timeframe, shared, replayed=False)
            return {**base, **_step_summary(shared, regime), "shared": True}
    held: pd.DataFrame | None = None  # the warm history's bars, checked against the store's fingerprint
    fingerprint: tuple[pd.Timestamp, pd.Timestamp, store_bars.Fingerprint] | None = None
    if prev_bar is None:
        bars = store_bars.read_bars(rt.engine, "regime", key, timeframe, end=until)
        n_window, n_read = len(bars), len(bars)
    else:
        start = window_start(prev_bar + bar_delta(timeframe), timeframe, s.ta_window_bars, s.ta_window_slack_bars)
        bars, held, fingerprint, n_window = _read_window(rt, cache_key, key, timeframe, start, until)
        n_read = len(bars)
    if bars.empty and held is None:
        return {**base, "status": "missing", "state": None, "bars": 0, "payload": None}
    series = f"{driver}:{timeframe}"
    # rows may have been written by other programs sharing the database: re-check before computing
    if not bars.empty:
        validate_bars(bars, series=f"regime:{series}", timeframe=timeframe, source="database")
    if prev_bar is None:
        run = run_series(bars, timeframe, engine_settings, diagnostics="last")
        filled, ta_frame = run.bars, run.ta
        # only the last payload is stored: the bars before it are streamed, without diagnostics, and dropped
        payloads: list[Any] = []
        state_events: list[dict[str, Any]] = []
        for payload, event in run.payloads:
            payloads[:] = [payload]
            if event is not None:
                state_events.append(event)
        stepped = len(ta_frame)  # every bar of the history
        window = ta_frame.iloc[-s.ta_window_bars :]
        window_filled = filled["filled"].to_numpy()[-len(window) :]
        history = EngineHistory(window, engine_settings, first_step=len(window) - 1, filled=window_filled)
    else:
        assert prev is not None  # prev_bar was read from it
        filled = _lay_after(held, bars, timeframe)
        payloads, state_events, history = _step_live(rt, cache_key, timeframe, filled, prev, prev_bar, engine_settings)
        stepped = len(payloads)
        _FINGERPRINTS.pop(cache_key, None)
        kept = _LIVE.get(cache_key)
        if kept is not None and fingerprint is not None and kept.window_start == fingerprint[0]:
            _FINGERPRINTS[cache_key] = (kept, *fingerprint)  # the stored rows this very history was made from
        for gone in [k for k in _FINGERPRINTS if k not in _LIVE]:  # histories the cache let go
            del _FINGERPRINTS[gone]
    if not payloads:
        return {
            **base,
            "status": "unchanged",
            "state": prev.get("state") if prev else None,
            "bars": n_window,
            "read": n_read,
            "payload": features.get("regime_engine_v4"),
        }
    ta_payload = ta_payload_of_history(history, series, timeframe, s.engine_sr_levels)
    step = StepResult(
        prev_bar=prev_bar,
        until=until,
        prev=_without_ts(prev) if prev is not None else None,
        settings=_settings_token(rt, engine_settings),
        window=fingerprint if prev_bar is not None else None,
        engine=payloads[-1],
        events=tuple(state_events),
        ta=_without_ts(ta_payload),
        stepped=stepped,
        bars=n_window,
        read=n_read,
    )
    if prev_bar is not None and fingerprint is not None and s.live_cache_series > 0:
        _STEPS.pop(cache_key, None)  # a live step: the next book at this bar may reuse it (most recent last)
        _STEPS[cache_key] = step
        while len(_STEPS) > s.live_cache_series:
            del _STEPS[next(iter(_STEPS))]
    regime = _write_step(rt, row_id, book_id, driver, timeframe, step, replayed=prev_bar is None)
    return {**base, **_step_summary(step, regime)}


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What stepping one series from ``prev_bar`` to ``until`` computed, independent of the book it was for.

    ``prev`` is the engine payload stepped from (without its ``ts``), ``window`` the fingerprint of the stored bars
    it was computed from (start, until, fingerprint), ``engine``/``ta`` the last payloads (``ta`` without ``ts``),
    ``events`` the state changes of the stepped bars. Never mutated: a second book writes copies.
    """

    prev_bar: pd.Timestamp | None
    until: pd.Timestamp
    prev: dict[str, Any] | None
    settings: tuple[Any, ...]
    window: tuple[pd.Timestamp, pd.Timestamp, store_bars.Fingerprint] | None
    engine: EnginePayload
    events: tuple[dict[str, Any], ...]
    ta: dict[str, Any]
    stepped: int
    bars: int
    read: int


# The last live step of each series in this process (same keys as ``_LIVE``): another book at the same bar whose
# previous payload is the same reuses it instead of stepping again (``_shared_step``).
_STEPS: dict[tuple[str, str, str], StepResult] = {}


def _without_ts(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "ts"}


def _settings_token(rt: Runtime, engine_settings: Any) -> tuple[Any, ...]:
    """Everything besides the bars and the previous payload that a step's result depends on."""
    s = rt.settings
    return (s.ta_window_bars, s.ta_window_slack_bars, s.engine_sr_levels, engine_settings)


def _shared_step(
    rt: Runtime,
    cache_key: tuple[str, str, str],
    key: dict[str, str],
    timeframe: str,
    prev: Mapping[str, Any],
    prev_bar: pd.Timestamp,
    until: pd.Timestamp,
    engine_settings: Any,
) -> StepResult | None:
    """The step another book made in this process from the same previous payload to the same bar, if the stored
    bars it was computed from are unchanged (their fingerprint, read again: one statement, no rows); else None
    and the caller steps normally. Equal inputs give equal bits, so reusing it equals computing it again."""
    done = _STEPS.get(cache_key)
    if (
        done is None
        or done.window is None
        or done.prev_bar != prev_bar
        or done.until != until
        or done.settings != _settings_token(rt, engine_settings)
        or done.prev != _without_ts(prev)
    ):
        return None
    start, end, seen = done.window
    _, _, now = store_bars.read_bars_after(rt.engine, "regime", key, timeframe, start=start, end=end, after=end)
    if now != seen:
        log.debug("stored window changed since the shared step %s", kv(series=cache_key[1:], start=iso(start)))
        return None
    return done


def _write_step(
    rt: Runtime, row_id: int, book_id: str, driver: str, timeframe: str, step: StepResult, *, replayed: bool
) -> dict[str, Any]:
    """Store a step's payloads on the book's row (stamped now) and its events under the book; returns the regime
    payload written."""
    from regime_tasks.core.mapper import map_engine_payload
    from regime_tasks.store.events import append_events, delete_events
    from regime_tasks.store.positions import set_features_bulk

    now_iso = iso(pd.Timestamp.now(tz="UTC"))
    regime = {**map_engine_payload(step.engine), "ts": now_iso}
    last_engine = {**step.engine, "ts": now_iso}
    ta_payload = {**step.ta, "ts": now_iso}
    set_features_bulk(
        rt.engine,
        [(row_id, "ta", ta_payload), (row_id, "uptrend_engine_v4", last_engine), (row_id, "regime_engine_v4", regime)],
    )
    if replayed:  # a whole-history replay recomputes every event of the series
        delete_events(rt.engine, book_id=book_id, driver=driver, timeframe=timeframe)
    if step.events:
        append_events(rt.engine, step.events, book_id=book_id, driver=driver, timeframe=timeframe)
    return regime


def _step_summary(step: StepResult, regime: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "state": regime["state"],
        "bars": step.bars,
        "read": step.read,
        "stepped": step.stepped,
        "payload": regime,
    }


# Warm live histories of this process, most recently used last (see core/live.py). A cache only: every entry is
# checked against the database's bars before use, and a miss rebuilds the same history from them.
_LIVE: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
# Per warm history: (that history object, its window start, ``upto``, the fingerprint of the stored rows from that
# start to ``upto``) read in the same statement as the rows the history was built or extended from
# (store.bars.read_bars_after). Used only while ``_LIVE`` holds that same object.
_FINGERPRINTS: dict[tuple[str, str, str], tuple[Any, pd.Timestamp, pd.Timestamp, store_bars.Fingerprint]] = {}


def _read_window(
    rt: Runtime,
    cache_key: tuple[str, str, str],
    key: dict[str, str],
    timeframe: str,
    start: pd.Timestamp,
    until: pd.Timestamp,
) -> tuple[pd.DataFrame, pd.DataFrame | None, tuple[pd.Timestamp, pd.Timestamp, store_bars.Fingerprint], int]:
    """The stored bars a live step needs from the anchored window ``start``…``until``.

    A warm history of this window whose stored rows are unchanged — the fingerprint of ``start``…``upto`` that
    came with its bars equals the store's now — needs only the rows after ``upto``: returns those and the
    history's own bars (``held``, grid-filled). Otherwise (no warm history, another window, or a row written,
    corrected or removed anywhere in it) the whole window is read and ``held`` is None. The rows and the
    fingerprints come from one statement. Returns (rows read, held, (start, until, fingerprint of the window up
    to ``until``), stored rows in the window)."""
    live = _LIVE.get(cache_key)
    seen = _FINGERPRINTS.get(cache_key)
    if live is not None and seen is not None and seen[0] is live and seen[1] == start == live.window_start and live.n:
        upto = seen[2]
        bars, checked, whole = store_bars.read_bars_after(
            rt.engine, "regime", key, timeframe, start=start, end=until, after=upto
        )
        if checked == seen[3]:
            n = live.n
            held = pd.DataFrame(
                {name: live.cols[name][:n].copy() for name in store_bars.BAR_COLUMNS},
                index=pd.DatetimeIndex(live.timestamps().astype("datetime64[ns]"), name="timestamp").tz_localize("UTC"),
            ).assign(filled=live.filled[:n].copy())
            return bars, held, (start, until, whole), int(whole[0])
        log.debug("stored window changed: read whole %s", kv(series=cache_key[1:], start=iso(start)))
    bars, _, whole = store_bars.read_bars_after(rt.engine, "regime", key, timeframe, start=start, end=until)
    return bars, None, (start, until, whole), len(bars)


def _lay_after(held: pd.DataFrame | None, bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Grid-filled bars: ``held`` (already filled) followed by ``bars`` (stored rows after it), laid as
    ``lay_bars`` lays the whole window (a gap after the held bars is filled flat at its last close)."""
    from regime_tasks.core.series import lay_bars

    if held is None:
        return lay_bars(bars, timeframe)[0]
    if bars.empty:
        return held
    ohlcv = list(store_bars.BAR_COLUMNS)
    stamps = np.r_[held.index[-1:].as_unit("ns").asi8, bars.index.as_unit("ns").asi8]
    if (np.diff(stamps) == bar_delta(timeframe).value).all():  # no gap: nothing to fill (most ticks: one bar)
        laid = bars[ohlcv].assign(filled=False)
    else:
        laid = lay_bars(pd.concat([held.iloc[[-1]][ohlcv], bars[ohlcv]]), timeframe)[0].iloc[1:]
    laid.index = laid.index.as_unit("ns")
    return pd.concat([held, laid])


def _step_live(
    rt: Runtime,
    cache_key: tuple[str, str, str],
    timeframe: str,
    filled: pd.DataFrame,
    prev: Mapping[str, Any],
    prev_bar: pd.Timestamp,
    settings: Any,
) -> tuple[list[EnginePayload], list[dict[str, Any]], Any]:
    """Step every bar of ``filled`` after ``prev_bar``, each on its anchored window."""
    from regime_tasks.core.live import LiveHistory, window_start
    from regime_tasks.core.ta import StreamBreak, compute_ta_frame
    from regime_tasks.core.uptrend import EngineHistory, step

    s = rt.settings
    live = _LIVE.pop(cache_key, None)
    payloads: list[EnginePayload] = []
    events: list[dict[str, Any]] = []
    history: Any = None
    payload: Mapping[str, Any]
    previous: Mapping[str, Any] | None = prev
    checked = False  # a history from the cache is compared with the database once; after that this call feeds it
    for ts in filled.index[filled.index > prev_bar]:
        anchor = window_start(ts, timeframe, s.ta_window_bars, s.ta_window_slack_bars)
        window = filled[(filled.index >= anchor) & (filled.index < ts)]
        try:
            if live is None or live.window_start != anchor or not (checked or _resume(live, window)):
                capacity = s.ta_window_bars + s.ta_window_slack_bars
                live = LiveHistory(window, settings, capacity=capacity, window_start=anchor)
            checked = True
            live.append(ts, filled.loc[ts])
            payload, event = live.step_last(previous)
            history = live
        except StreamBreak as why:  # a window too short to stream, or a bar that changes it: compute it whole
            log.debug("live history rebuilt whole %s", kv(series=cache_key[1:], bar_ts=iso(ts), why=why))
            live = None
            frame = compute_ta_frame(filled[(filled.index >= anchor) & (filled.index <= ts)].drop(columns="filled"))
            window_filled = filled.loc[frame.index, "filled"].to_numpy()
            history = EngineHistory(frame, settings, first_step=len(frame) - 1, filled=window_filled)
            payload, event = step(history, history.n - 1, previous, settings)
        payloads.append(cast(EnginePayload, payload))  # step()'s dict; its shape: tests/core/test_payloads.py
        if event is not None:
            events.append(event)
        previous = payload
    if live is not None and s.live_cache_series > 0:
        _LIVE[cache_key] = live
        while len(_LIVE) > s.live_cache_series:
            _LIVE.popitem(last=False)
    return payloads, events, history


def _resume(live: Any, window: pd.DataFrame) -> bool:
    """Bring a cached history up to the end of ``window`` (the window's bars before the bar to step), if it holds
    exactly the bars the database holds now: a corrected bar anywhere in the window means a rebuild (False)."""
    n = live.n
    if n > len(window) or not np.array_equal(live.timestamps(), window.index.asi8[:n]):
        return False
    for name in ("open", "high", "low", "close", "volume"):
        if not np.array_equal(live.cols[name][:n], window[name].to_numpy(dtype=np.float64)[:n]):
            return False
    if not np.array_equal(live.filled[:n], window["filled"].to_numpy(dtype=bool)[:n]):
        return False
    for ts in window.index[n:]:  # bars another worker process stepped since: add them without stepping
        live.append(ts, window.loc[ts])
    return True


# Infrastructure errors: the database, the cache or the broker failed, not the computation. A step re-raises them
# (update_driver_safely) and the tasks retry exactly these (tasks.RETRYABLE_ERRORS, where the policy is described).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StoreError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    CacheUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
)


def update_driver_safely(
    rt: Runtime, book_id: str, driver: str, timeframe: str, until: pd.Timestamp, *, replay: bool = False
) -> dict[str, Any]:
    """``update_driver`` that turns a computation failure into an ``error`` status (logged with traceback).

    Infrastructure failures (:data:`TRANSIENT_ERRORS`) still raise so that Celery retries the task.
    """
    try:
        return update_driver(rt, book_id, driver, timeframe, until, replay=replay)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.exception("driver update failed %s", kv(driver=driver, timeframe=timeframe, until=iso(until)))
        return {
            "driver": driver,
            "timeframe": timeframe,
            "until": iso(until),
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "state": None,
            "bars": 0,
            "payload": None,
        }
