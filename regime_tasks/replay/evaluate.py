"""``regime evaluate``: does sizing by the regime help? (D17)

Built on the replay: every driver × timeframe of the input is replayed bar by bar over its whole history up to
``end`` (:func:`regime_tasks.replay.replay_drivers`), and A/E at each decision time come from the states known
then (:mod:`regime_tasks.replay.known`, the same code ``regime replay`` uses). On top of that:

1. forward returns by state per driver × timeframe, with circular block-bootstrap 95 % intervals, the all-bars
   baseline and S3 − S0;
2. a sizing backtest per tradable series (BTC, ALT, each bucket) against buy-and-hold, the series above its own
   200-day average and a constant exposure equal to the strategy's expanding mean exposure;
3. flips per year, median dwell, A clamp shares and ±20 % swing latency.

Drivers built from simulated inputs (per the data's provenance) are **not evaluable**: no numbers are reported for
them and they do not feed A (which is then labelled partial), so no simulated series reaches a result.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.constants import (
    DRIVERS,
    EVALUATION_TIMEFRAMES,
    EXEC_TF_MULTIPLIERS,
    REGIME_TIMEFRAMES,
    STATE_NAMES,
    TIMEFRAME_SECONDS,
    TRADABLE_SERIES,
)
from regime_tasks.core.uptrend import EngineSettings
from regime_tasks.errors import DataValidationError, UnknownInputError
from regime_tasks.replay import metrics as M
from regime_tasks.replay import replay_drivers
from regime_tasks.replay.history import History
from regime_tasks.replay.known import KnownAt, position_keys, position_levers, summary_keys, summary_levers

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

EVAL_TIMEFRAMES = EVALUATION_TIMEFRAMES
TRADABLE = TRADABLE_SERIES
HORIZONS = {"1h": (1, 6, 24), "1d": (1, 6, 24, 30)}
SMA_DAYS = 200
MAX_GAP = pd.Timedelta(days=7)  # a longer hole in a series is a gap in the data: never filled, never crossed
STRATEGIES = ("regime size", "regime A", "buy & hold", "200-day SMA", "constant (expanding mean)")


@dataclasses.dataclass
class Evaluation:
    """Every table of the report; ``as_dict()`` is the ``--json`` document."""

    meta: dict[str, Any]
    forward: pd.DataFrame
    s3_minus_s0: pd.DataFrame
    performance: pd.DataFrame
    equity: pd.DataFrame
    stability: pd.DataFrame
    clamps: pd.DataFrame
    swings: pd.DataFrame
    latency: pd.DataFrame
    levers_daily: pd.DataFrame
    states: pd.DataFrame
    not_evaluable: list[dict[str, str]]

    TABLES = (
        "forward",
        "s3_minus_s0",
        "performance",
        "stability",
        "clamps",
        "swings",
        "latency",
        "levers_daily",
        "equity",
        "states",
    )

    def as_dict(self) -> dict[str, Any]:
        """Meta, the not-evaluable list and every table as records (NaN → null)."""
        out: dict[str, Any] = {"meta": self.meta, "not_evaluable": self.not_evaluable}
        for name in self.TABLES:
            frame = getattr(self, name)
            out[name] = _records(frame)
        return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [
        {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in row.items()}
        for row in clean.to_dict("records")
    ]


def check_window(start: pd.Timestamp, end: pd.Timestamp) -> None:
    """An empty or reversed window is an error before any work."""
    if not start < end:
        raise UnknownInputError(
            f"empty or reversed window: --start {start.isoformat()} is not before --end {end.isoformat()}"
        )


def check_options(timeframes: tuple[str, ...], series: tuple[str, ...], cost_bps: float, exec_tf: str | None) -> None:
    """Reject unknown timeframes, series, negative costs and unknown execution timeframes (before any work)."""
    for tf in timeframes:
        if tf not in EVAL_TIMEFRAMES:
            raise UnknownInputError(f"--timeframe {tf!r}: expected one of {EVAL_TIMEFRAMES}")
    for s in series:
        if s not in TRADABLE:
            raise UnknownInputError(f"--series {s!r}: expected one of {TRADABLE}")
    if not np.isfinite(cost_bps) or cost_bps < 0:
        raise UnknownInputError(f"--cost-bps must be a number ≥ 0, got {cost_bps}")
    if exec_tf is not None and exec_tf not in EXEC_TF_MULTIPLIERS:
        raise UnknownInputError(f"--exec-tf {exec_tf!r}: expected one of {sorted(EXEC_TF_MULTIPLIERS)}")


def trim_to_segment(
    driver: str, timeframe: str, bars: pd.DataFrame, start: pd.Timestamp, notes: list[str] | None = None
) -> pd.DataFrame:
    """The part of a series after its last gap longer than ``MAX_GAP`` that begins before ``start``.

    A gap inside the window cannot be evaluated across: for BTC that is an error naming the gap, other series
    keep only their part after it (and say so in the log)."""
    if len(bars) < 2:
        return bars
    idx = bars.index
    # compare durations, not integers: a stored history's index may be in µs where a file's is in ns
    holes = np.flatnonzero(idx[1:] - idx[:-1] > MAX_GAP)
    if len(holes) == 0:
        return bars
    before = [h for h in holes if idx[h + 1] <= start]
    inside = [h for h in holes if idx[h + 1] > start]
    if inside:
        h = inside[0]
        msg = (
            f"the window crosses a gap in the {driver} {timeframe} history "
            f"({idx[h]:%Y-%m-%d} → {idx[h + 1]:%Y-%m-%d}): evaluate the windows on either side separately"
        )
        if driver == "BTC":
            raise DataValidationError(msg, series=f"{driver} {timeframe}")
        log.warning("%s; %s keeps the part after it", msg, driver)
        if notes is not None:
            notes.append(
                f"{driver} {timeframe}: gap {idx[h]:%Y-%m-%d} → {idx[h + 1]:%Y-%m-%d}, only the part after it used"
            )
        return bars[bars.index >= idx[inside[-1] + 1]]
    return bars[bars.index >= idx[before[-1] + 1]]


def _performance(strategy: str, bt: pd.DataFrame, periods_per_year: float) -> dict[str, Any]:
    """Metrics of one run; size ≥ 0.10 is always "in the market", so the regime variants report the share at
    the floor (size) or at A = 0 (A variant) instead of time in market."""
    if strategy == "regime size":
        perf = M.performance(bt, periods_per_year, floor=0.10)
    elif strategy == "regime A":
        perf = M.performance(bt, periods_per_year)
        perf["share_A_zero"] = float((bt["weight"] == 0).mean())
    else:
        return M.performance(bt, periods_per_year)
    perf.pop("time_in_market")
    return perf


def _year_slices(index: pd.DatetimeIndex, step: pd.Timedelta) -> list[tuple[str, np.ndarray, bool]]:
    out = []
    for year in sorted(set(index.year)):
        mask = index.year == year
        first, last = index[mask][0], index[mask][-1]
        full = first <= pd.Timestamp(f"{year}-01-01", tz="UTC") and last + step >= pd.Timestamp(
            f"{year + 1}-01-01", tz="UTC"
        )
        out.append((str(year), mask, not full))
    return out


def _sma_weights(frame: pd.DataFrame, timeframe: str, times: pd.DatetimeIndex) -> pd.Series:
    """1 when the series' last complete daily close was above its 200-day average, else 0 (NaN before defined).

    The decision is taken at a day's close and filled at the next day's open: a holding period starting at τ
    uses the signal of the day before τ's day."""
    close = frame["price"]
    step = pd.Timedelta(seconds=TIMEFRAME_SECONDS[timeframe])
    daily = close.resample("1D").last()
    last_bar = close.index.to_series().resample("1D").last()
    complete = last_bar + step >= daily.index + pd.Timedelta(days=1)  # the day's last bar closes at midnight
    daily = daily[complete]
    sma = daily.rolling(SMA_DAYS).mean()
    signal = (daily > sma).astype(float).where(sma.notna())
    return pd.Series(signal.reindex(times.floor("1D") - pd.Timedelta(days=1)).to_numpy(), index=times)


