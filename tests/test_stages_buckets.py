"""Bucket composites in the pipeline on the bundled real data (D3 revised, D16): caps from price × supply,
point-in-time members, and an index extended tick by tick that equals a rebuild bit for bit."""

from __future__ import annotations

import pandas as pd
import pytest

from regime_tasks import stages
from regime_tasks.config import BUNDLED_DATA_DIR, load_settings
from regime_tasks.runtime import Runtime
from regime_tasks.store import bars as store_bars
from regime_tasks.store.db import init_db, make_engine

T1 = pd.Timestamp("2025-07-20T20:00:00Z")
T2 = pd.Timestamp("2025-07-21T02:00:00Z")  # crosses a day: membership of the new day applies


def _runtime(tmp_path, name: str) -> Runtime:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / name}", source="file", files_dir=BUNDLED_DATA_DIR, history_1h_days=8
    )
    engine = make_engine(settings.effective_database_url, cached=False)
    init_db(engine)
    return Runtime(settings=settings, engine=engine)


def _advance(rt: Runtime, until_1h: pd.Timestamp) -> None:
    day = until_1h.floor("1D") - pd.Timedelta(days=1)
    stages.collect(rt, "1d", day)
    stages.collect(rt, "1h", until_1h)
    stages.build_driver_series(rt, "1h", until_1h)


@pytest.mark.slow
def test_bucket_index_extended_tick_by_tick_equals_a_rebuild_bit_for_bit(tmp_path) -> None:
    live = _runtime(tmp_path, "live.db")
    _advance(live, T1)
    t = T1
    while t < T2:  # one tick per hour, crossing midnight
        t += pd.Timedelta(hours=1)
        _advance(live, t)
    rebuilt = _runtime(tmp_path, "rebuilt.db")
    _advance(rebuilt, T2)
    for bucket in ("nano", "small", "mid", "big"):
        a = store_bars.read_bars(live.engine, "regime", {"driver": bucket}, "1h")
        b = store_bars.read_bars(rebuilt.engine, "regime", {"driver": bucket}, "1h")
        assert len(a) > 24 * 5 and a.index[-1] == T2
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_bucket_members_come_from_derived_caps_of_the_previous_close(tmp_path) -> None:
    rt = _runtime(tmp_path, "caps.db")
    stages.collect(rt, "1d", pd.Timestamp("2025-07-24T00:00:00Z"))
    from regime_tasks.store.tokens import cap_sources, read_caps

    caps = read_caps(rt.engine)
    assert caps.index[-1] == pd.Timestamp("2025-07-24T00:00:00Z")
    assert set(cap_sources(rt.engine).values()) == {"derived: price × supply of 2025-02-14"}
    members = stages.bucket_members(rt, pd.Timestamp("2025-07-25T12:00:00Z"))
    s = rt.settings
    row = caps.loc[pd.Timestamp("2025-07-24T00:00:00Z")]  # the close of 07-24 decides 07-25
    for bucket, keys in members.items():
        for k in keys:
            cap = row[f"{k['token_contract']}@{k['token_chain']}"]
            lo, hi = {
                "nano": (0, s.bucket_nano_max_usd),
                "small": (s.bucket_nano_max_usd, s.bucket_small_max_usd),
                "mid": (s.bucket_small_max_usd, s.bucket_mid_max_usd),
                "big": (s.bucket_mid_max_usd, float("inf")),
            }[bucket]
            assert lo <= cap < hi
    assert all(len(v) >= 3 for v in members.values())
