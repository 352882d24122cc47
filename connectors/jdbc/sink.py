"""The ``jdbc`` sink: writes records into SQL tables through SQLAlchemy 2.

Each ``write`` is applied in one transaction (split only around a DDL record, which runs
between two transactions), in record order, with consecutive operations of the same kind on
the same table and columns sent together by ``executemany``. Identifiers are quoted by
SQLAlchemy and values are always bound: no SQL is assembled from record contents.

Failures: a batch the database rejects (a constraint violation, a bad value) is rolled back
and applied again record by record, each under a SAVEPOINT, so only the rejected records fail
(a :class:`~meshconnect.BatchError` naming them: they go to the dead-letter topic with the
database's message) and every other record is written once. Connection losses, deadlocks and
server shutdowns are :class:`~meshconnect.RetriableError` (the worker retries the batch).

Delivery: CDC records and ``upsert`` mode are idempotent, so a replay after a crash is
harmless (effectively once). ``exactly_once: true`` also stores the consumer offsets in the
target database, in the same transaction as the rows they cover, and skips records below
them after a restart (Kafka Connect leaves this gap open for sinks). The offsets of the
records that failed in a stored batch are kept beside them (column ``failed``): such a record
is not skipped when it comes again, since only the worker knows whether it went to the
dead-letter topic (``tolerance: all``) or stopped the sink (``tolerance: none``: then it must
fail again, not vanish behind the stored offset).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from meshconnect import (
    BatchError,
    ConfigError,
    DataError,
    Flushed,
    MeshconnectError,
    Record,
    Sink,
    jsonvalue,
)

from .cdc import Change, decode
from .config import JdbcSinkConfig
from .ddl import alter_actions
from .engine import classify_db_error, make_engine, reflect
from .typemap import ZeroDate, coercer, for_plain_records, infer_type, sa_type_for_mysql

__all__ = ["JdbcSink"]

#: Runs of at least this many rows go to PostgreSQL by COPY into a staging table.
_COPY_MIN = 1000

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


class _Skip(Exception):
    """A DDL the sink does not apply (``ddl: apply`` logs it and goes on)."""


class _TableInfo:
    """A reflected target table with its per-column coercions."""

    __slots__ = ("columns", "convs", "json_columns", "pk", "plain_convs", "sql", "table")

    def __init__(self, table: Any, json_text: bool) -> None:
        import sqlalchemy as sa

        self.table = table
        self.columns = {c.name: c for c in table.columns}
        self.pk = [c.name for c in table.primary_key.columns]
        #: json_text -> column -> converter (columns whose values pass as they are: absent)
        self.convs: dict[bool, dict[str, Any]] = {
            jt: {c.name: f for c in table.columns if (f := coercer(c.type, jt)) is not None}
            for jt in (False, True)
        }
        #: plain records' converters: an object or a list into a text column as JSON text
        self.plain_convs = {n: for_plain_records(f) for n, f in self.convs[False].items()}
        self.json_columns = {c.name for c in table.columns if isinstance(c.type, sa.JSON)}
        for c in table.columns:
            if isinstance(c.type, sa.JSON):
                # a null is SQL NULL, not the JSON text 'null' (as PostgreSQL's path writes it)
                c.type.none_as_null = True
        #: PostgreSQL fast path: (op, key, columns) -> SQL text with positional parameters
        self.sql: dict[tuple[Any, ...], tuple[str, list[int]]] = {}


class JdbcSink(Sink[JdbcSinkConfig]):
    """Writes, upserts, updates and deletes rows; applies `canal` CDC records."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): they write rows by key, and
        ``exactly_once`` keeps its offsets per topic partition, one row each."""
        return None

    def __init__(self, config: JdbcSinkConfig, context: Any) -> None:
        super().__init__(config, context)
        self.engine: Any = None
        self.dialect = ""
        self.tables: dict[str, _TableInfo] = {}
        self.committed: dict[str, int] = {}  # exactly_once: topic -> next offset
        #: exactly_once: topic -> offsets below the next one whose records failed (not written)
        self.failed: dict[str, set[int]] = {}
        self.sink_id = f"{context.pipeline}/{context.name}"
        self.zero_dates = context.metrics.counter(
            "jdbc_zero_dates", "Zero MySQL dates written as NULL"
        )
        self.ddl_skipped = context.metrics.counter("jdbc_ddl_skipped", "DDL records not applied")
        self.skipped_eo = context.metrics.counter(
            "jdbc_exactly_once_skipped", "Records skipped: already in the target (exactly_once)"
        )
        self._template = config.table
        self._literal = config.table is not None and not _FIELD.search(config.table)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, state: Mapping[str, Any] | None) -> None:
        self.engine = make_engine(self.config, self.context.base_dir)
        self.dialect = self.engine.dialect.name
        if self.dialect in ("mysql", "mariadb"):
            _mysql_sessions(self.engine)
        if self.dialect == "postgresql":
            _quiet_aborted_pipelines()
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        with self.engine.connect() as conn:
            conn.rollback()
        if self.config.exactly_once:
            import sqlalchemy as sa

            table = self._offsets_table()
            name = self.config.offsets_table
            try:
                with self.engine.begin() as conn:
                    table.create(conn, checkfirst=True)
            except sa.exc.DBAPIError as exc:  # created meanwhile by another consumer?
                try:
                    reflect(name, self.engine, self.config.db_schema)
                except sa.exc.NoSuchTableError:
                    raise exc from None
            there = reflect(name, self.engine, self.config.db_schema)
            if "failed" not in there.c:  # a table made before the column existed
                self._add_column_once(name, there, table.c.failed._copy())
            with self.engine.begin() as conn:
                rows = conn.execute(table.select().where(table.c.sink == self.sink_id)).all()
            self.committed = {r.topic: int(r.next_offset) for r in rows}
            self.failed = {r.topic: set(jsonvalue.loads(r.failed)) for r in rows if r.failed}

    async def close(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await asyncio.to_thread(engine.dispose)

    async def flush(self) -> dict[str, Any] | Flushed | None:
        # Every write commits its own transaction: nothing is held.
        return {}

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_db_error(exc)

    # -- write -----------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        await asyncio.to_thread(self._write_sync, records)

    def _write_sync(self, records: Sequence[Record]) -> None:
        failures: dict[int, BaseException] = {}
        plan: list[tuple[int, Change, str]] = []
        if self.failed:
            self._forget_failed(records)
        for i, record in enumerate(records):
            if self.committed and record.offset is not None and record.topic is not None:
                done = self.committed.get(record.topic)
                if (
                    done is not None
                    and record.offset < done
                    and record.offset not in self.failed.get(record.topic, ())
                ):
                    self.skipped_eo.inc()
                    continue
            try:
                for change in decode(record):
                    if change.op == "tombstone":
                        change.row = {"partitionkey": (record.extensions or {}).get("partitionkey")}
                    plan.append((i, change, self._table_name(record, change)))
            except DataError as exc:
                failures[i] = exc
        # Segments between DDL records; each is one transaction.
        segment: list[tuple[int, Change, str]] = []
        for item in plan:
            if item[1].op == "ddl":
                self._segment(records, segment, failures, upto=item[0])
                segment = []
                try:
                    self._ddl(item[1], item[2])
                except DataError as exc:
                    failures[item[0]] = exc
                self._commit_offsets_only(records, item[0] + 1, failures)
            else:
                segment.append(item)
        self._segment(records, segment, failures, upto=len(records))
        if failures:
            error = BatchError()
            for i in sorted(failures):
                error.failed(i, failures[i])
            raise error

    def _segment(
        self,
        records: Sequence[Record],
        plan: list[tuple[int, Change, str]],
        failures: dict[int, BaseException],
        upto: int,
    ) -> None:
        """Apply ``plan`` in one transaction (with the offsets of ``records[:upto]``); on a
        data error, again record by record under savepoints."""

        if not plan:
            return
        ops = self._prepare(plan, failures)
        try:
            with self.engine.begin() as conn:
                self._session(conn)
                self._run(conn, ops)
                self._store_offsets(conn, records, upto, failures)
            return
        except Exception as exc:
            if classify_db_error(exc) is not DataError:
                raise
            # a record the database (or the driver) rejects: found record by record below
        # One by one: each record's operations under a savepoint.
        with self.engine.begin() as conn:
            self._session(conn)
            for index, group in _by_record(ops):
                try:
                    with conn.begin_nested():
                        self._run(conn, group)
                except Exception as exc:
                    if classify_db_error(exc) is not DataError:
                        raise
                    failures[index] = DataError(f"jdbc: {_db_message(exc)}")
            self._store_offsets(conn, records, upto, failures)

    def _session(self, conn: Any) -> None:
        if self.config.skip_replication and self.dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql("SET SESSION skip_replication = 1")

    # -- planning --------------------------------------------------------------------------

    def _table_name(self, record: Record, change: Change) -> str:
        if self._template is None:
            name = change.table or record.topic_name or self.context.pipeline
        elif self._literal:
            name = self._template
        else:
            name = _FIELD.sub(lambda m: _field(record, m.group(1)), self._template)
        if not name:
            raise DataError("jdbc: the target table name is empty")
        return name

    def _prepare(
        self, plan: list[tuple[int, Change, str]], failures: dict[int, BaseException]
    ) -> list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]]:
        """Resolve tables, keys and bind values: ``(record index, op, table, key, params)``
        per operation. A record that cannot be applied (no key, unknown column without
        ``auto_evolve``, a bad value) is a failure of its own."""
        out: list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]] = []
        for index, change, name in plan:
            if index in failures:
                continue
            try:
                info = self._table(name, change)
                key = self._key(change, info)
                op = change.op
                if op == "write":
                    op = self.config.mode
                if op == "tombstone":
                    pk = self._tombstone_key(change, key)
                    out.append((index, "delete", info, key, self._values(info, pk, change)))
                    continue
                row = change.row or {}
                if op == "delete":
                    missing = [k for k in key if k not in row]
                    if missing:
                        raise DataError(f"jdbc: delete without the key column(s) {missing}")
                    row = {k: row[k] for k in key}
                else:
                    unknown = [c for c in row if c not in info.columns]
                    if unknown:
                        if not self.config.auto_evolve:
                            raise DataError(
                                f"jdbc: table {name!r} has no column(s) {unknown} (set "
                                "auto_evolve: true to add them)"
                            )
                        info = self._evolve(name, info, change, unknown)
                    if op in ("upsert", "update"):
                        missing = [k for k in key if k not in row]
                        if missing:
                            raise DataError(f"jdbc: the row lacks the key column(s) {missing}")
                out.append((index, op, info, key, self._values(info, row, change)))
            except DataError as exc:
                failures[index] = exc
            except Exception as exc:
                # the database refusing this record's table or column while it is looked up,
                # made or evolved (MariaDB: "Incorrect table name 't '"): this record's fault
                if classify_db_error(exc) is not DataError or not _is_db_error(exc):
                    raise
                failures[index] = DataError(f"jdbc: {_db_message(exc)}")
        return out

    def _tombstone_key(self, change: Change, key: list[str]) -> dict[str, Any]:
        if len(key) != 1:
            raise DataError(
                f"jdbc: a tombstone (null data) deletes by partitionkey, which needs a one-column "
                f"key; the key is {key}"
            )
        pk = (change.row or {}).get("partitionkey")
        if pk is None:
            raise DataError("jdbc: a tombstone (null data) without a partitionkey")
        return {key[0]: pk}

    def _values(self, info: _TableInfo, row: dict[str, Any], change: Change) -> dict[str, Any]:
        out: dict[str, Any] = {}
        convs = info.convs[change.json_text] if change.cdc else info.plain_convs
        for name, value in row.items():
            conv = convs.get(name)
            if conv is not None and value is not None:
                try:
                    value = conv(value)
                except ZeroDate:
                    self.zero_dates.inc()
                    value = None
                except (ValueError, TypeError, ArithmeticError) as exc:
                    raise DataError(
                        f"jdbc: column {name!r}: cannot write {value!r}: {exc}"
                    ) from None
            out[name] = value
        return out

    def _key(self, change: Change, info: _TableInfo) -> list[str]:
        key = self.config.key or change.pk or info.pk
        if not key and (
            change.op == "tombstone"
            or (change.op == "write" and self.config.mode in ("upsert", "update"))
        ):
            # the same for every plain record: the config's mistake, not the record's (each
            # record went to the dead-letter topic, the run ended "successfully")
            need = "tombstones" if change.op == "tombstone" else f"mode {self.config.mode}"
            raise ConfigError(
                f"jdbc sink {self.context.name}: table {info.table.name!r} has no primary key "
                f"and config.key is not set, and {need} needs a key: set key: [column, …] "
                "(unique columns), give the table a primary key, or use mode: insert"
            )
        if not key and change.op in ("delete", "upsert"):
            raise DataError(
                f"jdbc: no key for table {info.table.name!r}: it has no primary key and "
                "config.key is not set"
            )
        bad = [k for k in key if k not in info.columns]
        if bad:
            raise DataError(f"jdbc: key column(s) {bad} not in table {info.table.name!r}")
        return list(key)

    # -- tables ----------------------------------------------------------------------------

    def _check_names(self, names: Any, what: str) -> None:
        """DataError for a name longer than the database takes: PostgreSQL cuts it to 63
        bytes with only a NOTICE, so the table or column made is not the one asked for (the
        sink then failed on SQLAlchemy's IdentifierError, or added the column again and
        again); MySQL refuses more than 64 characters."""
        if self.dialect in ("mysql", "mariadb"):
            limit = 64  # SQLAlchemy's 255 is for its labels
        elif self.dialect == "postgresql":
            limit = self.engine.dialect.max_identifier_length or 63  # the server's, once known
        else:
            return
        for name in names:
            size = len(name.encode()) if self.dialect == "postgresql" else len(name)
            if size > limit:
                unit = "bytes" if self.dialect == "postgresql" else "characters"
                raise DataError(
                    f"jdbc: {what} name {name[:80]!r} is {size} {unit} long; {self.dialect} "
                    f"takes at most {limit} (rename it with a transform, or set `table`)"
                )

    def _table(self, name: str, change: Change) -> _TableInfo:
        info = self.tables.get(name)
        if info is not None:
            return info
        import sqlalchemy as sa

        self._check_names([name], "table")
        try:
            table = reflect(name, self.engine, self.config.db_schema)
        except sa.exc.NoSuchTableError:
            if not self.config.auto_create or change.op in ("delete", "tombstone", "ddl"):
                if change.op in ("delete", "tombstone"):
                    raise DataError(f"jdbc: table {name!r} does not exist") from None
                raise DataError(
                    f"jdbc: table {name!r} does not exist (set auto_create: true to create it)"
                ) from None
            table = self._create(name, change)
        info = _TableInfo(table, change.json_text)
        self.tables[name] = info
        return info

    def _column_type(self, col: str, change: Change, value: Any, key: bool) -> Any:
        types = change.mysql_types or {}
        if col in types:
            return sa_type_for_mysql(types[col], self.dialect, key)
        return infer_type(value, self.dialect, key)

    def _create(self, name: str, change: Change) -> Any:
        import sqlalchemy as sa

        row = change.row or {}
        key = self.config.key or change.pk or []
        if not key and change.op == "upsert":
            # A CDC record of a source table without a primary key: that table's fault, not
            # the config's. The pipeline's other tables are fine, so this is a dead letter of
            # its own (it was a ConfigError that stopped the sink for every table, found by
            # the cdctrial: a keyless `logs` table in a replicated schema).
            raise DataError(
                f"jdbc: cannot create table {name!r}: its {change.table or 'CDC'} records "
                "carry no key names (the source table has no primary key); give the source "
                "table a primary key, leave it out of the capture (the source's exclude), "
                "set config.key, or create the target table with a primary key"
            )
        if not key and change.op == "write" and self.config.mode != "insert":
            # A table without a primary key could take no upsert or update: every record
            # would fail, and still after `key` is set, since the table would stay keyless.
            raise ConfigError(
                f"jdbc sink {self.context.name}: cannot create table {name!r} for mode "
                f"{self.config.mode}: no key; set config.key (it becomes the table's primary "
                "key), or create the table with a primary key"
            )
        cols = [
            sa.Column(
                c,
                self._column_type(c, change, v, c in key),
                primary_key=c in key,
                autoincrement=False,  # the rows bring their keys: no SERIAL/IDENTITY
            )
            for c, v in row.items()
        ]
        missing = [k for k in key if k not in row]
        if missing:
            raise DataError(f"jdbc: cannot create {name!r}: key column(s) {missing} not in row")
        self._check_names(row, "column")
        meta = sa.MetaData()
        # MySQL/MariaDB: utf8mb4, whatever the database's default (latin1 before MariaDB
        # 11.6): a table made in the default refused every emoji or CJK character
        options: dict[str, Any] = (
            {"mysql_charset": "utf8mb4"} if self.dialect in ("mysql", "mariadb") else {}
        )
        table = sa.Table(name, meta, *cols, schema=self.config.db_schema, **options)
        try:
            with self.engine.begin() as conn:
                table.create(conn, checkfirst=True)
        except sa.exc.DBAPIError as exc:
            # Created meanwhile by another writer (a consumer of another partition)?
            try:
                return reflect(name, self.engine, self.config.db_schema)
            except sa.exc.NoSuchTableError:
                raise exc from None
        self.context.logger.info("jdbc: created table %s", name)
        return reflect(name, self.engine, self.config.db_schema)

    def _evolve(
        self, name: str, info: _TableInfo, change: Change, columns: list[str]
    ) -> _TableInfo:
        import sqlalchemy as sa

        row = change.row or {}
        self._check_names(columns, "column")
        for col in columns:
            column = sa.Column(col, self._column_type(col, change, row[col], False))
            self._add_column_once(name, info.table, column)
        self.tables.pop(name, None)
        self.context.logger.info("jdbc: added column(s) %s to %s", columns, name)
        return self._table(name, change)

    def _add_column_once(self, name: str, table: Any, column: Any) -> None:
        """Add ``column`` to ``table`` in a transaction of its own, unless another writer
        added it meanwhile: the consumers of a partitioned topic (docs/scaleout.md#partitions)
        and other workers evolve the same table, and what counts is that the column is there
        (a failed ALTER is checked against the table as it is now)."""
        import sqlalchemy as sa

        try:
            with self.engine.begin() as conn:
                self._add_column(conn, table, column)
        except sa.exc.DBAPIError:
            there = reflect(name, self.engine, self.config.db_schema)
            if column.name not in {c.name for c in there.columns}:
                raise
            self.context.logger.info("jdbc: column %s of %s was added meanwhile", column.name, name)

    def _add_column(self, conn: Any, table: Any, column: Any) -> None:
        from sqlalchemy.schema import CreateColumn

        prep = conn.dialect.identifier_preparer
        spec = CreateColumn(column).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {prep.format_table(table)} ADD COLUMN {spec}")

    # -- DDL -------------------------------------------------------------------------------

    def _ddl(self, change: Change, name: str) -> None:
        sql = change.sql or ""
        if self.config.ddl == "ignore":
            self.ddl_skipped.inc()
            return
        if self.config.ddl == "fail":
            raise ConfigError(
                f"jdbc sink {self.context.name}: a DDL record for {name!r} ({sql[:200]!r}) and "
                "ddl: fail; apply it on the target by hand, then set ddl: ignore or apply"
            )
        import sqlalchemy as sa

        actions = alter_actions(sql) if change.table else [("other", sql, "")]
        for kind, a, b in actions:
            if kind == "truncate" and self.config.table is not None:
                # `table` may gather several source tables into one (shards): emptying it for
                # one of them would remove the others' rows
                kind, a = "other", sql
            if kind == "other":
                self.ddl_skipped.inc()
                self.context.logger.warning("jdbc: DDL not applied to %s: %s", name, a[:200])
                continue
            try:
                table = reflect(name, self.engine, self.config.db_schema)
            except sa.exc.NoSuchTableError:
                self.ddl_skipped.inc()
                return  # created later from the rows, with their columns
            names = {c.name for c in table.columns}
            with self.engine.begin() as conn:
                if kind == "truncate":
                    # MySQL writes no row events for the rows a TRUNCATE removes: without
                    # this the copy kept them for ever. Replaying it is harmless: the rows
                    # after it come again after it.
                    target = conn.dialect.identifier_preparer.format_table(table)
                    verb = "DELETE FROM" if self.dialect == "sqlite" else "TRUNCATE TABLE"
                    conn.exec_driver_sql(f"{verb} {target}")
                elif kind == "add" and a not in names:
                    column = sa.Column(a, sa_type_for_mysql(b, self.dialect))
                    self._add_column(conn, table, column)
                elif kind == "rename" and a in names and b not in names:
                    prep = conn.dialect.identifier_preparer
                    conn.exec_driver_sql(
                        f"ALTER TABLE {prep.format_table(table)} RENAME COLUMN "
                        f"{prep.quote(a)} TO {prep.quote(b)}"
                    )
            self.context.logger.info("jdbc: applied to %s: %s %s %s", name, kind, a, b)
        self.tables.pop(name, None)

    # -- execution -------------------------------------------------------------------------

    def _run(
        self, conn: Any, ops: list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]]
    ) -> None:
        """Execute operations in order; consecutive ones of the same kind, table and columns
        go in one executemany (upserts of one key within a run keep the last)."""
        i = 0
        n = len(ops)
        while i < n:
            _, op, info, key, params = ops[i]
            cols = tuple(params)
            j = i + 1
            while j < n:
                _, op2, info2, key2, p2 = ops[j]
                if op2 != op or info2 is not info or key2 != key or p2.keys() != params.keys():
                    break
                j += 1
            rows = [o[4] for o in ops[i:j]]
            if op == "upsert" and len(rows) > 1 and key:
                rows = self._last_per_key(key, rows)
            if op in ("update", "delete"):
                rows = _synthetic(op, key, cols, rows)
            elif self.dialect == "postgresql" and conn.dialect.driver == "psycopg":
                self._pg_executemany(conn, op, info, key, cols, rows)
                i = j
                continue
            conn.execute(self._statement(op, info, key, cols), rows)
            i = j

    def _last_per_key(self, key: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of a run of upserts that would stand, one per key: the last of each key,
        or with ``last_writer_wins`` the one with the greatest version (the last of equal
        ones), as applying them one by one would leave it. Keeping the last alone let an
        older version that came later in the batch overwrite a newer one."""
        lww = self.config.last_writer_wins
        if lww is not None and lww not in rows[0]:
            lww = None
        last: dict[Any, dict[str, Any]] = {}
        k0 = key[0] if len(key) == 1 else None
        for r in rows:
            k = r[k0] if k0 is not None else tuple(r[c] for c in key)
            if lww is not None:
                old = last.get(k)
                if old is not None and not _newer(r[lww], old[lww]):
                    continue
            last.pop(k, None)
            last[k] = r
        return list(last.values()) if len(last) != len(rows) else rows

    def _pg_executemany(
        self,
        conn: Any,
        op: str,
        info: _TableInfo,
        key: list[str],
        cols: tuple[str, ...],
        rows: list[dict[str, Any]],
    ) -> None:
        """INSERT/upsert on PostgreSQL through psycopg's own ``executemany`` (pipeline mode)
        with the statement SQLAlchemy compiled once (identifiers quoted by it, every value a
        parameter): SQLAlchemy's per-parameter processing would cost more than the database.
        Raises the driver's exceptions (see :func:`classify_db_error`)."""
        cache = (op, tuple(key), cols)
        compiled = info.sql.get(cache)
        if compiled is None:
            import sqlalchemy as sa

            named: dict[str, Any] = {c: sa.bindparam(f"p{j}") for j, c in enumerate(cols)}
            stmt = self._statement(op, info, key, cols, values=named)
            text = str(stmt.compile(dialect=conn.dialect))
            # the parameters in the order the statement holds them (the table's column order)
            order = [int(n) for n in re.findall(r"%\(p(\d+)\)s", text)]
            compiled = info.sql[cache] = (re.sub(r"%\(p\d+\)s", "%s", text), order)
        sql, order = compiled
        names = [cols[j] for j in order]
        json_cols = [k for k, c in enumerate(names) if c in info.json_columns]
        params = [[r[c] for c in names] for r in rows]
        if json_cols:
            import sqlalchemy as sa

            for values in params:
                for k in json_cols:
                    if values[k] is sa.JSON.NULL:  # JSON's null, not SQL NULL
                        values[k] = "null"
                    elif values[k] is not None:
                        values[k] = jsonvalue.dumps(values[k]).decode()
        if len(params) >= _COPY_MIN:
            self._pg_copy(conn, op, info, key, names, params)
            return
        with conn.connection.driver_connection.cursor() as cur:
            cur.executemany(sql, params)

    def _pg_copy(
        self,
        conn: Any,
        op: str,
        info: _TableInfo,
        key: list[str],
        names: list[str],
        params: list[list[Any]],
    ) -> None:
        """A large run on PostgreSQL: ``COPY`` into a session's temporary staging table (the
        target's column types, no constraints), then one ``INSERT … SELECT … ON CONFLICT``
        (statements compiled by SQLAlchemy, values never in SQL)."""
        cache = ("copy", op, tuple(key), tuple(names))
        compiled = info.sql.get(cache)
        if compiled is None:
            import hashlib

            import sqlalchemy as sa
            from sqlalchemy.dialects import postgresql

            prep = conn.dialect.identifier_preparer
            table = info.table
            digest = hashlib.sha1(repr((table.schema, table.name, names)).encode()).hexdigest()
            stage_name = f"mc_stage_{digest[:20]}"
            stage = sa.Table(stage_name, sa.MetaData(), *[sa.Column(c) for c in names])
            ins: Any = postgresql.insert(table).from_select(
                names, sa.select(*[stage.c[c] for c in names])
            )
            rest = [c for c in names if c not in key]
            if op == "upsert":
                index = [table.c[k] for k in key]
                lww = self.config.last_writer_wins
                if not rest:
                    ins = ins.on_conflict_do_nothing(index_elements=index)
                else:
                    where = ins.excluded[lww] > table.c[lww] if lww in names else None
                    ins = ins.on_conflict_do_update(
                        index_elements=index, set_={c: ins.excluded[c] for c in rest}, where=where
                    )
            quoted = ", ".join(prep.quote(c) for c in names)
            stage_q = prep.quote(stage_name)
            statements = [
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage_q} AS SELECT {quoted} FROM "
                f"{prep.format_table(table)} WITH NO DATA",
                f"TRUNCATE {stage_q}",
                f"COPY {stage_q} ({quoted}) FROM STDIN",
                str(ins.compile(dialect=conn.dialect)),
            ]
            info.sql[cache] = compiled = ("\0".join(statements), [])
        create, truncate, copy, insert = compiled[0].split("\0")
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(create, ())
            cur.execute(truncate, ())
            with cur.copy(copy) as out:
                for row in params:
                    out.write_row(row)
            cur.execute(insert, ())

    def _statement(
        self,
        op: str,
        info: _TableInfo,
        key: list[str],
        cols: tuple[str, ...],
        values: dict[str, Any] | None = None,
    ) -> Any:
        import sqlalchemy as sa

        table = info.table
        if op == "insert":
            return table.insert() if values is None else table.insert().values(values)
        if op == "delete":
            return table.delete().where(
                sa.and_(*[table.c[k] == sa.bindparam(f"k{j}") for j, k in enumerate(key)])
            )
        if op == "update":
            return _update_stmt(table, key, [c for c in cols if c not in key])
        # upsert
        rest = [c for c in cols if c not in key]
        lww = self.config.last_writer_wins
        if lww is not None and lww not in cols:
            lww = None
        if self.dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            module: Any = postgresql if self.dialect == "postgresql" else sqlite
            ins: Any = module.insert(table)
            if values is not None:
                ins = ins.values(values)
            index = [table.c[k] for k in key]
            if not rest:
                return ins.on_conflict_do_nothing(index_elements=index)
            where = ins.excluded[lww] > table.c[lww] if lww is not None else None
            return ins.on_conflict_do_update(
                index_elements=index, set_={c: ins.excluded[c] for c in rest}, where=where
            )
        if self.dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects.mysql import insert as my_insert

            my: Any = my_insert(table)
            if values is not None:
                my = my.values(values)
            if not rest:
                rest = [key[0]]
            if lww is None:
                return my.on_duplicate_key_update({c: my.inserted[c] for c in rest})
            # MySQL assigns left to right: the version column last, so every IF() before it
            # compares with the stored version.
            newer = my.inserted[lww] > table.c[lww]
            order = [c for c in rest if c != lww] + [lww]
            return my.on_duplicate_key_update(
                [(c, sa.func.IF(newer, my.inserted[c], table.c[c])) for c in order]
            )
        raise ConfigError(f"jdbc: upsert is not supported on the {self.dialect} dialect")

    # -- exactly once ----------------------------------------------------------------------

    def _offsets_table(self) -> Any:
        import sqlalchemy as sa

        return sa.Table(
            self.config.offsets_table,
            sa.MetaData(),
            sa.Column("sink", sa.String(255), primary_key=True),
            sa.Column("topic", sa.String(255), primary_key=True),
            sa.Column("next_offset", sa.BigInteger, nullable=False),
            sa.Column("failed", sa.Text, nullable=True),  # JSON list of offsets, or NULL
            schema=self.config.db_schema,
        )

    def _forget_failed(self, records: Sequence[Record]) -> None:
        """Drop the failed offsets below the first record of this batch per topic: the worker
        delivers in order, so it has passed them (dead-lettered, or committed past)."""
        firsts: dict[str, int] = {}
        for record in records:
            if record.topic is not None and record.offset is not None:
                firsts.setdefault(record.topic, record.offset)
        for topic, first in firsts.items():
            old = self.failed.get(topic)
            if old and min(old) < first:
                self.failed[topic] = {o for o in old if o >= first}

    def _store_offsets(
        self,
        conn: Any,
        records: Sequence[Record],
        upto: int,
        failures: Mapping[int, BaseException],
    ) -> None:
        """Store the next offset of each topic of ``records[:upto]`` with the offsets of
        those that failed (and forget the earlier failures written now)."""
        if not self.config.exactly_once:
            return
        nexts: dict[str, int] = {}
        failed = {t: set(o) for t, o in self.failed.items()}
        for i, record in enumerate(records[:upto]):
            topic, offset = record.topic, record.offset
            if topic is None or offset is None:
                continue
            if offset + 1 > nexts.get(topic, -1):
                nexts[topic] = offset + 1
            if i in failures:
                failed.setdefault(topic, set()).add(offset)
            elif offset in failed.get(topic, ()):
                failed[topic].discard(offset)  # written this time
        changed = {
            t: max(o, self.committed.get(t, -1))
            for t, o in nexts.items()
            if o > self.committed.get(t, -1) or failed.get(t, set()) != self.failed.get(t, set())
        }
        if not changed:
            return
        table = self._offsets_table()
        for topic, offset in changed.items():
            values = {
                "next_offset": offset,
                "failed": jsonvalue.dumps(sorted(failed[topic])).decode()
                if failed.get(topic)
                else None,
            }
            done = conn.execute(
                table.update()
                .where(table.c.sink == self.sink_id, table.c.topic == topic)
                .values(**values)
            ).rowcount
            if not done:
                conn.execute(table.insert().values(sink=self.sink_id, topic=topic, **values))
        self.committed.update(changed)
        self.failed = {t: o for t, o in failed.items() if o}

    def _commit_offsets_only(
        self, records: Sequence[Record], upto: int, failures: Mapping[int, BaseException]
    ) -> None:
        if self.config.exactly_once:
            with self.engine.begin() as conn:
                self._store_offsets(conn, records, upto, failures)


