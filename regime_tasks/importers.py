"""History imports for users who have data (D4): dominance history, candles of any series, token market caps."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine

from regime_tasks.core.bars import validate_bars
from regime_tasks.core.constants import DRIVERS, TIMEFRAME_SECONDS
from regime_tasks.core.dominance import history_to_bars
from regime_tasks.errors import DataValidationError, UnknownInputError
from regime_tasks.logs import kv
from regime_tasks.sources.files import read_candle_file, read_history_csv
from regime_tasks.store import bars as store_bars
from regime_tasks.store.positions import upsert_tokens

log = logging.getLogger(__name__)
# An engine, or a function that opens one: the CLI passes the function, so a file that fails validation is
# refused before the database is opened (or created).
EngineOrFactory = Engine | Callable[[], Engine]


def _engine(engine: EngineOrFactory) -> Engine:
    return engine if isinstance(engine, Engine) else engine()


def _require_rows(frame: pd.DataFrame, path: str | Path) -> None:
    if frame.empty:
        raise DataValidationError("no rows (header only?)", series=str(path))


def _check_ns_range(stamps: pd.Series, path: str | Path) -> None:
    """Times must fit pandas' nanosecond range (years 1677–2262): bars are indexed that way."""
    field = str(stamps.name or "timestamp")
    for value in stamps:
        try:
            t = pd.Timestamp(value)
        except (ValueError, TypeError):
            raise DataValidationError("unparsable time", series=str(path), timestamp=value, field=field) from None
        try:
            t.as_unit("ns")
        except (ValueError, OverflowError):
            raise DataValidationError(
                "time outside the years 1677–2262", series=str(path), timestamp=value, field=field
            ) from None


def infer_timeframe(stamps: pd.Series) -> str:
    """The timeframe whose bar length is the most common spacing of the timestamps."""
    if len(stamps) < 2:
        raise DataValidationError("need at least two rows to infer the timeframe; pass --timeframe")
    spacing = pd.Series(pd.to_datetime(stamps, utc=True)).sort_values().diff().dropna().mode().iloc[0]
    for tf, secs in TIMEFRAME_SECONDS.items():
        if spacing == pd.Timedelta(seconds=secs):
            return tf
    raise DataValidationError(f"rows are {spacing} apart: not a known timeframe; pass --timeframe")


def import_dominance(engine: EngineOrFactory, path: str | Path, *, timeframe: str | None = None) -> dict[str, Any]:
    """CSV ``timestamp,btc_d,usdt_d`` → BTC.d / USDT.d bars of that timeframe (idempotent upsert).

    The whole file is validated before anything is written."""
    history = read_history_csv(path)
    _require_rows(history, path)
    _check_ns_range(history["timestamp"], path)
    tf = timeframe or infer_timeframe(history["timestamp"])
    frames = history_to_bars(history, tf)
    db = _engine(engine)
    written = {}
    for driver, frame in frames.items():
        written[driver] = store_bars.upsert_bars(db, "regime", {"driver": driver}, tf, frame, source="import")
    log.info("dominance imported %s", kv(path=path, timeframe=tf, rows=len(history)))
    return {
        "timeframe": tf,
        "written": written,
        "first": str(history["timestamp"].iloc[0]),
        "last": str(history["timestamp"].iloc[-1]),
    }


def parse_series(spec: str) -> tuple[str, dict[str, str]]:
    """``majors:BTC`` | ``lowcap:SYMBOL@chain`` | ``regime:DRIVER`` → (table, key)."""
    kind, _, name = spec.partition(":")
    if not name:
        raise UnknownInputError(
            f"--series must look like majors:BTC, lowcap:PURR@hyperliquid or regime:ALT, got {spec!r}"
        )
    if kind == "majors":
        return "majors", {"token_contract": name}
    if kind == "lowcap":
        contract, _, chain = name.partition("@")
        return "lowcap", {"token_contract": contract, "token_chain": chain or "hyperliquid"}
    if kind == "regime":
        if name not in DRIVERS:
            raise UnknownInputError(f"unknown driver {name!r}; expected one of {DRIVERS}")
        return "regime", {"driver": name}
    raise UnknownInputError(f"unknown series kind {kind!r}; expected majors, lowcap or regime")


def import_candles(
    engine: EngineOrFactory, path: str | Path, *, series: str, timeframe: str | None = None
) -> dict[str, Any]:
    """A candle CSV/Parquet → one price series (validated; nothing written if one row is bad)."""
    table, key = parse_series(series)
    bars = read_candle_file(path, None)
    _require_rows(bars, path)
    tf = timeframe or infer_timeframe(bars.index.to_series())
    validate_bars(bars, series=str(path), timeframe=tf)
    n = store_bars.upsert_bars(_engine(engine), table, key, tf, bars, source="import")  # type: ignore[arg-type]
    return {"series": series, "timeframe": tf, "written": n, "first": str(bars.index[0]), "last": str(bars.index[-1])}


def import_tokens(engine: EngineOrFactory, path: str | Path) -> int:
    """tokens.csv (symbol, chain, market_cap_usd, as_of, simulated) → the tokens table (bucket membership)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:  # EmptyDataError and ParserError are ValueErrors
        raise DataValidationError(f"cannot read tokens: {exc}", series=str(path)) from exc
    for col in ("symbol", "market_cap_usd"):
        if col not in frame.columns:
            raise DataValidationError("missing column", series=str(path), field=col)
    _require_rows(frame, path)
    if "as_of" in frame.columns:
        _check_ns_range(frame["as_of"].dropna(), path)
    rows = []
    for rec in frame.to_dict("records"):
        as_of = pd.Timestamp(rec["as_of"]) if pd.notna(rec.get("as_of")) else None
        try:
            cap = float(rec["market_cap_usd"])
        except (ValueError, TypeError):
            raise DataValidationError(
                f"market cap is not a number: {rec['market_cap_usd']!r}", series=str(path), field="market_cap_usd"
            ) from None
        rows.append(
            {
                "token_contract": rec["symbol"],
                "token_chain": rec.get("chain") or "hyperliquid",
                "symbol": rec["symbol"],
                "market_cap_usd": cap,
                "market_cap_as_of": None
                if as_of is None
                else (as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of),
                "source": "import",
                "simulated": bool(rec.get("simulated", False)),
            }
        )
    return upsert_tokens(_engine(engine), rows)
