"""The ``regime`` command.

Every sub-command has ``--help``; those that print results have ``--json``.

Error contract, enforced here and nowhere else: every failure prints exactly one line on stderr,
``regime: error: <what, which input>``, and exits **2** for bad input (arguments, files, settings) or **1** when a
service or data source is unavailable (``RegimeUnavailable``, database or Redis down) or on an unexpected crash.
Never a traceback unless ``-v`` asks for one. Arguments are checked by the parser (times, files, folders, counts,
windows) before a command does any work, so a command that fails on its input has written nothing.
Each command's work lives in the library; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from regime_tasks.errors import (
    RateLimitedError,
    RegimeError,
    RegimeUnavailable,
    SourceUnavailableError,
    StoreError,
)
from regime_tasks.logs import redact_url

Handler = Callable[[argparse.Namespace], int]
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 1


class _Parser(argparse.ArgumentParser):
    """argparse with the product's one-line error (argparse's own prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        # "argument --now: 'x' is not …" → "--now 'x' is not …": the option first, as in the other messages
        m = re.match(r"argument (-\S+): (.*)", message, re.DOTALL)
        if m:
            message = f"{m[1]} {m[2]}"
        sys.stderr.write(f"regime: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")
        sys.exit(EXIT_BAD_INPUT)


# --- argument types: every input is checked before a command starts ---------------------------------------
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def utc_time(value: str) -> Any:
    """An ISO-8601 time as a UTC ``pd.Timestamp``; a time without zone is UTC.

    Only times pandas can hold in nanoseconds (years 1677–2262) are accepted: bars are indexed that way, and a
    year-2400 time used to fail deep inside a command.
    """
    import pandas as pd

    if not _ISO_TIME.match(value.strip()):
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO-8601 UTC time such as 2025-07-26T04:00:00Z")
    try:
        t = pd.Timestamp(value.strip())
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        return t.as_unit("ns")
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


def _count(minimum: int) -> Callable[[str], int]:
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


def _check_arguments(args: argparse.Namespace) -> None:
    """Rules between arguments, for every command that has them."""
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is not None and end is not None and start >= end:
        iso = "%Y-%m-%dT%H:%M:%SZ"
        what = f"--start {start:{iso}} is not before --end {end:{iso}}"
        sys.stderr.write(f"regime: error: {what} (see `regime {args.command} --help`)\n")
        sys.exit(EXIT_BAD_INPUT)


def _print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


