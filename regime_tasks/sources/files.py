"""The file source: bundled real data (or any folder in the same layout) read as validated bar frames.

Layout (docs/CONTRACTS.md §8)::

    MANIFEST.json                 per file: origin, real|simulated, notes
    majors/<tf>/<SYMBOL>.csv[.gz|.parquet]
    lowcaps/<tf>/<SYMBOL>.csv[.gz|.parquet]
    tokens.csv                    symbol,chain,market_cap_usd,as_of,simulated[,circulating_supply,supply_as_of,
                                  price_multiplier,coingecko_id,market]  (supply columns: caps derived per day, D16)
    dominance/<tf>.csv            timestamp,btc_d,usdt_d

Rows whose prices are all empty are absent bars and are skipped; any other bad row raises
``DataValidationError`` naming the file, time and field.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from regime_tasks.core.bars import normalize_bars
from regime_tasks.core.dominance import parse_history
from regime_tasks.errors import DataValidationError, SourceError

log = logging.getLogger(__name__)


def read_candle_file(path: str | Path, timeframe: str | None) -> pd.DataFrame:
    """Read a user's CSV/Parquet of candles (timestamp, open, high, low, close, volume) as a bar frame.

    Rows whose prices are all empty are absent bars (dropped and logged); anything else that is not a valid
    candle raises :class:`DataValidationError` naming the file, time and field.
    """
    p = Path(path)
    if not p.exists():
        raise DataValidationError("file not found", series=str(p))
    try:
        raw = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:
        raise DataValidationError(f"cannot read candles: {exc}", series=str(p)) from exc
    prices = [c for c in ("open", "high", "low", "close") if c in raw.columns]
    empty = raw[prices].isna().all(axis=1) if prices else pd.Series(False, index=raw.index)
    if empty.any():
        log.warning("%d rows without any price dropped from %s (absent bars)", int(empty.sum()), p)
        raw = raw[~empty]
    return normalize_bars(raw, series=str(p), timeframe=timeframe)


def read_history_csv(path: str | Path) -> pd.DataFrame:
    """Read a dominance history file (``timestamp,btc_d,usdt_d``; TradingView-style column names accepted)."""
    try:
        raw = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read dominance history: {exc}", series=str(path)) from exc
    return parse_history(raw, series=str(path))


class FileSource:
    """Read-only access to a data folder in the layout above."""

    name = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"file source folder {self.root} does not exist", source="file")
        manifest = self.root / "MANIFEST.json"
        self.manifest: dict[str, Any] = json.loads(manifest.read_text()) if manifest.exists() else {"files": {}}

    def _path(self, kind: str, timeframe: str, symbol: str) -> Path | None:
        # A symbol comes from a data file (tokens.csv): it must name a file in the folder, never a path out of
        # REGIME_FILES_DIR (e.g. `../../../outside/secret`).
        if not symbol or Path(symbol).name != symbol or symbol in {".", ".."} or "\\" in symbol or "\x00" in symbol:
            raise DataValidationError(
                f"symbol {symbol!r} is not a file name inside REGIME_FILES_DIR", series=f"file:{kind}", field="symbol"
            )
        for suffix in (".csv", ".csv.gz", ".parquet"):
            p = self.root / kind / timeframe / f"{symbol}{suffix}"
            if p.exists():
                return p
        return None

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one FileMarket per process; files are immutable
    def _read(self, path: Path, series: str, timeframe: str) -> pd.DataFrame:
        raw = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        raw = raw.dropna(subset=[c for c in ("open", "high", "low", "close") if c in raw.columns], how="all")
        return normalize_bars(raw, series=series, timeframe=timeframe)

    def bars(self, kind: str, symbol: str, timeframe: str) -> pd.DataFrame:
        """All bars of one file (empty if absent)."""
        path = self._path(kind, timeframe, symbol)
        if path is None:
            return pd.DataFrame(columns=["open", "high", "low", "close", "volume"])
        return self._read(path, f"file:{kind}/{timeframe}/{symbol}", timeframe)

    def symbols(self, kind: str, timeframe: str) -> list[str]:
        folder = self.root / kind / timeframe
        if not folder.is_dir():
            return []
        return sorted({p.name.split(".")[0] for p in folder.iterdir() if p.is_file()})

    def latest(self, timeframe: str = "1m", symbol: str = "BTC") -> pd.Timestamp | None:
        """Open time of the newest bar of a majors file (the demo's notion of 'now')."""
        frame = self.bars("majors", symbol, timeframe)
        return None if frame.empty else frame.index[-1]

    def tokens(self) -> pd.DataFrame:
        """tokens.csv: symbol, chain, market_cap_usd, as_of, simulated (+ supply columns; empty if absent)."""
        path = self.root / "tokens.csv"
        if not path.exists():
            return pd.DataFrame(columns=["symbol", "chain", "market_cap_usd", "as_of", "simulated"])
        return pd.read_csv(path)

    def daily_caps(self, symbol: str, supply: float, price_multiplier: float = 1.0) -> pd.DataFrame:
        """Caps per day of one lowcap from its traded 1d bars × supply (D16; columns day, market_cap_usd, close_usd)."""
        from regime_tasks.store.tokens import derive_caps

        daily = self.bars("lowcaps", symbol, "1d")
        if daily.empty:
            return pd.DataFrame(columns=["day", "market_cap_usd", "close_usd"])
        return derive_caps(daily, supply=supply, price_multiplier=price_multiplier)

    def caps_table(self) -> pd.DataFrame:
        """Wide daily caps of every token with a supply (index = day, columns = symbol@chain)."""
        tokens = self.tokens()
        if "circulating_supply" not in tokens.columns:
            return pd.DataFrame()
        cols = {}
        for rec in tokens.dropna(subset=["circulating_supply"]).to_dict("records"):
            caps = self.daily_caps(
                rec["symbol"], float(rec["circulating_supply"]), float(rec.get("price_multiplier") or 1)
            )
            cols[f"{rec['symbol']}@{rec.get('chain') or 'hyperliquid'}"] = caps.set_index("day")["market_cap_usd"]
        return pd.DataFrame(cols).sort_index() if cols else pd.DataFrame()
