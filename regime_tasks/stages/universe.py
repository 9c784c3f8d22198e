"""The lowcap universe without a host (D16; docs/COMPOSITES.md "Live universe"): members, caps, candles
and the derived dominance history of a live bootstrap."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
import sqlalchemy as sa

from regime_tasks.core.constants import DOMINANCE_DRIVERS
from regime_tasks.core.timeframes import bar_delta, iso, parse_ts
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.stages.collect import history_start, missing_ranges
from regime_tasks.stages.series import bucket_members, bucket_membership
from regime_tasks.store import bars as store_bars

log = logging.getLogger(__name__)


# --- lowcap universe without a host (D16; docs/COMPOSITES.md "Live universe") ------------------------------
UNIVERSE_CHAIN = "hyperliquid"  # token_chain of universe members, as in the bundle's tokens.csv
_BUDGETS: dict[tuple[str, int], Any] = {}  # one Hyperliquid weight budget per process and venue URL


def weight_budget(rt: Runtime) -> Any:
    """This process's share of Hyperliquid's per-IP weight (``REGIME_HYPERLIQUID_WEIGHT_BUDGET_PER_MIN``)."""
    from regime_tasks.sources.hyperliquid import WeightBudget

    key = (rt.settings.hyperliquid_base_url, rt.settings.hyperliquid_weight_budget_per_min)
    if key not in _BUDGETS:
        _BUDGETS[key] = WeightBudget(rt.settings.hyperliquid_weight_budget_per_min)
    return _BUDGETS[key]


def symbol_table() -> pd.DataFrame:
    """The shipped, reviewed symbol table (matched rows only) joined with the roles of the supply snapshot
    (member / major / stablecoin): who may be a bucket member is decided by review, not at run time."""
    from regime_tasks.config import BUNDLED_DATA_DIR

    table = pd.read_csv(BUNDLED_DATA_DIR / "symbols.csv")
    roles = pd.read_csv(BUNDLED_DATA_DIR / "supplies.csv")[["coingecko_id", "role"]]
    matched = table[(table["venue"] == "hyperliquid") & (table["status"] == "matched")]
    return matched.merge(roles, on="coingecko_id", how="left")


def _fresh(value: Any, max_age_secs: float) -> bool:
    if not value or "fetched_at" not in value:
        return False
    age = pd.Timestamp.now(tz="UTC") - parse_ts(value["fetched_at"])
    return age.total_seconds() < max_age_secs


def live_universe(rt: Runtime) -> pd.DataFrame:
    """The live universe: matched coins that Hyperliquid lists now (delisted perps out), each with the coin name
    its candles are asked for, its price multiplier and a circulating supply — spot tokens from Hyperliquid's
    ``circulatingSupply``, perps (and stablecoins, for dominance) from CoinGecko ``/coins/markets``. Listings are
    re-read hourly and supplies daily (settings); both are kept in ``regime_meta`` so a failed refresh keeps the
    last ones (logged). A coin on both markets counts once: the perp. Columns: symbol, coin, market,
    coingecko_id, price_multiplier, role, supply, supply_as_of."""
    from regime_tasks.errors import SourceError
    from regime_tasks.sources.coingecko import CoinGeckoClient
    from regime_tasks.sources.hyperliquid import HyperliquidClient
    from regime_tasks.store.meta import get_meta, set_meta

    s = rt.settings
    table = symbol_table()
    listing = get_meta(rt.engine, "universe:listing")
    # two info requests of weight 20; with a listing in hand, a spent budget postpones the refresh
    wait = s.universe_tick_wait_secs if listing else float("inf")
    if not _fresh(listing, s.universe_listing_refresh_secs) and weight_budget(rt).take(40, wait_secs=wait):
        try:
            hl = HyperliquidClient(s)
            frame = pd.concat([hl.perp_universe(), hl.spot_universe()], ignore_index=True)
            listing = {"fetched_at": iso(pd.Timestamp.now(tz="UTC")), "rows": frame.to_dict("records")}
            set_meta(rt.engine, "universe:listing", listing)
        except SourceError as exc:
            if not listing:
                raise
            log.warning("universe listing refresh failed, keeping the last one %s", kv(error=exc))
    assert listing is not None
    listed = pd.DataFrame(listing["rows"])
    listed = listed[~listed["delisted"].astype(bool)]
    uni = table.merge(listed[["symbol", "market", "coin", "circulating_supply"]], on=["symbol", "market"])
    supplies = get_meta(rt.engine, "universe:supplies")
    if not _fresh(supplies, s.universe_supply_refresh_hours * 3600):
        ids = sorted(set(uni.loc[uni["market"] == "perp", "coingecko_id"]) | _stablecoin_ids())
        try:
            rows = CoinGeckoClient(s).coins_markets(ids)
            supplies = {
                "fetched_at": iso(pd.Timestamp.now(tz="UTC")),
                "rows": {
                    r.coingecko_id: {"supply": r.circulating_supply, "as_of": iso(r.last_updated)}
                    for r in rows.itertuples()
                    if r.circulating_supply and pd.notna(r.last_updated)
                },
            }
            set_meta(rt.engine, "universe:supplies", supplies)
            missing = sorted(set(ids) - set(supplies["rows"]))
            if missing:
                log.info("no CoinGecko supply %s", kv(coins=len(missing), first=",".join(missing[:5])))
        except SourceError as exc:
            if not supplies:
                raise
            log.warning("supply refresh failed, keeping the last ones %s", kv(error=exc))
    assert supplies is not None
    cg = supplies["rows"]
    spot_as_of = listing["fetched_at"]
    uni["supply"] = [
        (row.circulating_supply if row.market == "spot" else cg.get(row.coingecko_id, {}).get("supply"))
        for row in uni.itertuples()
    ]
    uni["supply_as_of"] = [
        (spot_as_of if row.market == "spot" else cg.get(row.coingecko_id, {}).get("as_of")) for row in uni.itertuples()
    ]
    uni = uni.dropna(subset=["supply"])
    uni = uni.sort_values(["coingecko_id", "market"]).drop_duplicates("coingecko_id", keep="first")  # perp < spot
    cols = ["symbol", "coin", "market", "coingecko_id", "price_multiplier", "role", "supply", "supply_as_of"]
    return uni[cols].sort_values("symbol").reset_index(drop=True)


def _stablecoin_ids() -> set[str]:
    from regime_tasks.config import BUNDLED_DATA_DIR

    roles = pd.read_csv(BUNDLED_DATA_DIR / "supplies.csv")
    return set(roles.loc[roles["role"] == "stablecoin", "coingecko_id"])


def stablecoin_supplies(rt: Runtime) -> dict[str, float]:
    """coingecko_id → circulating supply (USD at price 1) of the stablecoins, from the last supply refresh."""
    from regime_tasks.store.meta import get_meta

    rows = (get_meta(rt.engine, "universe:supplies") or {}).get("rows", {})
    return {cid: float(v["supply"]) for cid, v in rows.items() if cid in _stablecoin_ids() and v.get("supply")}


def collect_universe(rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> dict[str, Any]:
    """Store the universe members' closed bars of ``timeframe`` up to ``until`` in ``lowcap_price_data_ohlc`` (as
    the host would), and on 1d their daily caps (close × supply) in ``token_caps``.

    Which coins: on 1d every eligible member (role ``member``), since caps decide membership; on 1h/1m the coins
    that are bucket members on some day of the history window. Each coin resumes after its own last stored bar
    (``repair``: every missing bar back to the configured depth), stalest first, within the weight budget: a tick
    waits at most ``REGIME_UNIVERSE_TICK_WAIT_SECS`` for weight and defers the rest to its next run, the
    bootstrap waits as long as it takes. A coin whose request fails is reported (``failed``) and retried on the
    next run from its last stored bar; the others are stored. Returns counts per outcome.
    """
    from regime_tasks.errors import SourceError
    from regime_tasks.sources.hyperliquid import HyperliquidClient

    uni = live_universe(rt)
    members = uni[uni["role"] == "member"]
    if timeframe != "1d":
        begin = history_start(rt, timeframe, until).floor("1D")
        wanted: set[str] = set()
        for frame in bucket_membership(rt, until).values():
            if not frame.empty:
                recent = frame[frame.index >= begin]
                wanted |= {n.rsplit("@", 1)[0] for n in recent.columns[recent.any(axis=0)]}
        members = members[members["symbol"].isin(wanted)]
    step = bar_delta(timeframe)
    plans = []
    for row in members.itertuples():
        key = {"token_contract": row.symbol, "token_chain": UNIVERSE_CHAIN}
        last = store_bars.last_bar_ts(rt.engine, "lowcap", key, timeframe)
        if repair:
            first = history_start(rt, timeframe, until)
            stored = store_bars.bar_timestamps(rt.engine, "lowcap", key, timeframe, start=first, end=until)
            ranges = missing_ranges(stored, first, until, timeframe)
        else:
            start = history_start(rt, timeframe, until) if last is None else last + step
            ranges = [] if start > until else [(start, until)]
        if ranges:
            plans.append((last if last is not None else pd.Timestamp(0, tz="UTC"), row, key, ranges))
    plans.sort(key=lambda p: (p[0], p[1].symbol))  # stalest first: deferred coins go first next time
    client = HyperliquidClient(rt.settings)
    budget = weight_budget(rt)
    wait = float("inf") if repair else rt.settings.universe_tick_wait_secs
    out: dict[str, Any] = {"coins": len(members), "written": 0, "fetched": 0, "deferred": [], "failed": {}}
    for _, row, key, ranges in plans:
        weight = sum(_fetch_weight(int((b - a) / step) + 1) for a, b in ranges)
        if not budget.take(weight, wait_secs=wait):
            out["deferred"].append(row.symbol)
            continue
        try:
            for first, last_missing in ranges:
                end = last_missing + step - pd.Timedelta(milliseconds=1)
                frame = client.candle_snapshot(row.coin, timeframe, first, end)
                frame = frame[frame.index <= until]
                if not frame.empty:
                    out["written"] += store_bars.upsert_bars(
                        rt.engine, "lowcap", key, timeframe, frame, source="hyperliquid"
                    )
        except SourceError as exc:
            out["failed"][row.symbol] = str(exc)
            log.error("universe member fetch failed %s", kv(coin=row.symbol, timeframe=timeframe, error=exc))
            continue
        out["fetched"] += 1
    if timeframe == "1d":
        out["caps"] = _store_universe_caps(rt, uni[uni["role"] == "member"], until)
    if out["deferred"]:
        log.info(
            "weight budget spent, members deferred to the next run %s",
            kv(timeframe=timeframe, deferred=len(out["deferred"]), first=out["deferred"][0]),
        )
    log.info(
        "universe collected %s",
        kv(timeframe=timeframe, until=iso(until), **{k: out[k] for k in ("coins", "written", "fetched")}),
    )
    return out


def member_stream_targets(rt: Runtime, until: pd.Timestamp | None = None) -> dict[str, dict[str, str]]:
    """Candle coin → ``lowcap`` series key of today's bucket members (``until``'s day): what ``regime stream
    --members`` subscribes to, so that 1m member bars are stored as they close instead of polled by REST (the
    weight budget cannot poll 4 × 64 members every minute). Membership changes daily: a restarted stream picks
    up the new members; until then the 1m tick's REST catch-up fetches them."""
    day = pd.Timestamp(until if until is not None else pd.Timestamp.now(tz="UTC"))
    names = {m["token_contract"] for members in bucket_members(rt, day).values() for m in members}
    uni = live_universe(rt)
    return {
        row.coin: {"token_contract": row.symbol, "token_chain": UNIVERSE_CHAIN}
        for row in uni.itertuples()
        if row.symbol in names
    }