def _levers_for(
    known: KnownAt, series: str, exec_tf: str, excluded: set[tuple[str, str]], cache: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, list[str]]:
    """A/E/size as known at each decision time: the market summary for BTC/ALT, the bucket's own for a bucket."""
    if series in ("BTC", "ALT"):
        keys = summary_keys()
        if "summary" not in cache:  # BTC and ALT share it
            cache["summary"] = summary_levers(known, excluded)
        lv = cache["summary"]
    else:
        keys = position_keys(series)
        lv = position_levers(known, series, exec_tf, excluded)
    # absent from the input, or excluded as simulated: A comes from the others ("partial"), never padded
    missing = [f"{d} {tf}" for d, tf in keys if (d, tf) not in known.per_series or (d, tf) in excluded]
    return lv, missing


def run_evaluation(
    history: History,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    timeframes: tuple[str, ...] = EVAL_TIMEFRAMES,
    series: tuple[str, ...] = TRADABLE,
    cost_bps: float = 10.0,
    exec_tf: str | None = None,
    settings: EngineSettings | None = None,
    bucket_thresholds: dict[str, float] | None = None,
    progress: Progress | None = None,
    include_simulated: bool = False,
    resamples: int = M.BOOTSTRAP_RESAMPLES,
) -> Evaluation:
    """Forward returns, sizing backtest, stability and latency over [start, end] (see the module docstring).

    ``include_simulated`` evaluates simulated drivers too (benchmarks only: their numbers mean nothing)."""
    check_window(start, end)
    check_options(timeframes, series, cost_bps, exec_tf)
    simulated = history.simulated_series()
    excluded = set() if include_simulated else set(simulated)
    gap_notes: list[str] = []
    per_series = replay_drivers(
        history,
        end=end,
        timeframes=REGIME_TIMEFRAMES,
        settings=settings,
        bucket_thresholds=bucket_thresholds,
        progress=progress,
        keep=lambda d, tf: (d, tf) not in excluded,
        trim=lambda d, tf, bars: trim_to_segment(d, tf, bars, start, gap_notes),
    )
    if not any(("BTC", tf) in per_series for tf in timeframes):
        raise DataValidationError(
            f"no BTC bars up to {end.isoformat()} at {'/'.join(timeframes)} in {history.describe()}", series="BTC"
        )
    not_evaluable = [
        {"driver": d, "timeframe": tf, "reason": "simulated inputs (data provenance: MANIFEST.json / tokens.simulated)"}
        for d, tf in sorted(simulated)
        if tf in timeframes and not include_simulated
    ]
    fwd_rows, diff_rows, stab_rows = [], [], []
    perf_rows, eq_parts, clamp_rows, swing_parts, lat_rows, band_parts, state_parts = [], [], [], [], [], [], []
    windows: dict[str, Any] = {}
    for tf in timeframes:
        step = pd.Timedelta(seconds=TIMEFRAME_SECONDS[tf])
        ppy = M.PERIODS_PER_YEAR[tf]
        for driver in DRIVERS:
            frame = per_series.get((driver, tf))
            if frame is None:
                continue
            w = frame[(frame.index >= start) & (frame.index <= end)]
            fwd, diff = _forward_tables(w, driver, tf, resamples)
            fwd_rows += fwd
            diff_rows += diff
            fd = M.flips_and_dwell(w["state"])
            years = fd["bars"] / ppy
            stab_rows.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    **fd,
                    "years": years,
                    "flips_per_year": fd["flips"] / years if years > 0 else float("nan"),
                    **{f"share_{s}": float((w["state"] == s).mean()) for s in (*STATE_NAMES, "warming_up")},
                }
            )
            state_parts.append(w[["price", "state"]].assign(driver=driver, timeframe=tf))
        # one decision grid per timeframe (every tradable series' bar opens), so the summary is computed once
        tradable = [per_series[(s, tf)].index for s in series if (s, tf) in per_series]
        grid = tradable[0].append(tradable[1:]).unique().sort_values() if tradable else pd.DatetimeIndex([], tz="UTC")
        known = KnownAt(per_series, grid)
        lever_cache: dict[str, pd.DataFrame] = {}
        for s in series:
            frame = per_series.get((s, tf))
            if frame is None:
                if (s, tf) not in excluded:
                    not_evaluable.append({"driver": s, "timeframe": tf, "reason": "no bars in the input"})
                continue
            ex_tf = exec_tf or tf
            times = frame.index  # holding period τ starts at bar τ's open = the previous bar's close
            lv, missing = _levers_for(known, s, ex_tf, excluded, lever_cache)
            lv = lv.reindex(times)
            period_ret = frame["open"].shift(-1) / frame["open"] - 1.0
            own_state = pd.Series(known.states((s, tf)), index=grid).reindex(times)
            sma = _sma_weights(frame, tf, times)
            ok = (
                (times >= start)
                & (times <= end)
                & period_ret.notna().to_numpy()
                & sma.notna().to_numpy()
                & ~own_state.isin(["warming_up", "missing"]).to_numpy()
            )
            if not ok.any():
                not_evaluable.append(
                    {"driver": s, "timeframe": tf, "reason": "window too short: 200-day average or engine warm-up"}
                )
                continue
            first = int(np.flatnonzero(ok)[0])
            sel = np.zeros(len(times), dtype=bool)
            sel[first:] = True
            sel &= period_ret.notna().to_numpy() & (times <= end)
            idx = times[sel]
            size = lv["position_size_frac"][sel]
            a = lv["A_value"][sel]
            weights = {
                "regime size": size,
                "regime A": a,
                "buy & hold": pd.Series(1.0, index=idx),
                "200-day SMA": sma[sel],
                "constant (expanding mean)": size.expanding().mean(),
            }
            r = period_ret[sel]
            eq = pd.DataFrame(index=idx)
            for name, wts in weights.items():
                bt = M.backtest(wts, r, cost_bps)
                eq[name] = bt["equity"]
                eq[f"{name} weight"] = bt["weight"]
                parts = [("whole window", np.ones(len(idx), dtype=bool), None), *_year_slices(idx, step)]
                for label, mask, partial in parts:
                    perf_rows.append(
                        {
                            "series": s,
                            "timeframe": tf,
                            "strategy": name,
                            "period": label,
                            "partial_year": partial,
                            **_performance(name, bt[mask], ppy),
                        }
                    )
            eq_parts.append(eq.assign(series=s, timeframe=tf).reset_index(names="timestamp"))
            clamp_rows.append(
                {
                    "series": s,
                    "timeframe": tf,
                    "levers": "market summary (D2 fixed weights)"
                    if s in ("BTC", "ALT")
                    else f"bucket {s}, exec {ex_tf}",
                    "bars": int(sel.sum()),
                    "share_A_at_0": float((a == 0).mean()),
                    "share_A_at_1": float((a == 1).mean()),
                    "share_E_at_0": float((lv["E_value"][sel] == 0).mean()),
                    "share_E_at_1": float((lv["E_value"][sel] == 1).mean()),
                    "partial": bool(missing),
                    "missing_drivers": ", ".join(missing),
                }
            )
            daily = lv[sel].groupby(idx.floor("1D"))
            band = pd.concat(
                {f"{c}_{f}": getattr(daily[c], f)() for c in ("A_value", "E_value") for f in ("min", "median", "max")},
                axis=1,
            )
            band_parts.append(band.assign(series=s, timeframe=tf).reset_index(names="date"))
            own_bar_state = frame["state"][sel]
            sw = M.swing_latency(frame["price"][sel], own_bar_state)
            swing_parts.append(sw.assign(series=s, timeframe=tf))
            lags = sw.loc[sw["status"] == "reflected", "lag_bars"].astype(float)
            lat_rows.append(
                {
                    "series": s,
                    "timeframe": tf,
                    "turning_points": len(sw),
                    "reflected": int((sw["status"] == "reflected").sum()),
                    "missed": int((sw["status"] == "missed").sum()),
                    "open": int((sw["status"] == "open").sum()),
                    "median_lag_bars": float(lags.median()) if len(lags) else float("nan"),
                    "median_lag_bars_after_troughs": float(lags[sw["kind"] == "trough"].median())
                    if len(lags)
                    else float("nan"),
                    "median_lag_bars_after_peaks": float(lags[sw["kind"] == "peak"].median())
                    if len(lags)
                    else float("nan"),
                }
            )
            windows[f"{s} {tf}"] = {
                "first_period": idx[0].isoformat(),
                "last_period": idx[-1].isoformat(),
                "periods": len(idx),
                "execution_timeframe": ex_tf,
                "levers_partial": bool(missing),
                "levers_missing_drivers": missing,
            }
    meta = {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "input": history.describe(),
        "timeframes": list(timeframes),
        "series": list(series),
        "cost_bps": cost_bps,
        "exec_tf_override": exec_tf,
        "drivers_replayed": sorted(f"{d} {tf}" for d, tf in per_series),
        "simulated_inputs": sorted(f"{d} {tf}" for d, tf in simulated),
        "bootstrap": {
            "method": "circular block",
            "resamples": resamples,
            "seed": M.BOOTSTRAP_SEED,
            "min_block": M.MIN_BLOCK,
        },
        "windows": windows,
        "gaps_inside_window": gap_notes,
        "state_names": STATE_NAMES,
    }

    def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame(rows)

    def concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    return Evaluation(
        meta=meta,
        forward=frame_of(fwd_rows),
        s3_minus_s0=frame_of(diff_rows),
        performance=frame_of(perf_rows),
        equity=concat(eq_parts),
        stability=frame_of(stab_rows),
        clamps=frame_of(clamp_rows),
        swings=concat(swing_parts),
        latency=frame_of(lat_rows),
        levers_daily=concat(band_parts),
        states=concat([p.reset_index(names="timestamp") for p in state_parts]),
        not_evaluable=not_evaluable,
    )


