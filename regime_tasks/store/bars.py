"""Bars in the three price tables: validated, idempotent upserts and windowed reads.

Writes validate the whole frame first (nothing is written if one bar is bad), then upsert on the
natural key (series key, timeframe, timestamp) in one transaction: re-running a write gives the
same rows, a failure leaves none of it. Large PostgreSQL writes go through COPY into a temporary
staging table followed by one ``INSERT … SELECT … ON CONFLICT`` (an order of magnitude faster
than row-wise INSERTs for backfills).
"""

from __future__ import annotations

import io
import logging
import sqlite3
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from regime_tasks.core.bars import validate_bars
from regime_tasks.core.constants import TIMEFRAME_SECONDS
from regime_tasks.errors import DataValidationError, StoreError, UnknownInputError
from regime_tasks.logs import kv
from regime_tasks.store.db import upsert_rows
from regime_tasks.store.schema import PRICE_TABLES, SERIES_KEYS

log = logging.getLogger(__name__)

TableName = Literal["majors", "lowcap", "regime"]
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
_DB_PRICE_COLUMNS = ("open_usd", "high_usd", "low_usd", "close_usd", "volume")

DEFAULT_BATCH_ROWS = 5_000
DEFAULT_COPY_THRESHOLD_ROWS = 20_000


def series_label(table: str, key: Mapping[str, str], timeframe: str) -> str:
    """Human name of a series for messages: ``regime:ALT:1h``."""
    return ":".join([table, *(str(v) for v in key.values()), timeframe])


def _check_key(table: str, key: Mapping[str, str], timeframe: str) -> sa.Table:
    if table not in PRICE_TABLES:
        raise UnknownInputError(f"unknown price table {table!r}; expected one of {sorted(PRICE_TABLES)}")
    expected = SERIES_KEYS[table]
    if tuple(sorted(key)) != tuple(sorted(expected)):
        raise UnknownInputError(f"series key for {table} must have exactly {expected}, got {tuple(key)}")
    if timeframe not in TIMEFRAME_SECONDS:
        raise UnknownInputError(f"unknown timeframe {timeframe!r}; expected one of {sorted(TIMEFRAME_SECONDS)}")
    return PRICE_TABLES[table]


def _records(
    table: str, key: Mapping[str, str], timeframe: str, frame: pd.DataFrame, source: str | None
) -> list[dict[str, Any]]:
    stamps = frame.index.to_pydatetime()
    cols = [frame[c].to_numpy(dtype=np.float64).tolist() for c in BAR_COLUMNS]
    has_constituents = table == "regime" and "constituents" in frame.columns
    constituents = frame["constituents"].to_numpy().tolist() if has_constituents else None
    base: dict[str, Any] = {**key, "timeframe": timeframe, "source": source}
    out: list[dict[str, Any]] = []
    for i, ts in enumerate(stamps):
        row = dict(base)
        row["timestamp"] = ts
        row["open_usd"], row["high_usd"], row["low_usd"], row["close_usd"], row["volume"] = (
            cols[0][i],
            cols[1][i],
            cols[2][i],
            cols[3][i],
            cols[4][i],
        )
        if table == "regime":
            row["constituents"] = None if constituents is None else int(constituents[i])
        out.append(row)
    return out


def upsert_bars(
    engine: Engine,
    table: TableName,
    key: Mapping[str, str],
    timeframe: str,
    frame: pd.DataFrame,
    *,
    source: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    copy_threshold_rows: int = DEFAULT_COPY_THRESHOLD_ROWS,
) -> int:
    """Validate ``frame`` (CONTRACTS §1) and upsert it as one transaction; returns rows written.

    Raises :class:`DataValidationError` naming the bad bar before anything is written.
    """
    tbl = _check_key(table, key, timeframe)
    label = series_label(table, key, timeframe)
    if frame.empty:
        return 0
    validate_bars(frame, series=label, timeframe=timeframe, source=source)
    if table == "regime" and "constituents" in frame.columns and frame["constituents"].isna().any():
        bad = frame.index[frame["constituents"].isna()][0]
        raise DataValidationError("constituent count missing", series=label, timestamp=bad, field="constituents")
    pk = (*SERIES_KEYS[table], "timeframe", "timestamp")
    update_cols = (*_DB_PRICE_COLUMNS, "source", *(("constituents",) if table == "regime" else ()))
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql" and len(frame) >= copy_threshold_rows:
                _copy_upsert(conn, tbl, table, key, timeframe, frame, source, pk, update_cols)
            elif conn.dialect.name == "sqlite":
                _sqlite_upsert(conn, tbl, table, key, timeframe, frame, source, pk, update_cols)
            else:
                rows = _records(table, key, timeframe, frame, source)
                upsert_rows(conn, tbl, rows, conflict_cols=pk, update_cols=update_cols, batch_rows=batch_rows)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"upsert of {len(frame)} bars into {label} failed: {exc}") from exc
    log.debug("bars upserted %s", kv(series=label, rows=len(frame), first=frame.index[0], last=frame.index[-1]))
    return len(frame)


