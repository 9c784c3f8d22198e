"""Printing shared by the commands: JSON on stdout and the rich console and cell formats of the tables."""

from __future__ import annotations

import json
import sys
from typing import Any

# What S0–S4 mean, for a trader reading the tables (the Uptrend Engine v4 state machine).
STATE_LEGEND = (
    "S0 bearish order (downtrend), S1 early recovery (price back above EMA60), S2 above EMA333 (defensive), "
    "S3 bullish trend (bullish EMA order), S4 uncertain (no clear order, watch only)"
)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def make_console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns and elide the numbers
        console = Console(width=160)
    return console


def signed(x: float, digits: int) -> str:
    """``+0.0000`` for zero and for values that round to zero (never ``-0.0000``)."""
    text = f"{x:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text


def state_text(row: dict[str, Any]) -> str:
    """The state, and for a driver still warming up the bars it has against the bars a state needs."""
    warm = row.get("warming_up") if row.get("state") == "warming_up" else None
    if warm and warm.get("bars") is not None and warm.get("needed") is not None:
        return f"warming_up ({warm['bars']}/{warm['needed']} bars)"
    return str(row.get("state"))
