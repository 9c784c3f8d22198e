"""Build the reviewed CoinGecko ↔ Hyperliquid symbol table (D16) and the supplies it points to.

Run: ``.venv/bin/python scripts/build_symbol_table.py --real <path to data pack 3>`` (the folder holding
``hyperliquid_universe_2025-07-26/`` and ``coingecko/``). Deterministic; writes

- ``regime_tasks/data/symbols.csv`` — ``venue, market, symbol, coingecko_id, price_multiplier, status, evidence``
- ``regime_tasks/data/supplies.csv`` — for every matched CoinGecko id and every stablecoin: circulating supply,
  price and time of the snapshot row, and the role (member, major, stablecoin, wrapped) used by the universe.

Matching rule: candidates are the CoinGecko coins whose ticker equals the venue
symbol (``kPEPE`` etc. quote 1,000 tokens: ticker ``PEPE``, ``price_multiplier`` 1,000 = tokens per quoted unit).
A candidate is accepted when CoinGecko's ``price_usd`` lies within 10 % of the venue's close on the day of the
CoinGecko row (``last_updated``, mostly 2025-02-14) divided by ``price_multiplier``. One accepted candidate:
``matched``; several: the wrapped/bridged copies among them (CoinGecko categories) are set aside, and if one
coin remains it is ``matched``, else ``ambiguous`` (none is used); none, or no venue trade that day:
``excluded``. Nothing is guessed: the evidence column says why; ``regime_tasks/data/SYMBOLS_REVIEW.md``
holds the review of the collisions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "regime_tasks" / "data"
UNIVERSE = "hyperliquid_universe_2025-07-26"
SNAPSHOT = "coingecko/coingecko_top3000_snapshot_2025-02-14.csv.gz"
TOLERANCE = 0.10
THOUSANDS = {"kBONK", "kDOGS", "kFLOKI", "kLUNC", "kNEIRO", "kPEPE", "kSHIB"}  # Hyperliquid quotes 1,000 tokens
MAJORS = {"bitcoin": "BTC", "ethereum": "ETH", "solana": "SOL", "binancecoin": "BNB", "hyperliquid": "HYPE"}
STABLE_CATEGORIES = {"Stablecoins", "USD Stablecoin", "Fiat-backed Stablecoin", "Crypto-backed Stablecoin"}
WRAPPED_CATEGORIES = {
    "Wrapped-Tokens",
    "Bridged-Tokens",
    "Binance-Peg Tokens",
    "Crypto-Backed Tokens",
    "Bridged WETH",
    "Bridged WBTC",
    "Bridged USDC",
    "Bridged USDT",
}


def venue_closes(real: Path, market: str) -> pd.DataFrame:
    """Traded daily closes (volume > 0: the perp files back-fill zero-volume bars before a listing)."""
    frame = pd.read_parquet(real / UNIVERSE / f"{market}_all_1d.parquet")
    frame = frame[frame["volume"] > 0]
    return frame.assign(day=frame["date"].dt.strftime("%Y-%m-%d"))[["symbol", "day", "close"]]


def role_of(row: pd.Series) -> str:
    """member | major | stablecoin | wrapped (only members enter the buckets; majors/stables feed dominance)."""
    if row["id"] in MAJORS:
        return "major"
    cats = set(str(row["categories"]).split("|")) if pd.notna(row["categories"]) else set()
    if cats & STABLE_CATEGORIES:
        return "stablecoin"
    if cats & WRAPPED_CATEGORIES:
        return "wrapped"
    return "member"


def build(real: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    cg = pd.read_csv(real / SNAPSHOT)
    cg["day"] = cg["last_updated"].str[:10]
    cg["ticker"] = cg["symbol"].str.upper()
    rows = []
    for market in ("perp", "spot"):
        closes = venue_closes(real, market).set_index(["symbol", "day"])["close"]
        for symbol in sorted(
            pd.read_parquet(real / UNIVERSE / f"{market}_all_1d.parquet", columns=["symbol"])["symbol"].unique()
        ):
            mult = 1000 if symbol in THOUSANDS else 1
            ticker = symbol[1:].upper() if mult == 1000 else symbol.upper()
            cands = cg[cg["ticker"] == ticker]
            base = {"venue": "hyperliquid", "market": market, "symbol": symbol, "price_multiplier": mult}
            if cands.empty:
                rows.append(
                    {
                        **base,
                        "coingecko_id": "",
                        "status": "excluded",
                        "evidence": f"no CoinGecko coin with ticker {ticker}",
                    }
                )
                continue
            accepted, notes = [], []
            for _, c in cands.sort_values("market_cap_rank").iterrows():
                close = closes.get((symbol, c["day"]))
                if close is None or pd.isna(close):
                    notes.append(f"{c['id']}: no venue trade on {c['day']}")
                    continue
                gap = (float(close) / mult - float(c["price_usd"])) / float(c["price_usd"])
                notes.append(
                    f"{c['id']}: close/{mult} {float(close) / mult:.6g} vs {c['price_usd']:.6g} "
                    f"on {c['day']} ({gap:+.1%})"
                )
                if abs(gap) <= TOLERANCE:
                    accepted.append(c["id"])
            if len(accepted) > 1:
                # a wrapped/bridged copy tracks its original's price by design: prefer the original
                originals = [a for a in accepted if role_of(cg[cg["id"] == a].iloc[0]) != "wrapped"]
                if len(originals) == 1:
                    notes.append(
                        f"wrapped/bridged copies set aside: {', '.join(a for a in accepted if a not in originals)}"
                    )
                    accepted = originals
            if len(accepted) == 1:
                status, cid = "matched", accepted[0]
            elif len(accepted) > 1:
                status, cid = "ambiguous", ""
            else:
                status, cid = "excluded", ""
            evidence = f"{len(cands)} candidate(s); " + "; ".join(notes)
            rows.append({**base, "coingecko_id": cid, "status": status, "evidence": evidence})
    table = pd.DataFrame(rows)[["venue", "market", "symbol", "coingecko_id", "price_multiplier", "status", "evidence"]]
    cg["role"] = cg.apply(role_of, axis=1)
    used = set(table.loc[table["status"] == "matched", "coingecko_id"]) | set(cg.loc[cg["role"] == "stablecoin", "id"])
    supplies = cg[cg["id"].isin(used)].sort_values("id")
    supplies = supplies.rename(columns={"id": "coingecko_id", "last_updated": "supply_as_of"})[
        ["coingecko_id", "symbol", "name", "role", "circulating_supply", "price_usd", "market_cap_usd", "supply_as_of"]
    ]
    return table, supplies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help="data pack 3 folder (shared/data/real)")
    args = parser.parse_args()
    table, supplies = build(args.real)
    table.to_csv(OUT / "symbols.csv", index=False)
    supplies.to_csv(OUT / "supplies.csv", index=False)
    counts = table.groupby(["market", "status"]).size().to_dict()
    print(f"symbols.csv: {len(table)} rows {counts}; supplies.csv: {len(supplies)} coins")


if __name__ == "__main__":
    main()
