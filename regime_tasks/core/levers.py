"""compute_levers() arithmetic: driver deltas → A, E, size with diagnostics (plan §4, §5.5; D2, D8, D11, D12).

    A = 0.5 + Σ_driver Σ_tf delta_a_raw[driver, tf] × DRIVER_WEIGHT[driver] × EXEC_TF_MULTIPLIERS[X][tf]
    (same for E), then intent deltas (each capped at ±0.4), clamp to [0, 1], size = 0.10 + 0.50 × A.

Drivers for a position in bucket B: BTC, ALT, B, BTC.d, USDT.d. A driver × timeframe whose latest bar closed
more than 3 of its bars before ``now`` is stale and counts 0, 0 (D8); missing ones too. Without BTC or ALT the
result is ``degraded``. Pure: the caller passes the entries (from the cache or the database) and the time.

Every number that leaves is finite: an intent metric that is not a finite number raises
``UnknownInputError`` naming it; a driver entry whose deltas or bar time are not usable (NaN, inf, text, a value no
mapper table can produce) counts as *missing* for that driver and is listed in ``diagnostics.corrupt``.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import math
from collections.abc import Mapping
from typing import Any, Final

from regime_tasks.core.constants import (
    BUCKETS,
    CRYPTO_BOOK_IDS,
    DEFAULT_BOOK_ID,
    DRIVER_WEIGHTS,
    EXEC_TF_MULTIPLIERS,
    INTENT_CAP,
    INTENT_WEIGHTS_A,
    INTENT_WEIGHTS_E,
    MAX_DRIVER_DELTA_ABS,
    NEUTRAL_A,
    NEUTRAL_E,
    POSITION_SIZE_BASE,
    POSITION_SIZE_PER_A,
    REGIME_TIMEFRAMES,
    REQUIRED_DRIVERS,
    STALE_AFTER_BARS,
    TF_WEIGHTS,
    TIMEFRAME_SECONDS,
)
from regime_tasks.errors import UnknownInputError

EntryKey = tuple[str, str]  # (driver, regime timeframe)


def regime_book_id(book_id: str) -> str:
    """The book whose drivers a position reads: crypto books share ``onchain_crypto``'s (D12)."""
    return DEFAULT_BOOK_ID if book_id in CRYPTO_BOOK_IDS else book_id


def check_book_id(book_id: Any, known: frozenset[str] = CRYPTO_BOOK_IDS) -> str:
    """A book id must be a known book (D12's plus configured ones): a misspelt one would otherwise read an empty
    book and answer a silent neutral A = E = 0.5."""
    if not isinstance(book_id, str) or not book_id or not book_id.isprintable():
        raise UnknownInputError(f"book_id must be a non-empty printable string, got {book_id!r}")
    if book_id not in known:
        raise UnknownInputError(f"unknown book {book_id!r}; expected one of {sorted(known)} (more via REGIME_BOOKS)")
    return book_id


def entry_problem(entry: Any) -> str | None:
    """Why a cached/stored driver entry's deltas cannot be used, or None when they can (never NaN).

    Cheap on the warm path (15 entries per call): two chained comparisons per entry, which NaN, ±inf, text,
    ``None`` and out-of-range numbers all fail. The bar time is judged where it is parsed (``is_stale``).
    """
    try:
        a = entry.get("delta_a_raw") or 0.0  # no delta yet (warming up) counts 0, as the mapper means it
        e = entry.get("delta_e_raw") or 0.0
        if -MAX_DRIVER_DELTA_ABS <= a <= MAX_DRIVER_DELTA_ABS and -MAX_DRIVER_DELTA_ABS <= e <= MAX_DRIVER_DELTA_ABS:
            return None
    except (AttributeError, TypeError):
        if not isinstance(entry, Mapping):
            return f"entry is {type(entry).__name__}, not an object"
    for key in ("delta_a_raw", "delta_e_raw"):
        value = entry.get(key) or 0.0
        if not isinstance(value, int | float) or not -MAX_DRIVER_DELTA_ABS <= value <= MAX_DRIVER_DELTA_ABS:
            return f"{key} = {value!r} is not a finite number within ±{MAX_DRIVER_DELTA_ABS}"
    return None  # pragma: no cover - the fast path accepts everything the loop accepts


def stored_entry_problem(entry: Any) -> str | None:
    """:func:`entry_problem` plus the bar time (used once per load, where the cost does not matter)."""
    problem = entry_problem(entry)
    if problem is not None:
        return problem
    bar_ts = entry.get("bar_ts")
    if bar_ts is None:
        return None
    try:
        _parse_utc(bar_ts)
    except (TypeError, ValueError, AttributeError):
        return f"bar_ts = {bar_ts!r} is not an ISO-8601 time"
    return None


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


