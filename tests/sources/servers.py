"""Local stand-ins for Binance, Hyperliquid and CoinGecko on 127.0.0.1, in the venues' real formats.

Candles are real (tests/data/real; the lowcap universe's from the bundle, regime_tasks/data/lowcaps).
Where the bundle lacks a series the fixture **relabels** a real one and says
so: Binance 1m klines for BTC/ETH/SOL/BNB are Hyperliquid perp 1m candles of the same coins (2025-07-21 → 26)
served in Binance's 12-field format; Binance 1h/1d are Binance spot 2024–26. CoinGecko answers with the recorded
2024-05-23 ``/global`` body (percentages overridable).

Usage (see ``tests/sources/conftest.py`` fixtures ``venues`` and ``hl_ws``)::

    venues.now = pd.Timestamp("2025-07-26T00:00:30Z")      # the venue's clock: the open candle is the last one
    venues.faults.append(Fault(status=429, retry_after="1")) # next matching request fails this way
    settings = venues.settings()                             # REGIME settings pointing at this server

The lowcap universe (issue 15): ``metaAndAssetCtxs`` lists the majors and the bundle's perps,
``spotMetaAndAssetCtxs`` the bundle's spot tokens (pairs named ``@<n>``, supplies from regime_tasks/data/supplies.csv),
``/api/v3/coins/markets`` answers with the snapshot's rows of the asked ids, paged; shapes as in
tests/sources/samples/. ``delist[coin] = ts``: the coin's candles stop at ``ts`` and the meta says ``isDelisted``
from then on. ``hl_weight`` adds up the weight Hyperliquid would charge (20 a request, 1 more per 60 candles).

Fault kinds: ``status`` (+ ``retry_after``), ``delay_secs`` (answer late → client timeout), ``html`` (an HTML
error page with 200), ``truncated`` (JSON cut in half), ``mutate`` = ``high_lt_low`` | ``duplicate`` |
``out_of_order`` (one bad kline in an otherwise valid page). Each fault is used once, by the first request
whose path contains ``path``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections import deque
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd

from regime_tasks.config import load_settings
from tests.conftest import API_SAMPLES, REAL_DATA

HL_SNAPSHOT = REAL_DATA / "hyperliquid_snapshot_2025-07-26" / "perp"
BUNDLE = Path(__file__).resolve().parents[2] / "regime_tasks" / "data"
BINANCE_2024 = REAL_DATA / "binance_spot_2024-2026" / "majors"
INTERVAL_MS = {"1m": 60_000, "1h": 3_600_000, "1d": 86_400_000}


@cache
def candles(venue: str, symbol: str, interval: str) -> pd.DataFrame:
    """Real candles for (venue, symbol, interval) with int64 ``t`` (open ms) — relabelled where noted above."""
    lowcap = BUNDLE / "lowcaps" / interval / f"{symbol}.csv{'' if interval == '1d' else '.gz'}"
    if venue == "binance" and interval in ("1h", "1d"):
        path = BINANCE_2024 / interval / f"{symbol}.csv{'.gz' if interval == '1h' else ''}"
    elif venue == "hyperliquid" and lowcap.exists():
        path = lowcap
    else:  # Hyperliquid perp, also serving Binance 1m (relabelled)
        coin = symbol.removesuffix("USDT")
        path = HL_SNAPSHOT / interval / f"{coin}.csv{'' if interval == '1d' else '.gz'}"
    frame = pd.read_csv(path)
    frame["t"] = (pd.to_datetime(frame["timestamp"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        milliseconds=1
    )
    return frame.reset_index(drop=True)


@dataclasses.dataclass
class Fault:
    status: int | None = None
    retry_after: str | None = None
    delay_secs: float | None = None
    html: bool = False
    truncated: bool = False
    mutate: str | None = None
    path: str = ""


def _fmt(x: float) -> str:
    return f"{x:.8f}"


class VenueServer:
    """The HTTP server (threaded) with a clock, a fault queue and a request log."""

    def __init__(self) -> None:
        self.now = pd.Timestamp("2025-07-26T05:00:30Z")
        self.faults: deque[Fault] = deque()
        self.requests: list[tuple[str, str]] = []
        self.used_weight = 0
        self.global_pct = None  # override {"btc": …, "usdt": …}
        tokens = pd.read_csv(BUNDLE / "tokens.csv")
        self.perps = ["BTC", "ETH", "SOL", "BNB", "HYPE", *tokens.loc[tokens["market"] == "perp", "symbol"]]
        self.spot = list(tokens.loc[tokens["market"] == "spot", "symbol"])
        self.spot_pairs = {f"@{200 + i}": sym for i, sym in enumerate(self.spot)}
        self.supplies = pd.read_csv(BUNDLE / "supplies.csv").set_index("coingecko_id")
        self.tokens = tokens.set_index("symbol")
        self.delist: dict[str, pd.Timestamp] = {}
        self.hl_weight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.handle(self, "GET", None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                server.handle(self, "POST", json.loads(self.rfile.read(length) or b"{}"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self, **overrides: Any):
        return load_settings(
            binance_base_url=self.url,
            hyperliquid_base_url=self.url,
            coingecko_base_url=self.url,
            http_timeout_secs=0.5,
            retry_backoff_secs=(5.0, 15.0, 60.0),
            **overrides,
        )

    def start(self) -> VenueServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- dispatch
    def _take_fault(self, path: str) -> Fault | None:
        for f in list(self.faults):
            if f.path in path:
                self.faults.remove(f)
                return f
        return None

    def handle(self, h: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        url = urlparse(h.path)
        self.requests.append((method, h.path))
        fault = self._take_fault(url.path)
        if fault and fault.delay_secs:
            time.sleep(fault.delay_secs)
        if fault and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            payload = {"code": -1003, "msg": "Too many requests"} if fault.status == 429 else {"msg": "error"}
            return self._send(h, fault.status, json.dumps(payload).encode(), headers)
        if fault and fault.html:
            page = b"<html><head><title>502 Bad Gateway</title></head><body>cloudfront</body></html>"
            return self._send(h, 200, page, {"Content-Type": "text/html"})
        if url.path == "/api/v3/klines":
            data = self.klines({k: v[0] for k, v in parse_qs(url.query).items()}, fault)
            self.used_weight += 2
            return self._send(h, 200, data, {"X-MBX-USED-WEIGHT-1M": str(self.used_weight)}, fault)
        if url.path == "/info" and method == "POST" and body.get("type") == "candleSnapshot":
            return self._send(h, 200, self.snapshot(body["req"], fault), {}, fault)
        if url.path == "/info" and method == "POST" and body.get("type") == "metaAndAssetCtxs":
            self.hl_weight += 20
            return self._send(h, 200, self.perp_meta(), {}, fault)
        if url.path == "/info" and method == "POST" and body.get("type") == "spotMetaAndAssetCtxs":
            self.hl_weight += 20
            return self._send(h, 200, self.spot_meta(), {}, fault)
        if url.path == "/api/v3/coins/markets":
            return self._send(h, 200, self.markets({k: v[0] for k, v in parse_qs(url.query).items()}), {}, fault)
        if url.path == "/api/v3/global":
            recorded = json.loads((API_SAMPLES / "coingecko_api_v3_global_recorded_2024-05-23.json").read_text())
            doc = recorded["response"]
            if self.global_pct:
                doc["data"]["market_cap_percentage"].update(self.global_pct)
            return self._send(h, 200, json.dumps(doc).encode(), {}, fault)
        return self._send(h, 404, b'{"msg":"not found"}', {})

    def _send(
        self, h: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str], fault: Fault | None = None
    ) -> None:
        if fault and fault.truncated:
            data = data[: len(data) // 2]
        h.send_response(status)
        h.send_header("Content-Type", headers.pop("Content-Type", "application/json;charset=UTF-8"))
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            h.wfile.write(data)

    # --- venues
    def _window(
        self, venue: str, symbol: str, interval: str, start_ms: int, end_ms: int | None, limit: int
    ) -> pd.DataFrame:
        frame = candles(venue, symbol, interval)
        now_ms = int(self.now.timestamp() * 1000)
        t = frame["t"].to_numpy()
        mask = (t >= start_ms) & (t <= now_ms)
        if end_ms is not None:
            mask &= t <= end_ms
        return frame[mask].head(limit)

    def klines(self, q: dict[str, str], fault: Fault | None) -> bytes:
        interval = q["interval"]
        limit = min(int(q.get("limit", 500)), 1000)
        win = self._window(
            "binance",
            q["symbol"],
            interval,
            int(q.get("startTime", 0)),
            int(q["endTime"]) if "endTime" in q else None,
            limit,
        )
        step = INTERVAL_MS[interval]
        rows = [
            [
                int(r.t),
                _fmt(r.open),
                _fmt(r.high),
                _fmt(r.low),
                _fmt(r.close),
                _fmt(r.volume),
                int(r.t) + step - 1,
                _fmt(r.close * r.volume),
                100,
                _fmt(r.volume / 2),
                _fmt(r.close * r.volume / 2),
                "0",
            ]
            for r in win.itertuples()
        ]
        if fault and fault.mutate and len(rows) > 3:
            k = len(rows) // 2
            if fault.mutate == "high_lt_low":
                rows[k][2] = _fmt(float(rows[k][3]) * 0.5)
            elif fault.mutate == "duplicate":
                rows.insert(k, list(rows[k]))
            elif fault.mutate == "out_of_order":
                rows[k], rows[k + 1] = rows[k + 1], rows[k]
        return json.dumps(rows).encode()

    def snapshot(self, req: dict[str, Any], fault: Fault | None) -> bytes:
        interval = req["interval"]
        symbol = self.spot_pairs.get(req["coin"], req["coin"])
        end_ms = int(req["endTime"])
        if symbol in self.delist:
            end_ms = min(end_ms, int(self.delist[symbol].timestamp() * 1000) - 1)
        win = self._window("hyperliquid", symbol, interval, int(req["startTime"]), end_ms, 5000)
        self.hl_weight += 20 + -(-len(win) // 60)
        return json.dumps([hl_candle(req["coin"], interval, r) for r in win.itertuples()]).encode()

    def _mark(self, symbol: str) -> str:
        """The last 1d close at or before the clock (a mark price of the right size)."""
        frame = candles("hyperliquid", symbol, "1d")
        past = frame[frame["t"] <= int(self.now.timestamp() * 1000)]
        return str(float(past["close"].iloc[-1] if not past.empty else frame["close"].iloc[0]))

    def perp_meta(self) -> bytes:
        universe, ctxs = [], []
        for name in self.perps:
            asset: dict[str, Any] = {"name": name, "szDecimals": 2, "maxLeverage": 5}
            if name in self.delist and self.now >= self.delist[name]:
                asset["isDelisted"] = True
            universe.append(asset)
            mark = self._mark(name)
            ctxs.append(
                {
                    "dayNtlVlm": "1000.0",
                    "funding": "0.0000125",
                    "markPx": mark,
                    "midPx": mark,
                    "openInterest": "10.0",
                    "oraclePx": mark,
                    "premium": "0.0",
                    "prevDayPx": mark,
                }
            )
        return json.dumps([{"universe": universe}, ctxs]).encode()

    def spot_meta(self) -> bytes:
        tokens = [{"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0, "isCanonical": True}]
        universe, ctxs = [], []
        for pair, sym in self.spot_pairs.items():
            index = len(tokens)
            tokens.append({"name": sym, "szDecimals": 2, "weiDecimals": 8, "index": index, "isCanonical": False})
            universe.append({"tokens": [index, 0], "name": pair, "index": int(pair[1:]), "isCanonical": False})
            row = float(self.tokens.loc[sym, "circulating_supply"])
            mark = self._mark(sym)
            ctxs.append(
                {
                    "prevDayPx": mark,
                    "dayNtlVlm": "1000.0",
                    "markPx": mark,
                    "midPx": mark,
                    "circulatingSupply": str(row),
                    "coin": pair,
                    "totalSupply": str(row),
                    "dayBaseVlm": "10.0",
                }
            )
        return json.dumps([{"universe": universe, "tokens": tokens}, ctxs]).encode()

    def markets(self, q: dict[str, str]) -> bytes:
        ids = sorted(set(q.get("ids", "").split(",")) & set(self.supplies.index))
        per_page, page = int(q.get("per_page", 100)), int(q.get("page", 1))
        rows = []
        for cid in ids[(page - 1) * per_page : page * per_page]:
            r = self.supplies.loc[cid]
            rows.append(
                {
                    "id": cid,
                    "symbol": r["symbol"],
                    "name": r["name"],
                    "image": None,
                    "current_price": float(r["price_usd"]),
                    "market_cap": float(r["market_cap_usd"]),
                    "market_cap_rank": None,
                    "fully_diluted_valuation": None,
                    "total_volume": None,
                    "circulating_supply": float(r["circulating_supply"]),
                    "total_supply": None,
                    "max_supply": None,
                    "roi": None,
                    "last_updated": r["supply_as_of"],
                }
            )
        return json.dumps(rows).encode()


def hl_candle(coin: str, interval: str, r: Any, *, partial: float = 1.0) -> dict[str, Any]:
    """A Hyperliquid candle object (recorded field set t, T, s, i, o, c, h, l, v, n). ``partial`` < 1 gives an
    intermediate update of the open candle (close between open and the final close, part of the volume)."""
    close = r.open + (r.close - r.open) * partial
    return {
        "t": int(r.t),
        "T": int(r.t) + INTERVAL_MS[interval] - 1,
        "s": coin,
        "i": interval,
        "o": str(r.open),
        "c": str(close),
        "h": str(max(r.high if partial == 1.0 else max(r.open, close), r.open, close)),
        "l": str(min(r.low if partial == 1.0 else min(r.open, close), r.open, close)),
        "v": str(r.volume * partial),
        "n": 10,
    }


class HyperliquidWsServer:
    """Speaks Hyperliquid's websocket candle protocol, streaming real 1m candles on a simulated clock.

    Each minute's candle is sent twice (an intermediate update, then the final values). The first connection is
    dropped after ``drop_after`` candles and ``skip`` minutes are never sent over the websocket (the outage);
    the client must fetch them from the REST server, whose clock this server advances. After the feed the
    connection stays open until ``stop()``: one outage, whatever the client's speed.
    """

    def __init__(
        self,
        venue: VenueServer,
        coin: str,
        start: pd.Timestamp,
        minutes: int,
        *,
        drop_after: int,
        skip: int,
        extra_coins: tuple[str, ...] = (),
    ) -> None:
        from websockets.sync.server import serve

        self.venue = venue
        self.coin = coin
        frame = candles("hyperliquid", coin, "1m")
        t0 = int(start.timestamp() * 1000)
        self.feed = frame[frame["t"] >= t0].head(minutes).reset_index(drop=True)
        # more subscriptions on the same connection (lowcap members): their candles of the feed's minutes, sent
        # after the first coin's; a spot pair (``@<n>``) streams its token's candles
        self.extra: dict[str, dict[int, Any]] = {}
        for extra in extra_coins:
            rows = candles("hyperliquid", venue.spot_pairs.get(extra, extra), "1m")
            rows = rows[rows["t"].isin(self.feed["t"])]
            self.extra[extra] = {int(r.t): r for r in rows.itertuples()}
        self.drop_after = drop_after
        self.skip = skip
        self.position = 0
        self.connections = 0
        self.subscriptions: list[dict[str, Any]] = []
        self.clock = pd.Timestamp(self.feed["t"].iloc[0], unit="ms", tz="UTC")
        self.finished = threading.Event()
        self._closing = threading.Event()
        self.server = serve(self._handler, "127.0.0.1", 0)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def now(self):
        return self.clock.to_pydatetime()

    def _set_clock(self, ms: int) -> None:
        self.clock = pd.Timestamp(ms, unit="ms", tz="UTC")
        self.venue.now = self.clock

    def start(self) -> HyperliquidWsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.server.shutdown()

    def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.connections += 1
        first_connection = self.connections == 1
        for _ in range(1 + len(self.extra)):
            msg = json.loads(ws.recv(timeout=5))
            self.subscriptions.append(msg)
            ack = {
                "channel": "subscriptionResponse",
                "data": {
                    "method": "subscribe",
                    "subscription": {"type": "candle", "interval": "1m", "coin": msg["subscription"]["coin"]},
                },
            }
            ws.send(json.dumps(ack))
        sent = 0
        while self.position < len(self.feed):
            r = next(self.feed.iloc[[self.position]].itertuples())
            # the minute opens: clock at t + 1 s, an intermediate update; then clock at t + 59 s, final values
            self._set_clock(int(r.t) + 1_000)
            ws.send(json.dumps({"channel": "candle", "data": hl_candle(self.coin, "1m", r, partial=0.5)}))
            self._set_clock(int(r.t) + 59_000)
            ws.send(json.dumps({"channel": "candle", "data": hl_candle(self.coin, "1m", r)}))
            for extra, rows in self.extra.items():
                if int(r.t) in rows:
                    ws.send(json.dumps({"channel": "candle", "data": hl_candle(extra, "1m", rows[int(r.t)])}))
            self.position += 1
            sent += 1
            time.sleep(0.005)
            if first_connection and sent == self.drop_after:
                # outage: these minutes pass while the client is disconnected
                self.position += self.skip
                last = self.feed["t"].iloc[min(self.position, len(self.feed) - 1)]
                self._set_clock(int(last) + 1_000)
                ws.close()
                return
            try:
                incoming = ws.recv(timeout=0)
                if json.loads(incoming).get("method") == "ping":
                    ws.send(json.dumps({"channel": "pong"}))
            except TimeoutError:
                pass
        # the feed is over: let the last candle close by time, and keep the connection open (answering pings)
        # until the test stops the server. Hanging up here would be a second outage the client rightly counts as
        # a reconnect whenever it has not stored the last minute yet (on a loaded machine it had not, and the stream
        # test failed).
        self._set_clock(int(self.feed["t"].iloc[-1]) + 61_000)
        self.finished.set()
        while not self._closing.is_set():
            try:
                incoming = ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if json.loads(incoming).get("method") == "ping":
                ws.send(json.dumps({"channel": "pong"}))
