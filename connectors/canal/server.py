"""The control connection to the server: start checks, binlog coordinates, the schema cache.

Start checks (:meth:`Server.check`) fail with a :class:`~meshconnect.errors.ConfigError` that
says what to change: the binlog on, ``binlog_format=ROW``, ``binlog_row_image=FULL``,
``binlog_row_metadata=FULL`` (no fallback: without it the binlog carries no column names),
MySQL's ``binlog_transaction_compression`` off and ``binlog_row_value_options`` not
``PARTIAL_JSON``, and the replication privileges.

The schema cache (:meth:`Server.table_schema`) reads ``information_schema`` once per table
(``COLUMN_TYPE`` for Canal's ``mysqlType``, the Java SQL type for ``sqlType``, the primary key
in key order, MariaDB JSON columns through their ``json_valid`` check); the source clears it
after DDL.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from meshconnect import ConfigError, RetriableError
from meshconnect.batchbytes import values_bytes

from .config import CanalSourceConfig

__all__ = ["ColumnSchema", "Server", "TableSchema", "sql_type"]

# java.sql.Types codes as Canal's LogEventConvert reports them.
_SQL_TYPES = {
    "tinyint": -6,
    "smallint": 5,
    "mediumint": 4,
    "int": 4,
    "integer": 4,
    "bigint": -5,
    "decimal": 3,
    "numeric": 3,
    "float": 7,
    "double": 8,
    "real": 8,
    "bit": -7,
    "char": 1,
    "varchar": 12,
    "tinytext": 2005,
    "text": 2005,
    "mediumtext": 2005,
    "longtext": 2005,
    "json": 12,
    "binary": 2004,
    "varbinary": 2004,
    "tinyblob": 2004,
    "blob": 2004,
    "mediumblob": 2004,
    "longblob": 2004,
    "date": 91,
    "datetime": 93,
    "timestamp": 93,
    "time": 92,
    "year": 12,
    "enum": 4,
    "set": -7,
}
# Canal widens unsigned integers to the next Java type.
_UNSIGNED = {"tinyint": 5, "smallint": 4, "mediumint": 4, "int": -5, "integer": -5, "bigint": 3}


def sql_type(data_type: str, column_type: str) -> int:
    """The ``java.sql.Types`` code Canal puts in ``sqlType`` for a column."""
    kind = data_type.lower()
    if "unsigned" in column_type.lower() and kind in _UNSIGNED:
        return _UNSIGNED[kind]
    return _SQL_TYPES.get(kind, 2004 if kind in ("geometry", "point") else 12)


@dataclass(frozen=True, slots=True)
class ColumnSchema:
    name: str
    data_type: str
    column_type: str
    sql_type: int
    #: Fractional second digits of DATETIME/TIMESTAMP/TIME.
    fsp: int
    json: bool


@dataclass(frozen=True, slots=True)
class TableSchema:
    schema: str
    table: str
    columns: tuple[ColumnSchema, ...]
    primary_key: tuple[str, ...]

    def column(self, name: str) -> ColumnSchema | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _error(exc: BaseException, where: str) -> Exception:
    """Map a pymysql error onto the taxonomy."""
    import pymysql

    code = exc.args[0] if exc.args else None
    if code in (1044, 1045, 1142, 1227, 1049):
        return ConfigError(f"canal: {where}: {exc.args[-1]}")
    if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError | OSError):
        return RetriableError(f"canal: {where}: {exc}")
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


class Server:
    """A control connection (autocommit, UTC session) with the queries the source needs."""

    def __init__(self, config: CanalSourceConfig) -> None:
        self.config = config
        self.where = f"{config.host}:{config.port}"
        self._conn: Any = None
        self._schemas: dict[tuple[str, str], TableSchema] = {}
        self._maxlen: dict[int, int] | None = None
        self.mariadb = False
        self.version = ""

    # -- connection ----------------------------------------------------------------------------

    def connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        import pymysql

        c = self.config
        try:
            conn = pymysql.connect(
                host=c.host,
                port=c.port,
                user=c.user,
                password=c.password.get_secret_value(),
                autocommit=True,
                connect_timeout=c.connect_timeout,
                charset="utf8mb4",
                init_command="SET time_zone = '+00:00'",
            )
        except pymysql.err.MySQLError as exc:
            raise _error(exc, f"cannot connect to {self.where}") from exc
        self._conn = conn
        self.version = conn.get_server_info()
        self.mariadb = "mariadb" in self.version.lower()
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def query(self, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
        conn = self.connect()
        with self._failing(sql), conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def query_bounded(
        self, sql: str, args: Any, max_bytes: int
    ) -> tuple[list[tuple[Any, ...]], bool, int]:
        """The rows of ``sql`` read one at a time (an unbuffered cursor) until they weigh
        ``max_bytes`` (:func:`meshconnect.batchbytes.values_bytes`; the row that crosses it
        kept); whether the bound cut them short; the largest row's weight. The rows after it
        are read off the connection and dropped, never held (ask for no more than fit with
        ``LIMIT``)."""
        import pymysql.cursors

        conn = self.connect()
        rows: list[tuple[Any, ...]] = []
        weight = largest = 0
        with self._failing(sql), conn.cursor(pymysql.cursors.SSCursor) as cur:
            cur.execute(sql, args)
            while (row := cur.fetchone()) is not None:
                rows.append(row)
                size = values_bytes(row)
                largest = max(largest, size)
                weight += size
                if weight >= max_bytes:
                    return rows, True, largest
        return rows, False, largest

    @contextlib.contextmanager
    def _failing(self, sql: str) -> Iterator[None]:
        """A server error of the block as :func:`_error` has it, naming the statement; a lost
        connection is closed, so the next query opens a new one."""
        import pymysql

        try:
            yield
        except pymysql.err.MySQLError as exc:
            if isinstance(exc, pymysql.err.OperationalError | pymysql.err.InterfaceError):
                self.close()
            raise _error(exc, sql.split()[0] + " failed on " + self.where) from exc

    def variables(self, *names: str) -> dict[str, str]:
        rows = self.query(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ",".join(["%s"] * len(names)) + ")",
            names,
        )
        return {str(k).lower(): str(v) for k, v in rows}

    # -- checks --------------------------------------------------------------------------------

    def check(self, log: Any = None) -> None:
        """The start checks (see the module docstring); ``log`` gets warnings."""
        v = self.variables(
            "log_bin",
            "binlog_format",
            "binlog_row_image",
            "binlog_row_metadata",
            "binlog_transaction_compression",
            "binlog_row_value_options",
        )
        where = self.where
        if v.get("log_bin", "OFF").upper() not in ("ON", "1"):
            raise ConfigError(
                f"canal: the binary log is off on {where} (log_bin=OFF): add `log_bin = "
                "mysql-bin`, `binlog_format = ROW`, `binlog_row_image = FULL` and "
                "`binlog_row_metadata = FULL` to the [mysqld] section of my.cnf and restart "
                "the server (see docs/cdc.md)"
            )
        wanted = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
        for name, value in wanted.items():
            have = v.get(name)
            if have is None and name == "binlog_row_metadata":
                raise ConfigError(
                    f"canal: {where} ({self.version}) has no binlog_row_metadata: CDC needs "
                    "MySQL 8.0.14+ or MariaDB 10.5+ with binlog_row_metadata=FULL"
                )
            if (have or "").upper() != value:
                raise ConfigError(
                    f"canal: {name}={have} on {where}; CDC needs {name}={value}: run "
                    f"`SET GLOBAL {name} = '{value}'` and add `{name} = {value}` to my.cnf "
                    "(existing sessions keep the old value until they reconnect)"
                )
        if v.get("binlog_transaction_compression", "OFF").upper() in ("ON", "1"):
            raise ConfigError(
                f"canal: binlog_transaction_compression=ON on {where}: compressed transaction "
                "payloads are not decoded; run `SET GLOBAL binlog_transaction_compression = "
                "OFF` and set it in my.cnf"
            )
        if "PARTIAL_JSON" in v.get("binlog_row_value_options", "").upper():
            raise ConfigError(
                f"canal: binlog_row_value_options=PARTIAL_JSON on {where}: JSON updates would "
                "arrive as diffs; run `SET GLOBAL binlog_row_value_options = ''`"
            )
        self.check_privileges(log)

    def check_privileges(self, log: Any = None) -> None:
        lines = [str(r[0]) for r in self.query("SHOW GRANTS")]
        grants = " ".join(lines).upper()
        if "ALL PRIVILEGES ON *.*" in grants:
            return
        missing = []
        if not re.search(r"\bSUPER\b", grants):
            if not re.search(r"REPLICATION (SLAVE|REPLICA)(?! ADMIN)", grants):
                missing.append("REPLICATION SLAVE")
            if not re.search(r"REPLICATION CLIENT|BINLOG MONITOR", grants):
                missing.append("BINLOG MONITOR" if self.mariadb else "REPLICATION CLIENT")
        # SELECT: for the snapshot and for the column types (information_schema shows only
        # the tables a user holds a privilege on). On *.* or on some schema or table: the
        # latter is the documented narrow grant, taken on trust.
        has_select = any(
            re.match(r"GRANT\s+(?:.*[\s,])?(?:SELECT|ALL PRIVILEGES)\b.*\sON\s", g, re.I)
            for g in lines
        )
        if not has_select:
            if self.config.snapshot != "never":
                missing.insert(0, "SELECT")
            elif log is not None:
                log.warning(
                    "canal: user %r has no SELECT privilege on %s: column types come from the "
                    "binlog only and MariaDB JSON columns arrive as text (GRANT SELECT ON *.* "
                    "TO '%s'@'%%')",
                    self.config.user,
                    self.where,
                    self.config.user,
                )
        # Privileges held through roles do not show here: then only warn.
        roles = [g for g in lines if re.match(r"GRANT\s+(?!.*\sON\s).*\sTO\s", g, re.I)]
        if missing and roles and log is not None:
            log.warning(
                "canal: user %r seems to lack %s (unless a role grants it)",
                self.config.user,
                " and ".join(missing),
            )
            return
        if missing:
            grant = ", ".join(dict.fromkeys(["SELECT", *missing]))
            why = (
                f" (snapshot: {self.config.snapshot} reads the tables)"
                if "SELECT" in missing
                else ""
            )
            raise ConfigError(
                f"canal: user {self.config.user!r} lacks {' and '.join(missing)} on "
                f"{self.where}{why}: GRANT {grant} ON *.* TO '{self.config.user}'@'%'"
            )

    # -- binlog coordinates --------------------------------------------------------------------

    def binary_log_status(self) -> tuple[str, int, str]:
        """``(file, position, executed GTID set)`` at the current end of the binlog."""
        import pymysql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                try:
                    cur.execute("SHOW BINARY LOG STATUS")  # MySQL 8.2+ (8.4 has nothing else)
                except pymysql.err.ProgrammingError as exc:
                    if exc.args[0] != 1064:
                        raise
                    cur.execute("SHOW MASTER STATUS")
                row = cur.fetchone()
        except pymysql.err.MySQLError as exc:
            raise _error(exc, f"reading the binlog position of {self.where}") from exc
        if row is None:
            raise ConfigError(f"canal: the binary log is off on {self.where}")
        file, pos = str(row[0]), int(row[1])
        if self.mariadb:
            gtids = self.gtid_at(file, pos)
        else:
            gtids = str(row[4]).replace("\n", "") if len(row) > 4 and row[4] else ""
        return file, pos, gtids

    def gtid_at(self, file: str, pos: int) -> str:
        """MariaDB: the GTID state at a binlog coordinate (``BINLOG_GTID_POS``)."""
        if not self.mariadb:
            return ""
        rows = self.query("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
        return str(rows[0][0] or "") if rows else ""

    def binary_logs(self) -> list[str]:
        return [str(r[0]) for r in self.query("SHOW BINARY LOGS")]

    def server_id(self) -> int:
        return int(self.query("SELECT @@server_id")[0][0])

    # -- schema --------------------------------------------------------------------------------

    def forget_schemas(self) -> None:
        self._schemas.clear()

    def transactional(self, schema: str, table: str) -> bool:
        """Whether the table's engine rolls back (InnoDB: yes; MyISAM, Aria, MEMORY: no), as
        ``information_schema.ENGINES.TRANSACTIONS`` says; a table that is gone counts as
        transactional (its rolled-back changes are dropped)."""
        rows = self.query(
            "SELECT e.TRANSACTIONS FROM information_schema.TABLES t "
            "JOIN information_schema.ENGINES e ON e.ENGINE = t.ENGINE "
            "WHERE t.TABLE_SCHEMA=%s AND t.TABLE_NAME=%s",
            (schema, table),
        )
        return not rows or str(rows[0][0]).upper() != "NO"

    def table_schema(self, schema: str, table: str) -> TableSchema | None:
        key = (schema, table)
        hit = self._schemas.get(key)
        if hit is not None:
            return hit
        rows = self.query(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, DATETIME_PRECISION "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA=%s AND TABLE_NAME=%s "
            "ORDER BY ORDINAL_POSITION",
            key,
        )
        if not rows:
            return None
        pk = self.primary_key(schema, table)
        json_columns: set[str] = set()
        if self.mariadb:
            for (clause,) in self.query(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
                "WHERE CONSTRAINT_SCHEMA=%s AND TABLE_NAME=%s",
                key,
            ):
                m = re.fullmatch(r"\s*json_valid\(`?([^`]+)`?\)\s*", str(clause), re.I)
                if m:
                    json_columns.add(m.group(1))
        columns = []
        for name, data_type, column_type, precision in rows:
            name, data_type, column_type = str(name), str(data_type), str(column_type)
            is_json = data_type.lower() == "json" or name in json_columns
            if is_json:
                data_type = column_type = "json"
            fsp = int(precision or 0)
            if data_type.lower() == "time":
                m = re.search(r"\((\d)\)", column_type)
                fsp = int(m.group(1)) if m else 0
            columns.append(
                ColumnSchema(
                    name, data_type, column_type, sql_type(data_type, column_type), fsp, is_json
                )
            )
        result = TableSchema(schema, table, tuple(columns), pk)
        self._schemas[key] = result
        return result

    def json_columns(self) -> dict[tuple[str, str], set[str]]:
        """MariaDB: every table's JSON columns now (LONGTEXT with a ``json_valid`` check)."""
        out: dict[tuple[str, str], set[str]] = {}
        if not self.mariadb:
            return out
        for schema, table, clause in self.query(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CHECK_CLAUSE FROM "
            "information_schema.CHECK_CONSTRAINTS WHERE CHECK_CLAUSE LIKE 'json_valid(%%'"
        ):
            m = re.fullmatch(r"\s*json_valid\(`?([^`]+)`?\)\s*", str(clause), re.I)
            if m:
                out.setdefault((str(schema), str(table)), set()).add(m.group(1))
        return out

    def charset_maxlen(self) -> dict[int, int]:
        """Bytes per character by collation number (``information_schema.COLLATIONS``)."""
        if self._maxlen is None:
            rows = self.query(
                "SELECT c.ID, s.MAXLEN FROM information_schema.COLLATIONS c JOIN "
                "information_schema.CHARACTER_SETS s "
                "ON c.CHARACTER_SET_NAME = s.CHARACTER_SET_NAME"
            )
            self._maxlen = {int(i): int(n) for i, n in rows if i is not None}
        return self._maxlen

    def primary_key(self, schema: str, table: str) -> tuple[str, ...]:
        """The key the server itself treats as primary, in key order: the PRIMARY KEY, or else
        the first UNIQUE index whose columns are all NOT NULL and not prefixes (the index
        InnoDB clusters by, and the key the binlog's table map lists as the primary key).
        ``SHOW INDEX`` lists indexes in the server's own order (PRIMARY, then unique NOT NULL
        ones in definition order), the order the server picks from."""
        rows = self.query(f"SHOW INDEX FROM {_quote(schema)}.{_quote(table)}")
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:  # Table, Non_unique, Key_name, Seq_in_index, Column_name, …
            keys.setdefault(str(r[2]), []).append(r)
        for parts in keys.values():
            usable = all(int(p[1]) == 0 and p[7] is None and str(p[9] or "") == "" for p in parts)
            if usable and str(parts[0][10]).upper() != "HASH":  # long UNIQUE hashes: no key
                return tuple(str(p[4]) for p in sorted(parts, key=lambda p: int(p[3])))
        return ()

    def base_tables(self) -> list[tuple[str, str]]:
        """Every base table outside the system schemas, in name order."""
        rows = self.query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_TYPE='BASE TABLE' AND TABLE_SCHEMA NOT IN "
            "('mysql','information_schema','performance_schema','sys') "
            "ORDER BY TABLE_SCHEMA, TABLE_NAME"
        )
        return [(str(s), str(t)) for s, t in rows]

    def estimate_rows(self, schema: str, table: str) -> int:
        rows = self.query(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA=%s "
            "AND TABLE_NAME=%s",
            (schema, table),
        )
        return int(rows[0][0] or 0) if rows else 0
