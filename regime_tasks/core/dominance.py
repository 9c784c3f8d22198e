"""BTC and USDT dominance as price-like series (DECISIONS D4).

Raw samples (one per CoinGecko ``/global`` call: fetch time, ``btc_d``, ``usdt_d`` in percent, the source's
``updated_at``) become 1m bars: open = first sample of the minute, high = max, low = min, close = last,
volume 0. A minute without a sample is a flat bar at the previous close. 1h and 1d come from
``core.bars.rollup``. Imported history (a CSV of timestamp, btc_d, usdt_d) becomes flat bars of its own
timeframe. Pure functions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from regime_tasks.core.bars import timeframe_delta
from regime_tasks.core.timeframes import iso
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


def parse_history(raw: pd.DataFrame, *, series: str) -> pd.DataFrame:
    """A dominance history table (``timestamp,btc_d,usdt_d``; TradingView-style names accepted) → checked,
    sorted closes. Reading the file is the caller's (``sources.files.read_history_csv``): core opens no file."""
    raw = raw.rename(columns={c: _ALIASES.get(c.strip().lower(), c.strip().lower()) for c in raw.columns})
    for col in ("timestamp", "btc_d", "usdt_d"):
        if col not in raw.columns:
            raise DataValidationError("missing column", series=series, field=col)
    try:
        raw["timestamp"] = pd.to_datetime(raw["timestamp"], utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise DataValidationError(f"unparsable time: {exc}", series=series, field="timestamp") from exc
    _check_range(raw, series=series, time_col="timestamp")
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
            out[driver].attrs["floored_example"] = f"{iso(first)} → {iso(first.floor(step))}"
    return out


def derive_dominance(
    caps: pd.DataFrame,
    *,
    btc: str,
    usdt: str,
    stable_supply_usd: float,
    published: pd.DataFrame,
    timeframe: str,
    carry_calibration: bool = False,
) -> pd.DataFrame:
    """BTC.d / USDT.d per bar from real prices × supplies, calibrated causally to the published daily series (D16).

    ``caps``: index = bar open times, columns = coins, value = cap at the bar's **close** (price × supply; a coin
    without a bar carries its last cap forward — a causal fill — and counts 0 before its first bar); ``usdt`` is a
    column of stablecoin caps at supply like ``btc``. ``stable_supply_usd``: the other stablecoins, at their supply
    (price 1). ``published``: daily closes (index = day D, columns btc_d, usdt_d = the close of day D).

    raw(t) = 100 × cap(t) / Σ caps(t); the level is scaled by published(d−1) / raw(close of d−1) for every bar
    of day d, where "close of d−1" is the bar that closes at d 00:00 — the previous day's close, never a later
    one, so nothing after a bar's close enters it. Days whose previous close is missing (either series) get no
    bars. ``carry_calibration`` (live bootstrap, after the published series ends): a day whose previous close has
    no published value uses the last earlier ratio — still nothing after the bar's close, but an older level;
    column ``calibrated_on`` says which day's ratio each bar used. Returns columns
    ``raw_btc_d, raw_usdt_d, btc_d, usdt_d`` (and ``calibrated_on`` with ``carry_calibration``).
    """
    step = timeframe_delta(timeframe)
    filled = caps.sort_index().ffill().fillna(0.0)
    filled.index = pd.to_datetime(filled.index, utc=True)
    total = filled.sum(axis=1) + stable_supply_usd
    raw = pd.DataFrame({"raw_btc_d": 100.0 * filled[btc] / total, "raw_usdt_d": 100.0 * filled[usdt] / total})
    close_time = raw.index + step
    # the raw value at each day's close: the bar whose close time is midnight
    at_close = raw[close_time.floor("1D") == close_time]
    at_close.index = pd.DatetimeIndex(at_close.index + step).floor("1D")  # the day that this close *precedes*
    pub = published.copy()
    pub.index = pd.to_datetime(pub.index, utc=True).floor("1D") + pd.Timedelta(days=1)  # close of D, usable from D+1
    day = raw.index.floor("1D")
    out = raw.copy()
    for col in ("btc_d", "usdt_d"):
        ratio = (pub[col] / at_close[f"raw_{col}"]).dropna().sort_index()
        if carry_calibration:
            used = pd.Series(ratio.index, index=ratio.index).reindex(day, method="ffill")
            out["calibrated_on"] = (used - pd.Timedelta(days=1)).to_numpy()  # the close whose ratio scales the bar
            out[col] = raw[f"raw_{col}"] * ratio.reindex(day, method="ffill").to_numpy()
        else:
            out[col] = raw[f"raw_{col}"] * ratio.reindex(day).to_numpy()
    return out.dropna()


def dominance_validation(derived_daily_raw: pd.DataFrame, published: pd.DataFrame) -> dict[str, float]:
    """Daily changes d−1→d of the derived series (calibrated at d−1) against the published changes, out of sample.

    ``derived_daily_raw``: raw values at each day's close (index = day D), ``published``: closes (index = day D).
    Derived change = published(d−1) × (raw(d)/raw(d−1) − 1); only day d−1 calibrates it. Returns, per series,
    the correlation, the mean absolute gap in percentage points and the number of days.
    """
    out: dict[str, float] = {}
    for col in ("btc_d", "usdt_d"):
        joined = pd.concat([derived_daily_raw[f"raw_{col}"], published[col]], axis=1, keys=["raw", "pub"]).dropna()
        derived = joined["pub"].shift(1) * (joined["raw"] / joined["raw"].shift(1) - 1.0)
        actual = joined["pub"].diff()
        both = pd.concat([derived, actual], axis=1, keys=["d", "a"]).dropna()
        out[f"{col}_corr"] = float(both["d"].corr(both["a"]))
        out[f"{col}_mean_abs_gap_pp"] = float((both["d"] - both["a"]).abs().mean())
        out[f"{col}_days"] = float(len(both))
    return out
