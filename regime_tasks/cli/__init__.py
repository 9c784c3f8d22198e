"""The ``regime`` command.

Every sub-command has ``--help``; those that print results have ``--json``.

Error contract, enforced here and nowhere else: every failure prints exactly one line on stderr,
``regime: error: <what, which input>``, and exits **2** for bad input (arguments, files, settings) or **1** when a
service or data source is unavailable (``RegimeUnavailable``, database or Redis down) or on an unexpected crash.
Never a traceback unless ``-v`` asks for one. Arguments are checked by the parser (times, files, folders, counts,
windows) before a command does any work, so a command that fails on its input has written nothing.
Each command's work lives in the library; the modules of this package only parse arguments and print:
``options`` (argument types and shared options), ``render`` (JSON and tables) and one module per command family.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from regime_tasks.errors import (
    ConfigError,
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
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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


def _check_arguments(args: argparse.Namespace) -> None:
    """Rules between arguments, for every command that has them."""
    start, end = getattr(args, "start", None), getattr(args, "end", None)
    if start is not None and end is not None and start >= end:
        iso = "%Y-%m-%dT%H:%M:%SZ"
        what = f"--start {start:{iso}} is not before --end {end:{iso}}"
        sys.stderr.write(f"regime: error: {what} (see `regime {args.command} --help`)\n")
        sys.exit(EXIT_BAD_INPUT)


# --- db ----------------------------------------------------------------------------


# --- pipeline: bootstrap, tick, demo ----------------------------------------------------------------


# --- engine ---------------------------------------------------------------------------------------------


# --- imports ------------------------------------------------------------------------------------------


# --- levers and status ------------------------------------------------------------------------------------


# --- replay --------------------------------------------------------------------------------------------


# --- evaluate ------------------------------------------------------------------------------------------


# --- stream ---------------------------------------------------------------------------------------------


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Each command family adds its sub-commands; imported here so ``import regime_tasks.cli`` stays light."""
    from regime_tasks.cli import db, engine, flower, imports, levers, pipeline, replay, status, stream

    return [
        db.register,
        pipeline.register,
        engine.register,
        imports.register,
        levers.register,
        status.register,
        replay.register,
        stream.register,
        flower.register,
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
        choices=LOG_LEVELS,
        default=None,
        help="log level (default WARNING, or REGIME_LOG_LEVEL when set)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logs (-v INFO, -vv DEBUG) and tracebacks on errors"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
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


def _log_level(args: argparse.Namespace, settings: Any | None) -> str:
    """Quiet by default (a CLI call is not a service log): WARNING, unless asked for more.

    A command that reads no settings (``settings`` None: ``regime engine``) reads ``REGIME_LOG_LEVEL`` from the
    environment, the one setting it uses, and refuses a value that is not a level as the settings would."""
    if args.log_level:
        return args.log_level
    if args.verbose:
        return "INFO" if args.verbose == 1 else "DEBUG"
    if settings is None:
        level = os.environ.get("REGIME_LOG_LEVEL")
        if level is not None and level not in LOG_LEVELS:
            allowed = ", ".join(f"'{x}'" for x in LOG_LEVELS[:-1]) + f" or '{LOG_LEVELS[-1]}'"
            raise ConfigError(f"invalid settings: REGIME_LOG_LEVEL: Input should be {allowed}")
        return level or "WARNING"
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
    from regime_tasks.logs import configure_logging

    verbose = bool(getattr(args, "verbose", 0))
    try:
        # a command on files alone (``regime engine``) does not load the settings: they import pydantic and
        # Celery's URL tables, a fifth of that command's run
        settings = None
        if getattr(args, "reads_settings", True):
            from regime_tasks.config import get_settings

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


def run() -> NoReturn:
    """The ``regime`` console script: :func:`main`, then exit with its code.

    Before the interpreter shuts down, every object left is moved out of the garbage collector's reach
    (``gc.freeze``): the shutdown's collections would otherwise walk the object graphs of pandas, numpy and the
    command's results for nothing, about 0.15 s of a ``regime engine`` run on this machine (docs/BENCHMARKS.md).
    Atexit handlers and output flushing run as usual. Not in :func:`main` itself, which tests call in-process."""
    code = main()
    gc.freeze()
    sys.exit(code)
