"""``regime db init`` and ``regime db dump-schema``: the schema and its migrations."""

from __future__ import annotations

import argparse
import sys

from regime_tasks.cli.options import output_folder
from regime_tasks.cli.render import print_json


def _cmd_db_init(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.store.db import init_db, make_engine

    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    changes = init_db(engine)
    if args.json:
        print_json({"database": engine.url.render_as_string(hide_password=True), "changes": changes})
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``db``."""
    _add_db(sub)
