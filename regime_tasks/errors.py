"""The one exception hierarchy of the product.

Each class says who is expected to handle it.

RegimeError                    base; the CLI turns any of these into a one-line message and exit code 2
├── ConfigError                bad settings; raised at start-up, names the environment variable
├── DataValidationError        bad bars / payloads; names series, timestamp and field; nothing is written
├── SourceError                a market-data venue failed; Celery I/O tasks retry on it
│   ├── RateLimitedError       HTTP 429/418; carries ``retry_after_secs``
│   ├── SourceUnavailableError 5xx, timeouts, connection errors, exhausted retries
│   └── InvalidResponseError   the venue answered, but not with valid data (also a DataValidationError)
├── StoreError                 the database rejected or could not take a write/read
├── RegimeUnavailable          compute_levers() could reach neither the cache nor the database (D9)
├── NotBootstrappedError       a tick was asked for before the book's bootstrap completed (run ``regime bootstrap``)
└── UnknownInputError          an execution timeframe, bucket, driver or book the tables do not know, or a
                               caller's argument that is not valid (features, a non-finite intent metric, a
                               naive ``now``); compute_levers() checks every argument before any I/O
"""

from __future__ import annotations


class RegimeError(Exception):
    """Base class of every error this product raises on purpose."""


class ConfigError(RegimeError):
    """A setting is missing or invalid. The message names the environment variable."""


class DataValidationError(RegimeError, ValueError):
    """Input data failed validation.

    ``series``, ``timestamp`` and ``field`` locate the first offending value so that the
    message can be acted on without a debugger.
    """

    def __init__(
        self,
        message: str,
        *,
        series: str | None = None,
        timestamp: object | None = None,
        field: str | None = None,
        source: str | None = None,
    ) -> None:
        self.series = series
        self.timestamp = timestamp
        self.field = field
        self.source = source
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("source", source), ("series", series), ("timestamp", timestamp), ("field", field))
            if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)


class SourceError(RegimeError):
    """A market-data source failed. ``source`` names the venue (binance, hyperliquid, coingecko, file)."""

    def __init__(self, message: str, *, source: str, retry_after_secs: float | None = None) -> None:
        self.source = source
        self.retry_after_secs = retry_after_secs
        super().__init__(f"[{source}] {message}")


class RateLimitedError(SourceError):
    """The venue throttled us (429) or banned the IP for a while (418). Wait ``retry_after_secs``."""


class SourceUnavailableError(SourceError):
    """The venue could not be reached or answered 5xx / timed out, after the configured retries."""


class InvalidResponseError(SourceError, DataValidationError):  # type: ignore[misc]  # .source: str here, never None
    """The venue answered with data that fails validation; the whole response is rejected."""

    def __init__(
        self,
        message: str,
        *,
        source: str,
        series: str | None = None,
        timestamp: object | None = None,
        field: str | None = None,
    ) -> None:
        DataValidationError.__init__(self, message, series=series, timestamp=timestamp, field=field, source=source)
        self.retry_after_secs = None


class StoreError(RegimeError):
    """The database rejected or could not complete an operation."""


class RegimeUnavailable(RegimeError):
    """Neither the cache nor the database could be read (D9). Never silently neutral."""


class NotBootstrappedError(RegimeError):
    """A tick was asked for before a bootstrap of the book completed; the ``regime.tick`` task refused it."""


class UnknownInputError(RegimeError, ValueError):
    """A name outside the plan's tables (execution timeframe, bucket, driver, timeframe, book) or an invalid
    argument to compute_levers() (features not an object, a non-finite intent metric, a naive ``now``)."""
