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

import datetime as dt
import functools
import math
from collections.abc import Mapping
from typing import Any

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
    for name in INTENT_WEIGHTS_A:
        value = metrics.get(name, 0.0)
        try:
            v = float(value or 0.0)
        except (TypeError, ValueError, OverflowError):
            raise UnknownInputError(f"features.intent_metrics.{name} must be a number, got {value!r}") from None
        if not math.isfinite(v):  # _clamp would let NaN through and make A, E and size NaN
            raise UnknownInputError(f"features.intent_metrics.{name} must be a finite number, got {value!r}")
        used[name] = _clamp(v, 0.0, 1.0)
    da = sum(INTENT_WEIGHTS_A[k] * used[k] for k in used)
    de = sum(INTENT_WEIGHTS_E[k] * used[k] for k in used)
    return {
        "metrics": used,
        "delta_a_raw": da,
        "delta_e_raw": de,
        "delta_a": _clamp(da, -INTENT_CAP, INTENT_CAP),
        "delta_e": _clamp(de, -INTENT_CAP, INTENT_CAP),
    }


def _regime_sum(
    entries: Mapping[EntryKey, Mapping[str, Any]],
    drivers: list[str],
    tf_weights: Mapping[str, float],
    now: dt.datetime,
    driver_scale: Mapping[str, float] | None = None,
) -> tuple[float, float, list[dict[str, Any]], list[str], list[str], dict[str, str]]:
    da = de = 0.0
    contributions: list[dict[str, Any]] = []
    stale: list[str] = []
    missing: list[str] = []
    corrupt: dict[str, str] = {}
    for driver in drivers:
        weight = DRIVER_WEIGHTS[driver] * (driver_scale or {}).get(driver, 1.0)
        for tf in REGIME_TIMEFRAMES:
            mult = tf_weights[tf]
            entry = entries.get((driver, tf))
            status = "ok"
            raw_a = raw_e = 0.0
            stale_now = False
            problem = None if entry is None else entry_problem(entry)
            if problem is None and entry is not None:
                try:
                    stale_now = is_stale(entry, tf, now)
                except (TypeError, ValueError):  # a bar time that is not an ISO-8601 string
                    problem = f"bar_ts = {entry.get('bar_ts')!r} is not an ISO-8601 time"
            if problem is not None:
                corrupt[f"{driver}|{tf}"] = problem
                entry = None
            if entry is None:
                status = "missing"
                missing.append(f"{driver}|{tf}")
            elif stale_now:
                status = "stale"
                stale.append(f"{driver}|{tf}")
            else:
                raw_a = float(entry.get("delta_a_raw") or 0.0)
                raw_e = float(entry.get("delta_e_raw") or 0.0)
            ca, ce = raw_a * weight * mult, raw_e * weight * mult
            da += ca
            de += ce
            contributions.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    "status": status,
                    "state": None if entry is None else entry.get("state"),
                    "bar_ts": None if entry is None else entry.get("bar_ts"),
                    "delta_a_raw": raw_a,
                    "delta_e_raw": raw_e,
                    "driver_weight": weight,
                    "tf_multiplier": mult,
                    "contribution_a": ca,
                    "contribution_e": ce,
                }
            )
    return da, de, contributions, stale, missing, corrupt


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
    entries: Mapping[EntryKey, Mapping[str, Any]],
    features: Mapping[str, Any] | None,
    execution_timeframe: str,
    position_bucket: str | None,
    *,
    now: dt.datetime,
) -> dict[str, Any]:
    """A, E, size and diagnostics for one position (plan §5.5 return keys)."""
    check_inputs(execution_timeframe, position_bucket)
    check_now(now)
    drivers = ["BTC", "ALT", *([position_bucket] if position_bucket else []), "BTC.d", "USDT.d"]
    intent = intent_deltas({} if features is None else features)
    da, de, contributions, stale, missing, corrupt = _regime_sum(
        entries, drivers, EXEC_TF_MULTIPLIERS[execution_timeframe], now
    )
    a_pre = NEUTRAL_A + da + intent["delta_a"]
    e_pre = NEUTRAL_E + de + intent["delta_e"]
    a, e = _clamp(a_pre, 0.0, 1.0), _clamp(e_pre, 0.0, 1.0)
    unusable = set(stale) | set(missing)
    degraded = any(f"{d}|{tf}" in unusable for d in REQUIRED_DRIVERS for tf in REGIME_TIMEFRAMES)
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


def market_summary(entries: Mapping[EntryKey, Mapping[str, Any]], *, now: dt.datetime) -> dict[str, Any]:
    """Market-wide A/E with the fixed timeframe weights (D2): BTC, ALT, BTC.d, USDT.d and the four buckets
    at a quarter of the bucket weight each (their mean), so no single bucket dominates the summary."""
    drivers = ["BTC", "ALT", *BUCKETS, "BTC.d", "USDT.d"]
    scale = {b: 1.0 / len(BUCKETS) for b in BUCKETS}
    check_now(now)
    da, de, contributions, stale, missing, corrupt = _regime_sum(entries, drivers, TF_WEIGHTS, now, scale)
    unusable = set(stale) | set(missing)
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
        "degraded": any(f"{d}|{tf}" in unusable for d in REQUIRED_DRIVERS for tf in REGIME_TIMEFRAMES),
        "contributions": contributions,
    }