# --- db ----------------------------------------------------------------------------
def _cmd_db_init(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.store.db import init_db, make_engine

    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    changes = init_db(engine)
    if args.json:
        _print_json({"database": engine.url.render_as_string(hide_password=True), "changes": changes})
    elif changes:
        print(f"schema created/upgraded on {engine.url.render_as_string(hide_password=True)}:")
        for change in changes:
            print(f"  {change}")
    else:
        print(f"schema up to date on {engine.url.render_as_string(hide_password=True)}; nothing changed")
    return 0


def _cmd_db_dump_schema(args: argparse.Namespace) -> int:
    from pathlib import Path

    from regime_tasks.errors import ConfigError
    from regime_tasks.store.schema import DIALECTS, schema_sql, write_schema_sql

    dialects = [args.dialect] if args.dialect else list(DIALECTS)
    if args.out is None:
        sys.stdout.write("\n".join(schema_sql(d) for d in dialects))
        return 0
    try:
        paths = write_schema_sql(Path(args.out), dialects)
    except OSError as exc:
        raise ConfigError(f"--out {args.out}: cannot write the schema files: {exc.strerror or exc}") from exc
    for path in paths:
        print(f"wrote {path}")
    return 0


def _add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema management")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    init = dbsub.add_parser("init", help="create or upgrade the schema (idempotent)")
    init.add_argument("--json", action="store_true", help="machine-readable output")
    init.set_defaults(handler=_cmd_db_init)
    dump = dbsub.add_parser(
        "dump-schema", help="print (or write to DIR/<dialect>.sql) the schema's CREATE statements per dialect"
    )
    dump.add_argument("--dialect", choices=["postgresql", "sqlite"], default=None, help="default: both")
    dump.add_argument(
        "--out", type=output_folder, default=None, metavar="DIR", help="write DIR/<dialect>.sql (default: print)"
    )
    dump.set_defaults(handler=_cmd_db_dump_schema)


# --- pipeline: bootstrap, tick, demo ----------------------------------------------------------------
def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from regime_tasks.runner import print_bootstrap_report, run_bootstrap

    report = run_bootstrap(book_id=args.book, now=args.now)
    if args.json:
        _print_json(report.as_dict())
    else:
        print_bootstrap_report(report)
    if not report.ok:  # the report is printed (the worker's bootstrap task reads it from stdout), then exit 2
        hint = f" — {report.hint}" if report.hint else ""
        raise RegimeError("required drivers missing after bootstrap: " + ", ".join(report.missing_required) + hint)
    return 0


def _cmd_tick(args: argparse.Namespace) -> int:
    from regime_tasks.runner import run_tick_command

    result = run_tick_command(args.timeframe, until=args.until, book_id=args.book, wait=not args.no_wait)
    if args.json:
        _print_json(result)
    else:
        print(json.dumps(result, default=str, ensure_ascii=False))
        if result.get("message"):  # a tick that stepped nothing says so on its own line (issue 12)
            print(f"tick {args.timeframe}: {result['message']}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from regime_tasks.runner import run_demo

    return run_demo(as_json=args.json, minutes=args.minutes)


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bootstrap", help="create driver rows, backfill, replay history, fill the cache (plan §12)")
    p.add_argument("--book", default=None, help="book id (default REGIME_BOOK_ID)")
    p.add_argument(
        "--now", type=utc_time, default=None, help="pretend the time is this ISO-8601 UTC instant (file source)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=_cmd_bootstrap)

    p = sub.add_parser("tick", help="run one timeframe tick through Celery (what beat triggers)")
    p.add_argument("timeframe", choices=["1m", "1h", "1d"])
    p.add_argument(
        "--until", type=utc_time, default=None, help="open time of the last closed bar (default: by the clock)"
    )
    p.add_argument("--book", default=None, help="book id (default REGIME_BOOK_ID)")
    p.add_argument("--no-wait", action="store_true", help="send and return without waiting for the result")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_tick)

    p = sub.add_parser(
        "demo", help="embedded end-to-end run on bundled data: bootstrap, live-like ticks, regime table, A/E"
    )
    p.add_argument("--minutes", type=_count(0), default=5, help="1m ticks to run after the bootstrap (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_demo)


# --- engine ---------------------------------------------------------------------------------------------
def _cmd_engine(args: argparse.Namespace) -> int:
    from regime_tasks.core.uptrend import EngineSettings
    from regime_tasks.engine_cli import Summary, print_jsonl, print_table, stream_file

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
        _print_json({"summary": {**summary.as_dict(), "filled_bars": n_filled}, "bars": kept})
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
    p.add_argument("--timeframe", required=True, choices=["1m", "5m", "15m", "1h", "4h", "1d"])
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
    p.add_argument("--json", action="store_true", help="one JSON document: summary and full payloads")
    p.add_argument("--tail", type=_count(1), default=40, help="table rows to show (default the last 40)")
    p.add_argument("--all", action="store_true", help="show every bar in the table")
    p.set_defaults(handler=_cmd_engine)


# --- imports ------------------------------------------------------------------------------------------
def _engine_from_settings():
    from regime_tasks.runtime import get_runtime

    return get_runtime().engine


def _cmd_import_dominance(args: argparse.Namespace) -> int:
    from regime_tasks.importers import import_dominance

    result = import_dominance(_engine_from_settings, args.file, timeframe=args.timeframe)
    _print_json(result) if args.json else print(
        f"imported {result['written']} bars per driver ({result['timeframe']}, {result['first']} → {result['last']})"
        + (
            f"; {result['floored']} rows off the {result['timeframe']} grid floored to their bar's open "
            f"(e.g. {result['floored_example']})"
            if result["floored"]
            else ""
        )
    )
    return 0


def _cmd_import_candles(args: argparse.Namespace) -> int:
    from regime_tasks.importers import import_candles

    result = import_candles(_engine_from_settings, args.file, series=args.series, timeframe=args.timeframe)
    conflicting = result["conflicting_duplicates"]
    _print_json(result) if args.json else print(
        f"imported {result['written']} {result['timeframe']} bars into {result['series']} "
        f"({result['first']} → {result['last']})"
        + (
            f"; {len(conflicting)} bar times repeated with different values, the last row kept: "
            + ", ".join(conflicting[:5])
            + (" …" if len(conflicting) > 5 else "")
            if conflicting
            else ""
        )
    )
    return 0


def _cmd_import_tokens(args: argparse.Namespace) -> int:
    from regime_tasks.importers import import_tokens

    result = import_tokens(_engine_from_settings, args.file)  # the file is checked before the database opens
    dup = result["duplicates"]
    _print_json(result) if args.json else print(
        f"imported {result['tokens']} tokens" + (f" ({dup} identical duplicate rows counted once)" if dup else "")
    )
    return 0


def _add_imports(sub: argparse._SubParsersAction) -> None:
    tfs = ["1m", "5m", "15m", "1h", "4h", "1d"]
    p = sub.add_parser("import-dominance", help="import BTC.d/USDT.d history: CSV timestamp,btc_d,usdt_d (D4)")
    p.add_argument("file", type=input_file)
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_import_dominance)
    p = sub.add_parser("import-candles", help="import a candle file into one price series")
    p.add_argument("file", type=input_file, help="CSV/Parquet: timestamp,open,high,low,close,volume")
    p.add_argument("--series", required=True, help="majors:BTC | lowcap:SYMBOL[@chain] | regime:DRIVER")
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_import_candles)
    p = sub.add_parser("import-tokens", help="import token market caps (symbol,chain,market_cap_usd,as_of)")
    p.add_argument("file", type=input_file)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_import_tokens)


