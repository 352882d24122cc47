"""``LibraryReader``: the binlog reader on top of ``pymysqlreplication``'s BinLogStreamReader.

It implements :class:`~meshconnect.connectors.canal.events.BinlogReader`: a background thread
iterates the library's blocking stream and puts converted events into a bounded queue, from
which :meth:`LibraryReader.read` takes them with a timeout (the library has no timeout of its
own). A full queue blocks the thread, which stops reading the socket: back-pressure.

What it corrects in the library's values (see the table in ``events.py``):

* TIMESTAMP comes as a naive UTC ``datetime``; it is made aware (UTC).
* zero and invalid dates come as ``None``; they become the string MySQL prints
  (``'0000-00-00'``, ``'0000-00-00 00:00:00'``), so a NULL stays distinguishable.
* SET comes as a Python ``set`` (``None`` when empty); it becomes a tuple in definition order.
* BIT comes as a string of ``0``/``1``; it becomes an ``int``.
* YEAR ``0000`` comes as 1900; it becomes 0.
* MySQL JSON may carry ``bytes`` keys and strings; they become ``str``. MariaDB's JSON is a
  LONGTEXT alias and arrives as text; the source parses it (it knows the column from
  ``information_schema``).

Positioning: the reader always uses ``COM_BINLOG_DUMP`` with file and position (never the
library's MariaDB GTID path, which ignores ``log_file``/``log_pos``). Rows events of tables the
``table_filter`` rejects are dropped before their rows are decoded (the library decodes rows
lazily, on first access to ``.rows``). A MySQL compressed transaction (TRANSACTION_PAYLOAD,
which the library cannot decode and would drop silently) raises an error instead.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from meshconnect import ConfigError, RetriableError

from . import _rowcodec as ft  # the binlog column type codes
from .events import (
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
)

__all__ = ["LibraryReader"]

_UTC = dt.UTC
_TRANSACTION_PAYLOAD_EVENT = 40
_ZERO_DATE = "0000-00-00"


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


def _zero_datetime(fsp: int) -> str:
    return "0000-00-00 00:00:00" + ("." + "0" * fsp if fsp else "")


def _converter(col: Any) -> Callable[[Any], Any] | None:
    """A function fixing the library's value of this column, or None when it is fine."""
    kind = col.type
    if kind in (ft.TIMESTAMP, ft.TIMESTAMP2):
        return lambda v: v.replace(tzinfo=_UTC) if isinstance(v, dt.datetime) else v
    if kind == ft.SET:
        order = list(col.set_values or ())

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
    if kind == ft.TIME2 and getattr(col, "fsp", 0):
        return _negative_time
    if getattr(col, "character_set_name", None) == "binary":
        # An empty binary value comes as '' (str); BINARY(n) loses its trailing zero bytes.
        size = int(getattr(col, "max_length", 0) or 0) if kind == ft.STRING else 0

        def binary(v: Any) -> Any:
            if isinstance(v, str):
                v = v.encode("utf-8", "surrogateescape")
            return v.ljust(size, b"\0") if size else v

        return binary
    return None


