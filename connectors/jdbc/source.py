"""The ``jdbc`` source: polls tables or a query through SQLAlchemy 2.

One partition per table (or ``query_name`` for a query); its position is where to resume:

* ``bulk``: ``{"rows": n}`` rows delivered so far (the read is ordered by the key, so a
  restart skips exactly those with ``OFFSET n``), ``{"rows": n, "done": true}`` at the end;
  the source is bounded. Rows are streamed with a server-side cursor (psycopg named cursor,
  PyMySQL ``SSCursor``), so memory stays flat whatever the table's size.
* ``incrementing``: ``{"id": v}``, the last ``incrementing_column`` value read; the next poll
  reads ``id > v`` in id order.
* ``timestamp``: ``{"ts": "…"}``, the last ``timestamp_column`` value read; the next poll
  reads ``ts > last AND ts <= now - delay`` (the database's clock), ordered by ts. The
  ``delay`` is what keeps a row committed late by a long transaction from being skipped: its
  timestamp is older than its commit, and a poll that had already moved past it would never
  read it (the known loss of Kafka Connect's JDBC source without
  ``timestamp.delay.interval.ms``).
* ``timestamp+incrementing``: ``{"ts": …, "id": …}``; reads ``(ts, id) > (last ts, last
  id)`` up to ``now - delay``, ordered by (ts, id).

Records: ``data`` the row, values JSON-safe and exact (DECIMAL/NUMERIC as text, dates and
times ISO 8601 (PostgreSQL's ``infinity`` and years BC or past 9999 as PostgreSQL writes
them), floats as numbers (NaN and the infinities as the strings ``NaN``, ``Infinity``,
``-Infinity``), MySQL TIME / PostgreSQL INTERVAL as ``[-]HH:MM:SS[.ffffff]``, bytes base64,
JSON as JSON, arrays as lists, UUID and network types as text); ``type`` ``jdbc.row``;
``subject`` the table; ``partitionkey`` the key's text (as the ``canal`` source writes it:
one column's text as it is, several columns' texts escaped and joined by ``|``); ``id``
``<table>:<key text>`` (``<table>:<row number>`` in bulk mode without a key), the same on a
replay; names and key texts spelled as CloudEvents Strings (``eventrules.spelled_string``);
``source`` ``jdbc:<dialect>://<host>/<database>``, percent-encoded.

Batches: at most ``batch_size`` rows, and a batch stops growing once its rows' data reach
:data:`BATCH_BYTES` (the row that crosses it is kept, so a poll always makes progress; one
huge row alone is a batch). Rows are fetched through a server-side cursor in small chunks
(``fetchmany``) sized from the largest row seen, so the rows in memory are bounded too, not
only the batch: a ``LIMIT`` query's rows are not all loaded at once. The position is the last
row returned, so a poll cut short by the bound continues right after it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import fnmatch
import ipaddress
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from meshconnect import (
    ConfigError,
    MeshconnectError,
    Position,
    Record,
    Source,
    SourceBatch,
    eventrules,
)
from meshconnect.batchbytes import BATCH_BYTES, values_bytes
from meshconnect.positioncheck import (
    Check,
    boolean,
    check_stored_fields,
    fields_problem,
    partition_problem,
    whole,
)

from .config import JdbcSourceConfig
from .engine import (
    classify_db_error,
    is_date_out_of_range,
    make_engine,
    reflect,
    text_for_dates_out_of_range,
)

__all__ = ["JdbcSource", "json_safe"]


def _time_text(v: dt.timedelta) -> str:
    total = v.days * 86_400_000_000 + v.seconds * 1_000_000 + v.microseconds
    sign = "-" if total < 0 else ""
    secs, micro = divmod(abs(total), 1_000_000)
    h, rest = divmod(secs, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h:02d}:{m:02d}:{s:02d}" + (f".{micro:06d}" if micro else "")


def _raw_column(column: Any) -> Any:
    """A column as the driver gives it where SQLAlchemy's MySQL types would change the value:
    its TIME result processor folds a duration into a time of day (``838:59:59`` became
    ``22:59:59``) and its SET one makes a Python set; MySQL's own text (``a,b``) and PyMySQL's
    timedelta are what the docs promise."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql

    if isinstance(column.type, mysql.SET):
        return sa.cast(column, sa.CHAR).label(column.name)
    if isinstance(column.type, mysql.TIME):
        return sa.type_coerce(column, sa.types.NullType()).label(column.name)
    return column