def _fetch_weight(bars: int) -> int:
    """Hyperliquid weight of fetching ``bars`` candles (pages of 5,000)."""
    from regime_tasks.sources.hyperliquid import MAX_CANDLES, candle_weight

    full, rest = divmod(bars, MAX_CANDLES)
    return full * candle_weight(MAX_CANDLES) + (candle_weight(rest) if rest else 0)


def _store_universe_caps(rt: Runtime, members: pd.DataFrame, until: pd.Timestamp) -> int:
    """Daily caps (D16: traded 1d close / price multiplier × supply) of the days after each member's last
    stored cap; a supply refresh applies from the next new day on (stored caps are not rewritten)."""
    from regime_tasks.store.tokens import cap_source, derive_caps, last_cap_day, upsert_caps

    rows: list[dict[str, Any]] = []
    for row in members.itertuples():
        key = {"token_contract": row.symbol, "token_chain": UNIVERSE_CHAIN}
        last = last_cap_day(rt.engine, row.symbol, UNIVERSE_CHAIN)
        start = None if last is None else last + pd.Timedelta(days=1)
        daily = store_bars.read_bars(rt.engine, "lowcap", key, "1d", start=start, end=until)
        if daily.empty:
            continue
        caps = derive_caps(daily, supply=float(row.supply), price_multiplier=float(row.price_multiplier))
        as_of = parse_ts(row.supply_as_of) if row.supply_as_of else None
        rows.extend(
            {
                **key,
                "day": day.to_pydatetime(),
                "market_cap_usd": float(cap),
                "close_usd": float(close),
                "circulating_supply": float(row.supply),
                "supply_as_of": None if as_of is None else as_of.to_pydatetime(),
                "source": cap_source(as_of),
            }
            for day, cap, close in caps[["day", "market_cap_usd", "close_usd"]].itertuples(index=False)
        )
    return upsert_caps(rt.engine, rows) if rows else 0


