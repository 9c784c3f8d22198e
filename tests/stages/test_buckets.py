"""Bucket composites in the pipeline on the bundled real data (D3 revised, D16): caps from price × supply,
point-in-time members, and an index extended tick by tick that equals a rebuild bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.config import BUNDLED_DATA_DIR, load_settings
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine

T1 = pd.Timestamp("2025-07-20T20:00:00Z")
T2 = pd.Timestamp("2025-07-21T02:00:00Z")  # crosses a day: membership of the new day applies


def _runtime(tmp_path, name: str) -> Runtime:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / name}", source="file", files_dir=BUNDLED_DATA_DIR, history_1h_days=8
    )
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine)


def _advance(rt: Runtime, until_1h: pd.Timestamp) -> None:
    day = until_1h.floor("1D") - pd.Timedelta(days=1)
    stages.collect(rt, "1d", day)
    stages.collect(rt, "1h", until_1h)
    stages.build_driver_series(rt, "1h", until_1h)


@pytest.mark.slow
def test_bucket_index_extended_tick_by_tick_equals_a_rebuild_bit_for_bit(tmp_path) -> None:
    live = _runtime(tmp_path, "live.db")
    _advance(live, T1)
    t = T1
    while t < T2:  # one tick per hour, crossing midnight
        t += pd.Timedelta(hours=1)
        _advance(live, t)
    rebuilt = _runtime(tmp_path, "rebuilt.db")
    _advance(rebuilt, T2)
    for bucket in ("nano", "small", "mid", "big"):
        a = store_bars.read_bars(live.engine, "regime", {"driver": bucket}, "1h")
        b = store_bars.read_bars(rebuilt.engine, "regime", {"driver": bucket}, "1h")
        assert len(a) > 24 * 5 and a.index[-1] == T2
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_bucket_members_come_from_derived_caps_of_the_previous_close(tmp_path) -> None:
    rt = _runtime(tmp_path, "caps.db")
    stages.collect(rt, "1d", pd.Timestamp("2025-07-24T00:00:00Z"))
    from regime_tasks.store.tokens import cap_sources, read_caps

    caps = read_caps(rt.engine)
    assert caps.index[-1] == pd.Timestamp("2025-07-24T00:00:00Z")
    assert set(cap_sources(rt.engine).values()) == {"derived: price × supply of 2025-02-14"}
    members = stages.bucket_members(rt, pd.Timestamp("2025-07-25T12:00:00Z"))
    s = rt.settings
    row = caps.loc[pd.Timestamp("2025-07-24T00:00:00Z")]  # the close of 07-24 decides 07-25
    for bucket, keys in members.items():
        for k in keys:
            cap = row[f"{k['token_contract']}@{k['token_chain']}"]
            lo, hi = {
                "nano": (0, s.bucket_nano_max_usd),
                "small": (s.bucket_nano_max_usd, s.bucket_small_max_usd),
                "mid": (s.bucket_small_max_usd, s.bucket_mid_max_usd),
                "big": (s.bucket_mid_max_usd, float("inf")),
            }[bucket]
            assert lo <= cap < hi
    assert all(len(v) >= 3 for v in members.values())


def _delete_bar(rt: Runtime, symbol: str, chain: str, ts: pd.Timestamp) -> None:
    import sqlalchemy as sa

    from regime_tasks.store.schema import lowcap_price_data_ohlc as t

    with rt.engine.begin() as conn:
        gone = conn.execute(
            sa.delete(t).where(
                t.c.token_contract == symbol,
                t.c.token_chain == chain,
                t.c.timeframe == "1h",
                t.c.timestamp == ts.to_pydatetime(),
            )
        ).rowcount
    assert gone == 1


@pytest.mark.slow
def test_a_late_member_bar_rewrites_the_index_from_that_bar_and_equals_a_rebuild(tmp_path) -> None:
    """A member's bar stored after the index passed it (a deferred REST catch-up, a late websocket bar): the next
    extension recomputes from the earliest bar whose constituents changed, and the index equals a rebuild."""
    live = _runtime(tmp_path, "late.db")
    stages.collect(live, "1d", T1.floor("1D") - pd.Timedelta(days=1))
    stages.collect(live, "1h", T1)
    late_at = {T1 - pd.Timedelta(hours=5): "nano", T1 - pd.Timedelta(hours=2): "mid"}
    held = {}
    for ts, bucket in late_at.items():  # one traded member bar per bucket is held back: not stored yet
        for m in stages.bucket_members(live, ts)[bucket]:
            key = dict(m)
            bar = store_bars.read_bars(live.engine, "lowcap", key, "1h", start=ts, end=ts)
            if not bar.empty and bar["volume"].iloc[0] > 0:
                held[ts] = (bucket, key, bar)
                _delete_bar(live, key["token_contract"], key["token_chain"], ts)
                break
    assert len(held) == 2
    stages.build_driver_series(live, "1h", T1)  # the index passes the missing bars
    before = {b: store_bars.read_bars(live.engine, "regime", {"driver": b}, "1h") for b in ("nano", "mid")}
    for _, key, bar in held.values():  # the late bars arrive
        store_bars.upsert_bars(live.engine, "lowcap", key, "1h", bar, source="late")
    until = T1 + pd.Timedelta(hours=1)
    stages.collect(live, "1h", until)
    stages.build_driver_series(live, "1h", until)
    rebuilt = _runtime(tmp_path, "late_rebuilt.db")
    _advance(rebuilt, until)
    for ts, (bucket, _, _) in held.items():
        a = store_bars.read_bars(live.engine, "regime", {"driver": bucket}, "1h")
        b = store_bars.read_bars(rebuilt.engine, "regime", {"driver": bucket}, "1h")
        assert a.index[-1] == until
        # the held-back bar was missing from the index when it was first extended, and counts now
        assert before[bucket].loc[ts, "constituents"] + 1 == a.loc[ts, "constituents"]
        assert before[bucket].loc[: ts - pd.Timedelta(hours=1)].equals(a.loc[: ts - pd.Timedelta(hours=1)])
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_members_read_in_one_query_equal_the_per_member_reads(tmp_path, db_url) -> None:
    """``_read_members`` reads a bucket's lowcap members in one query (and the last traded closes that fall before
    its lookback in one more): each member's frame equals its own ``read_bars`` from ``start`` preceded by its
    ``last_traded_bar`` before ``start`` — for a member that traded just before, one whose last trade is far
    behind the lookback (quotes since), one that never traded before, and one with nothing new."""
    settings = load_settings(database_url=db_url, source="file", files_dir=BUNDLED_DATA_DIR)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    rt = Runtime(settings=settings, engine=engine)  # SQLite keeps times as text, PostgreSQL as timestamptz
    t0 = pd.Timestamp("2025-07-20T00:00:00Z")
    index = pd.date_range(t0, periods=200, freq="1min", tz="UTC", name="timestamp")
    close = pd.Series(range(1, 201), index=index, dtype="float64")
    base = pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": 1.0})
    start = index[150]
    frames = {
        "ACTIVE": base,
        "QUIET": base.assign(volume=[1.0 if i < 20 else 0.0 for i in range(200)]),  # last trade 130 bars back
        "NEW": base.assign(volume=[0.0 if i < 150 else 1.0 for i in range(200)]),  # never traded before start
        "STOPPED": base.iloc[:100],  # no bar from start on
    }
    keys = []
    for symbol, frame in frames.items():
        key = {"token_contract": symbol, "token_chain": "hyperliquid"}
        store_bars.upsert_bars(rt.engine, "lowcap", key, "1m", frame)
        keys.append(("lowcap", key))
    until = index[-1]
    got = stages.series._read_members(rt, keys, "1m", start, until)
    assert sorted(got) == ["ACTIVE@hyperliquid", "NEW@hyperliquid", "QUIET@hyperliquid"]
    for _, key in keys:
        name = f"{key['token_contract']}@{key['token_chain']}"
        if name not in got:
            continue
        own = store_bars.read_bars(rt.engine, "lowcap", key, "1m", start=start, end=until)
        prior = store_bars.last_traded_bar(rt.engine, "lowcap", key, "1m", start - pd.Timedelta(seconds=1))
        expected = pd.concat([prior, own]) if not prior.empty else own
        assert got[name].index.equals(expected.index), name
        np.testing.assert_array_equal(got[name].to_numpy(), expected[list(got[name].columns)].to_numpy())
    assert got["QUIET@hyperliquid"].index[0] == index[19]  # from the second query, far behind the lookback
    assert got["NEW@hyperliquid"].index[0] == start
    full = stages.series._read_members(rt, keys, "1m", None, until)  # a rebuild's read: every stored bar
    assert all(len(full[f"{s}@hyperliquid"]) == len(f) for s, f in frames.items())


def test_membership_kept_per_day_follows_a_cap_written_later_that_day(tmp_path) -> None:
    """Bucket membership is kept per day while the caps it was computed from are unchanged; a cap written or
    rewritten afterwards (the 1d collect after midnight, a host) is seen by the next call."""
    from regime_tasks.store.tokens import read_caps, upsert_caps

    rt = _runtime(tmp_path, "memb.db")
    day = pd.Timestamp("2025-07-25T00:00:00Z")
    stages.collect(rt, "1d", day - pd.Timedelta(days=1))
    first = stages.bucket_members(rt, day)
    nano = first["nano"][0]
    name = f"{nano['token_contract']}@{nano['token_chain']}"
    assert read_caps(rt.engine).loc[day - pd.Timedelta(days=1), name] < rt.settings.bucket_nano_max_usd
    upsert_caps(  # the close of d−1 re-derived: now a big cap
        rt.engine,
        [
            {
                **nano,
                "day": (day - pd.Timedelta(days=1)).to_pydatetime(),
                "market_cap_usd": 1e12,
                "close_usd": 1.0,
                "circulating_supply": 1e12,
                "supply_as_of": None,
                "source": "test",
            }
        ],
    )
    again = stages.bucket_members(rt, day)
    assert nano not in again["nano"] and nano in again["big"]
    stages.series._MEMBERSHIP.clear()
    assert stages.bucket_members(rt, day) == again  # what a fresh process computes


def test_major_members_read_from_a_lookback_equal_the_per_member_reads(tmp_path, db_url) -> None:
    """ALT's members (majors) are read from ``_PRIOR_LOOKBACK_BARS`` before ``start``: each frame still equals its
    ``read_bars`` from ``start`` preceded by its ``last_traded_bar`` before ``start``, for a member that traded in
    the lookback and one whose last trade is behind it (quotes since)."""
    settings = load_settings(database_url=db_url, source="file", files_dir=BUNDLED_DATA_DIR)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    rt = Runtime(settings=settings, engine=engine)
    index = pd.date_range("2025-07-20T00:00:00Z", periods=200, freq="1min", tz="UTC", name="timestamp")
    close = pd.Series(np.linspace(100.0, 120.0, 200), index=index)
    base = pd.DataFrame({"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": 3.0})
    start = index[150]
    frames = {"ETH": base, "SOL": base.assign(volume=[1.0 if i < 120 else 0.0 for i in range(200)])}
    keys = []
    for symbol, frame in frames.items():
        store_bars.upsert_bars(rt.engine, "majors", {"token_contract": symbol}, "1m", frame)
        keys.append(("majors", {"token_contract": symbol}))
    got = stages.series._read_members(rt, keys, "1m", start, index[-1])
    for _, key in keys:
        own = store_bars.read_bars(rt.engine, "majors", key, "1m", start=start, end=index[-1])
        prior = store_bars.last_traded_bar(rt.engine, "majors", key, "1m", start - pd.Timedelta(seconds=1))
        expected = pd.concat([prior, own])
        name = key["token_contract"]
        assert got[name].index.equals(expected.index), name
        np.testing.assert_array_equal(got[name].to_numpy(), expected[list(got[name].columns)].to_numpy())
    assert got["ETH"].index[0] == index[149] and got["SOL"].index[0] == index[119]
