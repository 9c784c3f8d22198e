"""``regime import-dominance``, ``import-candles``, ``import-tokens``: files into the store."""

from __future__ import annotations

import argparse

from regime_tasks.cli.options import TIMEFRAMES, add_json, input_file
from regime_tasks.cli.render import print_json


def _engine_from_settings():
    from regime_tasks.runtime import get_runtime

    return get_runtime().engine


def _cmd_import_dominance(args: argparse.Namespace) -> int:
    from regime_tasks.importers import import_dominance

    result = import_dominance(_engine_from_settings, args.file, timeframe=args.timeframe)
    print_json(result) if args.json else print(
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
    print_json(result) if args.json else print(
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
    print_json(result) if args.json else print(
        f"imported {result['tokens']} tokens" + (f" ({dup} identical duplicate rows counted once)" if dup else "")
    )
    return 0


def _add_imports(sub: argparse._SubParsersAction) -> None:
    tfs = TIMEFRAMES
    p = sub.add_parser("import-dominance", help="import BTC.d/USDT.d history: CSV timestamp,btc_d,usdt_d (D4)")
    p.add_argument("file", type=input_file)
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    add_json(p)
    p.set_defaults(handler=_cmd_import_dominance)
    p = sub.add_parser("import-candles", help="import a candle file into one price series")
    p.add_argument("file", type=input_file, help="CSV/Parquet: timestamp,open,high,low,close,volume")
    p.add_argument("--series", required=True, help="majors:BTC | lowcap:SYMBOL[@chain] | regime:DRIVER")
    p.add_argument("--timeframe", choices=tfs, default=None, help="bar length (default: inferred from the rows)")
    add_json(p)
    p.set_defaults(handler=_cmd_import_candles)
    p = sub.add_parser("import-tokens", help="import token market caps (symbol,chain,market_cap_usd,as_of)")
    p.add_argument("file", type=input_file)
    add_json(p)
    p.set_defaults(handler=_cmd_import_tokens)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the three import commands."""
    _add_imports(sub)
