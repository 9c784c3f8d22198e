"""Logging set-up: one logger per module, structured fields rendered as key=value."""

from __future__ import annotations

import logging
import re
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class _CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is *now*.

    A plain ``StreamHandler(sys.stderr)`` keeps the stream of the first call; when that stream is later
    replaced and closed (pytest's capture, a daemon redirecting its output), every record prints a
    "--- Logging error ---" traceback instead of the message.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _RedactingFormatter(logging.Formatter):
    """Every line with a URL password masked: a driver's error text may carry a connection URL."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_url(super().format(record))


# Third-party loggers that warn about nothing we can act on below DEBUG: kombu's in-memory broker (embedded mode)
# "reverts to localhost" on every connection; Alembic's migration context names its dialect and each revision it
# runs, which store.db.init_db reports itself (one line per change).
_NOISY = ("kombu.connection", "alembic.runtime.migration")


def configure_logging(level: str = "INFO") -> None:
    """Send library logs to stderr once; idempotent."""
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.ERROR)
    root = logging.getLogger()
    if any(getattr(h, "_regime", False) for h in root.handlers):
        root.setLevel(level)
        return
    handler = _CurrentStderrHandler()
    handler.setFormatter(_RedactingFormatter(_FORMAT, "%Y-%m-%dT%H:%M:%S"))
    handler._regime = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def kv(**fields: object) -> str:
    """Render structured fields for a log line: ``driver=BTC timeframe=1h bar_ts=…``."""
    return " ".join(f"{k}={v}" for k, v in fields.items())


# scheme://user:password@host → scheme://user:***@host (also scheme://:password@host, Redis' usual form)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@")


def redact_url(text: object) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (logs and error messages)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", str(text))
