"""CoinGecko ``GET /api/v3/global``: BTC and USDT dominance samples (D4).

``data.market_cap_percentage.btc`` and ``.usdt`` are percentages (0–100); ``data.updated_at`` is unix seconds
(the endpoint refreshes about every 10 minutes). 429 carries no ``Retry-After``: the backoff schedule applies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from regime_tasks.config import Settings, get_settings
from regime_tasks.errors import InvalidResponseError
from regime_tasks.sources.http import HttpClient

SOURCE = "coingecko"


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

    def global_dominance(self) -> DominanceSample:
        body = self.http.request("GET", "/api/v3/global", what="global")
        return parse_global(body, fetched_at=self.now())
