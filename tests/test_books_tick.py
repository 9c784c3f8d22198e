"""Several books ticking the same bars (one beat per book): the first tick of a bar takes along every book in
step with it, and their ticks launch nothing (pipeline.launch_tick); the tasks then compute and publish every
book of the chain.

Broker-free: the canvas is recorded instead of sent (the tasks themselves are called directly, as Celery calls
them); SQLite files.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from regime_tasks import pipeline, stages, tasks
from regime_tasks.core.bars import normalize_bars
from regime_tasks.core.constants import DRIVERS
from regime_tasks.runtime import Runtime, get_runtime, reset_runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store import meta
from regime_tasks.store.positions import read_driver_features
from tests.conftest import real_file, sqlite_runtime

T0 = "2021-01-01T10:00:00Z"
HOUR = pd.Timedelta(hours=1)


def bar(k: int) -> str:
    return pipeline.iso(pd.Timestamp(T0) + k * HOUR)


class Sent:
    def __init__(self, task_id: str) -> None:
        self.id = task_id


@pytest.fixture()
def launched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, list[str]]]:
    """(bar, book, books taken along) of every chain sent; chain ids are c1, c2, …"""
    sent: list[tuple[str, str, list[str]]] = []
    ids = itertools.count(1)

    class Canvas:
        def __init__(self, until: str, book: str, others: list[str] | None) -> None:
            sent.append((until, book, list(others or [])))

        def apply_async(self) -> Sent:
            return Sent(f"c{next(ids)}")

    monkeypatch.setattr(pipeline, "tick_canvas", lambda tf, until, book, others=None: Canvas(until, book, others))
    return sent


@pytest.fixture()
def rt(tmp_path: Path) -> Runtime:
    rt = sqlite_runtime(tmp_path / "books.db")
    for book in ("a", "b", "c", "d"):
        meta.set_meta(rt.engine, f"bootstrap:{book}", {"completed_at": T0})
    return rt


def test_the_first_tick_of_a_bar_takes_along_the_books_in_step(rt: Runtime, launched: list) -> None:
    # bar 0: nobody has ticked before, each book runs its own chain
    assert [pipeline.launch_tick(rt, "1h", bar(0), b) for b in ("a", "b", "c")] == ["c1", "c2", "c3"]
    assert launched == [(bar(0), "a", []), (bar(0), "b", []), (bar(0), "c", [])]
    # bar 1: a's tick takes b and c along (they asked for bar 0); d is bootstrapped but never ticked
    assert pipeline.launch_tick(rt, "1h", bar(1), "a") == "c4"
    assert launched[-1] == (bar(1), "a", ["b", "c"])
    assert pipeline.launch_tick(rt, "1h", bar(1), "c") == "c4"  # launches nothing: a's chain computes it
    assert pipeline.launch_tick(rt, "1h", bar(1), "d") == "c5"  # not in step: its own chain
    assert launched[-1] == (bar(1), "d", [])
    assert meta.get_meta(rt.engine, "tick:launched:b:1h")["id"] == "c4"  # catch-up sees b's bar in flight
    # bar 2: b's beat stopped after bar 0 (it never asked for bar 1): not taken along any more; c, taken along at
    # bar 1 by its own tick, is in step
    assert pipeline.launch_tick(rt, "1h", bar(2), "a") == "c6"
    assert launched[-1] == (bar(2), "a", ["c", "d"])
    # another timeframe is decided on its own
    assert pipeline.launch_tick(rt, "1d", bar(2), "a") == "c7"
    assert launched[-1] == (bar(2), "a", [])


def test_a_failed_chain_is_launched_again_for_its_books(
    rt: Runtime, launched: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    for b in ("a", "b"):
        pipeline.launch_tick(rt, "1h", bar(0), b)
    assert pipeline.launch_tick(rt, "1h", bar(1), "a") == "c3"
    failed = {"c3"}
    monkeypatch.setattr(pipeline, "_failed", lambda rt, launched: launched["id"] in failed)
    # the catch-up re-run of b's bar (its chain failed) launches a chain again, for b and whoever it covers
    assert pipeline.launch_tick(rt, "1h", bar(1), "b") == "c4"
    assert launched[-1] == (bar(1), "b", [])  # a asked for bar 1 itself, so it is not "in step" for bar 1
    assert pipeline.launch_tick(rt, "1h", bar(1), "b") == "c4"  # now in flight: nothing more


@pytest.fixture()
def env_rt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The process runtime (what the tasks use) on a fresh SQLite file, with an in-process cache."""
    monkeypatch.setenv("REGIME_DATABASE_URL", f"sqlite:///{tmp_path / 'tasks.db'}")
    monkeypatch.setenv("REGIME_REDIS_URL", "")
    monkeypatch.setenv("REGIME_TA_WINDOW_BARS", "600")
    monkeypatch.setenv("REGIME_TA_WINDOW_SLACK_BARS", "100")
    monkeypatch.setenv("REGIME_BOOKS", "book_b,book_c")
    reset_runtime()
    stages.drivers._LIVE.clear()
    stages.drivers._STEPS.clear()
    yield get_runtime()
    reset_runtime()


def test_the_chain_of_a_leading_book_writes_and_publishes_every_book_it_took_along(env_rt: Runtime) -> None:
    rt = env_rt
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    btc = normalize_bars(raw, series="BTC", timeframe="1h").iloc[21_000:21_905].assign(constituents=1)
    store_bars.upsert_bars(rt.engine, "regime", {"driver": "BTC"}, "1h", btc.iloc[:900])
    books = ["onchain_crypto", "book_b", "book_c"]
    for book in books:
        stages.update_driver(rt, book, "BTC", "1h", btc.index[899])
    store_bars.upsert_bars(rt.engine, "regime", {"driver": "BTC"}, "1h", btc.iloc[900:])
    until = pipeline.iso(btc.index[-1])

    results = [tasks.driver_update(d, "1h", until, books[0], books[1:]) for d in DRIVERS]
    btc_result = results[DRIVERS.index("BTC")]
    assert btc_result["status"] == "ok" and btc_result["stepped"] == 5
    assert {b: r["status"] for b, r in btc_result["books"].items()} == {"book_b": "ok", "book_c": "ok"}
    assert btc_result["books"]["book_b"].get("shared") and btc_result["books"]["book_c"].get("shared")
    summary = tasks.publish(results, "1h", until, books[0], books[1:])
    assert set(summary["books"]) == {"book_b", "book_c"}
    tasks.levers(until, books[0], books[1:])

    def rows(book: str) -> dict:
        features = read_driver_features(rt.engine, book, keys=None)[("BTC", "1h")]
        return {k: {f: v for f, v in p.items() if f != "ts"} for k, p in features.items()}

    def cached(book: str) -> dict:
        entry = rt.cache.read(book)["BTC|1h"]
        return {k: v for k, v in entry.items() if k != "ts"}

    assert rows("onchain_crypto") == rows("book_b") == rows("book_c")
    assert rows("book_b")["uptrend_engine_v4"]["bar_ts"] == until
    assert cached("onchain_crypto") == cached("book_b") == cached("book_c")
    for book in books:  # every book's tick of this bar counts as published (catch-up by bar time)
        assert meta.get_meta(rt.engine, f"tick:published:{book}:1h")["until"] == until
