"""``regime levers`` and ``regime status``: what a trader checks by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from regime_tasks.errors import UnknownInputError


def parse_intent(items: list[str]) -> dict[str, float]:
    """``hi_buy=1 sell=0.5`` → intent metrics."""
    from regime_tasks.core.constants import INTENT_WEIGHTS_A

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in INTENT_WEIGHTS_A:  # a typo would otherwise be ignored and look like "no intent"
            raise UnknownInputError(f"unknown intent metric {name!r}; expected one of {sorted(INTENT_WEIGHTS_A)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise UnknownInputError(f"--intent expects name=number, got {item!r}") from None
    return out


def parse_now(value: str | None) -> dt.datetime:
    """``--now`` as an aware UTC datetime (default: the wall clock)."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    from regime_tasks.steps import parse_ts

    return parse_ts(value).to_pydatetime()


def levers_report(bucket: str | None, exec_tf: str, book: str, intent: dict[str, float], now: dt.datetime) -> dict:
    """``compute_levers()`` for a hypothetical position with these intent metrics."""
    from regime_tasks.levers import compute_levers

    return compute_levers({"intent_metrics": intent}, exec_tf, bucket, book_id=book, now=now)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: rich would assume 80 columns and elide the numbers
        console = Console(width=160)
    return console


def _short_bar(bar_ts: str | None) -> str:
    """``2025-07-26T04:00:00Z`` → ``07-26 04:00`` (the year is never in doubt for a live driver)."""
    return f"{bar_ts[5:10]} {bar_ts[11:16]}" if bar_ts and len(bar_ts) >= 16 else (bar_ts or "")


def print_levers(res: dict[str, Any]) -> None:
    """A, E, size, the contribution table and the intent/clamp line, for humans."""
    from rich import box
    from rich.table import Table

    d = res["diagnostics"]
    console = _console()
    console.print(
        f"[bold]A[/] = {res['A_value']:.4f}   [bold]E[/] = {res['E_value']:.4f}   "
        f"[bold]size[/] = {res['position_size_frac']:.4f}"
        + ("   [red]DEGRADED (BTC or ALT missing/stale)[/]" if d["degraded"] else "")
    )
    t = Table(
        title=f"contributions (exec tf {d['execution_timeframe']}, bucket {d['bucket']}, source {d.get('source')})",
        box=box.SIMPLE_HEAD,
    )
    for col in ("driver", "tf", "status", "state", "bar (open)", "ΔA raw", "ΔE raw", "weight", "mult", "ΔA", "ΔE"):
        t.add_column(col, no_wrap=True)
    for c in d["contributions"]:
        t.add_row(
            c["driver"],
            c["timeframe"],
            c["status"],
            str(c["state"] or ""),
            _short_bar(c["bar_ts"]),
            f"{c['delta_a_raw']:+.2f}",
            f"{c['delta_e_raw']:+.2f}",
            f"{c['driver_weight']:+.1f}",
            f"{c['tf_multiplier']:.2f}",
            f"{c['contribution_a']:+.4f}",
            f"{c['contribution_e']:+.4f}",
        )
    console.print(t)
    i = d["intent"]
    console.print(
        f"intent: ΔA {i['delta_a_raw']:+.3f} → {i['delta_a']:+.3f}, ΔE {i['delta_e_raw']:+.3f} → "
        f"{i['delta_e']:+.3f} (cap ±0.4); before clamp A {d['clamped']['A_before']:.4f}, "
        f"E {d['clamped']['E_before']:.4f}"
    )


def status_report(book: str, now: dt.datetime) -> dict[str, Any]:
    """The 24 driver rows and the market summary (D2), as ``compute_levers()`` sees them at ``now``."""
    from regime_tasks.core.levers import entry_age_bars, is_stale, market_summary, regime_book_id
    from regime_tasks.levers import load_entries
    from regime_tasks.runner import regime_table

    entries, source = load_entries(book)
    summary = market_summary(entries, now=now)
    summary.pop("contributions", None)
    rows = regime_table(regime_book_id(book), now)
    # State, deltas, age and staleness come from the entries the levers read, judged by the levers' own rule
    # (bars since the bar closed, stale beyond 3), so `status` and `levers` cannot disagree about a driver.
    for row in rows:
        entry = entries.get((row["driver"], row["timeframe"]))
        if entry is None:
            row.update(age_bars=None, stale=True)
            continue
        age = entry_age_bars(entry, row["timeframe"], now)
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
        "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "drivers": rows,
        "market_summary": summary,
    }


def print_status(rep: dict[str, Any]) -> None:
    """The driver table and the market summary line, for humans."""
    from rich import box
    from rich.table import Table

    console = _console()
    t = Table(
        title=f"book {rep['book_id']} (drivers of {rep['regime_book_id']}) at {rep['now']} (from {rep['source']})",
        box=box.SIMPLE_HEAD,
    )
    for col in ("driver", "tf", "state", "flags", "ΔA", "ΔE", "bar (open)", "age (bars since close)", "stale"):
        t.add_column(col, no_wrap=True)
    for r in rep["drivers"]:
        t.add_row(
            r["driver"],
            r["timeframe"],
            r["state"],
            ",".join(r["flags"]),
            "" if r["delta_a_raw"] is None else f"{r['delta_a_raw']:+.2f}",
            "" if r["delta_e_raw"] is None else f"{r['delta_e_raw']:+.2f}",
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
