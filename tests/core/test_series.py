"""Fill → TA → engine once (core/series.py): gaps laid per D5 or kept, the filled-share check before any TA, and
the same states whichever caller runs a series (``regime engine``'s run_file, ``regime replay``'s replay_series).

Real Binance BTC/USDT daily and hourly candles 2024–2026 (tests/data/README.md).
"""

from __future__ import annotations

import pandas as pd
import pytest

from regime_tasks.cli.engine import run_file
from regime_tasks.core.bars import normalize_bars
from regime_tasks.core.series import lay_bars, run_series
from regime_tasks.core.uptrend import EngineSettings
from regime_tasks.replay import replay_series
from tests.conftest import real_file

BTC_1D = ("binance_spot_2024-2026", "majors", "1d", "BTCUSDT.csv")


@pytest.fixture(scope="module")
def btc_1d() -> pd.DataFrame:
    return normalize_bars(pd.read_csv(real_file(*BTC_1D)), series="BTC", timeframe="1d")


def test_absent_bars_are_laid_flat_on_the_grid_or_kept_out_with_gaps_keep(btc_1d: pd.DataFrame) -> None:
    holes = btc_1d.index[[100, 101, 400]]
    gappy = btc_1d.drop(index=holes)

    filled, n_filled = lay_bars(gappy, "1d")
    assert n_filled == 3 and filled.index.equals(btc_1d.index)
    assert list(filled.index[filled["filled"]]) == list(holes)
    assert filled.loc[holes[1], "close"] == filled.loc[holes[1], "open"] == btc_1d["close"].iloc[99]
    assert filled.loc[holes[1], "volume"] == 0.0

    kept, n_kept = lay_bars(gappy, "1d", "keep")
    assert n_kept == 0 and kept.index.equals(gappy.index) and not kept["filled"].any()


def test_run_series_steps_every_laid_bar_and_lets_the_caller_refuse_before_the_ta(btc_1d: pd.DataFrame) -> None:
    gappy = btc_1d.drop(index=btc_1d.index[[10, 11]])
    run = run_series(gappy, "1d", EngineSettings())
    payloads = [p for p, _ in run.payloads]
    assert run.n_filled == 2 and len(payloads) == len(run.ta) == len(btc_1d)
    assert [p["bar_ts"] for p in payloads] == list(btc_1d.index.strftime("%Y-%m-%dT%H:%M:%SZ"))

    kept = run_series(gappy, "1d", EngineSettings(gaps="keep"))
    assert kept.n_filled == 0 and len(kept.ta) == len(gappy)

    seen: list[tuple[int, int]] = []

    def refuse(n_filled: int, n_bars: int) -> None:
        seen.append((n_filled, n_bars))
        raise ValueError("too many filled")

    with pytest.raises(ValueError, match="too many filled"):
        run_series(gappy, "1d", EngineSettings(), check_filled=refuse)
    assert seen == [(2, len(btc_1d))]


@pytest.mark.slow
def test_regime_engine_and_regime_replay_give_the_same_states_for_the_same_file() -> None:
    path = real_file("binance_spot_2024-2026", "majors", "1h", "BTCUSDT.csv.gz")
    settings = EngineSettings()
    payloads, n_filled = run_file(path, "1h", settings)
    rows = replay_series(normalize_bars(pd.read_csv(path), series="BTC", timeframe="1h"), "1h", settings)
    assert n_filled == 0 and len(payloads) == len(rows)
    assert [p["state"] for p in payloads] == rows["state"].tolist()
    assert [p["price"] for p in payloads] == rows["price"].tolist()
    assert {p["state"] for p in payloads} == {"warming_up", "S0", "S1", "S2", "S3"}  # every state is compared
