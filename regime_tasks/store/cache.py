"""Latest driver payloads per book: one Redis hash, or an in-process dict with the same interface (D10).

Layout: hash ``regime:{book_id}:latest``, field ``"{driver}|{tf}"``, value = JSON of
``features.regime_engine_v4`` (with ``bar_ts``). A publish writes all its fields in one MULTI/EXEC; a read is
one HGETALL round trip. Redis must run with ``maxmemory-policy noeviction``.

A value that is not a JSON object (tampered, truncated) is left out of a read and logged, so the reader falls back
to the database for that field as for a missing one; :meth:`fill` then writes the database's value.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from regime_tasks.errors import RegimeUnavailable
from regime_tasks.logs import kv, redact_url

log = logging.getLogger(__name__)

Entries = dict[str, dict[str, Any]]  # field "{driver}|{tf}" -> payload


def _loads(raw: bytes | str) -> Any:
    """orjson for the strict JSON publish writes (faster than json.loads on a cold read's 24 fields); anything it
    refuses (NaN or 1e400 written by another program) gets json.loads' own answer or error, as before. (An integer
    beyond 64 bits reads as a float here, where json.loads keeps an int; publish never writes one.)"""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _encode(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), allow_nan=False, separators=(",", ":"))


def cache_key(book_id: str) -> str:
    return f"regime:{book_id}:latest"


class CacheUnavailable(RegimeUnavailable):
    """The cache could not be reached (the caller falls back to the database)."""


class RegimeCache(Protocol):
    """What the mapper step writes and compute_levers() reads."""

    def publish(self, book_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None: ...

    def read(self, book_id: str) -> Entries: ...

    def read_checked(self, book_id: str) -> tuple[Entries, set[str]]: ...

    def fill(
        self, book_id: str, missing: Mapping[str, Mapping[str, Any]], corrupt: Mapping[str, Mapping[str, Any]]
    ) -> None: ...

    def clear(self, book_id: str) -> None: ...


class MemoryRegimeCache:
    """In-process cache for the embedded default (thread-safe; lost with the process)."""

    def __init__(self) -> None:
        self._data: dict[str, Entries] = {}
        self._lock = threading.Lock()
        self.version = 0

    def publish(self, book_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        encoded = {k: json.loads(json.dumps(dict(v), allow_nan=False)) for k, v in entries.items()}
        with self._lock:
            self._data.setdefault(book_id, {}).update(encoded)
            self.version += 1

    def read(self, book_id: str) -> Entries:
        with self._lock:
            return {k: dict(v) for k, v in self._data.get(book_id, {}).items()}

    def read_checked(self, book_id: str) -> tuple[Entries, set[str]]:
        """Like :meth:`read`, plus the fields whose values are unreadable (never any here: values are JSON)."""
        return self.read(book_id), set()

    def fill(
        self, book_id: str, missing: Mapping[str, Mapping[str, Any]], corrupt: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Refill from the database: ``missing`` fields only where still absent, ``corrupt`` ones overwritten."""
        encoded = {k: json.loads(json.dumps(dict(v), allow_nan=False)) for k, v in {**missing, **corrupt}.items()}
        with self._lock:
            book = self._data.setdefault(book_id, {})
            for k, v in encoded.items():
                if k in corrupt or k not in book:
                    book[k] = v
            self.version += 1

    def clear(self, book_id: str) -> None:
        with self._lock:
            self._data.pop(book_id, None)
            self.version += 1


class RedisRegimeCache:
    """Redis hash per book; connection errors raise :class:`CacheUnavailable` (the URL in it is redacted)."""

    def __init__(self, url: str, *, socket_timeout_secs: float = 0.5) -> None:
        import redis

        self.url = redact_url(url)  # only ever printed; the client keeps the real one
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_secs,
            socket_connect_timeout=socket_timeout_secs,
            health_check_interval=30,
        )
        # ResponseError: e.g. WRONGTYPE when the key was overwritten by something else - unreadable, as if down.
        self._errors: tuple[type[Exception], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ResponseError,
        )

    def publish(self, book_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not entries:
            return
        mapping: dict[Any, str] = {k: _encode(v) for k, v in entries.items()}  # Any: redis-py's own field union
        try:
            with self._redis.pipeline(transaction=True) as pipe:  # MULTI … EXEC: all fields or none
                pipe.hset(cache_key(book_id), mapping=mapping)
                pipe.execute()
        except self._errors as exc:
            raise CacheUnavailable(f"redis publish failed ({self.url}): {redact_url(exc)}") from exc

    def read(self, book_id: str) -> Entries:
        """Every readable field of the book's hash (one HGETALL)."""
        return self.read_checked(book_id)[0]

    def read_checked(self, book_id: str) -> tuple[Entries, set[str]]:
        """The readable fields, and the names of the fields whose value is not a JSON object."""
        return self.decode(book_id, self.read_raw(book_id))

    def read_raw(self, book_id: str) -> dict[bytes, bytes]:
        """The book's hash as Redis holds it (one HGETALL): a caller that saw the same bytes before can reuse
        what it made of them (``compute_levers()`` does, see ``api._snapshot``)."""
        try:
            return self._redis.hgetall(cache_key(book_id))  # type: ignore[return-value]
        except self._errors as exc:
            raise CacheUnavailable(f"redis read failed ({self.url}): {redact_url(exc)}") from exc

    def decode(self, book_id: str, raw: Mapping[bytes, bytes]) -> tuple[Entries, set[str]]:
        """:meth:`read_checked` of a hash already read with :meth:`read_raw`."""
        out: Entries = {}
        corrupt: set[str] = set()
        for k, v in raw.items():
            field = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
            try:
                value = _loads(v)
            except (ValueError, UnicodeDecodeError):
                value = None
            if isinstance(value, dict):
                out[field] = value
            else:  # read as missing: the caller takes the database's value and fill() overwrites this one
                corrupt.add(field)
                log.warning("corrupt cache value ignored %s", kv(book=book_id, field=field, value=v[:80]))
        return out, corrupt

    def fill(
        self, book_id: str, missing: Mapping[str, Mapping[str, Any]], corrupt: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Refill from the database in one MULTI/EXEC: ``missing`` fields with HSETNX, so a tick that published
        the field meanwhile keeps its newer value; ``corrupt`` fields (unreadable values) with HSET."""
        if not missing and not corrupt:
            return
        key = cache_key(book_id)
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for field, payload in missing.items():
                    pipe.hsetnx(key, field, _encode(payload))
                if corrupt:
                    pipe.hset(key, mapping={f: _encode(p) for f, p in corrupt.items()})
                pipe.execute()
        except self._errors as exc:
            raise CacheUnavailable(f"redis refill failed ({self.url}): {redact_url(exc)}") from exc

    def clear(self, book_id: str) -> None:
        try:
            self._redis.delete(cache_key(book_id))
        except self._errors as exc:
            raise CacheUnavailable(f"redis delete failed ({self.url}): {redact_url(exc)}") from exc
