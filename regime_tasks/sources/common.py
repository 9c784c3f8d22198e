"""What every venue client shares besides HTTP: response bars validated as a whole, errors naming the venue."""

from __future__ import annotations

import pandas as pd

from regime_tasks.core.bars import validate_bars
from regime_tasks.errors import DataValidationError, InvalidResponseError


def validate_response_bars(frame: pd.DataFrame, *, source: str, series: str, interval: str) -> pd.DataFrame:
    """Validate a parsed response (D13); one bad row rejects the whole response as InvalidResponseError."""
    try:
        validate_bars(frame, series=series, timeframe=interval, source=source)
    except DataValidationError as exc:
        raise InvalidResponseError(
            str(exc).split(" (")[0], source=source, series=series, timestamp=exc.timestamp, field=exc.field
        ) from exc
    return frame
