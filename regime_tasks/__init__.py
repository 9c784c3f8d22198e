"""regime-engine: market-regime levers (A, E) for crypto trading systems.

Public API::

    from regime_tasks import compute_levers, RegimeUnavailable

Heavy modules (SQLAlchemy, Redis, Celery) load on first use, so ``import regime_tasks`` is cheap.
"""

from __future__ import annotations

from typing import Any

from regime_tasks.errors import RegimeError, RegimeUnavailable

__version__ = "0.1.0"
__all__ = ["RegimeError", "RegimeUnavailable", "__version__", "app", "compute_levers"]


def __getattr__(name: str) -> Any:
    if name == "compute_levers":
        from regime_tasks.api import compute_levers

        return compute_levers
    if name in {"app", "celery"}:  # `celery -A regime_tasks …` finds the app here
        from regime_tasks.celery_app import app

        return app
    raise AttributeError(f"module 'regime_tasks' has no attribute {name!r}")
