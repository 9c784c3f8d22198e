"""The live path (core/live.py): a history grown bar by bar equals, bit for bit, one rebuilt from the window.

Real Binance BTC 1h candles (2017–22). The "no volume" cases set volume to 0 to stand for a dominance series
(a transformed real series, not new data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.live import LiveHistory, window_start
from regime_tasks.core.ta import STREAM_MIN_BARS, StreamBreak, compute_ta_frame, swing_pivots
from regime_tasks.core.uptrend import EngineSettings, run_engine_frame
from tests.conftest import real_file


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    raw = pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz"))
    return fill_gaps(normalize_bars(raw, series="BTC", timeframe="1h"), "1h")[0]


def _grow_and_compare(bars: pd.DataFrame, start: int, window: int, appended: int, check_every: int) -> list[str]:
    """Build on ``window`` bars, append ``appended`` more, stepping each; compare with rebuilds. Returns states."""
    settings = EngineSettings()
    live = LiveHistory(
        bars.iloc[start : start + window], settings, capacity=window + appended, window_start=bars.index[start]
    )
    prev = run_engine_frame(compute_ta_frame(bars.iloc[start : start + window].drop(columns="filled")))[0][-1]
    states = []
    for k in range(window, window + appended):
        live.append(bars.index[start + k], bars.iloc[start + k])
        payload, _ = live.step_last(prev)
        states.append(payload["state"])
        if (k - window) % check_every == 0 or k == window + appended - 1:
            cold = compute_ta_frame(bars.iloc[start : start + k + 1].drop(columns="filled"))
            for name in cold.columns:
                np.testing.assert_array_equal(live.cols[name][: k + 1], cold[name].to_numpy(), err_msg=name)
            want = swing_pivots(cold["high"].to_numpy(), cold["low"].to_numpy(), cold["atr"].to_numpy())
            assert live.pivots == want
            cold_payload = run_engine_frame(cold, settings, prev_payload=prev, start_at=cold.index[-1])[0][-1]
            assert payload == cold_payload, f"bar {k}"
        prev = payload
    return states


def test_appended_bars_equal_a_rebuild_bit_for_bit(btc_1h: pd.DataFrame) -> None:
    # 2019: a long S3 episode with trims, so EDX windows, pivots and S/R levels are all exercised
    states = _grow_and_compare(btc_1h, start=12_000, window=3_000, appended=400, check_every=40)
    assert {"S3"} <= set(states)


def test_a_series_without_volume_streams_too(btc_1h: pd.DataFrame) -> None:
    no_volume = btc_1h.assign(volume=0.0)
    _grow_and_compare(no_volume, start=30_000, window=STREAM_MIN_BARS, appended=120, check_every=30)


def test_window_start_is_anchored_on_a_grid() -> None:
    w, slack = 3_000, 500
    bars = pd.date_range("2024-01-01", periods=2_000, freq="h", tz="UTC")
    starts = [window_start(ts, "1h", w, slack) for ts in bars]
    lengths = [int((ts - s) / pd.Timedelta(hours=1)) + 1 for ts, s in zip(bars, starts, strict=True)]
    assert min(lengths) == w and max(lengths) == w + slack - 1
    hours = [int((ts - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(hours=1)) for ts in bars]
    assert len(set(starts)) == len({(k - w + 1) // slack for k in hours}) == 5  # four grid lines crossed
    assert all((s - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(hours=1) % slack == 0 for s in starts)
    # the start moves only when the length would pass w + slack − 1, and then back to w
    for a, b, la, lb in zip(starts, starts[1:], lengths, lengths[1:], strict=False):
        assert (a == b and lb == la + 1) or (b == a + pd.Timedelta(hours=slack) and lb == w and la == w + slack - 1)


def test_stream_breaks_instead_of_diverging(btc_1h: pd.DataFrame) -> None:
    settings = EngineSettings()
    with pytest.raises(StreamBreak, match="at least"):
        LiveHistory(btc_1h.iloc[:100], settings, capacity=200, window_start=btc_1h.index[0])

    no_volume = btc_1h.iloc[:500].assign(volume=0.0)
    live = LiveHistory(no_volume.iloc[:450], settings, capacity=500, window_start=no_volume.index[0])
    with pytest.raises(StreamBreak, match="volume"):
        live.append(btc_1h.index[450], btc_1h.iloc[450])  # real volume on a series that had none
    assert live.n == 450  # unchanged

    full = LiveHistory(btc_1h.iloc[:450], settings, capacity=450, window_start=btc_1h.index[0])
    with pytest.raises(StreamBreak, match="full"):
        full.append(btc_1h.index[450], btc_1h.iloc[450])


def test_a_live_history_only_answers_for_its_newest_bar(btc_1h: pd.DataFrame) -> None:
    live = LiveHistory(btc_1h.iloc[:500], EngineSettings(), capacity=600, window_start=btc_1h.index[0])
    assert live.pivots_at(499, start=0) == live.pivots
    with pytest.raises(ValueError, match="newest bar"):
        live.pivots_at(400)


def test_bars_appended_without_stepping_keep_their_own_times(btc_1h: pd.DataFrame) -> None:
    # a worker brings a cached history up to date (bars another process stepped) before stepping the new bar
    live = LiveHistory(btc_1h.iloc[:500], EngineSettings(), capacity=600, window_start=btc_1h.index[0])
    for k in range(500, 504):
        live.append(btc_1h.index[k], btc_1h.iloc[k])
    prev = None
    for k in range(504, 507):
        live.append(btc_1h.index[k], btc_1h.iloc[k])
        prev, _ = live.step_last(prev)
        assert prev["bar_ts"] == btc_1h.index[k].strftime("%Y-%m-%dT%H:%M:%SZ")
