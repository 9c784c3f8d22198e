"""``regime status``: the 24 driver states, the market summary, the beat's heartbeat."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from regime_tasks.cli.levers import _load_known_entries, _print_after_now, _short_bar, parse_now
from regime_tasks.cli.options import add_book, add_json, add_now, book_or_default
from regime_tasks.cli.render import STATE_LEGEND, make_console, print_json, signed, state_text


def beat_heartbeat(now: dt.datetime) -> dict[str, Any]:
    """The beat's last heartbeat (``regime.beat.heartbeat`` writes it every ``REGIME_BEAT_HEARTBEAT_SECS``)."""
    from regime_tasks.runtime import get_runtime
    from regime_tasks.store import meta

    beat = meta.get_meta(get_runtime().engine, "beat:heartbeat")
    if not beat or not beat.get("at"):
        return {"at": None, "age_secs": None, "count": 0}
    at = dt.datetime.fromisoformat(str(beat["at"]).replace("Z", "+00:00"))
    return {"at": beat["at"], "age_secs": round((now - at).total_seconds(), 1), "count": beat.get("count", 0)}


def status_report(book: str, now: dt.datetime | None) -> dict[str, Any]:
    """The 24 driver rows and the market summary (D2), as ``compute_levers()`` sees them at ``now``."""
    from regime_tasks.cli.pipeline import regime_table
    from regime_tasks.core.levers import entry_age_bars, is_stale, market_summary, regime_book_id
    from regime_tasks.core.timeframes import iso

    entries, source, later, now = _load_known_entries(book, now)
    summary = market_summary(entries, now=now)
    summary.pop("contributions", None)
    rows = regime_table(regime_book_id(book), now)
    # State, deltas, age and staleness come from the entries the levers read, judged by the levers' own rule
    # (bars since the bar closed, stale beyond 3), so `status` and `levers` cannot disagree about a driver.
    for row in rows:
        entry = entries.get((row["driver"], row["timeframe"]))
        if entry is None:  # none stored, or its bar closes after `now`: nothing known at `now`
            row.update(
                state="missing",
                warming_up=None,
                prev_state=None,
                flags=[],
                transition=None,
                delta_a_raw=None,
                delta_e_raw=None,
                bar_ts=None,
                age_bars=None,
                stale=True,
            )
            continue
        age = entry_age_bars(entry, row["timeframe"], now)
        if entry.get("state") and entry.get("state") != "warming_up":
            row["warming_up"] = None
        row.update(
            state=entry.get("state") or row["state"],
            delta_a_raw=entry.get("delta_a_raw"),
            delta_e_raw=entry.get("delta_e_raw"),
            bar_ts=entry.get("bar_ts"),
            age_bars=None if age is None else round(age, 2),
            stale=is_stale(entry, row["timeframe"], now),
        )
    return {
        "book_id": book,
        "regime_book_id": regime_book_id(book),
        "now": iso(now),
        "source": source,
        "drivers": rows,
        "closes_after_now": later,
        "market_summary": summary,
        "beat_heartbeat": beat_heartbeat(now),
    }


def print_status(rep: dict[str, Any]) -> None:
    """The driver table and the market summary line, for humans."""
    from rich import box
    from rich.table import Table

    console = make_console()
    t = Table(
        title=f"book {rep['book_id']} (drivers of {rep['regime_book_id']}) at {rep['now']} (from {rep['source']})",
        box=box.SIMPLE_HEAD,
    )
    for col in ("driver", "tf", "state", "flags", "ΔA", "ΔE", "bar (open, UTC)", "age (bars since close)", "stale"):
        t.add_column(col, no_wrap=True)
    for r in rep["drivers"]:
        t.add_row(
            r["driver"],
            r["timeframe"],
            state_text(r),
            ",".join(r["flags"]),
            "" if r["delta_a_raw"] is None else signed(r["delta_a_raw"], 2),
            "" if r["delta_e_raw"] is None else signed(r["delta_e_raw"], 2),
            _short_bar(r["bar_ts"]),
            "" if r["age_bars"] is None else f"{r['age_bars']:.2f}",
            "yes" if r["stale"] else "",
        )
    console.print(t)
    s = rep["market_summary"]
    console.print(
        f"market summary: A={s['A_value']:.3f} E={s['E_value']:.3f} size={s['position_size_frac']:.3f}"
        + (" DEGRADED" if s["degraded"] else "")
        + f"; stale/missing: {', '.join(s['stale'] + s['missing']) or 'none'}"
    )
    _print_after_now(console, rep.get("closes_after_now") or [])
    b = rep["beat_heartbeat"]
    console.print(
        "beat heartbeat: none recorded (no beat has run against this database)"
        if b["at"] is None
        else f"beat heartbeat: {_age_text(b['age_secs'])} (at {b['at']}, {b['count']} heartbeats)"
    )
    console.print(f"states: {STATE_LEGEND}", soft_wrap=True)


def _age_text(secs: float) -> str:
    if secs < 0:
        return f"{-secs:.0f} s after --now"
    if secs < 120:
        return f"{secs:.0f} s ago"
    return f"{secs / 60:.0f} min ago" if secs < 7200 else f"{secs / 3600:.1f} h ago"


# --- the commands ------------------------------------------------------------------------------------
def _cmd_status(args: argparse.Namespace) -> int:
    rep = status_report(book_or_default(args.book), parse_now(args.now))
    print_json(rep) if args.json else print_status(rep)
    return 0


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the 24 driver states and the market summary")
    add_book(p)
    add_now(p)
    add_json(p)
    p.set_defaults(handler=_cmd_status)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``status``."""
    _add_status(sub)
