"""Binlog events as the ``canal`` source consumes them, and the reader contract.

A :class:`BinlogReader` connects to the server as a replica, streams the binlog from a
``(file, position)`` and hands over batches of these small, already decoded events. Two
readers implement it: ``binlog.LibraryReader`` on top of ``pymysqlreplication`` (the library's
own decoding) and ``fastbinlog.FastReader``, which reads the replication stream itself and
decodes rows with per-table specialised decoders. The source above them (snapshot, positions,
formats) does not know which one it has.

Positions: every event carries ``log_file`` and ``log_pos``, the position *after* the event
(the binlog header's ``next_position``): resuming at ``(log_file, log_pos)`` reads the next
event. A :class:`RotateEvent` moves ``log_file``.

Values in rows are decoded Python values, the same from either reader:

=====================================  ===================================================
MySQL type                             Python value
=====================================  ===================================================
TINYINT … BIGINT (signed / UNSIGNED)   ``int`` (unsigned read as unsigned)
DECIMAL                                ``decimal.Decimal``, exact
FLOAT, DOUBLE                          ``float``
CHAR, VARCHAR, TEXT (any charset)      ``str``
BINARY, VARBINARY, BLOB                ``bytes``
DATE                                   ``datetime.date``
DATETIME(fsp)                          ``datetime.datetime`` (naive, with microseconds)
TIMESTAMP(fsp)                         ``datetime.datetime`` aware, in UTC
TIME(fsp)                              ``datetime.timedelta`` (may be negative)
YEAR                                   ``int``
JSON                                   the parsed JSON value (dict, list, str, int, …)
ENUM                                   ``str``, the member's name ('' for the error value)
SET                                    ``tuple[str, ...]`` of member names in definition order
BIT(n)                                 ``int``
GEOMETRY                               ``bytes`` (WKB as stored)
zero or invalid date/datetime          ``str`` as MySQL prints it, e.g. '0000-00-00 00:00:00'
NULL                                   ``None``
=====================================  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from meshconnect.batchbytes import BATCH_BYTES

__all__ = [
    "BATCH_BYTES",
    "BinlogReader",
    "Column",
    "Event",
    "GtidEvent",
    "HeartbeatEvent",
    "QueryEvent",
    "RotateEvent",
    "RowsEvent",
    "Table",
    "TableFilter",
    "XidEvent",
    "event_bytes",
]

#: ``(schema, table) -> bool``: whether rows of this table are wanted. Rows of other tables are
#: never decoded; their events still advance the position.
TableFilter = Callable[[str, str], bool]


@dataclass(frozen=True, slots=True)
class Column:
    """One column as the table map (with ``binlog_row_metadata=FULL``) describes it."""

    name: str
    #: The binlog column type code (``pymysqlreplication.constants.FIELD_TYPE``), the real
    #: type for STRING/VAR_STRING-encoded ENUM and SET columns (``FIELD_TYPE.ENUM``/``SET``).
    type: int
    unsigned: bool = False
    nullable: bool = True
    #: Type metadata from the table map: max length, DECIMAL precision and scale, fsp, …
    #: (``(precision, scale)`` for DECIMAL, an int otherwise, 0 when there is none).
    metadata: Any = 0
    #: Character set number for text columns (None for binary and non-text columns).
    charset: int | None = None
    enum_values: tuple[str, ...] | None = None
    set_values: tuple[str, ...] | None = None
    #: A binary string (the table map's charset 63: BINARY, VARBINARY, BLOB), known only with
    #: FULL metadata (``charset`` is None for binary and unknown alike).
    binary: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A table as of a table-map event. ``table_id`` changes after DDL; names do not."""

    table_id: int
    schema: str
    name: str
    columns: tuple[Column, ...]
    #: Primary key column names in key order (from the table map's FULL metadata), or ().
    primary_key: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


@dataclass(slots=True)
class Event:
    """What every event carries: where it ends in the binlog and when it was written."""

    log_file: str
    #: Position just after this event: resuming there reads the next event.
    log_pos: int
    #: Seconds since the epoch from the event header (the statement's start time).
    timestamp: int