def _forward_tables(
    window: pd.DataFrame, driver: str, tf: str, resamples: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Forward returns by state with block-bootstrap intervals, the all-bars baseline, and S3 − S0."""
    rows, diffs = [], []
    labelled = window[window["state"].isin(list(STATE_NAMES))]
    for h in HORIZONS[tf]:
        fwd = M.forward_returns(window["price"], h).reindex(labelled.index)
        valid = fwd.notna().to_numpy()
        ret = fwd.to_numpy()[valid]
        st = labelled["state"].to_numpy()[valid]
        if len(ret) < 2:
            continue
        boot = M.bootstrap_group_means(ret, st, list(STATE_NAMES), h, resamples=resamples)
        for label in [*STATE_NAMES, "all"]:
            sel = np.ones(len(ret), dtype=bool) if label == "all" else st == label
            if not sel.any():
                continue
            lo, hi = M.interval(boot[label])
            rows.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    "horizon_bars": h,
                    "state": label,
                    "count": int(sel.sum()),
                    "mean": float(ret[sel].mean()),
                    "median": float(np.median(ret[sel])),
                    "hit_rate": float((ret[sel] > 0).mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "baseline_mean_all_bars": float(ret.mean()),
                }
            )
        if (st == "S3").any() and (st == "S0").any():
            lo, hi = M.interval(boot["S3"] - boot["S0"])
            diffs.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    "horizon_bars": h,
                    "s3_mean": float(ret[st == "S3"].mean()),
                    "s0_mean": float(ret[st == "S0"].mean()),
                    "difference": float(ret[st == "S3"].mean() - ret[st == "S0"].mean()),
                    "ci_low": lo,
                    "ci_high": hi,
                    "distinguishable_from_zero": bool(lo > 0 or hi < 0),
                }
            )
    return rows, diffs
