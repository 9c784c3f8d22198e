"""BTC and USDT dominance as price-like series (DECISIONS D4).

Raw samples (one per CoinGecko ``/global`` call: fetch time, ``btc_d``, ``usdt_d`` in percent, the source's
``updated_at``) become 1m bars: open = first sample of the minute, high = max, low = min, close = last,
volume 0. A minute without a sample is a flat bar at the previous close. 1h and 1d come from
``core.bars.rollup``. Imported history (a CSV of timestamp, btc_d, usdt_d) becomes flat bars of its own
timeframe. Pure functions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from regime_tasks.core.bars import timeframe_delta
from regime_tasks.errors import DataValidationError

DOMINANCE_COLUMNS = {"BTC.d": "btc_d", "USDT.d": "usdt_d"}
# Column names accepted by the history importer, mapped to ours.
_ALIASES = {
    "btc_dominance_pct": "btc_d",
    "usdt_dominance_pct": "usdt_d",
    "btc.d": "btc_d",
    "usdt.d": "usdt_d",
    "date": "timestamp",
    "time": "timestamp",
}


def _check_range(frame: pd.DataFrame, *, series: str, time_col: str) -> None:
    for col in ("btc_d", "usdt_d"):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values <= 0) | (values > 100)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataValidationError(
                f"dominance must be a percentage in (0, 100], got {frame[col].iloc[i]!r}",
                series=series,
                timestamp=frame[time_col].iloc[i],
                field=col,
            )


def samples_to_1m_bars(
    samples: pd.DataFrame, *, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
) -> dict[str, pd.DataFrame]:
    """1m bars of BTC.d and USDT.d from raw samples (columns ``fetched_at``, ``btc_d``, ``usdt_d``).

    The grid runs from the first sampled minute (or ``start``) to ``end`` (the open time of the last minute to
    emit; default: the last sampled minute); minutes without a sample are flat at the previous close.
    """
    if samples.empty:
        return {d: pd.DataFrame(columns=["open", "high", "low", "close", "volume"]) for d in DOMINANCE_COLUMNS}
    s = samples.copy()
    s["fetched_at"] = pd.to_datetime(s["fetched_at"], utc=True)
    s = s.sort_values("fetched_at", kind="mergesort")
    _check_range(s, series="dominance_samples", time_col="fetched_at")
    minute = s["fetched_at"].dt.floor("1min")
    out: dict[str, pd.DataFrame] = {}
    for driver, col in DOMINANCE_COLUMNS.items():
        g = s[col].astype("float64").groupby(minute)
        bars = pd.DataFrame({"open": g.first(), "high": g.max(), "low": g.min(), "close": g.last()})
        first = bars.index[0] if start is None else min(pd.Timestamp(start), bars.index[0])
        last = bars.index[-1] if end is None else pd.Timestamp(end)
        grid = pd.date_range(first, last, freq="1min", tz="UTC", name="timestamp")
        bars = bars.reindex(grid)
        close = bars["close"].ffill()
        for c in ("open", "high", "low"):
            bars[c] = bars[c].fillna(close)
        bars["close"] = close
        bars = bars.dropna(subset=["close"])  # minutes before the first sample stay absent
        bars["volume"] = 0.0
        out[driver] = bars[["open", "high", "low", "close", "volume"]]
    return out


def read_history_csv(path: str | Path) -> pd.DataFrame:
    """Read a dominance history file (``timestamp,btc_d,usdt_d``; TradingView-style column names accepted)."""
    try:
        raw = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read dominance history: {exc}", series=str(path)) from exc
    raw = raw.rename(columns={c: _ALIASES.get(c.strip().lower(), c.strip().lower()) for c in raw.columns})
    for col in ("timestamp", "btc_d", "usdt_d"):
        if col not in raw.columns:
            raise DataValidationError("missing column", series=str(path), field=col)
    try:
        raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"unparsable time: {exc}", series=str(path), field="timestamp") from exc
    _check_range(raw, series=str(path), time_col="timestamp")
    out = raw[["timestamp", "btc_d", "usdt_d"]].astype({"btc_d": "float64", "usdt_d": "float64"})
    return out.sort_values("timestamp", kind="mergesort").drop_duplicates("timestamp", keep="last")


def history_to_bars(history: pd.DataFrame, timeframe: str) -> dict[str, pd.DataFrame]:
    """Imported closes → flat bars (open = high = low = close, volume 0) on ``timeframe``'s grid."""
    step = timeframe_delta(timeframe)
    h = history.copy()
    stamps = pd.to_datetime(h["timestamp"], utc=True)
    h["timestamp"] = stamps.dt.floor(step)
    off_grid = stamps != h["timestamp"]
    h = h.drop_duplicates("timestamp", keep="last").set_index("timestamp")
    out = {}
    for driver, col in DOMINANCE_COLUMNS.items():
        v = h[col].astype("float64")
        out[driver] = pd.DataFrame(
            {"open": v, "high": v, "low": v, "close": v, "volume": 0.0}, index=h.index.rename("timestamp")
        )
        # Rows stamped off the grid (a 1d close at 07:00) are floored to their bar's open: said, not silent.
        out[driver].attrs["floored"] = int(off_grid.sum())
        if off_grid.any():
            first = stamps[off_grid].iloc[0]
            out[driver].attrs["floored_example"] = f"{_iso(first)} → {_iso(first.floor(step))}"
    return out


def _iso(t: pd.Timestamp) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")