def _newer(new: Any, old: Any) -> bool:
    """Whether version ``new`` replaces ``old`` as the database's ``new > old`` decides it:
    a tie or a NULL on either side keeps the row that is there."""
    if new is None or old is None:
        return False
    try:
        return bool(new > old)
    except TypeError:
        return True  # not comparable here: the later record, as before


def _mysql_sessions(engine: Any) -> None:
    """Give ``engine``'s MySQL sessions the time zone UTC and strict mode.

    A TIMESTAMP value is UTC in the records (and is sent without its offset), and MySQL
    reads a TIMESTAMP in the session's time zone, the server's own by default: on a server
    in Europe/Berlin every TIMESTAMP was stored an hour or two off. Without strict mode (a
    server whose ``sql_mode`` lacks it) MySQL cuts text too long for its column, stores an
    emoji in a ``utf8mb3`` column as ``?`` and an out-of-range number as the column's
    limit, with only a warning: strict, each is an error, so the record is a dead letter."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(
                "SET time_zone = '+00:00', "
                "sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'STRICT_ALL_TABLES')"
            )


def _update_stmt(table: Any, key: list[str], rest: list[str]) -> Any:
    """UPDATE … SET rest WHERE key, bound as ``k0…`` (key) and ``v0…`` (the other columns):
    SQLAlchemy reserves the column names for its own VALUES/SET parameters."""
    import sqlalchemy as sa

    stmt = table.update().where(
        sa.and_(*[table.c[k] == sa.bindparam(f"k{j}") for j, k in enumerate(key)])
    )
    if not rest:
        return stmt.values({key[0]: sa.bindparam("k0")})
    return stmt.values({c: sa.bindparam(f"v{j}") for j, c in enumerate(rest)})


def _synthetic(
    op: str, key: list[str], cols: tuple[str, ...], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The rows as the parameters of :func:`_update_stmt` / the delete statement."""
    if op == "delete":
        return [{f"k{j}": r[k] for j, k in enumerate(key)} for r in rows]
    rest = [c for c in cols if c not in key]
    return [
        {
            **{f"k{j}": r[k] for j, k in enumerate(key)},
            **{f"v{j}": r[c] for j, c in enumerate(rest)},
        }
        for r in rows
    ]


