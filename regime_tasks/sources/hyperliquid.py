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

    def perp_universe(self) -> pd.DataFrame:
        """Every listed perp with its mark price (``metaAndAssetCtxs``, weight 20)."""
        return parse_perp_universe(
            self.http.request("POST", "/info", json={"type": "metaAndAssetCtxs"}, what="metaAndAssetCtxs")
        )

    def spot_universe(self) -> pd.DataFrame:
        """Every USDC spot pair with mark price and circulating supply (``spotMetaAndAssetCtxs``, weight 20)."""
        body = self.http.request("POST", "/info", json={"type": "spotMetaAndAssetCtxs"}, what="spotMetaAndAssetCtxs")
        return parse_spot_universe(body)

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


# --- universe: info ``metaAndAssetCtxs`` (perps) and ``spotMetaAndAssetCtxs`` (spot tokens) -----------------
# Shapes (Hyperliquid info endpoint docs; samples in tests/sources/samples/):
#   metaAndAssetCtxs     → [{"universe": [{"name", "szDecimals", "maxLeverage", "isDelisted"?, …}, …]},
#                           [{"markPx", "prevDayPx", "dayNtlVlm", "funding", "openInterest", …}, …]]   (same order)
#   spotMetaAndAssetCtxs → [{"universe": [{"name", "tokens": [base, quote], "index", "isCanonical"}, …],
#                            "tokens": [{"name", "index", "szDecimals", "weiDecimals", …}, …]},
#                           [{"coin", "markPx", "midPx", "prevDayPx", "circulatingSupply", "totalSupply", …}, …]]
# A spot pair's candles are asked for with its pair name (``PURR/USDC`` or ``@107``), not the token's name.
UNIVERSE_COLUMNS = ["symbol", "coin", "market", "mark_px", "circulating_supply", "delisted"]


