"""Every constant of the plan and of DECISIONS.md, each table once.

Section references are to ``docs/spec/regime_engine_plan.md`` (plan §x) and
``docs/DECISIONS.md`` (Dx). Nothing here is configurable at run time:
a different table is a different product version.
"""

from __future__ import annotations

from typing import Final

# --- drivers and timeframes (plan §1.2, §1.3) ------------------------------------
GLOBAL_DRIVERS: Final = ("BTC", "ALT")
BUCKETS: Final = ("nano", "small", "mid", "big")
DOMINANCE_DRIVERS: Final = ("BTC.d", "USDT.d")
DRIVERS: Final = (*GLOBAL_DRIVERS, *BUCKETS, *DOMINANCE_DRIVERS)
REQUIRED_DRIVERS: Final = frozenset(GLOBAL_DRIVERS)  # plan §14.1-4, D8

# Regime timeframes, slowest first. The plan's tables name them macro/meso/micro.
REGIME_TIMEFRAMES: Final = ("1d", "1h", "1m")
TF_ROLE: Final = {"1d": "macro", "1h": "meso", "1m": "micro"}
# Timeframes `regime evaluate` trades, and the series it trades (docs/EVALUATION.md).
EVALUATION_TIMEFRAMES: Final = ("1d", "1h")

# Bar lengths of every interval the product reads or writes.
TIMEFRAME_SECONDS: Final = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3_600,
    "4h": 14_400,
    "1d": 86_400,
}

# ALT composite constituents (plan §1.2, D3).
ALT_CONSTITUENTS: Final = ("SOL", "ETH", "BNB", "HYPE")
MAJORS: Final = ("BTC", "ETH", "SOL", "BNB", "HYPE")
MAX_BUCKET_CONSTITUENTS: Final = 64  # D3
TRADABLE_SERIES: Final = (*GLOBAL_DRIVERS, *BUCKETS)  # the drivers with a price to trade (`regime evaluate`)
# Market-cap bounds of the buckets, USD (D3): nano < nano_max ≤ small < small_max ≤ mid < mid_max ≤ big. The
# defaults of REGIME_BUCKET_*_MAX_USD (Settings.bucket_thresholds); the rule that applies them is core.composite.
DEFAULT_BUCKET_THRESHOLDS_USD: Final = {"nano_max_usd": 10e6, "small_max_usd": 50e6, "mid_max_usd": 200e6}

# --- books (plan §14.3-7, D12) ---------------------------------------------------
DEFAULT_BOOK_ID: Final = "onchain_crypto"
CRYPTO_BOOK_IDS: Final = frozenset({"onchain_crypto", "spot_crypto", "perp_crypto"})
REGIME_DRIVER_STATUS: Final = "regime_driver"
REGIME_DRIVER_CHAIN: Final = "regime"
LEVER_POSITION_STATUSES: Final = ("active", "watchlist")  # D1

# --- engine states (uptrend_engine_v4.md §3) -----------------------------------
STATES: Final = ("S0", "S1", "S2", "S3", "S4")
# The states' short names, as charts, reports and legends show them to a trader (engine spec §3).
STATE_NAMES: Final[dict[str, str]] = {
    "S0": "S0 bearish order",
    "S1": "S1 early recovery",
    "S2": "S2 above EMA333",
    "S3": "S3 bullish trend",
    "S4": "S4 uncertain",
}
WARMING_UP: Final = "warming_up"
MIN_BARS_FOR_STATE: Final = 333  # uptrend_engine_v4.md §1, D6

# --- mapper tables (plan §3.1-3.3, appendix A; D7) ------------------------------
# S4 and warming_up map to zero deltas (D7).
STATE_DELTAS: Final = {
    "S0": {"delta_a": -0.30, "delta_e": 0.30},
    "S1": {"delta_a": 0.25, "delta_e": -0.15},
    "S2": {"delta_a": 0.10, "delta_e": 0.05},
    "S3": {"delta_a": 0.20, "delta_e": -0.05},
}

FLAG_DELTAS: Final = {
    "buy": {
        "S1": {"delta_a": 0.20, "delta_e": -0.10},
        "S2": {"delta_a": 0.10, "delta_e": -0.05},
        "S3": {"delta_a": 0.05, "delta_e": -0.05},
    },
    "rebuy": {
        "S2": {"delta_a": 0.15, "delta_e": -0.10},
        "S3": {"delta_a": 0.20, "delta_e": -0.10},
    },
    "trim": {
        "S2": {"delta_a": -0.20, "delta_e": 0.25},
        "S3": {"delta_a": -0.25, "delta_e": 0.30},
    },
}

# Keyed by (previous state, new state); they stack on the S0 baseline for one bar.
TRANSITION_DELTAS: Final = {
    ("S1", "S0"): {"delta_a": -0.40, "delta_e": 0.40},
    ("S2", "S0"): {"delta_a": -0.35, "delta_e": 0.35},
    ("S3", "S0"): {"delta_a": -0.50, "delta_e": 0.50},
}

# No mapper output exceeds ±0.8 (S3→S0: -0.30 baseline - 0.50 pulse); a cached or stored delta beyond ±1 was not
# written by the mapper and is treated as corrupt, never summed.
MAX_DRIVER_DELTA_ABS: Final = 1.0

# --- weighting (plan §4, D2) ------------------------------------------------------
# Keyed by regime timeframe (1d/1h/1m) rather than macro/meso/micro, see TF_ROLE.
TF_WEIGHTS: Final = {"1d": 0.50, "1h": 0.40, "1m": 0.10}  # plan §4.1; summary only (D2)

DRIVER_WEIGHTS: Final = {  # plan §4.2, §3.4 (dominance negative = inverted)
    "BTC": 1.0,
    "ALT": 1.5,
    "nano": 3.0,
    "small": 3.0,
    "mid": 3.0,
    "big": 3.0,
    "BTC.d": -1.0,
    "USDT.d": -3.0,
}

EXEC_TF_MULTIPLIERS: Final = {  # plan §4.3; each row sums to 1.0 (D2)
    "1m": {"1d": 0.05, "1h": 0.35, "1m": 0.60},
    "5m": {"1d": 0.10, "1h": 0.50, "1m": 0.40},
    "15m": {"1d": 0.15, "1h": 0.55, "1m": 0.30},
    "1h": {"1d": 0.30, "1h": 0.55, "1m": 0.15},
    "4h": {"1d": 0.55, "1h": 0.40, "1m": 0.05},
    "1d": {"1d": 0.80, "1h": 0.18, "1m": 0.02},
}

NEUTRAL_A: Final = 0.5
NEUTRAL_E: Final = 0.5
POSITION_SIZE_BASE: Final = 0.10  # D2: size = 0.10 + 0.50 × A
POSITION_SIZE_PER_A: Final = 0.50

# --- intent deltas (D11, plan §4.4) -----------------------------------------------
INTENT_CAP: Final = 0.4
INTENT_WEIGHTS_A: Final = {"hi_buy": 0.25, "med_buy": 0.15, "profit": -0.15, "sell": -0.25, "mock": -0.30}
INTENT_WEIGHTS_E: Final = {"hi_buy": -0.10, "med_buy": -0.05, "profit": 0.15, "sell": 0.35, "mock": 0.50}

# --- staleness (D8, plan §14.1-4) -------------------------------------------------
STALE_AFTER_BARS: Final = 3
