"""Typed settings from the environment: one prefix (``REGIME_``), units in the names.

Every setting can also come from a ``.env`` file in the working directory. The defaults are
the *embedded* mode: SQLite under ``REGIME_DATA_DIR``, Celery on an in-process broker,
an in-process cache and the bundled file source, so nothing needs to be installed or
reachable. Production sets ``REGIME_DATABASE_URL``, ``REGIME_REDIS_URL`` and
``REGIME_BROKER_URL``.

Invalid values fail at start with a :class:`~regime_tasks.errors.ConfigError` that names the
environment variable.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from regime_tasks.core.constants import DEFAULT_BUCKET_THRESHOLDS_USD
from regime_tasks.errors import ConfigError
from regime_tasks.logs import redact_url

ENV_PREFIX = "REGIME_"
PACKAGE_DIR = Path(__file__).resolve().parent
BUNDLED_DATA_DIR = PACKAGE_DIR / "data"


class Settings(BaseSettings):
    """All settings of the product. Frozen: build a new one to change anything."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        allow_inf_nan=False,  # `inf` as a timeout or TTL overflows later, far from the variable
    )

    # --- storage -------------------------------------------------------------
    data_dir: Path = Field(Path("var"), description="Folder for the embedded SQLite file, reports and locks.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/regime.db. PostgreSQL: postgresql+psycopg2://…"
    )
    db_batch_rows: int = Field(5_000, gt=0, description="Rows per INSERT … ON CONFLICT batch.")
    db_copy_threshold_rows: int = Field(
        20_000, gt=0, description="Upserts of at least this many rows use COPY into a staging table (PostgreSQL)."
    )

    # --- cache and Celery ----------------------------------------------------------
    redis_url: str | None = Field(None, description="Redis for the latest-deltas cache; unset = in-process cache.")
    broker_url: str = Field("memory://", description="Celery broker; memory:// runs the graph in one process.")
    result_backend: str = Field("cache+memory://", description="Celery result backend (chords need one).")
    redis_socket_timeout_secs: float = Field(0.5, gt=0, description="Cache read/write socket timeout.")
    visibility_timeout_secs: int = Field(3_600, gt=0, description="Redis broker visibility timeout.")
    task_soft_time_limit_secs: int = Field(300, gt=0, description="Soft time limit of one task; < the hard limit.")
    task_time_limit_secs: int = Field(360, gt=0, description="Hard time limit of one task; < visibility timeout.")
    beat_lock_timeout_secs: int = Field(60, gt=0, description="RedBeat lock: another beat takes over after this.")
    beat_heartbeat_secs: int = Field(30, gt=0, description="Beat heartbeat period; `regime status` shows its age.")
    bootstrap_in_subprocess: bool = Field(
        True, description="The worker's bootstrap task runs `regime bootstrap` in a child process (frees its memory)."
    )
    worker_trim_threshold_mb: float = Field(
        32.0, ge=0, description="After a task that grew a worker process by more than this, give memory back (0 = off)."
    )
    worker_max_memory_mb: int = Field(
        400, ge=0, description="A pool process above this after a task is replaced by a fresh one (0 = never)."
    )
    flower_basic_auth: str | None = Field(None, description="user:password for Flower; required outside embedded mode.")
    flower_address: str = Field("127.0.0.1", min_length=1, description="Address `regime flower` listens on.")
    flower_port: int = Field(5555, gt=0, lt=65536, description="Port `regime flower` listens on.")

    # --- product -----------------------------------------------------------------
    levers_snapshot_ttl_secs: float = Field(
        1.0, ge=0, description="compute_levers() reuses a book's entries this long (0 = read the cache every call)."
    )
    book_id: str = Field("onchain_crypto", min_length=1, description="Book whose drivers this deployment computes.")
    # NoDecode: the variable is a plain comma-separated list, not JSON (pydantic-settings would json.loads it).
    books: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="More known books besides D12's (comma-separated); compute_levers() refuses any other."
    )
    source: Literal["file", "live"] = Field("file", description="file = bundled/user files; live = venues' APIs.")
    files_dir: Path = Field(BUNDLED_DATA_DIR, description="Root of the file source (bundled data by default).")
    replay_clock_start: dt.datetime | None = Field(
        None,
        description="Replay clock (file source, offline trial): at this wall-clock instant (ISO-8601 UTC) 'now' is "
        "REGIME_REPLAY_CLOCK_LEAD_HOURS before the data's last bar; unset = the real clock.",
    )
    replay_clock_lead_hours: float = Field(
        6.0, gt=0, description="Replay clock: hours of data left to replay after the start (new bars keep closing)."
    )
    replay_clock_speed: float = Field(
        1.0, gt=0, le=3_600, description="Replay clock: data seconds per real second (60 = one data hour a minute)."
    )
    ta_window_bars: int = Field(3_000, ge=333, description="Closed bars per series fed to TA, at least (D6).")
    ta_window_slack_bars: int = Field(
        500, ge=1, description="TA windows start on a grid of this many bars, so they hold up to this many more."
    )
    live_cache_series: int = Field(
        64, ge=0, description="Warm live histories a worker process keeps (0 = rebuild the window every bar)."
    )
    engine_bootstrap: Literal["spec", "as_run"] = Field("spec", description="Engine bootstrap rule (D14).")
    engine_sr_levels: Literal["swing", "none"] = Field("swing", description="S/R levels for trims/boosts (D14).")
    engine_inputs: Literal["correct", "as_run"] = Field(
        "correct", description="as_run: the host's misread TA keys read as 0 (D14, spec §9)."
    )
    engine_edx_1d_count: Literal["bars", "as_run"] = Field(
        "bars", description="as_run: 1d bars since the S3 start counted in hours for EDX, as the host did (D14)."
    )
    engine_edx: Literal["spec", "as_run"] = Field(
        "spec", description="as_run: EDX as the host computed it (its bar count, 500-bar fetch, per-window TA)."
    )
    bucket_nano_max_usd: float = Field(
        DEFAULT_BUCKET_THRESHOLDS_USD["nano_max_usd"], gt=0, description="nano < this market cap (USD) ≤ small (D3)."
    )
    bucket_small_max_usd: float = Field(
        DEFAULT_BUCKET_THRESHOLDS_USD["small_max_usd"], gt=0, description="small < this ≤ mid."
    )
    bucket_mid_max_usd: float = Field(
        DEFAULT_BUCKET_THRESHOLDS_USD["mid_max_usd"], gt=0, description="mid < this ≤ big."
    )
    history_1d_days: int = Field(800, gt=0, description="Bootstrap backfill depth for 1d series.")
    history_1h_days: int = Field(400, gt=0, description="Bootstrap backfill depth for 1h series.")
    history_1m_days: int = Field(3, gt=0, description="Bootstrap backfill depth for 1m series.")

    # --- venues --------------------------------------------------------------------
    binance_base_url: str = Field("https://api.binance.com", description="Binance spot REST base URL.")
    binance_weight_limit_1m: int = Field(6_000, gt=0, description="Request weight per minute allowed by Binance.")
    binance_weight_pace_frac: float = Field(0.8, gt=0, le=1, description="Pause when used weight passes this share.")
    hyperliquid_base_url: str = Field("https://api.hyperliquid.xyz", description="Hyperliquid REST base URL.")
    hyperliquid_ws_url: str = Field("wss://api.hyperliquid.xyz/ws", description="Hyperliquid websocket URL.")
    hyperliquid_ping_interval_secs: float = Field(30.0, gt=0, description="Websocket keep-alive ping period (<60 s).")
    lowcap_source: Literal["universe", "host"] = Field(
        "universe",
        description="Live bucket members: universe = Hyperliquid spot/perp coins of the shipped symbol table, caps "
        "from price × supply (D16); host = lowcap_price_data_ohlc and tokens written by the host (plan §5.1).",
    )
    hyperliquid_weight_budget_per_min: int = Field(
        900, gt=0, le=1_200, description="Share of Hyperliquid's 1,200 weight/min per IP the universe may spend."
    )
    universe_tick_wait_secs: float = Field(
        20.0, ge=0, description="A tick waits this long for weight before deferring the rest of the members."
    )
    universe_listing_refresh_secs: float = Field(
        3_600.0, gt=0, description="Re-read Hyperliquid's listings (metaAndAssetCtxs, spotMetaAndAssetCtxs) after this."
    )
    universe_supply_refresh_hours: float = Field(
        24.0, gt=0, description="Re-read circulating supplies (CoinGecko /coins/markets, Hyperliquid spot) after this."
    )
    coingecko_base_url: str = Field("https://api.coingecko.com", description="CoinGecko REST base URL.")
    coingecko_api_key: str | None = Field(None, description="Optional CoinGecko API key.")
    coingecko_api_key_header: str = Field("x-cg-demo-api-key", description="Header that carries the key.")
    http_timeout_secs: float = Field(10.0, gt=0, description="Timeout of one HTTP request.")
    retry_attempts: int = Field(3, ge=1, description="Attempts per request on 5xx/timeouts (plan §12.2).")
    # NoDecode: `5,15,60` as the README writes it, not JSON; `[5,15,60]` is accepted too.
    retry_backoff_secs: Annotated[tuple[float, ...], NoDecode] = Field(
        (5.0, 15.0, 60.0), description="Backoff between attempts."
    )
    retry_jitter_frac: float = Field(0.2, ge=0, le=1, description="± random share added to each backoff.")
    http_retry_budget_secs: float = Field(
        240.0, gt=0, description="One venue call's requests and waits together stop here (< the soft time limit)."
    )
    task_retry_budget_secs: float = Field(
        300.0, ge=0, description="A task's retries on database/broker errors stop once their waits would pass this."
    )
    task_retry_backoff_max_secs: float = Field(
        60.0, gt=0, description="Longest wait between two retries of a task (2, 4, 8 … s up to this)."
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Root log level.")

    @field_validator("retry_backoff_secs", mode="before")
    @classmethod
    def _parse_backoff(cls, value: object) -> object:
        if isinstance(value, str):
            parts = value.strip().removeprefix("[").removesuffix("]").split(",")
            try:
                return tuple(float(part) for part in parts if part.strip())
            except ValueError:
                raise ValueError(f"needs comma-separated numbers, e.g. 5,15,60; got {value!r}") from None
        return value

    @field_validator("retry_backoff_secs")
    @classmethod
    def _check_backoff(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not math.isfinite(v) or v < 0 for v in value):
            raise ValueError("needs one or more finite non-negative numbers, e.g. 5,15,60")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL: {redact_url(value)!r}") from None
        if url.get_backend_name() not in {"postgresql", "sqlite"}:
            raise ValueError(f"expected postgresql+psycopg2://… or sqlite:///…, got {redact_url(value)!r}")
        if url.get_backend_name() == "postgresql" and not url.host and "host=" not in value:
            raise ValueError(f"PostgreSQL URL without a host: {redact_url(value)!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value, {"redis", "rediss", "unix"})
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        from kombu.transport import TRANSPORT_ALIASES

        _check_url(value, set(TRANSPORT_ALIASES))
        return value

    @field_validator("result_backend")
    @classmethod
    def _check_result_backend(cls, value: str) -> str:
        from celery.app.backends import BACKEND_ALIASES

        _check_url(value, set(BACKEND_ALIASES), plus_scheme=True)
        return value

    @field_validator("binance_base_url", "hyperliquid_base_url", "coingecko_base_url")
    @classmethod
    def _check_http_url(cls, value: str) -> str:
        _check_url(value, {"http", "https"})
        return value

    @field_validator("hyperliquid_ws_url")
    @classmethod
    def _check_ws_url(cls, value: str) -> str:
        _check_url(value, {"ws", "wss"})
        return value

    @field_validator("files_dir")
    @classmethod
    def _check_files_dir(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _check_flower_auth(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for pair in value.split(","):  # Flower takes several pairs separated by commas
            user, sep, password = pair.partition(":")
            if not sep or not user or not password:
                raise ValueError("must be user:password with both parts non-empty (no comma in either)")
        return value

    @field_validator("books", mode="before")
    @classmethod
    def _parse_books(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("books")
    @classmethod
    def _check_books(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for book in value:
            if not book.isprintable() or "|" in book or ":" in book:
                raise ValueError(f"book id {book!r} must be printable, without '|' or ':'")
        return value

    @field_validator("replay_clock_start", mode="before")
    @classmethod
    def _empty_start_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("replay_clock_start")
    @classmethod
    def _start_in_utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if not (self.bucket_nano_max_usd < self.bucket_small_max_usd < self.bucket_mid_max_usd):
            raise ValueError("bucket thresholds must increase: nano_max < small_max < mid_max")
        if self.task_time_limit_secs >= self.visibility_timeout_secs:
            raise ValueError("REGIME_TASK_TIME_LIMIT_SECS must be below REGIME_VISIBILITY_TIMEOUT_SECS")
        if self.task_soft_time_limit_secs >= self.task_time_limit_secs:
            raise ValueError("REGIME_TASK_SOFT_TIME_LIMIT_SECS must be below REGIME_TASK_TIME_LIMIT_SECS")
        if self.http_retry_budget_secs >= self.task_soft_time_limit_secs:
            # a venue call that may wait longer than its task may run would be killed mid-wait
            raise ValueError("REGIME_HTTP_RETRY_BUDGET_SECS must be below REGIME_TASK_SOFT_TIME_LIMIT_SECS")
        if self.replay_clock_start is not None and self.source != "file":
            raise ValueError("the replay clock (REGIME_REPLAY_CLOCK_START) replays files: set REGIME_SOURCE=file")
        return self

    # --- derived -------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'regime.db').resolve()}"

    def engine_settings(self):  # -> regime_tasks.core.uptrend.EngineSettings (core stays import-light here)
        """The Uptrend Engine's settings (D14)."""
        from regime_tasks.core.uptrend import EngineSettings

        return EngineSettings(
            bootstrap=self.engine_bootstrap,
            sr_levels=self.engine_sr_levels,
            inputs=self.engine_inputs,
            edx_1d_count=self.engine_edx_1d_count,
            edx=self.engine_edx,
        )

    @property
    def bucket_thresholds(self) -> dict[str, float]:
        """The buckets' market-cap bounds as ``core.composite``'s functions take them (D3)."""
        return {
            "nano_max_usd": self.bucket_nano_max_usd,
            "small_max_usd": self.bucket_small_max_usd,
            "mid_max_usd": self.bucket_mid_max_usd,
        }

    @property
    def known_books(self) -> frozenset[str]:
        """Books compute_levers() accepts: D12's crypto books, ``REGIME_BOOK_ID`` and ``REGIME_BOOKS``."""
        from regime_tasks.core.constants import CRYPTO_BOOK_IDS

        return CRYPTO_BOOK_IDS | {self.book_id, *self.books}

    @property
    def embedded(self) -> bool:
        """True when Celery runs in one process on the in-memory broker."""
        return self.broker_url.startswith("memory://")


_USUAL_SCHEMES = {"redis", "rediss", "memory", "cache", "http", "https", "ws", "wss", "unix"}


def _check_url(value: str, schemes: set[str], *, plus_scheme: bool = False) -> None:
    """Raise ValueError unless ``value`` parses as a URL with one of ``schemes`` (and a valid host/port/db)."""
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}): {redact_url(value)!r}") from None
    scheme = parts.scheme.split("+", 1)[0] if plus_scheme else parts.scheme
    if "://" not in value or scheme not in schemes:
        shown = ", ".join(f"{x}://" for x in sorted(schemes & _USUAL_SCHEMES) or sorted(schemes))
        raise ValueError(f"expected a URL such as {shown}; got {redact_url(value)!r}")
    if scheme in {"redis", "rediss", "http", "https", "ws", "wss", "amqp", "amqps", "pyamqp"} and not parts.hostname:
        raise ValueError(f"URL without a host: {redact_url(value)!r}")
    if scheme in {"redis", "rediss"} and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"Redis database must be a number (redis://host:6379/0): {redact_url(value)!r}")
    del port


def _env_name(loc: tuple[object, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and ``overrides``), raising ConfigError on bad values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # Value errors of one field name its variable; combination errors name theirs in the message.
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_env_name(tuple(err['loc']))}: {msg}" if err.get("loc") else msg)
        raise ConfigError("invalid settings: " + redact_url("; ".join(problems))) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        raise ConfigError(f"invalid settings: {redact_url(exc)}") from None


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once. Tests call ``get_settings.cache_clear()`` after changing env."""
    return load_settings()


def bucket_for_market_cap(market_cap_usd: float, settings: Settings | None = None) -> str:
    """Map a market cap (USD) to nano/small/mid/big with the configured thresholds (D3; the rule:
    ``core.composite.bucket_of``)."""
    from regime_tasks.core.composite import bucket_of

    return bucket_of(market_cap_usd, **(settings or get_settings()).bucket_thresholds)
