"""The replay report: PNG charts, an HTML page embedding them, a Markdown summary and CSV tables."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from regime_tasks.core.constants import BUCKETS, DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.replay import ReplayResult, write_csvs

STATE_COLOURS = {
    "S0": "#d62728",
    "S1": "#17becf",
    "S2": "#ffbf00",
    "S3": "#2ca02c",
    "S4": "#7f7f7f",
    "warming_up": "#dddddd",
}
STATE_CODES = {"warming_up": 0, "S4": 1, "S0": 2, "S1": 3, "S2": 4, "S3": 5}


def _label(result: ReplayResult, driver: str, tf: str) -> str:
    return f"{driver} {tf}" + (" (simulated input)" if (driver, tf) in result.simulated else "")


def chart_prices(result: ReplayResult, timeframe: str, path: Path) -> Path:
    s = result.series[result.series["timeframe"] == timeframe]
    drivers = [d for d in DRIVERS if (s["driver"] == d).any()]
    # one panel even when nothing was replayed on this timeframe: matplotlib refuses a grid of zero rows
    fig, axes = plt.subplots(
        max(len(drivers), 1), 1, figsize=(12, 2.2 * max(len(drivers), 1)), sharex=True, squeeze=False
    )
    for ax, d in zip(axes[: len(drivers), 0], drivers, strict=True):
        part = s[s["driver"] == d]
        ax.plot(part["timestamp"], part["price"], color="black", linewidth=0.5)
        for state, colour in STATE_COLOURS.items():
            sel = part[part["state"] == state]
            ax.scatter(sel["timestamp"], sel["price"], s=3, color=colour, label=state)
        ax.set_title(_label(result, d, timeframe), fontsize=9, loc="left")
    if drivers:
        axes[0, 0].legend(loc="upper left", ncol=6, fontsize=7, markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def chart_levers(result: ReplayResult, path: Path, exec_tf: str = "1h") -> Path:
    lv = result.levers[result.levers["execution_timeframe"] == exec_tf]
    fig, axes = plt.subplots(len(BUCKETS), 1, figsize=(12, 2.2 * len(BUCKETS)), sharex=True, squeeze=False)
    for ax, b in zip(axes[:, 0], BUCKETS, strict=True):
        part = lv[lv["bucket"] == b]
        ax.plot(part["timestamp"], part["A_value"], label="A (aggressiveness)", color="#1f77b4")
        ax.plot(part["timestamp"], part["E_value"], label="E (exit-mindedness)", color="#ff7f0e")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(
            f"bucket {b}, execution timeframe {exec_tf}"
            + (" (simulated bucket inputs)" if (b, "1h") in result.simulated else ""),
            fontsize=9,
            loc="left",
        )
    axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def chart_heatmap(result: ReplayResult, path: Path) -> Path:
    grid = pd.DatetimeIndex(sorted(result.levers["timestamp"].unique()))
    rows, labels = [], []
    for d in DRIVERS:
        for tf in REGIME_TIMEFRAMES:
            part = result.series[(result.series["driver"] == d) & (result.series["timeframe"] == tf)]
            if part.empty:
                continue
            states = part.set_index("timestamp")["state"].map(STATE_CODES)
            rows.append(states.reindex(grid, method="ffill").fillna(0).to_numpy())
            labels.append(_label(result, d, tf))
    fig, ax = plt.subplots(figsize=(12, 0.35 * max(len(rows), 1) + 1.5))
    if rows:
        cmap = matplotlib.colors.ListedColormap([STATE_COLOURS[s] for s in STATE_CODES])
        ax.imshow(np.vstack(rows), aspect="auto", cmap=cmap, vmin=0, vmax=len(STATE_CODES) - 1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ticks = np.linspace(0, len(grid) - 1, 6).astype(int)
        ax.set_xticks(ticks, [grid[i].strftime("%Y-%m-%d") for i in ticks], fontsize=7)
    ax.set_title("driver × timeframe states (" + ", ".join(f"{k}" for k in STATE_CODES) + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _img(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}" />'


def write_report(result: ReplayResult, out: Path, *, price_timeframe: str = "1h") -> dict[str, Path]:
    """Write charts, CSVs, report.html and summary.md into ``out``; returns the main paths.

    The price chart shows ``price_timeframe``, or the replay's first timeframe when that one was not replayed
    (``--timeframe 1d`` alone used to ask matplotlib for a chart of zero rows).
    """
    replayed = [tf for tf in REGIME_TIMEFRAMES if not result.series.empty and (result.series["timeframe"] == tf).any()]
    if price_timeframe not in replayed and replayed:
        price_timeframe = replayed[0]
    out.mkdir(parents=True, exist_ok=True)
    csvs = write_csvs(result, out)
    charts = {
        "prices": chart_prices(result, price_timeframe, out / f"prices_{price_timeframe}.png"),
        "levers": chart_levers(result, out / "levers_1h.png"),
        "heatmap": chart_heatmap(result, out / "states_heatmap.png"),
    }
    sim = sorted(f"{d} {tf}" for d, tf in result.simulated)
    state_tbl = result.by_state[result.by_state["horizon_bars"] == 24].round(5)
    quint_tbl = result.by_quintile.round(5) if not result.by_quintile.empty else pd.DataFrame()
    tis = result.time_in_state.round(4)
    buf = io.StringIO()
    buf.write(f"# Replay {result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC\n\n")
    buf.write(
        "Series with simulated inputs (see regime_tasks/data/MANIFEST.json): " + (", ".join(sim) or "none") + "\n\n"
    )
    buf.write("## Forward returns by state (next 24 bars of each series' own timeframe)\n\n")
    buf.write(markdown_table(state_tbl))
    buf.write(
        "\n\nAll horizons (1, 6, 24 bars) are in forward_returns_by_state.csv; A-quintiles in "
        "forward_returns_by_A_quintile.csv; time in state in time_in_state.csv.\n"
    )
    (out / "summary.md").write_text(buf.getvalue())
    html = [
        "<html><head><meta charset='utf-8'><title>regime replay</title></head><body>",
        f"<h1>Replay {result.start:%Y-%m-%d %H:%M} → {result.end:%Y-%m-%d %H:%M} UTC</h1>",
        "<p><b>Simulated inputs</b> (never market data): " + (", ".join(sim) or "none") + "</p>",
        f"<h2>Price with state ({price_timeframe})</h2>",
        _img(charts["prices"]),
        "<h2>A and E per bucket (execution timeframe 1h)</h2>",
        _img(charts["levers"]),
        "<h2>States over time</h2>",
        _img(charts["heatmap"]),
        "<h2>Forward returns by state (24 bars)</h2>",
        state_tbl.to_html(index=False),
        "<h2>Forward returns by A-quintile</h2>",
        quint_tbl.to_html(index=False),
        "<h2>Time in each state</h2>",
        tis.to_html(index=False),
        "</body></html>",
    ]
    (out / "report.html").write_text("\n".join(html))
    return {
        "html": out / "report.html",
        "summary": out / "summary.md",
        **{f"chart_{k}": v for k, v in charts.items()},
        **{p.stem: p for p in csvs},
    }