# How SQLAlchemy's SQLite dialect stores a DATETIME (naive UTC after UTCDateTime): the same text must be written
# and compared, or a bar written by one path would not meet the same bar written by the other on the primary key.
SQLITE_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def sqlite_stamps(index: pd.DatetimeIndex) -> list[str]:
    """UTC bar times as the text SQLite holds them (tests/store: equal to what SQLAlchemy writes).

    ``strftime`` gives pandas' Arrow-backed strings: ``list()`` of them converts one element at a time (0.33 s of
    the demo's 460k stamps under the profiler), ``to_numpy(dtype=object)`` all at once (2.4× faster)."""
    text = index.tz_convert("UTC").tz_localize(None).strftime(SQLITE_STAMP_FORMAT)
    return text.to_numpy(dtype=object).tolist()


def _sqlite_upsert(
    conn: sa.Connection,
    tbl: sa.Table,
    table: str,
    key: Mapping[str, str],
    timeframe: str,
    frame: pd.DataFrame,
    source: str | None,
    pk: tuple[str, ...],
    update_cols: tuple[str, ...],
) -> None:
    """The rows as plain tuples through the driver's ``executemany`` (same statement and values as
    :func:`upsert_rows`, without a bind processor per value: the bootstrap writes ~10⁶ bars on SQLite)."""
    names = [*key, "timeframe", "timestamp", *_DB_PRICE_COLUMNS, "source"]
    columns: list[list[Any]] = [
        *([value] * len(frame) for value in key.values()),
        [timeframe] * len(frame),
        sqlite_stamps(frame.index),
        *(frame[c].to_numpy(dtype=np.float64).tolist() for c in BAR_COLUMNS),
        [source] * len(frame),
    ]
    if table == "regime":
        names.append("constituents")
        if "constituents" in frame.columns:
            columns.append([int(v) for v in frame["constituents"].to_numpy()])
        else:
            columns.append([None] * len(frame))
    quoted = ", ".join(f'"{n}"' for n in names)
    sql = (
        f'INSERT INTO "{tbl.name}" ({quoted}) VALUES ({", ".join("?" * len(names))}) '
        f"ON CONFLICT ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in pk)}) DO UPDATE SET "
        + ", ".join(f'"{c}" = excluded."{c}"' for c in update_cols)
    )
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, list(zip(*columns, strict=True)))
    finally:
        cursor.close()


