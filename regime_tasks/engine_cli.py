"""``regime engine FILE``: run the Uptrend Engine v4 over any candle file and print every bar's state."""

from __future__ import annotations

import collections
import itertools
import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame
from regime_tasks.sources.files import read_candle_file as read_bars_file

log = logging.getLogger(__name__)
FLAG_KEYS = ("buy_signal", "buy_flag", "rebuy_flag", "trim_flag", "emergency_exit", "reclaimed_ema333", "exit_position")


def read_candle_file(path: str | Path, timeframe: str) -> tuple[pd.DataFrame, int]:
    """The file's bars on a regular grid (absent bars filled flat) and how many were filled."""
    filled, n_filled = fill_gaps(read_bars_file(path, timeframe), timeframe)
    return filled.drop(columns="filled"), n_filled


def run_file(path: str | Path, timeframe: str, settings: EngineSettings) -> tuple[list[dict[str, Any]], int]:
    """Payloads of every bar of the file (replay from the first bar)."""
    bars, n_filled = read_candle_file(path, timeframe)
    payloads, _ = run_engine_frame(compute_ta_frame(bars), settings)
    return payloads, n_filled


def summarise(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    states = [p["state"] for p in payloads]
    transitions = collections.Counter(f"{a}→{b}" for a, b in itertools.pairwise(states) if a != b and a != "warming_up")
    return {
        "bars": len(payloads),
        "bars_per_state": dict(collections.Counter(states)),
        "transitions": dict(transitions),
        "flags": {k: sum(1 for p in payloads if p[k]) for k in FLAG_KEYS},
        "last": {"bar_ts": payloads[-1]["bar_ts"], "state": payloads[-1]["state"]} if payloads else None,
    }


def line(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "bar_ts": p["bar_ts"],
        "state": p["state"],
        "price": p["price"],
        **{k: p[k] for k in FLAG_KEYS},
        "scores": p["scores"],
    }


def print_jsonl(payloads: list[dict[str, Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout  # the stdout of the call, not of the import (tests and callers replace it)
    for p in payloads:
        out.write(json.dumps(line(p), separators=(",", ":")) + "\n")


def print_table(payloads: list[dict[str, Any]], summary: dict[str, Any], *, n_filled: int, tail: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Uptrend Engine v4")
    for col in ("bar (open, UTC)", "state", "price", "flags", "TS", "OX", "DX", "EDX"):
        table.add_column(col)
    shown = payloads if tail is None else payloads[-tail:]

    def f(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    for p in shown:
        s = p["scores"]
        flags = ",".join(k for k in FLAG_KEYS if p[k])
        table.add_row(
            p["bar_ts"], p["state"], f"{p['price']:.6g}", flags, f(s["ts"]), f(s["ox"]), f(s["dx"]), f(s["edx"])
        )
    console.print(table)
    console.print(f"bars: {summary['bars']} ({n_filled} filled flat); per state: {summary['bars_per_state']}")
    console.print(f"transitions: {summary['transitions']}")
    console.print(f"flags: {summary['flags']}")
