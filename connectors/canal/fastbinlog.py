"""``FastReader``: the replication protocol spoken directly, rows decoded per table.

Implements :class:`~.events.BinlogReader` without ``pymysqlreplication``'s per-event objects:

* **Connect**: ``pymysql`` does the handshake and authentication, then the session is set up as
  a replica would: ``@master_binlog_checksum`` (so the server sends CRC32 trailers as stored),
  ``@mariadb_slave_capability=4`` (MariaDB sends its GTID events as they are),
  ``@master_heartbeat_period`` (heartbeats while idle), then ``COM_BINLOG_DUMP`` from
  ``(log_file, log_pos)``.
* **Read**: packets come straight off the socket into one buffer (``recv`` of up to 1 MiB at a
  time); event headers are unpacked with one ``struct`` call; events are dispatched by type.
  Packets of 16 MiB and more (events split over several packets) are joined.
* **Table maps** are cached per table id and compared byte for byte: an unchanged map costs one
  ``bytes`` comparison; a changed one (after DDL) is parsed again. A map's shape (everything
  but the id) is also cached, so a table that comes back under a new id keeps its decoder.
  ``table_filter`` is asked once per map; rows events of rejected tables are skipped without
  decoding anything.
* **Rows** are decoded by functions generated per table (see ``_rowgen``).

Events passed on: rows (WRITE/UPDATE/DELETE v1 and v2, MariaDB's compressed variants), QUERY
(also MariaDB's compressed one), XID, GTID (MariaDB's and MySQL's), ROTATE and HEARTBEAT
(v1 and v2). FORMAT_DESCRIPTION sets whether events carry a CRC32 trailer (stripped, and
checked when ``verify_checksum=True``). ANNOTATE_ROWS, GTID lists, checkpoints, previous-GTIDs,
anonymous GTIDs, INTVAR/RAND/USER_VAR and the like are skipped. Refused with a clear error:
MySQL's compressed transaction payloads (``binlog_transaction_compression=ON``) and partial
JSON updates (``binlog_row_value_options=PARTIAL_JSON``).

Errors: a lost connection (reset, EOF, no data for three heartbeat periods) raises
:class:`~meshconnect.errors.RetriableError`; the server refusing the dump (purged or unknown
binlog file, error 1236) or the account lacking privileges raises
:class:`~meshconnect.errors.ConfigError` with the server's message.

On MariaDB a ``JSON`` column is ``LONGTEXT`` in the binlog, so it arrives as ``str`` (the JSON
text); only MySQL's binary ``JSON`` type is parsed into Python values.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from typing import Any, Literal

from meshconnect import ConfigError, RetriableError
from meshconnect.connectors.canal._rowcodec import parse_table_map
from meshconnect.connectors.canal._rowgen import RowDecoder
from meshconnect.connectors.canal.events import (
    BATCH_BYTES,
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

__all__ = ["FastReader"]

# Event type codes.
QUERY, ROTATE, FORMAT_DESCRIPTION, XID, TABLE_MAP = 2, 4, 15, 16, 19
WRITE_V1, UPDATE_V1, DELETE_V1, WRITE_V2, UPDATE_V2, DELETE_V2 = 23, 24, 25, 30, 31, 32
HEARTBEAT, GTID_MYSQL, TRANSACTION_PAYLOAD, PARTIAL_UPDATE, HEARTBEAT_V2 = 27, 33, 40, 39, 41
MARIADB_GTID, QUERY_COMPRESSED = 162, 165
# MariaDB compressed rows: 166-168 have v1 post-headers, 169-171 v2 ones.
Kind = Literal["insert", "update", "delete"]
_ROWS: dict[int, tuple[Kind, bool, bool]] = {
    WRITE_V1: ("insert", False, False),
    UPDATE_V1: ("update", False, False),
    DELETE_V1: ("delete", False, False),
    WRITE_V2: ("insert", True, False),
    UPDATE_V2: ("update", True, False),
    DELETE_V2: ("delete", True, False),
    166: ("insert", False, True),
    167: ("update", False, True),
    168: ("delete", False, True),
    169: ("insert", True, True),
    170: ("update", True, True),
    171: ("delete", True, True),
}

_HEADER = struct.Struct("<IBIIIH")
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_TABLE_ID = struct.Struct("<IH").unpack_from
_CHUNK = 1 << 20
_CONNECTION_ERRORS = frozenset({2003, 2006, 2013, 2055})
_BINLOG_DUMP_NON_BLOCK = 0x01


class _Mapped:
    """A cached table map: its raw bytes, the table, its decoder (None: filtered out)."""

    __slots__ = ("all_present", "decode_rows", "decoder", "raw", "table")

    def __init__(self, raw: bytes, table: Table, decoder: RowDecoder | None) -> None:
        self.raw = raw
        self.table = table
        self.decoder = decoder
        #: The usual case (``binlog_row_image=FULL``): every column present.
        self.all_present = (1 << len(table.columns)) - 1
        self.decode_rows: Any = decoder.functions(self.all_present)[0] if decoder else None


class FastReader:
    """A :class:`~.events.BinlogReader` that reads the replication stream itself.

    ``non_blocking=True`` asks the server to end the stream at the current end of the binlog
    (``BINLOG_DUMP_NON_BLOCK``); ``read`` then returns ``[]`` and :attr:`at_end` is true.
    """

    def __init__(
        self,
        connect: Mapping[str, Any],
        *,
        server_id: int,
        log_file: str,
        log_pos: int,
        table_filter: TableFilter | None = None,
        heartbeat_period: float | None = None,
        non_blocking: bool = False,
        verify_checksum: bool = False,
        connect_timeout: float = 10.0,
    ) -> None:
        self._filter = table_filter
        #: DATETIME values of columns outside the key as Canal's text (``RowDecoder``); set
        #: before the first read, by a source that writes the ``canal`` format.
        self.text_values = False
        self._heartbeat = heartbeat_period
        self._verify = verify_checksum
        self._file = log_file
        #: Where the dump was asked to start, for the server's refusal of it.
        self._from = f"{log_file}:{log_pos}"
        self._tables: dict[int, _Mapped] = {}
        self._shapes: dict[bytes, tuple[Table, RowDecoder | None]] = {}
        self._buf = b""
        self._pos = 0
        self._closed = False
        self.at_end = False
        self._pending: RetriableError | None = None
        self._sock: socket.socket | None
        self._conn, self._sock, self.mariadb, checksum = _open(
            connect,
            server_id=server_id,
            log_file=log_file,
            log_pos=log_pos,
            heartbeat_period=heartbeat_period,
            non_blocking=non_blocking,
            connect_timeout=connect_timeout,
        )
        #: Bytes of checksum trailer per event (0 or 4); each FORMAT_DESCRIPTION resets it.
        self._crc = 4 if checksum else 0
        self._last_rx = time.monotonic()

    # ------------------------------------------------------------------ socket

    def _recv(self, timeout: float) -> bool:
        """Append what the socket has (waiting up to ``timeout``); False when nothing came."""
        sock = self._sock
        if sock is None:
            raise RetriableError("binlog connection is closed")
        try:
            sock.settimeout(timeout)
            chunk = sock.recv(_CHUNK)
        except (TimeoutError, BlockingIOError, InterruptedError):
            self._check_alive()
            return False
        except OSError as exc:
            self.close()
            raise RetriableError(f"binlog connection lost: {exc}") from exc
        if not chunk:
            self.close()
            raise RetriableError("binlog connection closed by the server")
        self._last_rx = time.monotonic()
        pos = self._pos
        self._buf = self._buf[pos:] + chunk if pos < len(self._buf) else chunk
        self._pos = 0
        return True

    def _check_alive(self) -> None:
        if self._heartbeat and time.monotonic() - self._last_rx > max(3 * self._heartbeat, 5.0):
            self.close()
            raise RetriableError(
                f"no binlog data or heartbeat for {time.monotonic() - self._last_rx:.0f}s"
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        try:
            self._conn._sock = None  # the socket is closed; keep pymysql from writing to it
            self._conn._rfile = None
        except AttributeError:
            pass

    # ------------------------------------------------------------------ events

    def read(self, max_events: int, timeout: float, max_bytes: int = BATCH_BYTES) -> list[Event]:
        events: list[Event] = []
        weight = 0  # event_bytes of the events so far
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        if self.at_end:
            return events
        deadline = time.monotonic() + timeout
        append = events.append
        header = _HEADER.unpack_from
        rows_kinds = _ROWS
        verify = self._verify
        while len(events) < max_events and weight < max_bytes:
            buf, p = self._buf, self._pos
            have = len(buf) - p
            if have < 4 or have < 4 + (length := buf[p] | buf[p + 1] << 8 | buf[p + 2] << 16):
                if events:
                    try:
                        if not self._recv(0.0):
                            break
                    except RetriableError as exc:
                        self._pending = exc  # hand over what came first; raise next time
                        break
                else:
                    # timeout 0 (or spent): still take what the socket already holds
                    if not self._recv(max(deadline - time.monotonic(), 0.0)):
                        break
                continue
            start, end = p + 4, p + 4 + length
            self._pos = end
            status = buf[start]
            if status != 0:
                self._server_said(buf, start, end)
                return events
            if length == 0xFFFFFF:
                buf, start, end = self._join_packets(buf, start, end)
            e = start + 1
            ts, kind, server_id, size, log_pos, _flags = header(buf, e)
            body = e + 19
            stop = e + size - self._crc
            if verify and self._crc:
                self._check_crc(buf, e, size)
            rows_kind = rows_kinds.get(kind)
            if rows_kind is not None:
                event = self._rows(buf, body, stop, rows_kind, ts, log_pos)
                if event is not None:
                    event.size = size
                    weight += size
                    append(event)
            elif kind == TABLE_MAP:
                self._table_map(buf, body, stop)
            elif kind == XID:
                append(XidEvent(self._file, log_pos, ts, _U64(buf, body)[0]))
            elif kind == MARIADB_GTID:
                seq, domain, flags = struct.unpack_from("<QIB", buf, body)
                gtid = f"{domain}-{server_id}-{seq}"
                append(
                    GtidEvent(
                        self._file,
                        log_pos,
                        ts,
                        gtid,
                        bool(flags & 1),
                        bool(flags & 64),
                        bool(flags & 4),
                    )
                )
            elif kind in (QUERY, QUERY_COMPRESSED):
                append(self._query(buf, body, stop, ts, log_pos, kind == QUERY_COMPRESSED))
                weight += size
            elif kind == GTID_MYSQL:
                sid = uuid.UUID(bytes=buf[body + 1 : body + 17])
                gno = _U64(buf, body + 17)[0]
                append(GtidEvent(self._file, log_pos, ts, f"{sid}:{gno}"))
            elif kind == ROTATE:
                next_pos = _U64(buf, body)[0]
                self._file = buf[body + 8 : stop].decode("utf-8")
                append(RotateEvent(self._file, next_pos, ts, self._file, next_pos))
            elif kind == FORMAT_DESCRIPTION:
                # The checksum algorithm is the byte before the FDE's own 4-byte checksum.
                self._crc = 4 if size > 19 + 57 and buf[e + size - 5] == 1 else 0
            elif kind in (HEARTBEAT, HEARTBEAT_V2):
                append(HeartbeatEvent(self._file, log_pos, ts))
            elif kind == TRANSACTION_PAYLOAD:
                raise ConfigError(
                    "the server writes compressed transaction payloads "
                    "(binlog_transaction_compression=ON), which this reader does not decode: "
                    "SET GLOBAL binlog_transaction_compression=OFF"
                )
            elif kind == PARTIAL_UPDATE:
                raise ConfigError(
                    "the server writes partial JSON updates "
                    "(binlog_row_value_options=PARTIAL_JSON), which lose the full row image: "
                    "SET GLOBAL binlog_row_value_options=''"
                )
        return events

    def _rows(
        self, buf: bytes, p: int, stop: int, rows_kind: tuple[Kind, bool, bool], ts: int, pos: int
    ) -> RowsEvent | None:
        lo, hi = _TABLE_ID(buf, p)
        mapped = self._tables.get(lo | hi << 32)
        if mapped is None:
            raise ConfigError(
                f"rows event at {self._file}:{pos} for table id {lo | hi << 32} without its "
                "table map: streams must start at a transaction boundary"
            )
        decoder = mapped.decoder
        if decoder is None:
            return None  # a table the filter rejects: nothing decoded
        kind, v2, compressed = rows_kind
        p += 8
        if v2:
            p += _U16(buf, p)[0]
        width = buf[p]  # < 251 columns: one byte; else a length-encoded int
        if width < 251:
            p += 1
        else:
            width, p = _lenenc(buf, p)
        nbytes = (width + 7) // 8
        present = int.from_bytes(buf[p : p + nbytes], "little")
        p += nbytes
        if kind == "update":
            present_after = int.from_bytes(buf[p : p + nbytes], "little")
            p += nbytes
        if compressed:
            buf = _uncompress(buf, p, stop)
            p, stop = 0, len(buf)
        if kind != "update":
            if present == mapped.all_present:
                rows = mapped.decode_rows(buf, p, stop)
            else:
                rows = decoder.functions(present)[0](buf, p, stop)
            return RowsEvent(self._file, pos, ts, kind, mapped.table, rows)
        image_before = decoder.functions(present)[1]
        image_after = decoder.functions(present_after)[1]
        before: list[tuple[Any, ...]] = []
        after: list[tuple[Any, ...]] = []
        while p < stop:
            row, p = image_before(buf, p)
            before.append(row)
            row, p = image_after(buf, p)
            after.append(row)
        return RowsEvent(self._file, pos, ts, kind, mapped.table, after, before)

    def _table_map(self, buf: bytes, p: int, stop: int) -> None:
        raw = buf[p:stop]
        lo, hi = _TABLE_ID(raw, 0)
        table_id = lo | hi << 32
        mapped = self._tables.get(table_id)
        if mapped is not None and mapped.raw == raw:
            return
        shape = raw[6:]
        known = self._shapes.get(shape)
        if known is not None:
            table, decoder = known
            if table.table_id != table_id:
                table = dataclasses.replace(table, table_id=table_id)
        else:
            table = parse_table_map(raw, 0, len(raw), mariadb=self.mariadb)
            wanted = self._filter is None or self._filter(table.schema, table.name)
            decoder = RowDecoder(table, self.text_values) if wanted else None
            if len(self._shapes) > 4096:
                self._shapes.clear()
            self._shapes[shape] = (table, decoder)
        self._tables[table_id] = _Mapped(raw, table, decoder)

    def _query(
        self, buf: bytes, p: int, stop: int, ts: int, pos: int, compressed: bool
    ) -> QueryEvent:
        schema_len = buf[p + 8]
        status_len = _U16(buf, p + 11)[0]
        at = p + 13 + status_len
        schema = buf[at : at + schema_len].decode("utf-8", "replace")
        at += schema_len + 1
        text = _uncompress(buf, at, stop) if compressed else buf[at:stop]
        ansi = bool(_sql_mode(buf, p + 13, p + 13 + status_len) & 4)  # MODE_ANSI_QUOTES
        return QueryEvent(self._file, pos, ts, schema, text.decode("utf-8", "replace"), ansi)

    def _join_packets(self, buf: bytes, start: int, end: int) -> tuple[bytes, int, int]:
        """An event of 16 MiB or more arrives in several packets: join their payloads."""
        parts = [buf[start:end]]
        length = 0xFFFFFF
        while length == 0xFFFFFF:
            while len(self._buf) - self._pos < 4 or len(self._buf) - self._pos < 4 + (
                length := int.from_bytes(self._buf[self._pos : self._pos + 3], "little")
            ):
                if not self._recv(60.0):
                    raise RetriableError("binlog connection stalled inside a large event")
            p = self._pos
            parts.append(self._buf[p + 4 : p + 4 + length])
            self._pos = p + 4 + length
        joined = b"".join(parts)
        return joined, 0, len(joined)

    def _check_crc(self, buf: bytes, e: int, size: int) -> None:
        stored = _U32(buf, e + size - 4)[0]
        if zlib.crc32(buf[e : e + size - 4]) != stored:
            raise RetriableError(f"binlog event checksum mismatch in {self._file}")

    def _server_said(self, buf: bytes, start: int, end: int) -> None:
        if buf[start] == 0xFE and end - start < 9:
            self.at_end = True  # BINLOG_DUMP_NON_BLOCK: the end of the binlog
            self.close()
            return
        code = _U16(buf, start + 1)[0] if end - start >= 3 else 0
        message = buf[start + 3 : end]
        if message[:1] == b"#":
            message = message[6:]
        text = message.decode("utf-8", "replace")
        self.close()
        if code in _CONNECTION_ERRORS or code == 0:
            raise RetriableError(f"binlog stream ended: {code} {text}")
        # As the library decoder says it (binlog.py): the position the dump was asked for.
        raise ConfigError(
            f"canal: the server refused to send the binlog from {self._from}: {code} {text}"
        )


def _lenenc(buf: bytes, p: int) -> tuple[int, int]:
    first = buf[p]
    if first < 251:
        return first, p + 1
    size = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(buf[p + 1 : p + 1 + size], "little"), p + 1 + size


def _uncompress(buf: bytes, p: int, stop: int) -> bytes:
    """MariaDB's compressed body: a header byte (0x80 | algorithm << 4 | n), an n-byte
    big-endian uncompressed length, then zlib data."""
    head = buf[p]
    n = head & 0x07
    if not head & 0x80 or (head >> 4) & 0x07 != 0 or not 1 <= n <= 4:
        raise ConfigError(f"unsupported compressed binlog event header {head:#x}")
    length = int.from_bytes(buf[p + 1 : p + 1 + n], "big")
    data = zlib.decompress(buf[p + 1 + n : stop])
    if len(data) != length:
        raise RetriableError("compressed binlog event has the wrong length")
    return data


def _open(
    connect: Mapping[str, Any],
    *,
    server_id: int,
    log_file: str,
    log_pos: int,
    heartbeat_period: float | None,
    non_blocking: bool,
    connect_timeout: float,
) -> tuple[Any, socket.socket, bool, bool]:
    """Authenticate, prepare the session as a replica, send COM_BINLOG_DUMP."""
    import pymysql

    kwargs = {k: connect[k] for k in ("host", "port", "user", "password") if k in connect}
    for key in ("ssl", "unix_socket", "ssl_ca", "ssl_cert", "ssl_key"):
        if connect.get(key) is not None:
            kwargs[key] = connect[key]
    try:
        conn = pymysql.connect(**kwargs, connect_timeout=connect_timeout, autocommit=True)
    except pymysql.err.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        if code in _CONNECTION_ERRORS:
            raise RetriableError(f"cannot connect for the binlog: {exc}") from exc
        raise ConfigError(f"cannot connect for the binlog: {exc}") from exc
    try:
        mariadb = "mariadb" in conn.get_server_info().lower()
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.binlog_checksum")
            row = cur.fetchone()
            checksum = bool(row) and str(row[0]).upper() not in ("NONE", "")
            cur.execute(
                "SET @master_binlog_checksum = @@global.binlog_checksum,"
                " @source_binlog_checksum = @@global.binlog_checksum,"
                " @mariadb_slave_capability = 4"
            )
            if connect.get("skip_replicated"):  # the server leaves flagged events out
                cur.execute("SET skip_replication = 1")
            if heartbeat_period:
                nanos = int(min(heartbeat_period, 4294967) * 1_000_000_000)
                cur.execute(
                    "SET @master_heartbeat_period = %s, @source_heartbeat_period = %s",
                    (nanos, nanos),
                )
        name = log_file.encode("utf-8")
        flags = _BINLOG_DUMP_NON_BLOCK if non_blocking else 0
        payload = struct.pack("<BIHI", 0x12, log_pos & 0xFFFFFFFF, flags, server_id) + name
        sock: socket.socket = conn._sock
        sock.sendall(len(payload).to_bytes(3, "little") + b"\x00" + payload)
    except pymysql.err.OperationalError as exc:
        conn.close()
        code = exc.args[0] if exc.args else 0
        if code in _CONNECTION_ERRORS:
            raise RetriableError(f"binlog connection lost while starting: {exc}") from exc
        raise ConfigError(f"cannot start the binlog stream: {exc}") from exc
    except OSError as exc:
        conn.close()
        raise RetriableError(f"binlog connection lost while starting: {exc}") from exc
    return conn, sock, mariadb, checksum


def _sql_mode(buf: bytes, at: int, end: int) -> int:
    """The ``sql_mode`` of a query event from its status variables (0 when not found): the
    server writes ``Q_FLAGS2_CODE`` (4 bytes) and then ``Q_SQL_MODE_CODE`` (8 bytes) first."""
    while at < end:
        code = buf[at]
        if code == 0:  # Q_FLAGS2_CODE
            at += 5
        elif code == 1 and at + 9 <= end:  # Q_SQL_MODE_CODE
            return int.from_bytes(buf[at + 1 : at + 9], "little")
        else:
            return 0
    return 0