def _copy_upsert(
    conn: sa.Connection,
    tbl: sa.Table,
    table: str,
    key: Mapping[str, str],
    timeframe: str,
    frame: pd.DataFrame,
    source: str | None,
    pk: tuple[str, ...],
    update_cols: tuple[str, ...],
) -> None:
    # Only the per-bar columns travel through COPY (written by Arrow's C++ CSV writer, ~5x faster than
    # DataFrame.to_csv); the series key, timeframe and source are constants bound in the INSERT … SELECT.
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bar_cols = ["timestamp", *_DB_PRICE_COLUMNS]
    arrays = {"timestamp": pa.array(frame.index.as_unit("us").asi8, type=pa.timestamp("us", tz="UTC"))}
    for db_col, col in zip(_DB_PRICE_COLUMNS, BAR_COLUMNS, strict=True):
        arrays[db_col] = pa.array(frame[col].to_numpy(dtype=np.float64))
    if table == "regime":
        bar_cols.append("constituents")
        arrays["constituents"] = (
            pa.array(frame["constituents"].astype("int64").to_numpy())
            if "constituents" in frame.columns
            else pa.nulls(len(frame), pa.int64())
        )
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(arrays), buf, pacsv.WriteOptions(include_header=False))
    buf.seek(0)
    stage = f"stage_{tbl.name}"
    types = {"timestamp": "timestamptz", "constituents": "integer"}
    stage_cols = ", ".join(f'"{c}" {types.get(c, "double precision")}' for c in bar_cols)
    key_cols = [*SERIES_KEYS[table], "timeframe"]
    insert_cols = ", ".join(f'"{c}"' for c in [*key_cols, *bar_cols, "source"])
    select_cols = ", ".join([*(f"%({c})s" for c in key_cols), *(f'"{c}"' for c in bar_cols), "%(source)s"])
    updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in update_cols)
    params = {**{k: key[k] for k in SERIES_KEYS[table]}, "timeframe": timeframe, "source": source}
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    with dbapi.cursor() as cur:  # type: ignore[attr-defined]  # psycopg2's cursor is a context manager
        cur.execute(f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" ({stage_cols}) ON COMMIT DROP')
        cur.copy_expert(f'COPY "{stage}" ({", ".join(bar_cols)}) FROM STDIN WITH (FORMAT csv)', buf)
        cur.execute(
            f'INSERT INTO "{tbl.name}" ({insert_cols}) SELECT {select_cols} FROM "{stage}" '
            f"ON CONFLICT ({', '.join(pk)}) DO UPDATE SET {updates}",
            params,
        )


def read_bars(
    engine: Engine,
    table: TableName,
    key: Mapping[str, str],
    timeframe: str,
    *,
    limit: int | None = None,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Bars of one series in ascending time; ``limit`` keeps the *last* N (inclusive ``start``/``end``)."""
    tbl = _check_key(table, key, timeframe)
    # SQLite keeps times as naive UTC text: read the text and parse the column at once (vectorised) instead of a
    # datetime per row through SQLAlchemy's processors (most of a read's time on a long series)
    raw_text = engine.dialect.name == "sqlite"
    try:
        if raw_text:
            rows = _sqlite_rows(engine, tbl, table, key, timeframe, limit=limit, start=start, end=end)
        else:
            cols = [tbl.c.timestamp, *(tbl.c[c] for c in _DB_PRICE_COLUMNS)]
            if table == "regime":
                cols.append(tbl.c.constituents)
            query = sa.select(*cols).where(tbl.c.timeframe == timeframe)
            for k, v in key.items():
                query = query.where(tbl.c[k] == v)
            if start is not None:
                query = query.where(tbl.c.timestamp >= pd.Timestamp(start).to_pydatetime())
            if end is not None:
                query = query.where(tbl.c.timestamp <= pd.Timestamp(end).to_pydatetime())
            query = query.order_by(tbl.c.timestamp.desc())
            if limit is not None:
                query = query.limit(limit)
            with engine.connect() as conn:
                rows = [tuple(r) for r in conn.execute(query).all()]
    except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
        raise StoreError(f"read of {series_label(table, key, timeframe)} failed: {exc}") from exc
    rows.reverse()
    names = ["timestamp", *BAR_COLUMNS] + (["constituents"] if table == "regime" else [])
    # columns from plain tuples: from_records probes every SQLAlchemy Row for attributes (a raised KeyError each)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    frame = pd.DataFrame({name: list(col) for name, col in zip(names[1:], columns[1:], strict=True)}, columns=names[1:])
    frame.index = _stamp_index(columns[0], raw_text)
    for c in BAR_COLUMNS:
        frame[c] = frame[c].astype("float64")
    if "constituents" in frame.columns:
        if frame["constituents"].isna().all():
            frame = frame.drop(columns="constituents")
        else:
            frame["constituents"] = frame["constituents"].astype("Int64")
    return frame


def _stamp_index(values: tuple[Any, ...], raw_text: bool) -> pd.DatetimeIndex:
    """Bar times read back as a UTC index in microseconds (what SQLAlchemy's datetimes would give)."""
    if not raw_text:
        return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True), name="timestamp")
    if all(type(v) is str and len(v) == 26 and v[10] == " " for v in values):  # the text SQLAlchemy writes
        stamps = np.array(values, dtype="datetime64[us]")  # numpy's ISO parser: ~20× pandas' on this shape
        return pd.DatetimeIndex(stamps, name="timestamp").tz_localize("UTC")
    # text another program wrote (an offset, a "T", no fraction): pandas' ISO-8601 parser takes every form
    parsed = pd.to_datetime(pd.Series(list(values), dtype=object), utc=True, format="ISO8601")
    return pd.DatetimeIndex(parsed, name="timestamp").as_unit("us")


def _sqlite_rows(
    engine: Engine,
    tbl: sa.Table,
    table: str,
    key: Mapping[str, str],
    timeframe: str,
    *,
    limit: int | None,
    start: pd.Timestamp | None,
    end: pd.Timestamp | None,
) -> list[tuple[Any, ...]]:
    """The query of :func:`read_bars` on the driver's cursor, newest first, bar times as stored text (the same
    statement SQLAlchemy builds, without a result processor per row)."""
    names = ["timestamp", *_DB_PRICE_COLUMNS, *(("constituents",) if table == "regime" else ())]
    where = ['"timeframe" = ?', *(f'"{k}" = ?' for k in key)]
    params: list[Any] = [timeframe, *key.values()]
    if start is not None:
        where.append('"timestamp" >= ?')
        params.append(sqlite_stamps(pd.DatetimeIndex([pd.Timestamp(start)]))[0])
    if end is not None:
        where.append('"timestamp" <= ?')
        params.append(sqlite_stamps(pd.DatetimeIndex([pd.Timestamp(end)]))[0])
    sql = (
        f'SELECT {", ".join(f"{chr(34)}{n}{chr(34)}" for n in names)} FROM "{tbl.name}" '
        f'WHERE {" AND ".join(where)} ORDER BY "timestamp" DESC'
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def last_bar_ts(engine: Engine, table: TableName, key: Mapping[str, str], timeframe: str) -> pd.Timestamp | None:
    """Open time of the newest stored bar of a series, or None (resumable backfills start after it)."""
    tbl = _check_key(table, key, timeframe)
    query = sa.select(sa.func.max(tbl.c.timestamp)).where(tbl.c.timeframe == timeframe)
    for k, v in key.items():
        query = query.where(tbl.c[k] == v)
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return None if value is None else pd.Timestamp(value).tz_convert("UTC")


def bar_timestamps(
    engine: Engine,
    table: TableName,
    key: Mapping[str, str],
    timeframe: str,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> pd.DatetimeIndex:
    """Open times of the stored bars of one series (inclusive ``start``/``end``), ascending: what a backfill
    that repairs holes compares with the bars it should have."""
    tbl = _check_key(table, key, timeframe)
    query = sa.select(tbl.c.timestamp).where(tbl.c.timeframe == timeframe)
    for k, v in key.items():
        query = query.where(tbl.c[k] == v)
    if start is not None:
        query = query.where(tbl.c.timestamp >= pd.Timestamp(start).to_pydatetime())
    if end is not None:
        query = query.where(tbl.c.timestamp <= pd.Timestamp(end).to_pydatetime())
    try:
        with engine.connect() as conn:
            values = conn.execute(query.order_by(tbl.c.timestamp)).scalars().all()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"read of {series_label(table, key, timeframe)} failed: {exc}") from exc
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True), name="timestamp")


