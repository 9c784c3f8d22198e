"""Hyperliquid: REST ``POST /info`` ``candleSnapshot`` and the websocket ``candle`` subscription.

Facts respected (tests/data/api_samples): candles are ``{t, T, s, i, o, c, h, l, v, n}`` with string prices;
only the latest 5,000 candles per coin and interval exist (older requests are logged, not silently empty); the
websocket closes after 60 s without traffic (we ping every ``REGIME_HYPERLIQUID_PING_INTERVAL_SECS``); a candle
has no closed flag — it is closed once a later candle of the same coin arrives or its end time ``T`` has passed
(D5). After every reconnect the REST endpoint fills the gap, so no minute is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.config import Settings, get_settings
from regime_tasks.core.bars import timeframe_delta
from regime_tasks.core.timeframes import parse_ts as _utc
from regime_tasks.core.timeframes import to_ms as _ms
from regime_tasks.errors import InvalidResponseError, SourceError
from regime_tasks.logs import kv
from regime_tasks.sources.common import validate_response_bars
from regime_tasks.sources.http import HttpClient

log = logging.getLogger(__name__)
SOURCE = "hyperliquid"
MAX_CANDLES = 5_000


def parse_candles(items: Any, *, coin: str, interval: str) -> pd.DataFrame:
    """Hyperliquid candle objects → bar frame with ``close_ms``; raises InvalidResponseError."""
    series = f"{coin}:{interval}"
    if not isinstance(items, list):
        raise InvalidResponseError(
            f"expected a list of candles, got {type(items).__name__}", source=SOURCE, series=series
        )
    if not items:
        return pd.DataFrame(
            columns=["open", "high", "low", "close", "volume", "close_ms"],
            index=pd.DatetimeIndex([], tz="UTC", name="timestamp"),
        )
    try:
        t = np.array([c["t"] for c in items], dtype=np.int64)
        close_ms = np.array([c["T"] for c in items], dtype=np.int64)
        values = np.array([[c["o"], c["h"], c["l"], c["c"], c["v"]] for c in items], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponseError(
            f"malformed candle: {exc!r}", source=SOURCE, series=series, field=str(exc).strip("'")
        ) from exc
    frame = pd.DataFrame(
        values,
        columns=["open", "high", "low", "close", "volume"],
        index=pd.DatetimeIndex(pd.to_datetime(t, unit="ms", utc=True), name="timestamp"),
    )
    frame["close_ms"] = close_ms
    return validate_response_bars(frame, source=SOURCE, series=series, interval=interval)


class HyperliquidClient:
    """REST candles; ``now``/``sleep`` injectable for tests."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        http: HttpClient | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or get_settings()
        self.http = http or HttpClient(SOURCE, self.settings.hyperliquid_base_url, self.settings, sleep=sleep)
        self.now = now

    def candle_snapshot(
        self, coin: str, interval: str, start: pd.Timestamp, end: pd.Timestamp | None = None
    ) -> pd.DataFrame:
        """Closed candles with open time in [start, end]; pages of up to 5,000 candles."""
        step = timeframe_delta(interval)
        now = _utc(self.now())
        end_ts = _utc(end) if end is not None else now
        start = _utc(start)
        oldest = now - step * MAX_CANDLES
        if pd.Timestamp(start) < oldest:
            log.warning(
                "older candles do not exist on Hyperliquid %s",
                kv(
                    source=SOURCE,
                    coin=coin,
                    interval=interval,
                    requested_from=start,
                    oldest_available=oldest.floor(step),
                ),
            )
        frames, cursor = [], start
        while cursor <= end_ts:
            body = {
                "type": "candleSnapshot",
                "req": {"coin": coin, "interval": interval, "startTime": _ms(cursor), "endTime": _ms(end_ts)},
            }
            items = self.http.request("POST", "/info", json=body, what=f"candleSnapshot {coin} {interval}")
            frame = parse_candles(items, coin=coin, interval=interval)
            frame = frame[frame.index >= cursor]
            if frame.empty:
                break
            frames.append(frame)
            cursor = frame.index[-1] + step
            if len(items) < MAX_CANDLES:
                break
        if not frames:
            return parse_candles([], coin=coin, interval=interval).drop(columns="close_ms")
        out = pd.concat(frames)
        out = out[~out.index.duplicated(keep="last")]
        out = out[out["close_ms"].to_numpy() < _ms(now)]  # the open candle is not a bar yet
        return out.drop(columns="close_ms")


