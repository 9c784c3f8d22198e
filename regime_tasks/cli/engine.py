"""``regime engine FILE``: run the Uptrend Engine v4 over any candle file and print every bar's state."""

from __future__ import annotations

import argparse
import collections
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from regime_tasks.cli.options import TIMEFRAMES, add_json, count, input_file
from regime_tasks.core.constants import TIMEFRAME_SECONDS
from regime_tasks.errors import DataValidationError

if TYPE_CHECKING:  # pandas and the engine load when the command runs, not when the parser is built
    import pandas as pd

    from regime_tasks.core.payloads import EnginePayload
    from regime_tasks.core.uptrend import Diagnostics, EngineSettings

log = logging.getLogger(__name__)
FLAG_KEYS = ("buy_signal", "buy_flag", "rebuy_flag", "trim_flag", "emergency_exit", "reclaimed_ema333", "exit_position")
# Above this share of invented (flat-filled) bars the states describe the filling, not the market.
MAX_FILLED_SHARE = 0.05


def check_spacing(bars: pd.DataFrame, timeframe: str, path: str | Path) -> None:
    """Refuse a file whose median bar spacing is not ``timeframe`` (a 1d file read as 1h is 96 % filled bars)."""
    import pandas as pd

    if len(bars) < 2:
        raise DataValidationError(f"need at least two candles, found {len(bars)}", series=str(path))
    spacing = bars.index.to_series().diff().median()
    expected = pd.Timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    if spacing != expected:
        own = [tf for tf, secs in TIMEFRAME_SECONDS.items() if pd.Timedelta(seconds=secs) == spacing]
        hint = f"; pass --timeframe {own[0]}" if own else ""
        raise DataValidationError(
            f"the file's bars are {spacing} apart (median), not {timeframe}{hint}", series=str(path), field="timestamp"
        )


def check_filled_share(n_filled: int, n_bars: int, path: str | Path, *, allow_filled: bool) -> None:
    """Refuse (unless ``allow_filled``) when more than 5 % of the bars would be invented by filling gaps."""
    share = n_filled / n_bars if n_bars else 0.0
    if share > MAX_FILLED_SHARE and not allow_filled:
        raise DataValidationError(
            f"{n_filled} of {n_bars} bars ({share:.1%}) would be filled flat, more than {MAX_FILLED_SHARE:.0%}; "
            "pass --allow-filled to run anyway",
            series=str(path),
        )


def run_file(
    path: str | Path, timeframe: str, settings: EngineSettings, *, allow_filled: bool = False
) -> tuple[list[EnginePayload], int]:
    """Payloads of every bar of the file (replay from the first bar) and how many bars were filled flat."""
    payloads, _, n_filled = stream_file(path, timeframe, settings, allow_filled=allow_filled)
    return list(payloads), n_filled


def stream_file(
    path: str | Path,
    timeframe: str,
    settings: EngineSettings,
    *,
    allow_filled: bool = False,
    diagnostics: Diagnostics = "all",
) -> tuple[Iterator[EnginePayload], int, int]:
    """The payloads of the file's bars one at a time (a long file is never held as payloads), the number of bars
    and how many were filled flat. The file is read and checked before this returns."""
    from regime_tasks.core.series import run_series
    from regime_tasks.sources.files import read_candle_file as read_bars_file

    raw = read_bars_file(path, timeframe)
    check_spacing(raw, timeframe, path)

    def refuse_filled(n_filled: int, n_bars: int) -> None:
        check_filled_share(n_filled, n_bars, path, allow_filled=allow_filled)

    run = run_series(raw, timeframe, settings, diagnostics=diagnostics, check_filled=refuse_filled)
    payloads = (p for p, _ in run.payloads)
    return payloads, len(run.ta), run.n_filled


class Summary:
    """Counts of :func:`summarise`, gathered one payload at a time."""

    def __init__(self) -> None:
        self.bars = 0
        self.states: collections.Counter[str] = collections.Counter()
        self.transitions: collections.Counter[str] = collections.Counter()
        self.flags = dict.fromkeys(FLAG_KEYS, 0)
        self.last: dict[str, Any] | None = None

    def add(self, p: Mapping[str, Any]) -> None:
        state = p["state"]
        if self.last is not None and self.last["state"] != state and self.last["state"] != "warming_up":
            self.transitions[f"{self.last['state']}→{state}"] += 1
        self.bars += 1
        self.states[state] += 1
        for k in FLAG_KEYS:
            if p[k]:
                self.flags[k] += 1
        self.last = {"bar_ts": p["bar_ts"], "state": state}

    def as_dict(self) -> dict[str, Any]:
        return {
            "bars": self.bars,
            "bars_per_state": dict(self.states),
            "transitions": dict(self.transitions),
            "flags": dict(self.flags),
            "last": self.last,
        }


