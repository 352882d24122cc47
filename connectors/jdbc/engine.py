"""SQLAlchemy engines from the config, and the database errors mapped onto the taxonomy."""

from __future__ import annotations

import os
import re
from typing import Any

from meshconnect import ConfigError, DataError, MeshconnectError, RetriableError, jsonvalue

__all__ = [
    "classify_db_error",
    "is_date_out_of_range",
    "make_engine",
    "reflect",
    "text_for_dates_out_of_range",
]

#: PostgreSQL SQLSTATEs worth a retry: the classes of connection exceptions, transaction
#: rollbacks (serialization failures, deadlocks), insufficient resources, operator
#: intervention (admin shutdown, cannot connect now, a statement timeout) and system errors,
#: ``55P03`` lock_not_available (a ``lock_timeout`` ran out, or ``NOWAIT``): the lock holder
#: will let go, as MySQL's lock wait timeout (1205) below; and ``25006``
#: read_only_sql_transaction (a standby, or a primary demoted in a failover, until the client
#: reaches the new primary), as MySQL's ``--read-only`` (1290).
_PG_RETRIABLE = ("08", "40", "53", "57", "58", "55P03", "25006")
#: The ``lock_timeout`` of PostgreSQL sessions that have none (``0``, PostgreSQL's default:
#: wait for ever): InnoDB's default ``innodb_lock_wait_timeout``, so a statement blocked by
#: another transaction's lock fails after it (a retriable error) instead of holding the
#: pipeline, and its stop, for as long as that transaction stays open. A ``lock_timeout`` the
#: role, the database or the URL (``?options=-c lock_timeout=5s``) sets is kept.
PG_LOCK_TIMEOUT = "50s"
#: MySQL/MariaDB error numbers worth a retry: lock wait timeout, deadlock, connection errors,
#: server gone away, lost connection, read-only during failover, too many connections, and a
#: statement an operator or a time limit stopped (``KILL QUERY`` 1317, a killed connection
#: 1927, MariaDB's ``max_statement_time`` 1969, MySQL's ``max_execution_time`` 3024), as
#: PostgreSQL's class 57 (query_canceled) above.
_MY_RETRIABLE = {
    1040,
    1053,
    1205,
    1213,
    1290,
    1317,
    1927,
    1969,
    2002,
    2003,
    2005,
    2006,
    2013,
    2055,
    3024,
}


def make_engine(config: Any, base_dir: str) -> Any:
    """An engine for ``config.url`` with ``config.password``; relative SQLite paths resolve
    against ``base_dir``. SQLite connections get real transactions with SAVEPOINTs (the
    pysqlite recipe of SQLAlchemy's docs)."""
    import sqlalchemy as sa

    url = sa.make_url(config.url)
    if config.password is not None:
        url = url.set(password=config.password.get_secret_value())
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    timeout = max(1, int(config.connect_timeout))
    if backend == "sqlite":
        db = url.database
        if db and db != ":memory:" and not db.startswith("file:"):
            if not os.path.isabs(db):
                url = url.set(database=os.path.join(base_dir, db))
            _make_directory(str(url.database))
        connect_args["timeout"] = float(config.connect_timeout)
    elif backend in ("postgresql", "mysql", "mariadb"):
        connect_args["connect_timeout"] = timeout
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args=connect_args,
        json_serializer=lambda v: jsonvalue.dumps(v).decode(),
        json_deserializer=jsonvalue.loads,
    )
    if backend == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _lock_timeout(dbapi_connection: Any, record: Any) -> None:
            _default_lock_timeout(dbapi_connection)

    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN")

    return engine


def _default_lock_timeout(dbapi_connection: Any) -> None:
    """Set :data:`PG_LOCK_TIMEOUT` on a new PostgreSQL session whose ``lock_timeout`` is 0.
    Committed at once: the pool rolls a returned connection back, which would undo a ``SET``
    left inside the driver's implicit transaction."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SELECT current_setting('lock_timeout')")
        row = cursor.fetchone()
        if row is not None and row[0] in ("0", "0ms"):
            cursor.execute(f"SET lock_timeout = '{PG_LOCK_TIMEOUT}'")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _make_directory(path: str) -> None:
    """Make the directory of a SQLite database file, as SQLite makes the file (and the file
    sink its directories); ConfigError when it cannot be made (a file in the way, no
    permission): SQLite's "unable to open database file" told neither which nor why."""
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent or ".", exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"url: cannot make the directory {parent!r} of the SQLite database: "
            f"{exc.strerror or exc}"
        ) from exc


def is_date_out_of_range(exc: BaseException) -> bool:
    """Whether ``exc`` is psycopg failing to load a PostgreSQL date or timestamp that Python's
    ``datetime`` cannot hold (``infinity``, ``-infinity``, a year BC or past 9999): raised by the
    client while it converts a fetched row, so it has no SQLSTATE."""
    orig = getattr(exc, "orig", exc)
    if type(orig).__module__.split(".")[0] != "psycopg" or type(orig).__name__ != "DataError":
        return False
    if getattr(orig, "sqlstate", None):
        return False
    text = str(orig)
    return text.startswith(("date too", "timestamp too", "BC ")) or "infinity" in text


