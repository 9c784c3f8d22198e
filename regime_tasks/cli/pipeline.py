"""What the ``bootstrap``, ``tick`` and ``demo`` commands do, with progress and printing.

Library code logs; this module is the user-facing edge and prints (rich tables on a terminal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from regime_tasks.cli.options import BUCKET_CHOICES, EXEC_TFS, REGIME_TFS, add_book, add_json, count, utc_time
from regime_tasks.cli.render import print_json
from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.errors import RegimeError

if TYPE_CHECKING:  # the pipeline, pandas and the runtime load when a command runs, not when the parser is built
    import pandas as pd

    from regime_tasks import pipeline

log = logging.getLogger(__name__)


@contextmanager
def progress_reporter(title: str) -> Iterator[pipeline.Progress]:
    """A rich progress bar on a terminal, plain log lines otherwise."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(title, total=None)

            def report(phase: str, done: int, total: int) -> None:
                bar.update(task, description=f"{title}: {phase}", completed=done, total=total)

            yield report
    else:
        last_phase = [""]

        def report(phase: str, done: int, total: int) -> None:
            head = phase.split(" ")[0]
            if head != last_phase[0] or done == total:
                log.info("%s: %s (%d/%d)", title, phase, done, total)
                last_phase[0] = head

        yield report


def run_bootstrap(*, book_id: str | None = None, now: str | dt.datetime | None = None) -> pipeline.BootstrapReport:
    """Run the bootstrap in this process with progress output."""
    from regime_tasks import pipeline
    from regime_tasks.core import timeframes
    from regime_tasks.runtime import get_runtime

    rt = get_runtime()
    clock = timeframes.parse_ts(now).to_pydatetime() if now is not None else None
    with progress_reporter("bootstrap") as progress:
        return pipeline.bootstrap(rt, book_id=book_id or rt.book_id, now=clock, progress=progress)


