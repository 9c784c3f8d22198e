"""The pipeline's steps as plain functions: load → call core → save.

Celery tasks (``tasks.py``) are thin wrappers around these; the bootstrap, the demo and the tests call them
directly too. Every step is keyed by (book, timeframe, bar time) and idempotent: running it again for the same
bar rewrites the same rows and publishes the same cache entries.

Time convention: ``until`` is the **open time of the last closed bar** to include (D5).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, cast

import kombu.exceptions
import numpy as np
import pandas as pd
import redis.exceptions
import sqlalchemy as sa

from regime_tasks.core.constants import (
    ALT_CONSTITUENTS,
    BUCKETS,
    DOMINANCE_DRIVERS,
    MAJORS,
    MAX_BUCKET_CONSTITUENTS,
)
from regime_tasks.core.payloads import EnginePayload
from regime_tasks.core.timeframes import bar_delta, iso, parse_ts
from regime_tasks.core.timeframes import last_closed_bar as last_closed_bar  # defined there; kept for stages.* callers
from regime_tasks.errors import StoreError
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.cache import CacheUnavailable

log = logging.getLogger(__name__)


# --- collect ------------------------------------------------------------------------------------------
def history_start(rt: Runtime, timeframe: str, until: pd.Timestamp) -> pd.Timestamp:
    """Where a first backfill of ``timeframe`` starts (settings ``REGIME_HISTORY_*_DAYS``)."""
    days = {
        "1d": rt.settings.history_1d_days,
        "1h": rt.settings.history_1h_days,
        "1m": rt.settings.history_1m_days,
    }[timeframe]
    return (until - pd.Timedelta(days=days)).floor(bar_delta(timeframe))


def missing_ranges(
    stored: pd.DatetimeIndex, start: pd.Timestamp, until: pd.Timestamp, timeframe: str, *, merge_bars: int = 1_000
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The ``[first, last]`` open-time ranges of the bars from ``start`` to ``until`` that ``stored`` lacks.

    Ranges less than ``merge_bars`` apart are fetched as one (one venue request instead of many small ones;
    re-fetching the stored bars between them rewrites the same rows).
    """
    if start > until:
        return []
    step = bar_delta(timeframe)
    missing = pd.date_range(start, until, freq=step).difference(stored)
    if missing.empty:
        return []
    breaks = np.flatnonzero((missing[1:] - missing[:-1]) > merge_bars * step)
    firsts = [0, *(breaks + 1)]
    lasts = [*breaks, len(missing) - 1]
    return [(missing[a], missing[b]) for a, b in zip(firsts, lasts, strict=True)]


def source_end(rt: Runtime, timeframe: str) -> pd.Timestamp | None:
    """Open time of the newest BTC bar of ``timeframe`` the source has: the file source knows where its data ends;
    for a venue (which serves up to now) it is the newest one stored."""
    latest = getattr(rt.market, "latest", None)
    if callable(latest):
        return latest(timeframe)
    return store_bars.last_bar_ts(rt.engine, "majors", {"token_contract": "BTC"}, timeframe)


def collect(rt: Runtime, timeframe: str, until: pd.Timestamp, *, repair: bool = False) -> dict[str, Any]:
    """Bring every input series of ``timeframe`` up to ``until``.

    A tick continues after the last stored bar. ``repair`` (the bootstrap) fetches every missing majors bar back
    to the configured depth (``REGIME_HISTORY_*_DAYS``), holes inside the stored history included, so that a
    bootstrap after a failed or shorter one stores what a fresh one would.
    """
    market = rt.market
    summary: dict[str, Any] = {
        "timeframe": timeframe,
        "until": iso(until),
        "majors": {},
        "lowcaps": 0,
        "repaired": set(),
    }
    for symbol in MAJORS:
        key = {"token_contract": symbol}
        if repair:
            begin = history_start(rt, timeframe, until)
            stored = store_bars.bar_timestamps(rt.engine, "majors", key, timeframe, start=begin, end=until)
            ranges = missing_ranges(stored, begin, until, timeframe)
        else:
            last = store_bars.last_bar_ts(rt.engine, "majors", key, timeframe)
            start = history_start(rt, timeframe, until) if last is None else last + bar_delta(timeframe)
            ranges = [] if start > until else [(start, until)]
            stored = pd.DatetimeIndex([])
        written = 0

        def sink(frame: pd.DataFrame, _key: Mapping[str, str] = key, _stored: pd.DatetimeIndex = stored) -> None:
            nonlocal written
            frame = frame[frame.index <= until]
            if not _stored.empty and (frame.index.difference(_stored) < _stored[-1]).any():
                summary["repaired"].add(_key["token_contract"])  # new bars inside or before the stored history
            written += store_bars.upsert_bars(rt.engine, "majors", _key, timeframe, frame, source=market.name)

        for first, last_missing in ranges:
            market.majors(symbol, timeframe, first, last_missing, sink)
        summary["majors"][symbol] = written
    summary["repaired"] = sorted(summary["repaired"])
    summary["lowcaps"] = market.collect_lowcaps(rt, timeframe, until, repair=repair)
    summary["dominance"] = market.collect_dominance(rt, timeframe, until, repair=repair)
    log.info("collected %s", kv(timeframe=timeframe, until=iso(until), majors=summary["majors"]))
    return summary


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
    import sqlalchemy as sa

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
    import sqlalchemy as sa

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


