"""Venue clients against the local servers: paging, open candles, faults, websocket outages."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pandas as pd
import pytest

from regime_tasks.core.bars import validate_bars
from regime_tasks.errors import InvalidResponseError, RateLimitedError, SourceUnavailableError
from regime_tasks.sources.binance import BinanceClient
from regime_tasks.sources.coingecko import CoinGeckoClient
from regime_tasks.sources.http import HttpClient
from regime_tasks.sources.hyperliquid import HyperliquidCandleStream, HyperliquidClient
from tests.sources.servers import Fault, HyperliquidWsServer, candles

MAJORS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


def binance(venues, sleeps, **settings) -> BinanceClient:
    s = venues.settings(**settings)
    http = HttpClient("binance", s.binance_base_url, s, sleep=sleeps)
    return BinanceClient(s, http=http, now=lambda: venues.now.to_pydatetime(), sleep=sleeps)


def backfill(client: BinanceClient, symbol: str, interval: str, start, end, resume_from=None) -> pd.DataFrame:
    pages: list[pd.DataFrame] = []
    client.backfill(
        symbol, interval, pd.Timestamp(start), pd.Timestamp(end), sink=pages.append, resume_from=resume_from
    )
    return pd.concat(pages) if pages else pd.DataFrame()


@pytest.mark.parametrize("symbol", MAJORS)
def test_backfill_30_days_1h_and_3_days_1m_pages_without_gap_or_duplicate(venues, sleeps, symbol) -> None:
    venues.now = pd.Timestamp("2025-07-26T04:30:20Z")  # inside an open 1m and an open 1h candle
    client = binance(venues, sleeps)

    hourly = backfill(client, symbol, "1h", "2025-06-25T00:00:00Z", "2025-07-26T06:00:00Z")
    minutes = backfill(client, symbol, "1m", "2025-07-22T00:00:00Z", "2025-07-26T06:00:00Z")

    for frame, step, expected_last in ((hourly, "1h", "2025-07-26T03:00:00Z"), (minutes, "1min", None)):
        validate_bars(frame, series=symbol)  # increasing, no duplicate across page boundaries
        assert not frame.index.duplicated().any()
        assert frame.index[-1] + pd.Timedelta(step) <= venues.now  # the open candle was dropped
        if expected_last:
            assert frame.index[-1] == pd.Timestamp(expected_last)
    assert len(hourly) >= 30 * 24 and len(minutes) >= 3 * 1440 - 200  # real HL 1m has a few gaps
    # every real candle of the range arrived (no gap introduced by paging)
    real = candles("binance", symbol, "1h")
    t = pd.to_datetime(real["timestamp"], utc=True)
    expected = real[(t >= "2025-06-25") & (t + pd.Timedelta("1h") <= venues.now)]
    assert len(hourly) == len(expected)
    assert hourly["close"].tolist() == pytest.approx(expected["close"].tolist())


def test_restarted_backfill_resumes_after_the_last_stored_bar(venues, sleeps) -> None:
    venues.now = pd.Timestamp("2025-07-26T00:00:30Z")
    client = binance(venues, sleeps)
    first = backfill(client, "BTCUSDT", "1h", "2025-07-01", "2025-07-10")
    calls_before = len(venues.requests)
    rest = backfill(client, "BTCUSDT", "1h", "2025-07-01", "2025-07-20", resume_from=first.index[-1])
    assert rest.index[0] == first.index[-1] + pd.Timedelta("1h")
    assert len(venues.requests) - calls_before == 1


def test_429_waits_retry_after_and_is_counted(venues, sleeps, caplog) -> None:
    venues.faults.extend(
        [Fault(status=429, retry_after="7", path="klines"), Fault(status=418, retry_after="120", path="klines")]
    )
    client = binance(venues, sleeps)
    with caplog.at_level(logging.WARNING):
        frame = client.klines("ETHUSDT", "1h", pd.Timestamp("2025-07-01"), limit=10)
    assert len(frame) == 10
    assert sleeps == [7.0, 120.0] and client.http.stats.rate_limited == 2
    assert "rate limited" in caplog.text and "status=418" in caplog.text


def test_persistent_rate_limit_raises_rate_limited(venues, sleeps) -> None:
    venues.faults.extend(Fault(status=429, retry_after="1", path="klines") for _ in range(5))
    with pytest.raises(RateLimitedError):
        binance(venues, sleeps).klines("ETHUSDT", "1h", pd.Timestamp("2025-07-01"), limit=10)


def test_500_then_success_backs_off_5s_with_jitter(venues, sleeps) -> None:
    venues.faults.append(Fault(status=500, path="klines"))
    client = binance(venues, sleeps)
    frame = client.klines("SOLUSDT", "1h", pd.Timestamp("2025-07-01"), limit=5)
    assert len(frame) == 5 and len(sleeps) == 1 and 4.0 <= sleeps[0] <= 6.0  # 5 s ± 20 %


def test_timeout_then_success_and_three_failures_give_up(venues, sleeps) -> None:
    venues.faults.append(Fault(delay_secs=0.8, path="klines"))
    client = binance(venues, sleeps)
    assert len(client.klines("BNBUSDT", "1h", pd.Timestamp("2025-07-01"), limit=3)) == 3
    assert 4.0 <= sleeps[0] <= 6.0
    venues.faults.extend(Fault(status=503, path="klines") for _ in range(3))
    with pytest.raises(SourceUnavailableError, match="after 3 attempts"):
        client.klines("BNBUSDT", "1h", pd.Timestamp("2025-07-01"), limit=3)
    assert 12.0 <= sleeps[-1] <= 18.0  # second wait: 15 s ± 20 %


def test_a_call_gives_up_before_a_wait_that_would_pass_its_retry_budget(venues, sleeps) -> None:
    venues.faults.extend(Fault(status=503, path="klines") for _ in range(3))
    client = binance(venues, sleeps, http_retry_budget_secs=10.0)  # 5 s fits, 5 + 15 s does not

    with pytest.raises(SourceUnavailableError, match=r"after 2 attempts .*retry budget 10 s"):
        client.klines("BNBUSDT", "1h", pd.Timestamp("2025-07-01"), limit=3)

    assert len(sleeps) == 1 and sum(sleeps) <= 10.0


def test_a_retry_after_beyond_the_budget_is_not_waited_for(venues, sleeps) -> None:
    venues.faults.append(Fault(status=418, retry_after="3600", path="klines"))  # a Binance IP ban
    client = binance(venues, sleeps)

    with pytest.raises(RateLimitedError, match="Retry-After 3600") as info:
        client.klines("ETHUSDT", "1h", pd.Timestamp("2025-07-01"), limit=10)

    assert sleeps == [] and info.value.retry_after_secs == 3600.0


@pytest.mark.parametrize(
    ("fault", "message", "field"),
    [
        (Fault(html=True, path="klines"), "not JSON", None),
        (Fault(truncated=True, path="klines"), "not JSON", None),
        (Fault(mutate="high_lt_low", path="klines"), "high", "high"),
        (Fault(mutate="duplicate", path="klines"), "duplicate timestamp", "timestamp"),
        (Fault(mutate="out_of_order", path="klines"), "out-of-order", "timestamp"),
    ],
)
def test_invalid_responses_reject_the_whole_page_and_nothing_is_sunk(venues, sleeps, fault, message, field) -> None:
    venues.faults.append(fault)
    client = binance(venues, sleeps)
    sunk: list[pd.DataFrame] = []
    with pytest.raises(InvalidResponseError, match=message) as err:
        client.backfill("BTCUSDT", "1h", pd.Timestamp("2025-07-01"), pd.Timestamp("2025-07-05"), sink=sunk.append)
    assert sunk == [] and err.value.source == "binance"
    if field:
        assert err.value.field == field and err.value.timestamp is not None
        assert "BTCUSDT:1h" in str(err.value)


def test_weight_header_paces_requests(venues, sleeps) -> None:
    venues.used_weight = 5000  # above 80 % of 6,000
    venues.now = pd.Timestamp("2025-07-26T00:00:40Z")
    client = binance(venues, sleeps)
    client.klines("BTCUSDT", "1h", pd.Timestamp("2025-07-01"), limit=2)
    client.klines("BTCUSDT", "1h", pd.Timestamp("2025-07-02"), limit=2)
    assert sleeps and 19.0 <= sleeps[0] <= 21.0  # until the next minute


def test_hyperliquid_snapshot_drops_open_candle_and_warns_about_history(venues, sleeps, caplog) -> None:
    venues.now = pd.Timestamp("2025-07-26T03:30:00Z")
    s = venues.settings()
    client = HyperliquidClient(
        s,
        http=HttpClient("hyperliquid", s.hyperliquid_base_url, s, sleep=sleeps),
        now=lambda: venues.now.to_pydatetime(),
    )
    with caplog.at_level(logging.WARNING):
        frame = client.candle_snapshot("HYPE", "1h", pd.Timestamp("2024-01-01"), pd.Timestamp("2025-07-26T06:00Z"))
    assert frame.index[0] == pd.Timestamp("2024-12-05T09:00:00Z")  # HYPE's first real candle
    assert frame.index[-1] == pd.Timestamp("2025-07-26T02:00:00Z")
    assert "older candles do not exist" in caplog.text
    validate_bars(frame, series="HYPE", timeframe="1h")


def test_coingecko_sample_and_key_header(venues, sleeps) -> None:
    s = venues.settings(coingecko_api_key="demo-key")
    client = CoinGeckoClient(s, now=lambda: dt.datetime(2024, 5, 23, 15, 5, tzinfo=dt.UTC), sleep=sleeps)
    sample = client.global_dominance()
    assert (sample.btc_d, sample.usdt_d) == pytest.approx((50.0727, 4.1882), abs=1e-3)
    assert sample.updated_at == dt.datetime(2024, 5, 23, 15, 4, 40, tzinfo=dt.UTC)
    assert client.http.session.headers["x-cg-demo-api-key"] == "demo-key"
    venues.global_pct = {"usdt": "4.1"}
    with pytest.raises(InvalidResponseError, match=r"market_cap_percentage\.usdt"):
        client.global_dominance()


def test_coingecko_429_without_retry_after_uses_backoff(venues, sleeps) -> None:
    venues.faults.append(Fault(status=429, path="global"))
    client = CoinGeckoClient(venues.settings(), sleep=sleeps)
    client.global_dominance()
    assert len(sleeps) == 1 and 4.0 <= sleeps[0] <= 6.0


def test_websocket_drop_mid_stream_is_caught_up_over_rest_without_gap(venues) -> None:
    start = pd.Timestamp("2025-07-24T10:00:00Z")
    ws_server = HyperliquidWsServer(venues, "BTC", start, minutes=40, drop_after=12, skip=9).start()
    got: list[pd.DataFrame] = []
    s = venues.settings(hyperliquid_ws_url=ws_server.url, hyperliquid_ping_interval_secs=0.05)
    stream = HyperliquidCandleStream(
        ["BTC"], lambda coin, frame: got.append(frame), settings=s, now=ws_server.now, max_backoff_secs=0.2
    )
    stream.rest.now = ws_server.now
    stream.start()
    try:
        assert ws_server.finished.wait(20)
        last_minute = pd.Timestamp(int(ws_server.feed["t"].iloc[-1]), unit="ms", tz="UTC")
        deadline = time.monotonic() + 5
        while (not got or got[-1].index[-1] < last_minute) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stream.stop()
        ws_server.stop()
    bars = pd.concat(got)
    expected = pd.date_range(start, periods=40, freq="1min", tz="UTC")
    assert stream.reconnects == 1
    assert list(bars.index) == list(expected)  # every minute once, in order, none lost in the outage
    real = ws_server.feed
    assert bars["close"].tolist() == pytest.approx(real["close"].tolist())  # final values, not partial updates
    assert any(m.get("method") == "subscribe" for m in ws_server.subscriptions)
