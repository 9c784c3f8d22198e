"""``regime replay``: run the pipeline bar by bar over history and measure what the regime states were worth.

For each driver × timeframe the bars are built exactly as the live pipeline builds them (BTC as is; ALT and the
buckets as chain-linked composites; dominance from imported history), TA is computed once over the history and
the engine steps every bar (the same step function as live, D15), the mapper gives ΔA/ΔE per bar, and A/E per
bucket × execution timeframe are computed on an hourly grid from the drivers' states *as known at that time*:
a bar's state is usable only after the bar has closed (no look-ahead), and the stale rule (D8) applies.

The validation tables answer plan §14.2: forward returns of each driver over the next 1, 6 and 24 bars, grouped
by state and by A-quintile, with hit rates (share of positive returns), counts and time spent in each state.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

from regime_tasks.core.composite import chain_linked_composite, point_in_time_membership, select_bucket_members
from regime_tasks.core.constants import (
    ALT_CONSTITUENTS,
    BUCKETS,
    DEFAULT_BUCKET_THRESHOLDS_USD,
    EXEC_TF_MULTIPLIERS,
    REGIME_TIMEFRAMES,
)
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.series import run_series
from regime_tasks.core.uptrend import EngineSettings
from regime_tasks.replay.history import FileHistory, History, StoreHistory, as_history
from regime_tasks.replay.known import KnownAt, levers_grid
from regime_tasks.sources.files import FileSource

__all__ = [
    "FileHistory",
    "History",
    "KnownAt",
    "ReplayResult",
    "StoreHistory",
    "driver_bars",
    "replay_drivers",
    "replay_series",
    "run_replay",
    "validation_tables",
    "write_csvs",
]

log = logging.getLogger(__name__)
HORIZONS = (1, 6, 24)
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class ReplayResult:
    """Per-bar series and the validation tables."""

    series: pd.DataFrame  # one row per (driver, timeframe, timestamp): price, state, flags, deltas, fwd returns
    levers: pd.DataFrame  # hourly grid × bucket × exec tf: A, E, size
    by_state: pd.DataFrame
    by_quintile: pd.DataFrame
    time_in_state: pd.DataFrame
    simulated: set[tuple[str, str]]
    start: pd.Timestamp
    end: pd.Timestamp


def driver_bars(
    source: FileSource | History, settings_caps: dict[str, float], timeframe: str
) -> dict[str, pd.DataFrame]:
    """The eight driver series of one timeframe from a history (files or store), as the pipeline builds them."""
    source = as_history(source)
    out: dict[str, pd.DataFrame] = {}
    btc = source.bars("majors", "BTC", timeframe)
    if not btc.empty:
        out["BTC"] = btc
    alt = {s: source.bars("majors", s, timeframe) for s in ALT_CONSTITUENTS}
    alt = {s: f for s, f in alt.items() if not f.empty}
    if alt:
        out["ALT"] = chain_linked_composite(alt)
    caps = source.caps_table()  # D16: close × supply per day; membership point in time (D3)
    if caps.empty:  # a user's folder with single caps (tokens.csv without supplies): one cap for all days
        tokens = source.tokens()
        chosen = select_bucket_members(
            {str(r.symbol): float(r.market_cap_usd) for r in tokens.itertuples()},
            nano_max_usd=settings_caps["nano_max_usd"],
            small_max_usd=settings_caps["small_max_usd"],
            mid_max_usd=settings_caps["mid_max_usd"],
        )
    else:
        pit = point_in_time_membership(
            caps,
            nano_max_usd=settings_caps["nano_max_usd"],
            small_max_usd=settings_caps["small_max_usd"],
            mid_max_usd=settings_caps["mid_max_usd"],
        )
        chosen = {b: [n.split("@")[0] for n in f.columns[f.any(axis=0)]] for b, f in pit.items()}
    for bucket in BUCKETS:
        frames = {s: source.bars("lowcaps", s, timeframe) for s in chosen.get(bucket, [])}
        frames = {s: f for s, f in frames.items() if not f.empty}
        membership = None if caps.empty else pit[bucket].rename(columns=lambda n: n.split("@")[0])
        if frames:
            comp = chain_linked_composite(frames, membership=membership)
            if not comp.empty:
                out[bucket] = comp
    out.update(source.dominance(timeframe))
    return out


def replay_series(bars: pd.DataFrame, timeframe: str, settings: EngineSettings) -> pd.DataFrame:
    """Engine + mapper over one series: a row per bar."""
    # payloads one at a time and without diagnostics: a row per bar is all a replay keeps (bounded memory)
    run = run_series(bars, timeframe, settings, diagnostics="none")
    filled = run.bars
    rows = []
    for p, _ in run.payloads:
        m = map_engine_payload(p)
        rows.append(
            (
                p["state"],
                p["price"],
                m["delta_a_raw"],
                m["delta_e_raw"],
                m["flags"]["buy"],
                m["flags"]["rebuy"],
                m["flags"]["trim"],
                m["transition"],
            )
        )
    frame = pd.DataFrame(
        rows,
        index=filled.index,
        columns=["state", "price", "delta_a_raw", "delta_e_raw", "buy", "rebuy", "trim", "transition"],
    )
    frame["open"] = filled["open"].to_numpy()  # fills happen at the next bar's open (regime evaluate)
    close = frame["price"]
    for h in HORIZONS:
        frame[f"fwd_{h}"] = close.shift(-h) / close - 1.0
    return frame


def validation_tables(series: pd.DataFrame, levers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Forward returns by state and by A-quintile, and time spent in each state (plan §14.2)."""
    stats = []
    s = series[series["state"] != "warming_up"]
    for h in HORIZONS:
        col = f"fwd_{h}"
        g = s.dropna(subset=[col]).groupby(["driver", "timeframe", "state"])[col]
        part = pd.DataFrame({"mean": g.mean(), "hit_rate": g.apply(lambda x: float((x > 0).mean())), "count": g.size()})
        part["horizon_bars"] = h
        stats.append(part.reset_index())
    by_state = pd.concat(stats, ignore_index=True)
    # A-quintiles: each bucket's A (exec tf 1h) against the forward returns of that bucket's 1h composite
    quint = []
    lv = levers[levers["execution_timeframe"] == "1h"]
    for bucket in BUCKETS:
        own = series[(series["driver"] == bucket) & (series["timeframe"] == "1h")]
        a = lv[lv["bucket"] == bucket].set_index("timestamp")["A_value"]
        if own.empty or a.empty:
            continue
        # the decision at a bar's close uses A known then; the return runs from that close
        closes = pd.DatetimeIndex(own["timestamp"]) + pd.Timedelta(hours=1)
        joined = own.assign(A=a.reindex(closes).to_numpy()).dropna(subset=["A"])
        if joined["A"].nunique() < 2:
            continue
        joined["A_quintile"] = pd.qcut(joined["A"].rank(method="first"), 5, labels=[1, 2, 3, 4, 5]).astype(int)
        for h in HORIZONS:
            g = joined.dropna(subset=[f"fwd_{h}"]).groupby("A_quintile")[f"fwd_{h}"]
            part = pd.DataFrame(
                {
                    "mean": g.mean(),
                    "hit_rate": g.apply(lambda x: float((x > 0).mean())),
                    "count": g.size(),
                    "A_min": joined.groupby("A_quintile")["A"].min(),
                    "A_max": joined.groupby("A_quintile")["A"].max(),
                }
            ).reset_index()
            part["bucket"], part["horizon_bars"] = bucket, h
            quint.append(part)
    by_quintile = pd.concat(quint, ignore_index=True) if quint else pd.DataFrame()
    tis = s.groupby(["driver", "timeframe"])["state"].value_counts(normalize=True).rename("share").reset_index()
    return by_state, by_quintile, tis