def json_safe(v: Any, in_json: bool = False) -> Any:
    """A column value as an exact JSON-safe value (see the module docstring). ``in_json``: a
    value inside a JSON/array column, whose numbers stay numbers (exact ``Decimal``s) where a
    DECIMAL column's value is its exact text."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        # PostgreSQL's NaN and infinities, which JSON has no number for: its own spelling
        return v if math.isfinite(v) else _NON_FINITE[str(v)]
    if isinstance(v, Decimal):
        return v if in_json and v.is_finite() else format(v, "f")
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            return v.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
        return v.isoformat()
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return _time_text(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, dict):
        return {str(k): json_safe(x, True) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x, True) for x in v]
    if isinstance(v, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(v)
    return str(v)


def fetch_bounded(
    result: Any, limit: int, room: int, biggest: int = 0
) -> tuple[list[Any], list[Any], str, int]:
    """Rows of ``result`` (a streaming result: ``fetchmany`` reads from the server) until
    ``limit`` rows, or until their data reach ``room`` bytes, the row that crosses it kept.
    Chunks grow from one row while no row size is known (``biggest``, the largest row of
    earlier reads, 0 at first), then never ask for more rows than fit in what is left of
    ``room`` at the largest size seen, so the rows held stay near ``room`` too. Returns the
    rows, the rows fetched after the crossing one (to hand out later), why it stopped
    (``"end"``: ``result`` is exhausted, ``"bytes"``: the bound, ``"limit"``) and the largest
    row's size."""
    rows: list[Any] = []
    size = 0
    step = limit if biggest else 1  # row sizes known: one fetch of as many as fit
    while len(rows) < limit:
        want = min(limit - len(rows), step)
        if biggest:
            want = min(want, max(1, (room - size) // biggest))
        chunk = result.fetchmany(want)
        mapping = bool(chunk) and isinstance(chunk[0], Mapping)  # once: hasattr on a Row is slow
        for i, row in enumerate(chunk):
            n = values_bytes(row.values() if mapping else row)
            biggest = max(biggest, n)
            size += n
            if size >= room:
                rows.extend(chunk[: i + 1])
                return rows, list(chunk[i + 1 :]), "bytes", biggest
        rows.extend(chunk)
        if len(chunk) < want:
            return rows, [], "end", biggest
        step *= 2
    return rows, [], "limit", biggest


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_PLAIN = frozenset({int, str, bool, type(None)})  # a float may be NaN: through json_safe
_JSON = "application/json"


def _key_part(v: Any) -> str:
    text = v if isinstance(v, str) else str(json_safe(v))
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _composite(joined: str) -> str:
    """A composite key's text (backslashes already doubled) as a CloudEvents String: each
    character a String may not hold as ``\\uXXXX``, as the canal source writes it."""
    return eventrules.valid_string(joined) if joined else joined


def _source_uri(backend: str, host: str | None, database: str | None) -> str:
    """``jdbc:<backend>://<host>/<database>``, percent-encoded (a path with a space or a
    ``#`` is no URI-reference as it is); an IPv6 host in brackets."""
    host = host or ""
    if ":" in host:
        host = f"[{host}]"
    path = urllib.parse.quote(database or "", safe="/")
    return f"jdbc:{backend}://{urllib.parse.quote(host, safe='[]:')}/{path}"


class _Part:
    """One table (or the query) being read."""

    def __init__(self, name: str, table: Any, key: list[str], position: Position) -> None:
        self.name = name
        #: ``name`` as a CloudEvents String (``subject`` and the start of ``id``): a tab, a
        #: newline or a noncharacter as ``\\uXXXX``, backslashes doubled then.
        self.subject = eventrules.spelled_string(name)
        self.table = table  # a Table, or None for the query
        self.key = key
        self.position: dict[str, Any] = dict(position)
        self.result: Any = None  # bulk: the open streaming result
        self.conn: Any = None
        self.progress: Any = None
        #: bulk: rows fetched past the last batch's byte bound, handed out first next time.
        self.pending: list[Any] = []
        #: The largest row of the last poll (bytes, ``values_bytes``): sizes the fetches.
        self.row_bytes = 0


class JdbcSource(Source[JdbcSourceConfig]):
    """Bulk or incremental reads of tables or a query (see the module docstring)."""

    empty_position = "reads each table from its beginning"

    def __init__(self, config: JdbcSourceConfig, context: Any) -> None:
        super().__init__(config, context)
        self.bounded = config.mode == "bulk"
        self.engine: Any = None
        self.parts: list[_Part] = []
        self.next_poll = 0.0
        self.turn = 0
        self.source = ""
        self.dates_as_text = False  # PostgreSQL: see _out_of_range_dates

    # -- lifecycle -------------------------------------------------------------------------

    def position_problem(self, partition: str, position: Position) -> str | None:
        """A table (``table``, one ``tables`` matches) or the ``query_name``, with the fields
        of the mode (module docstring); a cursor value of the type the source writes."""
        c = self.config
        if c.query is not None:
            problem = partition_problem(partition, [c.query_name], "config.query_name")
        elif c.table is not None:
            problem = partition_problem(partition, [c.table], "config.table")
        elif not any(fnmatch.fnmatchcase(partition, p) for p in c.tables or []):
            patterns = ", ".join(c.tables or [])
            problem = f"not a table this source reads (tables: {patterns})"
        else:
            problem = None
        if problem:
            return problem
        fields, required = self._mode_fields()
        return fields_problem(position, fields, required)

    def _mode_fields(self) -> tuple[dict[str, Check], list[str]]:
        """The fields of a position in this mode, and those it always has."""
        mode = self.config.mode
        if mode == "bulk":
            return {"rows": whole(), "done": boolean}, ["rows"]
        fields = {"ts": _TS_CHECK, "id": _ID_CHECK}
        needed = {"incrementing": ["id"], "timestamp": ["ts"]}.get(mode, ["ts", "id"])
        return {k: fields[k] for k in needed}, needed

    def _check_stored(self, name: str, position: Position) -> None:
        """``ConfigError`` for a stored position whose fields of this mode have another type
        than the source writes (``{"rows": "x"}`` failed every start with ValueError, a
        negative ``rows`` read the table again or failed every poll). Fields of another mode
        are left alone: a pipeline whose mode changed reads from the beginning, as before."""
        fields, _ = self._mode_fields()
        check_stored_fields(f"jdbc source {self.context.name}", name, position, fields)

    async def start(self, positions: Mapping[str, Position]) -> None:
        self.engine = make_engine(self.config, self.context.base_dir)
        url = self.engine.url
        self.source = _source_uri(url.get_backend_name(), url.host, url.database)
        await asyncio.to_thread(self._start_sync, positions)

    def _start_sync(self, positions: Mapping[str, Position]) -> None:
        import sqlalchemy as sa

        c = self.config
        if c.query is not None:
            key = c.key or [x for x in (c.timestamp_column, c.incrementing_column) if x]
            position = positions.get(c.query_name, {})
            self._check_stored(c.query_name, position)
            self.parts = [_Part(c.query_name, None, key, position)]
            return
        names = [c.table] if c.table is not None else self._match_tables()
        if not names:
            raise ConfigError(f"jdbc source {self.context.name}: no table matches {c.tables}")
        for name in names:
            try:
                table = reflect(name, self.engine, c.db_schema)
            except sa.exc.NoSuchTableError:
                raise ConfigError(
                    f"jdbc source {self.context.name}: table {name!r} does not exist"
                ) from None
            if self.engine.dialect.name == "sqlite":
                # SQLite keeps NUMERIC as an integer or a binary float: give it as stored,
                # not as a Decimal padded to ten digits.
                for column in table.c:
                    if isinstance(column.type, sa.Numeric) and not isinstance(
                        column.type, sa.Float
                    ):
                        column.type = sa.Numeric(asdecimal=False)
            for col in (c.incrementing_column, c.timestamp_column, *(c.key or [])):
                if col and col not in table.c:
                    raise ConfigError(
                        f"jdbc source {self.context.name}: table {name!r} has no column {col!r}"
                    )
            key = list(c.key or [col.name for col in table.primary_key.columns])
            position = positions.get(name, {})
            self._check_stored(name, position)
            self._check_cursor(name, table, position)
            self.parts.append(_Part(name, table, key, position))

    def _check_cursor(self, name: str, table: Any, position: Position) -> None:
        """``ConfigError`` for a stored ``id`` or ``ts`` of another type than the column's
        values the source writes (set by hand: the position check cannot know the column's
        type). Text for an integer column is compared with every row as text, which SQLite
        orders after every number (nothing was ever read again) and PostgreSQL refuses at
        every poll; a number for a date-time column failed every poll."""
        c = self.config
        checks = [("id", c.incrementing_column), ("ts", c.timestamp_column)]
        for field, column in checks:
            last = position.get(field)
            if column is None or last is None:
                continue
            try:
                kind = table.c[column].type.python_type
            except NotImplementedError:
                continue
            if kind is int and type(last) is not int:
                must = "a whole number"
            elif field == "ts" and kind in (dt.datetime, dt.date) and not isinstance(last, str):
                must = 'an ISO 8601 date-time such as "2024-05-01T10:00:00"'
            else:
                continue
            raise ConfigError(
                f"jdbc source {self.context.name}: the stored position of table {name!r} has "
                f"{field} {last!r}, but {column} is {_KIND_NAMES[kind]} column: {field} must be "
                f"{must}; set it again with `meshconnect offsets reset`"
            )

    def _match_tables(self) -> list[str]:
        import sqlalchemy as sa

        names = sa.inspect(self.engine).get_table_names(schema=self.config.db_schema)
        patterns = self.config.tables or []
        return sorted(
            n
            for n in names
            if any(fnmatch.fnmatchcase(n, p) for p in patterns)
            and not any(fnmatch.fnmatchcase(n, p) for p in self.config.exclude)
        )

    async def stop(self) -> None:
        parts, self.parts = self.parts, []
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(self._close_all, parts, engine)

    @staticmethod
    def _close_all(parts: list[_Part], engine: Any) -> None:
        for part in parts:
            _close_part(part)
        engine.dispose()

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_db_error(exc)

    # -- poll ------------------------------------------------------------------------------

    async def poll(self) -> SourceBatch | None:
        if self.config.mode == "bulk":
            return await asyncio.to_thread(self._dates_out_of_range, self._bulk)
        wait = self.next_poll - time.monotonic()
        if wait > 0:
            await asyncio.sleep(min(wait, 1.0))
            return SourceBatch([])
        batch = await asyncio.to_thread(self._dates_out_of_range, self._incremental)
        if not batch.records:
            self.next_poll = time.monotonic() + self.config.poll_interval
        return batch

    def _dates_out_of_range(self, read: Any) -> Any:
        """``read()``; when a PostgreSQL date or timestamp out of Python's range (``infinity``,
        a year BC) failed the fetch, once more from the same position with such values loaded
        as PostgreSQL's text. Nothing was delivered from the failed fetch: the bulk read is
        reopened at its row count, an incremental one repeats its query."""
        try:
            return read()
        except Exception as exc:
            if self.dates_as_text or not is_date_out_of_range(exc):
                raise
        self.dates_as_text = True
        for part in self.parts:
            _close_part(part)
        text_for_dates_out_of_range(self.engine)
        return read()

    def _rows(self, part: _Part, names: list[str], rows: Any, start: int) -> list[Record]:
        """Records of tuples (the bulk path: the per-row work kept to a minimum)."""
        plain = _PLAIN
        keys = [names.index(k) for k in part.key] if set(part.key) <= set(names) else []
        source, name, fast, spell = (
            self.source,
            part.subject,
            Record.fast,
            eventrules.spelled_string,
        )
        now = _now_iso()  # ingestion time: a row has no event time the source knows
        out = []
        for i, row in enumerate(rows, start):
            data = {
                k: v if type(v) in plain else json_safe(v) for k, v in zip(names, row, strict=True)
            }
            if len(keys) == 1:
                v = row[keys[0]]
                key = spell(v) if type(v) is str else str(json_safe(v))  # one column: as it is
            elif keys:
                key = _composite("|".join(_key_part(row[j]) for j in keys))
            else:
                out.append(
                    fast(data, f"{name}:{i}", source, "jdbc.row", name, _JSON, now, None, {})
                )
                continue
            out.append(
                fast(data, f"{name}:{key}", source, "jdbc.row", name, _JSON, now, None,
                     {"partitionkey": key})
            )  # fmt: skip
        return out

    def _record(
        self, part: _Part, row: Mapping[str, Any], number: int | None = None, now: str = ""
    ) -> Record:
        data = {k: json_safe(v) for k, v in row.items()}
        ext: dict[str, Any] = {}
        if part.key and all(k in row for k in part.key):
            if len(part.key) == 1:
                v = row[part.key[0]]
                key_text = eventrules.spelled_string(v) if isinstance(v, str) else str(json_safe(v))
            else:
                key_text = _composite("|".join(_key_part(row[k]) for k in part.key))
            ext["partitionkey"] = key_text
            rid = f"{part.subject}:{key_text}"
            if self.config.mode in ("timestamp", "timestamp+incrementing"):
                ts = self.config.timestamp_column or ""
                rid = f"{part.subject}:{key_text}@{json_safe(row[ts]) if ts in row else ''}"
        else:
            rid = f"{part.subject}:{number}"
        return Record(
            data,
            id=rid,
            source=self.source,
            type="jdbc.row",
            subject=part.subject,
            time=now or _now_iso(),  # ingestion time
            datacontenttype="application/json",
            extensions=ext,
        )

    # -- bulk ------------------------------------------------------------------------------

    def _bulk(self) -> SourceBatch | None:
        import sqlalchemy as sa

        for part in self.parts:
            if part.position.get("done"):
                continue
            done = int(part.position.get("rows", 0))
            if part.result is None:
                stmt = self._select(part)
                if part.key:
                    stmt = stmt.order_by(*[self._col(part, k) for k in part.key])
                if done:
                    stmt = stmt.offset(done)
                total = None
                if part.table is not None:
                    with self.engine.connect() as conn:
                        total = conn.execute(
                            sa.select(sa.func.count()).select_from(part.table)
                        ).scalar()
                part.progress = self.context.progress(
                    f"jdbc bulk {part.name}", total=total, unit="rows"
                )
                part.progress.update(done=done)
                part.conn = self.engine.connect().execution_options(
                    stream_results=True,
                    max_row_buffer=self.config.batch_size,
                    yield_per=self.config.batch_size,
                )
                part.result = part.conn.execute(stmt)
            rows, exhausted = self._bulk_rows(part)
            records = self._rows(part, list(part.result.keys()), rows, done)
            done += len(records)
            if exhausted and not part.pending:
                part.position = {"rows": done, "done": True}
                part.progress.update(done=done)
                _close_part(part)
            else:
                part.position = {"rows": done}
                part.progress.advance(len(records))
            return SourceBatch(records, {part.name: dict(part.position)})
        return None

    def _bulk_rows(self, part: _Part) -> tuple[list[Any], bool]:
        """The next batch's rows: those left over by the last one first, then fetched, up to
        ``batch_size`` rows and :data:`BATCH_BYTES`; whether the result is exhausted."""
        limit = self.config.batch_size
        rows: list[Any] = []
        room = BATCH_BYTES
        if part.pending:
            pending = part.pending
            for i, row in enumerate(pending):
                if len(rows) == limit or room <= 0:
                    part.pending = pending[i:]
                    return rows, False
                rows.append(row)
                room -= values_bytes(row.values() if isinstance(row, Mapping) else row)
            part.pending = []
            if len(rows) == limit or room <= 0:
                return rows, False
        more, part.pending, why, part.row_bytes = fetch_bounded(
            part.result, limit - len(rows), room, part.row_bytes
        )
        return rows + more, why == "end"

    # -- incremental -----------------------------------------------------------------------

    def _incremental(self) -> SourceBatch:
        n = len(self.parts)
        for i in range(n):
            part = self.parts[(self.turn + i) % n]
            batch = self._poll_part(part)
            if batch is not None:
                self.turn = (self.turn + i + 1) % n
                return batch
        return SourceBatch([])

    def _select(self, part: _Part) -> Any:
        import sqlalchemy as sa

        if part.table is not None:
            return sa.select(*(_raw_column(c) for c in part.table.c))
        return sa.select(sa.literal_column("*")).select_from(
            sa.text(f"({self.config.query}\n) AS q")
        )

    def _col(self, part: _Part, name: str) -> Any:
        import sqlalchemy as sa

        if part.table is not None:
            return part.table.c[name]
        return sa.column(name)

    def _db_now(self, conn: Any) -> dt.datetime:
        """The database's clock: the session's local time, or with ``timezone`` the time
        in that zone (aware; a column without a time zone is compared with its wall time)."""
        import sqlalchemy as sa

        name = self.engine.dialect.name
        zone = self.config.timezone
        if zone is not None:
            import zoneinfo

            if name == "postgresql":
                now = conn.execute(sa.text("SELECT now()")).scalar()
            elif name in ("mysql", "mariadb"):
                utc = conn.execute(sa.text("SELECT UTC_TIMESTAMP(6)")).scalar()
                now = utc.replace(tzinfo=dt.UTC)
            else:
                text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar()
                now = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            return now.astimezone(zoneinfo.ZoneInfo(zone))  # aware: see _poll_part
        if name == "postgresql":
            value = conn.execute(sa.text("SELECT LOCALTIMESTAMP")).scalar()
        elif name in ("mysql", "mariadb"):
            value = conn.execute(sa.text("SELECT NOW(6)")).scalar()
        else:  # SQLite: UTC
            text = conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar()
            value = dt.datetime.fromisoformat(text)
        return value

    def _poll_part(self, part: _Part) -> SourceBatch | None:
        import sqlalchemy as sa

        c = self.config
        limit = c.batch_size
        stmt = self._select(part)
        inc = self._col(part, c.incrementing_column) if c.incrementing_column else None
        ts = self._col(part, c.timestamp_column) if c.timestamp_column else None
        pos = part.position
        with self.engine.connect() as conn:
            if c.mode == "incrementing":
                assert inc is not None
                if "id" in pos:
                    stmt = stmt.where(inc > sa.bindparam("last", pos["id"], type_=inc.type))
                stmt = stmt.order_by(inc)
            else:
                assert ts is not None
                ts_type = ts.type if part.table is not None else sa.DateTime()
                sqlite = self.engine.dialect.name == "sqlite"

                def value(name: str, v: Any) -> Any:
                    bound = sa.bindparam(name, v, type_=ts_type)
                    return sa.func.strftime(_SQLITE_TS, bound) if sqlite else bound

                # SQLite keeps a timestamp as text in whatever form it was written
                # (CURRENT_TIMESTAMP's '2024-01-01 10:00:00', ISO's 'T'), and compared it as
                # text with the bound '2024-01-01 10:00:00.000000': a row in another form was
                # read again at every poll or never equal to itself (rows tied on it were
                # lost, or a batch of them stuck the source). Both sides in one form.
                key = sa.func.strftime(_SQLITE_TS, ts) if sqlite else ts
                upper = self._db_now(conn) - dt.timedelta(seconds=c.delay)
                if upper.tzinfo is not None and not _aware(ts_type):
                    upper = upper.replace(tzinfo=None)  # the wall time in `timezone`
                stmt = stmt.where(key <= value("upper", upper))
                last_ts = _parse_ts(pos.get("ts"))
                if last_ts is not None:
                    last = value("last_ts", last_ts)
                    if c.mode == "timestamp":
                        stmt = stmt.where(key > last)
                    else:
                        assert inc is not None
                        last_id = sa.bindparam("last_id", pos.get("id"), type_=inc.type)
                        stmt = stmt.where(sa.or_(key > last, sa.and_(key == last, inc > last_id)))
                stmt = stmt.order_by(key, *([inc] if inc is not None else []))
            if part.row_bytes:  # ask for no more rows than fit (PyMySQL reads the rest)
                limit = min(limit, BATCH_BYTES // part.row_bytes + 1)
            result = (
                conn.execution_options(stream_results=True, max_row_buffer=limit)
                .execute(stmt.limit(limit))
                .mappings()
            )
            try:
                rows, _, why, part.row_bytes = fetch_bounded(
                    result, limit, BATCH_BYTES, part.row_bytes
                )
            finally:
                result.close()
            if c.mode == "timestamp" and rows and why != "end":
                # Rows tied on the last timestamp may continue past the limit: keep them all
                # in one batch (the position cannot say "half of this timestamp"), or, when
                # the byte bound cut the batch, leave them all to the next poll.
                same = _same_ts_key(sqlite)
                tail = rows[-1][c.timestamp_column]
                head = [r for r in rows if same(r[c.timestamp_column]) != same(tail)]
                if head and why == "bytes":
                    rows = head
                else:
                    rest = (
                        conn.execute(self._select(part).where(key == value("tie", tail)))
                        .mappings()
                        .all()
                    )
                    rows = head + list(rest)
        if not rows:
            return None
        last_row = rows[-1]
        if c.mode == "incrementing":
            part.position = {"id": _pos_value(last_row[c.incrementing_column])}
        else:
            part.position = {"ts": _ts_text(last_row[c.timestamp_column])}
            if c.mode == "timestamp+incrementing":
                part.position["id"] = _pos_value(last_row[c.incrementing_column])
        now = _now_iso()
        records = [self._record(part, r, now=now) for r in rows]
        return SourceBatch(records, {part.name: dict(part.position)})


def _close_part(part: _Part) -> None:
    part.pending = []
    if part.result is not None:
        try:
            part.result.close()
        except Exception:
            pass
        part.result = None
    if part.conn is not None:
        try:
            part.conn.close()
        except Exception:
            pass
        part.conn = None
    if part.progress is not None:
        part.progress.close()
        part.progress = None


#: SQLite: the one form both sides of a timestamp comparison are put in (milliseconds: what
#: SQLite's date functions keep; rows within one millisecond are read together as ties).
_SQLITE_TS = "%Y-%m-%d %H:%M:%f"


def _same_ts_key(sqlite: bool) -> Any:
    """What makes two timestamp values tied, as the database compares them."""
    if not sqlite:
        return lambda v: v

    def key(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.replace(microsecond=v.microsecond // 1000 * 1000, tzinfo=None)
        return v

    return key


def _aware(sa_type: Any) -> bool:
    return bool(getattr(sa_type, "timezone", False))


def _pos_value(v: Any) -> Any:
    return v if isinstance(v, int) else str(json_safe(v))


def _ts_text(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return v if isinstance(v, str | int) else str(v)


#: How a column of these Python types is named in messages.
_KIND_NAMES = {int: "an integer", dt.datetime: "a date-time", dt.date: "a date"}


def _is_ts_text(v: str) -> bool:
    """Whether ``v`` is a timestamp as :func:`_ts_text` writes one (ISO 8601, or a number's
    text)."""
    try:
        dt.datetime.fromisoformat(v)
    except ValueError:
        return _NUMBER_TEXT.fullmatch(v) is not None
    return True


_NUMBER_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


#: ``id``: an integer column's value, or another type's text (:func:`_pos_value`).
_ID_CHECK = Check(
    "the incrementing column's last value (a whole number or a string)",
    lambda v: type(v) is int or isinstance(v, str),
)
#: ``ts``: the timestamp column's last value (:func:`_ts_text`).
_TS_CHECK = Check(
    "the timestamp column's last value (an ISO 8601 date-time such as "
    '"2024-05-01T10:00:00", or a whole number)',
    lambda v: type(v) is int or (isinstance(v, str) and _is_ts_text(v)),
)


def _parse_ts(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return dt.datetime.fromisoformat(v)
        except ValueError:
            return v
    return v


def _now_iso() -> str:
    """The ingestion time: now, as an RFC 3339 timestamp in UTC."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
