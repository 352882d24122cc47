"""``LibraryReader``: the binlog reader on top of ``pymysqlreplication``'s BinLogStreamReader.

It implements :class:`~meshconnect.connectors.canal.events.BinlogReader`: a background thread
iterates the library's blocking stream and puts converted events into a bounded queue, from
which :meth:`LibraryReader.read` takes them with a timeout (the library has no timeout of its
own). A full queue blocks the thread, which stops reading the socket: back-pressure.

What it corrects in the library's values (see the table in ``events.py``): the library
decodes ints, floats, DECIMAL, BIT, blobs and MySQL's JSON itself; the rest it would get wrong,
so before the rows of a table are decoded its column objects are adjusted from the table map
as ``_rowcodec`` parses it (from the event's raw bytes):

* text columns decode through the server's own conversion (:mod:`._charsets`) instead of the
  Python codec of the charset's name (which reads ``utf16`` as BOM-sniffing UTF-16 and fails
  on ``swe7`` and on bytes outside the codec);
* ENUM and SET member names are ours (the library reads them as UTF-8 and makes others '');
* temporal columns (DATE, DATETIME, TIMESTAMP, TIME, old and new formats) are read as raw
  bytes and decoded by ``_rowcodec``: the library turns zero and partly-zero dates into None
  (losing ``0001-00-00`` and the time of ``0000-00-00 14:02:10``), a zero TIMESTAMP into
  1970-01-01 and negative TIME(fsp) wrong;
* SET comes as a Python ``set`` (``None`` when empty); it becomes a tuple in definition order;
  BIT comes as a string of ``0``/``1``; it becomes an ``int``; YEAR ``0000`` comes as 1900; it
  becomes 0; MySQL JSON may carry ``bytes`` keys and strings; they become ``str``. MariaDB's
  JSON is a LONGTEXT alias and arrives as text; the source parses it (it knows the column from
  ``information_schema``).

Positioning: the reader always uses ``COM_BINLOG_DUMP`` with file and position (never the
library's MariaDB GTID path, which ignores ``log_file``/``log_pos``). Rows events of tables the
``table_filter`` rejects are dropped before their rows are decoded (the library decodes rows
lazily, on first access to ``.rows``). A MySQL compressed transaction (TRANSACTION_PAYLOAD,
which the library cannot decode and would drop silently) raises an error instead.
"""

from __future__ import annotations

import queue
import struct
import threading
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from meshconnect import ConfigError, RetriableError

from . import _charsets
from . import _rowcodec as ft  # the binlog column type codes and codecs
from .events import (
    BATCH_BYTES,
    Column,
    Event,
    GtidEvent,
    HeartbeatEvent,
    QueryEvent,
    RotateEvent,
    RowsEvent,
    Table,
    TableFilter,
    XidEvent,
    event_bytes,
)

__all__ = ["LibraryReader"]

#: ``MODE_ANSI_QUOTES`` in a query event's ``sql_mode`` status variable.
_ANSI_QUOTES = 4

