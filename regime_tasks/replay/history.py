"""Where a replay or an evaluation reads its history: a folder in the bundled layout, or the stored history.

Both answer the same questions as :class:`regime_tasks.sources.files.FileSource`: ``bars(kind, symbol, tf)``,
``tokens()``, ``dominance(tf)`` and ``simulated_series()`` — which (driver, timeframe) are built from simulated
inputs, read from the data's own provenance (the bundle's ``MANIFEST.json``, the ``simulated`` column of the
tokens table), never from a list in the code.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd
from sqlalchemy.engine import Engine

from regime_tasks.core.constants import BUCKETS, DOMINANCE_DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.core.dominance import history_to_bars
from regime_tasks.sources.files import FileSource, read_history_csv

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]


class History(Protocol):
    """The reads a replay needs."""

    def bars(self, kind: str, symbol: str, timeframe: str) -> pd.DataFrame: ...

    def tokens(self) -> pd.DataFrame: ...

    def caps_table(self) -> pd.DataFrame: ...

    def dominance(self, timeframe: str) -> dict[str, pd.DataFrame]: ...

    def simulated_series(self) -> set[tuple[str, str]]: ...

    def describe(self) -> str: ...


class FileHistory:
    """A data folder in the bundled layout (the bundle itself by default, or a user's folder)."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.root = source.root

    def bars(self, kind: str, symbol: str, timeframe: str) -> pd.DataFrame:
        """All bars of one file (empty if absent)."""
        return self.source.bars(kind, symbol, timeframe)

    def tokens(self) -> pd.DataFrame:
        """tokens.csv (empty if absent)."""
        return self.source.tokens()

    def caps_table(self) -> pd.DataFrame:
        """Daily caps (close × supply) per token, for point-in-time bucket membership (D3, D16)."""
        return self.source.caps_table()

    def dominance(self, timeframe: str) -> dict[str, pd.DataFrame]:
        """BTC.d / USDT.d bars from ``dominance/<tf>.csv`` (D4), empty if absent."""
        path = self.root / "dominance" / f"{timeframe}.csv"
        return history_to_bars(read_history_csv(path), timeframe) if path.exists() else {}

    def simulated_series(self) -> set[tuple[str, str]]:
        """(driver, timeframe) whose inputs include a file the manifest labels ``simulated``."""
        from regime_tasks.market import FileMarket

        return FileMarket.simulated_series(self.source)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line naming the input."""
        return f"files in {self.root}"


class StoreHistory:
    """The stored history (after ``regime import-candles`` / ``import-tokens`` / ``import-dominance``).

    Majors come from ``majors_price_data_ohlc``, bucket members from ``tokens`` + ``lowcap_price_data_ohlc``,
    dominance from the BTC.d / USDT.d rows of ``regime_price_data_ohlc``. Buckets are simulated when any token
    carries ``simulated = true`` (caps choose the members).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._tokens: pd.DataFrame | None = None

    def bars(self, kind: str, symbol: str, timeframe: str) -> pd.DataFrame:
        """One stored series (empty if absent)."""
        from regime_tasks.store.bars import read_bars

        if kind == "majors":
            frame = read_bars(self.engine, "majors", {"token_contract": symbol}, timeframe)
        else:
            tokens = self.tokens()
            match = tokens[tokens["symbol"] == symbol]
            chain = str(match["chain"].iloc[0]) if len(match) else "hyperliquid"
            frame = read_bars(self.engine, "lowcap", {"token_contract": symbol, "token_chain": chain}, timeframe)
        return frame[BAR_COLUMNS] if not frame.empty else pd.DataFrame(columns=BAR_COLUMNS)

    def tokens(self) -> pd.DataFrame:
        """The tokens table as symbol, chain, market_cap_usd, as_of, simulated."""
        if self._tokens is None:
            from regime_tasks.store.positions import read_tokens

            rows = read_tokens(self.engine)
            self._tokens = pd.DataFrame(
                {
                    "symbol": [r["token_contract"] for r in rows],
                    "chain": [r["token_chain"] for r in rows],
                    "market_cap_usd": [r["market_cap_usd"] for r in rows],
                    "as_of": [r["market_cap_as_of"] for r in rows],
                    "simulated": [bool(r["simulated"]) for r in rows],
                }
            )
        return self._tokens

    def caps_table(self) -> pd.DataFrame:
        """The stored daily caps (``token_caps``), columns ``symbol@chain``; empty without any."""
        from regime_tasks.store.tokens import read_caps

        return read_caps(self.engine)

    def dominance(self, timeframe: str) -> dict[str, pd.DataFrame]:
        """Stored BTC.d / USDT.d bars of one timeframe."""
        from regime_tasks.store.bars import read_bars

        out = {}
        for driver in DOMINANCE_DRIVERS:
            frame = read_bars(self.engine, "regime", {"driver": driver}, timeframe)
            if not frame.empty:
                out[driver] = frame[BAR_COLUMNS]
        return out

    def simulated_series(self) -> set[tuple[str, str]]:
        """Buckets are simulated when a stored token's cap is (the tokens table's ``simulated`` column)."""
        tokens = self.tokens()
        if len(tokens) and tokens["simulated"].any():
            return {(b, tf) for b in BUCKETS for tf in REGIME_TIMEFRAMES}
        return set()

    def describe(self) -> str:
        """One line naming the input."""
        return f"stored history in {self.engine.url.render_as_string(hide_password=True)}"


def as_history(source: FileSource | History) -> History:
    """Wrap a bare FileSource (what callers passed before) as a History."""
    return FileHistory(source) if isinstance(source, FileSource) else source
