"""``regime levers`` and ``regime status``: what a trader checks by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from regime_tasks.errors import UnknownInputError


def parse_intent(items: list[str]) -> dict[str, float]:
    """``hi_buy=1 sell=0.5`` → intent metrics."""
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UnknownInputError(f"--intent expects name=number, got {item!r}") from None
    return out


def parse_now(value: str | None) -> dt.datetime:
    if value is None:
        return dt.datetime.now(dt.UTC)
    from regime_tasks.steps import parse_ts

    return parse_ts(value).to_pydatetime()


def levers_report(bucket: str | None, exec_tf: str, book: str, intent: dict[str, float], now: dt.datetime) -> dict:
    from regime_tasks.levers import compute_levers

    return compute_levers({"intent_metrics": intent}, exec_tf, bucket, book_id=book, now=now)


def print_levers(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    d = res["diagnostics"]
    console = Console()
    console.print(
        f"[bold]A[/] = {res['A_value']:.4f}   [bold]E[/] = {res['E_value']:.4f}   "
        f"[bold]size[/] = {res['position_size_frac']:.4f}"
        + ("   [red]DEGRADED (BTC or ALT missing/stale)[/]" if d["degraded"] else "")
    )
    t = Table(
        title=f"contributions (exec tf {d['execution_timeframe']}, bucket {d['bucket']}, source {d.get('source')})"
    )
    for col in ("driver", "tf", "status", "state", "bar", "ΔA raw", "ΔE raw", "weight", "mult", "ΔA", "ΔE"):
        t.add_column(col)
    for c in d["contributions"]:
        t.add_row(
            c["driver"],
            c["timeframe"],
            c["status"],
            str(c["state"] or ""),
            str(c["bar_ts"] or ""),
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
    from regime_tasks.core.levers import market_summary
    from regime_tasks.levers import load_entries
    from regime_tasks.runner import regime_table

    entries, source = load_entries(book)
    summary = market_summary(entries, now=now)
    summary.pop("contributions", None)
    return {
        "book_id": book,
        "now": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": source,
        "drivers": regime_table(book, now),
        "market_summary": summary,
    }


def print_status(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"book {rep['book_id']} at {rep['now']} (from {rep['source']})")
    for col in ("driver", "tf", "state", "flags", "ΔA", "ΔE", "bar (open)", "age (bars)", "stale"):
        t.add_column(col)
    for r in rep["drivers"]:
        t.add_row(
            r["driver"],
            r["timeframe"],
            r["state"],
            ",".join(r["flags"]),
            "" if r["delta_a_raw"] is None else f"{r['delta_a_raw']:+.2f}",
            "" if r["delta_e_raw"] is None else f"{r['delta_e_raw']:+.2f}",
            r["bar_ts"] or "",
            "" if r["age_bars"] is None else str(r["age_bars"]),
            "yes" if r["stale"] else "",
        )
    console.print(t)
    s = rep["market_summary"]
    console.print(
        f"market summary: A={s['A_value']:.3f} E={s['E_value']:.3f} size={s['position_size_frac']:.3f}"
        + (" DEGRADED" if s["degraded"] else "")
        + f"; stale/missing: {len(s['stale']) + len(s['missing'])}"
    )
