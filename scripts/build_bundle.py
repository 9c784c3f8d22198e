"""Rebuild ``regime_tasks/data/`` (the bundled data of the embedded demo) from ``shared/data/real``.

Run: ``.venv/bin/python scripts/build_bundle.py [--real ../shared/data/real]``. Deterministic (seeded).

Real (copied unchanged): Hyperliquid perp candles of BTC, ETH, SOL, BNB, HYPE (1d, 1h, 1m) and 20 Hyperliquid
spot micro-caps (1d, 1h) from the snapshot of 2025-07-26; TradingView daily BTC.D/USDT.D (cut at 2025-07-26).
Simulated (labelled in MANIFEST.json): dominance 1h/1m, micro-cap 1m candles, micro-cap market caps.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from regime_tasks.core.bars import normalize_bars
from regime_tasks.simulate import SEED, bridge_candles, bridge_path, simulated_market_caps

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "regime_tasks" / "data"
SNAPSHOT = "hyperliquid_snapshot_2025-07-26"
WINDOW_END = pd.Timestamp("2025-07-26T05:00:00Z")
ORIGIN_HL = (
    "Hyperliquid candles from the public snapshot of 2025-07-26 (see shared/data/real/SOURCES.md, §4); copied unchanged"
)
ORIGIN_TV = (
    "TradingView CRYPTOCAP:BTC.D / USDT.D daily closes via repository kalyar197/eth-dashboard "
    "(7f581ecb3ebac0ae5c1bfbb1ae13bdb6c879dd3d), see shared/data/real/SOURCES.md §5; columns renamed, "
    "cut at 2025-07-26"
)


def _describe(path: Path, frame: pd.DataFrame, origin: str, simulated: bool, notes: str = "") -> dict:
    ts = pd.to_datetime(frame["timestamp"], utc=True) if "timestamp" in frame.columns else frame.index
    return {
        "origin": origin,
        "simulated": simulated,
        "rows": len(frame),
        "first": str(ts.min()),
        "last": str(ts.max()),
        "notes": notes,
    }


def build(real: Path) -> None:
    rng = np.random.default_rng(SEED)
    if OUT.exists():
        for child in ("majors", "lowcaps", "dominance"):
            shutil.rmtree(OUT / child, ignore_errors=True)
    files: dict[str, dict] = {}
    snap = real / SNAPSHOT

    # majors: real, unchanged
    for tf in ("1d", "1h", "1m"):
        for src in sorted((snap / "perp" / tf).iterdir()):
            dst = OUT / "majors" / tf / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            files[str(dst.relative_to(OUT))] = _describe(dst, pd.read_csv(dst), ORIGIN_HL + " (perp)", False)

    # lowcaps: real 1d/1h, simulated 1m for the majors' 1m window
    one_minute_start = pd.read_csv(OUT / "majors" / "1m" / "BTC.csv.gz")["timestamp"].iloc[0]
    start_1m = pd.Timestamp(one_minute_start).ceil("1h")
    dollar_volume: dict[str, float] = {}
    symbols = []
    for tf in ("1d", "1h"):
        for src in sorted((snap / "spot_lowcaps" / tf).iterdir()):
            symbol = src.name.split(".")[0].removesuffix("USDC")
            dst = OUT / "lowcaps" / tf / src.name.replace("USDC", "")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            frame = pd.read_csv(dst)
            files[str(dst.relative_to(OUT))] = _describe(
                dst, frame, ORIGIN_HL + f" (spot {src.name.split('.')[0]})", False, f"symbol {symbol}"
            )
            if tf == "1h":
                symbols.append(symbol)
                dollar_volume[symbol] = float((frame["close"] * frame["volume"]).tail(24 * 30).sum())
                bars = normalize_bars(frame, series=symbol, timeframe="1h")
                hourly = bars[(bars.index >= start_1m) & (bars.index < WINDOW_END)]
                if len(hourly) < 2:
                    continue
                sim = bridge_candles(hourly, rng=rng)
                out = OUT / "lowcaps" / "1m" / f"{symbol}.csv.gz"
                out.parent.mkdir(parents=True, exist_ok=True)
                table = sim.reset_index()
                table["timestamp"] = table["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
                table.to_csv(out, index=False, float_format="%.10g")
                files[str(out.relative_to(OUT))] = _describe(
                    out,
                    table,
                    "simulated: Brownian bridge inside the real 1h bars of this token",
                    True,
                    f"seed {SEED}; hourly aggregates close where the real hours closed",
                )

    caps = simulated_market_caps(sorted(symbols), dollar_volume, rng=rng)
    tokens = pd.DataFrame(
        {
            "symbol": list(caps),
            "chain": "hyperliquid",
            "market_cap_usd": [round(c, 2) for c in caps.values()],
            "as_of": "2025-07-26T00:00:00Z",
            "simulated": True,
        }
    )
    tokens.to_csv(OUT / "tokens.csv", index=False)
    files["tokens.csv"] = {
        "origin": "simulated: no market caps exist for these tokens in the real data",
        "simulated": True,
        "rows": len(tokens),
        "notes": "ranked by real 30-day dollar volume, four equal groups → big/mid/small/nano, log-uniform caps",
    }

    # dominance: real daily closes; simulated hourly (bridge) and minutely (bridge of the hourly)
    dom = pd.read_csv(real / "dominance" / "tradingview_cryptocap_1d_2024-09-14_2025-11-14.csv")
    dom = dom.rename(columns={"btc_dominance_pct": "btc_d", "usdt_dominance_pct": "usdt_d"})
    dom["timestamp"] = pd.to_datetime(dom["timestamp"], utc=True)
    dom = dom[dom["timestamp"] < WINDOW_END.floor("1D")][["timestamp", "btc_d", "usdt_d"]]
    (OUT / "dominance").mkdir(parents=True, exist_ok=True)
    daily = dom.copy()
    daily["timestamp"] = daily["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    daily.to_csv(OUT / "dominance" / "1d.csv", index=False)
    files["dominance/1d.csv"] = _describe(OUT, dom, ORIGIN_TV, False, "fewer than 333 days: 1d dominance warms up")
    hourly_cols, minute_cols = {}, {}
    # A daily row stamped D holds the close of day D, known at D+1 00:00: anchor the bridge there. A simulated
    # bar opening at t then carries the path's value at t + bar length (its close).
    idx = dom.set_index("timestamp")
    idx.index = idx.index + pd.Timedelta(days=1)
    for col in ("btc_d", "usdt_d"):
        daily_log_vol = float(np.log(idx[col]).diff().std())
        h = bridge_path(idx[col], "1h", vol_per_step=daily_log_vol / np.sqrt(24), rng=rng, extend_to=WINDOW_END)
        h.index = h.index - pd.Timedelta(hours=1)  # value at τ = close of the hour that opened at τ − 1h
        hourly_cols[col] = h
        recent = h[h.index >= start_1m - pd.Timedelta(hours=2)].copy()
        recent.index = recent.index + pd.Timedelta(hours=1)
        m = bridge_path(recent, "1min", vol_per_step=daily_log_vol / np.sqrt(1440), rng=rng, extend_to=WINDOW_END)
        m.index = m.index - pd.Timedelta(minutes=1)
        minute_cols[col] = m[m.index >= start_1m]
    for tf, cols, note in (
        ("1h", hourly_cols, "bridge between real daily closes"),
        ("1m", minute_cols, "bridge between the simulated hourly values, last days only"),
    ):
        table = pd.DataFrame(cols)
        table = table[table.index < WINDOW_END].reset_index().rename(columns={"index": "timestamp"})
        table["timestamp"] = pd.to_datetime(table["timestamp"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        path = OUT / "dominance" / f"{tf}.csv"
        table.to_csv(path, index=False, float_format="%.6f")
        files[f"dominance/{tf}.csv"] = _describe(
            path, table, f"simulated: log-space Brownian bridge, {note}", True, f"seed {SEED}"
        )
    manifest = {
        "window_end": WINDOW_END.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seed": SEED,
        "built_by": "scripts/build_bundle.py",
        "files": dict(sorted(files.items())),
    }
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"bundle written to {OUT}: {len(files)} files, {sum(1 for f in files.values() if f['simulated'])} simulated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real")
    build(parser.parse_args().real)


if __name__ == "__main__":
    main()