@functools.lru_cache(maxsize=1024)
def _parse_utc(value: str) -> dt.datetime:
    # Memoised: 15 bar times per call, the same 24 strings until the next tick; parsing was half a warm call.
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def entry_age_bars(entry: Mapping[str, Any], timeframe: str, now: dt.datetime) -> float | None:
    """Bars elapsed since the entry's bar **closed** (open time + one bar), or None without ``bar_ts``."""
    bar_ts = entry.get("bar_ts")
    if not bar_ts:
        return None
    seconds = TIMEFRAME_SECONDS[timeframe]
    closed_at = _parse_utc(bar_ts) + dt.timedelta(seconds=seconds)
    return (now - closed_at).total_seconds() / seconds


def is_stale(entry: Mapping[str, Any], timeframe: str, now: dt.datetime) -> bool:
    """Stale when more than ``STALE_AFTER_BARS`` bars have passed since the bar closed (D8)."""
    age = entry_age_bars(entry, timeframe, now)
    return age is None or age > STALE_AFTER_BARS


_INTENT_WEIGHTS: Final = tuple((name, INTENT_WEIGHTS_A[name], INTENT_WEIGHTS_E[name]) for name in INTENT_WEIGHTS_A)


def intent_deltas(features: Mapping[str, Any]) -> dict[str, Any]:
    """Intent ΔA/ΔE from ``features.intent_metrics`` (each metric 0–1), before and after the ±0.4 cap (D11).

    A metric that is not a finite number (NaN, inf, ``10**400``, text) raises ``UnknownInputError`` naming it.
    """
    if not isinstance(features, Mapping):
        raise UnknownInputError(f"features must be an object, got {type(features).__name__}")
    metrics = features.get("intent_metrics") or {}
    if not isinstance(metrics, Mapping):
        raise UnknownInputError(f"features.intent_metrics must be an object, got {type(metrics).__name__}")
    used: dict[str, float] = {}
    da = de = 0.0
    for name, weight_a, weight_e in _INTENT_WEIGHTS:
        value = metrics.get(name, 0.0)
        try:
            v = float(value or 0.0)
        except (TypeError, ValueError, OverflowError):
            raise UnknownInputError(f"features.intent_metrics.{name} must be a number, got {value!r}") from None
        if not math.isfinite(v):  # _clamp would let NaN through and make A, E and size NaN
            raise UnknownInputError(f"features.intent_metrics.{name} must be a finite number, got {value!r}")
        used[name] = v = 0.0 if v < 0.0 else 1.0 if v > 1.0 else v
        da += weight_a * v
        de += weight_e * v
    return {
        "metrics": used,
        "delta_a_raw": da,
        "delta_e_raw": de,
        "delta_a": _clamp(da, -INTENT_CAP, INTENT_CAP),
        "delta_e": _clamp(de, -INTENT_CAP, INTENT_CAP),
    }


class _Slot:
    """One driver × timeframe of a prepared snapshot: what does not depend on ``now`` or the position."""

    __slots__ = ("bar_ts", "key", "problem", "raw_a", "raw_e", "stale_after", "state", "usable")

    def __init__(self, key: str, tf: str, entry: Any) -> None:
        self.key = key
        self.problem = None if entry is None else entry_problem(entry)
        self.stale_after: dt.datetime | None = None  # stale once ``now`` is past this; None: always stale
        if self.problem is None and entry is not None:
            bar_ts = entry.get("bar_ts")
            if bar_ts:
                try:
                    closed_at = _parse_utc(bar_ts) + dt.timedelta(seconds=TIMEFRAME_SECONDS[tf])
                except (TypeError, ValueError, AttributeError):  # a bar time that is not an ISO-8601 string
                    self.problem = f"bar_ts = {bar_ts!r} is not an ISO-8601 time"
                else:
                    self.stale_after = closed_at + dt.timedelta(seconds=STALE_AFTER_BARS * TIMEFRAME_SECONDS[tf])
        self.usable = self.problem is None and entry is not None
        self.state = entry.get("state") if self.usable else None
        self.bar_ts = entry.get("bar_ts") if self.usable else None
        self.raw_a = float(entry.get("delta_a_raw") or 0.0) if self.usable else 0.0
        self.raw_e = float(entry.get("delta_e_raw") or 0.0) if self.usable else 0.0


