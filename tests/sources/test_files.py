"""The file source never reads outside REGIME_FILES_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest

from regime_tasks.errors import DataValidationError
from regime_tasks.sources.files import FileSource

CANDLES = (
    "timestamp,open,high,low,close,volume\n2025-07-25T00:00:00Z,1,2,0.5,1.5,10\n2025-07-26T00:00:00Z,1.5,2,1,1.8,12\n"
)


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "a" / "b" / "files"
    (root / "lowcaps" / "1d").mkdir(parents=True)
    (root / "lowcaps" / "1d" / "PURR.csv").write_text(CANDLES)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(CANDLES)  # reachable as lowcaps/1d/../../../../outside/secret
    (root / "tokens.csv").write_text(
        "symbol,chain,market_cap_usd,as_of,simulated\n../../../../outside/secret,hyperliquid,1e6,2025-07-26,false\n"
    )
    return root, outside


@pytest.mark.parametrize("symbol", ["../../../../outside/secret", "..", "sub/PURR", "..\\\\x", "", "PU\x00RR"])
def test_a_symbol_that_is_not_a_file_name_is_refused(layout, symbol: str) -> None:
    root, _ = layout
    source = FileSource(root)

    with pytest.raises(DataValidationError, match="not a file name inside REGIME_FILES_DIR"):
        source.bars("lowcaps", symbol, "1d")


def test_the_traversal_in_tokens_csv_reaches_no_outside_file(layout) -> None:
    root, _ = layout
    source = FileSource(root)
    symbol = source.tokens()["symbol"].iloc[0]

    with pytest.raises(DataValidationError):
        source.bars("lowcaps", symbol, "1d")
    assert len(source.bars("lowcaps", "PURR", "1d")) == 2  # a plain symbol still reads
