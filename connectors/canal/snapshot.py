"""The chunked, resumable, lock-free-ish initial snapshot, reconciled with the binlog.

The idea is Flink CDC's watermark algorithm with the single binlog reader the source already
has, and no writes to the source database. The source holds its stream position H (at first
the end of the binlog when the snapshot begins). For each chunk:

1. ``SELECT`` the next ``chunk_size`` rows by primary key after the last snapshotted key
   (one statement, hence one consistent read; with ``snapshot_locking: share`` a locking read
   that waits for transactions already in the binlog but not yet committed in InnoDB). The
   rows are read one at a time, and the chunk ends at the row whose data reach
   :data:`~.events.BATCH_BYTES` (its key is then the chunk's upper bound, as a full chunk's
   last key is); the ``LIMIT`` asks for no more rows than fit, by the last chunk's largest.
2. Take the high watermark H2, the binlog end after the SELECT.
3. Read the binlog from H to H2 (or a little further) and sort each row change by key:
   keys of tables and key ranges already snapshotted are emitted as usual; keys in the new
   chunk's range are applied to the chunk's buffered rows (upsert or delete by key; the SELECT
   may or may not already reflect them: the result is the state as of the end of the window);
   keys not yet snapshotted are dropped, because a later SELECT will see them.
4. Emit the buffered rows as reads (``op: r``, Canal ``type: INSERT``, CloudEvent type
   ``mysql.read``) and hand out the stream position with the snapshot cursor (the tables left
   and the last key), in the same batch: a crash resumes with the next chunk.

The last chunk of a table has no upper bound (rows inserted past the end during the window
are part of it). Tables without a primary key are read in one SELECT and reconciled as a
multiset of whole rows (kept in memory). Keys are paged and compared in the server's order
(:mod:`.keyorder`): in Python where its order is the server's, by the server otherwise
(strings under a collation, UUID, INET6).
DDL on a table while it is being snapshotted is not supported (its chunks keep the old
column list until the table is done).
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from meshconnect import Record, RetriableError
from meshconnect.batchbytes import BATCH_BYTES

from .config import TableMatcher
from .events import RowsEvent
from .formats import Shape, TxMeta
from .keyorder import KeyOrder
from .keyorder import members as key_members
from .positions import binlog_order
from .server import ColumnSchema, Server, TableSchema

if TYPE_CHECKING:
    from .source import CanalSource

__all__ = ["Snapshot", "decode_key", "encode_key"]

_LOG_EVERY = 20  # chunks
_CATCH_UP_BYTES = 256 * 1024
_SELECT_ATTEMPTS = 10
#: Seconds of catching up (committed batch by batch) before a chunk at most: when writes
#: outpace the reader, the chunk is taken anyway (its window is then longer), so the
#: snapshot always progresses.
_MAX_CATCH_UP = 20.0


def encode_key(values: tuple[Any, ...]) -> list[Any]:
    """A primary key as JSON (kept in the committed position), exactly reversible."""
    out: list[Any] = []
    for v in values:
        if isinstance(v, bytes):
            out.append({"b64": base64.b64encode(v).decode()})
        elif isinstance(v, Decimal):
            out.append({"dec": format(v, "f")})
        elif isinstance(v, dt.datetime):
            out.append({"dt": v.isoformat()})
        elif isinstance(v, dt.date):
            out.append({"date": v.isoformat()})
        elif isinstance(v, dt.timedelta):
            out.append({"us": (v.days * 86400 + v.seconds) * 1_000_000 + v.microseconds})
        elif isinstance(v, tuple):
            out.append({"set": list(v)})
        else:
            out.append(v)
    return out


def decode_key(values: list[Any]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in values:
        if isinstance(v, dict):
            if "b64" in v:
                v = base64.b64decode(v["b64"])
            elif "dec" in v:
                v = Decimal(v["dec"])
            elif "dt" in v:
                v = dt.datetime.fromisoformat(v["dt"])
            elif "date" in v:
                v = dt.date.fromisoformat(v["date"])
            elif "us" in v:
                v = dt.timedelta(microseconds=v["us"])
            elif "set" in v:
                v = tuple(v["set"])
        out.append(v)
    return tuple(out)


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _select_expr(column: ColumnSchema) -> str:
    """How the snapshot selects a column so that it reads what the binlog holds: a SET as its
    bit mask (the server's text drops the empty member: SET('','a') holding both prints
    ``a``), a FLOAT as a DOUBLE (the server prints six digits: 16777216 as ``16777200``)."""
    name = _quote(column.name)
    kind = column.data_type.lower()
    if kind == "set":
        return f"{name} + 0"
    if kind == "float":
        return f"CAST({name} AS DOUBLE)"
    return name


def _normaliser(info: TableSchema) -> list[tuple[int, Any]]:
    """Fixes turning pymysql's values into the binlog readers' value types."""
    fixes: list[tuple[int, Any]] = []
    for i, c in enumerate(info.columns):
        kind = c.data_type.lower()
        if kind == "timestamp":
            fixes.append(
                (i, lambda v: v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) else v)
            )
        elif kind == "bit":
            fixes.append((i, lambda v: int.from_bytes(v, "big") if isinstance(v, bytes) else v))
        elif kind == "set":
            members = key_members(c.column_type)

            def set_(v: Any, members: tuple[str, ...] = members) -> Any:
                mask = int(v)
                return tuple(m for b, m in enumerate(members) if mask >> b & 1)

            fixes.append((i, set_))
        elif kind == "json":
            fixes.append((i, lambda v: v.decode() if isinstance(v, bytes) else v))
    return fixes


class Snapshot:
    """The snapshot in progress, driven by :meth:`step` from the source's poll."""

    @staticmethod
    def initial_state(server: Server, matcher: TableMatcher) -> dict[str, Any]:
        tables = [[s, t] for s, t in server.base_tables() if matcher(s, t)]
        return {"tables": tables, "after": None, "done": 0}

    def __init__(self, source: CanalSource, state: dict[str, Any]) -> None:
        self.source = source
        self.tables: list[list[str]] = [list(t) for t in state.get("tables", [])]
        self.after: list[Any] | None = state.get("after")
        self.done = int(state.get("done", 0))
        self.finished = False
        # The window of the chunk being reconciled.
        self._current: tuple[str, str] | None = None
        self._lo: tuple[Any, ...] | None = None
        self._hi: tuple[Any, ...] | None = None
        self._buffer: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._multiset: Counter[tuple[Any, ...]] | None = None
        self._chunks = 0
        self._started = time.monotonic()
        self._estimate: dict[tuple[str, str], int] = {}
        #: The largest row of the last chunk (``values_bytes``): the next one's LIMIT fits
        #: BATCH_BYTES, so the rows past the bound a query must read and drop are few.
        self._row_bytes = 0
        self._table_rows = 0
        self._catching_up = False
        self._catch_up_since: float | None = None
        #: The key order of the table being snapshotted (see keyorder.py).
        self._order: KeyOrder | None = None
        self._order_of: tuple[str, str] | None = None

    @property
    def state(self) -> dict[str, Any]:
        """A copy for the position (the batch is stored after this object moves on)."""
        return {
            "tables": [list(t) for t in self.tables],
            "after": list(self.after) if self.after is not None else None,
            "done": self.done,
        }

    # -- one chunk -----------------------------------------------------------------------------

    def step(self) -> _Step:
        src = self.source
        server = src.server
        if not self.tables:
            self.finished = True
            src.log.info(
                "canal: snapshot done: %d rows in %.1fs",
                self.done,
                time.monotonic() - self._started,
            )
            return _Step([])
        schema, table = self.tables[0]
        info = server.table_schema(schema, table)
        if info is None:  # dropped meanwhile
            self._next_table()
            return _Step([])
        key = (schema, table)
        if key not in self._estimate:
            self._estimate[key] = server.estimate_rows(schema, table)
            self._table_rows = 0
        names = [c.name for c in info.columns]
        pk = list(info.primary_key)
        chunk = src.config.chunk_size
        if pk and self._row_bytes:  # no more rows than fit in BATCH_BYTES (see _select)
            chunk = min(chunk, BATCH_BYTES // self._row_bytes + 1)
        select = ", ".join(_select_expr(c) for c in info.columns)
        sql = f"SELECT {select} FROM {_quote(schema)}.{_quote(table)}"
        args: list[Any] = []
        lo = decode_key(self.after) if self.after is not None and pk else None
        if pk:
            order = self._key_order(server, schema, table, pk)
            cols = ", ".join(map(_quote, pk))
            if lo is not None:
                sql += f" WHERE ({cols}) > ({', '.join(['%s'] * len(pk))})"
                args = order.params(lo)
            sql += f" ORDER BY {cols} LIMIT {chunk}"
        if src.config.snapshot_locking == "share":
            sql += " LOCK IN SHARE MODE"
        now = time.monotonic()
        since = self._catch_up_since
        if (since is None or now - since < _MAX_CATCH_UP) and self._behind(src):
            self._catch_up_since = now if since is None else since
            return self._catch_up(schema, table, lo if pk else None)
        self._catch_up_since = None
        fixes = _normaliser(info)
        rows = []
        selected, cut, self._row_bytes = self._select(server, sql, args, bounded=bool(pk))
        for raw in selected:
            row = list(raw)
            for i, fix in fixes:
                if row[i] is not None:
                    row[i] = fix(row[i])
            rows.append(tuple(row))
        high_file, high_pos, _ = server.binary_log_status()
        last = not pk or (not cut and len(rows) < chunk)
        pk_index = [names.index(n) for n in pk]
        # Open the window.
        self._current = (schema, table)
        self._lo = lo
        self._hi = None if last else tuple(rows[-1][i] for i in pk_index)
        if self._order is not None:
            self._order.forget()
        if pk:
            self._buffer = {tuple(r[i] for i in pk_index): r for r in rows}
            self._multiset = None
        else:
            self._buffer = {}
            self._multiset = Counter(rows)
        out: list[Record] = []
        try:
            while not src.at_or_past(high_file, high_pos):
                for event in src.read():
                    src.handle(event, out)
        except RetriableError:
            self._current = None
            raise
        # Emit the chunk as reads.
        shape = Shape.build(
            schema,
            table,
            names,
            None,
            info,
            src.columns.keep(schema, table, names),
            src.config.binary,
        )
        meta = TxMeta(
            high_file, high_pos, int(time.time()), "snapshot", None, src.server_id, snapshot=True
        )
        change = src.formatter.change
        if self._multiset is not None:
            images = list(self._multiset.elements())
        else:
            images = [self._buffer[k] for k in sorted(self._buffer, key=self._sort_key)]
        for n, image in enumerate(images):
            change("read", shape, None, image, meta, n, out)
        self.done += len(images)
        self._table_rows += len(images)
        self._current = None
        self._buffer = {}
        self._multiset = None
        self._chunks += 1
        if last:
            src.log.info(
                "canal: snapshot of %s.%s done: %d rows; %d table(s) left",
                schema,
                table,
                self._table_rows,
                len(self.tables) - 1,
            )
            self._next_table()
        else:
            assert self._hi is not None
            self.after = encode_key(self._hi)
            estimate = self._estimate.get(key, 0)
            text = (
                f"canal: snapshot {schema}.{table}: {self._table_rows} of about "
                f"{max(estimate, self._table_rows)} rows ({self.done} in all)"
            )
            if self._chunks % _LOG_EVERY == 0:
                src.log.info("%s", text)
            src.progress(text)
        return _Step(out)

    def _behind(self, src: CanalSource) -> bool:
        """Whether the stream is far behind the end of the binlog (then a chunk's window
        would be long: the stream catches up first, in bounded batches)."""
        file, pos, _ = src.server.binary_log_status()
        here = binlog_order(src.file, src.end)
        end = binlog_order(file, pos)
        return here[0] < end[0] or end[1] - here[1] > _CATCH_UP_BYTES

    def _catch_up(self, schema: str, table: str, lo: tuple[Any, ...] | None) -> _Step:
        """One batch of binlog with no chunk open: changes of snapshotted keys are emitted,
        the others dropped (a later SELECT sees them)."""
        src = self.source
        self._current = (schema, table)
        self._lo = lo
        self._catching_up = True
        if self._order is not None:
            self._order.forget()
        out: list[Record] = []
        try:
            for event in src.read():
                src.handle(event, out)
        finally:
            self._current = None
            self._catching_up = False
        return _Step(out)

    @staticmethod
    def _select(
        server: Server, sql: str, args: list[Any], bounded: bool
    ) -> tuple[list[tuple[Any, ...]], bool, int]:
        """The chunk query's rows, whether :data:`BATCH_BYTES` cut them short (``bounded``:
        the chunk then ends at the row that crossed it; a table without a key is read
        whole, its rows not weighed) and the largest row's weight; a locking read that loses
        a deadlock (or times out waiting for a lock) is tried again."""
        for attempt in range(_SELECT_ATTEMPTS):
            try:
                if bounded:
                    return server.query_bounded(sql, args or None, BATCH_BYTES)
                return server.query(sql, args or None), False, 0
            except RetriableError as exc:
                code = getattr(exc.__cause__, "args", (None,))[0]
                if code not in (1205, 1213) or attempt == _SELECT_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _next_table(self) -> None:
        self.tables.pop(0)
        self.after = None
        self._row_bytes = 0

    def ddl(self, schema: str, table: str) -> None:
        """A DDL statement went by (nothing to do: see the module docstring)."""

    # -- row changes inside a window -----------------------------------------------------------

    def _sort_key(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """A buffered key as Python sorts it in the server's order (a zero date's text
        among dates: ``KeyOrder.sort_key``)."""
        order = self._order
        return key if order is None else order.sort_key(order.params(key))

    def _key_order(self, server: Server, schema: str, table: str, pk: list[str]) -> KeyOrder:
        """The order of ``schema.table``'s primary key, as the server sorts it."""
        if self._order is None or self._order_of != (schema, table):
            found = {
                str(name): (str(kind), str(ctype), cs and str(cs), coll and str(coll))
                for name, kind, ctype, cs, coll in server.query(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, "
                    "COLLATION_NAME FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s",
                    [schema, table],
                )
            }
            columns = [found.get(n, ("", "", None, None)) for n in pk]
            self._order = KeyOrder(columns, lambda sql, args: server.query(sql, args))
            self._order_of = (schema, table)
        return self._order

    def _regions(self, schema: str, table: str, keys: list[tuple[Any, ...]]) -> list[str]:
        """Where each key stands against the open window: ``done`` (read by an earlier chunk,
        or not being snapshotted), ``chunk`` or ``later`` — in the server's key order."""
        if self._current is None or [schema, table] not in self.tables:
            return ["done"] * len(keys)
        if (schema, table) != self._current:
            return ["later"] * len(keys)
        if self._multiset is not None and not self._catching_up:
            return ["chunk"] * len(keys)
        order, lo, hi = self._order, self._lo, self._hi
        if lo is None:
            done = [False] * len(keys)
        else:
            assert order is not None and self._order_of == self._current
            done = order.at_most(keys, lo)
        if self._catching_up:
            return ["done" if d else "later" for d in done]
        if hi is None:
            upto = [True] * len(keys)
        else:
            assert order is not None and self._order_of == self._current
            upto = order.at_most(keys, hi)
        return ["done" if d else "chunk" if u else "later" for d, u in zip(done, upto, strict=True)]

    def rows(
        self, event: RowsEvent, shape: Shape, meta: TxMeta, first: int, out: list[Record]
    ) -> None:
        """Sort the row changes of one binlog event by region (see the module docstring)."""
        schema, table = event.table.schema, event.table.name
        change = self.source.formatter.change
        rows = event.rows
        before = event.before
        if event.kind == "update":
            assert before is not None
            keys = [shape.key(before[i]) for i in range(first, len(rows))]
            keys += [shape.key(rows[i]) for i in range(first, len(rows))]
            regions = self._regions(schema, table, keys)
            n = len(rows) - first
            for j, i in enumerate(range(first, len(rows))):
                old, new = before[i], rows[i]
                r_old, r_new = regions[j], regions[n + j]
                if r_old == r_new == "done":
                    change("update", shape, old, new, meta, i, out)
                    continue
                self._apply("delete", r_old, shape, old, meta, i, out)
                self._apply("insert", r_new, shape, new, meta, i, out)
            return
        regions = self._regions(
            schema, table, [shape.key(rows[i]) for i in range(first, len(rows))]
        )
        for region, i in zip(regions, range(first, len(rows)), strict=True):
            self._apply(event.kind, region, shape, rows[i], meta, i, out)

    def _apply(
        self,
        op: str,
        region: str,
        shape: Shape,
        image: tuple[Any, ...],
        meta: TxMeta,
        row: int,
        out: list[Record],
    ) -> None:
        if region == "done":
            if op == "insert":
                self.source.formatter.change("insert", shape, None, image, meta, row, out)
            else:
                self.source.formatter.change("delete", shape, image, None, meta, row, out)
        elif region == "chunk":
            if self._multiset is not None:
                if op == "insert":
                    self._multiset[image] += 1
                elif self._multiset[image] > 0:
                    self._multiset[image] -= 1
            elif op == "insert":
                self._buffer[shape.key(image)] = image
            else:
                self._buffer.pop(shape.key(image), None)


class _Step:
    """What one snapshot step produced."""

    __slots__ = ("records",)

    def __init__(self, records: list[Record]) -> None:
        self.records = records
