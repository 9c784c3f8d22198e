"""The ``regime`` command.

Every sub-command has ``--help``; those that print results have ``--json``. Exit codes: 0 success,
2 a known failure (one line on stderr: ``regime: error: …``), 1 an unexpected crash.
Each command's work lives in the library; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from regime_tasks.errors import RegimeError
from regime_tasks.logs import redact_url

Handler = Callable[[argparse.Namespace], int]


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
    dump.add_argument("--out", default=None, metavar="DIR", help="write DIR/<dialect>.sql (default: print)")
    dump.set_defaults(handler=_cmd_db_dump_schema)


# --- pipeline: bootstrap, tick, demo ----------------------------------------------------------------
def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from regime_tasks.runner import print_bootstrap_report, run_bootstrap

    report = run_bootstrap(book_id=args.book, now=args.now)
    if args.json:
        _print_json(report.as_dict())
    else:
        print_bootstrap_report(report)
    if not report.ok:
        print(
            "regime: error: required drivers missing after bootstrap: " + ", ".join(report.missing_required),
            file=sys.stderr,
        )
        return 2
    return 0


def _cmd_tick(args: argparse.Namespace) -> int:
    from regime_tasks.runner import run_tick_command

    result = run_tick_command(args.timeframe, until=args.until, book_id=args.book, wait=not args.no_wait)
    _print_json(result) if args.json else print(json.dumps(result, default=str))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from regime_tasks.runner import run_demo

    return run_demo(as_json=args.json, minutes=args.minutes)


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bootstrap", help="create driver rows, backfill, replay history, fill the cache (plan §12)")
    p.add_argument("--book", default=None, help="book id (default REGIME_BOOK_ID)")
    p.add_argument("--now", default=None, help="pretend the time is this ISO-8601 UTC instant (file source)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(handler=_cmd_bootstrap)

    p = sub.add_parser("tick", help="run one timeframe tick through Celery (what beat triggers)")
    p.add_argument("timeframe", choices=["1m", "1h", "1d"])
    p.add_argument("--until", default=None, help="open time of the last closed bar (default: by the clock)")
    p.add_argument("--book", default=None, help="book id (default REGIME_BOOK_ID)")
    p.add_argument("--no-wait", action="store_true", help="send and return without waiting for the result")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_tick)

    p = sub.add_parser(
        "demo", help="embedded end-to-end run on bundled data: bootstrap, live-like ticks, regime table, A/E"
    )
    p.add_argument("--minutes", type=int, default=5, help="1m ticks to run after the bootstrap (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_demo)


# --- engine ---------------------------------------------------------------------------------------------
def _cmd_engine(args: argparse.Namespace) -> int:
    from regime_tasks.core.uptrend import EngineSettings
    from regime_tasks.engine_cli import print_jsonl, print_table, run_file, summarise

    settings = EngineSettings(
        bootstrap=args.bootstrap, sr_levels=args.sr_levels, inputs=args.inputs, edx_1d_count=args.edx_1d_count
    )
    payloads, n_filled = run_file(args.file, args.timeframe, settings, allow_filled=args.allow_filled)
    summary = summarise(payloads)
    summary["filled_bars"] = n_filled
    if args.allow_filled and n_filled:
        share = n_filled / len(payloads)
        print(f"regime: warning: {n_filled} of {len(payloads)} bars ({share:.1%}) filled flat", file=sys.stderr)
    if args.jsonl:
        print_jsonl(payloads)
    elif args.json:
        _print_json({"summary": summary, "bars": [p for p in payloads]})
    else:
        print_table(payloads, summary, n_filled=n_filled, tail=None if args.all else args.tail)
    return 0


def _add_engine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engine", help="run the Uptrend Engine v4 over a candle file (CSV or Parquet)")
    p.add_argument("file", help="candles: timestamp,open,high,low,close,volume (timestamp ISO-8601 UTC or epoch ms)")
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
        "--allow-filled", action="store_true", help="run even when more than 5 %% of the bars are gaps filled flat"
    )
    p.add_argument("--jsonl", action="store_true", help="one JSON object per bar")
    p.add_argument("--json", action="store_true", help="one JSON document: summary and full payloads")
    p.add_argument("--tail", type=int, default=40, help="table rows to show (default the last 40)")
    p.add_argument("--all", action="store_true", help="show every bar in the table")
    p.set_defaults(handler=_cmd_engine)


# --- imports ------------------------------------------------------------------------------------------
def _engine_from_settings():
    from regime_tasks.runtime import get_runtime

    return get_runtime().engine


def _cmd_import_dominance(args: argparse.Namespace) -> int:
    from regime_tasks.importers import import_dominance

    result = import_dominance(_engine_from_settings(), args.file, timeframe=args.timeframe)
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

    result = import_candles(_engine_from_settings(), args.file, series=args.series, timeframe=args.timeframe)
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
    p.add_argument("file")
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_import_dominance)
    p = sub.add_parser("import-candles", help="import a candle file into one price series")
    p.add_argument("file", help="CSV/Parquet: timestamp,open,high,low,close,volume")
    p.add_argument("--series", required=True, help="majors:BTC | lowcap:SYMBOL[@chain] | regime:DRIVER")
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_import_candles)
    p = sub.add_parser("import-tokens", help="import token market caps (symbol,chain,market_cap_usd,as_of)")
    p.add_argument("file")
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
    p.add_argument("--now", default=None, help="judge staleness at this ISO-8601 UTC time (default: now)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_levers)


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the 24 driver states and the market summary")
    p.add_argument("--book", default="onchain_crypto")
    p.add_argument("--now", default=None, help="judge staleness at this ISO-8601 UTC time (default: now)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_status)


# --- replay --------------------------------------------------------------------------------------------
def _cmd_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from regime_tasks.config import get_settings
    from regime_tasks.replay import run_replay
    from regime_tasks.report import write_report
    from regime_tasks.runner import progress_reporter
    from regime_tasks.sources.files import FileSource
    from regime_tasks.steps import parse_ts

    s = get_settings()
    source = FileSource(Path(args.files) if args.files else s.files_dir)
    tfs = tuple(args.timeframe) if args.timeframe else ("1d", "1h", "1m")
    with progress_reporter("replay") as progress:
        result = run_replay(
            source,
            start=parse_ts(args.start),
            end=parse_ts(args.end),
            timeframes=tfs,
            settings=s.engine_settings(),
            bucket_thresholds={
                "nano_max_usd": s.bucket_nano_max_usd,
                "small_max_usd": s.bucket_small_max_usd,
                "mid_max_usd": s.bucket_mid_max_usd,
            },
            progress=progress,
        )
    paths = write_report(result, Path(args.out))
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
    p.add_argument("--start", required=True, help="first bar to report, ISO-8601 UTC")
    p.add_argument("--end", required=True, help="last bar to report, ISO-8601 UTC")
    p.add_argument("--timeframe", action="append", choices=["1d", "1h", "1m"], help="repeatable; default all")
    p.add_argument("--files", default=None, help="data folder in the bundled layout (default REGIME_FILES_DIR)")
    p.add_argument("--out", default="replay_out", help="report folder (default ./replay_out)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(handler=_cmd_replay)


# --- command registry -----------------------------------------------------------------
# Each entry adds one sub-command. Keep one function per command family.
# --- stream ---------------------------------------------------------------------------------------------
def _cmd_stream(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.runtime import get_runtime
    from regime_tasks.stream import run_stream

    if get_settings().source != "live":
        print("regime: error: stream needs REGIME_SOURCE=live (it reads Hyperliquid's websocket)", file=sys.stderr)
        return 2
    rt = get_runtime()
    coins = tuple(c.strip().upper() for c in args.coins.split(",")) if args.coins else None
    result = run_stream(rt, coins=coins, seconds=args.seconds)
    _print_json(result)
    return 0


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="write Hyperliquid's closed 1m candles (HYPE) to the store as they close")
    p.add_argument("--coins", default=None, help="comma-separated coins (default: the majors sourced from Hyperliquid)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
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
    _add_stream,
    _add_flower,
    # >>> more commands register here (one line each) <<<
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regime",
        description="Market-regime levers (A, E) from trend states of BTC, ALT, market-cap buckets and dominance.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default REGIME_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from regime_tasks.config import get_settings
    from regime_tasks.logs import configure_logging

    try:
        settings = get_settings()
        configure_logging(args.log_level or settings.log_level)
        handler: Handler = args.handler
        return handler(args)
    except RegimeError as exc:
        print(f"regime: error: {redact_url(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regime: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
