"""The lowcap universe's sources (issue 15): Hyperliquid ``metaAndAssetCtxs`` / ``spotMetaAndAssetCtxs``,
CoinGecko ``/coins/markets`` and Hyperliquid's weight budget — the recorded shapes and the local servers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from regime_tasks.errors import InvalidResponseError, RateLimitedError, SourceUnavailableError
from regime_tasks.sources.coingecko import CoinGeckoClient, parse_markets
from regime_tasks.sources.http import HttpClient
from regime_tasks.sources.hyperliquid import (
    HyperliquidClient,
    WeightBudget,
    candle_weight,
    parse_perp_universe,
    parse_spot_universe,
)
from tests.sources.servers import Fault

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> object:
    return json.loads((SAMPLES / name).read_text())["response"]


def test_recorded_perp_meta_parses_with_the_delisted_flag() -> None:
    perps = parse_perp_universe(sample("hyperliquid_info_metaAndAssetCtxs.json"))
    assert perps["symbol"].tolist() == ["BTC", "ETH", "HPOS", "RNDR"]
    assert perps["mark_px"].tolist() == [14.3161, 6.0436, 8.4542, 4.5765]
    assert perps["delisted"].tolist() == [False, False, False, True]
    assert perps["circulating_supply"].isna().all()  # perps carry no supply: CoinGecko gives it


def test_recorded_spot_meta_names_tokens_and_their_pairs() -> None:
    spot = parse_spot_universe(sample("hyperliquid_info_spotMetaAndAssetCtxs.json")).set_index("symbol")
    assert spot.loc["PURR", "coin"] == "PURR/USDC" and spot.loc["HYPE", "coin"] == "@107"
    assert spot.loc["HYPE", "circulating_supply"] == pytest.approx(99999929715.1255493164)
    assert spot.loc["PURR", "mark_px"] == pytest.approx(0.14967)
    assert "USDC" not in spot.index  # the quote token is no member


def test_recorded_coins_markets_parse() -> None:
    rows = parse_markets(sample("coingecko_api_v3_coins_markets.json")).set_index("coingecko_id")
    assert rows.loc["aave", "circulating_supply"] == pytest.approx(15072169.494221166)
    assert rows.loc["tether", "price_usd"] == 1.0
    assert rows.loc["aave", "last_updated"] == pd.Timestamp("2025-02-14T20:03:07.775Z")


@pytest.mark.parametrize(
    ("name", "parser", "mutate", "field"),
    [
        ("hyperliquid_info_metaAndAssetCtxs.json", parse_perp_universe, lambda b: b[1].pop(), "universe"),
        ("hyperliquid_info_metaAndAssetCtxs.json", parse_perp_universe, lambda b: b[1][0].update(markPx="x"), "markPx"),
        ("hyperliquid_info_spotMetaAndAssetCtxs.json", parse_spot_universe, lambda b: b[0].pop("tokens"), "tokens"),
        (
            "hyperliquid_info_spotMetaAndAssetCtxs.json",
            parse_spot_universe,
            lambda b: b[1][1].update(circulatingSupply="-5"),
            "circulatingSupply",
        ),
        ("coingecko_api_v3_coins_markets.json", parse_markets, lambda b: b[0].update(circulating_supply="1e9"), None),
    ],
)
def test_malformed_answers_are_rejected_whole_naming_the_field(name, parser, mutate, field) -> None:
    body = copy.deepcopy(sample(name))
    mutate(body)
    with pytest.raises(InvalidResponseError) as err:
        parser(body)
    if field:
        assert err.value.field == field


def test_universe_from_the_local_server(venues, sleeps) -> None:
    s = venues.settings()
    client = HyperliquidClient(s, http=HttpClient("hyperliquid", s.hyperliquid_base_url, s, sleep=sleeps))
    perps, spot = client.perp_universe(), client.spot_universe()
    assert {"BTC", "AAVE", "ZEREBRO"} <= set(perps["symbol"]) and not perps["delisted"].any()
    assert set(spot["symbol"]) == {"FARM", "FLY", "LAUNCH", "LIQD", "VAPOR"}
    assert spot["coin"].str.startswith("@").all() and (spot["circulating_supply"] > 0).all()
    venues.delist["ACE"] = venues.now - pd.Timedelta(hours=1)
    assert client.perp_universe().set_index("symbol").loc["ACE", "delisted"]


def coingecko(venues, sleeps) -> CoinGeckoClient:
    s = venues.settings()
    return CoinGeckoClient(s, http=HttpClient("coingecko", s.coingecko_base_url, s, sleep=sleeps))


def test_coins_markets_pages_until_a_short_page(venues, sleeps) -> None:
    ids = sorted(venues.supplies.index)[:25]
    rows = coingecko(venues, sleeps).coins_markets([*ids, "no-such-coin"], per_page=10)
    assert sorted(rows["coingecko_id"]) == ids  # the unknown id is absent, not invented
    calls = [p for m, p in venues.requests if "coins/markets" in p]
    assert len(calls) == 3 and all("vs_currency=usd" in p for p in calls)  # 10 + 10 + 6 ids (one unknown)


def test_coins_markets_429_waits_and_5xx_and_truncated_json_fail_clearly(venues, sleeps) -> None:
    client = coingecko(venues, sleeps)
    venues.faults.append(Fault(status=429, path="coins/markets"))  # CoinGecko sends no Retry-After
    rows = client.coins_markets(["tether", "aave"])
    assert len(rows) == 2 and client.http.stats.rate_limited == 1 and sleeps and 4 <= sleeps[0] <= 6
    venues.faults.append(Fault(truncated=True, path="coins/markets"))
    with pytest.raises(InvalidResponseError, match="not JSON"):
        client.coins_markets(["tether"])
    venues.faults.extend(Fault(status=503, path="coins/markets") for _ in range(3))
    with pytest.raises(SourceUnavailableError, match="HTTP 503 after 3 attempts"):
        client.coins_markets(["tether"])
    venues.faults.extend(Fault(status=429, path="coins/markets") for _ in range(4))
    with pytest.raises(RateLimitedError):
        client.coins_markets(["tether"])


def test_candle_weight_follows_the_published_rule() -> None:
    assert candle_weight(0) == 20 and candle_weight(1) == 21 and candle_weight(60) == 21
    assert candle_weight(61) == 22 and candle_weight(5_000) == 104


def test_weight_budget_defers_or_waits_over_a_sliding_minute() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(secs: float) -> None:
        slept.append(secs)
        now[0] += secs

    budget = WeightBudget(100, clock=lambda: now[0], sleep=sleep)
    assert budget.take(60) and not budget.take(60)  # no room now: a tick defers
    now[0] = 30.0
    assert budget.take(40) and budget.used() == 100
    assert not budget.take(50, wait_secs=10.0) and slept == []  # room in 30 s: more than the tick may wait
    assert budget.take(50, wait_secs=float("inf"))  # the bootstrap waits until the first 60 leave (t = 60)
    assert slept == [pytest.approx(30.0)] and budget.used() == 90