def _negative_time(v: Any) -> Any:
    """The library decodes a negative TIME(fsp) with a fraction as ``-(s + 1) + f``
    instead of ``-(s + f)``; undo that."""
    if not isinstance(v, dt.timedelta) or v >= dt.timedelta(0):
        return v
    micros = (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds
    frac = micros % 1_000_000
    if not frac:
        return v
    whole = -(micros - frac) // 1_000_000  # s + 1
    return dt.timedelta(microseconds=-((whole - 1) * 1_000_000 + frac))


def _none_value(col: Any, reason: str) -> Any:
    """What a ``None`` the library produced for ``reason`` really is."""
    if reason == "empty set":
        return ()
    if reason.startswith("out of date range"):
        return _ZERO_DATE
    if reason.startswith("out of datetime"):
        return _zero_datetime(int(getattr(col, "fsp", 0) or 0))
    return None


class _TableInfo:
    """A converted table map plus the per-column fixes, cached per library table object."""

    __slots__ = ("converters", "lib_columns", "names", "nones", "table")

    def __init__(
        self, lib_table: Any, table_id: int, schema: str, name: str, pk: tuple[str, ...] | None
    ) -> None:
        columns = []
        for c in lib_table.columns:
            if c.type == ft.NEWDECIMAL:
                meta: Any = (getattr(c, "precision", 0), getattr(c, "decimals", 0))
            else:
                meta = next(  # as the fast reader: fsp, bytes, BLOB length size, BIT bits
                    (
                        v
                        for a in ("fsp", "max_length", "length_size", "bits")
                        if (v := getattr(c, a, 0))
                    ),
                    0,
                )
            columns.append(
                Column(
                    name=c.name,
                    type=c.type,
                    unsigned=bool(c.unsigned),
                    metadata=meta,
                    charset=getattr(c, "charset_id", None),
                    # the library puts the error value '' first; the members follow
                    enum_values=tuple(c.enum_values[1:]) if c.enum_values else None,
                    set_values=tuple(c.set_values) if c.set_values else None,
                )
            )
        if pk is None:  # the library lists the key in column order
            lib_pk = lib_table.primary_key
            pk = (lib_pk,) if isinstance(lib_pk, str) and lib_pk else tuple(lib_pk or ())
        primary_key = pk
        self.table = Table(table_id, schema, name, tuple(columns), primary_key)
        self.names = [c.name for c in lib_table.columns]
        self.lib_columns = {c.name: c for c in lib_table.columns}
        self.converters = [
            (i, f) for i, c in enumerate(lib_table.columns) if (f := _converter(c)) is not None
        ]
        self.nones = True

    def image(self, values: dict[str, Any], nones: Mapping[str, str] | None) -> tuple[Any, ...]:
        row = [values[n] for n in self.names]
        for i, fix in self.converters:
            v = row[i]
            if v is not None:
                row[i] = fix(v)
        if nones:
            for name, reason in nones.items():
                if reason != "null":
                    row[self.names.index(name)] = _none_value(self.lib_columns[name], reason)
        return tuple(row)


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
    ) -> None:
        self._connect = dict(connect)
        self._server_id = server_id
        self._log_file = log_file
        self._log_pos = log_pos
        self._filter = table_filter
        self._heartbeat = heartbeat_period
        self._queue: queue.Queue[Event | _Failure] = queue.Queue(queue_events)
        self._stop = threading.Event()
        self._stream: Any = None
        self._tables: dict[int, tuple[Any, _TableInfo]] = {}
        #: Primary key column names in key order, from each table map's FULL metadata.
        self._pk_order: dict[int, tuple[str, ...]] = {}
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="canal-binlog", daemon=True)
        self._thread.start()

    # -- the protocol --------------------------------------------------------------------------

    def read(self, max_events: int, timeout: float) -> list[Event]:
        if self._failed is not None:
            raise self._failed
        out: list[Event] = []
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            if isinstance(item, _Failure):
                self._failed = item.error
                if out:
                    return out
                raise item.error
            out.append(item)
            if len(out) >= max_events:
                return out
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out

    def close(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:  # unblocks the thread's socket read
                stream.close()
            except Exception:
                pass
        # Unblock a thread waiting on a full queue.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        self._thread.join(timeout=5)

    # -- the thread ----------------------------------------------------------------------------

    def _put(self, item: Event | _Failure) -> None:
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
        pk = self._pk_order.get(event.table_id)
        info = _TableInfo(lib_table, event.table_id, event.schema, event.table, pk)
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
            if isinstance(event, rev.UpdateRowsEvent):
                before, after = [], []
                for r in event.rows:
                    before.append(image(r["before_values"], r.get("before_none_sources")))
                    after.append(image(r["after_values"], r.get("after_none_sources")))
                return RowsEvent(log_file, pos, ts, "update", info.table, after, before)
            rows = [image(r["values"], r.get("none_sources")) for r in event.rows]
            if isinstance(event, rev.WriteRowsEvent):
                return RowsEvent(log_file, pos, ts, "insert", info.table, rows)
            return RowsEvent(log_file, pos, ts, "delete", info.table, rows)
        if isinstance(event, rev.TableMapEvent):
            meta = getattr(event, "optional_metadata", None)
            order = list(getattr(meta, "simple_primary_key_list", None) or ())
            order = order or list(getattr(meta, "primary_keys_with_prefix", None) or ())
            cols = event.columns
            # The library keeps each column's collation name only: the charset number too.
            ids = iter(getattr(meta, "charset_collation_list", None) or ())
            es_ids = iter(getattr(meta, "enum_and_set_collation_list", None) or ())
            for c in cols:
                if event._is_character_column(c.type, dbms=event.dbms):
                    c.charset_id = next(ids, None)
                elif event._is_enum_or_set_column(c.type):
                    c.charset_id = next(es_ids, None)
            if len(self._pk_order) > 4096:  # table ids change with DDL: keep it bounded
                self._pk_order.clear()
            self._pk_order[event.table_id] = tuple(
                cols[i].name for i in order if i < len(cols) and cols[i].name
            )
            return None
        if isinstance(event, ev.XidEvent):
            return XidEvent(log_file, pos, ts, event.xid)
        if isinstance(event, ev.QueryEvent):
            schema = event.schema
            if isinstance(schema, bytes):
                schema = schema.decode("utf-8", "replace")
            return QueryEvent(log_file, pos, ts, schema, event.query)
        if isinstance(event, ev.MariadbGtidEvent):
            flags = event.flags
            return GtidEvent(log_file, pos, ts, event.gtid, bool(flags & 1), bool(flags & 64))
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
