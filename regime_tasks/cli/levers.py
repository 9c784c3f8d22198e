"""``regime levers`` and ``regime status``: what a trader checks by hand."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from regime_tasks.cli.options import BUCKET_CHOICES, EXEC_TFS, add_book, add_json, add_now, book_or_default
from regime_tasks.cli.render import STATE_LEGEND, make_console, print_json, signed
from regime_tasks.errors import RegimeUnavailable, UnknownInputError


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


def parse_now(value: str | None) -> dt.datetime | None:
    """``--now`` as an aware UTC datetime; None without one: the pipeline's clock (the wall clock, or the replay
    clock), read when the entries have been read (see ``_load_known_entries``)."""
    if value is None:
        return None
    from regime_tasks.core.timeframes import parse_ts

    return parse_ts(value).to_pydatetime()


def entries_known_at(
    entries: dict[tuple[str, str], dict[str, Any]], now: dt.datetime
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[str]]:
    """The entries whose bar had closed by ``now`` ("as known at now"), and the ``driver|tf`` of the others.

    The store keeps each driver's latest bar only, so a driver whose latest bar closes after ``now`` has no entry
    known at ``now``: it is missing, not fresh with a negative age.
    """
    from regime_tasks.core.levers import entry_age_bars

    known, later = {}, []
    for (driver, tf), entry in entries.items():
        age = entry_age_bars(entry, tf, now)
        if age is not None and age < 0:
            later.append(f"{driver}|{tf}")
        else:
            known[(driver, tf)] = entry
    return known, later


def _load_known_entries(
    book: str, now: dt.datetime | None
) -> tuple[dict[tuple[str, str], dict[str, Any]], str, list[str], dt.datetime]:
    """The book's entries as known at ``now`` (and that ``now``); refuses, naming the command to run, when the
    store has none. Without ``--now`` the clock is read after the entries: a bar published while this command
    started is known, not "after now" (on the replay clock at speed 20, a 2 s start is 40 s of data)."""
    from regime_tasks.api import load_entries
    from regime_tasks.core.levers import regime_book_id
    from regime_tasks.sources.clock import now as clock_now

    try:
        entries, source = load_entries(book)
    except RegimeUnavailable as exc:
        text = str(exc)
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            # a database without the schema (SQLite creates an empty file on first connect): say what to run
            raise RegimeUnavailable(
                f"{_database_label()} has no regime tables; run `regime db init` and `regime bootstrap`"
                + _hint(bootstrap=False)
            ) from exc
        raise RegimeUnavailable(f"{text}{_hint(bootstrap='regime bootstrap' not in text)}") from exc
    if not entries:
        raise RegimeUnavailable(f"no regime state for book {regime_book_id(book)!r} in {_database_label()}" + _hint())
    now = clock_now() if now is None else now
    known, later = entries_known_at(entries, now)
    return known, source, later, now


def _database_label() -> str:
    from regime_tasks.config import get_settings

    url = get_settings().effective_database_url
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else "the database"


def _hint(*, bootstrap: bool = True) -> str:
    """What to run next: ``regime bootstrap``, or point at the demo's own database if there is one."""
    from regime_tasks.config import get_settings

    demo = (get_settings().data_dir / "demo.db").resolve()
    if demo.exists():
        return f"; `regime demo` keeps its own database: REGIME_DATABASE_URL=sqlite:///{demo} regime status" + (
            "; or run `regime bootstrap`" if bootstrap else ""
        )
    return "; run `regime bootstrap` first (or `regime demo` for a self-contained run)" if bootstrap else ""


def levers_report(
    bucket: str | None, exec_tf: str, book: str, intent: dict[str, float], now: dt.datetime | None
) -> dict:
    """``compute_levers()`` for a hypothetical position with these intent metrics, from the entries known at ``now``.

    Entries whose bar closes after ``now`` count as missing and are listed in ``diagnostics.closes_after_now``.
    """
    from regime_tasks.core.levers import check_inputs, compute_levers_from_entries, intent_deltas, regime_book_id

    check_inputs(exec_tf, bucket)
    intent_deltas({"intent_metrics": intent})  # a non-finite --intent fails before any I/O
    known, source, later, now = _load_known_entries(book, now)
    res = compute_levers_from_entries(known, {"intent_metrics": intent}, exec_tf, bucket, now=now)
    res["diagnostics"].update(source=source, regime_book_id=regime_book_id(book), closes_after_now=later)
    return res


def _short_bar(bar_ts: str | None) -> str:
    """``2025-07-26T04:00:00Z`` → ``07-26 04:00`` (the year is never in doubt for a live driver)."""
    return f"{bar_ts[5:10]} {bar_ts[11:16]}" if bar_ts and len(bar_ts) >= 16 else (bar_ts or "")


def print_levers(res: dict[str, Any]) -> None:
    """A, E, size, the contribution table and the intent/clamp line, for humans."""
    from rich import box
    from rich.table import Table

    d = res["diagnostics"]
    console = make_console()
    console.print(
        f"[bold]A[/] = {res['A_value']:.4f}{_clamp_mark(d['clamped']['A_before'])}   "
        f"[bold]E[/] = {res['E_value']:.4f}{_clamp_mark(d['clamped']['E_before'])}   "
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
            signed(c["delta_a_raw"], 2),
            signed(c["delta_e_raw"], 2),
            f"{c['driver_weight']:+.1f}",
            f"{c['tf_multiplier']:.2f}",
            signed(c["contribution_a"], 4),
            signed(c["contribution_e"], 4),
        )
    console.print(t)
    _print_after_now(console, d.get("closes_after_now") or [])
    console.print(f"states: {STATE_LEGEND}", soft_wrap=True)
    i = d["intent"]
    console.print(
        f"intent: ΔA {i['delta_a_raw']:+.3f} → {i['delta_a']:+.3f}, ΔE {i['delta_e_raw']:+.3f} → "
        f"{i['delta_e']:+.3f} (cap ±0.4); before clamp A {d['clamped']['A_before']:.4f}, "
        f"E {d['clamped']['E_before']:.4f}"
    )


def _clamp_mark(before: float) -> str:
    """`` (clamped from 1.23)`` when the value before the [0, 1] clamp was outside it."""
    return f" [yellow](clamped from {before:.4f})[/]" if before < 0 or before > 1 else ""


def _print_after_now(console: Any, later: list[str]) -> None:
    if later:
        console.print(
            f"[yellow]not known at --now[/] (latest bar closes after it; counted missing): {', '.join(later)}"
        )


# --- the command ------------------------------------------------------------------------------------
def _cmd_levers(args: argparse.Namespace) -> int:
    book = book_or_default(args.book)
    res = levers_report(args.bucket, args.exec_tf, book, parse_intent(args.intent), parse_now(args.now))
    print_json(res) if args.json else print_levers(res)
    return 0


def _add_levers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("levers", help="A, E and size for one bucket and execution timeframe, with contributions")
    p.add_argument("--bucket", choices=BUCKET_CHOICES, default=None)
    p.add_argument("--exec-tf", required=True, help=f"execution timeframe: {' '.join(EXEC_TFS)}")
    add_book(p)
    p.add_argument("--intent", action="append", default=[], help="intent metric, e.g. hi_buy=1 (repeatable)")
    add_now(p)
    add_json(p)
    p.set_defaults(handler=_cmd_levers)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``levers``."""
    _add_levers(sub)
