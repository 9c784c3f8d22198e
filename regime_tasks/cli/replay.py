"""``regime replay`` (validation report over history) and ``regime evaluate`` (does sizing by the regime help?)."""

from __future__ import annotations

import argparse
from typing import Any

from regime_tasks.cli.options import (
    EVAL_TFS,
    EXEC_TFS,
    REGIME_TFS,
    TRADABLE_CHOICES,
    add_files,
    add_json,
    add_window,
    cost_bps,
    output_folder,
)
from regime_tasks.cli.render import print_json


def _cmd_replay(args: argparse.Namespace) -> int:
    from regime_tasks.cli.pipeline import progress_reporter
    from regime_tasks.config import get_settings
    from regime_tasks.replay import run_replay
    from regime_tasks.replay.report import write_report
    from regime_tasks.sources.files import FileSource

    s = get_settings()
    source = FileSource(args.files or s.files_dir)
    tfs = tuple(args.timeframe) if args.timeframe else REGIME_TFS
    with progress_reporter("replay") as progress:
        result = run_replay(
            source,
            start=args.start,
            end=args.end,
            timeframes=tfs,
            settings=s.engine_settings(),
            bucket_thresholds=s.bucket_thresholds,
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
    print_json(summary) if args.json else print(f"report written to {paths['html']} ({len(result.series)} bars)")
    return 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the pipeline bar by bar over history and write a validation report")
    add_window(p, "first bar to report, ISO-8601 UTC", "last bar to report, ISO-8601 UTC (after --start)")
    p.add_argument("--timeframe", action="append", choices=REGIME_TFS, help="repeatable; default all")
    add_files(p)
    p.add_argument("--out", type=output_folder, default="replay_out", help="report folder (default ./replay_out)")
    add_json(p, "machine-readable summary")
    p.set_defaults(handler=_cmd_replay)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from regime_tasks.cli.pipeline import progress_reporter
    from regime_tasks.config import get_settings
    from regime_tasks.replay.evaluate import TRADABLE, check_options, check_window, run_evaluation
    from regime_tasks.replay.history import FileHistory, StoreHistory
    from regime_tasks.replay.report import write_evaluation
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
            bucket_thresholds=s.bucket_thresholds,
            progress=progress,
        )
    paths = write_evaluation(ev, Path(args.out))
    if args.json:
        print_json({**ev.as_dict(), "files": {k: str(v) for k, v in paths.items()}})
    else:
        print(f"report written to {paths['html']}; summary in {paths['summary']}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="does sizing by the regime help? forward returns with intervals, sizing backtest vs baselines, latency",
    )
    add_window(p, "first bar of the window, ISO-8601 UTC", "last bar of the window, ISO-8601 UTC (after --start)")
    p.add_argument("--timeframe", nargs="+", action="extend", choices=EVAL_TFS, help="series timeframes (default both)")
    p.add_argument(
        "--series",
        nargs="+",
        action="extend",
        choices=TRADABLE_CHOICES,
        help="tradable series (default all)",
    )
    p.add_argument(
        "--cost-bps", type=cost_bps, default=10.0, help="cost per unit of turnover, basis points (default 10)"
    )
    p.add_argument(
        "--exec-tf",
        choices=EXEC_TFS,
        default=None,
        help="execution timeframe of the bucket levers (default: the series' timeframe)",
    )
    p.add_argument("--from-db", action="store_true", help="read the stored history (after regime import-candles)")
    add_files(p)
    p.add_argument("--out", type=output_folder, default="evaluate_out", help="report folder (default ./evaluate_out)")
    add_json(p, "every number of the report as JSON on stdout")
    p.set_defaults(handler=_cmd_evaluate)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``replay`` and ``evaluate``."""
    _add_replay(sub)
    _add_evaluate(sub)
