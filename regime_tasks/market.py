"""Where the pipeline's input bars come from: the file source (embedded default) or the live venues.

``collect`` (stages/collect.py) asks a :class:`MarketSource` for new closed bars and stores them; this module is the
seam between the pipeline and ``sources/``:

- :class:`FileMarket` replays the bundled data (or ``REGIME_FILES_DIR``) as if it were a venue serving bars up
  to ``until`` — majors, lowcaps with market caps (tokens.csv) and imported dominance history.
- :class:`LiveMarket` uses Binance klines (BTC, ETH, SOL, BNB), Hyperliquid ``candleSnapshot`` (HYPE) and
  CoinGecko ``/global`` (dominance samples, 1m ticks); lowcap bars come from the Hyperliquid universe
  (``stages.collect_universe``), or from the host (``REGIME_LOWCAP_SOURCE=host``, read from the database).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pandas as pd

from regime_tasks.config import Settings
from regime_tasks.core.bars import timeframe_delta
from regime_tasks.core.constants import BUCKETS, DOMINANCE_DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.core.dominance import history_to_bars
from regime_tasks.errors import DataValidationError
from regime_tasks.logs import kv
from regime_tasks.sources.files import FileSource, read_history_csv

if TYPE_CHECKING:
    from regime_tasks.runtime import Runtime

log = logging.getLogger(__name__)

Sink = Callable[[pd.DataFrame], None]
LOWCAP_CHAIN = "hyperliquid"


class MarketSource(Protocol):
    name: str

    def majors(self, symbol: str, timeframe: str, start: pd.Timestamp, until: pd.Timestamp, sink: Sink) -> None: ...

    def collect_lowcaps(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int: ...

    def collect_dominance(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int: ...

    def simulated_series(self) -> set[tuple[str, str]]: ...


def _append_new(
    rt: Runtime, table: str, key: dict[str, str], timeframe: str, frame: pd.DataFrame, until: pd.Timestamp
) -> int:
    """Store the bars of ``frame`` up to ``until`` that the store lacks (a venue serving closed bars): those after
    the last stored one, and any missing before it — a bootstrap after a failed one repairs the history (B1)."""
    from regime_tasks.store import bars as store_bars

    part = frame[frame.index <= until]
    if part.empty:
        return 0
    # one aggregate query on a tick; the stored timestamps are read only when the history has holes
    count, last = store_bars.bar_span(rt.engine, table, key, timeframe, start=part.index[0], end=until)  # type: ignore[arg-type]
    if last is not None and count >= int((part.index <= last).sum()):
        part = part[part.index > last]
    elif last is not None:
        stored = store_bars.bar_timestamps(rt.engine, table, key, timeframe, start=part.index[0], end=until)  # type: ignore[arg-type]
        part = part[~part.index.isin(stored)]
    return store_bars.upsert_bars(rt.engine, table, key, timeframe, part, source="file")  # type: ignore[arg-type]


# --- files ----------------------------------------------------------------------------------------------
class FileMarket(FileSource):
    """The file source as a market: bars up to ``until`` are 'served' like a venue would (CONTRACTS §8)."""

    name = "file"

    def majors(self, symbol: str, timeframe: str, start: pd.Timestamp, until: pd.Timestamp, sink: Sink) -> None:
        frame = self.bars("majors", symbol, timeframe)
        if frame.empty:
            log.warning("no file for %s", kv(kind="majors", symbol=symbol, timeframe=timeframe))
            return
        part = frame[(frame.index >= start) & (frame.index <= until)]
        if not part.empty:
            sink(part)

    def collect_lowcaps(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int:
        from regime_tasks.importers import import_tokens

        tokens_csv = self.root / "tokens.csv"
        if tokens_csv.exists():
            import_tokens(rt.engine, tokens_csv)
        rows = [
            {"symbol": r["symbol"], "token_contract": r["symbol"], "token_chain": r.get("chain") or LOWCAP_CHAIN}
            for r in self.tokens().to_dict("records")
        ]
        written = 0
        for rec in rows:
            key = {"token_contract": rec["token_contract"], "token_chain": rec["token_chain"]}
            frame = self.bars("lowcaps", rec["symbol"], timeframe)
            if frame.empty:
                continue
            written += _append_new(rt, "lowcap", key, timeframe, frame, until)
        if timeframe == "1d":
            self._collect_caps(rt, until)
        return written

    def _collect_caps(self, rt: Runtime, until: pd.Timestamp) -> int:
        """Daily caps (D16: close × supply) of the tokens with a supply, for the days closed by ``until``."""
        from regime_tasks.store.tokens import cap_source, last_cap_day, upsert_caps

        tokens = self.tokens()
        if "circulating_supply" not in tokens.columns:
            return 0
        rows: list[dict[str, Any]] = []
        for rec in tokens.dropna(subset=["circulating_supply"]).to_dict("records"):
            chain = rec.get("chain") or LOWCAP_CHAIN
            supply, as_of = float(rec["circulating_supply"]), pd.Timestamp(rec["supply_as_of"])
            caps = self.daily_caps(rec["symbol"], supply, float(rec.get("price_multiplier") or 1))
            last = last_cap_day(rt.engine, rec["symbol"], chain)
            caps = caps[caps["day"] <= until]
            if last is not None:
                caps = caps[caps["day"] > last]
            source = cap_source(as_of)
            rows.extend(
                {
                    "token_contract": rec["symbol"],
                    "token_chain": chain,
                    "day": day.to_pydatetime(),
                    "market_cap_usd": float(cap),
                    "close_usd": float(close),
                    "circulating_supply": supply,
                    "supply_as_of": as_of.to_pydatetime(),
                    "source": source,
                }
                for day, cap, close in caps[["day", "market_cap_usd", "close_usd"]].itertuples(index=False)
            )
        return upsert_caps(rt.engine, rows) if rows else 0

    def collect_dominance(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int:
        """Imported history (D4): ``dominance/<tf>.csv`` becomes flat BTC.d/USDT.d bars."""

        path = self.root / "dominance" / f"{timeframe}.csv"
        if not path.exists():
            return 0
        bars = history_to_bars(read_history_csv(path), timeframe)
        written = 0
        for driver, frame in bars.items():
            written += _append_new(rt, "regime", {"driver": driver}, timeframe, frame, until)
        return written

    def simulated_series(self) -> set[tuple[str, str]]:
        """(driver, timeframe) whose inputs include simulated files (per MANIFEST.json)."""
        out: set[tuple[str, str]] = set()
        for rel, info in self.manifest.get("files", {}).items():
            if not info.get("simulated"):
                continue
            parts = Path(rel).parts
            if len(parts) >= 3 and parts[0] == "majors":
                sym = parts[2].split(".")[0]
                drivers = ["BTC"] if sym == "BTC" else ["ALT"]
                out.update((d, parts[1]) for d in drivers)
            elif len(parts) >= 3 and parts[0] == "lowcaps":
                out.update((b, parts[1]) for b in BUCKETS)
            elif parts[0] == "dominance":
                tf = Path(parts[-1]).name.split(".")[0]
                out.update((d, tf) for d in DOMINANCE_DRIVERS)
            elif parts[0] == "tokens.csv":
                out.update((b, tf) for b in BUCKETS for tf in REGIME_TIMEFRAMES)
        return out


# --- live venues ---------------------------------------------------------------------------------------
class LiveMarket:
    """Binance (BTC, ETH, SOL, BNB), Hyperliquid (HYPE), CoinGecko (dominance)."""

    name = "live"
    BINANCE_SYMBOLS: ClassVar[dict[str, str]] = {"BTC": "BTCUSDT", "ETH": "ETHUSDT", "SOL": "SOLUSDT", "BNB": "BNBUSDT"}

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def majors(self, symbol: str, timeframe: str, start: pd.Timestamp, until: pd.Timestamp, sink: Sink) -> None:
        end = until + timeframe_delta(timeframe) - pd.Timedelta(milliseconds=1)
        if symbol in self.BINANCE_SYMBOLS:
            from regime_tasks.sources.binance import BinanceClient

            BinanceClient(self.settings).backfill(self.BINANCE_SYMBOLS[symbol], timeframe, start, end, sink=sink)
        else:
            from regime_tasks.sources.hyperliquid import HyperliquidClient

            frame = HyperliquidClient(self.settings).candle_snapshot(symbol, timeframe, start, end)
            frame = frame[frame.index <= until]
            if not frame.empty:
                sink(frame)

    def collect_lowcaps(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int:
        """The Hyperliquid universe through the shipped symbol table (D16, ``stages.collect_universe``); with
        ``REGIME_LOWCAP_SOURCE=host`` nothing: the host writes lowcap bars and caps itself (plan §5.1)."""
        if self.settings.lowcap_source == "host":
            return 0
        from regime_tasks.stages import collect_universe

        return int(collect_universe(rt, timeframe, until, repair=repair)["written"])

    def collect_dominance(self, rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> int:
        """1m: one ``/global`` sample (D4). 1h/1d at the bootstrap (``repair``) with the universe on: the history
        before the first sample, derived from prices × supplies (D16, ``stages.derive_dominance_history``)."""
        if timeframe != "1m":
            if not repair or self.settings.lowcap_source == "host":
                return 0
            from regime_tasks.stages import derive_dominance_history

            return derive_dominance_history(rt, timeframe, until)
        from regime_tasks.sources.coingecko import CoinGeckoClient
        from regime_tasks.store.dominance import insert_samples

        sample = CoinGeckoClient(self.settings).global_dominance()
        frame = pd.DataFrame([sample.as_record()])
        return insert_samples(rt.engine, frame)

    def simulated_series(self) -> set[tuple[str, str]]:
        return set()


@functools.lru_cache(maxsize=4)
def get_market_source(settings: Settings) -> MarketSource:
    """The source selected by ``REGIME_SOURCE``."""
    if settings.source == "file":
        return FileMarket(settings.files_dir)
    if settings.source == "live":
        return LiveMarket(settings)
    raise DataValidationError(f"unknown source {settings.source!r}", field="REGIME_SOURCE")
