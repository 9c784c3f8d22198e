"""The per-bar TA frame of a whole series, and the recurrences' state after its last bar."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from regime_tasks.core.ta.indicators import (
    DELTA_SLOPE_EMAS,
    EMA_PERIODS,
    SLOPE_EMAS,
    SLOPE_WINDOW,
    TA_COLUMNS,
    _adx_parts,
    _lagged_change,
    _rsi_parts,
    _volume_z_parts,
    ema,
    ls_slope,
    normalised_slope,
    rolling_mean,
    wilder_atr,
)
from regime_tasks.core.ta.stream import TAState


def compute_ta_frame(bars: pd.DataFrame) -> pd.DataFrame:
    """Per-bar TA columns (docs/CONTRACTS.md §2) after the columns of ``bars`` (same index).

    When every column of ``bars`` is numeric the result is one float64 block, so that ``to_numpy()`` on it (the
    engine's history) is a view, not a copy.
    """
    return compute_ta_frame_and_state(bars)[0]


def compute_ta_frame_and_state(bars: pd.DataFrame) -> tuple[pd.DataFrame, TAState]:
    """``compute_ta_frame`` plus the recurrences' state after the last bar, from which :class:`TAStream` goes on."""
    close = pd.Series(bars["close"].to_numpy(dtype=np.float64))
    h, lo, c = (bars[k].to_numpy(dtype=np.float64) for k in ("high", "low", "close"))
    numeric = all(pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) for dt in bars.dtypes)
    n_bar_cols = len(bars.columns) if numeric else 0
    # each column goes into the result's block as it is computed (a long series holds the block and a few
    # temporaries, not every column twice); column-major, so a column's pages are its own
    block = np.empty((len(bars), n_bar_cols + len(TA_COLUMNS)), order="F")
    cols = _BlockColumns(block, n_bar_cols)
    for n in EMA_PERIODS:
        cols[f"ema{n}"] = ema(close, n)
    for n in SLOPE_EMAS:
        cols[f"ema{n}_slope"] = normalised_slope(cols[f"ema{n}"])
    for n in DELTA_SLOPE_EMAS:
        cols[f"d_ema{n}_slope"] = _lagged_change(cols[f"ema{n}_slope"], SLOPE_WINDOW)
    atr = wilder_atr(h, lo, c)
    cols["atr"] = atr
    cols["atr_mean_20"] = rolling_mean(atr, 20)
    cols["atr_peak_10"] = pd.Series(atr).rolling(10).max().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["atr_norm"] = atr / cols["ema50"]
    adx, s_tr, s_p, s_m = _adx_parts(h, lo, c)
    cols["adx"] = adx
    cols["adx_slope_10"] = ls_slope(adx)
    rsi_values, avg_up, avg_down = _rsi_parts(close)
    cols["rsi"] = rsi_values
    cols["rsi_slope_10"] = ls_slope(rsi_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["sep_fast"] = (cols["ema20"] - cols["ema60"]) / cols["ema60"]
        cols["sep_mid"] = (cols["ema60"] - cols["ema144"]) / cols["ema144"]
    cols["dsep_fast_5"] = _lagged_change(cols["sep_fast"], 5)
    cols["dsep_mid_5"] = _lagged_change(cols["sep_mid"], 5)
    volume = bars["volume"].to_numpy(dtype=np.float64)
    cols["vo_z"], vo_mean, vo_var = _volume_z_parts(volume)
    state = TAState(
        bars=len(bars),
        ema={n: _last(cols[f"ema{n}"]) for n in EMA_PERIODS},
        avg_up=_last(avg_up),
        avg_down=_last(avg_down),
        atr=_last(atr),
        s_tr=_last(s_tr),
        s_plus_dm=_last(s_p),
        s_minus_dm=_last(s_m),
        adx=_last(adx),
        has_volume=bool(np.any(volume > 0)),
        vo_mean=vo_mean,
        vo_var=vo_var,
    )
    del close, h, lo, c, atr, adx, s_tr, s_p, s_m, rsi_values, avg_up, avg_down, volume
    if numeric:
        for j, name in enumerate(bars.columns):
            block[:, j] = bars[name].to_numpy(dtype=np.float64)
        names = [*map(str, bars.columns), *TA_COLUMNS]
        return pd.DataFrame(block, index=bars.index, columns=names, copy=False), state
    # a non-numeric column (e.g. the grid's ``filled`` flag) keeps its dtype: slower, but exact
    ta_frame = pd.DataFrame(block, index=bars.index, columns=list(TA_COLUMNS), copy=False)
    return pd.concat([bars.copy(), ta_frame], axis=1), state


class _BlockColumns:
    """The TA columns by name, stored in their columns of ``block`` (after ``offset`` leading ones): setting one
    copies it in, reading one gives the block's column (a view)."""

    def __init__(self, block: np.ndarray, offset: int) -> None:
        self.block = block
        self.where = {name: offset + j for j, name in enumerate(TA_COLUMNS)}

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        self.block[:, self.where[name]] = values

    def __getitem__(self, name: str) -> np.ndarray:
        return self.block[:, self.where[name]]


def _last(values: np.ndarray) -> float:
    return float(values[-1]) if len(values) else math.nan
