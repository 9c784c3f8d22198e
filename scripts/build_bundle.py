"""Rebuild ``regime_tasks/data/`` (the bundled data of the embedded demo) from data pack 3. No simulated series.

Run: ``.venv/bin/python scripts/build_symbol_table.py --real <pack>`` then
``.venv/bin/python scripts/build_bundle.py --real <pack>`` (``<pack>`` = the folder holding
``hyperliquid_universe_2025-07-26/``, ``hyperliquid_snapshot_2025-07-26/``, ``coingecko/``, ``dominance/``).
Deterministic: same inputs, same bytes.

- majors: Hyperliquid perp BTC, ETH, SOL, BNB, HYPE (1d, 1h, 1m), copied unchanged from the snapshot.
- lowcaps: real Hyperliquid candles of a subset of the matched universe (``symbols.csv``): per bucket the
  ``PER_BUCKET`` coins that were members for the most days of 2025 (a hindsight choice that keeps the bundle and
  the demo small; the product picks members point in time among the coins it has). 1d from 2024-01-01, 1h for
  2025 (perps; spot coins only where the snapshot's ``spot_lowcaps`` has 1h), 1m for the last days.
- tokens.csv: those coins with their CoinGecko circulating supply (snapshot 2025-02-14): caps are derived per day
  as close × supply by the product (D16; the supply is a later one for earlier days: labelled).
- dominance/1d.csv: the published TradingView CRYPTOCAP BTC.D/USDT.D daily closes (2022-11-16 on).
- dominance/1h.csv, 1m.csv: derived from real prices × supplies over the whole matched universe, stablecoins at
  supply, calibrated causally to the published daily close of the previous day (``core.dominance``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from regime_tasks.core.composite import point_in_time_membership
from regime_tasks.core.constants import BUCKETS, DEFAULT_BUCKET_THRESHOLDS_USD
from regime_tasks.core.dominance import derive_dominance, dominance_validation

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "regime_tasks" / "data"
SNAPSHOT = "hyperliquid_snapshot_2025-07-26"
UNIVERSE = "hyperliquid_universe_2025-07-26"
WINDOW_END = pd.Timestamp("2025-07-26T05:00:00Z")
DAILY_START = pd.Timestamp("2024-01-01T00:00:00Z")
MINUTE_START = pd.Timestamp("2025-07-21T00:00:00Z")
PER_BUCKET = 6
THRESHOLDS = DEFAULT_BUCKET_THRESHOLDS_USD
ORIGIN_HL = "Hyperliquid candles, snapshot of 2025-07-26 (GPL-3.0, see LICENSES.md); copied unchanged"
ORIGIN_TV = (
    "TradingView CRYPTOCAP:BTC.D / USDT.D daily closes via repository kalyar197/eth-dashboard "
    "(7f581ecb3ebac0ae5c1bfbb1ae13bdb6c879dd3d); columns renamed, two files joined, cut at the window end"
)
SUPPLY_NOTE = "caps derived: close × CoinGecko circulating supply of 2025-02-14 (Data provided by CoinGecko)"


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.reset_index()
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def _describe(frame: pd.DataFrame, origin: str, notes: str = "") -> dict:
    ts = pd.to_datetime(frame["timestamp"], utc=True)
    first, last = str(ts.min()), str(ts.max())
    return {"origin": origin, "simulated": False, "rows": len(frame), "first": first, "last": last, "notes": notes}


def _bars(frame: pd.DataFrame, symbol: str, start: pd.Timestamp) -> pd.DataFrame:
    """One symbol's rows as a bar table; back-filled zero-volume rows before its first trade are dropped."""
    part = frame[frame["symbol"] == symbol].rename(columns={"date": "timestamp"}).set_index("timestamp").sort_index()
    part = part[(part.index >= start) & (part.index < WINDOW_END)][["open", "high", "low", "close", "volume"]]
    traded = part.index[part["volume"] > 0]
    return part[part.index >= traded[0]] if len(traded) else part.iloc[:0]


def matched_universe(real: Path) -> pd.DataFrame:
    """symbols.csv ⋈ supplies.csv: one row per matched coin (a coin on both markets counts once: the perp)."""
    table = pd.read_csv(OUT / "symbols.csv")
    supplies = pd.read_csv(OUT / "supplies.csv")
    m = table[table["status"] == "matched"].merge(supplies, on="coingecko_id", suffixes=("", "_cg"))
    m = m.sort_values(["coingecko_id", "market"]).drop_duplicates("coingecko_id", keep="first")  # perp < spot
    assert not m["symbol"].duplicated().any(), "two matched coins share a venue symbol"
    return m.sort_values("symbol").reset_index(drop=True)