class PreparedEntries:
    """Driver entries checked and parsed once, for many positions and calls.

    Everything about an entry except its staleness is independent of ``now`` and of the position, so it is
    computed here once: corrupt-entry checks, bar-time parsing, the instant each entry turns stale. A call then
    only compares ``now`` with those instants (D8: stale when more than ``STALE_AFTER_BARS`` bars have passed since
    the bar closed) and reuses the regime sum of the same drivers, timeframe weights and staleness (at most a few
    dozen combinations). ``compute_levers_from_entries`` gives the same result for a plain mapping; the snapshot of
    ``compute_levers()`` and the levers task hold a prepared one.
    """

    _MAX_SUMS = 512

    def __init__(self, entries: Mapping[EntryKey, Mapping[str, Any]]) -> None:
        self.entries = entries
        self._slots: dict[EntryKey, _Slot] = {}
        self._sums: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._slot_lists: dict[tuple[str, ...], tuple[list[_Slot], list[dt.datetime]]] = {}

    def slot(self, driver: str, tf: str) -> _Slot:
        slot = self._slots.get((driver, tf))
        if slot is None:
            slot = self._slots[(driver, tf)] = _Slot(f"{driver}|{tf}", tf, self.entries.get((driver, tf)))
        return slot

    def regime_sum(
        self,
        drivers: tuple[str, ...],
        tf_key: str,
        tf_weights: Mapping[str, float],
        now: dt.datetime,
        driver_scale: Mapping[str, float] | None = None,
        *,
        copy: bool = True,
    ) -> tuple[float, float, list[dict[str, Any]], list[str], list[str], dict[str, str], bool]:
        """The regime part of A/E for ``drivers`` at ``now``; the last item says whether BTC or ALT is stale or
        missing on some timeframe (``degraded``). The lists and dicts are fresh copies the caller may keep and
        change; with ``copy=False`` they are this snapshot's own, shared by every call with the same inputs, for
        callers that only read them (copying 24 contributions was a third of the levers task's own work)."""
        hit_slots = self._slot_lists.get(drivers)
        if hit_slots is None:
            slots = [self.slot(d, tf) for d in drivers for tf in REGIME_TIMEFRAMES]
            turns = sorted({s.stale_after for s in slots if s.usable and s.stale_after is not None})
            hit_slots = self._slot_lists[drivers] = (slots, turns)
        slots, turns = hit_slots
        # which entries are stale depends only on how many of them have turned stale by ``now``
        key = (drivers, tf_key, bisect.bisect_left(turns, now))
        hit = self._sums.get(key)
        if hit is None:
            stale = tuple(s.usable and (s.stale_after is None or now > s.stale_after) for s in slots)
            hit = self._sum(slots, stale, tf_weights, driver_scale)
            if len(self._sums) >= self._MAX_SUMS:
                self._sums.clear()
            self._sums[key] = hit
        da, de, contributions, stale_keys, missing, corrupt, degraded = hit
        if not copy:
            return hit
        return da, de, [dict(c) for c in contributions], list(stale_keys), list(missing), dict(corrupt), degraded

    @staticmethod
    def _sum(
        slots: list[_Slot],
        stale_mask: tuple[bool, ...],
        tf_weights: Mapping[str, float],
        driver_scale: Mapping[str, float] | None,
    ) -> tuple[float, float, list[dict[str, Any]], list[str], list[str], dict[str, str], bool]:
        da = de = 0.0
        contributions: list[dict[str, Any]] = []
        stale: list[str] = []
        missing: list[str] = []
        corrupt: dict[str, str] = {}
        for slot, stale_now in zip(slots, stale_mask, strict=True):
            driver, tf = slot.key.split("|")
            weight = DRIVER_WEIGHTS[driver] * (driver_scale or {}).get(driver, 1.0)
            mult = tf_weights[tf]
            raw_a = raw_e = 0.0
            if slot.problem is not None:
                corrupt[slot.key] = slot.problem
            if not slot.usable:
                status = "missing"
                missing.append(slot.key)
            elif stale_now:
                status = "stale"
                stale.append(slot.key)
            else:
                status = "ok"
                raw_a, raw_e = slot.raw_a, slot.raw_e
            ca, ce = raw_a * weight * mult, raw_e * weight * mult
            da += ca
            de += ce
            contributions.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    "status": status,
                    "state": slot.state,
                    "bar_ts": slot.bar_ts,
                    "delta_a_raw": raw_a,
                    "delta_e_raw": raw_e,
                    "driver_weight": weight,
                    "tf_multiplier": mult,
                    "contribution_a": ca,
                    "contribution_e": ce,
                }
            )
        unusable = set(stale) | set(missing)
        degraded = any(f"{d}|{tf}" in unusable for d in REQUIRED_DRIVERS for tf in REGIME_TIMEFRAMES)
        return da, de, contributions, stale, missing, corrupt, degraded


