"""Several books on one database: a driver's step at a bar is computed once and written for each book.

The bars have no book column, so book B's step of a series from the same previous payload to the same bar is
book A's step: update_driver reuses it (``drivers._STEPS``) when the stored window is unchanged, and steps
normally otherwise. Either way every book's rows must be the bits a single-book run stores.

SQLite files (no services); real Binance BTC 1h candles as the BTC driver's regime bars, small windows as in
test_live.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.config import Settings
from regime_tasks.core.bars import normalize_bars
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine
from regime_tasks.store.events import read_events
from regime_tasks.store.positions import read_driver_features, set_features_bulk
from tests.conftest import real_file

A, B = "onchain_crypto", "book_b"
KEY = {"driver": "BTC"}
BOOT = 900  # bars stored before the bootstrap


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    bars = normalize_bars(raw, series="BTC", timeframe="1h").iloc[21_000:22_000]
    return bars.assign(constituents=1)


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    stages.drivers._LIVE.clear()
    stages.drivers._FINGERPRINTS.clear()
    stages.drivers._STEPS.clear()


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The books whose update actually stepped bars (``_step_live`` ran) rather than reusing a step."""
    calls: list[str] = []
    real = stages.drivers._step_live

    def spy(rt: Runtime, cache_key: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(current[0])
        return real(rt, cache_key, *args, **kwargs)

    current = [""]
    monkeypatch.setattr(stages.drivers, "_step_live", spy)
    real_update = stages.drivers.update_driver

    def update(rt: Runtime, book_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        current[0] = book_id
        return real_update(rt, book_id, *args, **kwargs)

    monkeypatch.setattr(stages, "update_driver", update)
    return calls


def _runtime(path: Path) -> Runtime:
    settings = Settings(database_url=f"sqlite:///{path}", ta_window_bars=600, ta_window_slack_bars=100)
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine)


def _rows(rt: Runtime, book: str) -> dict[str, Any]:
    """A book's stored rows of BTC 1h without the write times: payloads and events."""
    features = read_driver_features(rt.engine, book, keys=None)[("BTC", "1h")]
    payloads = {name: {k: v for k, v in features[name].items() if k != "ts"} for name in sorted(features)}
    events = [
        {k: v for k, v in ev.items() if k not in ("id", "created_at", "book_id")}
        for ev in read_events(rt.engine, book_id=book)
    ]
    return {"payloads": payloads, "events": events}


def _bootstrap(rt: Runtime, bars: pd.DataFrame, books: list[str]) -> None:
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars.iloc[:BOOT])
    for book in books:
        assert stages.update_driver(rt, book, "BTC", "1h", bars.index[BOOT - 1])["status"] == "ok"


def _tick(rt: Runtime, bars: pd.DataFrame, book: str, upto: int) -> dict[str, Any]:
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", bars.iloc[BOOT:upto])  # idempotent by bar time
    return stages.update_driver(rt, book, "BTC", "1h", bars.index[upto - 1])


def _single_book(tmp_path: Path, bars: pd.DataFrame, ticks: list[int], name: str) -> list[dict[str, Any]]:
    """The rows one book alone stores after each tick, in a process of its own (fresh caches)."""
    stages.drivers._LIVE.clear()
    stages.drivers._FINGERPRINTS.clear()
    stages.drivers._STEPS.clear()
    rt = _runtime(tmp_path / f"{name}.db")
    _bootstrap(rt, bars, [A])
    out = []
    for upto in ticks:
        assert _tick(rt, bars, A, upto)["status"] == "ok"
        out.append(_rows(rt, A))
    stages.drivers._LIVE.clear()
    stages.drivers._FINGERPRINTS.clear()
    stages.drivers._STEPS.clear()
    return out


def test_second_book_reuses_the_step_and_stores_the_single_book_bits(
    tmp_path: Path, btc_1h: pd.DataFrame, steps: list[str]
) -> None:
    ticks = [*range(BOOT + 1, BOOT + 40), BOOT + 47]  # one bar at a time, then a catch-up of 7 bars
    alone = _single_book(tmp_path, btc_1h, ticks, "alone")
    rt = _runtime(tmp_path / "two.db")
    _bootstrap(rt, btc_1h, [A, B])
    steps.clear()
    for k, upto in enumerate(ticks):
        first = _tick(rt, btc_1h, A, upto)
        second = _tick(rt, btc_1h, B, upto)
        assert first["status"] == second["status"] == "ok"
        assert {**second["payload"], "ts": None} == {**first["payload"], "ts": None}
        assert second["stepped"] == first["stepped"]
        assert _rows(rt, A) == _rows(rt, B) == alone[k]
    assert steps == [A] * len(ticks)  # book B never stepped a bar itself


