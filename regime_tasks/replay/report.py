"""The replay and evaluation reports: PNG charts, an HTML page embedding them, a Markdown summary and CSV tables."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from regime_tasks.core.constants import BUCKETS, DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.replay import ReplayResult, write_csvs
from regime_tasks.replay.charts import (
    STATE_COLOURS,
    band_axes,
    chart_equity,
    chart_levers_band,
    chart_price_states,
    daily_band,
    price_with_states,
    state_legend,
)

STATE_CODES = {"warming_up": 0, "S4": 1, "S0": 2, "S1": 3, "S2": 4, "S3": 5}


def _label(result: ReplayResult, driver: str, tf: str) -> str:
    return f"{driver} {tf}" + (" (simulated input)" if (driver, tf) in result.simulated else "")


def chart_prices(result: ReplayResult, timeframe: str, path: Path) -> Path:
    """Price per driver with each bar coloured by its state, and a legend naming S0–S4."""
    s = result.series[result.series["timeframe"] == timeframe]
    drivers = [d for d in DRIVERS if (s["driver"] == d).any()]
    # one panel even when nothing was replayed on this timeframe: matplotlib refuses a grid of zero rows
    fig, axes = plt.subplots(
        max(len(drivers), 1), 1, figsize=(12, 2.2 * max(len(drivers), 1)), sharex=True, squeeze=False
    )
    for ax, d in zip(axes[: len(drivers), 0], drivers, strict=True):
        part = s[s["driver"] == d]
        price_with_states(ax, part["timestamp"], part["price"], part["state"], _label(result, d, timeframe))
    if drivers:
        state_legend(axes[0, 0], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def chart_levers(result: ReplayResult, path: Path, exec_tf: str = "1h") -> Path:
    """A and E per bucket as a daily band (min, median, max per day), not a raw hourly line."""
    lv = result.levers[result.levers["execution_timeframe"] == exec_tf]
    fig, axes = plt.subplots(len(BUCKETS), 1, figsize=(12, 2.2 * len(BUCKETS)), sharex=True, squeeze=False)
    for ax, b in zip(axes[:, 0], BUCKETS, strict=True):
        title = f"bucket {b}, execution timeframe {exec_tf}" + (
            " (simulated bucket inputs)" if (b, "1h") in result.simulated else ""
        )
        band_axes(ax, daily_band(lv[lv["bucket"] == b]), title)
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
    fig, ax = plt.subplots(figsize=(12, 0.35 * max(len(rows), 1) + 2.1))
    if rows:
        cmap = matplotlib.colors.ListedColormap([STATE_COLOURS[s] for s in STATE_CODES])
        ax.imshow(np.vstack(rows), aspect="auto", cmap=cmap, vmin=0, vmax=len(STATE_CODES) - 1, interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ticks = np.linspace(0, len(grid) - 1, 6).astype(int)
        ax.set_xticks(ticks, [grid[i].strftime("%Y-%m-%d") for i in ticks], fontsize=7)
    ax.set_title("driver × timeframe states over time", fontsize=9, loc="left")
    # the colour key: without it the heatmap cannot be read
    state_legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(rows) < 8 else -0.06), frameon=False)
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
        "<h2>A and E per bucket (execution timeframe 1h): daily min, median, max</h2>",
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


# --- regime evaluate ---------------------------------------------------------------------------------------
PERF_COLUMNS = [
    "strategy",
    "period",
    "partial_year",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "turnover_per_year",
    "average_exposure",
    "share_at_floor",
    "share_A_zero",
    "time_in_market",
    "final_equity",
]


def _fmt(frame: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    return frame.round(digits) if not frame.empty else frame


def evaluation_summary(ev: Any) -> str:
    """summary.md of an evaluation: what was measured, on what, and every headline table."""
    m = ev.meta
    buf = io.StringIO()
    buf.write(f"# Evaluation {m['start']} → {m['end']}\n\n")
    buf.write(
        f"Input: {m['input']}. Timeframes: {', '.join(m['timeframes'])}. "
        f"Cost: {m['cost_bps']} bps per unit of turnover.\n\n"
    )
    if ev.not_evaluable:
        buf.write("**Not evaluable** (no numbers reported):\n\n")
        for row in ev.not_evaluable:
            buf.write(f"- {row['driver']} {row['timeframe']}: {row['reason']}\n")
        buf.write("\n")
    for note in m.get("gaps_inside_window", []):
        buf.write(f"- data gap inside the window, not crossed: {note}\n")
    for key, w in m["windows"].items():
        partial = (
            f"**partial** — A without {', '.join(w['levers_missing_drivers'])}"
            if w["levers_partial"]
            else "all drivers"
        )
        buf.write(
            f"- {key}: periods {w['first_period']} → {w['last_period']} ({w['periods']}), "
            f"exec {w['execution_timeframe']}, "
            f"levers from {partial}\n"
        )
    buf.write("\n## Does S3 precede better returns than S0? (block-bootstrap 95 % interval of S3 − S0)\n\n")
    buf.write(markdown_table(_fmt(ev.s3_minus_s0, 5)) if not ev.s3_minus_s0.empty else "no driver had both S3 and S0")
    buf.write("\n\n## Forward returns by state (24 bars; 30 days on 1d in forward_returns.csv)\n\n")
    if not ev.forward.empty:
        f = ev.forward[ev.forward["horizon_bars"] == 24]
        cols = ["driver", "timeframe", "state", "count", "mean", "median", "hit_rate", "ci_low", "ci_high"]
        buf.write(markdown_table(_fmt(f[cols], 5)))
    buf.write("\n\n## Sizing backtest, whole window\n\n")
    if not ev.performance.empty:
        p = ev.performance[ev.performance["period"] == "whole window"]
        for (series, tf), part in p.groupby(["series", "timeframe"], sort=False):
            buf.write(f"### {series} {tf}\n\n")
            buf.write(markdown_table(_fmt(part[[c for c in PERF_COLUMNS if c in part]].drop(columns="period"))))
            buf.write("\n\n")
        buf.write("Per calendar year (partial years labelled): performance.csv.\n\n")
    buf.write("## Stability\n\n")
    if not ev.stability.empty:
        cols = ["driver", "timeframe", "bars", "flips", "flips_per_year", "median_dwell_bars"]
        buf.write(markdown_table(_fmt(ev.stability[cols], 2)))
    buf.write("\n\n## A clamped at 0 and 1\n\n")
    if not ev.clamps.empty:
        buf.write(markdown_table(_fmt(ev.clamps.drop(columns="missing_drivers"))))
    buf.write("\n\n## ±20 % swings: bars until the state says so (S3 after a trough, S0 after a peak)\n\n")
    if not ev.latency.empty:
        buf.write(markdown_table(_fmt(ev.latency, 1)))
    buf.write("\n")
    return buf.getvalue()


def _evaluation_charts(ev: Any, out: Path) -> dict[str, Path]:
    charts: dict[str, Path] = {}
    if not ev.equity.empty:
        for (series, tf), part in ev.equity.groupby(["series", "timeframe"], sort=False):
            cost = ev.meta["cost_bps"]
            title = f"{series} {tf}: equity of the regime sizing against baselines ({cost} bps per unit of turnover)"
            charts[f"equity_{series}_{tf}"] = chart_equity(part, title, out / f"equity_{series}_{tf}.png")
    for tf in ev.meta["timeframes"]:
        st = ev.states[ev.states["timeframe"] == tf] if not ev.states.empty else ev.states
        panels = [(f"{d} {tf}", st[st["driver"] == d]) for d in DRIVERS if not st.empty and (st["driver"] == d).any()]
        if panels:
            charts[f"states_{tf}"] = chart_price_states(panels, out / f"states_{tf}.png")
        lv = ev.levers_daily[ev.levers_daily["timeframe"] == tf] if not ev.levers_daily.empty else ev.levers_daily
        bands = []
        for s, part in lv.groupby("series", sort=False) if not lv.empty else []:
            if s == "ALT" and (lv["series"] == "BTC").any():
                continue  # BTC and ALT both read the market summary: one band
            name = "market summary A/E (BTC, ALT)" if s in ("BTC", "ALT") else f"bucket {s} A/E"
            bands.append((f"{tf}: {name}", part))
        if bands:
            charts[f"levers_{tf}"] = chart_levers_band(bands, out / f"levers_{tf}.png")
    return charts


def write_evaluation(ev: Any, out: Path) -> dict[str, Path]:
    """Write report.html, summary.md, evaluation.json and CSVs into ``out``: all of them or none.

    Everything is written to a scratch folder beside ``out`` first and moved in only when complete."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".evaluate-", dir=out.parent))
    try:
        files: dict[str, Path] = {}
        for name in ev.TABLES:
            frame = getattr(ev, name)
            files[name] = scratch / f"{name}.csv"
            frame.to_csv(files[name], index=False)
        files["json"] = scratch / "evaluation.json"
        files["json"].write_text(json.dumps(ev.as_dict(), indent=1, default=str, allow_nan=False))
        charts = _evaluation_charts(ev, scratch)
        files.update(charts)
        files["summary"] = scratch / "summary.md"
        files["summary"].write_text(evaluation_summary(ev))
        html = [
            "<html><head><meta charset='utf-8'><title>regime evaluate</title></head><body>",
            f"<h1>Evaluation {ev.meta['start']} → {ev.meta['end']}</h1>",
            f"<p>Input: {ev.meta['input']}</p>",
        ]
        for key, path in charts.items():
            html += [f"<h2>{key.replace('_', ' ')}</h2>", _img(path)]
        html.append("<h2>Summary</h2><pre>" + files["summary"].read_text() + "</pre>")
        if not ev.performance.empty:
            html += ["<h2>Sizing backtest per calendar year</h2>", _fmt(ev.performance).to_html(index=False)]
        if not ev.forward.empty:
            html += ["<h2>Forward returns by state, every horizon</h2>", _fmt(ev.forward, 5).to_html(index=False)]
        if not ev.swings.empty:
            html += ["<h2>Swings</h2>", ev.swings.to_html(index=False)]
        html.append("</body></html>")
        files["html"] = scratch / "report.html"
        files["html"].write_text("\n".join(html))
        out.mkdir(parents=True, exist_ok=True)
        final = {}
        for key, path in files.items():
            os.replace(path, out / path.name)
            final[key] = out / path.name
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
