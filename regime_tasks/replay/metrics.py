"""Pure evaluation arithmetic: forward returns, block bootstrap, backtest returns, performance metrics, flips,
dwell times and swing latency. No I/O; every function takes arrays or frames and returns numbers.

Conventions: annualisation over 365 days / 8,760 hours, risk-free rate 0, Sortino target 0; turnover is
Σ|Δw| of target weights (the first position counts from cash); cost = bps × turnover; returns are open to open of
the bar after the decision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

PERIODS_PER_YEAR = {"1h": 8_760.0, "1d": 365.0}
BOOTSTRAP_RESAMPLES = 2_000
BOOTSTRAP_SEED = 16
MIN_BLOCK = 10
SWING_THRESHOLD = 0.20


# --- forward returns and the bootstrap --------------------------------------------------------------------
def forward_returns(close: pd.Series, horizon: int) -> pd.Series:
    """close(t + h) / close(t) − 1, NaN where t + h is beyond the data."""
    return close.shift(-horizon) / close - 1.0


def block_length(horizon: int) -> int:
    """Blocks at least as long as the horizon (overlapping windows stay inside one block), never below 10."""
    return max(int(horizon), MIN_BLOCK)


def bootstrap_starts(
    n: int, block: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> np.ndarray:
    """Block start indices of a circular block bootstrap: ``resamples`` × ceil(n / block), seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, math.ceil(n / block)))


def _circular_block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """sum(values[i : i + block]) with wrap-around, for every start i."""
    n = len(values)
    ext = np.concatenate([values, values[: block - 1]]) if block > 1 else values
    csum = np.concatenate([[0.0], np.cumsum(ext)])
    return csum[block : block + n] - csum[:n]


def bootstrap_group_means(
    returns: np.ndarray,
    groups: np.ndarray,
    labels: list[str],
    horizon: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, np.ndarray]:
    """Resampled means of ``returns`` per group label and for all rows (key ``"all"``), one value per resample.

    Circular block bootstrap of (group, return) pairs jointly: every resample draws the same block starts for
    every group, so differences between groups (S3 − S0) are resampled consistently. A resample where a group
    has no row gives NaN for it.
    """
    n = len(returns)
    block = block_length(horizon)
    starts = bootstrap_starts(n, block, resamples, seed)
    out: dict[str, np.ndarray] = {}
    for label in [*labels, "all"]:
        mask = np.ones(n, dtype=bool) if label == "all" else groups == label
        sums = _circular_block_sums(np.where(mask, returns, 0.0), block)[starts].sum(axis=1)
        counts = _circular_block_sums(mask.astype(float), block)[starts].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[label] = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    return out


def interval(samples: np.ndarray) -> tuple[float, float]:
    """2.5 % and 97.5 % percentiles of the finite samples (NaN, NaN when there are none)."""
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return float(lo), float(hi)


# --- backtest ------------------------------------------------------------------------------------------
def backtest(weights: pd.Series, period_returns: pd.Series, cost_bps: float) -> pd.DataFrame:
    """Net returns and equity of holding ``weights[τ]`` over period τ (weights decided before τ starts).

    ``turnover[τ] = |w[τ] − w[τ−1]|`` with w = 0 before the first period; ``net = w·r − cost_bps/1e4·turnover``.
    """
    w = weights.astype(float)
    turnover = w.diff().abs()
    turnover.iloc[0] = abs(w.iloc[0])
    net = w * period_returns - cost_bps / 1e4 * turnover
    return pd.DataFrame(
        {"weight": w, "return": period_returns, "turnover": turnover, "net": net, "equity": (1 + net).cumprod()}
    )


def max_drawdown(equity: pd.Series) -> float:
    """Largest fall from a running peak, as a negative fraction (the starting capital 1 counts as a peak)."""
    path = np.concatenate([[1.0], equity.to_numpy(dtype=float)])
    peak = np.maximum.accumulate(path)
    return float((path / peak - 1.0).min())


def drawdown_series(equity: pd.Series) -> pd.Series:
    """Equity / running peak − 1 at every period (starting capital 1 counts as a peak)."""
    peak = np.maximum.accumulate(np.maximum(equity.to_numpy(dtype=float), 1.0))
    return pd.Series(equity.to_numpy(dtype=float) / peak - 1.0, index=equity.index)


def performance(bt: pd.DataFrame, periods_per_year: float, *, floor: float | None = None) -> dict[str, Any]:
    """CAGR, volatility, Sharpe, Sortino, max drawdown, Calmar, turnover/year, exposure figures of one run."""
    net = bt["net"].to_numpy(dtype=float)
    n = len(net)
    if n == 0:
        return {"periods": 0}
    years = n / periods_per_year
    final = float(np.prod(1.0 + net))
    cagr = final ** (1.0 / years) - 1.0 if final > 0 else -1.0
    sd = float(np.std(net, ddof=1)) if n > 1 else float("nan")
    mean = float(np.mean(net))
    downside = float(np.sqrt(np.mean(np.minimum(net, 0.0) ** 2)))
    mdd = max_drawdown(pd.Series(np.cumprod(1.0 + net)))  # rebased: a slice (one year) starts at 1
    w = bt["weight"].to_numpy(dtype=float)
    out: dict[str, Any] = {
        "periods": n,
        "years": years,
        "final_equity": final,
        "total_return": final - 1.0,
        "cagr": cagr,
        "volatility": sd * math.sqrt(periods_per_year) if n > 1 else float("nan"),
        "sharpe": mean / sd * math.sqrt(periods_per_year) if n > 1 and sd > 0 else float("nan"),
        "sortino": mean / downside * math.sqrt(periods_per_year) if downside > 0 else float("nan"),
        "max_drawdown": mdd,
        "calmar": cagr / abs(mdd) if mdd < 0 else float("nan"),
        "turnover_per_year": float(bt["turnover"].sum()) / years,
        "average_exposure": float(w.mean()),
        "time_in_market": float((w > 0).mean()),
    }
    if floor is not None:
        out["share_at_floor"] = float(np.isclose(w, floor).mean())
    return out


