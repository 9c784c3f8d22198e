"""``python -m regime_tasks.cli``: the ``regime`` command (the worker's bootstrap task runs it this way)."""

from regime_tasks.cli import run

run()
