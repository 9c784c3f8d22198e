"""Give memory back to the operating system after a task that grew the process (worker pool children).

CPython frees objects into glibc's malloc, which keeps the freed pages of its arenas for later reuse: after a
bootstrap replays a year of bars, a pool process would stay at its peak for the rest of its life. After any task
that left the process more than ``threshold_mb`` above its level after the previous trim, :func:`trim_if_grown`
runs a full collection and ``malloc_trim(0)``, which returns the free
pages at the top and inside glibc's heaps. Without glibc (musl, macOS) it does the collection only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os

from regime_tasks.logs import kv

log = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_baseline_mb: float | None = None
_libc = None


def rss_mb() -> float:
    """Resident set size of this process (MB), from /proc; 0 where /proc is missing."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return 0.0


def _malloc_trim() -> bool:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    trim = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim is None:
        return False
    trim(0)
    return True


def reset_baseline() -> None:
    """Take the current RSS as the level to compare with (after a fork)."""
    global _baseline_mb
    _baseline_mb = rss_mb()


def trim_if_grown(threshold_mb: float, *, task: str = "") -> float | None:
    """Collect and trim if RSS grew more than ``threshold_mb`` since the last trim; returns the MB given back."""
    global _baseline_mb
    now = rss_mb()
    if _baseline_mb is None:
        _baseline_mb = now
        return None
    if now - _baseline_mb <= threshold_mb:
        return None
    gc.collect()
    trimmed = _malloc_trim()
    after = rss_mb()
    _baseline_mb = after
    log.info("memory given back %s", kv(task=task, rss_before_mb=round(now), rss_after_mb=round(after), trim=trimmed))
    return now - after
