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


def _add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema management")
    dbsub = p.add_subparsers(dest="db_command", required=True)
    init = dbsub.add_parser("init", help="create or upgrade the schema (idempotent)")
    init.add_argument("--json", action="store_true", help="machine-readable output")
    init.set_defaults(handler=_cmd_db_init)


# --- command registry -----------------------------------------------------------------
# Each entry adds one sub-command. Keep one function per command family.
_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_db,
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
        print(f"regime: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("regime: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
