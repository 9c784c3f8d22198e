"""TA against independent plain-Python references (loops written from the textbook definitions)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from regime_tasks.core.bars import fill_gaps, normalize_bars
from regime_tasks.core.ta import (
    TA_COLUMNS,
    compute_ta,
    compute_ta_frame,
    ls_slope,
    pivots_known_at,
    sr_levels,
    swing_pivots,
)
from tests.conftest import real_file


@pytest.fixture(scope="module")
def btc_1d() -> pd.DataFrame:
    raw = pd.read_csv(real_file("btc", "BTCUSD-1d-2020-01-01_2021-10-27.csv")).dropna()
    bars = normalize_bars(raw, series="BTC", timeframe="1d")
    return fill_gaps(bars, "1d")[0].drop(columns="filled")


@pytest.fixture(scope="module")
def btc_1h() -> pd.DataFrame:
    bars = normalize_bars(
        pd.read_csv(real_file("binance_spot_2017-2022", "majors", "1h", "BTCUSDT.csv.gz")), series="BTC", timeframe="1h"
    )
    return fill_gaps(bars, "1h")[0].drop(columns="filled")


def ref_ema(x: list[float], n: int) -> list[float]:
    alpha, out, e = 2 / (n + 1), [], x[0]
    for i, v in enumerate(x):
        e = v if i == 0 else alpha * v + (1 - alpha) * e
        out.append(e if i >= n - 1 else math.nan)
    return out


def ref_wilder(values: list[float], n: int, start: int) -> list[float]:
    out = [math.nan] * len(values)
    s = sum(values[start : start + n]) / n
    out[start + n - 1] = s
    for i in range(start + n, len(values)):
        s = (s * (n - 1) + values[i]) / n
        out[i] = s
    return out


def ref_tr(h, lo, c) -> list[float]:
    return [h[0] - lo[0]] + [max(h[i] - lo[i], abs(h[i] - c[i - 1]), abs(lo[i] - c[i - 1])) for i in range(1, len(h))]


def ref_adx(h, lo, c, n=14) -> list[float]:
    pdm, mdm = [math.nan], [math.nan]
    for i in range(1, len(h)):
        up, down = h[i] - h[i - 1], lo[i - 1] - lo[i]
        pdm.append(up if up > down and up > 0 else 0.0)
        mdm.append(down if down > up and down > 0 else 0.0)
    tr = ref_tr(h, lo, c)
    s_tr, s_p, s_m = ref_wilder(tr, n, 1), ref_wilder(pdm, n, 1), ref_wilder(mdm, n, 1)
    dx = []
    for a, b, t in zip(s_p, s_m, s_tr, strict=True):
        if math.isnan(t):
            dx.append(math.nan)
            continue
        pdi, mdi = 100 * a / t, 100 * b / t
        dx.append(0.0 if pdi + mdi == 0 else 100 * abs(pdi - mdi) / (pdi + mdi))
    return ref_wilder(dx, n, n)


def ref_rsi(c: list[float], n: int = 14) -> list[float]:
    # Wilder RSI as the `ta` package computes it: EWM(α = 1/n, adjust=False) of gains/losses, where the first bar
    # (no previous close) counts as a zero change, defined from the n-th bar on.
    out, ag, al = [], 0.0, 0.0
    for i in range(len(c)):
        d = 0.0 if i == 0 else c[i] - c[i - 1]
        g, lo = max(d, 0.0), max(-d, 0.0)
        if i == 0:
            ag, al = g, lo
        else:
            ag, al = ag + (g - ag) / n, al + (lo - al) / n
        out.append(math.nan if i < n - 1 else (100.0 if al == 0 else 100 - 100 / (1 + ag / al)))
    return out


def assert_series_close(ours: np.ndarray, ref: list[float], rel: float = 1e-9) -> None:
    ref_arr = np.array(ref)
    assert np.array_equal(np.isnan(ours), np.isnan(ref_arr)), "warm-up (NaN) positions differ"
    mask = ~np.isnan(ref_arr)
    np.testing.assert_allclose(ours[mask], ref_arr[mask], rtol=rel)


def test_ema_matches_reference_including_warm_up(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d)
    c = btc_1d["close"].tolist()
    for n in (20, 60, 333):
        assert_series_close(frame[f"ema{n}"].to_numpy(), ref_ema(c, n))
    assert np.isnan(frame["ema333"].iloc[331]) and not np.isnan(frame["ema333"].iloc[332])


def test_wilder_atr_matches_reference(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d)
    h, lo, c = (btc_1d[k].tolist() for k in ("high", "low", "close"))
    assert_series_close(frame["atr"].to_numpy(), ref_wilder(ref_tr(h, lo, c), 14, 0))
    assert np.isnan(frame["atr"].iloc[12]) and frame["atr"].iloc[13] == pytest.approx(np.mean(ref_tr(h, lo, c)[:14]))


def test_wilder_adx_matches_reference(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d)
    h, lo, c = (btc_1d[k].tolist() for k in ("high", "low", "close"))
    assert_series_close(frame["adx"].to_numpy(), ref_adx(h, lo, c), rel=1e-8)
    assert frame["adx"].first_valid_index() == btc_1d.index[27]


def test_rsi_matches_reference(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d)
    assert_series_close(frame["rsi"].to_numpy(), ref_rsi(btc_1d["close"].tolist()), rel=1e-9)


def test_regression_slope_matches_polyfit() -> None:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=60)) + 100
    ours = ls_slope(y, 10)
    for t in (9, 30, 59):
        assert ours[t] == pytest.approx(np.polyfit(np.arange(10), y[t - 9 : t + 1], 1)[0], rel=1e-10)
    assert np.isnan(ours[:9]).all()


def test_normalised_slope_is_fraction_per_bar(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d)
    t = 400
    e = frame["ema60"].to_numpy()
    expected = np.polyfit(np.arange(10), e[t - 9 : t + 1], 1)[0] / e[t]
    assert frame["ema60_slope"].iloc[t] == pytest.approx(expected, rel=1e-9)
    prev = np.polyfit(np.arange(10), e[t - 19 : t - 9], 1)[0] / e[t - 10]
    assert frame["d_ema60_slope"].iloc[t] == pytest.approx(expected - prev, rel=1e-9)


def test_warm_up_values_are_nan_never_zero(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d.iloc[:40])
    for col in ("ema60", "ema333", "adx", "atr_mean_20", "ema144_slope"):
        assert frame[col].isna().iloc[:12].all(), col
    assert not (frame[list(TA_COLUMNS)].fillna(1.0) == 0).any().drop("vo_z").any()


def test_live_window_equals_replay_series_for_ema333(btc_1h) -> None:
    # D6: TA on the last 3,000 bars ending at t equals the full-history per-bar value at t to 1e-6 relative.
    full = compute_ta_frame(btc_1h)
    for t in (5_000, 20_000, len(btc_1h) - 1):
        window = compute_ta_frame(btc_1h.iloc[t - 2_999 : t + 1])
        for col in ("ema333", "ema144", "ema20"):
            assert window[col].iloc[-1] == pytest.approx(full[col].iloc[t], rel=1e-6), (col, t)
        assert window["atr"].iloc[-1] == pytest.approx(full["atr"].iloc[t], rel=1e-6)


def test_payload_has_latest_price_filled_bars_and_no_wall_clock(btc_1h) -> None:
    bars = btc_1h.iloc[-3_500:].drop(index=btc_1h.index[-100:-97])  # three missing hours
    one = compute_ta(bars, series="BTC:1h", timeframe="1h").to_dict()
    two = compute_ta(bars, series="BTC:1h", timeframe="1h").to_dict()
    assert one == two
    assert one["latest_price"] == bars["close"].iloc[-1] and one["filled_bars"] == 3 and one["bars"] == 3_000
    assert set(one["ema"]) == {"ema20", "ema30", "ema50", "ema60", "ema144", "ema250", "ema333"}
    assert one["sr_levels"] and all(0 < lv["strength"] <= 1 for lv in one["sr_levels"])


def test_vo_z_is_zero_without_volume(btc_1d) -> None:
    frame = compute_ta_frame(btc_1d.assign(volume=0.0))
    assert (frame["vo_z"] == 0).all()


def test_swing_pivots_are_causal(btc_1h) -> None:
    frame = compute_ta_frame(btc_1h.iloc[-2_000:])
    h, lo, a = (frame[k].to_numpy() for k in ("high", "low", "atr"))
    versions = swing_pivots(h, lo, a, keep_versions=True)
    for t in (300, 999, 1_999):
        truncated = swing_pivots(h[: t + 1], lo[: t + 1], a[: t + 1])
        assert [(p.index, p.price) for p in truncated] == [(p.index, p.price) for p in pivots_known_at(versions, t)]
    final = swing_pivots(h, lo, a)
    assert all(p.confirmed_at >= p.index for p in final)
    kinds = [p.kind for p in final]
    assert all(x != y for x, y in itertools.pairwise(kinds)), "pivots alternate high/low"


def test_sr_levels_cluster_and_rank_by_distance() -> None:
    from regime_tasks.core.ta import Pivot

    piv = [
        Pivot(0, 100.0, "low", 1),
        Pivot(5, 110.0, "high", 6),
        Pivot(9, 100.4, "low", 10),
        Pivot(14, 130.0, "high", 15),
        Pivot(20, 99.8, "low", 21),
    ]
    levels = sr_levels(piv, price=109.0, atr=2.0)
    assert levels[0] == {"price": 110.0, "strength": pytest.approx(1 / 3)}
    assert levels[1]["price"] == pytest.approx((100.0 + 100.4 + 99.8) / 3) and levels[1]["strength"] == 1.0
    assert len(levels) == 3


def test_ema_and_rsi_are_the_ta_packages_indicators_bit_for_bit(btc_1h: pd.DataFrame) -> None:
    from ta.momentum import RSIIndicator
    from ta.trend import EMAIndicator

    bars = btc_1h.iloc[-5_000:]
    frame = compute_ta_frame(bars)
    for n in (20, 30, 50, 60, 144, 250, 333):
        expected = EMAIndicator(bars["close"], window=n).ema_indicator().to_numpy()
        np.testing.assert_array_equal(frame[f"ema{n}"].to_numpy(), expected)
    np.testing.assert_array_equal(frame["rsi"].to_numpy(), RSIIndicator(bars["close"], window=14).rsi().to_numpy())


def test_level_block_equals_sr_levels_bar_by_bar(btc_1h: pd.DataFrame) -> None:
    """The replay's S/R levels of a block of bars (core/ta/levels.py) are, bar for bar and bit for bit, what
    sr_levels gives on the pivot versions known at that bar within the last 3,000 bars; so are the S/R boosts at
    EMA60/EMA333 and the count of levels within 1 ATR that the engine reads from the block."""
    from regime_tasks.core.ta.levels import level_block
    from regime_tasks.core.uptrend import sr_boost

    frame = compute_ta_frame(btc_1h.iloc[-6_000:])
    high, low, atr, close = (frame[k].to_numpy() for k in ("high", "low", "atr", "close"))
    versions = swing_pivots(high, low, atr, keep_versions=True)
    conf = np.array([p.confirmed_at for p in versions])
    until = np.minimum(np.array([p.superseded_at for p in versions]), np.array([p.index for p in versions]) + 3_000)
    prices = np.array([p.price for p in versions])
    start, stop = 3_500, 4_700  # well past the first pivots, and a block that is not a multiple of anything
    block = level_block(conf, until, prices, np.arange(start, stop), close[start:stop], atr[start:stop])
    ema60, ema333 = frame["ema60"].to_numpy()[start:stop], frame["ema333"].to_numpy()[start:stop]
    boost60, boost333 = block.boost(ema60, atr[start:stop]), block.boost(ema333, atr[start:stop])
    near = block.near(close[start:stop], atr[start:stop])
    n_levels = 0
    for t in range(start, stop):
        expected = sr_levels(pivots_known_at(versions, t, start=max(0, t - 2_999)), close[t], atr[t])
        got = block.levels(t)
        assert got == expected, t  # floats compared exactly
        r = t - start
        assert boost60[r] == sr_boost(ema60[r], expected, atr[t])
        assert boost333[r] == sr_boost(ema333[r], expected, atr[t])
        assert near[r] == sum(1 for lv in expected if abs(close[t] - lv["price"]) <= atr[t])
        n_levels += len(expected)
    assert n_levels > 5 * (stop - start)  # the bars do have levels (not an empty comparison)
