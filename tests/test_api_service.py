"""compute_levers() against the CI Redis and PostgreSQL: one round trip, fallbacks, RegimeUnavailable (D9, D10)."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest
import redis
import sqlalchemy as sa

from regime_tasks.api import compute_levers, reset_default_cache, run_levers_task
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.errors import RegimeUnavailable
from regime_tasks.store import positions
from regime_tasks.store.cache import MemoryRegimeCache, RedisRegimeCache
from regime_tasks.store.db import init_db, make_engine

pytestmark = pytest.mark.service
NOW = dt.datetime(2025, 7, 26, 5, 0, 30, tzinfo=dt.UTC)
BARS = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}


def payload(tf: str) -> dict:
    return {
        "delta_a_raw": 0.2,
        "delta_e_raw": -0.05,
        "state": "S3",
        "prev_state": "S3",
        "flags": {"buy": False, "rebuy": False, "trim": False},
        "transition": None,
        "bar_ts": BARS[tf],
    }


@pytest.fixture()
def engine(pg_url):
    eng = make_engine(pg_url, cached=False)
    init_db(eng)
    with eng.begin() as conn:
        conn.exec_driver_sql("DELETE FROM lowcap_positions")
    positions.ensure_driver_rows(eng, "onchain_crypto")
    ids = positions.driver_row_ids(eng, "onchain_crypto")
    positions.set_features_bulk(
        eng, [(ids[(d, tf)], "regime_engine_v4", payload(tf)) for d in DRIVERS for tf in REGIME_TIMEFRAMES]
    )
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def no_snapshot(monkeypatch):
    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "0")
    from regime_tasks.config import get_settings

    get_settings.cache_clear()
    reset_default_cache()
    yield
    get_settings.cache_clear()
    reset_default_cache()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_published_entries_are_read_in_one_round_trip(redis_url, engine, redis_packets) -> None:
    cache = RedisRegimeCache(redis_url)
    cache.publish("onchain_crypto", {f"{d}|{tf}": payload(tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES})
    redis_packets.clear()  # count the read only
    sent = redis_packets

    res = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)

    assert len(sent) == 1 and b"HGETALL" in sent[0]
    assert res["diagnostics"]["source"] == "cache"
    assert res["A_value"] == pytest.approx(0.80) and res["E_value"] == pytest.approx(0.425)


def test_flushed_redis_falls_back_to_database_and_repopulates(redis_url, engine) -> None:
    cache = RedisRegimeCache(redis_url)
    redis.Redis.from_url(redis_url).flushdb()

    res = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)

    assert res["diagnostics"]["source"] == "database" and res["A_value"] == pytest.approx(0.80)
    assert len(cache.read("onchain_crypto")) == 24
    assert compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)["diagnostics"]["source"] == "cache"


def test_redis_down_database_up_still_answers(engine) -> None:
    cache = RedisRegimeCache(f"redis://127.0.0.1:{closed_port()}/0", socket_timeout_secs=0.2)
    res = compute_levers({}, "4h", "big", cache=cache, now=NOW, engine=engine)
    assert res["diagnostics"]["source"] == "database" and res["A_value"] > 0.5


def test_both_down_raise_regime_unavailable_unless_neutral_asked() -> None:
    cache = RedisRegimeCache(f"redis://127.0.0.1:{closed_port()}/0", socket_timeout_secs=0.2)
    dead_db = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/test", cached=False)
    with pytest.raises(RegimeUnavailable, match="unavailable"):
        compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=dead_db)
    res = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=dead_db, neutral_on_unavailable=True)
    assert (res["A_value"], res["E_value"]) == (0.5, 0.5) and res["diagnostics"]["unavailable"] is True


def test_spot_crypto_reads_onchain_crypto_drivers(engine) -> None:
    cache = MemoryRegimeCache()
    res = compute_levers({}, "1h", "small", book_id="spot_crypto", cache=cache, now=NOW, engine=engine)
    assert res["diagnostics"]["regime_book_id"] == "onchain_crypto" and res["A_value"] == pytest.approx(0.80)


def test_levers_task_writes_only_the_levers_key_of_active_and_watchlist_rows(engine) -> None:
    active = positions.insert_position(
        engine,
        token_contract="0xa",
        token_chain="base",
        timeframe="1h",
        status="active",
        bucket="small",
        features={"host": {"keep": 1}},
    )
    watch = positions.insert_position(
        engine, token_contract="0xb", token_chain="base", timeframe="15m", status="watchlist", bucket="nano"
    )
    closed = positions.insert_position(
        engine, token_contract="0xc", token_chain="base", timeframe="1h", status="closed", bucket="small"
    )
    bad = positions.insert_position(
        engine, token_contract="0xd", token_chain="base", timeframe="2h", status="active", bucket="small"
    )
    by_cap = positions.insert_position(
        engine, token_contract="0xe", token_chain="base", timeframe="1h", status="active"
    )
    positions.upsert_tokens(engine, [{"token_contract": "0xe", "token_chain": "base", "market_cap_usd": 120e6}])
    no_bucket = positions.insert_position(
        engine, token_contract="0xf", token_chain="base", timeframe="1h", status="active"
    )

    summary = run_levers_task(engine, MemoryRegimeCache(), book_id="onchain_crypto", now=NOW)

    assert summary["written"] == 3
    assert [e["id"] for e in summary["errors"]] == [bad, no_bucket]
    assert "no bucket" in summary["errors"][1]["error"]
    assert positions.get_features(engine, by_cap)["levers"]["bucket"] == "mid"  # 50M ≤ 120M < 200M
    assert "levers" not in positions.get_features(engine, no_bucket)
    feats = positions.get_features(engine, active)
    assert feats["host"] == {"keep": 1} and feats["levers"]["A_value"] == pytest.approx(0.80)
    assert positions.get_features(engine, watch)["levers"]["bucket"] == "nano"
    assert "levers" not in positions.get_features(engine, closed)
    driver_row = positions.driver_row_ids(engine, "onchain_crypto")[("BTC", "1h")]
    assert "levers" not in positions.get_features(engine, driver_row)


def test_warm_snapshot_sees_an_in_process_publish_at_once(monkeypatch, engine) -> None:
    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "60")
    from regime_tasks.config import get_settings

    get_settings.cache_clear()
    cache = MemoryRegimeCache()
    cache.publish("onchain_crypto", {f"{d}|{tf}": payload(tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES})
    first = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)
    s0 = {**payload("1h"), "state": "S0", "delta_a_raw": -0.3, "delta_e_raw": 0.3}

    cache.publish("onchain_crypto", {"BTC|1h": s0})
    second = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)

    assert first["A_value"] == pytest.approx(0.80)
    assert second["A_value"] == pytest.approx(0.80 + (-0.3 - 0.2) * 1.0 * 0.55)


def test_levers_task_refuses_a_nan_intent_row_and_writes_the_others(engine) -> None:
    nan_row = positions.insert_position(
        engine, token_contract="0xn", token_chain="base", timeframe="1h", status="active", bucket="small"
    )
    positions.set_feature(engine, nan_row, "intent_metrics", {"hi_buy": "nan"})
    good = positions.insert_position(
        engine, token_contract="0xg", token_chain="base", timeframe="1h", status="active", bucket="small"
    )

    summary = run_levers_task(engine, MemoryRegimeCache(), book_id="onchain_crypto", now=NOW)

    assert summary["written"] == 1 and [e["id"] for e in summary["errors"]] == [nan_row]
    assert "intent_metrics.hi_buy" in summary["errors"][0]["error"]
    assert "levers" not in positions.get_features(engine, nan_row)
    assert positions.get_features(engine, good)["levers"]["A_value"] == pytest.approx(0.80)


# --- the cache is judged per field -------------------------------------------------------------------------------
def one_minute_tick() -> dict:
    """What a 1m tick publishes: the 8 drivers' 1m fields, nothing else."""
    return {f"{d}|1m": payload("1m") for d in DRIVERS}


