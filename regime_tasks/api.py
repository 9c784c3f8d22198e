"""The public ``compute_levers()`` and the levers task (plan §5.5; DECISIONS D1, D8–D12).

A trading system calls::

    from regime_tasks import compute_levers
    levers = compute_levers(features, "1h", "small")  # features: the position's lowcap_positions.features
    levers["A_value"], levers["E_value"], levers["position_size_frac"], levers["diagnostics"]

Driver payloads come from the cache (one Redis HGETALL, or the in-process cache in embedded mode). If the cache
is down or empty they come from the database, and the cache is repopulated. If both fail,
:class:`~regime_tasks.errors.RegimeUnavailable` is raised — never a silent neutral (D9) — unless the caller
passes ``neutral_on_unavailable=True``.

Warm path: the entries of a book are kept in process for ``REGIME_LEVERS_SNAPSHOT_TTL_SECS`` (default 1 s), so a
position loop does one cache round trip per second instead of one per position. A tick published through Redis by
another process is visible to every caller within that TTL (ticks are a minute apart, so at most 1/60 of a 1m
bar); a publish to an in-process cache (embedded mode) bumps its ``version`` and is visible on the next call.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.config import bucket_for_market_cap, get_settings
from regime_tasks.core.constants import (
    DEFAULT_BOOK_ID,
    DRIVERS,
    NEUTRAL_A,
    NEUTRAL_E,
    POSITION_SIZE_BASE,
    POSITION_SIZE_PER_A,
    REGIME_TIMEFRAMES,
)
from regime_tasks.core.levers import (
    EntryKey,
    PreparedEntries,
    check_book_id,
    check_inputs,
    check_now,
    compute_levers_from_entries,
    intent_deltas,
    prepare_entries,
    regime_book_id,
    stored_entry_problem,
)
from regime_tasks.errors import DataValidationError, RegimeError, RegimeUnavailable, StoreError
from regime_tasks.logs import kv, redact_url
from regime_tasks.sources.clock import now as regime_now
from regime_tasks.store.cache import CacheUnavailable, MemoryRegimeCache, RedisRegimeCache, RegimeCache

log = logging.getLogger(__name__)

_CACHE_LOCK = threading.Lock()
_DEFAULT_CACHE: RegimeCache | None = None
# (id(cache), book) -> (monotonic time, cache version or None, entries, source); least recently used first.
# Bounded: a process that sees many caches (tests, a host creating one per request) must not grow without end.
SNAPSHOT_MAX_BOOKS = 64
_SNAPSHOTS: OrderedDict[tuple[int, str], tuple[float, int | None, PreparedEntries, str]] = OrderedDict()
_RAW_SEEN: OrderedDict[tuple[int, str], tuple[dict[bytes, bytes], PreparedEntries]] = OrderedDict()
_SNAPSHOTS_LOCK = threading.Lock()  # guards _SNAPSHOTS and _DB_ANSWERS
# (id(engine), book) -> (monotonic time, the database's entries): the database's answer for fields the cache lacks
# is kept as long as a snapshot, so a driver that is legitimately absent (never computed) costs no database read
# per call.
_DB_ANSWERS: OrderedDict[tuple[int, str], tuple[float, dict[EntryKey, dict[str, Any]]]] = OrderedDict()


def get_default_cache() -> RegimeCache:
    """Process-wide cache from settings: Redis when ``REGIME_REDIS_URL`` is set, else in-process."""
    global _DEFAULT_CACHE
    with _CACHE_LOCK:
        if _DEFAULT_CACHE is None:
            s = get_settings()
            _DEFAULT_CACHE = (
                RedisRegimeCache(s.redis_url, socket_timeout_secs=s.redis_socket_timeout_secs)
                if s.redis_url
                else MemoryRegimeCache()
            )
        return _DEFAULT_CACHE


def reset_default_cache() -> None:
    """Forget the process-wide cache and warm snapshots (tests; after settings change)."""
    global _DEFAULT_CACHE
    with _CACHE_LOCK:
        _DEFAULT_CACHE = None
        _SNAPSHOTS.clear()
        _RAW_SEEN.clear()
        _DB_ANSWERS.clear()


def invalidate_snapshots() -> None:
    """Drop warm snapshots so the next call reads the cache (after a local publish)."""
    with _SNAPSHOTS_LOCK:
        _SNAPSHOTS.clear()
        _RAW_SEEN.clear()


_KNOWN_BOOKS: tuple[object, frozenset[str]] | None = None  # (settings it was built from, books)


def check_book(book_id: Any) -> str:
    """``book_id`` if it is a known book (D12's crypto books, ``REGIME_BOOK_ID``, ``REGIME_BOOKS``), else
    UnknownInputError."""
    global _KNOWN_BOOKS
    settings = get_settings()
    if _KNOWN_BOOKS is None or _KNOWN_BOOKS[0] is not settings:
        _KNOWN_BOOKS = (settings, settings.known_books)
    return check_book_id(book_id, _KNOWN_BOOKS[1])


def _parse_fields(raw: Mapping[str, Mapping[str, Any]]) -> dict[EntryKey, dict[str, Any]]:
    out: dict[EntryKey, dict[str, Any]] = {}
    for field, payload in raw.items():
        driver, _, tf = field.partition("|")
        if driver in DRIVERS and tf in REGIME_TIMEFRAMES:
            out[(driver, tf)] = dict(payload)
    return out


def _default_engine() -> Engine:
    """The settings' database; a missing SQLite file is an error, not created (a library call writes no files)."""
    from pathlib import Path

    from regime_tasks.store.db import make_engine

    url = get_settings().effective_database_url
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise StoreError(f"no database file {path} (run `regime bootstrap`, or set REGIME_DATABASE_URL)")
    return make_engine(url)


_ALL_KEYS: tuple[EntryKey, ...] = tuple((d, tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES)


def _database_entries(book: str, engine: Engine | None) -> dict[EntryKey, dict[str, Any]]:
    from regime_tasks.store.positions import read_driver_features

    eng = engine or _default_engine()
    ttl = get_settings().levers_snapshot_ttl_secs
    key = (id(eng), book)
    now = time.monotonic()
    with _SNAPSHOTS_LOCK:
        hit = _DB_ANSWERS.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
    rows = read_driver_features(eng, book, keys=("regime_engine_v4",))
    entries = {k: f["regime_engine_v4"] for k, f in rows.items() if f.get("regime_engine_v4")}
    if ttl > 0:
        with _SNAPSHOTS_LOCK:
            _DB_ANSWERS[key] = (now, entries)
            _DB_ANSWERS.move_to_end(key)
            while len(_DB_ANSWERS) > SNAPSHOT_MAX_BOOKS:
                _DB_ANSWERS.popitem(last=False)
    return entries


def _read_cache(
    cache: RegimeCache, book: str, raw: Mapping[bytes, bytes] | None = None
) -> tuple[dict[EntryKey, dict[str, Any]], set[str]]:
    """The cache's usable entries and the fields whose values are corrupt (unreadable, NaN, out of range);
    ``raw``: the hash already read by ``read_raw`` (Redis only)."""
    fields, corrupt = cache.read_checked(book) if raw is None else cache.decode(book, raw)  # type: ignore[attr-defined]
    entries = _parse_fields(fields)
    for (driver, tf), entry in list(entries.items()):
        problem = stored_entry_problem(entry)
        if problem is not None:
            del entries[(driver, tf)]
            corrupt.add(f"{driver}|{tf}")
            log.warning("corrupt cache entry ignored %s", kv(book=book, field=f"{driver}|{tf}", problem=problem))
    return entries, corrupt


def load_entries(
    book_id: str,
    *,
    cache: RegimeCache | None = None,
    engine: Engine | None = None,
    raw: Mapping[bytes, bytes] | CacheUnavailable | None = None,
) -> tuple[dict[EntryKey, dict[str, Any]], str]:
    """Driver payloads of a book and where they came from: ``cache``, ``database`` or ``cache+database``.

    The cache is judged per field: a field it lacks, or holds corrupt, is taken from the database and
    written back (only where still absent, so a tick's newer value wins), so a hash a Redis restart left half
    filled is never trusted as complete. With the cache down, everything comes from the database; with the
    database down, what the cache has is used; with neither, :class:`RegimeUnavailable`.
    """
    book = regime_book_id(check_book(book_id))
    cache = cache or get_default_cache()
    cache_error: Exception | None = None
    entries: dict[EntryKey, dict[str, Any]] = {}
    corrupt: set[str] = set()
    try:
        if isinstance(raw, CacheUnavailable):  # the caller's read of the hash already failed: do not wait again
            raise raw
        entries, corrupt = _read_cache(cache, book, raw)
    except CacheUnavailable as exc:
        cache_error = exc
        log.warning("cache unavailable, reading the database %s", kv(book=book, error=exc))
    absent = [k for k in _ALL_KEYS if k not in entries]
    if not absent:
        return entries, "cache"
    try:
        stored = _database_entries(book, engine)
    except (StoreError, sa.exc.SQLAlchemyError) as exc:
        if entries:  # the database is down but the cache answered: use it, the absent fields count missing
            log.warning("database unavailable, using the cache alone %s", kv(book=book, absent=len(absent), error=exc))
            return entries, "cache"
        why = f"cache: {cache_error or 'empty'}; database: {redact_url(exc)}"
        raise RegimeUnavailable(f"regime state of book {book!r} unavailable ({why})") from exc
    found = {k: stored[k] for k in absent if k in stored}
    if found and cache_error is None:
        fields = {f"{d}|{tf}": p for (d, tf), p in found.items()}
        try:
            cache.fill(
                book,
                {f: p for f, p in fields.items() if f not in corrupt},
                {f: p for f, p in fields.items() if f in corrupt},
            )
            log.info("cache repopulated from the database %s", kv(book=book, fields=len(fields)))
        except (CacheUnavailable, ValueError) as exc:  # ValueError: a stored NaN cannot be written as JSON
            log.warning("cache refill failed %s", kv(book=book, error=exc))
    if not found:
        return entries, "cache" if entries else "database"
    return {**entries, **found}, "cache+database" if entries else "database"


def _snapshot(book_id: str, cache: RegimeCache, engine: Engine | None) -> tuple[PreparedEntries, str]:
    ttl = get_settings().levers_snapshot_ttl_secs
    key = (id(cache), regime_book_id(book_id))
    # An in-process cache counts its publishes: a local tick then invalidates the snapshot at once. Redis has no
    # such cheap signal (asking would cost the round trip the snapshot saves), so there the TTL bounds the lag.
    version = getattr(cache, "version", None)
    now = time.monotonic()
    with _SNAPSHOTS_LOCK:
        hit = _SNAPSHOTS.get(key)
        if hit is not None and now - hit[0] < ttl and hit[1] == version:
            _SNAPSHOTS.move_to_end(key)
            return hit[2], hit[3]
    # A Redis cache is read as raw bytes first: when they are the bytes this process prepared last time (no tick
    # since), the prepared snapshot is reused and a call with no snapshot TTL costs little more than the HGETALL.
    # Only an answer wholly from the cache is kept: it depends on those bytes alone.
    raw: dict[bytes, bytes] | CacheUnavailable | None = None
    read_raw = getattr(cache, "read_raw", None)
    if read_raw is not None:
        try:
            raw = read_raw(regime_book_id(book_id))
        except CacheUnavailable as exc:
            raw = exc
        if isinstance(raw, dict):
            with _SNAPSHOTS_LOCK:
                seen = _RAW_SEEN.get(key)
            if seen is not None and seen[0] == raw:
                return seen[1], "cache"
    loaded, source = load_entries(book_id, cache=cache, engine=engine, raw=raw)
    entries = prepare_entries(loaded)
    if isinstance(raw, dict) and source == "cache":
        with _SNAPSHOTS_LOCK:
            _RAW_SEEN[key] = (raw, entries)
            _RAW_SEEN.move_to_end(key)
            while len(_RAW_SEEN) > SNAPSHOT_MAX_BOOKS:
                _RAW_SEEN.popitem(last=False)
    if ttl > 0:
        with _SNAPSHOTS_LOCK:
            _SNAPSHOTS[key] = (now, version, entries, source)
            _SNAPSHOTS.move_to_end(key)
            while len(_SNAPSHOTS) > SNAPSHOT_MAX_BOOKS:
                _SNAPSHOTS.popitem(last=False)
    return entries, source


def compute_levers(
    features: Mapping[str, Any] | None,
    execution_timeframe: str,
    position_bucket: str | None,
    *,
    book_id: str = DEFAULT_BOOK_ID,
    cache: RegimeCache | None = None,
    now: dt.datetime | None = None,
    neutral_on_unavailable: bool = False,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """A, E and position size for one position, with diagnostics (plan §5.5).

    ``now`` (default: the wall clock, or the replay clock when it is set) judges staleness (D8). Raises
    ``UnknownInputError`` for an execution timeframe or bucket outside the plan's tables and ``RegimeUnavailable``
    when neither cache nor database answers (unless ``neutral_on_unavailable``: then A = E = 0.5 with
    ``diagnostics.unavailable = True``).
    """
    # Every argument is checked before any I/O, so a bad one is an UnknownInputError, never a RegimeUnavailable
    # or a TypeError from deep inside.
    clock = regime_now() if now is None else check_now(now)  # default: the wall clock, or the replay clock
    check_book(book_id)
    check_inputs(execution_timeframe, position_bucket)
    intent = intent_deltas({} if features is None else features)
    try:
        entries, source = _snapshot(book_id, cache or get_default_cache(), engine)
    except RegimeUnavailable as exc:
        if not neutral_on_unavailable:
            raise
        log.error("regime unavailable, neutral levers returned on request %s", kv(book=book_id, error=exc))
        result = compute_levers_from_entries({}, features, execution_timeframe, position_bucket, now=clock)
        result.update(
            A_value=NEUTRAL_A,
            E_value=NEUTRAL_E,
            position_size_frac=POSITION_SIZE_BASE + POSITION_SIZE_PER_A * NEUTRAL_A,
        )
        result["diagnostics"]["unavailable"] = True
        result["diagnostics"]["error"] = str(exc)
        return result
    result = compute_levers_from_entries(
        entries, features, execution_timeframe, position_bucket, now=clock, intent=intent
    )
    corrupt = result["diagnostics"]["corrupt"]
    if corrupt:
        log.warning("corrupt driver entries ignored %s", kv(book=book_id, source=source, corrupt=corrupt))
    result["diagnostics"]["source"] = source
    result["diagnostics"]["regime_book_id"] = regime_book_id(book_id)
    return result


def _books_reading(book_id: str) -> list[str]:
    from regime_tasks.core.constants import CRYPTO_BOOK_IDS

    return sorted(CRYPTO_BOOK_IDS) if regime_book_id(book_id) == DEFAULT_BOOK_ID else [book_id]


def _row_levers(
    row: Any, entries: PreparedEntries, source: str, clock: dt.datetime, computed_at: str, settings: Any
) -> dict[str, Any]:
    """``features.levers`` of one position row, or a RegimeError saying why it has none."""
    if row.problem is not None:  # features not a JSON object: written by a host, unreadable for us
        raise DataValidationError(row.problem, field="features")
    bucket = row.bucket
    if bucket is None and row.market_cap_usd is not None:
        cap = row.market_cap_usd
        if not (math.isfinite(cap) and cap > 0):  # NaN would land in "big", a negative cap in "nano"
            raise DataValidationError(f"market_cap_usd {cap!r} is not a finite positive number", field="market_cap_usd")
        bucket = bucket_for_market_cap(cap, settings)
    if bucket is None:
        # Levers without the bucket driver would silently drop its weight of 3: refuse instead.
        raise DataValidationError("no bucket and no market_cap_usd", field="bucket")
    res = compute_levers_from_entries(entries, row.features, row.timeframe, bucket, now=clock, copy=False)
    diag = res["diagnostics"]  # shared lists (copy=False): serialised below, never changed
    return {
        "A_value": res["A_value"],
        "E_value": res["E_value"],
        "position_size_frac": res["position_size_frac"],
        "bucket": bucket,
        "execution_timeframe": row.timeframe,
        "degraded": diag["degraded"],
        "stale": diag["stale"],
        "missing": diag["missing"],
        "intent": {"delta_a": diag["intent"]["delta_a"], "delta_e": diag["intent"]["delta_e"]},
        "source": source,
        "computed_at": computed_at,
    }


def _is_outage(exc: StoreError) -> bool:
    """The database could not be reached (retry the task), as opposed to rejecting some row (skip that row)."""
    return isinstance(exc.__cause__, sa.exc.OperationalError | sa.exc.InterfaceError)


def _write_batch(engine: Engine, updates: list[tuple[int, str, Any]], errors: list[dict[str, Any]]) -> int:
    """One transaction for the batch; if the database rejects it, the rows one by one, listing the bad ones."""
    from regime_tasks.store.positions import set_features_bulk

    try:
        return set_features_bulk(engine, updates)
    except StoreError as exc:
        if _is_outage(exc):
            raise  # nothing is wrong with the rows: Celery retries the task
        log.warning("levers batch rejected, writing its rows one by one %s", kv(rows=len(updates), error=exc))
    written = 0
    for update in updates:
        try:
            written += set_features_bulk(engine, [update])
        except StoreError as exc:
            if _is_outage(exc):
                raise
            errors.append({"id": update[0], "error": str(exc)})
    return written


def run_levers_task(
    engine: Engine,
    cache: RegimeCache,
    *,
    book_id: str,
    now: dt.datetime | None = None,
    batch_rows: int = 1_000,
) -> dict[str, Any]:
    """Write ``features.levers`` for every active/watchlist position whose book reads ``book_id``'s drivers.

    One transaction per batch; only the ``levers`` key of each row changes. The bucket is the row's, else the one
    its market cap implies. Every row is isolated: a row whose features are not a JSON object, with
    neither bucket nor a valid market cap, an execution timeframe outside the plan's table or a bad intent metric
    gets an error in the summary (and no levers); the others proceed. Rows are validated before the batched
    write; a batch the database still rejects is written row by row and the rejected rows are listed.
    """
    from regime_tasks.store.positions import iter_lever_positions

    check_book(book_id)
    clock = now or regime_now()  # the wall clock, or the replay clock (sources/clock.py)
    loaded, source = load_entries(book_id, cache=cache, engine=engine)
    entries = prepare_entries(loaded)  # parsed once for every row
    settings = get_settings()
    computed_at = clock.strftime("%Y-%m-%dT%H:%M:%SZ")
    written, errors = 0, []
    for batch in iter_lever_positions(engine, book_ids=_books_reading(book_id), batch_rows=batch_rows):
        updates = []
        for row in batch:
            try:
                updates.append((row.id, "levers", _row_levers(row, entries, source, clock, computed_at, settings)))
            except RegimeError as exc:  # the row's own inputs; nothing to retry
                errors.append({"id": row.id, "error": str(exc)})
        written += _write_batch(engine, updates, errors)
    if errors:
        log.error("levers task skipped rows %s", kv(book=book_id, rows=len(errors), first=errors[0]))
    return {"book_id": book_id, "written": written, "errors": errors, "source": source}
