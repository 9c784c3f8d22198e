"""Seeded, documented simulations for the series the real data bundle does not have.

Everything produced here is labelled ``simulated`` in ``regime_tasks/data/MANIFEST.json`` and in every output
that uses it (demo table, replay report). Nothing here is presented as market data.

- :func:`bridge_path` — a log-space Brownian bridge between known closes (e.g. real daily BTC.D closes → hourly
  values), so a simulated finer series agrees with the real coarser one at every known point.
- :func:`bridge_candles` — 1m candles inside real hourly bars: the close path is a bridge from the previous
  hourly close to this bar's close; highs/lows are widened to keep the real bar's range plausible.
- :func:`simulated_market_caps` — market caps for tokens without any (none exist in the bundle).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEED = 20250726


def bridge_path(
    anchors: pd.Series,
    freq: str,
    *,
    vol_per_step: float,
    rng: np.random.Generator,
    extend_to: pd.Timestamp | None = None,
) -> pd.Series:
    """Values on a ``freq`` grid that pass exactly through each anchor (index = times, values > 0).

    After the last anchor the path continues as a driftless random walk up to ``extend_to`` (never towards a
    later anchor, so no future value leaks into the simulated series).
    """
    anchors = anchors.sort_index()
    out_idx: list[pd.Timestamp] = []
    out_val: list[float] = []
    times = anchors.index
    logs = np.log(anchors.to_numpy(dtype=np.float64))
    step = pd.Timedelta(freq)
    for k in range(len(times) - 1):
        n = int((times[k + 1] - times[k]) / step)
        if n <= 0:
            continue
        w = np.concatenate([[0.0], np.cumsum(rng.normal(0.0, vol_per_step, n))])
        t = np.arange(n + 1) / n
        bridge = w - t * w[-1] + logs[k] + t * (logs[k + 1] - logs[k])
        out_idx.extend(times[k] + step * j for j in range(n))
        out_val.extend(bridge[:-1])
    out_idx.append(times[-1])
    out_val.append(logs[-1])
    if extend_to is not None and extend_to > times[-1]:
        n = int((extend_to - times[-1]) / step)
        walk = logs[-1] + np.cumsum(rng.normal(0.0, vol_per_step, n))
        out_idx.extend(times[-1] + step * (j + 1) for j in range(n))
        out_val.extend(walk)
    return pd.Series(np.exp(out_val), index=pd.DatetimeIndex(out_idx, name="timestamp"))


def bridge_candles(hourly: pd.DataFrame, *, rng: np.random.Generator) -> pd.DataFrame:
    """1m candles whose hourly aggregate closes where the real hour closed (volume split evenly, scaled noise)."""
    rows = []
    prev_close = float(hourly["open"].iloc[0])
    for ts, bar in hourly.iterrows():
        steps = 60
        rng_range = max(float(bar["high"]) / float(bar["low"]) - 1.0, 1e-4)
        vol = np.log1p(rng_range) / 6.0
        w = np.concatenate([[0.0], np.cumsum(rng.normal(0.0, vol, steps))])
        t = np.arange(steps + 1) / steps
        path = np.exp(w - t * w[-1] + np.log(prev_close) + t * (np.log(float(bar["close"])) - np.log(prev_close)))
        opens, closes = path[:-1], path[1:]
        wick = np.abs(rng.normal(0.0, vol / 2.0, steps))
        highs = np.maximum(opens, closes) * (1.0 + wick)
        lows = np.minimum(opens, closes) * (1.0 - wick)
        minutes = pd.date_range(ts, periods=steps, freq="1min", tz="UTC")
        vols = np.full(steps, float(bar["volume"]) / steps)
        rows.append(
            pd.DataFrame({"open": opens, "high": highs, "low": lows, "close": closes, "volume": vols}, index=minutes)
        )
        prev_close = float(bar["close"])
    out = pd.concat(rows)
    out.index = out.index.rename("timestamp")
    return out


def simulated_market_caps(
    symbols: list[str], dollar_volume: dict[str, float], *, rng: np.random.Generator
) -> dict[str, float]:
    """Caps for tokens with none: ranked by real traded dollar volume, split into four equal groups that land in
    big / mid / small / nano, each cap drawn log-uniformly inside its bucket's range (default thresholds)."""
    ranges = [(200e6, 800e6), (50e6, 200e6), (10e6, 50e6), (1e6, 10e6)]
    ranked = sorted(symbols, key=lambda s: (-dollar_volume.get(s, 0.0), s))
    groups = np.array_split(np.array(ranked, dtype=object), 4)
    caps: dict[str, float] = {}
    for (lo, hi), group in zip(ranges, groups, strict=True):
        for sym in group:
            caps[str(sym)] = float(np.exp(rng.uniform(np.log(lo), np.log(hi) - 1e-9)))
    return caps