# --- stability and latency -------------------------------------------------------------------------------
def flips_and_dwell(states: pd.Series) -> dict[str, Any]:
    """State changes (S4 included) and run lengths in bars, warming-up bars excluded."""
    s = states[states.isin(["S0", "S1", "S2", "S3", "S4"])]
    if s.empty:
        return {"bars": 0, "flips": 0, "runs": 0, "median_dwell_bars": float("nan")}
    change = s.ne(s.shift())
    flips = int(change.iloc[1:].sum())
    runs = change.cumsum()
    lengths = runs.value_counts().to_numpy()
    return {"bars": len(s), "flips": flips, "runs": len(lengths), "median_dwell_bars": float(np.median(lengths))}


def zigzag(close: pd.Series, threshold: float = SWING_THRESHOLD) -> list[tuple[int, str]]:
    """Confirmed turning points (position, "peak"|"trough") of a zig-zag on closes with a ±threshold reversal.

    A peak is confirmed once the close falls ``threshold`` below the highest close since the last trough, a
    trough once it rises ``threshold`` above the lowest since the last peak. The last, unconfirmed extreme is not
    a turning point.
    """
    c = close.to_numpy(dtype=float)
    pivots: list[tuple[int, str]] = []
    hi_i = lo_i = 0
    direction = 0  # 0 before the first swing, +1 rising from a trough, −1 falling from a peak
    for i in range(1, len(c)):
        if direction == 0:
            hi_i = i if c[i] > c[hi_i] else hi_i
            lo_i = i if c[i] < c[lo_i] else lo_i
            if c[i] <= c[hi_i] * (1 - threshold):
                pivots.append((hi_i, "peak"))
                direction, lo_i = -1, i
            elif c[i] >= c[lo_i] * (1 + threshold):
                pivots.append((lo_i, "trough"))
                direction, hi_i = 1, i
        elif direction == 1:
            if c[i] > c[hi_i]:
                hi_i = i
            elif c[i] <= c[hi_i] * (1 - threshold):
                pivots.append((hi_i, "peak"))
                direction, lo_i = -1, i
        else:
            if c[i] < c[lo_i]:
                lo_i = i
            elif c[i] >= c[lo_i] * (1 + threshold):
                pivots.append((lo_i, "trough"))
                direction, hi_i = 1, i
    return pivots
    hi_i = lo_i = 0
    direction = 0  # 0 unknown, +1 rising (looking for a peak), −1 falling (looking for a trough)
    for i in range(1, len(c)):
        if c[i] > c[hi_i]:
            hi_i = i
        if c[i] < c[lo_i]:
            lo_i = i
        if direction >= 0 and c[i] <= c[hi_i] * (1 - threshold) and (direction == 1 or hi_i > lo_i or direction == 0):
            if direction == 0 and lo_i < hi_i and c[hi_i] >= c[lo_i] * (1 + threshold):
                pivots.append((lo_i, "trough"))
            pivots.append((hi_i, "peak"))
            direction, lo_i = -1, i
        elif direction <= 0 and c[i] >= c[lo_i] * (1 + threshold):
            if direction == 0 and hi_i < lo_i and c[lo_i] <= c[hi_i] * (1 - threshold):
                pivots.append((hi_i, "peak"))
            pivots.append((lo_i, "trough"))
            direction, hi_i = 1, i
    return pivots


def swing_latency(close: pd.Series, states: pd.Series, threshold: float = SWING_THRESHOLD) -> pd.DataFrame:
    """Per turning point: bars until the state says so (S3 after a trough, S0 after a peak) or ``missed``.

    The state is searched from the turning point's bar up to (not including) the next turning point; the last
    turning point is searched to the end of the data and, if never reflected, is ``open`` rather than missed.
    """
    pivots = zigzag(close, threshold)
    st = states.to_numpy()
    rows = []
    for k, (p, kind) in enumerate(pivots):
        target = "S3" if kind == "trough" else "S0"
        end = pivots[k + 1][0] if k + 1 < len(pivots) else len(st)
        hits = np.flatnonzero(st[p:end] == target)
        if len(hits):
            status, lag = "reflected", int(hits[0])
        else:
            status, lag = ("missed" if k + 1 < len(pivots) else "open"), None
        rows.append(
            {
                "turning_point": close.index[p],
                "kind": kind,
                "close": float(close.iloc[p]),
                "target_state": target,
                "lag_bars": lag,
                "status": status,
            }
        )
    return pd.DataFrame(rows, columns=["turning_point", "kind", "close", "target_state", "lag_bars", "status"])
