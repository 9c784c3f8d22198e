"""The latest-deltas cache (D10): layout, atomic publish, one-round-trip read, Redis down, in-process twin."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import redis

from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.errors import RegimeUnavailable
from regime_tasks.store.cache import CacheUnavailable, MemoryRegimeCache, RedisRegimeCache, cache_key

FIELDS = [f"{d}|{tf}" for d in DRIVERS for tf in REGIME_TIMEFRAMES]


def tick(n: int) -> dict[str, dict]:
    """24 payloads that all carry tick number ``n`` (a torn read would mix numbers)."""
    return {
        f: {"delta_a_raw": 0.2, "delta_e_raw": -0.05, "state": "S3", "bar_ts": "2025-07-26T04:00:00Z", "n": n}
        for f in FIELDS
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- in-process cache --------------------------------------------------------------------------------------
def test_memory_cache_round_trip_merges_fields_and_keeps_books_apart() -> None:
    cache = MemoryRegimeCache()

    cache.publish("onchain_crypto", tick(1))
    cache.publish("onchain_crypto", {"BTC|1m": {**tick(2)["BTC|1m"]}})
    cache.publish("stocks", {"BTC|1d": tick(7)["BTC|1d"]})

    got = cache.read("onchain_crypto")
    assert len(got) == 24 and got["BTC|1m"]["n"] == 2 and got["BTC|1h"]["n"] == 1
    assert list(cache.read("stocks")) == ["BTC|1d"]
    assert cache.read("nobody") == {}


def test_memory_cache_returns_copies_and_stores_json_values() -> None:
    cache = MemoryRegimeCache()
    payload = tick(1)
    cache.publish("b", payload)

    payload["BTC|1d"]["n"] = 99
    cache.read("b")["BTC|1d"]["n"] = 98

    assert cache.read("b")["BTC|1d"]["n"] == 1
    with pytest.raises(ValueError):  # same rule as Redis: a NaN delta is a bug, not a value
        cache.publish("b", {"BTC|1d": {"delta_a_raw": float("nan")}})


def test_memory_cache_publish_bumps_version_and_clear_empties() -> None:
    cache = MemoryRegimeCache()
    v0 = cache.version
    cache.publish("b", tick(1))
    assert cache.version == v0 + 1
    cache.clear("b")
    assert cache.read("b") == {} and cache.version == v0 + 2


def test_memory_cache_readers_never_see_half_a_tick_while_threads_publish() -> None:
    cache = MemoryRegimeCache()
    cache.publish("b", tick(0))
    torn: list[set[int]] = []
    done = threading.Event()

    def writer(start: int) -> None:
        for n in range(start, start + 300):
            cache.publish("b", tick(n))

    def reader() -> None:
        while not done.is_set():
            seen = {p["n"] for p in cache.read("b").values()}
            if len(seen) != 1:
                torn.append(seen)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(k * 1000,)) for k in range(3)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()

    assert torn == []


# --- Redis ---------------------------------------------------------------------------------------------------
@pytest.mark.service
def test_redis_layout_is_one_hash_per_book_with_json_fields(redis_url) -> None:
    RedisRegimeCache(redis_url).publish("onchain_crypto", tick(3))

    raw = redis.Redis.from_url(redis_url).hgetall("regime:onchain_crypto:latest")

    assert cache_key("onchain_crypto") == "regime:onchain_crypto:latest"
    assert sorted(k.decode() for k in raw) == sorted(FIELDS)
    assert json.loads(raw[b"USDT.d|1m"]) == tick(3)["USDT.d|1m"]


@pytest.mark.service
def test_redis_publish_is_one_multi_exec_and_read_is_one_hgetall(redis_url, redis_packets) -> None:
    sent = redis_packets
    cache = RedisRegimeCache(redis_url)
    cache.read("onchain_crypto")  # open the connection (its handshake is not part of either operation)

    sent.clear()
    cache.publish("onchain_crypto", tick(1))
    publish_packets = list(sent)
    sent.clear()
    got = cache.read("onchain_crypto")

    assert len(publish_packets) == 1
    assert b"MULTI" in publish_packets[0] and b"HSET" in publish_packets[0] and b"EXEC" in publish_packets[0]
    assert len(sent) == 1 and b"HGETALL" in sent[0]
    assert got == tick(1)


@pytest.mark.service
def test_redis_readers_never_see_half_a_tick(redis_url) -> None:
    cache = RedisRegimeCache(redis_url)
    cache.publish("b", tick(0))
    torn: list[set[int]] = []
    done = threading.Event()

    def reader() -> None:
        own = RedisRegimeCache(redis_url)
        while not done.is_set():
            seen = {p["n"] for p in own.read("b").values()}
            if len(seen) != 1:
                torn.append(seen)

    t = threading.Thread(target=reader)
    t.start()
    for n in range(1, 200):
        cache.publish("b", tick(n))
    done.set()
    t.join()

    assert torn == []
    assert {p["n"] for p in cache.read("b").values()} == {199}


@pytest.mark.service
def test_redis_clear_deletes_the_book_only(redis_url) -> None:
    cache = RedisRegimeCache(redis_url)
    cache.publish("a", tick(1))
    cache.publish("b", tick(2))

    cache.clear("a")

    assert cache.read("a") == {} and len(cache.read("b")) == 24


def test_redis_down_raises_cache_unavailable_on_every_operation() -> None:
    cache = RedisRegimeCache(f"redis://127.0.0.1:{closed_port()}/0", socket_timeout_secs=0.2)

    for op in (lambda: cache.read("b"), lambda: cache.publish("b", tick(1)), lambda: cache.clear("b")):
        with pytest.raises(CacheUnavailable) as info:
            op()
        assert isinstance(info.value, RegimeUnavailable)  # callers that only know D9's error still catch it


@pytest.mark.service
def test_redis_read_leaves_out_values_that_are_not_json_objects(redis_url) -> None:
    cache = RedisRegimeCache(redis_url)
    cache.publish("b", tick(1))
    raw = redis.Redis.from_url(redis_url)
    raw.hset(cache_key("b"), mapping={"BTC|1h": b"{trunc", "ALT|1d": b"3", "nano|1m": b"\xff\xfe"})

    got, corrupt = cache.read_checked("b")

    assert corrupt == {"BTC|1h", "ALT|1d", "nano|1m"} and len(got) == 21
    assert set(cache.read("b")) == set(got)


def test_memory_cache_fill_keeps_present_fields_and_overwrites_corrupt_ones() -> None:
    cache = MemoryRegimeCache()
    cache.publish("b", {"BTC|1m": tick(2)["BTC|1m"], "ALT|1m": tick(2)["ALT|1m"]})

    cache.fill("b", {"BTC|1m": tick(1)["BTC|1m"], "nano|1m": tick(1)["nano|1m"]}, {"ALT|1m": tick(1)["ALT|1m"]})

    got = cache.read("b")
    assert (got["BTC|1m"]["n"], got["nano|1m"]["n"], got["ALT|1m"]["n"]) == (2, 1, 1)
