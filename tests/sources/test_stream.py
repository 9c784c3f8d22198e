"""`regime stream`: Hyperliquid's closed 1m candles written to the store, through a websocket drop.

The local websocket server speaks Hyperliquid's candle protocol with real HYPE 1m candles (each minute sent as
an update, then its final values), drops the first connection after 12 candles and never sends the next 9
minutes: the stream must fetch those from the local REST server. Writes go to a SQLite file.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.cli.stream import hyperliquid_coins, run_stream
from regime_tasks.runtime import Runtime
from regime_tasks.sources.hyperliquid import HyperliquidCandleStream
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine
from tests.sources.servers import HyperliquidWsServer


def test_only_hyperliquid_sourced_majors_are_streamed() -> None:
    assert hyperliquid_coins() == ("HYPE",)  # BTC, ETH, SOL, BNB come from Binance: one venue per series


def test_stream_writes_every_closed_minute_once_through_a_drop(venues, tmp_path: Path) -> None:
    _stream_through_one_drop(venues, tmp_path)


@pytest.mark.slow
def test_stream_counts_one_reconnect_when_the_last_minute_is_stored_late(venues, tmp_path: Path, monkeypatch) -> None:
    """On a loaded machine the last minute was stored after the test server had hung up, and the
    client's second (rightful) reconnect failed the test. The server now stays connected; a slow store must not
    change what the stream does."""
    deliver = HyperliquidCandleStream._deliver

    def slow_last_minute(self, coin, frame):  # a busy machine: storing the last minute takes 1.5 s
        if frame.index[-1] == pd.Timestamp("2025-07-24T10:39:00Z"):
            time.sleep(1.5)
        return deliver(self, coin, frame)

    monkeypatch.setattr(HyperliquidCandleStream, "_deliver", slow_last_minute)
    _stream_through_one_drop(venues, tmp_path)


@pytest.mark.slow
def test_member_stream_writes_universe_bars_through_a_drop(venues, tmp_path: Path, monkeypatch) -> None:
    """``regime stream --members``: two bucket members' 1m candles (real AAVE perp and VAPOR spot, the bundle's) on
    one connection into the lowcap table, the outage's minutes from REST — the catch-up that loses no closed bar."""
    key = {"token_contract": "AAVE", "token_chain": "hyperliquid"}
    vapor = {"token_contract": "VAPOR", "token_chain": "hyperliquid"}
    pair = next(c for c, sym in venues.spot_pairs.items() if sym == "VAPOR")  # a spot member, by pair name
    monkeypatch.setattr(stages, "member_stream_targets", lambda rt: {"AAVE": key, pair: vapor})
    ws = _stream_through_one_drop(venues, tmp_path, coin="AAVE", table="lowcap", key=key, members=True, extra=(pair,))
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}", cached=False)
    got = store_bars.read_bars(engine, "lowcap", vapor, "1m")
    sent = sorted(ws.extra[pair])  # VAPOR's minutes within the feed, outage minutes included (from REST)
    assert len(sent) == 40 and [int(t.timestamp() * 1000) for t in got.index] == sent
    assert got["close"].tolist() == pytest.approx([float(ws.extra[pair][t].close) for t in sent])


def _stream_through_one_drop(
    venues,
    tmp_path: Path,
    *,
    coin: str = "HYPE",
    table: str = "majors",
    key: dict | None = None,
    members: bool = False,
    extra: tuple[str, ...] = (),
) -> HyperliquidWsServer:
    start = pd.Timestamp("2025-07-24T10:00:00Z")
    ws = HyperliquidWsServer(venues, coin, start, minutes=40, drop_after=12, skip=9, extra_coins=extra).start()
    settings = venues.settings(
        hyperliquid_ws_url=ws.url, hyperliquid_ping_interval_secs=0.05, database_url=f"sqlite:///{tmp_path / 's.db'}"
    )
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    rt = Runtime(settings=settings, engine=engine)
    last_minute = pd.Timestamp(int(ws.feed["t"].iloc[-1]), unit="ms", tz="UTC")
    key = key or {"token_contract": coin}
    stop = threading.Event()
    stages_targets = stages.member_stream_targets(rt) if members else {}

    def factory(coins, on_closed_bar, s):
        stream = HyperliquidCandleStream(list(coins), on_closed_bar, settings=s, now=ws.now, max_backoff_secs=0.2)
        stream.rest.now = ws.now
        return stream

    def watch() -> None:  # stop once the last minute is stored (or give up)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = store_bars.last_bar_ts(engine, table, key, "1m") == last_minute
            for pair, rows in ws.extra.items():  # and every extra subscription's last minute
                extra_key = stages_targets.get(pair) if members else None
                if rows and extra_key is not None:
                    last_extra = pd.Timestamp(max(rows), unit="ms", tz="UTC")
                    done = done and store_bars.last_bar_ts(engine, table, extra_key, "1m") == last_extra
            if done:
                break
            time.sleep(0.05)
        stop.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_stream(rt, coins=None if members else (coin,), stop=stop, stream_factory=factory, members=members)
    finally:
        watcher.join()
        ws.stop()

    stored = store_bars.read_bars(engine, table, key, "1m")  # type: ignore[arg-type]
    expected = pd.DatetimeIndex(pd.to_datetime(ws.feed["t"], unit="ms", utc=True))
    assert list(stored.index) == list(expected) and len(expected) == 40
    assert stored["close"].tolist() == pytest.approx(ws.feed["close"].tolist())  # final values, not updates
    assert result["written"][coin] == 40 and result["reconnects"] == 1
    return ws


def test_stream_command_refuses_the_file_source(monkeypatch, capsys) -> None:
    from regime_tasks.cli import main
    from regime_tasks.runtime import reset_runtime

    monkeypatch.setenv("REGIME_SOURCE", "file")
    reset_runtime()
    try:
        assert main(["stream", "--seconds", "0"]) == 2
    finally:
        reset_runtime()
    assert "REGIME_SOURCE=live" in capsys.readouterr().err
