"""The ``canal`` source: a consistent snapshot, then the binlog, one record per row change.

Contract
    One partition, ``binlog``; its position (:mod:`.positions`) is the transaction to resume
    in plus how many of its rows events were already delivered, so a crash in the middle of a
    10,000-row transaction neither skips nor repeats a row. Every batch carries the position
    after its last record; the worker commits both in one store transaction. A batch without
    records may carry a position too (transactions of filtered tables, heartbeats), throttled
    to one per ``heartbeat_interval``, so idle or filtered streams still advance.

Streaming
    A :class:`~.events.BinlogReader` (``decoder``: the library reader or the fast one) streams
    from the committed position. Transactions are followed through GTID / ``BEGIN`` and
    ``XID`` / ``COMMIT`` events; a statement that is neither is DDL: it becomes a record per
    table it names (:func:`.ddl.parse_ddl`; ``ddl`` chooses which), and the schema cache is
    dropped. Prepared XA transactions are held back until their ``XA COMMIT`` (dropped at
    ``XA ROLLBACK``); the position lists those not yet decided (see ``_xa``). Keys and types
    are those of the table map of each event's transaction, MariaDB JSON columns those of the
    DDL-replayed history (:mod:`.jsoncols`). All blocking work (the
    reader, the control connection, building records) runs in a worker thread
    (``asyncio.to_thread``), one poll at a time. A lost connection is a
    :class:`~meshconnect.errors.RetriableError`; a poll that fails (whatever failed, the binlog
    or the control connection) hands out nothing, and the next poll reconnects at the last
    position handed out.

Snapshot
    See :mod:`.snapshot`: chunks by primary key, each reconciled with the binlog up to a high
    watermark, so rows written during the snapshot appear exactly once in the final state.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from meshconnect import (
    ConfigError,
    ConnectorContext,
    DataError,
    Position,
    Record,
    RetriableError,
    Source,
    SourceBatch,
)
from meshconnect.positioncheck import partition_problem

from .config import CanalSourceConfig, TableMatcher
from .ddl import parse_ddl
from .events import (
    BinlogReader,
    Event,
    GtidEvent,
    HeartbeatEvent,
    QueryEvent,
    RotateEvent,
    RowsEvent,
    Table,
    XidEvent,
)
from .formats import Formatter, Shape, TxMeta
from .jsoncols import JsonColumns
from .positions import GtidSet, binlog_order, position_problem
from .positions import Position as BinlogPosition
from .server import Server
from .snapshot import Snapshot

__all__ = ["CanalSource", "reader_class"]

PARTITION = "binlog"
_READ_TIMEOUT = 0.5
#: Events asked for by the first read, before the size of this binlog's events is known: few,
#: since 256 events of a bulk load are ~36,000 rows, all built and stored before a sink sees
#: its first record (the bulk CDC bench ran a third longer, docs/benchmarks.md).
_FIRST_READ_EVENTS = 16
#: The fewest events a read asks for.
_MIN_READ_EVENTS = 16


#: ``SAVEPOINT name`` / ``ROLLBACK TO name`` as the server writes them to the binlog (the name
#: backquoted), or as a client spelled them: the verb and the name.
_SAVEPOINT = re.compile(
    r"(SAVEPOINT|ROLLBACK\s+(?:WORK\s+)?TO)\s+(?:SAVEPOINT\s+)?(`(?:[^`]|``)*`|[^\s;]+)",
    re.IGNORECASE | re.DOTALL,
)


def savepoint(sql: str) -> tuple[str, str] | None:
    """``("SAVEPOINT" | "ROLLBACK", name)`` for a savepoint statement, else ``None``. Names are
    compared as the server compares them: case-insensitively."""
    m = _SAVEPOINT.match(sql.strip())
    if m is None:
        return None
    name = m.group(2)
    if name.startswith("`"):
        name = name[1:-1].replace("``", "`")
    return ("SAVEPOINT" if m.group(1).upper() == "SAVEPOINT" else "ROLLBACK"), name.casefold()


def _xa_key(start: list[Any]) -> tuple[str, int]:
    """The cache key of a prepared XA group from its ``[file, pos]``."""
    return str(start[0]), int(start[1])


def reader_class(decoder: str) -> type[Any]:
    """The binlog reader for ``decoder`` (``auto``: the fast one when it can be imported)."""
    if decoder in ("auto", "fast"):
        try:
            from .fastbinlog import FastReader

            return FastReader
        except ImportError as exc:
            if decoder == "fast":
                raise ConfigError(f"canal: decoder fast is not available: {exc}") from exc
    from .binlog import LibraryReader

    return LibraryReader


class CanalSource(Source[CanalSourceConfig]):
    """MySQL/MariaDB CDC (see the module docstring)."""

    config_model = CanalSourceConfig
    empty_position = (
        "snapshots the captured tables, then streams (`snapshot: never`: streams from the "
        "end of the binlog at the first start, a position committed before it reports started)"
    )

    def __init__(self, config: CanalSourceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.bounded = config.snapshot == "initial_only"
        self.log = context.logger
        self.matcher = config.table_matcher()
        #: The table filters, part of every position (see ``_new_tables``).
        self.filter = {"include": list(config.include), "exclude": list(config.exclude)}
        self.columns = config.column_filter()
        self.server = Server(config)
        self.formatter = Formatter(
            config.format,
            f"mysql://{config.host}:{config.port}",
            context.pipeline,
            encoded=context.data_untouched,
        )
        self._reader_cls = reader_class(config.decoder)
        self._reader: BinlogReader | None = None
        self._shapes: dict[int, tuple[Table, Shape]] = {}
        self.server_id: int | None = None
        # -- stream state (the thread that polls owns it) --
        self.file = ""
        #: Position just after the last event handled.
        self.end = 4
        self.in_txn = False
        self.txn_file = ""
        self.txn_pos = 0
        self.txn_gtid: str | None = None
        self.txn_events = 0
        self.skip_events = 0
        self.skip_rows = 0
        self._resume: BinlogPosition | None = None
        self.gtids = GtidSet()
        #: Whether the open transaction is an XA PREPARE group (its rows wait for XA COMMIT).
        self.txn_xa = False
        #: Whether the open transaction is a MariaDB FL_TRANSACTIONAL group (``_savepoint``).
        self.txn_transactional = False
        self._xa_rows: list[RowsEvent] = []
        #: Rows events of the open transaction after its first ``SAVEPOINT``, held back until
        #: it commits: a later ``ROLLBACK TO`` that savepoint undoes them (None: not holding).
        self._held: list[RowsEvent] | None = None
        #: The open transaction's savepoints: (name, where it is in the held rows events).
        self._savepoints: list[tuple[str, int]] = []
        #: Prepared XA transactions: XA id -> [file, pos] of the PREPARE group (positioned).
        self.xa: dict[str, list[Any]] = {}
        #: Their row events, by (file, pos) (read again at start after a restart).
        self._xa_events: dict[tuple[str, int], list[RowsEvent]] = {}
        #: MariaDB: JSON columns as of the stream position (None: MySQL, or not followed).
        self.json_history: JsonColumns | None = None
        #: The position handed out with the last batch (where a reconnect resumes).
        self.handed: BinlogPosition | None = None
        self.snapshot: Snapshot | None = None
        self._done = False
        self._last_position_only = float("-inf")
        #: Binlog connections lost (each then opened again by the next poll), as Debezium's
        #: ``NumberOfDisconnects``: the metric ``canal_disconnects``.
        self.disconnects = context.metrics.counter(
            "canal_disconnects", "Binlog connections lost (the next poll reconnects)"
        )
        self._want = min(_FIRST_READ_EVENTS, config.batch_events)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, positions: Mapping[str, Position]) -> dict[str, Position] | None:
        """Returns the starting position when nothing was committed (the worker commits it
        before the source counts as started: "the end of the binlog" is fixed once)."""
        return await asyncio.to_thread(self._start, positions.get(PARTITION))

    async def poll(self) -> SourceBatch | None:
        if self._done:
            return None
        return await asyncio.to_thread(self._poll)

    async def stop(self) -> None:
        await asyncio.to_thread(self._close)

    async def end_positions(self) -> dict[str, Position]:
        def end() -> dict[str, Position]:
            server = self.server
            try:
                file, pos, gtids = server.binary_log_status()
                sid = server.server_id()
                history = JsonColumns(server.json_columns()).to_json() if server.mariadb else None
            finally:
                server.close()
            end = BinlogPosition(
                file, pos, gtids=gtids, server_id=sid, json=history, filter=self.filter
            )
            return {PARTITION: end.to_dict()}

        return await asyncio.to_thread(end)

    def position_problem(self, partition: str, position: Position) -> str | None:
        """A hand-written position (``offsets reset --to``): the one partition, ``binlog``,
        with a position as :mod:`.positions` describes it: a binlog file name and an offset
        in it (what ``offsets show`` prints; a transaction start, as ``SHOW BINLOG EVENTS``
        lists them). Whether the file is still on the server is only known at start: a
        purged file fails it."""
        example = '{"binlog": {"file": "binlog.000001", "pos": 4}}'
        problem = partition_problem(partition, [PARTITION]) or position_problem(dict(position))
        return f"{problem}; e.g. {example}" if problem else None

    def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        self.server.close()

    # -- start ---------------------------------------------------------------------------------

    def _start(self, stored: Position | None) -> dict[str, Position] | None:
        server = self.server
        server.connect()
        server.check(self.log)
        self.server_id = server.server_id()
        self.formatter.flavour = "mariadb" if server.mariadb else "mysql"
        mode = self.config.snapshot
        self._check_include()
        position: BinlogPosition | None = None
        if stored:
            try:
                position = BinlogPosition.from_dict(dict(stored))
            except ValueError as exc:
                raise ConfigError(f"canal: the stored position is unusable: {exc}") from exc
            if position.file not in server.binary_logs():
                if mode != "when_needed":
                    raise ConfigError(
                        f"canal: the stored position {position.file}:{position.pos} is no "
                        f"longer on {server.where}: binlog file {position.file} was purged "
                        "(SHOW BINARY LOGS no longer lists it). Changes since then are lost "
                        "to CDC: set `snapshot: when_needed` to take a fresh snapshot, or "
                        "reset the offsets (meshconnect offsets reset) and accept the gap"
                    )
                self.log.warning(
                    "canal: binlog file %s of the stored position was purged from %s; "
                    "taking a fresh snapshot (snapshot: when_needed)",
                    position.file,
                    server.where,
                )
                position = None
            else:
                self._new_tables(position)
                if mode == "initial_only" and position.snapshot is None:
                    self.log.info("canal: the snapshot was already taken (snapshot: initial_only)")
                    self._done = True
                    return None
        fresh = position is None
        if position is None:
            file, pos, gtids = server.binary_log_status()
            position = BinlogPosition(
                file, pos, gtids=gtids, server_id=self.server_id, filter=self.filter
            )
            if server.mariadb:  # "now" is the position: the present schema is its schema
                position.json = JsonColumns(server.json_columns()).to_json()
            if mode != "never":
                position.snapshot = Snapshot.initial_state(server, self.matcher)
                self.log.info(
                    "canal: snapshot of %d table(s) from %s:%d",
                    len(position.snapshot["tables"]),
                    file,
                    pos,
                )
            else:
                self.log.info("canal: streaming from the end of the binlog, %s:%d", file, pos)
        self._reset(position)
        for file, pos in position.xa.values():
            self._xa_events[(file, pos)] = self._read_prepared(file, pos)
        if position.snapshot is not None:
            self.snapshot = Snapshot(self, position.snapshot)
        return {PARTITION: position.to_dict()} if fresh else None

    def _new_tables(self, position: BinlogPosition) -> None:
        """A restart with other ``include``/``exclude`` than the stored position's run: a
        snapshot still running leaves out the tables no longer captured, and the tables
        captured now but not then are snapshotted (``snapshot: never``: only streamed from
        here), as Debezium's added-table snapshot: their rows from before would otherwise never
        arrive. Changes to them meanwhile are reconciled as in any snapshot."""
        old = position.filter
        if old is None or old == self.filter:
            return
        snap = position.snapshot
        if snap is not None:
            tables = [list(t) for t in snap["tables"]]
            kept = [t for t in tables if self.matcher(t[0], t[1])]
            if kept[:1] != tables[:1]:  # the table being read is no longer captured
                snap["after"] = None
            snap["tables"] = kept
        was = TableMatcher(old["include"], old["exclude"])
        added = [
            [s, t] for s, t in self.server.base_tables() if self.matcher(s, t) and not was(s, t)
        ]
        if not added:
            return
        names = ", ".join(f"{s}.{t}" for s, t in added)
        if self.config.snapshot == "never":
            self.log.warning(
                "canal: %d table(s) captured now but not before (%s): streamed from here, "
                "without a snapshot (snapshot: never)",
                len(added),
                names,
            )
            return
        self.log.info(
            "canal: %d table(s) captured now but not before: snapshotting them (%s)",
            len(added),
            names,
        )
        if snap is None:
            position.snapshot = {"tables": added, "after": None, "done": 0}
        else:
            snap["tables"].extend(t for t in added if t not in snap["tables"])

    def _check_include(self) -> None:
        """An ``include`` that matches no table: a warning (tables created later are
        captured), an error for ``snapshot: initial_only`` (it would snapshot nothing)."""
        if any(self.matcher(s, t) for s, t in self.server.base_tables()):
            return
        c = self.config
        text = (
            f"canal: include {c.include} (exclude {c.exclude}) matches no table on "
            f"{self.server.where} that user {c.user!r} can see"
        )
        if c.snapshot == "initial_only":
            raise ConfigError(text + ": snapshot: initial_only would read nothing")
        self.log.warning("%s; tables created later are captured", text)

    def _read_prepared(self, file: str, pos: int) -> list[RowsEvent]:
        """The row events of the XA PREPARE group at ``file:pos`` (read again after a
        restart, before the stream opens: its XA COMMIT is still to come)."""
        c = self.config
        reader = self._reader_cls(
            {"host": c.host, "port": c.port, "user": c.user,
             "password": c.password.get_secret_value(), "skip_replicated": c.skip_replicated},
            server_id=c.server_id,
            log_file=file,
            log_pos=pos,
            table_filter=self.matcher,
            heartbeat_period=c.heartbeat_interval,
        )  # fmt: skip
        self._text_values(reader)
        rows: list[RowsEvent] = []
        savepoints: list[tuple[str, int]] = []
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                for event in reader.read(256, 1.0):
                    if isinstance(event, RowsEvent):
                        rows.append(event)
                    elif isinstance(event, QueryEvent):
                        if event.query.upper().startswith("XA END"):
                            return rows
                        mark = savepoint(event.query)
                        if mark is not None:
                            savepoints = undo_to_savepoint(
                                *mark, rows, savepoints, self.server.transactional
                            )
        finally:
            reader.close()
        raise RetriableError(f"canal: could not read the XA PREPARE group at {file}:{pos}")

    def _reset(self, position: BinlogPosition) -> None:
        """Stream state as of a handed-out position (a start or a reconnect)."""
        self.handed = position
        self.file = position.file
        self.end = position.pos
        self.xa = {k: list(v) for k, v in position.xa.items()}
        if position.json is not None:
            self.json_history = JsonColumns.from_json(position.json)
        elif self.server.mariadb:  # a position from before the history: not followed
            self.json_history = JsonColumns({}, complete=False)
        self.txn_xa = False
        self._xa_rows = []
        self._held = None
        self._savepoints = []
        self.in_txn = False
        self.txn_events = 0
        self.skip_events = position.events
        self.skip_rows = position.rows
        #: A position inside a transaction, until the stream is past what it delivered.
        self._resume = position if position.events or position.rows else None
        self.gtids = GtidSet(position.gtids)

    def position(self) -> BinlogPosition:
        """Where to resume after what was handled. A run that resumed inside a transaction
        reads that transaction's delivered events again to skip them: until it is past them
        the position is the resume point itself (events *and* rows), never before it, or a
        position handed out meanwhile (with a poll of no records) would make the next run
        deliver them twice."""
        snap = self.snapshot.state if self.snapshot is not None else None
        resume = self._resume
        if resume is not None and (not self.in_txn or self.txn_events <= self.skip_events):
            return BinlogPosition(
                resume.file,
                resume.pos,
                resume.events,
                resume.rows,
                str(self.gtids),
                self.server_id,
                snap,
                {k: list(v) for k, v in self.xa.items()},
                self._json(),
                self.filter,
            )
        if self.in_txn:
            return BinlogPosition(
                self.txn_file,
                self.txn_pos,
                self.txn_events,
                0,
                str(self.gtids),
                self.server_id,
                snap,
                {k: list(v) for k, v in self.xa.items()},
                self._json(),
                self.filter,
            )
        return BinlogPosition(
            self.file,
            self.end,
            0,
            0,
            str(self.gtids),
            self.server_id,
            snap,
            {k: list(v) for k, v in self.xa.items()},
            self._json(),
            self.filter,
        )

    def _json(self) -> dict[str, Any] | None:
        history = self.json_history
        return None if history is None else history.to_json()

    # -- polling -------------------------------------------------------------------------------

    def reader(self) -> BinlogReader:
        if self._reader is None:
            handed = self.handed
            assert handed is not None
            self._reset(handed)
            self._shapes.clear()
            c = self.config
            self._reader = self._reader_cls(
                {
                    "host": c.host,
                    "port": c.port,
                    "user": c.user,
                    "password": c.password.get_secret_value(),
                    "skip_replicated": c.skip_replicated,
                },
                server_id=c.server_id,
                log_file=handed.file,
                log_pos=handed.pos,
                table_filter=self.matcher,
                heartbeat_period=c.heartbeat_interval,
            )
            self._text_values(self._reader)
        return self._reader

    def _text_values(self, reader: BinlogReader) -> None:
        """In ``canal`` format every value becomes text: a reader that can (the fast one) hands
        DATETIME values as that text already (``RowDecoder``'s ``text_values``)."""
        if self.config.format == "canal" and hasattr(reader, "text_values"):
            reader.text_values = True

    def read(self, timeout: float = _READ_TIMEOUT) -> list[Event]:
        """The next events. How many are asked for adapts to the rows they carry, so a batch
        holds about ``batch_rows`` row changes whether the binlog has single-row transactions
        (four events a row) or 1,000-row statements (a few hundred rows an event)."""
        try:
            events = self.reader().read(self._want, timeout)
        except RetriableError:
            self._lost()
            raise
        if events:
            rows = 0
            for event in events:
                if event.__class__ is RowsEvent:
                    rows += len(event.rows)
            limit = self.config.batch_events
            want = limit if not rows else int(self.config.batch_rows * len(events) / rows)
            self._want = max(min(_MIN_READ_EVENTS, limit), min(limit, want))
        return events

    def _lost(self) -> None:
        """Drop the reader and the unreported stream state: the next read reconnects at the
        position handed out last, and until it does the stream state is that position's. A
        poll that hands out a position without reading first (a snapshot step) must not
        hand out one past events whose records the failed poll threw away."""
        reader, self._reader = self._reader, None
        if self.handed is not None:
            self._reset(self.handed)
        if reader is not None:
            reader.close()
            self.disconnects.inc()

    def hand_out(self, records: list[Record], force: bool = False) -> SourceBatch:
        """The batch of ``records`` with the current position (see the module docstring)."""
        pos = self.position()
        now = time.monotonic()
        failures, self.formatter.failures = self.formatter.failures, []
        if (
            not records
            and not failures
            and not force
            and (
                pos == self.handed
                or now - self._last_position_only < self.config.heartbeat_interval
            )
        ):
            return SourceBatch([])
        if not records:
            self._last_position_only = now
        self.handed = pos
        return SourceBatch(records, {PARTITION: pos.to_dict()}, failures)

    def _poll(self) -> SourceBatch | None:
        try:
            return self._poll_once()
        except BaseException:
            # What this poll handled was not handed out: the stream state is past it (a
            # schema lookup that lost its connection fails in the middle of the events) and
            # the formatter holds its failures. The next poll reads again from the position
            # handed out last, with a new reader, so nothing is lost or reported twice.
            self.formatter.failures = []
            self._lost()
            raise

    def _poll_once(self) -> SourceBatch | None:
        self.formatter.next_batch()
        if self.snapshot is not None:
            step = self.snapshot.step()
            if self.snapshot.finished:
                self.snapshot = None
                if self.bounded:
                    self._done = True
            return self.hand_out(step.records, force=True)
        records: list[Record] = []
        for event in self.read():
            self.handle(event, records)
        return self.hand_out(records)

    # -- events --------------------------------------------------------------------------------

    def handle(self, event: Event, out: list[Record]) -> None:
        """Apply one event to the stream state, appending its records to ``out``."""
        if isinstance(event, RowsEvent):
            self._rows(event, out)
        elif isinstance(event, XidEvent):
            self._release(out)
            self._commit()
        elif isinstance(event, GtidEvent):
            self._begin(event.gtid)
            self.txn_xa = event.xa
            self.txn_transactional = event.transactional
        elif isinstance(event, QueryEvent):
            self._query(event, out)
        elif isinstance(event, RotateEvent):
            self.file = event.next_file
            self.end = event.next_pos
            return
        elif isinstance(event, HeartbeatEvent):
            # The server sends one only when it has sent everything: between transactions,
            # its position is where the binlog ends. A binlog rotated (FLUSH BINARY LOGS, a
            # restart) begins with events that are no transaction (format description, GTID
            # list, checkpoint) and move nothing here: without this the stream stayed at
            # `file:4` while the binlog's end was `file:339`, and a snapshot chunk waiting
            # for that end waited for the next write to the server (found by the cdctrial).
            if not self.in_txn and event.log_pos > self.end and event.log_file == self.file:
                self.end = event.log_pos
            return
        else:  # anything else: no state change
            return
        if event.log_pos > 0:
            self.file = event.log_file
            self.end = event.log_pos

    def _begin(self, gtid: str | None) -> None:
        self.in_txn = True
        self.txn_file = self.file
        self.txn_pos = self.end
        self.txn_gtid = gtid
        self.txn_events = 0
        self.txn_xa = False
        self.txn_transactional = False
        self._xa_rows = []
        self._held = None
        self._savepoints = []

    def _commit(self) -> None:
        if self.txn_gtid:
            self.gtids.add(self.txn_gtid)
        self.in_txn = False
        self.txn_gtid = None
        self.txn_events = 0
        self.txn_xa = False
        self._xa_rows = []
        self._held = None
        self._savepoints = []
        self.skip_events = 0
        self.skip_rows = 0
        self._resume = None

    def _query(self, event: QueryEvent, out: list[Record]) -> None:
        sql = event.query.strip()
        head = sql[:12].upper()
        if head.startswith("BEGIN") or head.startswith("XA START"):
            if not self.in_txn:
                self._begin(None)
            self.txn_xa = self.txn_xa or head.startswith("XA START")  # MySQL marks XA so
            return
        if head.startswith("XA "):
            self._xa(sql, event, out)
            return
        mark = savepoint(sql)
        if mark is not None:
            self._savepoint(*mark)
            return
        if head.startswith("COMMIT"):
            self._release(out)
            self._commit()
            return
        if head.startswith("ROLLBACK"):
            self._commit()
            return
        if head.startswith("RELEASE SAVEPOINT"):
            return
        # DDL (or another statement logged as a statement): a group of its own.
        ddl = parse_ddl(sql, event.schema, event.ansi_quotes)
        if ddl.kind == "DML":
            self._statement_change(ddl, sql, event, out)
            return
        if self.json_history is not None:
            self.json_history.apply(sql, event.schema, event.ansi_quotes)
        self.server.forget_schemas()
        self._shapes.clear()
        if not self.in_txn:
            self._begin(None)
        mode = self.config.ddl
        if mode != "none":
            meta = self._meta(event)
            if ddl.tables:
                captured = [(s, t) for s, t in ddl.tables if self.matcher(s, t)]
                for n, (schema, table) in enumerate(captured):
                    out.append(
                        self.formatter.ddl(sql, schema, ddl.kind, table, meta, ddl.statement, n)
                    )
            elif mode == "all" and self.matcher(ddl.schema, ""):
                out.append(self.formatter.ddl(sql, ddl.schema, ddl.kind, "", meta, ddl.statement))
        if self.snapshot is not None:
            for schema, table in ddl.tables:
                self.snapshot.ddl(schema, table)
        self._commit()

    def _statement_change(self, ddl: Any, sql: str, event: QueryEvent, out: list[Record]) -> None:
        """A row change the session logged as a statement (``binlog_format`` STATEMENT, or
        MIXED choosing it): its rows are not in the binlog, so it cannot be captured. One of
        a captured table (or of tables it cannot tell) is a data error, by the source's
        ``errors:`` policy (the dead letter holds the statement); one of another table is
        skipped like that table's rows. Either way the transaction goes on."""
        if not self.in_txn:
            self._begin(None)
        tables = [t for t in ddl.tables if self.matcher(*t)]
        if ddl.tables and not tables:
            return
        schema, table = tables[0] if tables else (event.schema, "")
        meta = self._meta(event)
        record = self.formatter.ddl(sql, schema, "QUERY", table, meta, ddl.statement)
        which = f"{schema}.{table}" if table else f"a table (from schema {schema or '(none)'})"
        self.formatter.failures.append(
            (
                record,
                DataError(
                    f"canal: {ddl.statement} on {which} at {event.log_file}:{event.log_pos} "
                    "was logged as a statement (the writing session had binlog_format "
                    "STATEMENT or MIXED): its rows are not in the binlog and cannot be "
                    "captured; set binlog_format = ROW globally and stop sessions from "
                    "setting it (see docs/cdc.md, server settings): " + sql[:200]
                ),
            )
        )

    def _savepoint(self, verb: str, name: str) -> None:
        """``SAVEPOINT name`` and ``ROLLBACK TO name`` inside a transaction. The server writes
        ``ROLLBACK TO`` to the binlog (after the row changes it undoes) when the transaction
        also changed a non-transactional table; so the rows events after a savepoint are held
        back until the commit (:meth:`_release`), and a ``ROLLBACK TO`` drops those after its
        savepoint, except changes of non-transactional tables (MyISAM, Aria, …), which the
        server did not undo. In an XA PREPARE group the held rows are the group's own."""
        if not self.in_txn:
            self._begin(None)
        if self.txn_transactional and not self.txn_xa:
            # MariaDB's FL_TRANSACTIONAL group: what a ROLLBACK TO undid never reached the
            # binlog, so nothing is held back (a large transaction in an ORM's nested block,
            # Django's atomic(), streams as any other instead of being kept in memory).
            return
        if self.txn_xa:
            held = self._xa_rows
        else:
            if self._held is None:
                self._held = []
            held = self._held
        self._savepoints = undo_to_savepoint(
            verb, name, held, self._savepoints, self.server.transactional
        )

    def _release(self, out: list[Record]) -> None:
        """At a commit: the rows events held since the transaction's first savepoint."""
        held, self._held = self._held, None
        self._savepoints = []
        if held:
            for event in held:
                self._rows(event, out)

    def _xa(self, sql: str, event: QueryEvent, out: list[Record]) -> None:
        """XA statements (MariaDB writes ``XA END X'…',X'…',1`` at the end of a PREPARE
        group, and ``XA COMMIT``/``XA ROLLBACK`` of the same id in groups of their own):
        a prepared transaction's rows are held back, emitted at its XA COMMIT and dropped
        at its XA ROLLBACK; the PREPARE group's place is part of the position, so a restart
        between the phases reads it again (``_read_prepared``)."""
        words = sql.split(None, 2)
        verb = words[1].upper() if len(words) > 1 else ""
        xid = words[2].strip() if len(words) > 2 else ""
        one_phase = xid.upper().endswith("ONE PHASE")
        if one_phase:
            xid = xid[: -len("ONE PHASE")].strip()
        if verb == "END":
            if self.txn_xa:
                begin: list[Any] = [self.txn_file, self.txn_pos]
                self.xa[xid] = begin
                self._xa_events[_xa_key(begin)] = self._xa_rows
                self._commit()  # the PREPARE group is done; its rows wait
            return
        if verb == "COMMIT":
            if one_phase and self.txn_xa:  # MySQL: XA START … XA END … XA COMMIT ONE PHASE
                rows = self._xa_rows
            else:
                start = self.xa.pop(xid, None)
                rows = self._xa_events.pop(_xa_key(start), []) if start else []
                if start is None:
                    self.log.warning(
                        "canal: XA COMMIT %s at %s:%d: its PREPARE precedes the start "
                        "position; its changes are not in the stream",
                        xid,
                        event.log_file,
                        event.log_pos,
                    )
            self.txn_xa = False
            if not self.in_txn:
                self._begin(None)
            skip = self.skip_events, self.skip_rows
            self.skip_events = self.skip_rows = 0
            for rows_event in rows:
                self._rows(rows_event, out)
            self.skip_events, self.skip_rows = skip
            self._commit()
            return
        if verb == "ROLLBACK":
            start = self.xa.pop(xid, None)
            if start is not None:
                self._xa_events.pop(_xa_key(start), None)
            self._commit()
            return
        # XA PREPARE (MySQL writes an XA_PREPARE event instead) and anything else: no change

    def _meta(self, event: Event) -> TxMeta:
        gtid = self.txn_gtid
        return TxMeta(
            event.log_file,
            event.log_pos,
            event.timestamp,
            gtid or f"{self.txn_file}:{self.txn_pos}",
            gtid,
            self.server_id,
        )

    def shape(self, table: Table) -> Shape:
        cached = self._shapes.get(table.table_id)
        if cached is not None and cached[0] is table:
            return cached[1]
        names = table.column_names
        history = self.json_history
        shape = Shape.build(
            table.schema,
            table.name,
            names,
            table.columns,
            self.server.table_schema(table.schema, table.name),
            self.columns.keep(table.schema, table.name, names),
            self.config.binary,
            table.primary_key,
            self.server.charset_maxlen(),
            self.server.mariadb,
            None if history is None else history.columns(table.schema, table.name),
        )
        self._shapes[table.table_id] = (table, shape)
        return shape

    def _rows(self, event: RowsEvent, out: list[Record]) -> None:
        table = event.table
        if not self.matcher(table.schema, table.name):
            return
        if not self.in_txn:
            self._begin(None)
        if self.txn_xa:  # held back until the XA COMMIT (see _xa)
            self._xa_rows.append(event)
            return
        if self._held is not None:  # after a SAVEPOINT: held back until the commit
            self._held.append(event)
            return
        n = self.txn_events
        self.txn_events += 1
        first = 0
        if self.skip_events:
            if n < self.skip_events:
                return  # delivered before the restart
            if n == self.skip_events:
                first = self.skip_rows
        shape = self.shape(table)
        shape.fix(event)
        meta = self._meta(event)
        rows = event.rows
        if self.snapshot is not None:
            self.snapshot.rows(event, shape, meta, first, out)
            return
        change = self.formatter.change
        kind = event.kind
        if kind == "update":
            before = event.before
            assert before is not None
            for i in range(first, len(rows)):
                change("update", shape, before[i], rows[i], meta, i, out)
        else:
            self.formatter.changes(kind, shape, rows, meta, first, out)

    # -- helpers for the snapshot --------------------------------------------------------------

    def at_or_past(self, file: str, pos: int) -> bool:
        """Whether the stream is at a transaction boundary at or after ``file:pos``."""
        return not self.in_txn and binlog_order(self.file, self.end) >= binlog_order(file, pos)

    def progress(self, text: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\r" + text[:120].ljust(120))
            sys.stderr.flush()


def undo_to_savepoint(
    verb: str,
    name: str,
    held: list[RowsEvent],
    savepoints: list[tuple[str, int]],
    transactional: Any,
) -> list[tuple[str, int]]:
    """Apply ``SAVEPOINT name`` (``verb`` ``SAVEPOINT``) or ``ROLLBACK TO name`` to the rows
    events ``held`` since the transaction's first savepoint (changed in place); the
    savepoints after it. A savepoint set again moves (the server drops the old one); a
    rollback keeps its savepoint, drops the later ones, and drops the rows events after it
    except those of tables ``transactional(schema, table)`` says cannot roll back. A
    rollback to a savepoint not seen (none is before a transaction start) changes nothing."""
    if verb == "SAVEPOINT":
        return [*(s for s in savepoints if s[0] != name), (name, len(held))]
    for i, (known, at) in enumerate(savepoints):
        if known == name:
            kept = [e for e in held[at:] if not transactional(e.table.schema, e.table.name)]
            del held[at:]
            held.extend(kept)
            # What the server did not undo stays even if it rolls back to here again.
            return [*savepoints[:i], (name, len(held))]
    return savepoints
