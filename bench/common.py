"""Shared helpers for the benchmark scripts: real data paths, medians, one printed line per measurement."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "tests" / "data" / "real"  # real slices kept in the repository
BUNDLE = REPO / "regime_tasks" / "data"


def measure(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(name: str, seconds: float, target_secs: float) -> None:
    """Print median, target and ratio (target / measured: > 1 means faster than the target)."""
    print(
        f"{name:55s} median={seconds * 1000:9.2f} ms  target={target_secs * 1000:9.1f} ms  "
        f"ratio={target_secs / seconds:6.2f}x  {'OK' if seconds <= target_secs else 'MISS'}"
    )
