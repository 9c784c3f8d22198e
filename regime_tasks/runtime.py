"""Per-process wiring: settings → database engine, cache and market source.

Celery tasks, the CLI and the demo all get their collaborators from :func:`get_runtime`, so a worker
process opens one connection pool and one Redis client, and tests can swap settings with
:func:`reset_runtime` after changing ``REGIME_*`` variables.
"""

from __future__ import annotations

import dataclasses
import threading

from sqlalchemy.engine import Engine

from regime_tasks.config import Settings, get_settings
from regime_tasks.store.db import init_db, make_engine


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What a pipeline step needs besides its arguments."""

    settings: Settings
    engine: Engine

    @property
    def book_id(self) -> str:
        return self.settings.book_id

    @property
    def cache(self):
        from regime_tasks.api import get_default_cache

        return get_default_cache()

    @property
    def market(self):
        from regime_tasks.market import get_market_source

        return get_market_source(self.settings)


_LOCK = threading.Lock()
_RUNTIME: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use (schema created if missing)."""
    global _RUNTIME
    with _LOCK:
        if _RUNTIME is None:
            settings = get_settings()
            engine = make_engine(settings.effective_database_url)
            init_db(engine)
            _RUNTIME = Runtime(settings=settings, engine=engine)
        return _RUNTIME


def reset_runtime() -> None:
    """Forget settings, engines, cache and sources (after environment changes; tests)."""
    global _RUNTIME
    from regime_tasks.store.db import dispose_engines

    with _LOCK:
        _RUNTIME = None
        get_settings.cache_clear()
        dispose_engines()
        try:
            from regime_tasks.market import get_market_source

            get_market_source.cache_clear()
        except ImportError:
            pass
        try:
            from regime_tasks.api import reset_default_cache

            reset_default_cache()
        except ImportError:
            pass
