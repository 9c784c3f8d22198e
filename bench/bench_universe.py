"""Live lowcap universe (issue 15): a 1m tick with 64 members in each of the 4 buckets, within Hyperliquid's weight
budget (1,200 a minute), compute ≤ 150 ms.  Run: ``.venv/bin/python bench/bench_universe.py`` (``--ticks N``,
``--database-url URL`` for PostgreSQL; default a fresh SQLite file).

What runs: the local venue stand-in (tests/sources/servers.py: Hyperliquid, Binance and CoinGecko on 127.0.0.1),
``pipeline.bootstrap`` from an empty database in live mode, then repeated 1m ticks done the way a worker does them
(``collect`` → ``build_driver_series`` → 8 × ``update_driver_safely`` → ``publish``, in one process, in-process
cache). Per tick it prints the Hyperliquid weight the venue counted (20 a request + 1 per 60 candles), the wall
time, and the compute part: composite extension + the 8 driver updates + publish (everything after ``collect``,
whose HTTP waits are left out).

Members: the bundle has 24 real lowcap series (regime_tasks/data/lowcaps, 1d/1h/1m), fewer than 4 × 64, so the
256 members are those 24 real series **reused under other symbols** (``<REAL>_<k>``, each real series 10–11
times; identical prices within a copy set); the bench adds them to the symbol table and to the venue's listing,
and gives each a supply that puts its cap at the previous day's close in its bucket (64 per bucket, caps spread
across the bucket's range). The majors and stablecoins are the real ones.

Member 1m bars reach the store the way the member stream (``regime stream --members``) stores them: one upsert
per member and closed minute, made before the tick and not counted in it; the tick's REST catch-up then has
nothing to fetch. The last section runs one minute without the stream to show what the budget does then.
The weight budget (``REGIME_HYPERLIQUID_WEIGHT_BUDGET_PER_MIN``, default 900 of the venue's 1,200) runs on a clock
that advances 60 s per tick (a tick a minute), so its minute is the real one.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import REPO, report

sys.path.insert(0, str(REPO))  # the venue stand-in lives in tests/sources

NOW = pd.Timestamp("2025-07-25T22:00:30Z")  # every real 1m member series covers the ticks (some end on the 26th)
PER_BUCKET = 64
CAP_RANGES = {  # inside the default thresholds (10 M / 50 M / 200 M USD) with a margin
    "nano": (1.5e6, 8e6),
    "small": (12e6, 45e6),
    "mid": (55e6, 190e6),
    "big": (250e6, 5e9),
}


class Clock:
    """Seconds for the weight budget: advanced by its own waits (bootstrap) and by 60 s per tick."""

    def __init__(self) -> None:
        self.t = 0.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, secs: float) -> None:
        self.t += secs
        self.slept += secs


def bench_members() -> tuple[dict[str, str], pd.DataFrame]:
    """Symbol → real series it serves, and the supplies (CoinGecko rows) that place 64 in each bucket."""
    from tests.sources import servers

    bundle = servers.BUNDLE
    real = sorted(p.name.removesuffix(".csv.gz") for p in (bundle / "lowcaps" / "1m").glob("*.csv.gz"))
    source: dict[str, str] = {}
    rows = []
    day_before = (NOW.floor("1D") - pd.Timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    n = 0
    for bucket, (lo, hi) in CAP_RANGES.items():
        for cap in np.geomspace(lo, hi, PER_BUCKET):
            src = real[n % len(real)]
            symbol = f"{src}_{n // len(real)}"
            n += 1
            daily = servers.candles("hyperliquid", src, "1d")
            close = float(daily.loc[daily["timestamp"] == day_before, "close"].iloc[0])
            source[symbol] = src
            rows.append(
                {
                    "coingecko_id": f"bench-{symbol.lower()}",
                    "symbol": symbol.lower(),
                    "name": f"{symbol} (bench, {bucket}; prices of {src})",
                    "role": "member",
                    "circulating_supply": cap / close,
                    "price_usd": close,
                    "market_cap_usd": cap,
                    "supply_as_of": "2025-02-14T00:00:00.000Z",
                }
            )
    return source, pd.DataFrame(rows)


def setup(db_url: str, clock: Clock):
    from regime_tasks import stages
    from regime_tasks.config import load_settings
    from regime_tasks.runtime import Runtime
    from regime_tasks.sources.hyperliquid import WeightBudget
    from regime_tasks.store.db import init_db, make_engine
    from tests.sources import servers

    source, supplies = bench_members()
    real_candles = servers.candles
    servers.candles = lambda venue, symbol, interval: real_candles(venue, source.get(symbol, symbol), interval)
    venues = servers.VenueServer().start()
    venues.now = NOW
    majors = ["BTC", "ETH", "SOL", "BNB", "HYPE"]
    venues.perps = [*majors, *source]
    venues.spot, venues.spot_pairs = [], {}
    real_supplies = venues.supplies[venues.supplies["role"].isin(["major", "stablecoin"])]
    venues.supplies = pd.concat([real_supplies, supplies.set_index("coingecko_id")])

    real_table = stages.symbol_table()
    bench_rows = pd.DataFrame(
        {
            "venue": "hyperliquid",
            "market": "perp",
            "symbol": list(source),
            "coingecko_id": supplies["coingecko_id"],
            "price_multiplier": 1,
            "status": "matched",
            "evidence": "bench: real series reused under another symbol",
            "role": "member",
        }
    )
    table = pd.concat([real_table[real_table["role"] == "major"], bench_rows], ignore_index=True)
    stages.universe.symbol_table = lambda: table  # type: ignore[assignment]  # where collect looks it up
    settings = load_settings(
        source="live",
        database_url=db_url,
        binance_base_url=venues.url,
        hyperliquid_base_url=venues.url,
        coingecko_base_url=venues.url,
        http_timeout_secs=10.0,
        retry_backoff_secs=(0.01, 0.01, 0.01),
        history_1d_days=60,
        history_1h_days=10,
        history_1m_days=1,
    )
    # the universe's share of the per-IP 1,200 (default 900: HYPE's own candles, a major, are fetched outside it)
    budget = WeightBudget(settings.hyperliquid_weight_budget_per_min, clock=clock, sleep=clock.sleep)
    stages.universe.weight_budget = lambda rt: budget  # type: ignore[assignment]
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine), venues, budget, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=12)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--late-window", type=int, default=None, help="1m bars an extension re-checks for late bars")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="composite",
        choices=("composite", "drivers"),
        help="cProfile one step of the last timed tick (default: the composite step)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the warnings of a first fetch per member would flood the table
    from regime_tasks import pipeline, stages
    from regime_tasks.cli.stream import SOURCE as STREAM_SOURCE
    from regime_tasks.core.constants import DRIVERS
    from regime_tasks.sources import coingecko
    from regime_tasks.store import bars as store_bars
    from tests.sources import servers

    if args.late_window is not None:
        stages.LATE_BAR_WINDOW["1m"] = args.late_window
    print(f"late-bar window (1m): {stages.LATE_BAR_WINDOW['1m']} bars")
    tmp = tempfile.mkdtemp(prefix="bench_universe_")
    db_url = args.database_url or f"sqlite:///{Path(tmp) / 'universe.db'}"
    clock = Clock()
    rt, venues, budget, source = setup(db_url, clock)
    original_init = coingecko.CoinGeckoClient.__init__

    def venue_clock(self, *a, **kw):  # /global samples stamped on the venue's clock
        original_init(self, *a, **kw)
        self.now = lambda: venues.now.to_pydatetime()

    coingecko.CoinGeckoClient.__init__ = venue_clock  # type: ignore[method-assign]
    print(f"database: {db_url.split('?')[0]}")
    print(
        f"members: {len(source)} symbols = {len(set(source.values()))} real bundled series reused under other "
        f"symbols (the bundle has fewer than 4 x {PER_BUCKET} real members)"
    )
    t0 = time.perf_counter()
    w0 = venues.hl_weight
    boot = pipeline.bootstrap(rt, book_id="onchain_crypto", now=NOW.to_pydatetime())
    boot_secs = time.perf_counter() - t0
    if boot.errors:
        raise SystemExit(f"bootstrap failed: {boot.errors}")
    until0 = stages.last_closed_bar("1m", NOW)
    members = stages.bucket_members(rt, until0)
    print(
        f"bootstrap: {boot_secs:.1f} s wall, Hyperliquid weight {venues.hl_weight - w0:,} "
        f"(budget waits {clock.slept / 60:.1f} min on the budget's clock, not slept); members per bucket today: "
        + ", ".join(f"{b} {len(m)}" for b, m in members.items())
    )
    keys = {m["token_contract"]: m for ms in members.values() for m in ms}

    def stream_minute(until: pd.Timestamp) -> int:
        """What the member stream stores when ``until``'s minute closes: each member's bar, one upsert each."""
        written = 0
        for symbol, key in keys.items():
            frame = servers.candles("hyperliquid", source[symbol], "1m")
            row = frame[frame["timestamp"] == until.strftime("%Y-%m-%dT%H:%M:%SZ")]
            if row.empty:
                continue
            bar = row.set_index(pd.DatetimeIndex([until], name="timestamp"))[["open", "high", "low", "close", "volume"]]
            written += store_bars.upsert_bars(rt.engine, "lowcap", key, "1m", bar, source=STREAM_SOURCE)
        return written

    def tick(k: int, *, stream: bool = True) -> dict[str, float]:
        clock.t += 60.0
        venues.now = NOW + pd.Timedelta(minutes=k)
        until = stages.last_closed_bar("1m", venues.now)
        streamed = stream_minute(until) if stream else 0
        w = venues.hl_weight
        t0 = time.perf_counter()
        collected = stages.collect(rt, "1m", until)
        t1 = time.perf_counter()
        profiled = profile is not None and k == args.ticks
        if profiled and args.profile == "composite":
            profile.enable()  # type: ignore[union-attr]
        built = stages.build_driver_series(rt, "1m", until)
        if profile is not None:
            profile.disable()
        t2 = time.perf_counter()
        if profiled and args.profile == "drivers":
            profile.enable()  # type: ignore[union-attr]
        results = [stages.update_driver_safely(rt, "onchain_crypto", d, "1m", until) for d in DRIVERS]
        if profile is not None:
            profile.disable()
        t3 = time.perf_counter()
        pub = stages.publish(rt, "onchain_crypto", "1m", results)
        t4 = time.perf_counter()
        bad = [r["driver"] for r in results if r["status"] not in ("ok", "unchanged")]
        if bad or pub["failed"]:
            raise SystemExit(f"tick {until}: drivers failed {bad or pub['failed']}")
        constituents = {
            b: int(store_bars.read_bars(rt.engine, "regime", {"driver": b}, "1m", limit=1)["constituents"].iloc[-1])
            for b in members
        }
        return {
            "until": until,
            "streamed": streamed,
            "weight": venues.hl_weight - w,
            "budget_used": budget.used(),
            "collect": t1 - t0,
            "composite": t2 - t1,
            "drivers": t3 - t2,
            "publish": t4 - t3,
            "compute": t4 - t1,
            "wall": t4 - t0,
            "ok": sum(r["status"] == "ok" for r in results),
            "constituents": constituents,
            "lowcaps": collected["lowcaps"],
            "written": sum(built["written"].get(b, 0) for b in members),
        }

    profile = cProfile.Profile() if args.profile else None
    print("tick  bar    streamed weight  collect  composite  drivers  publish  compute   wall  members/bucket")
    runs = []
    for k in range(1, args.ticks + 1):
        r = tick(k)
        runs.append(r)
        print(
            f"{k:4d}  {r['until']:%H:%M}  {r['streamed']:8d} {r['weight']:6d} {r['collect'] * 1e3:7.1f}ms "
            f"{r['composite'] * 1e3:8.1f}ms {r['drivers'] * 1e3:6.1f}ms {r['publish'] * 1e3:6.1f}ms "
            f"{r['compute'] * 1e3:6.1f}ms {r['wall'] * 1e3:6.0f}ms  "
            + "/".join(str(r["constituents"][b]) for b in members)
        )
    steady = runs[1:] if len(runs) > 2 else runs  # the first tick after the bootstrap fills the warm caches
    print(f"(medians over ticks 2..{len(runs)}; tick 1 after the bootstrap warms the live histories)")
    print(
        f"Hyperliquid weight per tick (all requests, HYPE's candles included): max {max(r['weight'] for r in runs)}"
        f"; the venue's limit 1,200 a minute, the universe's budget {budget.per_min}"
    )
    for part in ("collect", "composite", "drivers", "publish"):
        print(f"  {part:10s} median {statistics.median(r[part] for r in steady) * 1e3:8.1f} ms")
    report(
        f"1m tick compute, 4 x {PER_BUCKET} members (composites+8 drivers+publish)",
        statistics.median(r["compute"] for r in steady),
        0.150,
    )
    print(f"1m tick wall incl. collect (HTTP on loopback): median {statistics.median(r['wall'] for r in steady):.3f} s")

    # one minute without the member stream: every member needs a REST catch-up, more weight than a minute has
    k = args.ticks + 1
    r = tick(k, stream=False)
    print(
        f"without the stream (minute {r['until']:%H:%M}): weight spent {r['weight']:,} of 1,200 (the universe's "
        f"budget used in the sliding minute: {r['budget_used']:,} of {budget.per_min}), member bars written "
        f"{r['lowcaps']} of {len(keys)}; the others deferred to the next ticks (wall {r['wall']:.2f} s)"
    )
    venues.stop()
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