def print_bootstrap_report(report: pipeline.BootstrapReport) -> None:
    """Readable summary: which drivers are ready, warming up or missing."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"bootstrap of book {report.book_id} ({report.seconds:.1f} s)")
    table.add_column("driver")
    for tf in REGIME_TIMEFRAMES:
        table.add_column(tf)
    colours = {"ready": "green", "warming_up": "yellow", "missing": "red", "error": "red"}
    for driver in DRIVERS:
        cells = []
        for tf in REGIME_TIMEFRAMES:
            st = report.status.get(driver, {}).get(tf, "missing")
            cells.append(f"[{colours.get(st, 'white')}]{st}[/] ({report.bars.get(driver, {}).get(tf, 0)} bars)")
        table.add_row(driver, *cells)
    console = Console()
    console.print(table)
    for err in report.errors:
        console.print(f"[red]error[/]: {err}")
    if report.hint:
        console.print(f"[yellow]note[/]: {report.hint}")
    if report.missing_required:
        console.print(f"[red]required drivers missing:[/] {', '.join(report.missing_required)}")
    else:
        console.print("[green]bootstrap complete[/]: required drivers BTC and ALT are present")


def processed_bar(rt: Any, book_id: str, timeframe: str, driver: str = "BTC") -> pd.Timestamp | None:
    """Open time of the last bar the engine stepped for ``driver`` × ``timeframe`` (None before any)."""
    from regime_tasks.core import timeframes
    from regime_tasks.store.positions import read_driver_features

    features = read_driver_features(rt.engine, book_id, keys=("uptrend_engine_v4",)).get((driver, timeframe), {})
    bar_ts = (features.get("uptrend_engine_v4") or {}).get("bar_ts")
    return timeframes.parse_ts(bar_ts) if bar_ts else None


@contextmanager
def _refusal_reported_here() -> Iterator[None]:
    """Drop the in-process worker's log of a refused tick: this command reports the refusal as its one error line
    (the log stays for workers, where beat's refused ticks are seen)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("tick refused")

    tasks_log = logging.getLogger("regime_tasks.tasks")
    tasks_log.addFilter(keep)
    try:
        yield
    finally:
        tasks_log.removeFilter(keep)


def run_tick_command(timeframe: str, *, until: str | None, book_id: str | None, wait: bool) -> dict[str, Any]:
    """Send the ``regime.tick`` task beat sends (embedded: to an in-process worker) and optionally wait for it.

    The task refuses before a bootstrap of the book completed; waiting, that is a :class:`NotBootstrappedError`.
    """
    from regime_tasks import pipeline, stages
    from regime_tasks.core import timeframes
    from regime_tasks.embedded import in_process_worker, run_tick
    from regime_tasks.runtime import get_runtime

    bar = timeframes.parse_ts(until) if until else timeframes.last_closed_bar(timeframe, pipeline.utcnow())
    timeframes.check_closed(timeframe, bar, pipeline.utcnow())  # a bad --until fails here, before a worker starts
    rt = get_runtime()
    book = book_id or rt.book_id
    before = processed_bar(rt, book, timeframe)
    out: dict[str, Any] = {"timeframe": timeframe, "until": timeframes.iso(bar)}
    if rt.settings.embedded:
        with in_process_worker(), _refusal_reported_here():
            out.update(run_tick(timeframe, timeframes.iso(bar), book))
    else:
        sent = pipeline.send_tick(timeframe, timeframes.iso(bar), book)
        if not wait:
            return {**out, "id": sent.id}
        out.update(pipeline.await_tick(sent, lambda r, secs: r.get(timeout=secs), 600.0))
    # a tick that stepped no new bar says so: the source may have ended, or the bar is not closed yet
    after = processed_bar(rt, book, timeframe)
    out["new_bar"] = after is not None and (before is None or after > before)
    out["last_bar"] = timeframes.iso(after)
    if not out["new_bar"]:
        out["message"] = stages.no_new_bar_message(rt, timeframe, after)
    return out


# --- demo --------------------------------------------------------------------------------------------
DEMO_EXEC_TIMEFRAMES = EXEC_TFS
DEMO_BUCKETS = BUCKET_CHOICES


def regime_table(book_id: str, now: dt.datetime) -> list[dict[str, Any]]:
    """The 24 driver rows: state, flags, deltas, bar time, age in bars, stale, simulated input."""
    from regime_tasks.core.levers import entry_age_bars, is_stale
    from regime_tasks.runtime import get_runtime
    from regime_tasks.store.positions import read_driver_features

    rt = get_runtime()
    feats = read_driver_features(rt.engine, book_id, keys=("uptrend_engine_v4", "regime_engine_v4"))
    simulated = rt.market.simulated_series()
    caps_source = bucket_caps_source(rt)
    rows = []
    for driver in DRIVERS:
        for tf in REGIME_TIMEFRAMES:
            f = feats.get((driver, tf), {})
            eng, reg = f.get("uptrend_engine_v4") or {}, f.get("regime_engine_v4") or {}
            bar_ts = reg.get("bar_ts") or eng.get("bar_ts")
            # the levers' own rule (bars since the bar closed; stale above 3), so the table and A/E agree
            age = entry_age_bars(reg or eng, tf, now) if bar_ts else None
            flags = [name for name, on in (reg.get("flags") or {}).items() if on]
            for extra in ("emergency_exit", "exit_position", "reclaimed_ema333"):
                if eng.get(extra):
                    flags.append(extra)
            rows.append(
                {
                    "driver": driver,
                    "timeframe": tf,
                    "state": reg.get("state") or eng.get("state") or "missing",
                    "prev_state": reg.get("prev_state"),
                    "flags": flags,
                    "transition": reg.get("transition"),
                    "delta_a_raw": reg.get("delta_a_raw"),
                    "delta_e_raw": reg.get("delta_e_raw"),
                    "bar_ts": bar_ts,
                    "age_bars": age,
                    "stale": is_stale(reg or eng, tf, now),
                    "simulated": (driver, tf) in simulated,
                    # why a driver is warming up: the engine's bars so far and the bars a state needs
                    "warming_up": ((eng.get("diagnostics") or {}).get("warming_up") or None)
                    if (reg.get("state") or eng.get("state")) == "warming_up"
                    else None,
                    **(bucket_last_bar(rt, driver, tf, caps_source) if driver in DEMO_BUCKETS else {}),
                }
            )
    return rows


def bucket_caps_source(rt: Any) -> str:
    """Where the buckets' market caps come from (D16: say so wherever caps are shown)."""
    from regime_tasks.store.tokens import cap_sources

    labels = sorted(set(cap_sources(rt.engine).values()))
    return "; ".join(labels) if labels else "host tokens table (one cap per token, not point in time)"


def bucket_last_bar(rt: Any, driver: str, tf: str, caps_source: str) -> dict[str, Any]:
    """How many members formed the bucket's last bar, and the source of its caps."""
    import pandas as pd

    from regime_tasks.store import bars as store_bars

    last = store_bars.read_bars(rt.engine, "regime", {"driver": driver}, tf, limit=1)
    members = None
    if not last.empty and "constituents" in last.columns and not pd.isna(last["constituents"].iloc[-1]):
        members = int(last["constituents"].iloc[-1])
    return {"members_last_bar": members, "caps_source": caps_source}


def levers_grid(book_id: str, now: dt.datetime) -> list[dict[str, Any]]:
    """A, E and size for every bucket × execution timeframe, read through the public compute_levers()."""
    from regime_tasks.api import compute_levers

    out = []
    for bucket in DEMO_BUCKETS:
        for exec_tf in DEMO_EXEC_TIMEFRAMES:
            res = compute_levers({}, exec_tf, bucket, book_id=book_id, now=now)
            diag = res.get("diagnostics", {})
            out.append(
                {
                    "bucket": bucket,
                    "execution_timeframe": exec_tf,
                    "A_value": res["A_value"],
                    "E_value": res["E_value"],
                    "position_size_frac": res["position_size_frac"],
                    "A_clamped": not 0.0 <= diag["clamped"]["A_before"] <= 1.0,
                    "E_clamped": not 0.0 <= diag["clamped"]["E_before"] <= 1.0,
                    "degraded": bool(diag.get("degraded")),
                    "stale_or_missing": len(diag.get("stale", [])) + len(diag.get("missing", [])),
                }
            )
    return out


def _demo_environment() -> None:
    """The demo always runs embedded on a fresh SQLite file of its own, on the file source."""
    import os

    from regime_tasks.config import get_settings
    from regime_tasks.runtime import reset_runtime

    data_dir = get_settings().data_dir
    demo_db = (data_dir / "demo.db").resolve()
    for suffix in ("", "-wal", "-shm"):
        p = demo_db.with_name(demo_db.name + suffix)
        if p.exists():
            p.unlink()
    os.environ.update(
        {
            "REGIME_DATABASE_URL": f"sqlite:///{demo_db}",
            "REGIME_BROKER_URL": "memory://",
            "REGIME_RESULT_BACKEND": "cache+memory://",
            "REGIME_REDIS_URL": "",
            "REGIME_SOURCE": "file",
        }
    )
    reset_runtime()


def run_demo(*, as_json: bool, minutes: int) -> int:
    """Bootstrap on bundled data, run live-like ticks through the Celery graph, print the regime and levers."""
    import time

    from regime_tasks.core import timeframes
    from regime_tasks.embedded import in_process_worker, run_tick
    from regime_tasks.errors import ConfigError
    from regime_tasks.runtime import get_runtime

    if minutes < 0:
        raise ConfigError("--minutes must be ≥ 0")
    t0 = time.perf_counter()
    _demo_environment()
    rt = get_runtime()
    book = rt.book_id
    latest = rt.market.latest("1m")  # open time of the newest bundled 1m bar
    if latest is None:
        raise ConfigError(f"no bundled 1m BTC bars under {rt.settings.files_dir}")
    end = latest + timeframes.bar_delta("1m")  # the moment that bar closed: the demo's "now"
    boot_now = end - minutes * timeframes.bar_delta("1m")
    report = run_bootstrap(book_id=book, now=boot_now.to_pydatetime())
    if not report.ok:
        print_bootstrap_report(report)
        raise ConfigError("bootstrap failed: " + ", ".join(report.missing_required))
    ticks = []
    with in_process_worker():
        for k in range(1, minutes + 1):
            clock = boot_now + k * timeframes.bar_delta("1m")
            bar = timeframes.last_closed_bar("1m", clock)
            ticks.append({"timeframe": "1m", "until": timeframes.iso(bar), **run_tick("1m", timeframes.iso(bar), book)})
        for tf in ("1h", "1d"):
            bar = timeframes.last_closed_bar(tf, end)
            ticks.append({"timeframe": tf, "until": timeframes.iso(bar), **run_tick(tf, timeframes.iso(bar), book)})
    now = end.to_pydatetime()
    from regime_tasks.api import invalidate_snapshots

    invalidate_snapshots()
    table = regime_table(book, now)
    grid = levers_grid(book, now)
    from regime_tasks.api import load_entries
    from regime_tasks.core.levers import market_summary

    entries, _ = load_entries(book)
    summary = market_summary(entries, now=now)
    summary.pop("contributions", None)
    result = {
        "book_id": book,
        "now": timeframes.iso(now),
        "data": "bundled real data (regime_tasks/data/MANIFEST.json); bucket caps derived as price × CoinGecko "
        "circulating supply of 2025-02-14 (Data provided by CoinGecko); BTC.d/USDT.d below 1d derived from "
        "prices × supplies, calibrated to the published daily close of the previous day (D16)",
        "bootstrap": report.as_dict(),
        "ticks": [{"timeframe": t["timeframe"], "until": t["until"]} for t in ticks],
        "drivers": table,
        "market_summary": summary,
        "levers": grid,
        "database": rt.settings.effective_database_url,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if as_json:
        import json

        print(json.dumps(result, indent=2, default=str))
    else:
        print_demo(result)
    return 0


def print_demo(result: dict[str, Any]) -> None:
    """Readable demo output: driver table, market summary, levers grid."""
    from rich.table import Table

    from regime_tasks.cli.render import make_console

    console = make_console()
    console.print(
        f"[bold]regime-engine demo[/] — book {result['book_id']}, now {result['now']} "
        f"(bootstrap + {len(result['ticks'])} ticks through the Celery graph, {result['seconds']} s)"
    )
    from regime_tasks.cli.render import STATE_LEGEND, signed, state_text

    t = Table(title="24 driver series (state, flags, ΔA/ΔE raw, last bar)")
    for col in (
        "driver",
        "tf",
        "state",
        "prev",
        "flags",
        "ΔA",
        "ΔE",
        "bar (open, UTC)",
        "age (bars since close)",
        "members",
        "data",
    ):
        t.add_column(col)
    colours = {"S0": "red", "S1": "cyan", "S2": "yellow", "S3": "green", "S4": "white", "warming_up": "dim"}
    for r in result["drivers"]:
        st = r["state"]
        t.add_row(
            r["driver"],
            r["timeframe"],
            f"[{colours.get(st, 'white')}]{state_text(r)}[/]",
            str(r["prev_state"] or ""),
            ",".join(r["flags"]) + (f" {r['transition']}" if r["transition"] else ""),
            "" if r["delta_a_raw"] is None else signed(r["delta_a_raw"], 2),
            "" if r["delta_e_raw"] is None else signed(r["delta_e_raw"], 2),
            r["bar_ts"] or "",
            "" if r["age_bars"] is None else f"{r['age_bars']:.1f}" + (" stale" if r["stale"] else ""),
            "" if r.get("members_last_bar") is None else str(r["members_last_bar"]),
            "[magenta]simulated[/]" if r["simulated"] else "real",
        )
    console.print(t)
    console.print(f"states: {STATE_LEGEND}", soft_wrap=True)
    s = result["market_summary"]
    console.print(
        f"[bold]market summary[/] (fixed timeframe weights 1d 0.50 / 1h 0.40 / 1m 0.10): "
        f"A={s['A_value']:.3f} E={s['E_value']:.3f} size={s['position_size_frac']:.3f}"
        + (" [red]DEGRADED[/]" if s["degraded"] else "")
    )
    g = Table(title="levers per bucket × execution timeframe (A / E / size; * = clamped to [0, 1])")
    g.add_column("bucket")
    for tf in DEMO_EXEC_TIMEFRAMES:
        g.add_column(tf)
    for bucket in DEMO_BUCKETS:
        cells = [
            f"{x['A_value']:.2f}{'*' if x.get('A_clamped') else ''} / {x['E_value']:.2f}"
            f"{'*' if x.get('E_clamped') else ''} / {x['position_size_frac']:.2f}"
            for x in result["levers"]
            if x["bucket"] == bucket
        ]
        g.add_row(bucket, *cells)
    console.print(g)
    caps = next((r["caps_source"] for r in result["drivers"] if r.get("caps_source")), None)
    console.print(
        f"Bucket market caps: {caps} (a later supply applied to earlier days: an approximation). "
        "members = constituents that traded in the bucket's last bar. Data provided by CoinGecko; "
        "Hyperliquid candles GPL-3.0 (regime_tasks/data/LICENSE-GPL-3.0.txt)."
    )
    db = result.get("database")
    if db:
        console.print(f"The demo keeps its own database; to look at it again: REGIME_DATABASE_URL={db} regime status")


# --- the commands ------------------------------------------------------------------------------------
def _cmd_bootstrap(args: argparse.Namespace) -> int:

    report = run_bootstrap(book_id=args.book, now=args.now)
    if args.json:
        print_json(report.as_dict())
    else:
        print_bootstrap_report(report)
    if not report.ok:  # the report is printed (the worker's bootstrap task reads it from stdout), then exit 2
        hint = f" — {report.hint}" if report.hint else ""
        raise RegimeError("required drivers missing after bootstrap: " + ", ".join(report.missing_required) + hint)
    return 0


def _cmd_tick(args: argparse.Namespace) -> int:

    result = run_tick_command(args.timeframe, until=args.until, book_id=args.book, wait=not args.no_wait)
    if args.json:
        print_json(result)
    else:
        print(json.dumps(result, default=str, ensure_ascii=False))
        if result.get("message"):  # a tick that stepped nothing says so on its own line
            print(f"tick {args.timeframe}: {result['message']}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:

    return run_demo(as_json=args.json, minutes=args.minutes)


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bootstrap", help="create driver rows, backfill, replay history, fill the cache (plan §12)")
    add_book(p)
    p.add_argument(
        "--now", type=utc_time, default=None, help="pretend the time is this ISO-8601 UTC instant (file source)"
    )
    add_json(p, "machine-readable report")
    p.set_defaults(handler=_cmd_bootstrap)

    p = sub.add_parser("tick", help="run one timeframe tick through Celery (what beat triggers)")
    p.add_argument("timeframe", choices=REGIME_TFS)
    p.add_argument(
        "--until", type=utc_time, default=None, help="open time of the last closed bar (default: by the clock)"
    )
    add_book(p)
    p.add_argument("--no-wait", action="store_true", help="send and return without waiting for the result")
    add_json(p)
    p.set_defaults(handler=_cmd_tick)

    p = sub.add_parser(
        "demo", help="embedded end-to-end run on bundled data: bootstrap, live-like ticks, regime table, A/E"
    )
    p.add_argument("--minutes", type=count(0), default=5, help="1m ticks to run after the bootstrap (default 5)")
    add_json(p)
    p.set_defaults(handler=_cmd_demo)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bootstrap``, ``tick`` and ``demo``."""
    _add_pipeline(sub)
