"""``python -m regime_tasks.cli``: the ``regime`` command (the worker's bootstrap task runs it this way)."""

import sys

from regime_tasks.cli import main

sys.exit(main())