def published_dominance(rt: Runtime) -> pd.DataFrame:
    """The stored daily dominance that is not derived here (imported TradingView history, daily bars rolled up
    from ``/global`` samples): index = day, columns btc_d, usdt_d — the calibration target of D16."""

    from regime_tasks.core.dominance import DOMINANCE_COLUMNS
    from regime_tasks.store.schema import regime_price_data_ohlc as t

    q = sa.select(t.c.driver, t.c.timestamp, t.c.close_usd).where(
        t.c.timeframe == "1d",
        t.c.driver.in_(list(DOMINANCE_DRIVERS)),
        sa.or_(t.c.source.is_(None), t.c.source != "derived"),
    )
    with rt.engine.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        return pd.DataFrame(columns=["btc_d", "usdt_d"])
    frame = pd.DataFrame.from_records(rows, columns=["driver", "timestamp", "close"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    wide = frame.pivot(index="timestamp", columns="driver", values="close").rename(columns=DOMINANCE_COLUMNS)
    return wide.reindex(columns=["btc_d", "usdt_d"]).dropna().sort_index()


def derive_dominance_history(rt: Runtime, timeframe: str, until: pd.Timestamp) -> int:
    """Live bootstrap (D16): BTC.d/USDT.d bars of ``timeframe`` (1h, 1d) before the first ``/global`` sample,
    derived from the stored majors' and universe members' bars × supplies (stablecoins at supply), calibrated to
    the published daily series at the previous day's close (``core.dominance.derive_dominance``). Without a
    stored daily series the bundled published one (``regime_tasks/data/dominance/1d.csv``, TradingView
    CRYPTOCAP) is imported first, as ``regime import-dominance`` would. Days after the published series ends
    keep its last ratio (``carry_calibration``; logged with its age). Bars already stored are left alone; written
    bars carry ``source = derived``. Returns bars written."""

    from regime_tasks.config import BUNDLED_DATA_DIR
    from regime_tasks.core.dominance import DOMINANCE_COLUMNS, derive_dominance
    from regime_tasks.importers import import_dominance
    from regime_tasks.store.schema import dominance_samples

    if timeframe not in ("1h", "1d"):
        return 0
    published = published_dominance(rt)
    if published.empty:
        path = BUNDLED_DATA_DIR / "dominance" / "1d.csv"
        import_dominance(rt.engine, path, timeframe="1d")
        log.info("no daily dominance stored: imported the bundled published series %s", kv(path=path.name))
        published = published_dominance(rt)
    with rt.engine.connect() as conn:
        first_sample = conn.execute(sa.select(sa.func.min(dominance_samples.c.fetched_at))).scalar()
    limit = until
    if first_sample is not None:  # from the first sample's bar on, bars come from the samples (D4)
        limit = min(until, parse_ts(first_sample).floor(bar_delta(timeframe)) - bar_delta(timeframe))
    start = history_start(rt, timeframe, until) - pd.Timedelta(days=2)  # the previous day's close calibrates
    uni = live_universe(rt)
    caps: dict[str, pd.Series] = {}
    for row in uni[uni["role"].isin(["member", "major"])].itertuples():
        table = "majors" if row.role == "major" else "lowcap"
        key = (
            {"token_contract": row.symbol}
            if table == "majors"
            else {"token_contract": row.symbol, "token_chain": UNIVERSE_CHAIN}
        )
        bars = store_bars.read_bars(rt.engine, table, key, timeframe, start=start, end=limit)  # type: ignore[arg-type]
        bars = bars[bars["volume"] > 0]
        if not bars.empty:
            caps[row.coingecko_id] = bars["close"] / float(row.price_multiplier) * float(row.supply)
    stables = stablecoin_supplies(rt)
    if "bitcoin" not in caps or "tether" not in stables or published.empty:
        log.warning("dominance history not derived: no BTC bars, USDT supply or published daily series")
        return 0
    frame = pd.DataFrame(caps).sort_index()
    frame["tether"] = stables["tether"]
    others = sum(v for k, v in stables.items() if k != "tether")
    derived = derive_dominance(
        frame,
        btc="bitcoin",
        usdt="tether",
        stable_supply_usd=others,
        published=published,
        timeframe=timeframe,
        carry_calibration=True,
    )
    derived = derived[(derived.index >= history_start(rt, timeframe, until)) & (derived.index <= limit)]
    if not derived.empty and derived["calibrated_on"].iloc[-1] < derived.index[-1].floor("1D") - pd.Timedelta(days=1):
        log.warning(
            "derived dominance calibrated on an old published close %s",
            kv(
                timeframe=timeframe,
                calibrated_on=iso(derived["calibrated_on"].iloc[-1]),
                last_bar=iso(derived.index[-1]),
            ),
        )
    written = 0
    for driver, col in DOMINANCE_COLUMNS.items():
        key = {"driver": driver}
        have = store_bars.bar_timestamps(
            rt.engine, "regime", key, timeframe, start=derived.index.min() if not derived.empty else None, end=limit
        )
        part = derived.loc[~derived.index.isin(have), col]
        if part.empty:
            continue
        bars = pd.DataFrame({"open": part, "high": part, "low": part, "close": part, "volume": 0.0})
        written += store_bars.upsert_bars(rt.engine, "regime", key, timeframe, bars, source="derived")
    log.info("dominance history derived %s", kv(timeframe=timeframe, bars=written, coins=len(caps)))
    return written