def _price(value: Any, *, series: str, field: str) -> float | None:
    """A decimal string of the info endpoint → float (``None`` stays None: a pair without a price yet)."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidResponseError(
            f"{field} is not a number: {value!r}", source=SOURCE, series=series, field=field
        ) from exc
    if not np.isfinite(x) or x < 0:
        raise InvalidResponseError(
            f"{field} must be finite and ≥ 0, got {value!r}", source=SOURCE, series=series, field=field
        )
    return x


def _pair(body: Any, what: str) -> tuple[dict[str, Any], list[Any]]:
    if not (isinstance(body, list) and len(body) == 2 and isinstance(body[0], dict) and isinstance(body[1], list)):
        raise InvalidResponseError(
            f"expected [meta, assetCtxs], got {type(body).__name__} of length "
            f"{len(body) if isinstance(body, list) else '-'}",
            source=SOURCE,
            series=what,
        )
    meta, ctxs = body
    universe = meta.get("universe")
    if not isinstance(universe, list) or len(universe) != len(ctxs):
        raise InvalidResponseError(
            f"meta.universe ({len(universe) if isinstance(universe, list) else 'missing'}) and assetCtxs "
            f"({len(ctxs)}) must pair one to one",
            source=SOURCE,
            series=what,
            field="universe",
        )
    return meta, ctxs


def parse_perp_universe(body: Any) -> pd.DataFrame:
    """``metaAndAssetCtxs`` → one row per perp: symbol (= coin), mark price, delisted flag (no supply here)."""
    what = "metaAndAssetCtxs"
    meta, ctxs = _pair(body, what)
    rows = []
    for asset, ctx in zip(meta["universe"], ctxs, strict=True):
        if not isinstance(asset, dict) or not isinstance(asset.get("name"), str) or not isinstance(ctx, dict):
            raise InvalidResponseError(f"malformed universe entry {asset!r}", source=SOURCE, series=what, field="name")
        name = asset["name"]
        rows.append(
            {
                "symbol": name,
                "coin": name,
                "market": "perp",
                "mark_px": _price(ctx.get("markPx"), series=f"{what}:{name}", field="markPx"),
                "circulating_supply": None,
                "delisted": bool(asset.get("isDelisted", False)),
            }
        )
    return pd.DataFrame(rows, columns=UNIVERSE_COLUMNS)


def parse_spot_universe(body: Any, *, quote: str = "USDC") -> pd.DataFrame:
    """``spotMetaAndAssetCtxs`` → one row per spot token quoted in ``quote``: token name, the pair name used by
    ``candleSnapshot``, mark price and circulating supply (in tokens)."""
    what = "spotMetaAndAssetCtxs"
    meta, ctxs = _pair(body, what)
    tokens = meta.get("tokens")
    if not isinstance(tokens, list):
        raise InvalidResponseError("meta.tokens missing", source=SOURCE, series=what, field="tokens")
    try:
        names = {int(t["index"]): str(t["name"]) for t in tokens}
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidResponseError(f"malformed token: {exc!r}", source=SOURCE, series=what, field="tokens") from exc
    by_coin = {c.get("coin"): c for c in ctxs if isinstance(c, dict)}
    rows = []
    for pair in meta["universe"]:
        try:
            base, quote_idx = (int(i) for i in pair["tokens"])
            pair_name = str(pair["name"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponseError(
                f"malformed spot pair {pair!r}", source=SOURCE, series=what, field="universe"
            ) from exc
        if names.get(quote_idx) != quote or base not in names:
            continue
        ctx = by_coin.get(pair_name)
        if ctx is None:
            raise InvalidResponseError(f"no assetCtx for pair {pair_name}", source=SOURCE, series=what, field="coin")
        series = f"{what}:{pair_name}"
        rows.append(
            {
                "symbol": names[base],
                "coin": pair_name,
                "market": "spot",
                "mark_px": _price(ctx.get("markPx"), series=series, field="markPx"),
                "circulating_supply": _price(ctx.get("circulatingSupply"), series=series, field="circulatingSupply"),
                "delisted": False,
            }
        )
    frame = pd.DataFrame(rows, columns=UNIVERSE_COLUMNS)
    # a token with several USDC pairs: the canonical/first listed one (the universe is ordered by index)
    return frame.drop_duplicates("symbol", keep="first").reset_index(drop=True)


def candle_weight(items: int) -> int:
    """Weight of one ``candleSnapshot`` request (Hyperliquid rate limits: info requests weigh 20, candleSnapshot
    1 more per 60 candles returned)."""
    return INFO_WEIGHT + -(-max(items, 0) // 60)


INFO_WEIGHT = 20
WEIGHT_LIMIT_PER_MIN = 1_200  # per IP, all REST requests together


class WeightBudget:
    """The share of Hyperliquid's per-IP REST weight (1,200 a minute) this process may spend, over a sliding
    minute. A tick waits a little and defers the members that do not fit to its next run (each resumes from its
    own last stored bar, so no closed bar is skipped); the bootstrap waits as long as it takes (it paces itself
    instead of being throttled)."""

    def __init__(
        self,
        per_min: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_min = per_min
        self.clock = clock
        self.sleep = sleep
        self.spent: list[tuple[float, int]] = []  # (when, weight)
        self.waited_secs = 0.0

    def used(self) -> int:
        cutoff = self.clock() - 60.0
        self.spent = [(t, w) for t, w in self.spent if t > cutoff]
        return sum(w for _, w in self.spent)

    def take(self, weight: int, *, wait_secs: float = 0.0) -> bool:
        """Spend ``weight`` if it fits the sliding minute, waiting at most ``wait_secs`` for room (``inf``: as long
        as it takes); False (nothing spent) when it does not fit in time."""
        weight = min(weight, self.per_min)  # one request heavier than the whole budget still goes, alone
        while self.used() + weight > self.per_min:
            pause = max(0.05, self.spent[0][0] + 60.0 - self.clock())
            if pause > wait_secs:
                return False
            wait_secs -= pause
            self.waited_secs += pause
            self.sleep(pause)
        self.spent.append((self.clock(), weight))
        return True
