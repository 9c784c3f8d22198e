"""update_driver's live path: a worker with a warm history and one without store the same rows.

SQLite files (no services); real Binance BTC 1h candles as the BTC driver's regime bars. Small windows
(REGIME_TA_WINDOW_BARS=600, slack 100) so that the test crosses window boundaries quickly.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.config import Settings
from regime_tasks.core.bars import normalize_bars
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine
from regime_tasks.store.events import read_events
from regime_tasks.store.positions import read_driver_features
from tests.conftest import real_file

BOOK = "onchain_crypto"
KEY = {"driver": "BTC"}


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    bars = normalize_bars(raw, series="BTC", timeframe="1h").iloc[21_000:23_000]
    return bars.assign(constituents=1)


def _runtime(path: Path | str, **overrides: object) -> Runtime:
    url = path if isinstance(path, str) else f"sqlite:///{path}"
    settings = Settings(database_url=url, ta_window_bars=600, ta_window_slack_bars=100, **overrides)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine)


def _payload(rt: Runtime) -> dict:
    features = read_driver_features(rt.engine, BOOK, keys=None)[("BTC", "1h")]
    engine_payload = {k: v for k, v in features["uptrend_engine_v4"].items() if k != "ts"}
    ta = {k: v for k, v in features["ta"].items() if k != "ts"}
    return {"engine": engine_payload, "ta": ta}


def _events(rt: Runtime) -> list[dict]:
    return [
        {k: v for k, v in ev.items() if k not in ("id", "created_at")} for ev in read_events(rt.engine, book_id=BOOK)
    ]


def _run(rt: Runtime, bars: pd.DataFrame, bootstrap_bars: int, steps_at: list[int], *, warm: bool) -> list[dict]:
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars.iloc[:bootstrap_bars])
    stages.drivers._LIVE.clear()
    stages.update_driver(rt, BOOK, "BTC", "1h", bars.index[bootstrap_bars - 1])
    out = []
    done = bootstrap_bars
    for upto in steps_at:
        store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars.iloc[done:upto])
        if not warm:
            stages.drivers._LIVE.clear()
        result = stages.update_driver(rt, BOOK, "BTC", "1h", bars.index[upto - 1])
        grid_bars = int((bars.index[upto - 1] - bars.index[done - 1]) / pd.Timedelta(hours=1))  # gaps are filled
        assert result["status"] == "ok" and result["stepped"] == grid_bars
        out.append(_payload(rt))
        done = upto
    return out


@pytest.mark.slow
def test_warm_and_cold_workers_store_identical_payloads_and_events(tmp_path: Path, btc_1h: pd.DataFrame) -> None:
    # one bar at a time, then catch-ups of 7 and 40 bars; 1,000 bars cross several window boundaries
    steps_at = [*range(1_001, 1_300), 1_307, 1_347, *range(1_348, 1_500)]
    warm_rt, cold_rt = _runtime(tmp_path / "warm.db"), _runtime(tmp_path / "cold.db")
    warm = _run(warm_rt, btc_1h, 1_000, steps_at, warm=True)
    cold = _run(cold_rt, btc_1h, 1_000, steps_at, warm=False)
    for k, (a, b) in enumerate(zip(warm, cold, strict=True)):
        assert a == b, f"step {k} (bars up to {steps_at[k]})"
    assert _events(warm_rt) == _events(cold_rt)
    assert len({p["engine"]["state"] for p in warm}) >= 2  # the stretch is not one flat state
    assert {p["ta"]["bars"] for p in warm} <= set(range(600, 700))  # anchored windows: 600 to 699 bars


def test_a_corrected_bar_inside_the_window_forces_a_rebuild(tmp_path: Path, btc_1h: pd.DataFrame) -> None:
    rts = [_runtime(tmp_path / "a.db"), _runtime(tmp_path / "b.db")]
    _run(rts[0], btc_1h, 1_000, [1_001, 1_002], warm=True)
    warm_history = stages.drivers._LIVE.copy()  # rts[0]'s history, built before the correction
    _run(rts[1], btc_1h, 1_000, [1_001, 1_002], warm=True)
    corrected = btc_1h.iloc[[1_001 - 50]].assign(close=lambda f: f["close"] * 1.01, high=lambda f: f["high"] * 1.01)
    results = []
    for rt, keep_warm in zip(rts, (True, False), strict=True):
        store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", corrected)
        store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", btc_1h.iloc[1_002:1_003])
        stages.drivers._LIVE.clear()
        if keep_warm:
            stages.drivers._LIVE.update(warm_history)
        stages.update_driver(rt, BOOK, "BTC", "1h", btc_1h.index[1_002])
        results.append(_payload(rt))
    assert results[0] == results[1]


def test_a_warm_tick_reads_only_the_new_bars_and_still_sees_a_corrected_one(
    tmp_path: Path, btc_1h: pd.DataFrame, db_url: str
) -> None:
    # the warm history is checked by the store's fingerprint of its window, not by re-reading the window
    warm_rt, cold_rt = _runtime(db_url), _runtime(tmp_path / "cold.db")
    _run(warm_rt, btc_1h, 1_000, [1_001], warm=True)
    reads = []
    for upto in (1_002, 1_003):
        store_bars.upsert_bars(warm_rt.engine, "regime", KEY, "1h", btc_1h.iloc[upto - 1 : upto])
        result = stages.update_driver(warm_rt, BOOK, "BTC", "1h", btc_1h.index[upto - 1])
        assert result["status"] == "ok" and result["stepped"] == 1
        reads.append(result["read"])
    assert reads == [1, 1]  # only the new bar; the window's other ~650 rows were not read
    # a correction 50 bars back, smaller than a tick size: the fingerprint changes, the whole window is read
    corrected = btc_1h.iloc[[1_003 - 50]].assign(close=lambda f: f["close"] + 1e-6)
    store_bars.upsert_bars(warm_rt.engine, "regime", KEY, "1h", corrected)
    store_bars.upsert_bars(warm_rt.engine, "regime", KEY, "1h", btc_1h.iloc[1_003:1_004])
    result = stages.update_driver(warm_rt, BOOK, "BTC", "1h", btc_1h.index[1_003])
    assert result["status"] == "ok" and result["read"] == result["bars"] > 600
    warm = _payload(warm_rt)
    # the same store written by a worker that never had a history: the same payload, bit for bit
    _run(cold_rt, btc_1h, 1_000, [1_001, 1_002, 1_003], warm=False)
    store_bars.upsert_bars(cold_rt.engine, "regime", KEY, "1h", corrected)
    store_bars.upsert_bars(cold_rt.engine, "regime", KEY, "1h", btc_1h.iloc[1_003:1_004])
    stages.drivers._LIVE.clear()
    stages.update_driver(cold_rt, BOOK, "BTC", "1h", btc_1h.index[1_003])
    assert _payload(cold_rt) == warm
    # without the check a stale history would differ: the corrected close is in the TA window's payload
    assert warm["ta"] != _payload_before_correction(tmp_path, btc_1h)


def _payload_before_correction(tmp_path: Path, btc_1h: pd.DataFrame) -> dict:
    rt = _runtime(tmp_path / "plain.db")
    _run(rt, btc_1h, 1_000, [1_001, 1_002, 1_003, 1_004], warm=False)
    return _payload(rt)["ta"]


def test_new_rows_and_window_fingerprints_come_from_one_read(db_url: str, btc_1h: pd.DataFrame) -> None:
    rt = _runtime(db_url)
    bars = btc_1h.iloc[:300]
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars)
    start, after, end = bars.index[0], bars.index[-3], bars.index[-1]
    new, checked, whole = store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=end, after=after)
    own = store_bars.read_bars(rt.engine, "regime", KEY, "1h", start=bars.index[-2], end=end)
    assert new.index.equals(own.index) and (new.to_numpy() == own[list(new.columns)].to_numpy()).all()
    assert checked is not None and checked[0] == 298 and whole[0] == 300
    # the fingerprint up to ``after`` is the one a read that ended there gave: what a warm history keeps
    held, none, up_to_after = store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=after)
    assert none is None and len(held) == 298 and up_to_after == checked
    # a new bar after ``after`` leaves it; a price corrected by 1e-9 of itself or a bar removed changes it
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", btc_1h.iloc[300:301])
    again = store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=end, after=after)[1]
    assert again == checked
    fixed = bars.iloc[[100]].assign(open=lambda f: f["open"] * (1 + 1e-9))
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", fixed)
    assert store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=end, after=after)[1] != checked
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars.iloc[[100]])
    assert store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=end, after=after)[1] == checked
    from regime_tasks.store.schema import regime_price_data_ohlc as t

    with rt.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.timestamp == bars.index[50].to_pydatetime()))
    assert store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=end, after=after)[1] != checked
    # nothing after ``after``: no rows, the fingerprints still come
    empty, checked2, _ = store_bars.read_bars_after(rt.engine, "regime", KEY, "1h", start=start, end=after, after=after)
    assert empty.empty and checked2 is not None and checked2[0] == 297
