"""The replay's A/E are core/levers.py's: equal to compute_levers_from_entries / market_summary called directly
with the entries a live reader would have seen (each driver's last bar closed by then) at every sampled time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regime_tasks.core.constants import EXEC_TF_MULTIPLIERS, REGIME_TIMEFRAMES, TIMEFRAME_SECONDS
from regime_tasks.core.levers import compute_levers_from_entries, market_summary
from regime_tasks.replay import replay_drivers
from regime_tasks.replay.known import KnownAt, levers_grid, summary_levers
from regime_tasks.sources.files import FileSource
from tests.conftest import REPO_ROOT

END = pd.Timestamp("2025-07-26T04:00:00Z")


@pytest.fixture(scope="module")
def per_series() -> dict:
    # bundled 1d series of every driver (dominance 1d warms up, buckets on simulated caps: the arithmetic is
    # what is tested here, not the market)
    return replay_drivers(FileSource(REPO_ROOT / "regime_tasks" / "data"), end=END, timeframes=("1d",), workers=1)


def _entries_at(per_series: dict, t: pd.Timestamp) -> dict:
    """Directly: each driver's last bar whose close (open + one bar) is at or before t."""
    out = {}
    for (driver, tf), frame in per_series.items():
        closed = frame[frame.index + pd.Timedelta(seconds=TIMEFRAME_SECONDS[tf]) <= t]
        if len(closed):
            row = closed.iloc[-1]
            out[(driver, tf)] = {
                "state": row["state"],
                "delta_a_raw": float(row["delta_a_raw"]),
                "delta_e_raw": float(row["delta_e_raw"]),
                "bar_ts": closed.index[-1].strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
    return out


def test_replay_levers_equal_compute_levers_from_entries_at_every_sampled_hour(per_series) -> None:
    grid = pd.date_range(END - pd.Timedelta(days=200), END, freq="1h", tz="UTC", name="timestamp")
    table = levers_grid(per_series, grid, EXEC_TF_MULTIPLIERS).set_index(["bucket", "execution_timeframe", "timestamp"])
    assert table["A_value"].nunique() > 5  # the states move: the comparison is not between constants
    rng = np.random.default_rng(8)
    # some hours right after a daily close and some 3-4 days after a gap (stale rule) among random ones
    sample = [*list(grid[rng.choice(len(grid), 40, replace=False)]), grid[0], grid[-1]]
    for t in sample:
        entries = _entries_at(per_series, t)
        for bucket in ("nano", "big"):
            for exec_tf in ("1h", "1d", "1m"):
                direct = compute_levers_from_entries(entries, None, exec_tf, bucket, now=t.to_pydatetime())
                ours = table.loc[(bucket, exec_tf, t)]
                assert ours["A_value"] == pytest.approx(direct["A_value"], abs=1e-12)
                assert ours["E_value"] == pytest.approx(direct["E_value"], abs=1e-12)
                assert ours["position_size_frac"] == pytest.approx(direct["position_size_frac"], abs=1e-12)


def test_summary_levers_equal_market_summary_and_respect_exclusions(per_series) -> None:
    times = pd.date_range(END - pd.Timedelta(days=120), END, freq="7h", tz="UTC")
    known = KnownAt(per_series, times)
    excluded = {("nano", tf) for tf in REGIME_TIMEFRAMES}
    ours = summary_levers(known, excluded)
    for t in times[::5]:
        entries = {k: v for k, v in _entries_at(per_series, t).items() if k not in excluded}
        direct = market_summary(entries, now=t.to_pydatetime())
        assert ours.loc[t, "A_value"] == pytest.approx(direct["A_value"], abs=1e-12)
        assert ours.loc[t, "E_value"] == pytest.approx(direct["E_value"], abs=1e-12)