def text_for_dates_out_of_range(engine: Any) -> None:
    """Make ``engine``'s new psycopg connections load a date or timestamp out of Python's
    range as PostgreSQL's own text (``infinity``, ``0044-03-15 BC``) instead of failing the
    whole fetch; the others still load as ``datetime``. The loaders are Python code (several
    times slower than psycopg's C ones), so a source turns this on only once such a value
    appears. The pooled connections are dropped, so every connection from now on has them."""
    import psycopg
    import sqlalchemy as sa
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

    def lenient(base: Any) -> Any:
        class Lenient(base):
            def load(self, data: Any) -> Any:
                try:
                    return super().load(data)
                except psycopg.DataError:
                    return bytes(data).decode()

        return Lenient

    loaders = {
        "date": lenient(DateLoader),
        "timestamp": lenient(TimestampLoader),
        "timestamptz": lenient(TimestamptzLoader),
    }

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        for name, loader in loaders.items():
            dbapi_connection.adapters.register_loader(name, loader)

    engine.dispose()


def classify_db_error(exc: BaseException) -> type[MeshconnectError] | None:
    """RetriableError for connection losses, deadlocks, lock timeouts and server shutdowns;
    DataError for what the database rejects about a statement's data (constraint violations,
    bad values, unknown columns); None for anything else."""
    if isinstance(exc, OverflowError | ValueError | TypeError):
        return DataError  # a value the driver cannot bind
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - the sink cannot run without it anyway
        return None
    if not isinstance(exc, sa_exc.SQLAlchemyError) and type(exc).__module__.startswith("psycopg"):
        # the driver's own exception (the sink's PostgreSQL fast path)
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and state:
            return RetriableError if state.startswith(_PG_RETRIABLE) else DataError
        name = type(exc).__name__
        if name in ("OperationalError", "InterfaceError"):
            return RetriableError
        if name in ("DataError", "IntegrityError", "ProgrammingError"):
            # raised by the driver before the server saw it: a value it cannot send (a NUL
            # byte in text, "PostgreSQL text fields cannot contain NUL (0x00) bytes")
            return DataError
        return None
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return RetriableError
        orig = exc.orig
        args = getattr(orig, "args", ())
        if args and isinstance(args[0], int):
            # A MySQL driver's error number. PyMySQL 1.1.1+ also gives the SQLSTATE, which is
            # MySQL's and not PostgreSQL's (a lock wait timeout is HY000): read by the
            # PostgreSQL table below, 1205 and 1290 were data errors.
            return RetriableError if args[0] in _MY_RETRIABLE else DataError
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(state, str) and state:
            return RetriableError if state.startswith(_PG_RETRIABLE) else DataError
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int):  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
            return RetriableError if code & 0xFF in (5, 6) else DataError
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return RetriableError
        if isinstance(exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError):
            return DataError
        return None
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return RetriableError
    return None


def reflect(name: str, engine: Any, schema: str | None) -> Any:
    """The table ``name`` as SQLAlchemy reflects it (``NoSuchTableError`` when missing), with
    MySQL column names as they are: SQLAlchemy's MySQL reflection gives a name holding a
    backtick with it doubled (```c``d```), which it then quotes again (```c````d```: "Unknown
    column")."""
    import sqlalchemy as sa

    listeners = []
    if engine.dialect.name in ("mysql", "mariadb"):

        def unescape(inspector: Any, table: Any, column: dict[str, Any]) -> None:
            column["name"] = column["name"].replace("``", "`")

        listeners.append(("column_reflect", unescape))
    table = sa.Table(name, sa.MetaData(), autoload_with=engine, schema=schema, listeners=listeners)
    if engine.dialect.name in ("mysql", "mariadb"):
        for column in _mariadb_json_columns(engine, name, schema):
            if column in table.c:
                table.c[column].type.json_text_column = True  # type: ignore[attr-defined]
    return table


_JSON_VALID = re.compile(r"^json_valid\(`((?:[^`]|``)+)`\)$", re.IGNORECASE)


def _mariadb_json_columns(engine: Any, name: str, schema: str | None) -> list[str]:
    """The columns of MariaDB table ``name`` declared ``JSON``: MariaDB makes them
    ``LONGTEXT`` with a ``CHECK (json_valid(col))``, and SQLAlchemy reflects a LONGTEXT, so
    a list or a number would be written as text that is not JSON. MySQL's JSON type is
    reflected as such (and its CHECK_CONSTRAINTS has no TABLE_NAME: nothing found here)."""
    import sqlalchemy as sa

    sql = sa.text(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
        "WHERE CONSTRAINT_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :name"
    )
    try:
        with engine.connect() as conn:
            clauses = conn.execute(sql, {"schema": schema, "name": name}).scalars().all()
    except sa.exc.DBAPIError:
        return []
    found = (_JSON_VALID.match(str(c).strip()) for c in clauses)
    return [m.group(1).replace("``", "`") for m in found if m]