_TRANSACTION_PAYLOAD_EVENT = 40


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _decode_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {_decode_json(k): _decode_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    return value


#: Temporal types the library decodes lossily (zero dates become None, zero TIMESTAMP 1970,
#: old TIME unsigned): read raw, decoded by ``_rowcodec``. The size of each, given the fsp.
_RAW_SIZE: dict[int, Callable[[int], int]] = {
    ft.DATE: lambda fsp: 3,
    ft.NEWDATE: lambda fsp: 3,
    ft.TIME: lambda fsp: 3,
    ft.TIMESTAMP: lambda fsp: 4,
    ft.DATETIME: lambda fsp: 8,
    ft.TIME2: lambda fsp: 3 + (fsp + 1) // 2,
    ft.TIMESTAMP2: lambda fsp: 4 + (fsp + 1) // 2,
    ft.DATETIME2: lambda fsp: 5 + (fsp + 1) // 2,
}


def _raw_temporal(lib_col: Any, column: Column) -> Callable[[Any], Any]:
    """Make the library read this column as BIT(8 * size), i.e. its raw bytes as a string of
    bits, and return the function turning that string into the value ``_rowcodec`` decodes."""
    size = _RAW_SIZE[column.type](int(column.metadata or 0))
    lib_col.type = ft.BIT
    lib_col.bits = 8 * size
    lib_col.bytes = size
    read = ft.column_reader(column)

    def decode(bits: Any) -> Any:
        return read(int(bits, 2).to_bytes(size, "big"), 0)[0]

    return decode


def _converter(col: Any, column: Column) -> Callable[[Any], Any] | None:
    """A function fixing the library's value of this column, or None when it is fine.

    ``col`` is the library's column (adjusted here before any row is decoded), ``column`` the
    column as ``_rowcodec`` parsed the table map."""
    kind = column.type
    if kind in _RAW_SIZE:
        return _raw_temporal(col, column)
    if kind in (ft.ENUM, ft.SET):
        # The library decodes member names as UTF-8 ('' when they are not): give it ours.
        col.enum_values = ["", *column.enum_values] if column.enum_values is not None else None
        col.set_values = list(column.set_values) if column.set_values is not None else None
    if kind == ft.SET:
        order = list(column.set_values or ())

        def set_(v: Any) -> Any:
            if isinstance(v, set):
                return tuple(m for m in order if m in v)
            return v

        return set_
    if kind == ft.BIT:
        return lambda v: int(v, 2) if isinstance(v, str) else v
    if kind == ft.YEAR:
        return lambda v: 0 if v == 1900 else v
    if kind == ft.JSON:
        return _decode_json
    if column.charset is not None and getattr(col, "character_set_name", None) is not None:
        # The library decodes with Python's codec of the charset's name, strictly (utf16 as
        # BOM-sniffing UTF-16, swe7 not at all): it gets the server's own conversion instead.
        col.character_set_name = _charsets.codec_name(column.charset)
        return None
    if getattr(col, "character_set_name", None) in (None, "binary") and kind in (
        ft.STRING,
        ft.VARCHAR,
        ft.VAR_STRING,
        ft.BLOB,
    ):
        # An empty binary value comes as '' (str); BINARY(n) loses its trailing zero bytes.
        size = int(getattr(col, "max_length", 0) or 0) if kind == ft.STRING else 0

        def binary(v: Any) -> Any:
            if isinstance(v, str):
                v = v.encode("utf-8", "surrogateescape")
            return v.ljust(size, b"\0") if size else v

        return binary
    return None


def _library_column(c: Any) -> Column:
    """A column as the library parsed it (when the raw table map is not at hand)."""
    if c.type == ft.NEWDECIMAL:
        meta: Any = (getattr(c, "precision", 0), getattr(c, "decimals", 0))
    else:
        meta = getattr(c, "fsp", None) or getattr(c, "max_length", None) or 0
    return Column(
        name=c.name,
        type=c.type,
        unsigned=bool(c.unsigned),
        metadata=meta,
        charset=None,
        enum_values=tuple(c.enum_values[1:]) if c.enum_values else None,
        set_values=tuple(c.set_values) if c.set_values else None,
    )


class _TableInfo:
    """A table map (as ``_rowcodec`` parses it) plus the per-column fixes of the library's
    values, cached per library table object."""

    __slots__ = ("converters", "names", "table")

    def __init__(self, lib_table: Any, table: Table | None, table_id: int) -> None:
        if table is None or len(table.columns) != len(lib_table.columns):
            pk = lib_table.primary_key
            primary_key = (pk,) if isinstance(pk, str) and pk else tuple(pk or ())
            columns = tuple(_library_column(c) for c in lib_table.columns)
            table = Table(table_id, lib_table.schema, lib_table.table, columns, primary_key)
        self.table = table
        self.names = [c.name for c in lib_table.columns]
        self.converters = [
            (i, f)
            for i, (c, column) in enumerate(zip(lib_table.columns, table.columns, strict=True))
            if (f := _converter(c, column)) is not None
        ]

    def image(self, values: dict[str, Any], nones: Mapping[str, str] | None) -> tuple[Any, ...]:
        row = [values[n] for n in self.names]
        for i, fix in self.converters:
            v = row[i]
            if v is not None:
                row[i] = fix(v)
        if nones:
            for name, reason in nones.items():
                if reason == "empty set":  # the library's None for an empty SET
                    row[self.names.index(name)] = ()
        return tuple(row)


def _raw_table_map(event: Any) -> Table | None:
    """The TABLE_MAP event parsed by ``_rowcodec`` from its raw bytes (None when the library
    does not expose them)."""
    try:
        data = bytes(event.packet.packet.get_all_data())
    except AttributeError:
        return None
    end = len(data)
    if end > 24 and zlib.crc32(data[1 : end - 4]) == int.from_bytes(data[end - 4 :], "little"):
        end -= 4  # the CRC32 trailer
    mariadb = getattr(event, "dbms", "") == "mariadb"
    try:
        return ft.parse_table_map(data, 20, end, mariadb=mariadb)
    except (IndexError, ValueError):
        return None


class LibraryReader:
    """Streams the binlog with ``pymysqlreplication`` (see the module docstring)."""

    def __init__(
        self,
        connect: Mapping[str, Any],
        *,
        server_id: int,
        log_file: str,
        log_pos: int,
        table_filter: TableFilter | None = None,
        heartbeat_period: float | None = None,
        queue_events: int = 20000,
        queue_bytes: int = BATCH_BYTES,
    ) -> None:
        self._connect = dict(connect)
        self._server_id = server_id
        self._log_file = log_file
        self._log_pos = log_pos
        self._filter = table_filter
        self._heartbeat = heartbeat_period
        self._queue: queue.Queue[Event | _Failure] = queue.Queue(queue_events)
        #: What the queued events weigh (``event_bytes``): the thread waits while it is
        #: ``queue_bytes`` or more, so events of 8 MB rows do not pile up by the thousand.
        self._queued = 0
        self._queue_bytes = queue_bytes
        self._room = threading.Condition()
        self._stop = threading.Event()
        self._stream: Any = None
        self._tables: dict[int, tuple[Any, _TableInfo]] = {}
        #: Table maps as ``_rowcodec`` parses them, by table id (the last one seen).
        self._maps: dict[int, Table] = {}
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="canal-binlog", daemon=True)
        self._thread.start()

    # -- the protocol --------------------------------------------------------------------------

    def read(self, max_events: int, timeout: float, max_bytes: int = BATCH_BYTES) -> list[Event]:
        if self._failed is not None:
            raise self._failed
        out: list[Event] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return out
        weight = 0
        try:
            while True:
                if isinstance(item, _Failure):
                    self._failed = item.error
                    if out:
                        return out
                    raise item.error
                out.append(item)
                weight += event_bytes(item)
                if len(out) >= max_events or weight >= max_bytes:
                    return out
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return out
        finally:
            with self._room:
                self._queued -= weight
                self._room.notify_all()

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:  # unblocks the thread's socket read
                stream.close()
            except Exception:
                pass
        # Unblock a thread waiting on a full queue.
        with self._room:
            self._room.notify_all()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)

    # -- the thread ----------------------------------------------------------------------------

    def _put(self, item: Event | _Failure) -> None:
        if not isinstance(item, _Failure):
            with self._room:
                while self._queued >= self._queue_bytes and not self._stop.is_set():
                    self._room.wait(0.2)
                self._queued += event_bytes(item)
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            import pymysql
            from pymysqlreplication import BinLogStreamReader
            from pymysqlreplication import event as ev
            from pymysqlreplication import row_event as rev
        except ImportError as exc:  # pragma: no cover - the spec's requires catches this
            self._put(_Failure(ConfigError(f"canal: {exc}: pip install 'meshconnect[mysql]'")))
            return
        settings = {
            "host": self._connect["host"],
            "port": int(self._connect["port"]),
            "user": self._connect["user"],
            "password": self._connect.get("password") or "",
            "connect_timeout": 10,
        }
        if self._connect.get("skip_replicated"):  # the server leaves flagged events out
            settings["init_command"] = "SET skip_replication = 1"
        if self._heartbeat:
            settings["read_timeout"] = max(30, int(self._heartbeat * 4))
        try:
            stream = BinLogStreamReader(
                connection_settings=settings,
                server_id=self._server_id,
                log_file=self._log_file,
                log_pos=self._log_pos,
                resume_stream=True,
                blocking=True,
                slave_heartbeat=self._heartbeat,
                only_events=[
                    ev.RotateEvent,
                    ev.QueryEvent,
                    ev.XidEvent,
                    ev.GtidEvent,
                    ev.MariadbGtidEvent,
                    ev.HeartbeatLogEvent,
                    ev.NotImplementedEvent,
                    rev.WriteRowsEvent,
                    rev.UpdateRowsEvent,
                    rev.DeleteRowsEvent,
                    rev.TableMapEvent,
                ],
                filter_non_implemented_events=False,
                enable_logging=False,
            )
            self._stream = stream
            types = (ev, rev)
            for event in stream:
                if self._stop.is_set():
                    break
                converted = self._convert(event, stream.log_file, types)
                # The library's event and its packet refer to each other: a cycle only the
                # cyclic collector frees, which runs by object counts, not bytes, so events
                # of 8 MB rows piled up by the hundred as garbage (3.7 GB for 200 of them).
                # Without the event's reference to its packet both go when dropped.
                event.packet = None
                del event
                if converted is not None:
                    self._put(converted)
        except Exception as exc:
            if self._stop.is_set():
                return
            if isinstance(exc, pymysql.err.OperationalError | OSError | EOFError):
                code = exc.args[0] if exc.args else None
                if code == 1236:  # the server cannot send from this position
                    error: BaseException = ConfigError(
                        f"canal: the server refused to send the binlog from "
                        f"{self._log_file}:{self._log_pos}: {exc.args[-1]}"
                    )
                else:
                    error = RetriableError(f"canal: binlog connection lost: {exc}")
                error.__cause__ = exc
                self._put(_Failure(error))
            else:
                self._put(_Failure(exc))
        finally:
            self._stream = None
            try:
                stream.close()
            except Exception:
                pass

    def _table(self, event: Any) -> _TableInfo:
        lib_table = event.table_map[event.table_id]
        cached = self._tables.get(event.table_id)
        if cached is not None and cached[0] is lib_table:
            return cached[1]
        parsed = self._maps.get(event.table_id)
        info = _TableInfo(lib_table, parsed, event.table_id)
        self._tables[event.table_id] = (lib_table, info)
        return info

    def _convert(self, event: Any, log_file: str, types: tuple[Any, Any]) -> Event | None:
        ev, rev = types
        pos = event.packet.log_pos
        ts = event.timestamp
        if isinstance(event, rev.RowsEvent):
            if self._filter is not None and not self._filter(event.schema, event.table):
                return None  # rows never decoded
            info = self._table(event)
            image = info.image
            try:
                event.rows  # noqa: B018 - the library decodes the rows on first access
            except (AssertionError, ValueError, IndexError, KeyError, struct.error) as exc:
                raise ConfigError(
                    f"canal: the rows of {event.schema}.{event.table} at {log_file}:{pos} "
                    f"cannot be decoded ({type(exc).__name__}: {exc}); the column types in "
                    "the table map do not describe the values (MariaDB's pre-10.1 temporal "
                    "format? run ALTER TABLE ... FORCE with mysql56_temporal_format=ON)"
                ) from exc
            if isinstance(event, rev.UpdateRowsEvent):
                before, after = [], []
                for r in event.rows:
                    before.append(image(r["before_values"], r.get("before_none_sources")))
                    after.append(image(r["after_values"], r.get("after_none_sources")))
                return RowsEvent(
                    log_file, pos, ts, "update", info.table, after, before, event.event_size
                )
            rows = [image(r["values"], r.get("none_sources")) for r in event.rows]
            kind: Literal["insert", "delete"] = (
                "insert" if isinstance(event, rev.WriteRowsEvent) else "delete"
            )
            return RowsEvent(log_file, pos, ts, kind, info.table, rows, None, event.event_size)
        if isinstance(event, rev.TableMapEvent):
            table = _raw_table_map(event)
            if table is None:
                self._maps.pop(event.table_id, None)
            else:
                if len(self._maps) > 4096:  # table ids change with DDL: keep it bounded
                    self._maps.clear()
                self._maps[event.table_id] = table
            return None
        if isinstance(event, ev.XidEvent):
            return XidEvent(log_file, pos, ts, event.xid)
        if isinstance(event, ev.QueryEvent):
            schema = event.schema
            if isinstance(schema, bytes):
                schema = schema.decode("utf-8", "replace")
            ansi = bool(getattr(event, "sql_mode", 0) & _ANSI_QUOTES)
            return QueryEvent(log_file, pos, ts, schema, event.query, ansi)
        if isinstance(event, ev.MariadbGtidEvent):
            flags = event.flags
            return GtidEvent(
                log_file, pos, ts, event.gtid, bool(flags & 1), bool(flags & 64), bool(flags & 4)
            )
        if isinstance(event, ev.GtidEvent):
            return GtidEvent(log_file, pos, ts, event.gtid)
        if isinstance(event, ev.RotateEvent):
            return RotateEvent(
                event.next_binlog, event.position, ts, event.next_binlog, event.position
            )
        if isinstance(event, ev.HeartbeatLogEvent):
            return HeartbeatEvent(event.ident or log_file, pos, ts)
        if (
            isinstance(event, ev.NotImplementedEvent)
            and event.event_type == _TRANSACTION_PAYLOAD_EVENT
        ):
            raise ConfigError(
                "canal: the binlog holds a compressed transaction (TRANSACTION_PAYLOAD); "
                "set binlog_transaction_compression=OFF on the server"
            )
        return None
