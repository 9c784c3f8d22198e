"""``regime stream``: Hyperliquid's closed 1m candles into the store as they close (plan §5: Hyperliquid live).

The 1m tick's collect step fetches what is missing over REST anyway; a running stream means those bars are
already stored when the tick starts, so the tick makes no Hyperliquid call for them, and the stream's own REST
catch-up after a dropped websocket (``HyperliquidCandleStream``) keeps the series without gaps. Only the coins
whose live source is Hyperliquid are streamed (HYPE): BTC, ETH, SOL and BNB come from Binance, and one series
must not mix two venues' prices.

Writes are the same idempotent upserts as the collect step's (``majors`` table, key ``token_contract``), so a
bar written by both is written once.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from regime_tasks.cli.options import seconds
from regime_tasks.cli.render import print_json
from regime_tasks.logs import kv

if TYPE_CHECKING:  # pandas and the store load when the command runs, not when the parser is built
    from regime_tasks.runtime import Runtime

log = logging.getLogger(__name__)

SOURCE = "hyperliquid-ws"


def hyperliquid_coins() -> tuple[str, ...]:
    """The majors whose live source is Hyperliquid."""
    from regime_tasks.core.constants import MAJORS
    from regime_tasks.market import LiveMarket

    return tuple(m for m in MAJORS if m not in LiveMarket.BINANCE_SYMBOLS)


def run_stream(
    rt: Runtime,
    *,
    coins: tuple[str, ...] | None = None,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    stream_factory: Any = None,
    members: bool = False,
) -> dict[str, Any]:
    """Stream until ``stop`` is set, ``seconds`` have passed or Ctrl-C; returns bars written per coin.

    ``stream_factory(coins, on_closed_bar, settings)`` builds the stream (default ``HyperliquidCandleStream``;
    tests pass one with a pinned clock). ``members``: today's bucket members of the lowcap universe instead
    (``stages.member_stream_targets``), written to ``lowcap_price_data_ohlc``.
    """
    import pandas as pd

    from regime_tasks.core.timeframes import iso
    from regime_tasks.sources.hyperliquid import HyperliquidCandleStream
    from regime_tasks.store import bars as store_bars

    targets: dict[str, dict[str, str]] = {}
    if members:
        from regime_tasks.stages import member_stream_targets

        targets = member_stream_targets(rt)
        coins = tuple(c for c in coins if c in targets) if coins else tuple(targets)
    coins = coins or hyperliquid_coins()
    written = dict.fromkeys(coins, 0)
    lock = threading.Lock()

    def on_closed_bar(coin: str, frame: pd.DataFrame) -> None:
        if members:
            n = store_bars.upsert_bars(rt.engine, "lowcap", targets[coin], "1m", frame, source=SOURCE)
        else:
            n = store_bars.upsert_bars(rt.engine, "majors", {"token_contract": coin}, "1m", frame, source=SOURCE)
        with lock:
            written[coin] += n
        log.info("streamed %s", kv(coin=coin, bars=n, last=iso(frame.index[-1])))

    factory = stream_factory or (lambda c, cb, s: HyperliquidCandleStream(list(c), cb, settings=s))
    stream = factory(coins, on_closed_bar, rt.settings)
    stop = stop or threading.Event()
    deadline = None if seconds is None else time.monotonic() + seconds
    stream.start()
    log.info("stream started %s", kv(coins=",".join(coins), source=SOURCE))
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.2)
    except KeyboardInterrupt:
        log.info("stream interrupted")
    finally:
        stream.stop()
    return {"coins": list(coins), "written": written, "reconnects": getattr(stream, "reconnects", 0)}


__all__ = ["hyperliquid_coins", "run_stream"]


# --- the command ------------------------------------------------------------------------------------
def _cmd_stream(args: argparse.Namespace) -> int:
    from regime_tasks.config import get_settings
    from regime_tasks.runtime import get_runtime

    if get_settings().source != "live":
        from regime_tasks.errors import ConfigError

        raise ConfigError("stream needs REGIME_SOURCE=live (it reads Hyperliquid's websocket)")
    rt = get_runtime()
    coins = tuple(c.strip().upper() for c in args.coins.split(",")) if args.coins else None
    result = run_stream(rt, coins=coins, seconds=args.seconds, members=args.members)
    print_json(result)
    return 0


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="write Hyperliquid's closed 1m candles (HYPE) to the store as they close")
    p.add_argument("--coins", default=None, help="comma-separated coins (default: the majors sourced from Hyperliquid)")
    p.add_argument("--seconds", type=seconds, default=None, help="stop after this long (default: until Ctrl-C)")
    p.add_argument(
        "--members", action="store_true", help="stream today's bucket members of the lowcap universe instead (D16)"
    )
    p.set_defaults(handler=_cmd_stream)


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``stream``."""
    _add_stream(sub)
