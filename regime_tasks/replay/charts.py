"""Charts a trader reads: states over price with a named legend, A/E as a daily band, equity and drawdown.

Shared by the replay and the evaluation reports. Every chart is a PNG written with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from regime_tasks.core.constants import STATE_NAMES as ENGINE_STATE_NAMES

STATE_COLOURS = {
    "S0": "#d62728",
    "S1": "#17becf",
    "S2": "#ffbf00",
    "S3": "#2ca02c",
    "S4": "#7f7f7f",
    "warming_up": "#dddddd",
}
STATE_NAMES = {**ENGINE_STATE_NAMES, "warming_up": "warming up (< 333 bars)"}
STRATEGY_COLOURS = {
    "regime size": "#1f77b4",
    "regime A": "#9467bd",
    "buy & hold": "#000000",
    "200-day SMA": "#ff7f0e",
    "constant (expanding mean)": "#8c564b",
}


def state_legend(ax: plt.Axes, states: list[str] | None = None, **kwargs: object) -> None:
    """A legend naming each state (S0 bearish order … S4 uncertain) with its colour."""
    states = states or list(STATE_COLOURS)
    handles = [Patch(color=STATE_COLOURS[s], label=STATE_NAMES[s]) for s in states]
    ax.legend(handles=handles, fontsize=7, ncol=min(len(handles), 6), **kwargs)  # type: ignore[arg-type,call-overload]


def price_with_states(ax: plt.Axes, ts: pd.Series, price: pd.Series, states: pd.Series, title: str) -> None:
    """Price line, each bar's dot coloured by the state known at its close."""
    ax.plot(ts, price, color="black", linewidth=0.5)
    for state, colour in STATE_COLOURS.items():
        sel = (states == state).to_numpy()
        if sel.any():
            ax.scatter(ts[sel], price[sel], s=3, color=colour)
    ax.set_title(title, fontsize=9, loc="left")


def chart_price_states(panels: list[tuple[str, pd.DataFrame]], path: Path) -> Path:
    """One panel per series (frame with timestamp, price, state); the legend names S0–S4."""
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.3 * n + 0.6), sharex=True, squeeze=False)
    for ax, (title, part) in zip(axes[:, 0], panels, strict=False):
        price_with_states(ax, part["timestamp"], part["price"], part["state"], title)
        ax.set_yscale("log")
    state_legend(axes[0, 0], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def daily_band(frame: pd.DataFrame, ts_col: str = "timestamp") -> pd.DataFrame:
    """A and E per UTC day: min, median, max (a band a trader can read, not a raw hourly line)."""
    day = pd.DatetimeIndex(frame[ts_col]).floor("1D")
    g = frame.groupby(day)
    out = {f"{c}_{f}": getattr(g[c], f)() for c in ("A_value", "E_value") for f in ("min", "median", "max")}
    return pd.DataFrame(out).rename_axis("date").reset_index()


def band_axes(ax: plt.Axes, band: pd.DataFrame, title: str) -> None:
    """A (blue) and E (orange): shaded daily min–max, line at the daily median."""
    for col, colour, name in (
        ("A_value", "#1f77b4", "A (aggressiveness)"),
        ("E_value", "#ff7f0e", "E (exit-mindedness)"),
    ):
        ax.fill_between(band["date"], band[f"{col}_min"], band[f"{col}_max"], color=colour, alpha=0.25, step="mid")
        ax.plot(band["date"], band[f"{col}_median"], color=colour, linewidth=1.0, label=f"{name}: daily median")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title + " — shaded: daily min–max", fontsize=9, loc="left")


def chart_levers_band(panels: list[tuple[str, pd.DataFrame]], path: Path) -> Path:
    """One panel per lever source (frame from :func:`daily_band`)."""
    n = max(len(panels), 1)
    fig, axes = plt.subplots(n, 1, figsize=(12, 2.2 * n + 0.4), sharex=True, squeeze=False)
    for ax, (title, band) in zip(axes[:, 0], panels, strict=False):
        band_axes(ax, band, title)
    axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def chart_equity(equity: pd.DataFrame, title: str, path: Path) -> Path:
    """Equity curves of the strategy and its baselines (log scale) over a drawdown panel."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    ts = equity["timestamp"]
    for name, colour in STRATEGY_COLOURS.items():
        if name not in equity:
            continue
        eq = equity[name].to_numpy(dtype=float)
        width = 1.6 if name == "regime size" else 0.9
        top.plot(ts, eq, color=colour, linewidth=width, label=name)
        peak = np.maximum.accumulate(np.maximum(eq, 1.0))
        bottom.plot(ts, eq / peak - 1.0, color=colour, linewidth=width)
    top.set_yscale("log")
    top.set_ylabel("equity (start = 1)")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title, fontsize=10, loc="left")
    bottom.set_ylabel("drawdown")
    bottom.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
