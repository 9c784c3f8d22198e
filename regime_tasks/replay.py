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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.composite import chain_linked_composite, select_bucket_members
from regime_tasks.core.constants import (
    ALT_CONSTITUENTS,
    BUCKETS,
    DRIVER_WEIGHTS,
    DRIVERS,
    EXEC_TF_MULTIPLIERS,
    REGIME_TIMEFRAMES,
    STALE_AFTER_BARS,
    TIMEFRAME_SECONDS,
)
from regime_tasks.core.dominance import history_to_bars, read_history_csv
from regime_tasks.core.mapper import map_engine_payload
from regime_tasks.core.ta import compute_ta_frame
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame
from regime_tasks.sources.files import FileSource

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


def driver_bars(source: FileSource, settings_caps: dict[str, float], timeframe: str) -> dict[str, pd.DataFrame]:
    """The eight driver series of one timeframe from a file source, as the pipeline builds them."""
    out: dict[str, pd.DataFrame] = {}
    btc = source.bars("majors", "BTC", timeframe)
    if not btc.empty:
        out["BTC"] = btc
    alt = {s: source.bars("majors", s, timeframe) for s in ALT_CONSTITUENTS}
    alt = {s: f for s, f in alt.items() if not f.empty}
    if alt:
        out["ALT"] = chain_linked_composite(alt)
    tokens = source.tokens()
    caps = {str(r.symbol): float(r.market_cap_usd) for r in tokens.itertuples()}
    members = select_bucket_members(
        caps,
        nano_max_usd=settings_caps["nano_max_usd"],
        small_max_usd=settings_caps["small_max_usd"],
        mid_max_usd=settings_caps["mid_max_usd"],
    )
    for bucket in BUCKETS:
        frames = {s: source.bars("lowcaps", s, timeframe) for s in members.get(bucket, [])}
        frames = {s: f for s, f in frames.items() if not f.empty}
        if frames:
            out[bucket] = chain_linked_composite(frames)
    dom = source.root / "dominance" / f"{timeframe}.csv"
    if dom.exists():
        out.update(history_to_bars(read_history_csv(dom), timeframe))
    return out


def replay_series(bars: pd.DataFrame, timeframe: str, settings: EngineSettings) -> pd.DataFrame:
    """Engine + mapper over one series: a row per bar."""
    filled, _ = fill_gaps(bars[["open", "high", "low", "close", "volume"]], timeframe)
    payloads, _ = run_engine_frame(compute_ta_frame(filled.drop(columns="filled")), settings)
    rows = []
    for p in payloads:
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
    close = frame["price"]
    for h in HORIZONS:
        frame[f"fwd_{h}"] = close.shift(-h) / close - 1.0
    return frame


def _levers_grid(per_series: dict[tuple[str, str], pd.DataFrame], grid: pd.DatetimeIndex) -> pd.DataFrame:
    """A/E per bucket × exec tf at each ``grid`` time, from each driver's last bar closed by then."""
    known: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for (driver, tf), frame in per_series.items():
        step = pd.Timedelta(seconds=TIMEFRAME_SECONDS[tf])
        closes = frame.index + step
        pos = closes.searchsorted(grid, side="right") - 1  # last bar closed at or before each grid time
        da = np.where(pos >= 0, frame["delta_a_raw"].to_numpy()[np.clip(pos, 0, None)], 0.0)
        de = np.where(pos >= 0, frame["delta_e_raw"].to_numpy()[np.clip(pos, 0, None)], 0.0)
        age = np.where(pos >= 0, (grid - closes[np.clip(pos, 0, None)]) / step, np.inf)
        usable = age <= STALE_AFTER_BARS
        known[(driver, tf)] = (np.where(usable, da, 0.0), np.where(usable, de, 0.0))
    rows = []
    for bucket in BUCKETS:
        drivers = ["BTC", "ALT", bucket, "BTC.d", "USDT.d"]
        for exec_tf, mult in EXEC_TF_MULTIPLIERS.items():
            a = np.full(len(grid), 0.5)
            e = np.full(len(grid), 0.5)
            for d in drivers:
                for tf in REGIME_TIMEFRAMES:
                    if (d, tf) in known:
                        da, de = known[(d, tf)]
                        a = a + da * DRIVER_WEIGHTS[d] * mult[tf]
                        e = e + de * DRIVER_WEIGHTS[d] * mult[tf]
            a, e = np.clip(a, 0, 1), np.clip(e, 0, 1)
            rows.append(
                pd.DataFrame(
                    {
                        "timestamp": grid,
                        "bucket": bucket,
                        "execution_timeframe": exec_tf,
                        "A_value": a,
                        "E_value": e,
                        "position_size_frac": 0.10 + 0.50 * a,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


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


def run_replay(
    source: FileSource,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    timeframes: tuple[str, ...] = REGIME_TIMEFRAMES,
    settings: EngineSettings | None = None,
    bucket_thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
) -> ReplayResult:
    """Replay every driver × timeframe over the whole available history, report on [start, end]."""
    settings = settings or EngineSettings()
    caps = bucket_thresholds or {"nano_max_usd": 10e6, "small_max_usd": 50e6, "mid_max_usd": 200e6}
    per_series: dict[tuple[str, str], pd.DataFrame] = {}
    total = len(timeframes) * len(DRIVERS)
    done = 0
    for tf in timeframes:
        for driver, bars in driver_bars(source, caps, tf).items():
            bars = bars[bars.index <= end]
            if len(bars) > 1:
                per_series[(driver, tf)] = replay_series(bars, tf, settings)
            done += 1
            if progress:
                progress(f"{driver}/{tf}", done, total)
    grid = pd.date_range(start.ceil("1h"), end.floor("1h"), freq="1h", tz="UTC", name="timestamp")
    levers = _levers_grid(per_series, grid)
    frames = []
    for (driver, tf), frame in per_series.items():
        part = frame[(frame.index >= start) & (frame.index <= end)].reset_index()
        part.insert(0, "timeframe", tf)
        part.insert(0, "driver", driver)
        frames.append(part)
    series = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    by_state, by_quintile, tis = validation_tables(series, levers)
    simulated = source_simulated(source)
    return ReplayResult(series, levers, by_state, by_quintile, tis, simulated, start, end)


def source_simulated(source: FileSource) -> set[tuple[str, str]]:
    """(driver, timeframe) whose inputs are simulated, from the manifest."""
    from regime_tasks.market import FileMarket

    return FileMarket.simulated_series(source)  # type: ignore[arg-type]


def write_csvs(result: ReplayResult, out: Path) -> list[Path]:
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
