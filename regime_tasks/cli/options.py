"""The command line's argument types and shared options, each declared once.

Every input is checked by the parser (times, files, folders, counts, windows) before a command does any work;
choices come from ``core/constants.py`` so a timeframe or bucket list is never retyped.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from regime_tasks.core.constants import (
    BUCKETS,
    EVALUATION_TIMEFRAMES,
    EXEC_TF_MULTIPLIERS,
    REGIME_TIMEFRAMES,
    TIMEFRAME_SECONDS,
    TRADABLE_SERIES,
)

# Every bar length the product reads or writes (1m … 1d), in the order of the constants table.
TIMEFRAMES = tuple(TIMEFRAME_SECONDS)
REGIME_TFS = REGIME_TIMEFRAMES
BUCKET_CHOICES = BUCKETS
EXEC_TFS = tuple(EXEC_TF_MULTIPLIERS)  # execution timeframes of the levers (plan §4.3)
EVAL_TFS = EVALUATION_TIMEFRAMES
TRADABLE_CHOICES = TRADABLE_SERIES


_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def utc_time(value: str) -> Any:
    """An ISO-8601 time as a UTC ``pd.Timestamp``; a time without zone is UTC.

    Only times pandas can hold in nanoseconds (years 1677–2262) are accepted: bars are indexed that way, and a
    year-2400 time used to fail deep inside a command.
    """
    import pandas as pd

    from regime_tasks.core.timeframes import parse_ts

    if not _ISO_TIME.match(value.strip()):
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 UTC time such as 2025-07-26T04:00:00Z")
    try:
        return parse_ts(value.strip()).as_unit("ns")
    except (ValueError, OverflowError) as exc:  # OutOfBoundsDatetime is a ValueError
        reason = "outside the years 1677–2262" if isinstance(exc, pd.errors.OutOfBoundsDatetime) else str(exc)
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid time: {reason}") from None


def input_file(value: str) -> Path:
    """A file that exists and is not empty."""
    p = Path(value)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{value} is not a file")
    if p.stat().st_size == 0:
        raise argparse.ArgumentTypeError(f"{value} is empty")
    return p


def data_folder(value: str) -> Path:
    """A folder that exists."""
    p = Path(value)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {value}")
    return p


def output_folder(value: str) -> Path:
    """A folder to write into: absent (created later) or an existing folder, never an existing file."""
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{value} exists and is not a folder")
    if not p.exists() and p.parent.exists() and not p.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{p.parent} is not a folder")
    return p


def count(minimum: int) -> Callable[[str], int]:
    """A whole number ≥ ``minimum``."""

    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {n}")
        return n

    parse.__name__ = f"count≥{minimum}"
    return parse


def seconds(value: str) -> float:
    """A duration in seconds, ≥ 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not x >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be ≥ 0 seconds, got {value}")
    return x


def cost_bps(value: str) -> float:
    """Basis points per unit of turnover, ≥ 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of basis points") from None
    if not x >= 0 or x == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {value}")
    return x


# --- shared options ----------------------------------------------------------------------------------------
def add_book(p: argparse.ArgumentParser) -> None:
    """``--book``: one default everywhere, the deployment's book (REGIME_BOOK_ID)."""
    p.add_argument("--book", default=None, help="book id (default REGIME_BOOK_ID)")


def book_or_default(book: str | None) -> str:
    """The ``--book`` given, else the deployment's book from the settings."""
    if book:
        return book
    from regime_tasks.config import get_settings

    return get_settings().book_id


def add_json(p: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    """``--json``."""
    p.add_argument("--json", action="store_true", help=help)


def add_now(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--now``: an ISO-8601 UTC instant."""
    p.add_argument(
        "--now",
        type=utc_time,
        default=None,
        help=help or "as known at this ISO-8601 UTC time: bars closing later are not used (default: the clock)",
    )


def add_files(p: argparse.ArgumentParser) -> None:
    """``--files``: a data folder in the bundled layout, else the configured one."""
    p.add_argument(
        "--files", type=data_folder, default=None, help="data folder in the bundled layout (default REGIME_FILES_DIR)"
    )


def add_window(p: argparse.ArgumentParser, first: str, last: str) -> None:
    """``--start`` and ``--end`` (required; the parser checks start < end)."""
    p.add_argument("--start", type=utc_time, required=True, help=first)
    p.add_argument("--end", type=utc_time, required=True, help=last)


Registrar = Callable[[Any], None]