def summarise(payloads: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    summary = Summary()
    for p in payloads:
        summary.add(p)
    return summary.as_dict()


def line(p: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "bar_ts": p["bar_ts"],
        "state": p["state"],
        "price": p["price"],
        **{k: p[k] for k in FLAG_KEYS},
        "scores": p["scores"],
    }


def print_jsonl(payloads: Iterable[Mapping[str, Any]], out: TextIO | None = None) -> None:
    """One JSON object per line. orjson: a third of the stdlib encoder's time here; floats print in the shortest
    form that reads back to the same number (``4.2e-05`` may print as ``0.000042``: the same float)."""
    import orjson

    out = out or sys.stdout  # the stdout of the call, not of the import (tests and callers replace it)
    write, dumps, newline = out.write, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for p in payloads:
        write(dumps(line(p), option=newline).decode())


def print_table(
    payloads: Sequence[Mapping[str, Any]], summary: dict[str, Any], *, n_filled: int, tail: int | None
) -> None:
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
    share = n_filled / summary["bars"] if summary["bars"] else 0.0
    console.print(
        f"bars: {summary['bars']} ({n_filled} filled flat, {share:.1%}); per state: {summary['bars_per_state']}"
    )
    console.print(f"transitions: {summary['transitions']}")
    console.print(f"flags: {summary['flags']}")


# --- the command ------------------------------------------------------------------------------------
def _cmd_engine(args: argparse.Namespace) -> int:
    from regime_tasks.cli.render import print_json
    from regime_tasks.core.uptrend import EngineSettings

    settings = EngineSettings(
        bootstrap=args.bootstrap,
        sr_levels=args.sr_levels,
        inputs=args.inputs,
        edx_1d_count=args.edx_1d_count,
        edx=args.edx,
        gaps=args.gaps,
    )
    # payloads stream from the engine: --jsonl prints each as it comes and the table keeps only its tail, so a
    # file of millions of bars never sits in memory as payloads; only --json (every payload in full) keeps them
    payloads, n_bars, n_filled = stream_file(
        args.file, args.timeframe, settings, allow_filled=args.allow_filled, diagnostics="all" if args.json else "none"
    )
    if args.allow_filled and n_filled:
        share = n_filled / n_bars
        print(f"regime: warning: {n_filled} of {n_bars} bars ({share:.1%}) filled flat", file=sys.stderr)
    summary = Summary()

    def counted() -> Iterator[Any]:
        for p in payloads:
            summary.add(p)
            yield p

    if args.jsonl:
        print_jsonl(counted())
    elif args.json:
        kept = list(counted())
        print_json({"summary": {**summary.as_dict(), "filled_bars": n_filled}, "bars": kept})
    else:
        tail = None if args.all else args.tail
        keep = tail if tail is not None and tail > 0 else None  # print_table slices [-tail:] as before
        shown = list(collections.deque(counted(), maxlen=keep))
        print_table(shown, {**summary.as_dict(), "filled_bars": n_filled}, n_filled=n_filled, tail=tail)
    return 0


def _add_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engine", help="run the Uptrend Engine v4 over a candle file (CSV or Parquet)")
    p.add_argument(
        "file",
        type=input_file,
        help="candles: timestamp,open,high,low,close,volume (timestamp ISO-8601 UTC or epoch ms)",
    )
    p.add_argument("--timeframe", required=True, choices=TIMEFRAMES)
    p.add_argument("--bootstrap", choices=["spec", "as_run"], default="spec", help="first-state rule (D14)")
    p.add_argument("--sr-levels", choices=["swing", "none"], default="swing", help="S/R levels (D14)")
    p.add_argument(
        "--inputs",
        choices=["correct", "as_run"],
        default="correct",
        help="as_run: the host's misread TA keys read as 0 (TS stays 0.5, no buy flag) (D14, spec §9)",
    )
    p.add_argument(
        "--edx-1d-count",
        choices=["bars", "as_run"],
        default="bars",
        help="as_run: count 1d bars since the S3 start in hours for EDX, as the host did (D14)",
    )
    p.add_argument(
        "--edx",
        choices=["spec", "as_run"],
        default="spec",
        help="as_run: EDX as the host computed it, from the first 500 bars after the S3 start with per-window TA "
        "(docs/ENGINE.md)",
    )
    p.add_argument(
        "--gaps",
        choices=["fill", "keep"],
        default="fill",
        help="fill: absent bars flat at the previous close (D5); keep: the rows as given, bars counted as rows, "
        "as the host's engine ran (docs/ENGINE.md)",
    )
    p.add_argument(
        "--allow-filled", action="store_true", help="run even when more than 5 %% of the bars are gaps filled flat"
    )
    p.add_argument("--jsonl", action="store_true", help="one JSON object per bar")
    add_json(p, "one JSON document: summary and full payloads")
    p.add_argument("--tail", type=count(1), default=40, help="table rows to show (default the last 40)")
    p.add_argument("--all", action="store_true", help="show every bar in the table")
    p.set_defaults(handler=_cmd_engine, reads_settings=False)  # pure computation on a file


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``engine``."""
    _add_engine(sub)
