"""``regime flower``: Flower, the Celery monitor, only ever with its authentication on.

Started as ``celery -A regime_tasks flower`` without ``--basic-auth``, Flower serves its pages to anyone who reaches
the port (only ``/api/*`` answers 401). This entry point refuses to start outside embedded mode unless
``REGIME_FLOWER_BASIC_AUTH`` is set, and binds to ``REGIME_FLOWER_ADDRESS`` (loopback by default). The credentials
go to Flower through its environment (``FLOWER_BASIC_AUTH``), not its command line, so ``ps`` does not show them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from regime_tasks.errors import ConfigError

if TYPE_CHECKING:  # the settings load when a command runs, not when the parser is built
    from regime_tasks.config import Settings


def flower_command(settings: Settings, environ: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start Flower with authentication on; ConfigError without credentials."""
    if settings.flower_basic_auth is None and not settings.embedded:
        raise ConfigError(
            "REGIME_FLOWER_BASIC_AUTH=user:password is required outside embedded mode "
            "(without it Flower's pages are open to anyone who reaches the port)"
        )
    env = {k: v for k, v in environ.items() if not k.startswith("FLOWER_")}  # ours decide, not stray FLOWER_*
    env["FLOWER_ADDRESS"] = settings.flower_address
    env["FLOWER_PORT"] = str(settings.flower_port)
    if settings.flower_basic_auth is not None:
        env["FLOWER_BASIC_AUTH"] = settings.flower_basic_auth
    return [sys.executable, "-m", "celery", "-A", "regime_tasks", "flower"], env


def exec_flower(settings: Settings) -> None:
    """Replace this process with Flower (never returns)."""
    argv, env = flower_command(settings, dict(os.environ))
    os.execve(argv[0], argv, env)


# --- the command ------------------------------------------------------------------------------------
def _cmd_flower(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings

    exec_flower(get_settings())
    return 0  # pragma: no cover - exec_flower replaces the process


def _add_flower(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "flower",
        help="Flower (Celery monitor) with REGIME_FLOWER_BASIC_AUTH enforced, on REGIME_FLOWER_ADDRESS (loopback)",
    )
    p.set_defaults(handler=_cmd_flower)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``flower``."""
    _add_flower(sub)
