"""Binance spot klines (``GET /api/v3/klines``): validated closed bars and resumable, paced backfills.

Facts respected (tests/data/api_samples): at most 1,000 klines per request, weight 2 per request, the used
weight of the current minute in ``X-MBX-USED-WEIGHT-1M``, 429 then 418 with ``Retry-After``; rows are
``[open_ms, "o", "h", "l", "c", "v", close_ms, …]`` with string prices, and a request reaching "now" returns
the still-open kline last (dropped here).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.config import Settings, get_settings
from regime_tasks.core.bars import timeframe_delta
from regime_tasks.core.timeframes import parse_ts as _utc
from regime_tasks.core.timeframes import to_ms as _ms
from regime_tasks.errors import InvalidResponseError
from regime_tasks.logs import kv
from regime_tasks.sources.common import validate_response_bars
from regime_tasks.sources.http import HttpClient

log = logging.getLogger(__name__)
SOURCE = "binance"
MAX_LIMIT = 1000
INTERVALS = {"1m", "5m", "15m", "1h", "4h", "1d"}


def parse_klines(rows: Any, *, symbol: str, interval: str) -> pd.DataFrame:
    """Binance kline rows → bar frame (CONTRACTS §1) plus ``close_ms``; raises InvalidResponseError."""
    series = f"{symbol}:{interval}"
    if not isinstance(rows, list):
        raise InvalidResponseError(
            f"expected a list of klines, got {type(rows).__name__}", source=SOURCE, series=series
        )
    if not rows:
        return pd.DataFrame(
            columns=["open", "high", "low", "close", "volume", "close_ms"],
            index=pd.DatetimeIndex([], tz="UTC", name="timestamp"),
        )
    try:
        if any(not isinstance(r, list) or len(r) < 7 for r in rows):
            raise ValueError("each kline needs at least 7 fields")
        # column by column: numpy parses the price strings in C; no per-row Python objects are built
        open_ms = np.array([r[0] for r in rows], dtype=np.int64)
        values = np.column_stack([np.array([r[k] for r in rows], dtype=np.float64) for k in range(1, 6)])
        close_ms = np.array([r[6] for r in rows], dtype=np.int64)
    except (ValueError, TypeError, IndexError) as exc:
        bad = next((i for i, r in enumerate(rows) if not _row_ok(r)), None)
        when = None if bad is None or not isinstance(rows[bad], list) or not rows[bad] else rows[bad][0]
        raise InvalidResponseError(
            f"malformed kline: {exc}", source=SOURCE, series=series, timestamp=when, field="kline"
        ) from exc
    frame = pd.DataFrame(
        values,
        columns=["open", "high", "low", "close", "volume"],
        index=pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True), name="timestamp"),
    )
    frame["close_ms"] = close_ms
    return validate_response_bars(frame, source=SOURCE, series=series, interval=interval)


def _row_ok(r: Any) -> bool:
    try:
        int(r[0])
        [float(x) for x in r[1:6]]
        int(r[6])
        return True
    except (TypeError, ValueError, IndexError):
        return False


class BinanceClient:
    """Klines for one deployment; ``now`` and ``sleep`` are injectable for tests."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        http: HttpClient | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or get_settings()
        self.http = http or HttpClient(SOURCE, self.settings.binance_base_url, self.settings, sleep=sleep)
        self.now = now
        self.sleep = sleep

    def _pace(self) -> None:
        used = self.http.last_headers.get("x-mbx-used-weight-1m")
        if used is None or not used.isdigit():
            return
        limit = self.settings.binance_weight_limit_1m
        if int(used) >= self.settings.binance_weight_pace_frac * limit:
            now = self.now()
            wait = 60.0 - now.second - now.microsecond / 1e6 + 0.5  # the weight window resets each minute
            log.info("pacing requests %s", kv(source=SOURCE, used_weight=used, limit=limit, wait_secs=round(wait, 1)))
            self.http.stats.waits_secs.append(wait)
            self.sleep(wait)

    def klines(
        self, symbol: str, interval: str, start: pd.Timestamp, end: pd.Timestamp | None = None, limit: int = MAX_LIMIT
    ) -> pd.DataFrame:
        """Up to ``limit`` closed klines with open time ≥ ``start`` (and ≤ ``end``); the open one is dropped."""
        if interval not in INTERVALS:
            raise InvalidResponseError(f"unsupported interval {interval!r}", source=SOURCE, series=symbol)
        params: dict[str, Any] = {
            "symbol": symbol,
            "interval": interval,
            "startTime": _ms(start),
            "limit": min(limit, MAX_LIMIT),
        }
        if end is not None:
            params["endTime"] = _ms(end)
        self._pace()
        rows = self.http.request("GET", "/api/v3/klines", params=params, what=f"klines {symbol} {interval}")
        frame = parse_klines(rows, symbol=symbol, interval=interval)
        now_ms = int(self.now().timestamp() * 1000)
        still_open = frame["close_ms"].to_numpy() >= now_ms
        if still_open.any():
            frame = frame[~still_open]
        return frame.drop(columns="close_ms")

    def backfill(
        self,
        symbol: str,
        interval: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
        *,
        sink: Callable[[pd.DataFrame], None],
        resume_from: pd.Timestamp | None = None,
    ) -> int:
        """Page through [start, end] 1,000 klines at a time, handing each validated page to ``sink``.

        ``resume_from`` (the last stored bar) makes a restarted backfill continue after it. Returns bars sunk.
        """
        step = timeframe_delta(interval)
        start, end = _utc(start), _utc(end)
        cursor = start if resume_from is None else max(start, _utc(resume_from) + step)
        total = 0
        while cursor <= end:
            page = self.klines(symbol, interval, cursor, end)
            if page.empty:
                break
            page = page[page.index >= cursor]
            if page.empty:
                break
            sink(page)
            total += len(page)
            cursor = page.index[-1] + step
            if len(page) < MAX_LIMIT - 1:
                break  # a short page: the range end or the present was reached (the open kline may be dropped)
        log.info("backfill done %s", kv(source=SOURCE, symbol=symbol, interval=interval, bars=total))
        return total
