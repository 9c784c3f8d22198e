"""CoinGecko ``GET /api/v3/global``: BTC and USDT dominance samples (D4); ``GET /api/v3/coins/markets``:
circulating supplies of the lowcap universe's perps and of the stablecoins (D16).

``data.market_cap_percentage.btc`` and ``.usdt`` are percentages (0–100); ``data.updated_at`` is unix seconds
(the endpoint refreshes about every 10 minutes). 429 carries no ``Retry-After``: the backoff schedule applies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from regime_tasks.config import Settings, get_settings
from regime_tasks.errors import InvalidResponseError
from regime_tasks.sources.http import HttpClient

SOURCE = "coingecko"
MARKETS_PER_PAGE = 250  # the endpoint's maximum


@dataclasses.dataclass(frozen=True)
class DominanceSample:
    """One raw answer: when we fetched it, the two percentages, and the source's own data time."""

    fetched_at: dt.datetime
    btc_d: float
    usdt_d: float
    updated_at: dt.datetime | None
    source: str = SOURCE

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_global(body: Any, *, fetched_at: dt.datetime) -> DominanceSample:
    """Validate a ``/global`` body and extract the sample; raises InvalidResponseError naming the field."""
    try:
        data = body["data"]
        pct = data["market_cap_percentage"]
    except (KeyError, TypeError) as exc:
        raise InvalidResponseError(f"missing {exc}", source=SOURCE, series="global", field=str(exc).strip("'")) from exc
    values = {}
    for key in ("btc", "usdt"):
        v = pct.get(key)
        if not isinstance(v, int | float) or isinstance(v, bool) or not 0 < float(v) <= 100:
            raise InvalidResponseError(
                f"market_cap_percentage.{key} must be a percentage, got {v!r}",
                source=SOURCE,
                series="global",
                timestamp=fetched_at,
                field=f"market_cap_percentage.{key}",
            )
        values[key] = float(v)
    updated = data.get("updated_at")
    if updated is not None and (not isinstance(updated, int | float) or updated <= 0):
        raise InvalidResponseError(
            f"updated_at must be unix seconds, got {updated!r}", source=SOURCE, series="global", field="updated_at"
        )
    return DominanceSample(
        fetched_at=fetched_at,
        btc_d=values["btc"],
        usdt_d=values["usdt"],
        updated_at=None if updated is None else dt.datetime.fromtimestamp(float(updated), dt.UTC),
    )


class CoinGeckoClient:
    """One ``/global`` call per sample; optional API key header from settings."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        http: HttpClient | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or get_settings()
        headers = {}
        if self.settings.coingecko_api_key:
            headers[self.settings.coingecko_api_key_header] = self.settings.coingecko_api_key
        self.http = http or HttpClient(
            SOURCE, self.settings.coingecko_base_url, self.settings, sleep=sleep, headers=headers
        )
        self.now = now

    def coins_markets(self, ids: Sequence[str], *, per_page: int = MARKETS_PER_PAGE) -> pd.DataFrame:
        """Market rows of ``ids``, paged: ``per_page`` ids per request (``page=1`` of that id list holds them all).
        Ids CoinGecko does not return (unknown or delisted there) are simply absent: the caller says which."""
        frames = []
        wanted = sorted(set(ids))
        for first in range(0, len(wanted), per_page):
            chunk = wanted[first : first + per_page]
            params = {"vs_currency": "usd", "ids": ",".join(chunk), "per_page": str(per_page), "page": "1"}
            page = first // per_page + 1
            body = self.http.request("GET", "/api/v3/coins/markets", params=params, what=f"coins/markets #{page}")
            frames.append(parse_markets(body))
        if not frames:
            return pd.DataFrame(columns=MARKETS_COLUMNS)
        out = pd.concat(frames, ignore_index=True)
        return out.drop_duplicates("coingecko_id", keep="first").reset_index(drop=True)

    def global_dominance(self) -> DominanceSample:
        body = self.http.request("GET", "/api/v3/global", what="global")
        return parse_global(body, fetched_at=self.now())


# ``/coins/markets`` (CoinGecko API docs; sample in tests/sources/samples/): a JSON list of objects with, among
# others, ``id``, ``symbol``, ``name``, ``current_price``, ``market_cap``, ``circulating_supply``,
# ``total_supply``, ``max_supply``, ``last_updated`` (ISO-8601); numbers may be null for thin coins.
# Query: ``vs_currency=usd``, ``ids=a,b,…``, ``per_page`` 1–250, ``page`` from 1.
MARKETS_COLUMNS = ["coingecko_id", "symbol", "price_usd", "market_cap_usd", "circulating_supply", "last_updated"]


def _number(row: dict[str, Any], key: str, *, series: str) -> float | None:
    v = row.get(key)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(float(v)) or v < 0:
        raise InvalidResponseError(f"{key} must be a number ≥ 0, got {v!r}", source=SOURCE, series=series, field=key)
    return float(v)


def parse_markets(body: Any) -> pd.DataFrame:
    """A ``/coins/markets`` page → one row per coin; raises InvalidResponseError naming the coin and field."""
    if not isinstance(body, list):
        raise InvalidResponseError(
            f"expected a list of coins, got {type(body).__name__}", source=SOURCE, series="coins/markets"
        )
    rows = []
    for row in body:
        if not isinstance(row, dict) or not isinstance(row.get("id"), str):
            raise InvalidResponseError(
                f"malformed coin {str(row)[:80]!r}", source=SOURCE, series="coins/markets", field="id"
            )
        series = f"coins/markets:{row['id']}"
        updated = row.get("last_updated")
        try:
            when = pd.Timestamp(updated) if updated else pd.NaT
        except (TypeError, ValueError) as exc:
            raise InvalidResponseError(
                f"last_updated is not a time: {updated!r}", source=SOURCE, series=series, field="last_updated"
            ) from exc
        rows.append(
            {
                "coingecko_id": row["id"],
                "symbol": str(row.get("symbol") or ""),
                "price_usd": _number(row, "current_price", series=series),
                "market_cap_usd": _number(row, "market_cap", series=series),
                "circulating_supply": _number(row, "circulating_supply", series=series),
                "last_updated": when,
            }
        )
    return pd.DataFrame(rows, columns=MARKETS_COLUMNS)