def build(real: Path) -> None:
    uni = real / UNIVERSE
    for child in ("majors", "lowcaps", "dominance"):
        shutil.rmtree(OUT / child, ignore_errors=True)
    files: dict[str, dict] = {}
    snap = real / SNAPSHOT

    for tf in ("1d", "1h", "1m"):  # majors: real, unchanged
        for src in sorted((snap / "perp" / tf).iterdir()):
            dst = OUT / "majors" / tf / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            files[str(dst.relative_to(OUT))] = _describe(pd.read_csv(dst), ORIGIN_HL + " (perp)")

    universe = matched_universe(real)
    raw = {
        ("perp", "1d"): pd.read_parquet(uni / "perp_all_1d.parquet"),
        ("spot", "1d"): pd.read_parquet(uni / "spot_all_1d.parquet"),
        ("perp", "1h"): pd.read_parquet(uni / "perp_all_1h_2025.parquet"),
        ("perp", "1m"): pd.read_parquet(uni / "perp_all_1m.parquet"),
        ("spot", "1m"): pd.read_parquet(uni / "spot_all_1m.parquet"),
    }

    # daily caps of every matched coin (members and majors): close / multiplier × supply
    daily_caps = {}
    for r in universe.itertuples():
        bars = _bars(raw[(r.market, "1d")], r.symbol, pd.Timestamp("2020-01-01", tz="UTC"))
        bars = bars[bars["volume"] > 0]
        daily_caps[r.symbol] = bars["close"] / r.price_multiplier * r.circulating_supply
    caps = pd.DataFrame(daily_caps).sort_index()

    # the bundle's members: per bucket the coins that were members longest in 2025 (1h available preferred)
    members = universe[universe["role"] == "member"]
    pit = point_in_time_membership(caps[members["symbol"]], **THRESHOLDS)
    has_1h = set(raw[("perp", "1h")]["symbol"]) | {
        p.name.split(".")[0].removesuffix("USDC") for p in (snap / "spot_lowcaps" / "1h").iterdir()
    }
    chosen: dict[str, list[str]] = {}
    taken: set[str] = set()
    for bucket in BUCKETS:
        days = pit[bucket][(pit[bucket].index >= "2025-01-01") & (pit[bucket].index < WINDOW_END)].sum()
        ranked = sorted(days[days > 0].index, key=lambda s: (s not in has_1h, -int(days[s]), s))
        chosen[bucket] = [s for s in ranked if s not in taken][:PER_BUCKET]
        taken.update(chosen[bucket])
    bundle = universe[universe["symbol"].isin(taken)]

    for r in bundle.itertuples():
        sources = {
            "1d": (raw[(r.market, "1d")], DAILY_START, f"{r.market} 1d"),
            "1m": (raw[(r.market, "1m")], MINUTE_START, f"{r.market} 1m"),
        }
        if r.market == "perp":
            sources["1h"] = (raw[("perp", "1h")], DAILY_START, "perp 1h 2025")
        for tf, (frame, start, what) in sources.items():
            bars = _bars(frame, r.symbol, start)
            if bars.empty:
                continue
            table = _iso(bars)
            dst = OUT / "lowcaps" / tf / (f"{r.symbol}.csv" if tf == "1d" else f"{r.symbol}.csv.gz")
            dst.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(dst, index=False, compression={"method": "gzip", "mtime": 0} if tf != "1d" else None)
            files[str(dst.relative_to(OUT))] = _describe(table, f"{ORIGIN_HL} ({what} {r.symbol}, {UNIVERSE})")
        if r.market == "spot":
            src = snap / "spot_lowcaps" / "1h" / f"{r.symbol}USDC.csv.gz"
            if src.exists():
                dst = OUT / "lowcaps" / "1h" / f"{r.symbol}.csv.gz"
                shutil.copyfile(src, dst)
                files[str(dst.relative_to(OUT))] = _describe(
                    pd.read_csv(dst), f"{ORIGIN_HL} (spot {r.symbol}USDC 1h, {SNAPSHOT}/spot_lowcaps)"
                )
    last_day = caps.index[caps.index < WINDOW_END.floor("1D")][-1]
    tokens = pd.DataFrame(
        {
            "symbol": bundle["symbol"],
            "chain": "hyperliquid",
            "market_cap_usd": [round(float(caps.loc[last_day, s]), 2) for s in bundle["symbol"]],
            "as_of": last_day.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "simulated": False,
            "circulating_supply": bundle["circulating_supply"],
            "supply_as_of": bundle["supply_as_of"],
            "price_multiplier": bundle["price_multiplier"],
            "coingecko_id": bundle["coingecko_id"],
            "market": bundle["market"],
        }
    )
    tokens.to_csv(OUT / "tokens.csv", index=False)
    files["tokens.csv"] = {
        "origin": "symbols.csv matches × CoinGecko top-3000 snapshot 2025-02-14 (Data provided by CoinGecko)",
        "simulated": False,
        "rows": len(tokens),
        "notes": f"{SUPPLY_NOTE}; market_cap_usd = derived cap at the close of {last_day:%Y-%m-%d}; "
        f"bundle members per bucket (2025 membership days): {json.dumps(chosen)}",
    }

    # dominance: the published daily series; derived 1h and 1m
    names = ("tradingview_cryptocap_1d_2022-11-16_2024-09-13.csv", "tradingview_cryptocap_1d_2024-09-14_2025-11-14.csv")
    dom = pd.concat(pd.read_csv(real / "dominance" / name) for name in names)
    dom = dom.rename(columns={"btc_dominance_pct": "btc_d", "usdt_dominance_pct": "usdt_d"})
    dom["timestamp"] = pd.to_datetime(dom["timestamp"], utc=True)
    dom = dom[dom["timestamp"] < WINDOW_END.floor("1D")].set_index("timestamp")[["btc_d", "usdt_d"]]
    (OUT / "dominance").mkdir(parents=True, exist_ok=True)
    daily = _iso(dom)
    daily.to_csv(OUT / "dominance" / "1d.csv", index=False)
    files["dominance/1d.csv"] = _describe(daily, ORIGIN_TV, "published daily closes, no derivation")

    supplies = pd.read_csv(OUT / "supplies.csv")
    stables = supplies[supplies["role"] == "stablecoin"]
    usdt_supply = float(stables.loc[stables["coingecko_id"] == "tether", "circulating_supply"].iloc[0])
    other_stables = float(stables.loc[stables["coingecko_id"] != "tether", "circulating_supply"].sum())
    validation = {}
    for tf, perp_key, spot_key, start in (
        ("1h", ("perp", "1h"), None, pd.Timestamp("2025-01-01", tz="UTC")),
        ("1m", ("perp", "1m"), ("spot", "1m"), MINUTE_START),
    ):
        closes = {}
        for r in universe[universe["role"].isin(["member", "major"])].itertuples():
            key = perp_key if r.market == "perp" else spot_key
            if key is None:
                continue
            bars = _bars(raw[key], r.symbol, start)
            bars = bars[bars["volume"] > 0]
            if not bars.empty:
                closes[r.coingecko_id] = bars["close"] / r.price_multiplier * r.circulating_supply
        cap_frame = pd.DataFrame(closes).sort_index()
        cap_frame["tether"] = usdt_supply
        derived = derive_dominance(
            cap_frame, btc="bitcoin", usdt="tether", stable_supply_usd=other_stables, published=dom, timeframe=tf
        )
        table = _iso(derived[["btc_d", "usdt_d"]].round(6))
        path = OUT / "dominance" / f"{tf}.csv"
        table.to_csv(path, index=False)
        step = pd.Timedelta(tf.replace("m", "min"))
        closes_at = derived.index + step
        raw_daily = derived[closes_at.floor("1D") == closes_at][["raw_btc_d", "raw_usdt_d"]]
        raw_daily.index = raw_daily.index.floor("1D")  # the close of day D
        validation[tf] = {k: round(v, 4) for k, v in dominance_validation(raw_daily, dom).items()}
        files[f"dominance/{tf}.csv"] = _describe(
            table,
            "derived (D16): 100 × cap / Σ caps over the matched Hyperliquid universe "
            f"({len(closes)} coins with {tf} bars) + stablecoins at supply, × published/derived at the previous "
            "day's close",
            f"{SUPPLY_NOTE}; validation (daily change, out of sample): {json.dumps(validation[tf])}",
        )
    manifest = {
        "window_end": WINDOW_END.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "built_by": "scripts/build_bundle.py",
        "attribution": "Data provided by CoinGecko (supplies); Hyperliquid candles GPL-3.0 (LICENSE-GPL-3.0.txt)",
        "bucket_members": chosen,
        "dominance_validation": validation,
        "files": dict(sorted(files.items())),
    }
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"bundle written to {OUT}: {len(files)} files; members {chosen}; validation {validation}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="data pack 3 folder (shared/data/real)")
    build(parser.parse_args().real)


if __name__ == "__main__":
    main()
