"""Latest driver payloads per book: one Redis hash, or an in-process dict with the same interface (D10).

Layout: hash ``regime:{book_id}:latest``, field ``"{driver}|{tf}"``, value = JSON of
``features.regime_engine_v4`` (with ``bar_ts``). A publish writes all its fields in one MULTI/EXEC; a read is
one HGETALL round trip. Redis must run with ``maxmemory-policy noeviction``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from regime_tasks.errors import RegimeUnavailable

Entries = dict[str, dict[str, Any]]  # field "{driver}|{tf}" -> payload


def cache_key(book_id: str) -> str:
    return f"regime:{book_id}:latest"


class CacheUnavailable(RegimeUnavailable):
    """The cache could not be reached (the caller falls back to the database)."""


class RegimeCache(Protocol):
    """What the mapper step writes and compute_levers() reads."""

    def publish(self, book_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None: ...

    def read(self, book_id: str) -> Entries: ...

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

    def clear(self, book_id: str) -> None:
        with self._lock:
            self._data.pop(book_id, None)
            self.version += 1


class RedisRegimeCache:
    """Redis hash per book; connection errors raise :class:`CacheUnavailable`."""

    def __init__(self, url: str, *, socket_timeout_secs: float = 0.5) -> None:
        import redis

        self.url = url
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_secs,
            socket_connect_timeout=socket_timeout_secs,
            health_check_interval=30,
        )
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

    def publish(self, book_id: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not entries:
            return
        mapping: dict[Any, str] = {  # Any: redis-py types hash fields as its own union, a str is one
            k: json.dumps(dict(v), allow_nan=False, separators=(",", ":")) for k, v in entries.items()
        }
        try:
            with self._redis.pipeline(transaction=True) as pipe:  # MULTI … EXEC: all fields or none
                pipe.hset(cache_key(book_id), mapping=mapping)
                pipe.execute()
        except self._errors as exc:
            raise CacheUnavailable(f"redis publish failed ({self.url}): {exc}") from exc

    def read(self, book_id: str) -> Entries:
        try:
            raw = self._redis.hgetall(cache_key(book_id))
        except self._errors as exc:
            raise CacheUnavailable(f"redis read failed ({self.url}): {exc}") from exc
        return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}

    def clear(self, book_id: str) -> None:
        try:
            self._redis.delete(cache_key(book_id))
        except self._errors as exc:
            raise CacheUnavailable(f"redis delete failed ({self.url}): {exc}") from exc