def test_a_book_behind_or_on_another_state_steps_itself_and_matches_a_single_book_run(
    tmp_path: Path, btc_1h: pd.DataFrame, steps: list[str]
) -> None:
    rt = _runtime(tmp_path / "two.db")
    _bootstrap(rt, btc_1h, [A, B])
    for upto in range(BOOT + 1, BOOT + 6):
        _tick(rt, btc_1h, A, upto)
    steps.clear()
    # B is 5 bars behind: from its own previous bar, not A's last step
    assert _tick(rt, btc_1h, B, BOOT + 5)["stepped"] == 5
    assert steps == [B]
    assert _rows(rt, B) == _rows(rt, A) == _single_book(tmp_path, btc_1h, [BOOT + 5], "behind")[0]

    # B's previous payload differs from A's (another state at the same bar): B steps from its own
    _other_state(rt, B)
    steps.clear()
    assert _tick(rt, btc_1h, A, BOOT + 6)["status"] == _tick(rt, btc_1h, B, BOOT + 6)["status"] == "ok"
    assert steps == [A, B]
    assert _rows(rt, A) == _single_book(tmp_path, btc_1h, [BOOT + 5, BOOT + 6], "same")[1]
    # B's rows are a single book's stepped from that other state
    stages.drivers._LIVE.clear()
    stages.drivers._STEPS.clear()
    alone = _runtime(tmp_path / "other.db")
    _bootstrap(alone, btc_1h, [A])
    _tick(alone, btc_1h, A, BOOT + 5)
    _other_state(alone, A)
    _tick(alone, btc_1h, A, BOOT + 6)
    assert _rows(rt, B)["payloads"] == _rows(alone, A)["payloads"]
    assert _rows(rt, B)["payloads"] != _rows(rt, A)["payloads"]


def _other_state(rt: Runtime, book: str) -> None:
    row, features = stages.drivers._driver_row(rt, book, "BTC", "1h")
    prev = dict(features["uptrend_engine_v4"])
    prev["state"] = "S0" if prev["state"] != "S0" else "S3"
    set_features_bulk(rt.engine, [(row, "uptrend_engine_v4", prev)])


def test_a_corrected_bar_after_the_first_book_stepped_is_not_reused(
    tmp_path: Path, btc_1h: pd.DataFrame, steps: list[str]
) -> None:
    rt = _runtime(tmp_path / "two.db")
    _bootstrap(rt, btc_1h, [A, B])
    upto = BOOT + 1
    _tick(rt, btc_1h, A, upto)
    _tick(rt, btc_1h, B, upto)
    _tick(rt, btc_1h, A, upto + 1)
    # a venue correction 20 bars back lands before B's step at the same bar
    corrected = btc_1h.copy()
    at = corrected.index[upto - 20]
    corrected.loc[at, "close"] = corrected.loc[at, "close"] * (1 + 1e-6)
    store_bars.upsert_bars(rt.engine, "regime", KEY, "1h", corrected.loc[[at]])
    steps.clear()
    assert _tick(rt, btc_1h, B, upto + 1)["status"] == "ok"
    assert steps == [B]
    # B's rows are what a single book computes on the corrected bars; A's (computed before) differ
    fresh = _runtime(tmp_path / "fresh.db")
    stages.drivers._LIVE.clear()
    stages.drivers._STEPS.clear()
    _bootstrap(fresh, btc_1h, [A])
    _tick(fresh, btc_1h, A, upto)
    store_bars.upsert_bars(fresh.engine, "regime", KEY, "1h", corrected.loc[[at]])
    _tick(fresh, btc_1h, A, upto + 1)
    assert _rows(rt, B) == _rows(fresh, A)
    assert _rows(rt, B)["payloads"]["ta"] != _rows(rt, A)["payloads"]["ta"]
