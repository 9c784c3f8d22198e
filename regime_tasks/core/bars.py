"""Bar frames: normalisation, validation, the still-open bar, grid filling and rollups (D5).

A bar frame (docs/CONTRACTS.md §1) is a DataFrame indexed by the bar's **open** time (UTC, name
``timestamp``, strictly increasing) with float columns ``open high low close volume``.
Pure functions; no I/O.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from regime_tasks.core.timeframes import ISO_FORMAT, parse_ts
from regime_tasks.core.timeframes import bar_delta as timeframe_delta  # the sources and core/live import it here
from regime_tasks.errors import DataValidationError

log = logging.getLogger(__name__)

OHLCV = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")


def _to_utc_index(values: pd.Series | pd.Index, *, series: str) -> pd.DatetimeIndex:
    if isinstance(values, pd.DatetimeIndex):
        idx = values
    elif pd.api.types.is_numeric_dtype(values):
        idx = pd.DatetimeIndex(pd.to_datetime(np.asarray(values, dtype="int64"), unit="ms", utc=True))
    else:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
        except (ValueError, TypeError) as exc:
            bad = None
            for v in values:
                try:
                    pd.Timestamp(v)
                except (ValueError, TypeError):
                    bad = v
                    break
            raise DataValidationError(f"unparsable time {bad!r}", series=series, field="timestamp") from exc
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    try:
        return idx.as_unit("ns").rename("timestamp")
    except (ValueError, OverflowError):  # OutOfBoundsDatetime: bars are indexed in nanoseconds (years 1677–2262)
        lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
        bad = next((t for t in idx if not lo <= t <= hi), None)
        raise DataValidationError(
            "time outside the years 1677–2262", series=series, timestamp=bad, field="timestamp"
        ) from None


def normalize_bars(df: pd.DataFrame, *, series: str, timeframe: str | None = None) -> pd.DataFrame:
    """Canonical bar frame from a candle table: UTC open-time index, float64 columns, sorted.

    ``timestamp`` may be a column or the index, as ISO strings, datetimes or epoch milliseconds.
    Duplicate timestamps keep the **last** row (the latest report of a bar wins, deterministically).
    The result is validated (see :func:`validate_bars`).
    """
    frame = df.copy()
    cols = {c: str(c).strip().lower() for c in frame.columns}
    frame = frame.rename(columns=cols)
    if "timestamp" in frame.columns:
        idx = _to_utc_index(frame["timestamp"], series=series)
        frame = frame.drop(columns="timestamp")
        frame.index = idx
    else:
        frame.index = _to_utc_index(frame.index, series=series)
    missing = [c for c in OHLCV if c not in frame.columns]
    if missing:
        raise DataValidationError(f"missing column(s) {missing}", series=series, field=missing[0])
    extra = [c for c in ("constituents", "filled") if c in frame.columns]
    out = frame[[*OHLCV, *extra]].copy()
    for c in OHLCV:
        try:
            out[c] = pd.to_numeric(out[c], errors="raise").astype("float64")
        except (ValueError, TypeError) as exc:
            raise DataValidationError(f"non-numeric value in {c}", series=series, field=c) from exc
    out = out.sort_index(kind="mergesort")
    dup = out.index.duplicated(keep="last")
    if dup.any():
        # Identical repeats are harmless; repeats with other values are a choice made for the user: say which.
        repeated = out[out.index.duplicated(keep=False)]
        differs = repeated.groupby(level=0).nunique(dropna=False).max(axis=1) > 1
        conflicting: list[str] = [t.strftime(ISO_FORMAT) for t in differs.index[differs.to_numpy()]]
        if conflicting:
            log.warning(
                "%d bar times of %s repeat with different values; the last row of each is kept: %s%s",
                len(conflicting),
                series,
                ", ".join(str(pd.Timestamp(t)) for t in conflicting[:5]),
                " …" if len(conflicting) > 5 else "",
            )
        log.info("dropped %d duplicate bars of %s (last report kept)", int(dup.sum()), series)
        out = out[~dup]
        # only when there were any: pandas copies attrs through every later operation on the frame
        out.attrs["duplicates"] = int(dup.sum())
        out.attrs["conflicting_duplicates"] = conflicting
    validate_bars(out, series=series, timeframe=timeframe)
    return out


def validate_bars(
    df: pd.DataFrame,
    *,
    series: str,
    timeframe: str | None = None,
    source: str | None = None,
    require_increasing: bool = True,
) -> None:
    """Raise :class:`DataValidationError` naming the first bad bar, or return None.

    Checks (vectorised): finite numbers, prices > 0, ``low ≤ open, close ≤ high``, volume ≥ 0, strictly
    increasing timestamps and, with ``timeframe``, open times aligned to the bar grid.
    """
    if df.empty:
        return
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataValidationError("index is not a DatetimeIndex", series=series, field="timestamp", source=source)
    idx = df.index

    def fail(message: str, pos: int, field: str) -> None:
        raise DataValidationError(message, series=series, timestamp=idx[pos], field=field, source=source)

    for c in OHLCV:
        if c not in df.columns:
            raise DataValidationError("missing column", series=series, field=c, source=source)
    o, h, lo, c, v = (df[col].to_numpy(dtype=np.float64, na_value=np.nan) for col in OHLCV)
    # first bad position for each rule, in a fixed rule order so messages are deterministic
    for name, arr in zip(OHLCV, (o, h, lo, c, v), strict=True):
        bad = ~np.isfinite(arr)
        if bad.any():
            fail(f"{name} is NaN or infinite", int(np.argmax(bad)), name)
    for name, arr in zip(PRICE_COLUMNS, (o, h, lo, c), strict=True):
        bad = arr <= 0
        if bad.any():
            fail(f"{name} must be > 0, got {float(arr[np.argmax(bad)])!r}", int(np.argmax(bad)), name)
    bad = v < 0
    if bad.any():
        fail(f"volume must be ≥ 0, got {float(v[np.argmax(bad)])!r}", int(np.argmax(bad)), "volume")
    bad = h < lo
    if bad.any():
        i = int(np.argmax(bad))
        fail(f"high {float(h[i])!r} < low {float(lo[i])!r}", i, "high")
    for name, arr in (("open", o), ("close", c)):
        bad = (arr < lo) | (arr > h)
        if bad.any():
            i = int(np.argmax(bad))
            fail(f"{name} {float(arr[i])!r} outside [low {float(lo[i])!r}, high {float(h[i])!r}]", i, name)
    if require_increasing and len(idx) > 1:
        steps = np.diff(idx.asi8)
        bad = steps <= 0
        if bad.any():
            i = int(np.argmax(bad)) + 1
            what = "duplicate" if steps[i - 1] == 0 else "out-of-order"
            fail(f"{what} timestamp (previous {idx[i - 1]})", i, "timestamp")
    if timeframe is not None:
        step_ns = timeframe_delta(timeframe).value
        bad = (idx.as_unit("ns").asi8 % step_ns) != 0
        if bad.any():
            fail(f"open time not aligned to {timeframe} bars", int(np.argmax(bad)), "timestamp")


def drop_open_bar(df: pd.DataFrame, timeframe: str, now: pd.Timestamp) -> pd.DataFrame:
    """Drop bars that have not closed at ``now`` (open time + bar length > now)."""
    if df.empty:
        return df
    now_ts = parse_ts(now)
    closes = df.index + timeframe_delta(timeframe)
    return df[closes <= now_ts]


def fill_gaps(df: pd.DataFrame, timeframe: str) -> tuple[pd.DataFrame, int]:
    """Put bars on a regular grid; a missing bar is flat at the previous close with volume 0 (D5).

    Returns the filled frame (with a bool ``filled`` column) and the number of bars added.
    """
    if df.empty:
        out = df.copy()
        out["filled"] = pd.Series(dtype=bool)
        return out, 0
    step = timeframe_delta(timeframe)
    grid = pd.date_range(df.index[0], df.index[-1], freq=step, tz="UTC", name="timestamp")
    base = df.drop(columns=[c for c in ("filled",) if c in df.columns])
    out = base.reindex(grid)
    missing = out["close"].isna().to_numpy()
    n = int(missing.sum())
    if n:
        prev_close = out["close"].ffill()
        for c in PRICE_COLUMNS:
            out[c] = out[c].where(~missing, prev_close)
        out["volume"] = out["volume"].fillna(0.0)
        if "constituents" in out.columns:
            out["constituents"] = out["constituents"].fillna(0)
    out["filled"] = missing
    return out, n


def rollup(df: pd.DataFrame, to_timeframe: str, *, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """Aggregate bars into ``to_timeframe`` periods: first open, max high, min low, last close, summed volume.

    A period is emitted only once it has ended: with ``now``, its end must be ≤ ``now``; without, the input's
    last bar must close at or after the period end (the period is complete in the data given).
    """
    if df.empty:
        return df[list(OHLCV)].copy()
    step = timeframe_delta(to_timeframe)
    agg = (
        df[list(OHLCV)]
        .resample(step, label="left", closed="left", origin="epoch")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    )
    agg = agg.dropna(subset=["close"])
    agg.index = agg.index.rename("timestamp")
    ends = agg.index + step
    if now is not None:
        agg = agg[ends <= parse_ts(now)]
    else:
        src_step = df.index.to_series().diff().min() if len(df) > 1 else pd.Timedelta(0)
        data_end = df.index[-1] + (src_step if pd.notna(src_step) else pd.Timedelta(0))
        agg = agg[ends <= data_end]
    return agg
