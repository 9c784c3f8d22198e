"""The drivers' price series: bucket composites (D3), ALT, BTC and dominance, extended or rebuilt."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from regime_tasks.core.composite import MemberBars
from regime_tasks.core.constants import (
    ALT_CONSTITUENTS,
    BUCKETS,
    DOMINANCE_DRIVERS,
    MAX_BUCKET_CONSTITUENTS,
)
from regime_tasks.core.timeframes import bar_delta, iso
from regime_tasks.logs import kv
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars

log = logging.getLogger(__name__)


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
    """Each member's bars from ``start``, reaching back to its own last traded bar before ``start`` (D3), as
    frames (``_read_member_bars``, which the composites use, gives the same bars as arrays)."""
    out = {}
    for name, bars in _read_member_bars(rt, members, timeframe, start, until).items():
        index = pd.DatetimeIndex(bars.ns.astype("datetime64[ns]"), name="timestamp").tz_localize("UTC")
        out[name] = pd.DataFrame(bars.values, index=index.as_unit("us"), columns=list(store_bars.BAR_COLUMNS))
    return out


_PRIOR_LOOKBACK_BARS = 10  # most members traded in the last 10 bars; the others' last close costs one more query


def _read_member_bars(
    rt: Runtime, members: list[MemberKey], timeframe: str, start: pd.Timestamp | None, until: pd.Timestamp
) -> dict[str, MemberBars]:
    """``_read_members`` as arrays (``core.composite.MemberBars``): no frame per member."""
    out = {}
    lowcaps = [mkey for table, mkey in members if table == "lowcap"]
    if lowcaps:
        out.update(_read_lowcap_members(rt, lowcaps, timeframe, start, until))
    for table, mkey in members:
        if table == "lowcap":
            continue
        # from _PRIOR_LOOKBACK_BARS before ``start``: a major's last traded bar before it is nearly always there
        lookback = None if start is None else start - bar_delta(timeframe) * _PRIOR_LOOKBACK_BARS
        frame = store_bars.read_bars(rt.engine, table, mkey, timeframe, start=lookback, end=until)  # type: ignore[arg-type]
        if start is not None and not frame.empty:
            new = frame.index >= start
            if not new.any():
                continue
            traded_before = np.flatnonzero(~new & (frame["volume"].to_numpy() > 0))
            if len(traded_before):
                frame = frame.iloc[np.r_[traded_before[-1], np.flatnonzero(new)]]
            else:
                frame = frame[new]
                before = start - pd.Timedelta(seconds=1)
                prior = store_bars.last_traded_bar(rt.engine, table, mkey, timeframe, before)  # type: ignore[arg-type]
                frame = pd.concat([prior, frame]) if not prior.empty else frame
        if not frame.empty:
            out["/".join(mkey.values())] = MemberBars.of(frame)
    return out


def _read_lowcap_members(
    rt: Runtime, keys: list[dict[str, str]], timeframe: str, start: pd.Timestamp | None, until: pd.Timestamp
) -> dict[str, MemberBars]:
    """``_read_member_bars`` for lowcap series in one query (a bucket has up to 64 members; one read per member
    was most of a 1m tick): the bars from ``_PRIOR_LOOKBACK_BARS`` bars before ``start`` to ``until``, of which
    each member keeps those from ``start`` and its last traded bar before; the members with no traded bar in that
    lookback get theirs from one more query (``_last_traded_bars``). On SQLite the rows come through the driver's
    cursor with times as stored text (parsed as one column), as ``store.bars.read_bars`` reads them."""
    from regime_tasks.store.schema import lowcap_price_data_ohlc as t

    wanted = {_token_name(k): k for k in keys}
    lookback = None if start is None else start - bar_delta(timeframe) * _PRIOR_LOOKBACK_BARS
    contracts = sorted({k["token_contract"] for k in keys})
    chains = sorted({k["token_chain"] for k in keys})
    price_cols = ("open_usd", "high_usd", "low_usd", "close_usd", "volume")
    if rt.engine.dialect.name == "sqlite":
        stamp = store_bars.sqlite_stamps
        where = ['"timeframe" = ?', '"timestamp" <= ?']
        params: list[Any] = [timeframe, stamp(pd.DatetimeIndex([until]))[0]]
        if lookback is not None:
            where.append('"timestamp" >= ?')
            params.append(stamp(pd.DatetimeIndex([lookback]))[0])
        where.append(f'"token_contract" IN ({", ".join("?" * len(contracts))})')
        where.append(f'"token_chain" IN ({", ".join("?" * len(chains))})')
        params += [*contracts, *chains]
        cols = ", ".join(f'"{c}"' for c in ("token_contract", "token_chain", "timestamp", *price_cols))
        sql = (
            f'SELECT {cols} FROM "{t.name}" WHERE {" AND ".join(where)} '
            'ORDER BY "token_contract", "token_chain", "timestamp"'
        )
        with rt.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                rows = cursor.execute(sql, params).fetchall()
            finally:
                cursor.close()
    else:
        q = sa.select(t.c.token_contract, t.c.token_chain, t.c.timestamp, *(t.c[c] for c in price_cols)).where(
            t.c.timeframe == timeframe,
            t.c.token_contract.in_(contracts),
            t.c.token_chain.in_(chains),
            t.c.timestamp <= until.to_pydatetime(),
        )
        if lookback is not None:
            q = q.where(t.c.timestamp >= lookback.to_pydatetime())
        with rt.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.token_contract, t.c.token_chain, t.c.timestamp)).all()
    out: dict[str, MemberBars] = {}
    if rows:
        contract, chain, stamps, *values = zip(*rows, strict=True)
        ns = _stamps_ns(stamps)
        prices = np.array(values, dtype=np.float64).T  # rows × open, high, low, close, volume
        new = np.ones(len(ns), dtype=bool) if start is None else ns >= pd.Timestamp(start).value
        traded_before = ~new & (prices[:, 4] > 0)
        # members' row ranges: rows are sorted by (contract, chain), so a range ends where either changes
        change = [k for k in range(1, len(contract)) if contract[k] != contract[k - 1] or chain[k] != chain[k - 1]]
        bounds = [0, *change, len(contract)]
        for lo, hi in itertools.pairwise(bounds):
            name = f"{contract[lo]}@{chain[lo]}"
            if name not in wanted or not new[hi - 1]:  # rows sorted by time: no bar from ``start`` on
                continue
            first = lo + int(np.argmax(new[lo:hi]))
            prior = np.flatnonzero(traded_before[lo:first])
            pos = np.r_[lo + prior[-1], first:hi] if len(prior) else np.arange(first, hi)
            out[name] = MemberBars(ns[pos], prices[pos])
    if start is not None:  # members with no traded bar in the lookback: their own last one, in one query
        alone = [n for n, b in out.items() if b.ns[0] >= pd.Timestamp(start).value]
        for name, prior_bar in _last_traded_bars(rt, [wanted[n] for n in alone], timeframe, start).items():
            bars = out[name]
            out[name] = MemberBars(np.r_[prior_bar.ns, bars.ns], np.vstack([prior_bar.values, bars.values]))
    return out


def _stamps_ns(stamps: tuple[Any, ...]) -> np.ndarray:
    """Bar times as read (SQLite text or driver datetimes) as int64 ns since the epoch, UTC."""
    if stamps and all(type(v) is str and len(v) == 26 and v[10] == " " for v in stamps):  # what SQLAlchemy writes
        return np.array(stamps, dtype="datetime64[us]").astype("datetime64[ns]").view(np.int64)
    text = bool(stamps) and isinstance(stamps[0], str)
    parsed = pd.to_datetime(pd.Series(stamps, dtype=object), utc=True, format="ISO8601" if text else None)
    return pd.DatetimeIndex(parsed).as_unit("ns").asi8


def _last_traded_bars(
    rt: Runtime, keys: list[dict[str, str]], timeframe: str, start: pd.Timestamp
) -> dict[str, MemberBars]:
    """``contract@chain`` → its newest bar with volume > 0 before ``start`` (one bar; absent if none): one
    statement of one index probe per member. Written as text with bound values (SQLAlchemy compiled a union of
    64 subqueries anew for most ticks: ~15 ms)."""
    from regime_tasks.store.schema import UTCDateTime
    from regime_tasks.store.schema import lowcap_price_data_ohlc as t

    if not keys:
        return {}
    cols = ", ".join(
        f'"{c}"' for c in ("token_contract", "token_chain", "timestamp", "open_usd", "high_usd", "low_usd", "close_usd")
    )
    out = {}
    for i in range(0, len(keys), 100):  # SQLite's compound SELECT limit is 500 terms
        part = keys[i : i + 100]
        sql = " UNION ALL ".join(
            f'SELECT * FROM (SELECT {cols}, "volume" FROM "{t.name}" WHERE "token_contract" = :c{k} '
            f'AND "token_chain" = :h{k} AND "timeframe" = :tf AND "volume" > 0 AND "timestamp" < :start '
            f'ORDER BY "timestamp" DESC LIMIT 1) AS p{k}'
            for k in range(len(part))
        )
        params: dict[str, Any] = {"tf": timeframe, "start": start.to_pydatetime()}
        for k, key in enumerate(part):
            params[f"c{k}"], params[f"h{k}"] = key["token_contract"], key["token_chain"]
        q = sa.text(sql).bindparams(sa.bindparam("start", type_=UTCDateTime()))
        with rt.engine.connect() as conn:
            rows = conn.execute(q, params).all()
        for contract, chain, ts, *values in rows:
            out[f"{contract}@{chain}"] = MemberBars(_stamps_ns((ts,)), np.array([values], dtype=np.float64))
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
        frames = _read_member_bars(rt, members, timeframe, None, until)
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
    frames = _read_member_bars(rt, members, timeframe, anchor + bar_delta(timeframe), until)
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

    written: dict[str, int] = {}
    starts: dict[str, pd.Timestamp | None] = {}
    for driver in DOMINANCE_DRIVERS:
        last = store_bars.last_bar_ts(rt.engine, "regime", {"driver": driver}, timeframe)
        if last is not None and last >= until:
            written[driver] = 0
        else:
            starts[driver] = None if last is None else last + bar_delta(timeframe)
    minutes: dict[str, pd.DataFrame] = {}
    if timeframe == "1m" and starts:
        # both series come from the same samples: read them once, from one hour before the earlier start so that
        # the first new minute can be a flat bar at the previous close
        known = [x for x in starts.values() if x is not None]
        first = None if len(known) < len(starts) else min(known) - pd.Timedelta(hours=1)
        samples = read_samples(rt.engine, start=first, end=until + bar_delta("1m"))
        if not samples.empty:
            minutes = samples_to_1m_bars(samples, end=until)
    for driver, start in starts.items():
        key = {"driver": driver}
        if timeframe == "1m":
            if driver not in minutes:
                written[driver] = 0
                continue
            frame = minutes[driver]
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
    return {d: written[d] for d in DOMINANCE_DRIVERS}