def prepare_entries(entries: Mapping[EntryKey, Mapping[str, Any]] | PreparedEntries) -> PreparedEntries:
    """``entries`` prepared for repeated calls (a prepared snapshot is returned as it is)."""
    return entries if isinstance(entries, PreparedEntries) else PreparedEntries(entries)


def check_now(now: Any) -> dt.datetime:
    """``now`` as an aware datetime, or UnknownInputError (a naive time has no defined age)."""
    if not isinstance(now, dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise UnknownInputError(f"now must be a timezone-aware datetime, got {now!r}")
    return now


def check_inputs(execution_timeframe: str, position_bucket: str | None) -> None:
    """Raise UnknownInputError for an execution timeframe or bucket outside the plan's tables (D2)."""
    if not isinstance(execution_timeframe, str) or execution_timeframe not in EXEC_TF_MULTIPLIERS:
        raise UnknownInputError(
            f"unknown execution timeframe {execution_timeframe!r}; expected one of {sorted(EXEC_TF_MULTIPLIERS)}"
        )
    if position_bucket is not None and (not isinstance(position_bucket, str) or position_bucket not in BUCKETS):
        raise UnknownInputError(f"unknown bucket {position_bucket!r}; expected one of {BUCKETS} or None")


def compute_levers_from_entries(
    entries: Mapping[EntryKey, Mapping[str, Any]] | PreparedEntries,
    features: Mapping[str, Any] | None,
    execution_timeframe: str,
    position_bucket: str | None,
    *,
    now: dt.datetime,
    intent: dict[str, Any] | None = None,
    copy: bool = True,
) -> dict[str, Any]:
    """A, E, size and diagnostics for one position (plan §5.5 return keys).

    ``entries`` is a mapping (driver, timeframe) → entry, or the same prepared once (:class:`PreparedEntries`) when
    many positions read it. ``intent`` is ``intent_deltas(features)`` when the caller has already computed it.
    ``copy=False``: the diagnostics' contributions, stale and missing lists and corrupt map are shared with other
    calls on the same prepared entries (read them, never change them; see :meth:`PreparedEntries.regime_sum`).
    """
    check_inputs(execution_timeframe, position_bucket)
    check_now(now)
    drivers = ("BTC", "ALT", *((position_bucket,) if position_bucket else ()), "BTC.d", "USDT.d")
    if intent is None:
        intent = intent_deltas({} if features is None else features)
    da, de, contributions, stale, missing, corrupt, degraded = prepare_entries(entries).regime_sum(
        drivers, execution_timeframe, EXEC_TF_MULTIPLIERS[execution_timeframe], now, copy=copy
    )
    a_pre = NEUTRAL_A + da + intent["delta_a"]
    e_pre = NEUTRAL_E + de + intent["delta_e"]
    a, e = _clamp(a_pre, 0.0, 1.0), _clamp(e_pre, 0.0, 1.0)
    return {
        "A_value": a,
        "E_value": e,
        "position_size_frac": POSITION_SIZE_BASE + POSITION_SIZE_PER_A * a,
        "diagnostics": {
            "execution_timeframe": execution_timeframe,
            "bucket": position_bucket,
            "delta_a_regime": da,
            "delta_e_regime": de,
            "contributions": contributions,
            "stale": stale,
            "missing": missing,
            "corrupt": corrupt,
            "intent": intent,
            "clamped": {"A_before": a_pre, "E_before": e_pre, "A": a != a_pre, "E": e != e_pre},
            "degraded": degraded,
        },
    }


def market_summary(
    entries: Mapping[EntryKey, Mapping[str, Any]] | PreparedEntries, *, now: dt.datetime
) -> dict[str, Any]:
    """Market-wide A/E with the fixed timeframe weights (D2): BTC, ALT, BTC.d, USDT.d and the four buckets
    at a quarter of the bucket weight each (their mean), so no single bucket dominates the summary."""
    drivers = ("BTC", "ALT", *BUCKETS, "BTC.d", "USDT.d")
    scale = {b: 1.0 / len(BUCKETS) for b in BUCKETS}
    check_now(now)
    da, de, contributions, stale, missing, corrupt, degraded = prepare_entries(entries).regime_sum(
        drivers, "market", TF_WEIGHTS, now, scale
    )
    a, e = _clamp(NEUTRAL_A + da, 0.0, 1.0), _clamp(NEUTRAL_E + de, 0.0, 1.0)
    return {
        "A_value": a,
        "E_value": e,
        "position_size_frac": POSITION_SIZE_BASE + POSITION_SIZE_PER_A * a,
        "delta_a_regime": da,
        "delta_e_regime": de,
        "stale": stale,
        "missing": missing,
        "corrupt": corrupt,
        "degraded": degraded,
        "contributions": contributions,
    }