# --- driver price series (composites, BTC, dominance) ---------------------------------------------------
MemberKey = tuple[str, dict[str, str]]  # (price table, series key)


def _token_name(key: Mapping[str, str]) -> str:
    return f"{key['token_contract']}@{key['token_chain']}"


def bucket_membership(rt: Runtime, until: pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Bucket → point-in-time membership (index = day, columns = ``contract@chain``) up to ``until``'s day (D3).

    Caps come from ``token_caps`` (D16: price × supply per day); day d uses the caps at d−1's close, and a day
    whose previous close has no caps yet keeps the last known membership (still nothing after d−1). A token
    with no cap history but a cap in ``tokens`` (a host's single current cap) counts with that cap on every day:
    not point in time, the plan's host path.
    """
    day = pd.Timestamp(until).floor("1D")
    s = rt.settings
    key = (str(rt.engine.url), day, s.bucket_nano_max_usd, s.bucket_small_max_usd, s.bucket_mid_max_usd)
    stamp = _caps_stamp(rt, day)
    hit = _MEMBERSHIP.get(key)
    if hit is None or hit[0] != stamp:
        hit = (stamp, _bucket_membership(rt, day))
        _MEMBERSHIP[key] = hit
        while len(_MEMBERSHIP) > 16:
            _MEMBERSHIP.pop(next(iter(_MEMBERSHIP)))
    return dict(hit[1])


# Membership by (database, day, thresholds), kept while the caps it was computed from are unchanged
# (``_caps_stamp``): reading
# 256 members' daily caps and ranking them was ~170 ms of every 1m tick, twice (collect and composites).
_MEMBERSHIP: dict[tuple[Any, ...], tuple[tuple[Any, ...], dict[str, pd.DataFrame]]] = {}


def _caps_stamp(rt: Runtime, day: pd.Timestamp) -> tuple[Any, ...]:
    """What membership on ``day`` is computed from, summed up: caps up to d−1 and the host's single caps (rows,
    newest day, sum of caps); a cap written, rewritten or removed changes it."""
    import sqlalchemy as sa

    from regime_tasks.store.schema import token_caps, tokens

    c = token_caps.c
    caps = sa.select(sa.func.count(), sa.func.max(c.day), sa.func.sum(c.market_cap_usd)).where(
        c.day <= (day - pd.Timedelta(days=1)).to_pydatetime()
    )
    host = sa.select(sa.func.count(), sa.func.sum(tokens.c.market_cap_usd))
    with rt.engine.connect() as conn:
        return (*conn.execute(caps).one(), *conn.execute(host).one())


def _bucket_membership(rt: Runtime, day: pd.Timestamp) -> dict[str, pd.DataFrame]:
    from regime_tasks.core.composite import point_in_time_membership
    from regime_tasks.store.positions import read_tokens
    from regime_tasks.store.tokens import read_caps

    caps = read_caps(rt.engine, until=day - pd.Timedelta(days=1))
    host = {
        _token_name(t): float(t["market_cap_usd"])
        for t in read_tokens(rt.engine)
        if t.get("market_cap_usd") and _token_name(t) not in caps.columns
    }
    if host:
        first = caps.index[0] if not caps.empty else day - pd.Timedelta(days=rt.settings.history_1d_days)
        grid = pd.date_range(first, day - pd.Timedelta(days=1), freq="1D", tz="UTC")
        caps = caps.reindex(grid) if not caps.empty else pd.DataFrame(index=grid)
        for name, cap in host.items():
            caps[name] = cap
    if caps.empty:
        return {b: pd.DataFrame() for b in BUCKETS}
    s = rt.settings
    members = point_in_time_membership(
        caps,
        **s.bucket_thresholds,
        max_members=MAX_BUCKET_CONSTITUENTS,
    )
    out = {}
    for bucket, frame in members.items():
        if frame.index[-1] < day:  # the newest close has no caps yet: keep the last known membership
            grid = pd.date_range(frame.index[0], day, freq="1D", tz="UTC", name="day")
            frame = frame.reindex(grid).ffill().fillna(False).astype(bool)
        out[bucket] = frame[frame.index <= day]
    return out


def bucket_members(rt: Runtime, until: pd.Timestamp | None = None) -> dict[str, list[dict[str, str]]]:
    """Bucket → the lowcap series that are members on ``until``'s day (largest cap first, at most 64; D3)."""
    day = pd.Timestamp(until if until is not None else pd.Timestamp.now(tz="UTC")).floor("1D")
    out: dict[str, list[dict[str, str]]] = {}
    for bucket, frame in bucket_membership(rt, day).items():
        row = frame.loc[day] if not frame.empty and day in frame.index else pd.Series(dtype=bool)
        names = sorted(n for n, on in row.items() if on)
        out[bucket] = [dict(zip(("token_contract", "token_chain"), n.rsplit("@", 1), strict=True)) for n in names]
    return out


def _read_members(
    rt: Runtime, members: list[MemberKey], timeframe: str, start: pd.Timestamp | None, until: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """Each member's bars from ``start``, reaching back to its own last traded bar before ``start`` (D3)."""
    frames = {}
    lowcaps = [mkey for table, mkey in members if table == "lowcap"]
    if lowcaps:
        frames.update(_read_lowcap_members(rt, lowcaps, timeframe, start, until))
    for table, mkey in members:
        if table == "lowcap":
            continue
        frame = store_bars.read_bars(rt.engine, table, mkey, timeframe, start=start, end=until)  # type: ignore[arg-type]
        if start is not None and not frame.empty:
            before = start - pd.Timedelta(seconds=1)
            prior = store_bars.last_traded_bar(rt.engine, table, mkey, timeframe, before)  # type: ignore[arg-type]
            frame = pd.concat([prior, frame]) if not prior.empty else frame
        if not frame.empty:
            frames["/".join(mkey.values())] = frame[["open", "high", "low", "close", "volume"]]
    return frames


_PRIOR_LOOKBACK_BARS = 10  # most members traded in the last 10 bars; the others' last close costs one more query


def _read_lowcap_members(
    rt: Runtime, keys: list[dict[str, str]], timeframe: str, start: pd.Timestamp | None, until: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """``_read_members`` for lowcap series in one query (a bucket has up to 64 members; one read per member was
    most of a 1m tick): the bars from ``_PRIOR_LOOKBACK_BARS`` bars before ``start`` to ``until``, of which each
    member keeps those from ``start`` and its last traded bar before; the members with no traded bar in that
    lookback get theirs from one more query (``_last_traded_bars``)."""
    import sqlalchemy as sa

    from regime_tasks.store.schema import lowcap_price_data_ohlc as t

    wanted = {_token_name(k): k for k in keys}
    lookback = None if start is None else start - bar_delta(timeframe) * _PRIOR_LOOKBACK_BARS
    # SQLite keeps times as text: parsed below as one column, not a datetime per row (as store.bars.read_bars)
    ts = sa.type_coerce(t.c.timestamp, sa.String()) if rt.engine.dialect.name == "sqlite" else t.c.timestamp
    cols = [t.c.token_contract, t.c.token_chain, ts, t.c.open_usd, t.c.high_usd, t.c.low_usd]
    q = sa.select(*cols, t.c.close_usd, t.c.volume).where(
        t.c.timeframe == timeframe,
        t.c.token_contract.in_(sorted({k["token_contract"] for k in keys})),
        t.c.token_chain.in_(sorted({k["token_chain"] for k in keys})),
        t.c.timestamp <= until.to_pydatetime(),
    )
    if lookback is not None:
        q = q.where(t.c.timestamp >= lookback.to_pydatetime())
    with rt.engine.connect() as conn:
        rows = conn.execute(q.order_by(t.c.token_contract, t.c.token_chain, t.c.timestamp)).all()
    frames: dict[str, pd.DataFrame] = {}
    cols_out = list(store_bars.BAR_COLUMNS)
    if rows:
        contract, chain, stamps, *values = zip(*rows, strict=True)
        names = np.array([f"{a}@{b}" for a, b in zip(contract, chain, strict=True)])
        text = isinstance(stamps[0], str)
        index = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601" if text else None))
        index = index.rename("timestamp")
        prices = np.array(values, dtype=np.float64).T  # rows × open, high, low, close, volume
        new = np.ones(len(names), dtype=bool) if start is None else index >= start
        traded_before = ~new & (prices[:, 4] > 0)
        bounds = np.flatnonzero(names[1:] != names[:-1]) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(names)], strict=True):
            name = str(names[lo])
            if name not in wanted or not new[hi - 1]:  # rows sorted by time: no bar from ``start`` on
                continue
            first = lo + int(np.argmax(new[lo:hi]))
            prior = np.flatnonzero(traded_before[lo:first])
            pos = np.r_[lo + prior[-1], first:hi] if len(prior) else np.arange(first, hi)
            frames[name] = pd.DataFrame(prices[pos], index=index.take(pos), columns=cols_out)
    if start is not None:  # members with no traded bar in the lookback: their own last one, in one query
        alone = [n for n, f in frames.items() if f.index[0] >= start]
        for name, prior in _last_traded_bars(rt, [wanted[n] for n in alone], timeframe, start).items():
            frames[name] = pd.concat([prior, frames[name]])
    return frames


def _last_traded_bars(
    rt: Runtime, keys: list[dict[str, str]], timeframe: str, start: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """``contract@chain`` → its newest bar with volume > 0 before ``start`` (one frame row; absent if none)."""
    import sqlalchemy as sa

    from regime_tasks.store.schema import lowcap_price_data_ohlc as t

    if not keys:
        return {}
    cols = [t.c.token_contract, t.c.token_chain, t.c.timestamp, t.c.open_usd, t.c.high_usd, t.c.low_usd]
    parts = [
        sa.select(*cols, t.c.close_usd, t.c.volume)
        .where(
            t.c.token_contract == k["token_contract"],
            t.c.token_chain == k["token_chain"],
            t.c.timeframe == timeframe,
            t.c.volume > 0,
            t.c.timestamp < start.to_pydatetime(),
        )
        .order_by(t.c.timestamp.desc())
        .limit(1)
        .subquery()
        for k in keys
    ]
    out = {}
    for i in range(0, len(parts), 100):  # SQLite's compound SELECT limit is 500 terms
        q = sa.union_all(*(sa.select(p) for p in parts[i : i + 100]))
        with rt.engine.connect() as conn:
            rows = conn.execute(q).all()
        for contract, chain, ts, *values in rows:
            stamp = pd.DatetimeIndex(pd.to_datetime([ts], utc=True), name="timestamp")
            out[f"{contract}@{chain}"] = pd.DataFrame([values], index=stamp, columns=list(store_bars.BAR_COLUMNS))
    return out


# How far back an extension looks for member bars that arrived after the index passed them (a deferred member's
# REST catch-up, a websocket bar stored late, a host writing behind): bars of the last N stored index bars.
LATE_BAR_WINDOW = {"1m": 30, "1h": 24, "1d": 7}


def _composite_series(
    rt: Runtime,
    driver: str,
    timeframe: str,
    until: pd.Timestamp,
    members: list[MemberKey],
    membership: pd.DataFrame | None = None,
    *,
    rebuild: bool = False,
) -> int:
    """Extend the stored chain-linked index of ``driver`` up to ``until``; returns bars written.

    With nothing stored, or ``rebuild`` (the bootstrap, whose members may have gained older bars), the whole
    history is built (base 100). Otherwise the index is recomputed from the stored close ``LATE_BAR_WINDOW`` bars
    back (the anchor): each member's ratio is taken against its own last traded close, read from the store, and
    the sums run in the same order as a rebuild. Bars of that window that come out different from the stored ones
    — a member bar stored after the index had passed it changes the bar's constituents and the member's next
    ratio — are rewritten from the earliest such bar on, with the new bars; so the extension equals a rebuild bit
    for bit (tested) as long as a late bar is at most the window old. An older late bar waits for a rebuild.
    """
    from regime_tasks.core.composite import chain_linked_composite

    key = {"driver": driver}
    last = None if rebuild else store_bars.last_bar_ts(rt.engine, "regime", key, timeframe)
    if last is not None and last >= until:
        return 0
    if not members:
        return 0
    if last is None:
        frames = _read_members(rt, members, timeframe, None, until)
        if not frames:
            return 0
        comp = chain_linked_composite(frames, membership=membership)
        return store_bars.upsert_bars(rt.engine, "regime", key, timeframe, comp, source="composite")
    window = LATE_BAR_WINDOW.get(timeframe, 1)
    stored = store_bars.read_bars(rt.engine, "regime", key, timeframe, limit=window + 1, end=last)
    anchor = stored.index[0]  # its close is the level the recomputed window chains from
    if membership is not None and not membership.empty:  # only who can count on the recomputed bars
        recent = membership[membership.index >= anchor.floor("1D")]
        current = set(recent.columns[recent.to_numpy(dtype=bool).any(axis=0)])
        members = [m for m in members if m[0] != "lowcap" or _token_name(m[1]) in current]
    frames = _read_members(rt, members, timeframe, anchor + bar_delta(timeframe), until)
    if not frames:
        return 0
    level = float(stored["close"].iloc[0])
    comp = chain_linked_composite(frames, membership=membership, after=anchor, level=level)
    restart = _first_changed_bar(comp, stored.iloc[1:], anchor, last)
    if restart < last:
        log.info(
            "late member bars: index rewritten from the first changed bar %s",
            kv(driver=driver, timeframe=timeframe, restart=iso(restart), last=iso(last)),
        )
    return store_bars.upsert_bars(rt.engine, "regime", key, timeframe, comp[comp.index > restart], source="composite")


def _first_changed_bar(
    comp: pd.DataFrame, stored: pd.DataFrame, anchor: pd.Timestamp, last: pd.Timestamp
) -> pd.Timestamp:
    """The time before the earliest bar of ``comp`` (recomputed after ``anchor``, up to ``last``) that differs
    from ``stored`` in any bit of its prices or constituents, or that ``stored`` lacks; ``last`` when the window
    is unchanged."""
    cols = ["open", "high", "low", "close", "constituents"]
    old = comp[comp.index <= last]
    if old.empty:
        return last
    held = stored.reindex(old.index)
    same = np.ones(len(old), dtype=bool)
    for c in cols:
        a = old[c].to_numpy(dtype=np.float64)
        b = held[c].to_numpy(dtype=np.float64, na_value=np.nan)
        same &= a == b  # NaN (a bar the store lacks) is never equal
    if same.all():
        return last
    first = int(np.argmin(same))
    return old.index[first - 1] if first > 0 else anchor


def _copy_major(rt: Runtime, symbol: str, timeframe: str, until: pd.Timestamp, *, rebuild: bool = False) -> int:
    key = {"driver": symbol}
    last = None if rebuild else store_bars.last_bar_ts(rt.engine, "regime", key, timeframe)
    start = None if last is None else last + bar_delta(timeframe)
    frame = store_bars.read_bars(rt.engine, "majors", {"token_contract": symbol}, timeframe, start=start, end=until)
    if frame.empty:
        return 0
    return store_bars.upsert_bars(rt.engine, "regime", key, timeframe, frame.assign(constituents=1), source="majors")


def build_driver_series(rt: Runtime, timeframe: str, until: pd.Timestamp, *, rebuild: bool = False) -> dict[str, Any]:
    """Write ``regime_price_data_ohlc`` for all eight drivers of ``timeframe`` up to ``until``.

    ``rebuild`` (the bootstrap) rewrites BTC and the composites from all their inputs, which a repairing collect
    may have extended backwards or filled in; a tick only extends them.
    """
    written: dict[str, int] = {"BTC": _copy_major(rt, "BTC", timeframe, until, rebuild=rebuild)}
    alt_members: list[MemberKey] = [("majors", {"token_contract": s}) for s in ALT_CONSTITUENTS]
    written["ALT"] = _composite_series(rt, "ALT", timeframe, until, alt_members, rebuild=rebuild)
    for bucket, membership in bucket_membership(rt, until).items():
        names = sorted(membership.columns[membership.any(axis=0)]) if not membership.empty else []
        keys: list[MemberKey] = [
            ("lowcap", dict(zip(("token_contract", "token_chain"), n.rsplit("@", 1), strict=True))) for n in names
        ]
        written[bucket] = _composite_series(rt, bucket, timeframe, until, keys, membership, rebuild=rebuild)
    written.update(build_dominance_series(rt, timeframe, until))
    log.info("driver series built %s", kv(timeframe=timeframe, until=iso(until), written=written))
    return {"timeframe": timeframe, "until": iso(until), "written": written}


def build_dominance_series(rt: Runtime, timeframe: str, until: pd.Timestamp) -> dict[str, int]:
    """Extend BTC.d/USDT.d bars: 1m from raw samples, 1h/1d rolled up from 1m (D4). Imported history is kept."""
    from regime_tasks.core.bars import rollup
    from regime_tasks.core.dominance import samples_to_1m_bars
    from regime_tasks.store.dominance import read_samples

    written = {}
    for driver in DOMINANCE_DRIVERS:
        key = {"driver": driver}
        last = store_bars.last_bar_ts(rt.engine, "regime", key, timeframe)
        if last is not None and last >= until:
            written[driver] = 0
            continue
        start = None if last is None else last + bar_delta(timeframe)
        if timeframe == "1m":
            # one bar before the start so the first new minute can be a flat bar at the previous close
            samples = read_samples(
                rt.engine, start=None if start is None else start - pd.Timedelta(hours=1), end=until + bar_delta("1m")
            )
            if samples.empty:
                written[driver] = 0
                continue
            frame = samples_to_1m_bars(samples, end=until)[driver]
        else:
            lower = "1m" if timeframe == "1h" else "1h"
            src = store_bars.read_bars(rt.engine, "regime", key, lower, start=start, end=until + bar_delta(timeframe))
            if src.empty:
                written[driver] = 0
                continue
            frame = rollup(src, timeframe, now=until + bar_delta(timeframe))
        if start is not None:
            frame = frame[frame.index >= start]
        frame = frame[frame.index <= until]
        written[driver] = store_bars.upsert_bars(rt.engine, "regime", key, timeframe, frame, source="dominance")
    return written


# --- per driver: TA → engine → mapper ------------------------------------------------------------------


def _driver_row(rt: Runtime, book_id: str, driver: str, timeframe: str) -> tuple[int, dict[str, Any]]:
    from regime_tasks.store.positions import driver_row_ids, ensure_driver_rows, get_features

    ids = driver_row_ids(rt.engine, book_id)
    if (driver, timeframe) not in ids:
        ensure_driver_rows(rt.engine, book_id)
        ids = driver_row_ids(rt.engine, book_id)
    row_id = ids[(driver, timeframe)]
    return row_id, get_features(rt.engine, row_id)


def update_driver(
    rt: Runtime, book_id: str, driver: str, timeframe: str, until: pd.Timestamp, *, replay: bool = False
) -> dict[str, Any]:
    """Advance one driver × timeframe to ``until``: every closed bar after the last processed one is stepped.

    - No previous engine payload, or ``replay`` (the bootstrap): the whole stored history up to ``until`` is
      replayed bar by bar (D15) and the series' state-change events are replaced by the replay's, so a
      bootstrap gives the state its (possibly repaired) history implies, whatever ran before.
    - Otherwise each new bar is stepped on its anchored TA window (``core.live.window_start``): a warm
      ``LiveHistory`` kept by this process appends the bar, or one is built from the window's bars first; both
      give the same bits, so the result does not depend on which worker runs the task (bars are computed by bar
      time, not run time).
    - Re-running for a bar already processed changes nothing and returns the stored payload.
    """
    from regime_tasks.core.bars import validate_bars
    from regime_tasks.core.live import ta_payload_of_history, window_start
    from regime_tasks.core.mapper import map_engine_payload
    from regime_tasks.core.series import lay_bars, run_series
    from regime_tasks.core.uptrend import EngineHistory
    from regime_tasks.store.events import append_events, delete_events
    from regime_tasks.store.positions import set_features_bulk

    key = {"driver": driver}
    row_id, features = _driver_row(rt, book_id, driver, timeframe)
    prev = None if replay else features.get("uptrend_engine_v4") or None
    prev_bar = parse_ts(prev["bar_ts"]) if prev and prev.get("bar_ts") else None
    base = {"driver": driver, "timeframe": timeframe, "until": iso(until)}
    if prev is not None and prev_bar is not None and prev_bar >= until:
        return {
            **base,
            "status": "unchanged",
            "state": prev.get("state"),
            "bars": store_bars.count_bars(rt.engine, "regime", key, timeframe),
            "payload": features.get("regime_engine_v4"),
        }

    s = rt.settings
    start = None
    if prev_bar is not None:
        start = window_start(prev_bar + bar_delta(timeframe), timeframe, s.ta_window_bars, s.ta_window_slack_bars)
    bars = store_bars.read_bars(rt.engine, "regime", key, timeframe, start=start, end=until)
    if bars.empty:
        return {**base, "status": "missing", "state": None, "bars": 0, "payload": None}
    series = f"{driver}:{timeframe}"
    # rows may have been written by other programs sharing the database: re-check before computing
    validate_bars(bars, series=f"regime:{series}", timeframe=timeframe, source="database")
    engine_settings = s.engine_settings()
    if prev_bar is None:
        run = run_series(bars, timeframe, engine_settings, diagnostics="last")
        filled, ta_frame = run.bars, run.ta
        # only the last payload is stored: the bars before it are streamed, without diagnostics, and dropped
        payloads: list[Any] = []
        state_events: list[dict[str, Any]] = []
        for payload, event in run.payloads:
            payloads[:] = [payload]
            if event is not None:
                state_events.append(event)
        stepped = len(ta_frame)  # every bar of the history
        window = ta_frame.iloc[-s.ta_window_bars :]
        window_filled = filled["filled"].to_numpy()[-len(window) :]
        history = EngineHistory(window, engine_settings, first_step=len(window) - 1, filled=window_filled)
    else:
        assert prev is not None  # prev_bar was read from it
        filled, _ = lay_bars(bars, timeframe)
        cache_key = (str(rt.engine.url), book_id, driver, timeframe)
        payloads, state_events, history = _step_live(rt, cache_key, timeframe, filled, prev, prev_bar, engine_settings)
        stepped = len(payloads)
    if not payloads:
        return {
            **base,
            "status": "unchanged",
            "state": prev.get("state") if prev else None,
            "bars": len(bars),
            "payload": features.get("regime_engine_v4"),
        }
    now_iso = iso(pd.Timestamp.now(tz="UTC"))
    regime = map_engine_payload(payloads[-1])
    last_engine = {**payloads[-1], "ts": now_iso}
    regime = {**regime, "ts": now_iso}
    ta_payload = ta_payload_of_history(history, series, timeframe, s.engine_sr_levels)
    ta_payload["ts"] = now_iso
    set_features_bulk(
        rt.engine,
        [(row_id, "ta", ta_payload), (row_id, "uptrend_engine_v4", last_engine), (row_id, "regime_engine_v4", regime)],
    )
    if prev_bar is None:  # a whole-history replay recomputes every event of the series
        delete_events(rt.engine, book_id=book_id, driver=driver, timeframe=timeframe)
    if state_events:
        append_events(rt.engine, state_events, book_id=book_id, driver=driver, timeframe=timeframe)
    return {
        **base,
        "status": "ok",
        "state": regime["state"],
        "bars": len(bars),
        "stepped": stepped,
        "payload": regime,
    }


# Warm live histories of this process, most recently used last (see core/live.py). A cache only: every entry is
# checked against the database's bars before use, and a miss rebuilds the same history from them.
_LIVE: OrderedDict[tuple[str, str, str, str], Any] = OrderedDict()


def _step_live(
    rt: Runtime,
    cache_key: tuple[str, str, str, str],
    timeframe: str,
    filled: pd.DataFrame,
    prev: Mapping[str, Any],
    prev_bar: pd.Timestamp,
    settings: Any,
) -> tuple[list[EnginePayload], list[dict[str, Any]], Any]:
    """Step every bar of ``filled`` after ``prev_bar``, each on its anchored window."""
    from regime_tasks.core.live import LiveHistory, window_start
    from regime_tasks.core.ta import StreamBreak, compute_ta_frame
    from regime_tasks.core.uptrend import EngineHistory, step

    s = rt.settings
    live = _LIVE.pop(cache_key, None)
    payloads: list[EnginePayload] = []
    events: list[dict[str, Any]] = []
    history: Any = None
    payload: Mapping[str, Any]
    previous: Mapping[str, Any] | None = prev
    checked = False  # a history from the cache is compared with the database once; after that this call feeds it
    for ts in filled.index[filled.index > prev_bar]:
        anchor = window_start(ts, timeframe, s.ta_window_bars, s.ta_window_slack_bars)
        window = filled[(filled.index >= anchor) & (filled.index < ts)]
        try:
            if live is None or live.window_start != anchor or not (checked or _resume(live, window)):
                capacity = s.ta_window_bars + s.ta_window_slack_bars
                live = LiveHistory(window, settings, capacity=capacity, window_start=anchor)
            checked = True
            live.append(ts, filled.loc[ts])
            payload, event = live.step_last(previous)
            history = live
        except StreamBreak as why:  # a window too short to stream, or a bar that changes it: compute it whole
            log.debug("live history rebuilt whole %s", kv(series=cache_key[2:], bar_ts=iso(ts), why=why))
            live = None
            frame = compute_ta_frame(filled[(filled.index >= anchor) & (filled.index <= ts)].drop(columns="filled"))
            window_filled = filled.loc[frame.index, "filled"].to_numpy()
            history = EngineHistory(frame, settings, first_step=len(frame) - 1, filled=window_filled)
            payload, event = step(history, history.n - 1, previous, settings)
        payloads.append(cast(EnginePayload, payload))  # step()'s dict; its shape: tests/core/test_payloads.py
        if event is not None:
            events.append(event)
        previous = payload
    if live is not None and s.live_cache_series > 0:
        _LIVE[cache_key] = live
        while len(_LIVE) > s.live_cache_series:
            _LIVE.popitem(last=False)
    return payloads, events, history


def _resume(live: Any, window: pd.DataFrame) -> bool:
    """Bring a cached history up to the end of ``window`` (the window's bars before the bar to step), if it holds
    exactly the bars the database holds now: a corrected bar anywhere in the window means a rebuild (False)."""
    n = live.n
    if n > len(window) or not np.array_equal(live.timestamps(), window.index.asi8[:n]):
        return False
    for name in ("open", "high", "low", "close", "volume"):
        if not np.array_equal(live.cols[name][:n], window[name].to_numpy(dtype=np.float64)[:n]):
            return False
    if not np.array_equal(live.filled[:n], window["filled"].to_numpy(dtype=bool)[:n]):
        return False
    for ts in window.index[n:]:  # bars another worker process stepped since: add them without stepping
        live.append(ts, window.loc[ts])
    return True


# Infrastructure errors: the database, the cache or the broker failed, not the computation. A step re-raises them
# (update_driver_safely) and the tasks retry exactly these (tasks.RETRYABLE_ERRORS, where the policy is described).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StoreError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    CacheUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
)


def update_driver_safely(
    rt: Runtime, book_id: str, driver: str, timeframe: str, until: pd.Timestamp, *, replay: bool = False
) -> dict[str, Any]:
    """``update_driver`` that turns a computation failure into an ``error`` status (logged with traceback).

    Infrastructure failures (:data:`TRANSIENT_ERRORS`) still raise so that Celery retries the task.
    """
    try:
        return update_driver(rt, book_id, driver, timeframe, until, replay=replay)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.exception("driver update failed %s", kv(driver=driver, timeframe=timeframe, until=iso(until)))
        return {
            "driver": driver,
            "timeframe": timeframe,
            "until": iso(until),
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "state": None,
            "bars": 0,
            "payload": None,
        }


def publish(rt: Runtime, book_id: str, timeframe: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish the timeframe's driver payloads to the cache in one atomic write (D10)."""
    entries = {
        f"{r['driver']}|{timeframe}": r["payload"]
        for r in results
        if r.get("payload") and r.get("status") in {"ok", "unchanged"}
    }
    if entries:
        rt.cache.publish(book_id, entries)
    statuses = {r["driver"]: r["status"] for r in results}
    failed = sorted(d for d, s in statuses.items() if s == "error")
    if failed:
        log.error("drivers failed this tick %s", kv(timeframe=timeframe, drivers=",".join(failed)))
    out = {"timeframe": timeframe, "published": sorted(entries), "statuses": statuses, "failed": failed}
    if not any(s == "ok" for s in statuses.values()):  # nothing stepped: say so instead of looking like success
        btc = next((r for r in results if r["driver"] == "BTC"), {})
        last = (btc.get("payload") or {}).get("bar_ts")
        out["message"] = no_new_bar_message(rt, timeframe, parse_ts(last) if last else None)
        log.info("tick %s: %s", timeframe, out["message"])
    return out


def no_new_bar_message(rt: Runtime, timeframe: str, last: pd.Timestamp | None) -> str:
    """``no new closed bar after <last> — the source ends at <ts>`` for a tick that stepped nothing."""
    end = source_end(rt, timeframe)
    return f"no new closed bar after {iso(last) or 'none'} — the source ends at {iso(end) or 'no bar'}"


def run_levers(rt: Runtime, book_id: str) -> dict[str, Any]:
    """Levers for every active/watchlist position of the book (D1)."""
    from regime_tasks.api import run_levers_task

    return run_levers_task(rt.engine, rt.cache, book_id=book_id)
