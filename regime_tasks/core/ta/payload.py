"""The ``features.ta`` payload of a series' latest closed bar."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from regime_tasks.core.bars import fill_gaps
from regime_tasks.core.ta.frame import compute_ta_frame
from regime_tasks.core.ta.indicators import DELTA_SLOPE_EMAS, EMA_PERIODS, SCALAR_COLUMNS, SLOPE_EMAS, TA_COLUMNS
from regime_tasks.core.ta.pivots import Pivot, sr_levels_from, swing_pivots


@dataclasses.dataclass(frozen=True)
class TAPayload:
    """TA of the latest closed bar of one series (``features.ta``)."""

    series: str
    timeframe: str
    bar_ts: str
    latest_price: float
    bars: int
    filled_bars: int
    values: dict[str, float | None]
    sr_levels: list[dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        v = self.values
        return {
            "series": self.series,
            "timeframe": self.timeframe,
            "bar_ts": self.bar_ts,
            "latest_price": self.latest_price,
            "bars": self.bars,
            "filled_bars": self.filled_bars,
            "ema": {f"ema{n}": v[f"ema{n}"] for n in EMA_PERIODS},
            "slopes": {
                **{f"ema{n}_slope": v[f"ema{n}_slope"] for n in SLOPE_EMAS},
                **{f"d_ema{n}_slope": v[f"d_ema{n}_slope"] for n in DELTA_SLOPE_EMAS},
            },
            **{k: v[k] for k in SCALAR_COLUMNS},
            "sr_levels": self.sr_levels,
        }


def _clean(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def compute_ta(
    bars: pd.DataFrame,
    *,
    series: str,
    timeframe: str,
    window_bars: int = 3_000,
    sr_levels: str = "swing",
) -> TAPayload:
    """TA of the latest closed bar, on the last ``window_bars`` bars after grid filling (D5, D6).

    ``sr_levels``: ``"swing"`` computes S/R levels from zig-zag pivots (spec §7), ``"none"`` leaves them empty.
    """
    filled, _ = fill_gaps(bars[["open", "high", "low", "close", "volume"]], timeframe)
    window = filled.iloc[-window_bars:]
    frame = compute_ta_frame(window.drop(columns="filled"))
    return ta_payload_from_frame(
        frame, series=series, timeframe=timeframe, filled_bars=int(window["filled"].sum()), sr_levels=sr_levels
    )


def ta_payload_from_frame(
    frame: pd.DataFrame,
    *,
    series: str,
    timeframe: str,
    filled_bars: int,
    sr_levels: str = "swing",
    pivots: list[Pivot] | None = None,
) -> TAPayload:
    """The payload of the last row of an already computed TA frame (the live step computes the frame once)."""
    last = frame.iloc[-1]
    values = {k: _clean(last[k]) for k in TA_COLUMNS}
    levels: list[dict[str, float]] = []
    if sr_levels == "swing":
        if pivots is None:
            pivots = swing_pivots(frame["high"].to_numpy(), frame["low"].to_numpy(), frame["atr"].to_numpy())
        levels = sr_levels_from(pivots, float(last["close"]), values["atr"])
    return TAPayload(
        series=series,
        timeframe=timeframe,
        bar_ts=frame.index[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
        latest_price=float(last["close"]),
        bars=len(frame),
        filled_bars=filled_bars,
        values=values,
        sr_levels=levels,
    )
