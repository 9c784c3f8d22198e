"""History imports for users who have data (D4): dominance history, candles of any series, token market caps."""

from __future__ import annotations

import logging
import math
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
    first_frame = next(iter(frames.values()))
    floored, example = first_frame.attrs.get("floored", 0), first_frame.attrs.get("floored_example")
    if floored:
        log.warning("dominance rows floored to the %s grid %s", tf, kv(path=path, rows=floored, example=example))
    log.info("dominance imported %s", kv(path=path, timeframe=tf, rows=len(history)))
    return {
        "timeframe": tf,
        "written": written,
        "first": str(history["timestamp"].iloc[0]),
        "last": str(history["timestamp"].iloc[-1]),
        "floored": floored,
        "floored_example": example,
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
    return {
        "series": series,
        "timeframe": tf,
        "written": n,
        "first": str(bars.index[0]),
        "last": str(bars.index[-1]),
        "duplicates": bars.attrs.get("duplicates", 0),
        "conflicting_duplicates": bars.attrs.get("conflicting_duplicates", []),
    }


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def _token_row(rec: dict[str, str], line: int, source: str, has_chain: bool) -> dict[str, Any]:
    """One tokens.csv record validated like a candle: a bad value names its line and field."""

    def bad(field: str, why: str) -> DataValidationError:
        return DataValidationError(f"line {line}: {field} {why}", series=source, field=field)

    symbol = rec["symbol"].strip()
    if not symbol:
        raise bad("symbol", "is empty")
    if any(c in symbol for c in "/\\\x00") or symbol in {".", ".."}:  # it names a file under REGIME_FILES_DIR
        raise bad("symbol", f"{symbol!r} is not a symbol (no path separators)")
    chain = rec.get("chain", "").strip() if has_chain else "hyperliquid"
    if not chain:
        raise bad("chain", "is empty")
    try:
        cap = float(rec["market_cap_usd"])
    except ValueError:
        raise bad("market_cap_usd", f"{rec['market_cap_usd']!r} is not a number") from None
    if not (math.isfinite(cap) and cap > 0):  # NaN would bucket as "big", a negative cap as "nano"
        raise bad("market_cap_usd", f"{rec['market_cap_usd']!r} is not a finite positive number")
    as_of_text = rec.get("as_of", "").strip()
    as_of = None
    if as_of_text:
        try:
            as_of = pd.Timestamp(as_of_text)
        except ValueError:
            raise bad("as_of", f"{as_of_text!r} is not a time") from None
        if pd.isna(as_of):
            raise bad("as_of", f"{as_of_text!r} is not a time")
        try:
            as_of = as_of.as_unit("ns")  # the range every other time in the store is held in
        except (ValueError, OverflowError):
            raise bad("as_of", f"{as_of_text!r} is outside the years 1677–2262") from None
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    flag = rec.get("simulated", "").strip().lower()
    if flag not in _TRUE | _FALSE:
        raise bad("simulated", f"{rec.get('simulated')!r} is not true/false (or 1/0, yes/no)")
    return {
        "token_contract": symbol,
        "token_chain": chain,
        "symbol": symbol,
        "market_cap_usd": cap,
        "market_cap_as_of": None if as_of is None else as_of.to_pydatetime(),
        "source": "import",
        "simulated": flag in _TRUE,
    }


def read_tokens_csv(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Validated token rows of a tokens.csv, and counts (``rows``, ``duplicates``); nothing touches the database.

    Every row is validated (finite positive caps, non-empty symbols and chains, booleans parsed strictly); the
    first bad value raises DataValidationError naming its line and field. A row repeated exactly is kept once and
    counted in ``duplicates``; the same token with different values is an error naming both lines.
    """
    source = str(path)
    try:
        # Everything as text: pandas would turn a blank symbol into NaN (stored as 'NaN') and "no" into True.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DataValidationError("file not found", series=source) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataValidationError(f"cannot read tokens CSV: {exc}", series=source) from None
    for col in ("symbol", "market_cap_usd"):
        if col not in frame.columns:
            raise DataValidationError("missing column", series=source, field=col)
    _require_rows(frame, path)
    has_chain = "chain" in frame.columns
    rows: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    duplicates = 0
    for i, rec in enumerate(frame.to_dict("records")):
        line = i + 2  # the header is line 1
        row = _token_row(rec, line, source, has_chain)
        key = (row["token_contract"], row["token_chain"])
        if key in rows:
            first_line, first = rows[key]
            if first != row:
                raise DataValidationError(
                    f"line {line}: token {key[0]}@{key[1]} repeats line {first_line} with other values",
                    series=source,
                    field="symbol",
                )
            duplicates += 1
            continue
        rows[key] = (line, row)
    if duplicates:
        log.warning("identical duplicate token rows counted once %s", kv(path=source, duplicates=duplicates))
    return [row for _, row in rows.values()], {"rows": len(frame), "duplicates": duplicates}


def import_tokens(engine: EngineOrFactory, path: str | Path) -> dict[str, Any]:
    """tokens.csv (symbol, chain, market_cap_usd, as_of, simulated) → the tokens table (bucket membership).

    The whole file is validated first (:func:`read_tokens_csv`); nothing is written if one row is bad. ``engine``
    may be a callable, so that a bad file fails before a database is even opened.
    """
    rows, counts = read_tokens_csv(path)
    written = upsert_tokens(_engine(engine), rows)
    return {"tokens": written, **counts}