class HyperliquidCandleStream:
    """Live 1m candles of several coins over the websocket, delivered once closed, with REST catch-up.

    Run it in a thread (``start()`` / ``stop()``). ``on_closed_bar(coin, frame)`` receives one-row (or, after a
    reconnect, many-row) bar frames in time order and never the same bar twice.
    """

    def __init__(
        self,
        coins: list[str],
        on_closed_bar: Callable[[str, pd.DataFrame], None],
        *,
        settings: Settings | None = None,
        interval: str = "1m",
        rest: HyperliquidClient | None = None,
        max_backoff_secs: float = 30.0,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.settings = settings or get_settings()
        self.coins = coins
        self.interval = interval
        self.on_closed_bar = on_closed_bar
        self.rest = rest or HyperliquidClient(self.settings, now=now)
        self.max_backoff_secs = max_backoff_secs
        self.now = now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, dict[str, Any]] = {}  # latest update of the open candle per coin
        self.last_closed: dict[str, pd.Timestamp] = {}
        self.reconnects = 0
        self.connected = threading.Event()

    # --- lifecycle
    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="hyperliquid-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout_secs: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_secs)

    def run(self) -> None:
        """Connect, subscribe, read; on any drop, back off, reconnect and catch up over REST."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        backoff = 0.5
        first = True
        while not self._stop.is_set():
            try:
                with connect(self.settings.hyperliquid_ws_url, open_timeout=5, close_timeout=1) as ws:
                    if not first:
                        self.reconnects += 1
                    for coin in self.coins:
                        ws.send(
                            json.dumps(
                                {
                                    "method": "subscribe",
                                    "subscription": {"type": "candle", "coin": coin, "interval": self.interval},
                                }
                            )
                        )
                    self.connected.set()
                    self._catch_up()
                    backoff = 0.5
                    first = False
                    self._read(ws)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                self.connected.clear()
                if self._stop.is_set():
                    break
                log.warning(
                    "websocket dropped, reconnecting %s", kv(source=SOURCE, error=type(exc).__name__, wait_secs=backoff)
                )
                self._stop.wait(backoff)
                backoff = min(self.max_backoff_secs, backoff * 2)
            except SourceError as exc:  # REST catch-up failed after its own retries: try again after a pause
                log.error("catch-up failed %s", kv(source=SOURCE, error=exc))
                self._stop.wait(backoff)
                backoff = min(self.max_backoff_secs, backoff * 2)

    def _read(self, ws: Any) -> None:
        last_ping = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_ping >= self.settings.hyperliquid_ping_interval_secs:
                ws.send(json.dumps({"method": "ping"}))
                last_ping = time.monotonic()
            try:
                raw = ws.recv(timeout=0.2)
            except TimeoutError:
                self._close_by_time()
                continue
            msg = json.loads(raw)
            if msg.get("channel") == "candle":
                self._on_update(msg["data"])
            self._close_by_time()

    # --- candle bookkeeping
    def _on_update(self, candle: dict[str, Any]) -> None:
        coin = candle.get("s")
        if coin not in self.coins:
            return
        pending = self._pending.get(coin)
        if pending is not None and candle["t"] > pending["t"]:
            self._emit(coin, [pending])  # a later candle started: the pending one is closed
        if pending is None or candle["t"] >= pending["t"]:
            self._pending[coin] = candle

    def _close_by_time(self) -> None:
        """A candle whose end time has passed without a later candle is closed (D5). Its last websocket update may
        not be its final one (updates still in flight), so the final values are taken from REST when possible."""
        now_ms = int(self.now().timestamp() * 1000)
        for coin, pending in list(self._pending.items()):
            if pending["T"] >= now_ms:
                continue
            del self._pending[coin]
            open_ts = pd.Timestamp(pending["t"], unit="ms", tz="UTC")
            try:
                final = self.rest.candle_snapshot(coin, self.interval, open_ts, open_ts)
            except SourceError as exc:
                log.warning(
                    "REST confirmation failed, using the last update %s",
                    kv(source=SOURCE, coin=coin, bar=open_ts, error=exc),
                )
                final = None
            if final is not None and not final.empty:
                self._deliver(coin, final)
            else:
                self._emit(coin, [pending])

    def _deliver(self, coin: str, frame: pd.DataFrame) -> None:
        last = self.last_closed.get(coin)
        if last is not None:
            frame = frame[frame.index > last]
        if frame.empty:
            return
        self.on_closed_bar(coin, frame)
        self.last_closed[coin] = frame.index[-1]

    def _emit(self, coin: str, candles: list[dict[str, Any]]) -> None:
        self._deliver(coin, parse_candles(candles, coin=coin, interval=self.interval).drop(columns="close_ms"))

    def _catch_up(self) -> None:
        """REST-fill every minute between the last delivered bar and now (after a (re)connect)."""
        step = timeframe_delta(self.interval)
        for coin in self.coins:
            last = self.last_closed.get(coin)
            if last is None:
                continue
            frame = self.rest.candle_snapshot(coin, self.interval, last + step, pd.Timestamp(self.now()))
            if not frame.empty:
                log.info(
                    "caught up after reconnect %s",
                    kv(source=SOURCE, coin=coin, bars=len(frame), first=frame.index[0], last=frame.index[-1]),
                )
                self.on_closed_bar(coin, frame)
                self.last_closed[coin] = frame.index[-1]