def bar_span(
    engine: Engine,
    table: TableName,
    key: Mapping[str, str],
    timeframe: str,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> tuple[int, pd.Timestamp | None]:
    """How many bars of one series are stored between ``start`` and ``end`` (inclusive), and the newest one's
    open time (None if none): one query that tells a tick whether the stored history has holes."""
    tbl = _check_key(table, key, timeframe)
    query = sa.select(sa.func.count(), sa.func.max(tbl.c.timestamp)).where(tbl.c.timeframe == timeframe)
    for k, v in key.items():
        query = query.where(tbl.c[k] == v)
    if start is not None:
        query = query.where(tbl.c.timestamp >= pd.Timestamp(start).to_pydatetime())
    if end is not None:
        query = query.where(tbl.c.timestamp <= pd.Timestamp(end).to_pydatetime())
    with engine.connect() as conn:
        count, last = conn.execute(query).one()
    return int(count or 0), None if last is None else pd.Timestamp(last).tz_convert("UTC")


def count_bars(engine: Engine, table: TableName, key: Mapping[str, str], timeframe: str) -> int:
    """Number of stored bars of one series."""
    tbl = _check_key(table, key, timeframe)
    query = sa.select(sa.func.count()).select_from(tbl).where(tbl.c.timeframe == timeframe)
    for k, v in key.items():
        query = query.where(tbl.c[k] == v)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def last_traded_bar(
    engine: Engine, table: TableName, key: Mapping[str, str], timeframe: str, at_or_before: pd.Timestamp
) -> pd.DataFrame:
    """The newest bar with volume > 0 at or before ``at_or_before`` (a composite member's own last close)."""
    tbl = _check_key(table, key, timeframe)
    query = sa.select(tbl.c.timestamp, *(tbl.c[c] for c in _DB_PRICE_COLUMNS)).where(
        tbl.c.timeframe == timeframe,
        tbl.c.volume > 0,
        tbl.c.timestamp <= pd.Timestamp(at_or_before).to_pydatetime(),
    )
    for k, v in key.items():
        query = query.where(tbl.c[k] == v)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(tbl.c.timestamp.desc()).limit(1)).all()
    frame = pd.DataFrame.from_records(rows, columns=["timestamp", *BAR_COLUMNS])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.set_index("timestamp").astype("float64")