def replay_drivers(
    source: FileSource | History,
    *,
    end: pd.Timestamp,
    timeframes: tuple[str, ...] = REGIME_TIMEFRAMES,
    settings: EngineSettings | None = None,
    bucket_thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
    keep: Callable[[str, str], bool] | None = None,
    trim: Callable[[str, str, pd.DataFrame], pd.DataFrame] | None = None,
    workers: int | None = None,
) -> dict[tuple[str, str], pd.DataFrame]:
    """Engine + mapper over every driver × timeframe of ``source``, each over its whole history up to ``end``.

    ``keep(driver, tf)`` skips series nobody will read; ``trim(driver, tf, bars)`` may cut a series first.
    The series are independent, so the engine runs in ``workers`` processes (default: up to 2 cores); the
    result does not depend on it.
    """
    settings = settings or EngineSettings()
    caps = bucket_thresholds or dict(DEFAULT_BUCKET_THRESHOLDS_USD)
    jobs: list[tuple[tuple[str, str], pd.DataFrame]] = []
    for tf in timeframes:
        for driver, bars in driver_bars(source, caps, tf).items():
            if keep is not None and not keep(driver, tf):
                continue
            bars = bars[bars.index <= end]
            if trim is not None:
                bars = trim(driver, tf, bars)
            if len(bars) > 1:
                jobs.append(((driver, tf), bars))
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    per_series: dict[tuple[str, str], pd.DataFrame] = {}
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(replay_series, bars, key[1], settings): key for key, bars in jobs}
            for done, future in enumerate(as_completed(futures), start=1):
                per_series[futures[future]] = future.result()
                if progress:
                    progress("/".join(futures[future]), done, len(jobs))
        return {key: per_series[key] for key, _ in jobs}  # input order, whatever finished first
    for done, (key, bars) in enumerate(jobs, start=1):
        per_series[key] = replay_series(bars, key[1], settings)
        if progress:
            progress("/".join(key), done, len(jobs))
    return per_series


def run_replay(
    source: FileSource | History,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    timeframes: tuple[str, ...] = REGIME_TIMEFRAMES,
    settings: EngineSettings | None = None,
    bucket_thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay every driver × timeframe over the whole available history, report on [start, end]."""
    history = as_history(source)
    per_series = replay_drivers(
        history,
        end=end,
        timeframes=timeframes,
        settings=settings,
        bucket_thresholds=bucket_thresholds,
        progress=progress,
    )
    grid = pd.date_range(start.ceil("1h"), end.floor("1h"), freq="1h", tz="UTC", name="timestamp")
    levers = levers_grid(per_series, grid, EXEC_TF_MULTIPLIERS)
    frames = []
    for (driver, tf), frame in per_series.items():
        part = frame[(frame.index >= start) & (frame.index <= end)].reset_index()
        part.insert(0, "timeframe", tf)
        part.insert(0, "driver", driver)
        frames.append(part)
    series = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    by_state, by_quintile, tis = validation_tables(series, levers)
    return ReplayResult(series, levers, by_state, by_quintile, tis, history.simulated_series(), start, end)


def source_simulated(source: FileSource | History) -> set[tuple[str, str]]:
    """(driver, timeframe) whose inputs are simulated, from the data's provenance."""
    return as_history(source).simulated_series()


def write_csvs(result: ReplayResult, out: Path) -> list[Path]:
    """The replay's tables as CSV files in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (
        ("series", result.series),
        ("levers", result.levers),
        ("forward_returns_by_state", result.by_state),
        ("forward_returns_by_A_quintile", result.by_quintile),
        ("time_in_state", result.time_in_state),
    ):
        p = out / f"{name}.csv"
        frame.to_csv(p, index=False)
        paths.append(p)
    return paths