def test_after_a_redis_restart_one_1m_tick_still_gives_full_levers(redis_url, engine) -> None:
    cache = RedisRegimeCache(redis_url)
    redis.Redis.from_url(redis_url).flushdb()  # what a restart without persistence leaves
    cache.publish("onchain_crypto", one_minute_tick())

    res = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)

    assert res["diagnostics"]["missing"] == [] and res["diagnostics"]["degraded"] is False
    assert res["diagnostics"]["source"] == "cache+database"
    assert res["A_value"] == pytest.approx(0.80) and res["E_value"] == pytest.approx(0.425)
    assert len(cache.read("onchain_crypto")) == 24  # the 16 others were written back
    assert compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)["diagnostics"]["source"] == "cache"


@pytest.mark.parametrize("bad", [b"{not json", b"[1, 2]", b'{"delta_a_raw": NaN, "bar_ts": "2025-07-26T04:00:00Z"}'])
def test_a_corrupt_cache_value_falls_back_to_the_database_and_is_overwritten(redis_url, engine, bad: bytes) -> None:
    cache = RedisRegimeCache(redis_url)
    cache.publish("onchain_crypto", {f"{d}|{tf}": payload(tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES})
    raw = redis.Redis.from_url(redis_url)
    raw.hset("regime:onchain_crypto:latest", "BTC|1h", bad)

    res = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)

    assert res["diagnostics"]["missing"] == [] and res["A_value"] == pytest.approx(0.80)
    assert res["diagnostics"]["source"] == "cache+database"
    assert json.loads(raw.hget("regime:onchain_crypto:latest", "BTC|1h")) == payload("1h")


