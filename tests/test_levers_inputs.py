"""compute_levers() arguments (issue 17): every bad one is a typed error raised before any I/O."""

from __future__ import annotations

import datetime as dt

import pytest

from regime_tasks.core.constants import DRIVERS, REGIME_TIMEFRAMES
from regime_tasks.errors import RegimeUnavailable, UnknownInputError
from regime_tasks.levers import compute_levers, reset_default_cache
from regime_tasks.store import positions
from regime_tasks.store.cache import MemoryRegimeCache
from regime_tasks.store.db import init_db, make_engine

NOW = dt.datetime(2025, 7, 26, 5, 0, 30, tzinfo=dt.UTC)
BARS = {"1d": "2025-07-25T00:00:00Z", "1h": "2025-07-26T04:00:00Z", "1m": "2025-07-26T04:59:00Z"}


def payload(tf: str) -> dict:
    return {"delta_a_raw": 0.2, "delta_e_raw": -0.05, "state": "S3", "prev_state": "S3", "bar_ts": BARS[tf]}


@pytest.fixture()
def engine(sqlite_url):
    eng = make_engine(sqlite_url, cached=False)
    init_db(eng)
    positions.ensure_driver_rows(eng, "onchain_crypto")
    ids = positions.driver_row_ids(eng, "onchain_crypto")
    positions.set_features_bulk(
        eng, [(ids[(d, tf)], "regime_engine_v4", payload(tf)) for d in DRIVERS for tf in REGIME_TIMEFRAMES]
    )
    yield eng
    eng.dispose()


@pytest.fixture(autouse=True)
def fresh_levers(monkeypatch):
    monkeypatch.setenv("REGIME_LEVERS_SNAPSHOT_TTL_SECS", "0")
    monkeypatch.delenv("REGIME_BOOKS", raising=False)
    from regime_tasks.config import get_settings

    get_settings.cache_clear()
    reset_default_cache()
    yield
    get_settings.cache_clear()
    reset_default_cache()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": ["hi_buy"]}, "features must be an object"),
        ({"features": "x"}, "features must be an object"),
        ({"features": {"intent_metrics": {"sell": 10**400}}}, "intent_metrics.sell"),
        ({"book_id": "onchain\x00crypto"}, "book_id"),
        ({"book_id": 123}, "book_id"),
        ({"now": dt.datetime(2025, 7, 26, 5, 0, 30)}, "timezone-aware"),
        ({"now": "2025-07-26T05:00:30Z"}, "timezone-aware"),
        ({"execution_timeframe": ["1h"]}, "unknown execution timeframe"),
        ({"position_bucket": 3}, "unknown bucket"),
    ],
)
def test_bad_arguments_raise_unknown_input_error_before_any_io(kwargs: dict, message: str) -> None:
    args = {"features": {}, "execution_timeframe": "1h", "position_bucket": "small", "now": NOW}
    args.update(kwargs)
    features, exec_tf, bucket = args.pop("features"), args.pop("execution_timeframe"), args.pop("position_bucket")

    class NoIO:  # any cache access would mean the argument was checked too late
        def read(self, book_id: str):
            raise AssertionError("cache read before the arguments were checked")

    with pytest.raises(UnknownInputError, match=message) as info:
        compute_levers(features, exec_tf, bucket, cache=NoIO(), **args)  # type: ignore[arg-type]
    assert not isinstance(info.value, RegimeUnavailable)


def test_good_arguments_still_give_the_d2_example(engine) -> None:
    res = compute_levers({}, "1h", "small", cache=MemoryRegimeCache(), engine=engine, now=NOW)
    assert res["A_value"] == pytest.approx(0.80) and res["diagnostics"]["degraded"] is False
