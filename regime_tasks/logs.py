"""Logging set-up: one logger per module, structured fields rendered as key=value."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Send library logs to stderr once; idempotent."""
    root = logging.getLogger()
    if any(getattr(h, "_regime", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    handler._regime = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def kv(**fields: object) -> str:
    """Render structured fields for a log line: ``driver=BTC timeframe=1h bar_ts=…``."""
    return " ".join(f"{k}={v}" for k, v in fields.items())