Fingerprint = tuple[Any, ...]


def read_bars_after(
    engine: Engine,
    table: TableName,
    key: Mapping[str, str],
    timeframe: str,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp,
    after: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, Fingerprint | None, Fingerprint]:
    """The bars of one series after ``after`` up to ``end`` (all of ``start``…``end`` without ``after``), with a
    fingerprint of the stored rows in ``start``…``after`` and one of those in ``start``…``end``, from ONE
    statement (one snapshot: the rows and the fingerprints describe the same state of the table).

    A fingerprint is (rows, first and last open time, sum of each of open, high, low, close, volume): a bar
    written, rewritten or removed in the range changes it (unless the changes cancel in every sum to the last
    bit). It lets a caller that holds the bars of ``start``…``after`` check them without reading them again.
    Returns (bars ``open``…``volume`` ascending, fingerprint up to ``after`` or None, fingerprint up to ``end``).
    """
    from regime_tasks.store.schema import UTCDateTime

    tbl = _check_key(table, key, timeframe)
    # SQL text with bound values: building the same statement as SQLAlchemy expressions took ~3 ms a call, more
    # than SQLite took to run it. Times come back as the driver gives them (SQLite: the stored text).
    params: dict[str, Any] = {
        "tf": timeframe,
        "start": start,
        "end": end,
        **{f"k{i}": v for i, v in enumerate(key.values())},
    }
    where = " AND ".join(
        [
            '"timeframe" = :tf',
            *(f'"{k}" = :k{i}' for i, k in enumerate(key)),
            '"timestamp" >= :start',
            '"timestamp" <= :end',
        ]
    )
    bounds = ["after", "end"] if after is not None else ["end"]
    aggs = []
    for upto in bounds:
        inside = f'CASE WHEN "timestamp" <= :{upto} THEN'
        aggs += [f"count({inside} 1 END)", f'min({inside} "timestamp" END)', f'max({inside} "timestamp" END)']
        aggs += [f'sum({inside} "{col}" END)' for col in _DB_PRICE_COLUMNS]
    newer = ' AND "timestamp" > :after' if after is not None else ""
    cols = ", ".join(f'"{col}"' for col in ("timestamp", *_DB_PRICE_COLUMNS))
    sql = (
        f'SELECT fp.*, bars.* FROM (SELECT {", ".join(aggs)} FROM "{tbl.name}" WHERE {where}) AS fp '
        f'LEFT OUTER JOIN (SELECT {cols} FROM "{tbl.name}" WHERE {where}{newer}) AS bars ON 1 = 1 '
        'ORDER BY bars."timestamp"'
    )  # one row of fingerprints, joined to every new bar (kept once, with NULL bars, when there is none)
    binds = [sa.bindparam(name, type_=UTCDateTime()) for name in ("start", "end", *(("after",) if after else ()))]
    if after is not None:
        params["after"] = after
    params.update(
        {name: pd.Timestamp(params[name]).to_pydatetime() for name in ("start", "end", "after") if name in params}
    )
    try:
        with engine.connect() as conn:
            result = [tuple(r) for r in conn.execute(sa.text(sql).bindparams(*binds), params).all()]
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(f"read of {series_label(table, key, timeframe)} failed: {exc}") from exc
    width = len(aggs) // len(bounds)
    first = result[0]
    prints = [tuple(first[k * width : (k + 1) * width]) for k in range(len(bounds))]
    bars = [r[len(aggs) :] for r in result if r[len(aggs)] is not None]
    columns = list(zip(*bars, strict=True)) if bars else [() for _ in range(6)]
    frame = pd.DataFrame(
        {name: np.asarray(col, dtype=np.float64) for name, col in zip(BAR_COLUMNS, columns[1:], strict=True)},
        index=_stamp_index(columns[0], engine.dialect.name == "sqlite"),
    )
    return frame, (prints[0] if after is not None else None), prints[-1]
