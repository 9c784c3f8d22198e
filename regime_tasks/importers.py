"""History imports for users who have data (D4): dominance history, candles of any series, token market caps."""

from __future__ import annotations

import logging
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


def infer_timeframe(stamps: pd.Series) -> str:
    """The timeframe whose bar length is the most common spacing of the timestamps."""
    if len(stamps) < 2:
        raise DataValidationError("need at least two rows to infer the timeframe; pass --timeframe")
    spacing = pd.Series(pd.to_datetime(stamps, utc=True)).sort_values().diff().dropna().mode().iloc[0]
    for tf, secs in TIMEFRAME_SECONDS.items():
        if spacing == pd.Timedelta(seconds=secs):
            return tf
    raise DataValidationError(f"rows are {spacing} apart: not a known timeframe; pass --timeframe")


def import_dominance(engine: Engine, path: str | Path, *, timeframe: str | None = None) -> dict[str, Any]:
    """CSV ``timestamp,btc_d,usdt_d`` → BTC.d / USDT.d bars of that timeframe (idempotent upsert)."""
    history = read_history_csv(path)
    tf = timeframe or infer_timeframe(history["timestamp"])
    written = {}
    for driver, frame in history_to_bars(history, tf).items():
        written[driver] = store_bars.upsert_bars(engine, "regime", {"driver": driver}, tf, frame, source="import")
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


def import_candles(engine: Engine, path: str | Path, *, series: str, timeframe: str | None = None) -> dict[str, Any]:
    """A candle CSV/Parquet → one price series (validated; nothing written if one row is bad)."""
    table, key = parse_series(series)
    bars = read_candle_file(path, None)
    tf = timeframe or infer_timeframe(bars.index.to_series())
    validate_bars(bars, series=str(path), timeframe=tf)
    n = store_bars.upsert_bars(engine, table, key, tf, bars, source="import")  # type: ignore[arg-type]
    return {"series": series, "timeframe": tf, "written": n, "first": str(bars.index[0]), "last": str(bars.index[-1])}


def import_tokens(engine: Engine, path: str | Path) -> int:
    """tokens.csv (symbol, chain, market_cap_usd, as_of, simulated) → the tokens table (bucket membership)."""
    frame = pd.read_csv(path)
    for col in ("symbol", "market_cap_usd"):
        if col not in frame.columns:
            raise DataValidationError("missing column", series=str(path), field=col)
    rows = []
    for rec in frame.to_dict("records"):
        as_of = pd.Timestamp(rec["as_of"]) if pd.notna(rec.get("as_of")) else None
        rows.append(
            {
                "token_contract": rec["symbol"],
                "token_chain": rec.get("chain") or "hyperliquid",
                "symbol": rec["symbol"],
                "market_cap_usd": float(rec["market_cap_usd"]),
                "market_cap_as_of": None
                if as_of is None
                else (as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of),
                "source": "import",
                "simulated": bool(rec.get("simulated", False)),
            }
        )
    return upsert_tokens(engine, rows)