@dataclass(slots=True)
class RowsEvent(Event):
    """One rows event: a batch of row changes to one table by one statement.

    For ``insert`` and ``delete`` ``rows`` holds the row images and ``before`` is ``None``;
    for ``update`` ``before[i]`` is the image before and ``rows[i]`` the image after. Images
    are tuples in ``table.columns`` order.
    """

    kind: Literal["insert", "update", "delete"]
    table: Table
    rows: list[tuple[Any, ...]]
    before: list[tuple[Any, ...]] | None = None
    #: The event's bytes in the binlog: what its decoded rows weigh, about (``event_bytes``).
    size: int = 0


@dataclass(slots=True)
class QueryEvent(Event):
    """A statement: ``BEGIN``, ``COMMIT`` (non-transactional tables) or DDL."""

    schema: str
    query: str
    #: The session had ``sql_mode`` ANSI_QUOTES: ``"name"`` is a name, not a string.
    ansi_quotes: bool = False


@dataclass(slots=True)
class XidEvent(Event):
    """The commit of a transaction."""

    xid: int


@dataclass(slots=True)
class GtidEvent(Event):
    """The start of a transaction (event group) with its GTID.

    ``gtid`` is ``"domain-server-sequence"`` on MariaDB and ``"uuid:gno"`` on MySQL.
    ``standalone`` is true for a MariaDB event group without BEGIN/COMMIT (DDL); ``xa`` for
    a MariaDB XA PREPARE group.
    """

    gtid: str
    standalone: bool = False
    #: MariaDB: the group is the first phase of an XA transaction (``XA START`` … ``XA END``
    #: then ``XA PREPARE``; flag ``FL_PREPARED_XA``). Its changes count only once a later
    #: ``XA COMMIT`` names it; ``XA ROLLBACK`` drops them.
    xa: bool = False
    #: MariaDB: every change of the group is to a transactional table (flag
    #: ``FL_TRANSACTIONAL``), so a ``ROLLBACK TO SAVEPOINT`` in it left nothing it undid in
    #: the binlog: the server cut those changes out. False when unknown (MySQL).
    transactional: bool = False


@dataclass(slots=True)
class RotateEvent(Event):
    """The binlog continues in ``next_file`` at ``next_pos``."""

    next_file: str
    next_pos: int


@dataclass(slots=True)
class HeartbeatEvent(Event):
    """Sent by the server while nothing is written (``heartbeat_period``)."""


#: The bytes counted for an event that carries no rows or statement (GTID, XID, heartbeat …).
_SMALL_EVENT = 64


def event_bytes(event: Event) -> int:
    """What an event weighs, cheaply: a rows event its size in the binlog, a statement its
    text, any other a small fixed size."""
    if isinstance(event, RowsEvent):
        return event.size or _SMALL_EVENT
    if isinstance(event, QueryEvent):
        return len(event.query) + _SMALL_EVENT
    return _SMALL_EVENT


class BinlogReader(Protocol):
    """Streams the binlog from a position (see the module docstring).

    Readers are made as ``Reader(connect, server_id=…, log_file=…, log_pos=…,
    table_filter=…, heartbeat_period=…)`` where ``connect`` holds ``host``, ``port``, ``user``
    and ``password``. They are used from one thread (the source runs them in a worker thread).
    """

    def read(self, max_events: int, timeout: float, max_bytes: int = BATCH_BYTES) -> list[Event]:
        """Up to ``max_events`` events, and no more once they weigh ``max_bytes``
        (:func:`event_bytes`; the event that crosses it included); waits at most ``timeout``
        seconds for the first one and returns ``[]`` when none came. A lost connection raises
        :class:`~meshconnect.errors.RetriableError`; the caller makes a new reader at the last
        position it handled."""
        ...

    def close(self) -> None:
        """Close the connection (idempotent)."""
        ...