def _by_record(
    ops: list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]],
) -> list[tuple[int, list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]]]]:
    out: list[tuple[int, list[tuple[int, str, _TableInfo, list[str], dict[str, Any]]]]] = []
    for op in ops:
        if out and out[-1][0] == op[0]:
            out[-1][1].append(op)
        else:
            out.append((op[0], [op]))
    return out


def _field(record: Record, path: str) -> str:
    head, _, rest = path.partition(".")
    if head == "data":
        value: Any = record.data
        for part in rest.split(".") if rest else []:
            if not isinstance(value, dict) or part not in value:
                raise DataError(f"jdbc: table template: the record has no {path}")
            value = value[part]
    elif head == "topic" and not rest:
        value = record.topic_name  # a table per topic, not per partition
    elif head in ("id", "source", "type", "subject", "time") and not rest:
        value = getattr(record, head)
    elif not rest:
        value = (record.extensions or {}).get(head)
    else:
        raise DataError(f"jdbc: table template: unknown field {{{path}}}")
    if value is None or isinstance(value, dict | list):
        raise DataError(f"jdbc: table template: {path} is {value!r}, not a name")
    return str(value)


def _is_db_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the database (not a bug of the sink's own)."""
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, sa_exc.DBAPIError)


def _db_message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _AbortedPipelineFilter(logging.Filter):
    """Drops psycopg's ``error ignored terminating <Pipeline>: pipeline aborted`` warning.

    ``executemany`` runs in a psycopg pipeline; when the database rejects a row, psycopg
    raises that error and, leaving the pipeline, logs the ``PipelineAborted`` that follows
    from it as a WARNING of its own. The sink handles the error (the batch is rolled back and
    applied record by record, the rejected ones reported), so the warning told an operator
    of a failure that was none, on most batches holding a rejected record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "error ignored terminating %r: %s" or not isinstance(record.args, tuple):
            return True
        from psycopg.errors import PipelineAborted

        return not (len(record.args) == 2 and isinstance(record.args[1], PipelineAborted))


def _quiet_aborted_pipelines() -> None:
    logger = logging.getLogger("psycopg")
    if not any(isinstance(f, _AbortedPipelineFilter) for f in logger.filters):
        logger.addFilter(_AbortedPipelineFilter())
