"""configure_logging writes to the stderr of the moment, not the one it first saw."""

from __future__ import annotations

import io
import logging
import sys

from regime_tasks.logs import configure_logging


def test_records_follow_a_replaced_and_closed_stderr(monkeypatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO")
    logging.getLogger("regime_tasks.test").info("to the first")
    first.close()

    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("regime_tasks.test").info("to the second")

    assert "to the second" in second.getvalue()
    assert "Logging error" not in second.getvalue()
