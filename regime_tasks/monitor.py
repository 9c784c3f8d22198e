"""``regime flower``: Flower, the Celery monitor, only ever with its authentication on (issue 17 #13).

Started as ``celery -A regime_tasks flower`` without ``--basic-auth``, Flower serves its pages to anyone who reaches
the port (only ``/api/*`` answers 401). This entry point refuses to start outside embedded mode unless
``REGIME_FLOWER_BASIC_AUTH`` is set, and binds to ``REGIME_FLOWER_ADDRESS`` (loopback by default). The credentials
go to Flower through its environment (``FLOWER_BASIC_AUTH``), not its command line, so ``ps`` does not show them.
"""

from __future__ import annotations

import os
import sys

from regime_tasks.config import Settings
from regime_tasks.errors import ConfigError


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