def test_a_driver_absent_everywhere_costs_one_database_read_per_snapshot_ttl(redis_url, engine, monkeypatch) -> None:
    from regime_tasks.api import load_entries
    from regime_tasks.config import get_settings

    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "60")
    get_settings.cache_clear()
    cache = RedisRegimeCache(redis_url)
    present = {f"{d}|{tf}": payload(tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES if d != "nano"}
    cache.publish("onchain_crypto", present)
    ids = positions.driver_row_ids(engine, "onchain_crypto")
    with engine.begin() as conn:  # nano never computed: absent from the database too
        conn.execute(
            sa.text("UPDATE lowcap_positions SET features = '{}' WHERE id = ANY(:ids)"),
            {"ids": [ids[("nano", tf)] for tf in REGIME_TIMEFRAMES]},
        )
    queries: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: queries.append(a[2]))

    for _ in range(5):
        entries, source = load_entries("onchain_crypto", cache=cache, engine=engine)

    assert len(entries) == 21 and source == "cache"
    assert len(queries) == 1  # the database's "absent" is remembered for the TTL


def test_refill_never_overwrites_a_value_a_tick_published_meanwhile(redis_url) -> None:
    cache = RedisRegimeCache(redis_url)
    newer = {**payload("1m"), "bar_ts": "2025-07-26T05:00:00Z"}
    cache.publish("onchain_crypto", {"BTC|1m": newer})

    cache.fill("onchain_crypto", {"BTC|1m": payload("1m"), "ALT|1m": payload("1m")}, {})

    got = cache.read("onchain_crypto")
    assert got["BTC|1m"] == newer and got["ALT|1m"] == payload("1m")


def test_without_a_snapshot_ttl_an_unchanged_hash_is_not_decoded_again_and_a_publish_is_seen_at_once(
    redis_url, engine, redis_packets, monkeypatch
) -> None:
    """Each call still reads the hash (one HGETALL); when its bytes are the ones seen last time, what was made of
    them is reused — and a tick's publish changes the bytes, so the next call uses the new values."""
    cache = RedisRegimeCache(redis_url)
    cache.publish("onchain_crypto", {f"{d}|{tf}": payload(tf) for d in DRIVERS for tf in REGIME_TIMEFRAMES})
    decoded = []
    original = cache.decode
    monkeypatch.setattr(cache, "decode", lambda book, raw: decoded.append(book) or original(book, raw))

    first = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)
    redis_packets.clear()
    again = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)
    assert len(redis_packets) == 1 and b"HGETALL" in redis_packets[0]  # still one read per call
    assert decoded == ["onchain_crypto"] and again == first  # decoded once, same answer

    cache.publish("onchain_crypto", {"BTC|1h": {**payload("1h"), "state": "S0", "delta_a_raw": -0.3}})
    after = compute_levers({}, "1h", "small", cache=cache, now=NOW, engine=engine)
    assert len(decoded) == 2
    by = {(c["driver"], c["timeframe"]): c for c in after["diagnostics"]["contributions"]}
    assert by[("BTC", "1h")]["state"] == "S0" and after["A_value"] < first["A_value"]
