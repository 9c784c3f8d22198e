"""Store layer on both back ends (SQLite always; PostgreSQL as a service test)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from regime_tasks.errors import DataValidationError, UnknownInputError
from regime_tasks.store import bars as store_bars
from regime_tasks.store import dominance as store_dominance
from regime_tasks.store import events, meta, positions
from regime_tasks.store.db import init_db, make_engine
from regime_tasks.store.schema import regime_price_data_ohlc
from tests.conftest import REPO_ROOT, real_file


def _bars(n: int, start: str = "2024-01-01", freq: str = "1h", base: float = 100.0) -> pd.DataFrame:
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp")
    close = base + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"open": close - 0.5, "high": close + 1.0, "low": close - 1.0, "close": close, "volume": np.full(n, 10.0)},
        index=idx,
    )


@pytest.fixture()
def engine(db_url: str):
    eng = make_engine(db_url, cached=False)
    init_db(eng)
    yield eng
    eng.dispose()


def _count(engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar())


def test_init_db_twice_changes_nothing_the_second_time(db_url: str) -> None:
    eng = make_engine(db_url, cached=False)
    first = init_db(eng)
    second = init_db(eng)
    assert any("regime_price_data_ohlc" in c for c in first)
    assert second == []
    eng.dispose()


def test_upsert_twice_keeps_one_row_per_key_with_second_values(engine) -> None:
    key = {"driver": "ALT"}
    first = _bars(48).assign(constituents=4)
    second = first.copy()
    second["close"] = second["close"] + 0.25
    second["high"] = second["high"] + 0.25

    store_bars.upsert_bars(engine, "regime", key, "1h", first, source="composite")
    store_bars.upsert_bars(engine, "regime", key, "1h", second, source="composite")
    back = store_bars.read_bars(engine, "regime", key, "1h")

    assert _count(engine, regime_price_data_ohlc) == 48
    np.testing.assert_allclose(back["close"].to_numpy(), second["close"].to_numpy())
    assert back.index.equals(second.index)
    assert (back["constituents"] == 4).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [("close", float("nan")), ("low", -1.0), ("high", 50.0)],  # NaN, negative price, high < low
)
def test_batch_with_one_invalid_bar_writes_nothing_and_names_the_bar(engine, field: str, value: float) -> None:
    frame = _bars(30)
    bad_ts = frame.index[17]
    frame.loc[bad_ts, field] = value

    with pytest.raises(DataValidationError) as err:
        store_bars.upsert_bars(engine, "majors", {"token_contract": "BTC"}, "1h", frame)

    assert str(bad_ts.year) in str(err.value) and "majors:BTC:1h" in str(err.value)
    assert err.value.timestamp is not None
    assert store_bars.count_bars(engine, "majors", {"token_contract": "BTC"}, "1h") == 0


def test_read_bars_limit_returns_last_closed_bars_ascending(engine) -> None:
    frame = _bars(100)
    store_bars.upsert_bars(engine, "lowcap", {"token_contract": "PURR", "token_chain": "hyperliquid"}, "1h", frame)

    tail = store_bars.read_bars(
        engine, "lowcap", {"token_contract": "PURR", "token_chain": "hyperliquid"}, "1h", limit=10
    )

    assert list(tail.index) == list(frame.index[-10:])
    assert str(tail.index.tz) == "UTC"
    last = store_bars.last_bar_ts(engine, "lowcap", {"token_contract": "PURR", "token_chain": "hyperliquid"}, "1h")
    assert last == frame.index[-1]


def test_real_candles_round_trip_exactly(engine) -> None:
    raw = pd.read_csv(real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv"))
    frame = raw.assign(timestamp=pd.to_datetime(raw["timestamp"], utc=True)).set_index("timestamp")
    frame = frame[["open", "high", "low", "close", "volume"]].astype("float64")
    # The real file has four empty rows (e.g. 2020-04-17): the store refuses them, naming the first one.
    with pytest.raises(DataValidationError, match="2020-04-17"):
        store_bars.upsert_bars(engine, "majors", {"token_contract": "BTC"}, "1d", frame, source="file")
    frame = frame.dropna()

    store_bars.upsert_bars(engine, "majors", {"token_contract": "BTC"}, "1d", frame, source="file")
    back = store_bars.read_bars(engine, "majors", {"token_contract": "BTC"}, "1d")

    pd.testing.assert_frame_equal(back, frame, check_freq=False)


def test_unknown_series_key_is_rejected(engine) -> None:
    with pytest.raises(UnknownInputError):
        store_bars.upsert_bars(engine, "majors", {"driver": "BTC"}, "1h", _bars(2))


def test_driver_rows_are_created_once_per_book(engine) -> None:
    assert positions.ensure_driver_rows(engine, "onchain_crypto") == 24
    assert positions.ensure_driver_rows(engine, "onchain_crypto") == 0
    assert len(positions.driver_row_ids(engine, "onchain_crypto")) == 24


def test_feature_write_from_another_process_keeps_both_keys(engine, db_url: str) -> None:
    positions.ensure_driver_rows(engine, "onchain_crypto")
    ids = positions.driver_row_ids(engine, "onchain_crypto")
    row_id, other_id = ids[("ALT", "1h")], ids[("BTC", "1h")]
    positions.set_feature(engine, row_id, "ta", {"latest_price": 101.5})
    positions.set_feature(engine, other_id, "ta", {"latest_price": 7.0})

    script = (
        "from regime_tasks.store.db import make_engine; from regime_tasks.store.positions import set_feature;"
        f"set_feature(make_engine({db_url!r}), {row_id}, 'uptrend_engine_v4', {{'state': 'S3'}})"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT, timeout=60)
    positions.set_feature(engine, row_id, "regime_engine_v4", {"delta_a_raw": 0.2})

    feats = positions.get_features(engine, row_id)
    assert feats == {
        "ta": {"latest_price": 101.5},
        "uptrend_engine_v4": {"state": "S3"},
        "regime_engine_v4": {"delta_a_raw": 0.2},
    }
    assert positions.get_features(engine, other_id) == {"ta": {"latest_price": 7.0}}


def test_feature_values_with_nan_are_stored_as_null(engine) -> None:
    positions.ensure_driver_rows(engine, "onchain_crypto")
    row_id = positions.driver_row_ids(engine, "onchain_crypto")[("BTC", "1d")]

    positions.set_feature(engine, row_id, "ta", {"ema333": float("nan"), "ema20": np.float64(3.5)})

    assert positions.get_features(engine, row_id)["ta"] == {"ema333": None, "ema20": 3.5}


def test_bulk_feature_update_with_unknown_row_rolls_back(engine) -> None:
    positions.ensure_driver_rows(engine, "onchain_crypto")
    row_id = positions.driver_row_ids(engine, "onchain_crypto")[("BTC", "1d")]

    with pytest.raises(Exception, match="matched"):
        positions.set_features_bulk(engine, [(row_id, "levers", {"A": 1}), (999_999, "levers", {"A": 2})])

    assert "levers" not in positions.get_features(engine, row_id)


def test_bulk_feature_update_sets_several_keys_of_one_row_and_keeps_the_others(engine) -> None:
    positions.ensure_driver_rows(engine, "onchain_crypto")
    ids = positions.driver_row_ids(engine, "onchain_crypto")
    row_id, other_id = ids[("BTC", "1h")], ids[("ALT", "1h")]
    positions.set_feature(engine, row_id, "kept", {"x": 1})

    # one row three times in one batch (as a driver update writes ta, engine and regime), the same key twice
    written = positions.set_features_bulk(
        engine,
        [
            (row_id, "ta", {"latest_price": 1.0}),
            (other_id, "ta", {"latest_price": 2.0}),
            (row_id, "uptrend_engine_v4", {"state": "S3"}),
            (row_id, "ta", {"latest_price": 3.0}),
        ],
    )

    assert written == 4
    assert positions.get_features(engine, row_id) == {
        "kept": {"x": 1},
        "ta": {"latest_price": 3.0},  # the later value, as successive updates leave it
        "uptrend_engine_v4": {"state": "S3"},
    }
    assert positions.get_features(engine, other_id) == {"ta": {"latest_price": 2.0}}


def test_lever_positions_exclude_regime_drivers_and_join_market_caps(engine) -> None:
    positions.ensure_driver_rows(engine, "onchain_crypto")
    active = positions.insert_position(
        engine, token_contract="0xabc", token_chain="base", timeframe="1h", status="active"
    )
    positions.insert_position(engine, token_contract="0xdef", token_chain="base", timeframe="1h", status="closed")
    watch = positions.insert_position(
        engine, token_contract="0x123", token_chain="sol", timeframe="15m", status="watchlist", bucket="mid"
    )
    positions.upsert_tokens(
        engine, [{"token_contract": "0xabc", "token_chain": "base", "symbol": "ABC", "market_cap_usd": 12e6}]
    )

    rows = [r for batch in positions.iter_lever_positions(engine, batch_rows=1) for r in batch]

    assert [r.id for r in rows] == [active, watch]
    assert rows[0].market_cap_usd == 12e6 and rows[0].bucket is None
    assert rows[1].bucket == "mid" and rows[1].market_cap_usd is None


def test_lever_positions_in_batches_keep_their_order_and_filters(engine) -> None:
    ids = {}
    for k, (status, book) in enumerate(
        [
            ("active", "onchain_crypto"),
            ("watchlist", "spot_crypto"),
            ("closed", "onchain_crypto"),
            ("active", "other_book"),
            ("active", "perp_crypto"),
            ("watchlist", "onchain_crypto"),
        ]
    ):
        ids[k] = positions.insert_position(
            engine, token_contract=f"0x{k}", token_chain="base", timeframe="1h", status=status, book_id=book
        )
    crypto = ["onchain_crypto", "perp_crypto", "spot_crypto"]

    batches = list(positions.iter_lever_positions(engine, book_ids=crypto, batch_rows=2))

    assert [[r.id for r in b] for b in batches] == [[ids[0], ids[1]], [ids[4], ids[5]]]
    assert [r.id for b in positions.iter_lever_positions(engine, batch_rows=10) for r in b] == [
        ids[0],
        ids[1],
        ids[3],
        ids[4],
        ids[5],
    ]


def test_a_position_closed_while_the_levers_task_reads_is_left_out(engine) -> None:
    first, second, third = (
        positions.insert_position(engine, token_contract=f"0x{k}", token_chain="base", timeframe="1h", status="active")
        for k in range(3)
    )
    batches = positions.iter_lever_positions(engine, batch_rows=1)
    assert [r.id for r in next(batches)] == [first]  # the ids were listed before this row closes
    with engine.begin() as conn:
        conn.execute(
            sa.update(positions.lowcap_positions)
            .where(positions.lowcap_positions.c.id == second)
            .values(status="closed")
        )

    assert [r.id for b in batches for r in b] == [third]


def test_json_columns_read_back_exactly_large_integers_included(engine) -> None:
    # orjson reads integers beyond 64 bits as floats: such documents must decode as the standard library does
    row = positions.insert_position(engine, token_contract="0xabc", token_chain="base", timeframe="1h", status="active")
    wei = 1_000_000_000_000_000_000_000  # 1,000 ETH in wei
    doc = {"balance_wei": wei, "big_negative": -(2**70), "price": 0.1, "tiny": 1e-300, "nested": {"n": [1, 2.5]}}
    positions.set_feature(engine, row, "host", doc)

    back = positions.get_features(engine, row)["host"]

    assert back == doc and back["balance_wei"] == wei and isinstance(back["balance_wei"], int)


def test_an_upsert_batch_giving_one_key_twice_ends_as_row_by_row_writes_would(engine) -> None:
    # PostgreSQL writes a batch as one multi-row statement, which may not update a row twice
    import datetime as dt

    from regime_tasks.store.db import upsert_rows
    from regime_tasks.store.schema import regime_meta

    at = dt.datetime(2025, 7, 26, tzinfo=dt.UTC)
    rows = [{"key": k, "value": {"n": n}, "updated_at": at} for n, k in enumerate(["a", "b", "a", "c", "a"])]
    with engine.begin() as conn:
        upsert_rows(conn, regime_meta, rows, conflict_cols=("key",), update_cols=("value", "updated_at"))
    assert meta.get_meta(engine, "a") == {"n": 4} and meta.get_meta(engine, "b") == {"n": 1}

    again = [
        {"key": "c", "value": {"n": 10}, "updated_at": at},
        {"key": "d", "value": {"n": 11}, "updated_at": at},
        {"key": "d", "value": {"n": 12}, "updated_at": at},
    ]
    with engine.begin() as conn:
        upsert_rows(conn, regime_meta, again, conflict_cols=("key",), update_cols=None)  # DO NOTHING: first stays
    assert meta.get_meta(engine, "c") == {"n": 3} and meta.get_meta(engine, "d") == {"n": 11}


def test_state_events_are_idempotent_per_bar(engine) -> None:
    ev = {"state": "S1", "prev_state": "S0", "bar_ts": "2024-01-01T05:00:00Z", "price": 10.0, "flags": {"buy": False}}

    events.append_events(engine, [ev], book_id="onchain_crypto", driver="BTC", timeframe="1h")
    events.append_events(engine, [ev], book_id="onchain_crypto", driver="BTC", timeframe="1h")

    stored = events.read_events(engine, book_id="onchain_crypto")
    assert len(stored) == 1 and stored[0]["state"] == "S1"


def test_dominance_samples_upsert_and_reject_out_of_range(engine) -> None:
    samples = pd.DataFrame(
        {
            "fetched_at": pd.to_datetime(["2024-05-23T15:05:01Z", "2024-05-23T15:06:01Z"], utc=True),
            "btc_d": [50.07, 50.08],
            "usdt_d": [4.19, 4.19],
            "updated_at": pd.to_datetime(["2024-05-23T15:04:40Z"] * 2, utc=True),
            "source": ["coingecko"] * 2,
        }
    )
    store_dominance.insert_samples(engine, samples)
    store_dominance.insert_samples(engine, samples)
    assert len(store_dominance.read_samples(engine)) == 2

    bad = samples.assign(usdt_d=[4.19, 140.0])
    with pytest.raises(DataValidationError, match="usdt_d"):
        store_dominance.insert_samples(engine, bad)


def test_meta_round_trip(engine) -> None:
    meta.set_meta(engine, "bootstrap:onchain_crypto", {"completed_at": "2025-07-26T05:00:00Z"})
    meta.set_meta(engine, "bootstrap:onchain_crypto", {"completed_at": "2025-07-27T05:00:00Z"})
    assert meta.get_meta(engine, "bootstrap:onchain_crypto") == {"completed_at": "2025-07-27T05:00:00Z"}
    assert meta.get_meta(engine, "missing") is None


@pytest.mark.service
def test_large_postgres_upsert_uses_copy_path_and_is_idempotent(pg_url: str) -> None:
    eng = make_engine(pg_url, cached=False)
    init_db(eng)
    frame = _bars(30_000, freq="1min")

    store_bars.upsert_bars(eng, "majors", {"token_contract": "ETH"}, "1m", frame, copy_threshold_rows=1_000)
    store_bars.upsert_bars(
        eng,
        "majors",
        {"token_contract": "ETH"},
        "1m",
        frame.assign(close=frame["close"] + 0.1),
        copy_threshold_rows=1_000,
    )

    back = store_bars.read_bars(eng, "majors", {"token_contract": "ETH"}, "1m", limit=5)
    assert store_bars.count_bars(eng, "majors", {"token_contract": "ETH"}, "1m") == 30_000
    np.testing.assert_allclose(back["close"].to_numpy(), frame["close"].to_numpy()[-5:] + 0.1)
    eng.dispose()


def test_sqlite_fast_path_writes_the_text_sqlalchemy_writes_so_both_meet_on_the_key(tmp_path) -> None:
    """SQLite bars go through the driver's executemany with pre-formatted times; a bar written that way and the
    same bar written through SQLAlchemy's DATETIME processor must be one row, and read back alike."""
    from regime_tasks.store.db import upsert_rows

    engine = make_engine(f"sqlite:///{tmp_path / 'fast.db'}", cached=False)
    init_db(engine)
    idx = pd.date_range("2025-07-26T00:00:00Z", periods=4, freq="1h")
    bars = pd.DataFrame(
        {"open": [1.0, 2.0, 3.0, 4.0], "high": [2.0, 3.0, 4.0, 5.0], "low": [0.5, 1.5, 2.5, 3.5]}, index=idx
    ).assign(close=[1.5, 2.5, 3.5, 4.5], volume=[10.0, 0.0, 1e-9, 1e12], constituents=[3, 4, 5, 6])
    store_bars.upsert_bars(engine, "regime", {"driver": "BTC"}, "1h", bars, source="fast")
    rows = [
        {
            "driver": "BTC",
            "timeframe": "1h",
            "timestamp": ts.to_pydatetime(),
            "open_usd": 9.0,
            "high_usd": 9.0,
            "low_usd": 9.0,
            "close_usd": 9.0,
            "volume": 9.0,
            "source": "orm",
            "constituents": 1,
        }
        for ts in idx
    ]
    with engine.begin() as conn:
        upsert_rows(
            conn,
            regime_price_data_ohlc,
            rows,
            conflict_cols=("driver", "timeframe", "timestamp"),
            update_cols=("close_usd", "source"),
        )
        stored = conn.execute(sa.text("SELECT timestamp, source FROM regime_price_data_ohlc ORDER BY 1")).all()
    assert [s for _, s in stored] == ["orm"] * 4  # every ORM write met the fast path's row: no duplicates
    assert stored[0][0] == "2025-07-26 00:00:00.000000" and stored[-1][0] == "2025-07-26 03:00:00.000000"
    back = store_bars.read_bars(engine, "regime", {"driver": "BTC"}, "1h", start=idx[1], end=idx[2])
    assert list(back.index) == list(idx[1:3]) and back["close"].tolist() == [9.0, 9.0]
    assert back["open"].tolist() == [2.0, 3.0] and back["constituents"].tolist() == [4, 5]
    engine.dispose()