# --- levers and status ------------------------------------------------------------------------------------
def _cmd_levers(args: argparse.Namespace) -> int:
    from regime_tasks.levers_cli import levers_report, parse_intent, parse_now, print_levers

    res = levers_report(args.bucket, args.exec_tf, args.book, parse_intent(args.intent), parse_now(args.now))
    _print_json(res) if args.json else print_levers(res)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from regime_tasks.levers_cli import parse_now, print_status, status_report

    rep = status_report(args.book, parse_now(args.now))
    _print_json(rep) if args.json else print_status(rep)
    return 0


def _add_levers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("levers", help="A, E and size for one bucket and execution timeframe, with contributions")
    p.add_argument("--bucket", choices=["nano", "small", "mid", "big"], default=None)
    p.add_argument("--exec-tf", required=True, help="execution timeframe: 1m 5m 15m 1h 4h 1d")
    p.add_argument("--book", default="onchain_crypto")
    p.add_argument("--intent", action="append", default=[], help="intent metric, e.g. hi_buy=1 (repeatable)")
    p.add_argument(
        "--now",
        type=utc_time,
        default=None,
        help="as known at this ISO-8601 UTC time: bars closing later are not used (default: the clock)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_levers)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the 24 driver states and the market summary")
    p.add_argument("--book", default="onchain_crypto")
    p.add_argument(
        "--now",
        type=utc_time,
        default=None,
        help="as known at this ISO-8601 UTC time: bars closing later are not used (default: the clock)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_status)


# --- replay --------------------------------------------------------------------------------------------
def _cmd_replay(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.replay import run_replay
    from regime_tasks.replay.report import write_report
    from regime_tasks.runner import progress_reporter
    from regime_tasks.sources.files import FileSource

    s = get_settings()
    source = FileSource(args.files or s.files_dir)
    tfs = tuple(args.timeframe) if args.timeframe else ("1d", "1h", "1m")
    with progress_reporter("replay") as progress:
        result = run_replay(
            source,
            start=args.start,
            end=args.end,
            timeframes=tfs,
            settings=s.engine_settings(),
            bucket_thresholds={
                "nano_max_usd": s.bucket_nano_max_usd,
                "small_max_usd": s.bucket_small_max_usd,
                "mid_max_usd": s.bucket_mid_max_usd,
            },
            progress=progress,
        )
    paths = write_report(result, args.out)
    summary = {
        "start": str(result.start),
        "end": str(result.end),
        "timeframes": list(tfs),
        "series_bars": len(result.series),
        "simulated_inputs": sorted(f"{d} {tf}" for d, tf in result.simulated),
        "report": str(paths["html"]),
        "files": {k: str(v) for k, v in paths.items()},
    }
    _print_json(summary) if args.json else print(f"report written to {paths['html']} ({len(result.series)} bars)")
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the pipeline bar by bar over history and write a validation report")
    p.add_argument("--start", type=utc_time, required=True, help="first bar to report, ISO-8601 UTC")
    p.add_argument("--end", type=utc_time, required=True, help="last bar to report, ISO-8601 UTC (after --start)")
    p.add_argument("--timeframe", action="append", choices=["1d", "1h", "1m"], help="repeatable; default all")
    p.add_argument(
        "--files", type=data_folder, default=None, help="data folder in the bundled layout (default REGIME_FILES_DIR)"
    )
    p.add_argument("--out", type=output_folder, default="replay_out", help="report folder (default ./replay_out)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_cmd_replay)


# --- evaluate ------------------------------------------------------------------------------------------
def cost_bps(value: str) -> float:
    """Basis points per unit of turnover, ≥ 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of basis points") from None
    if not x >= 0 or x == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {value}")
    return x


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from regime_tasks.config import get_settings
    from regime_tasks.replay.evaluate import TRADABLE, check_options, check_window, run_evaluation
    from regime_tasks.replay.history import FileHistory, StoreHistory
    from regime_tasks.replay.report import write_evaluation
    from regime_tasks.runner import progress_reporter
    from regime_tasks.sources.files import FileSource

    start, end = args.start, args.end
    tfs = tuple(dict.fromkeys(args.timeframe or ["1d", "1h"]))
    series = tuple(dict.fromkeys(args.series or TRADABLE))
    check_window(start, end)  # before any work: nothing is read or written for a bad window
    check_options(tfs, series, args.cost_bps, args.exec_tf)
    s = get_settings()
    if args.from_db:
        from regime_tasks.runtime import get_runtime

        history: Any = StoreHistory(get_runtime().engine)
    else:
        history = FileHistory(FileSource(args.files or s.files_dir))
    with progress_reporter("evaluate") as progress:
        ev = run_evaluation(
            history,
            start=start,
            end=end,
            timeframes=tfs,
            series=series,
            cost_bps=args.cost_bps,
            exec_tf=args.exec_tf,
            settings=s.engine_settings(),
            bucket_thresholds={
                "nano_max_usd": s.bucket_nano_max_usd,
                "small_max_usd": s.bucket_small_max_usd,
                "mid_max_usd": s.bucket_mid_max_usd,
            },
            progress=progress,
        )
    paths = write_evaluation(ev, Path(args.out))
    if args.json:
        _print_json({**ev.as_dict(), "files": {k: str(v) for k, v in paths.items()}})
    else:
        print(f"report written to {paths['html']}; summary in {paths['summary']}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="does sizing by the regime help? forward returns with intervals, sizing backtest vs baselines, latency",
    )
    p.add_argument("--start", type=utc_time, required=True, help="first bar of the window, ISO-8601 UTC")
    p.add_argument("--end", type=utc_time, required=True, help="last bar of the window, ISO-8601 UTC (after --start)")
    p.add_argument(
        "--timeframe", nargs="+", action="extend", choices=["1d", "1h"], help="series timeframes (default both)"
    )
    p.add_argument(
        "--series",
        nargs="+",
        action="extend",
        choices=["BTC", "ALT", "nano", "small", "mid", "big"],
        help="tradable series (default all)",
    )
    p.add_argument(
        "--cost-bps", type=cost_bps, default=10.0, help="cost per unit of turnover, basis points (default 10)"
    )
    p.add_argument(
        "--exec-tf",
        choices=["1m", "5m", "15m", "1h", "4h", "1d"],
        default=None,
        help="execution timeframe of the bucket levers (default: the series' timeframe)",
    )
    p.add_argument("--from-db", action="store_true", help="read the stored history (after regime import-candles)")
    p.add_argument(
        "--files", type=data_folder, default=None, help="data folder in the bundled layout (default REGIME_FILES_DIR)"
    )
    p.add_argument("--out", type=output_folder, default="evaluate_out", help="report folder (default ./evaluate_out)")
    p.add_argument("--json", action="store_true", help="every number of the report as JSON on stdout")
    p.set_defaults(handler=_cmd_evaluate)


# --- command registry -----------------------------------------------------------------
# Each entry adds one sub-command. Keep one function per command family.
# --- stream ---------------------------------------------------------------------------------------------
def _cmd_stream(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.runtime import get_runtime
    from regime_tasks.stream import run_stream

    if get_settings().source != "live":
        from regime_tasks.errors import ConfigError

        raise ConfigError("stream needs REGIME_SOURCE=live (it reads Hyperliquid's websocket)")
    rt = get_runtime()
    coins = tuple(c.strip().upper() for c in args.coins.split(",")) if args.coins else None
    result = run_stream(rt, coins=coins, seconds=args.seconds)
    _print_json(result)
    return 0


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="write Hyperliquid's closed 1m candles (HYPE) to the store as they close")
    p.add_argument("--coins", default=None, help="comma-separated coins (default: the majors sourced from Hyperliquid)")
    p.add_argument("--seconds", type=seconds, default=None, help="stop after this long (default: until Ctrl-C)")
    p.set_defaults(handler=_cmd_stream)


def _cmd_flower(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.monitor import exec_flower

    exec_flower(get_settings())
    return 0  # pragma: no cover - exec_flower replaces the process


def _add_flower(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flower",
        help="Flower (Celery monitor) with REGIME_FLOWER_BASIC_AUTH enforced, on REGIME_FLOWER_ADDRESS (loopback)",
    )
    p.set_defaults(handler=_cmd_flower)


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_db,
    _add_pipeline,
    _add_engine,
    _add_imports,
    _add_levers,
    _add_status,
    _add_replay,
    _add_evaluate,
    _add_stream,
    _add_flower,
    # >>> more commands register here (one line each) <<<
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="regime",
        description="Market-regime levers (A, E) from trend states of BTC, ALT, market-cap buckets and dominance.",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=None,
        help="log level (default WARNING, or REGIME_LOG_LEVEL when set)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs (-v INFO, -vv DEBUG) and tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    _accept_verbose_after_the_command(parser)
    return parser


def _accept_verbose_after_the_command(parser: argparse.ArgumentParser) -> None:
    """``regime status -v`` as well as ``regime -v status`` (SUPPRESS: absent, it leaves the top-level count)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):
                    _accept_verbose_after_the_command(sub)
                else:
                    sub.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logs")


def _log_level(args: argparse.Namespace, settings: Any) -> str:
    """Quiet by default (a CLI call is not a service log): WARNING, unless asked for more."""
    if args.log_level:
        return args.log_level
    if args.verbose:
        return "INFO" if args.verbose == 1 else "DEBUG"
    return settings.log_level if "log_level" in settings.model_fields_set else "WARNING"


_SERVICE_CLIENTS = {"sqlalchemy", "psycopg2", "redis", "kombu", "amqp"}


def _is_service_error(exc: BaseException) -> bool:
    """A database, Redis or broker client error (their connection errors are their own classes)."""
    return type(exc).__module__.split(".")[0] in _SERVICE_CLIENTS


def exit_code(exc: BaseException) -> int:
    """2 for bad input, 1 for a service or data source that is unavailable (or an unexpected crash)."""
    unavailable = RegimeUnavailable | StoreError | SourceUnavailableError | RateLimitedError
    if isinstance(exc, unavailable | ConnectionError | TimeoutError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, RegimeError):
        return EXIT_BAD_INPUT
    if _is_service_error(exc):
        return EXIT_UNAVAILABLE
    if isinstance(exc, OSError):  # a path we cannot read or write: the caller's input
        return EXIT_BAD_INPUT
    return EXIT_UNAVAILABLE


def error_line(exc: BaseException) -> str:
    """``regime: error: …`` on one line (driver messages such as SQLAlchemy's span several)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    text = lines[0] if lines else type(exc).__name__
    if not isinstance(exc, RegimeError | OSError) and not _is_service_error(exc):
        text = f"unexpected {type(exc).__name__}: {text} (rerun with -v for the traceback)"
    return f"regime: error: {redact_url(text)}"  # a driver's message may carry a URL with its password


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_arguments(args)
    except SystemExit as exc:  # --help (0) or a bad argument (2, already printed on one line)
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_BAD_INPUT
    from regime_tasks.config import get_settings
    from regime_tasks.logs import configure_logging

    verbose = bool(getattr(args, "verbose", 0))
    try:
        settings = get_settings()
        configure_logging(_log_level(args, settings))
        handler: Handler = args.handler
        return handler(args)
    except KeyboardInterrupt:
        print("regime: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except Exception as exc:  # the one place where failures become one line and an exit code
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(error_line(exc), file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
