"""compute_levers() arguments: every bad one is a typed error raised before any I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from regime_tasks.api import compute_levers, reset_default_cache
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.errors import RegimeUnavailable, UnknownInputError
from regime_tasks.store import positions
from regime_tasks.store.cache import MemoryRegimeCache
from regime_tasks.store.db import init_db, make_engine

NOW = dt.datetime(2025, 7, 26, 5, 0, 30, tzinfo=dt.UTC)
BARS = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}


def payload(tf: str) -> dict:
    return {"delta_a_raw": 0.2, "delta_e_raw": -0.05, "state": "S3", "prev_state": "S3", "bar_ts": BARS[tf]}


@pytest.fixture()
def engine(sqlite_url):
    eng = make_engine(sqlite_url, cached=False)
    init_db(eng)
    positions.ensure_driver_rows(eng, "onchain_crypto")
    ids = positions.driver_row_ids(eng, "onchain_crypto")
    positions.set_features_bulk(
        eng, [(ids[(d, tf)], "regime_engine_v4", payload(tf)) for d in DRIVERS for tf in REGIME_TIMEFRAMES]
    )
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def fresh_levers(monkeypatch):
    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "0")
    monkeypatch.delenv("REGIME_BOOKS", raising=False)
    from regime_tasks.config import get_settings

    get_settings.cache_clear()
    reset_default_cache()
    yield
    get_settings.cache_clear()
    reset_default_cache()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["hi_buy"]}, "features must be an object"),
        ({"features": "x"}, "features must be an object"),
        ({"features": {"intent_metrics": {"sell": 10**400}}}, "intent_metrics.sell"),
        ({"book_id": "onchain\x00crypto"}, "book_id"),
        ({"book_id": 123}, "book_id"),
        ({"now": dt.datetime(2025, 7, 26, 5, 0, 30)}, "timezone-aware"),
        ({"now": "2025-07-26T05:00:30Z"}, "timezone-aware"),
        ({"execution_timeframe": ["1h"]}, "unknown execution timeframe"),
        ({"position_bucket": 3}, "unknown bucket"),
    ],
)
def test_bad_arguments_raise_unknown_input_error_before_any_io(kwargs: dict, message: str) -> None:
    args = {"features": {}, "execution_timeframe": "1h", "position_bucket": "small", "now": NOW}
    args.update(kwargs)
    features, exec_tf, bucket = args.pop("features"), args.pop("execution_timeframe"), args.pop("position_bucket")

    class NoIO:  # any cache access would mean the argument was checked too late
        def read(self, book_id: str):
            raise AssertionError("cache read before the arguments were checked")

    with pytest.raises(UnknownInputError, match=message) as info:
        compute_levers(features, exec_tf, bucket, cache=NoIO(), **args)  # type: ignore[arg-type]
    assert not isinstance(info.value, RegimeUnavailable)


def test_good_arguments_still_give_the_d2_example(engine) -> None:
    res = compute_levers({}, "1h", "small", cache=MemoryRegimeCache(), engine=engine, now=NOW)
    assert res["A_value"] == pytest.approx(0.80) and res["diagnostics"]["degraded"] is False


# --- known books only, bounded snapshot map --------------------------------------------------------------------
@pytest.mark.parametrize("book", ["onchain_crytpo", "stocks", "ONCHAIN_CRYPTO", ""])
def test_unknown_book_is_an_error_not_a_silent_neutral(engine, book: str) -> None:
    from regime_tasks import api as levers

    with pytest.raises(UnknownInputError, match="book"):
        compute_levers({}, "1h", "small", book_id=book, cache=MemoryRegimeCache(), engine=engine, now=NOW)
    with pytest.raises(UnknownInputError, match="book"):
        levers.load_entries(book, cache=MemoryRegimeCache(), engine=engine)
    assert len(levers._SNAPSHOTS) == 0


def test_configured_books_are_known(monkeypatch, engine) -> None:
    from regime_tasks.config import get_settings

    monkeypatch.setenv("REGIME_BOOKS", "stocks, fx")
    get_settings.cache_clear()
    positions.ensure_driver_rows(engine, "stocks")

    res = compute_levers({}, "1h", "small", book_id="stocks", cache=MemoryRegimeCache(), engine=engine, now=NOW)

    assert res["diagnostics"]["regime_book_id"] == "stocks" and res["A_value"] == pytest.approx(0.5)
    assert res["diagnostics"]["degraded"] is True  # stocks has no driver states yet: said, not silent
    assert get_settings().known_books >= {"onchain_crypto", "spot_crypto", "perp_crypto", "stocks", "fx"}


def test_snapshot_map_keeps_at_most_64_books(monkeypatch, engine) -> None:
    from regime_tasks import api as levers
    from regime_tasks.config import get_settings

    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "60")
    get_settings.cache_clear()
    caches = [MemoryRegimeCache() for _ in range(200)]  # kept alive: each id() is a distinct snapshot key

    for cache in caches:
        compute_levers({}, "1h", "small", cache=cache, engine=engine, now=NOW)

    assert len(levers._SNAPSHOTS) == levers.SNAPSHOT_MAX_BOOKS == 64
    assert next(reversed(levers._SNAPSHOTS))[0] == id(caches[-1])  # the newest is kept, the oldest dropped


def test_in_process_cache_holding_one_tick_is_completed_from_the_database(engine) -> None:
    """Embedded mode: a standalone `regime tick` starts with an empty in-process cache and publishes 8 fields."""
    cache = MemoryRegimeCache()
    cache.publish("onchain_crypto", {f"{d}|1m": payload("1m") for d in DRIVERS})

    res = compute_levers({}, "1h", "small", cache=cache, engine=engine, now=NOW)

    assert res["diagnostics"]["degraded"] is False and res["diagnostics"]["missing"] == []
    assert res["A_value"] == pytest.approx(0.80) and len(cache.read("onchain_crypto")) == 24


# --- the levers task isolates every row ----------------------------------------------------------------------------
def _set_raw_features(eng, row_id: int, raw_json: str) -> None:
    import sqlalchemy as sa

    cast = "CAST(:v AS jsonb)" if eng.dialect.name == "postgresql" else ":v"
    with eng.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE lowcap_positions SET features = {cast} WHERE id = :id"), {"v": raw_json, "id": row_id}
        )


@pytest.fixture()
def any_engine(db_url):
    eng = make_engine(db_url, cached=False)
    init_db(eng)
    positions.ensure_driver_rows(eng, "onchain_crypto")
    ids = positions.driver_row_ids(eng, "onchain_crypto")
    positions.set_features_bulk(
        eng, [(ids[(d, tf)], "regime_engine_v4", payload(tf)) for d in DRIVERS for tf in REGIME_TIMEFRAMES]
    )
    yield eng
    eng.dispose()


def _position(eng, contract: str, bucket: str | None = "small") -> int:
    return positions.insert_position(
        eng, token_contract=contract, token_chain="base", timeframe="1h", status="active", bucket=bucket
    )


def test_rows_whose_features_are_not_objects_are_listed_and_the_rest_written(any_engine) -> None:
    from regime_tasks.api import run_levers_task

    eng = any_engine
    good = [_position(eng, "0xg1")]
    bad = {}
    for contract, raw in (("0xs", '"just a string"'), ("0xa", "[1, 2]"), ("0xn", "42")):
        bad[contract] = _position(eng, contract)
        _set_raw_features(eng, bad[contract], raw)
    good.append(_position(eng, "0xg2"))
    caps = {"0xnan": float("nan"), "0xneg": -5e6}
    for contract in caps:
        bad[contract] = _position(eng, contract, bucket=None)
    import sqlalchemy as sa

    from regime_tasks.store.schema import tokens

    with eng.begin() as conn:  # what the old importer let through (no check of token rows), written around it
        for contract, cap in caps.items():
            conn.execute(sa.insert(tokens).values(token_contract=contract, token_chain="base", market_cap_usd=cap))

    summary = run_levers_task(eng, MemoryRegimeCache(), book_id="onchain_crypto", now=NOW, batch_rows=2)

    assert summary["written"] == 2
    assert sorted(e["id"] for e in summary["errors"]) == sorted(bad.values())
    messages = {e["id"]: e["error"] for e in summary["errors"]}
    assert "not an object" in messages[bad["0xa"]] and "market_cap_usd" in messages[bad["0xnan"]]
    for row_id in good:
        assert positions.get_features(eng, row_id)["levers"]["A_value"] == pytest.approx(0.80)


def test_a_batch_the_database_rejects_is_written_row_by_row(any_engine, monkeypatch) -> None:
    from regime_tasks.api import run_levers_task
    from regime_tasks.store import positions as store_positions

    eng = any_engine
    rows = [_position(eng, f"0x{k}") for k in range(4)]
    original = store_positions.iter_lever_positions

    def delete_one_after_reading(*args, **kwargs):
        for batch in original(*args, **kwargs):
            with eng.begin() as conn:  # a host deletes a row between our read and our write
                conn.exec_driver_sql(f"DELETE FROM lowcap_positions WHERE id = {rows[1]}")
            yield batch

    monkeypatch.setattr(store_positions, "iter_lever_positions", delete_one_after_reading)

    summary = run_levers_task(eng, MemoryRegimeCache(), book_id="onchain_crypto", now=NOW)

    assert summary["written"] == 3 and [e["id"] for e in summary["errors"]] == [rows[1]]
    for row_id in (rows[0], rows[2], rows[3]):
        assert "levers" in positions.get_features(eng, row_id)
