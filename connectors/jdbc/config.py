"""Config models of the ``jdbc`` source and sink (the docs are generated from these fields).

Key names follow docs/ARCHITECTURE §1.5. ``url`` is an SQLAlchemy URL
(``postgresql+psycopg://user@host/db``, ``mysql+pymysql://user@host/db``,
``sqlite:///path.db``); the password goes in ``password`` (a secret, e.g. ``${env:PGPASSWORD}``)
rather than in the URL, so it never appears in any output. A password written in the URL is
accepted but masked wherever the URL is shown.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from meshconnect import ConnectorConfig, Duration

__all__ = ["JdbcSinkConfig", "JdbcSourceConfig"]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://")


#: The drivers meshconnect's extras install, per dialect.
_DRIVERS = {
    "postgresql": ("postgresql+psycopg", "meshconnect[jdbc,postgres]"),
    "mysql": ("mysql+pymysql", "meshconnect[jdbc]"),
    "mariadb": ("mariadb+pymysql", "meshconnect[jdbc]"),
}


def _check_url(value: str) -> str:
    if not _URL.match(value):
        raise ValueError(
            "not an SQLAlchemy URL: expected e.g. postgresql+psycopg://user@host:5432/db, "
            "mysql+pymysql://user@host:3306/db or sqlite:///path/to/file.db"
        )
    _check_driver(value)
    return value


def _check_driver(value: str) -> None:
    """ValueError when the URL's dialect is unknown or its driver is not installed: a
    ``mysql://`` URL (SQLAlchemy's default driver for it is mysqlclient) passed validation and
    then failed the connector at every restart with "No module named 'MySQLdb'"."""
    try:
        import sqlalchemy as sa
        from sqlalchemy import exc as sa_exc
    except ImportError:  # the connector reports its missing extra itself
        return
    try:
        url = sa.make_url(value)
    except sa_exc.ArgumentError:
        raise ValueError("not an SQLAlchemy URL") from None
    backend = url.get_backend_name()
    better, extra = _DRIVERS.get(backend, (None, None))
    try:
        dialect = url.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise ValueError(
            f"unknown database dialect or driver {url.drivername!r}; use "
            "postgresql+psycopg://, mysql+pymysql:// (MySQL and MariaDB) or sqlite:///"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = f"; use {better}://… (pip install '{extra}')" if better else ""
        raise ValueError(
            f"the driver of {url.drivername}:// is not installed ({exc}){hint}"
        ) from None


class _Connection(ConnectorConfig):
    url: str = Field(
        description=(
            "SQLAlchemy URL of the database: `postgresql+psycopg://user@host:5432/db`, "
            "`mysql+pymysql://user@host:3306/db` (MySQL and MariaDB), `sqlite:///file.db`. "
            "Relative SQLite paths resolve against the pipeline file's directory."
        )
    )
    password: SecretStr | None = Field(
        default=None,
        description=(
            "Password, e.g. `${env:PGPASSWORD}`; takes precedence over one in the URL. Never "
            "shown in logs, errors or `validate` output."
        ),
    )
    db_schema: str | None = Field(
        default=None,
        alias="schema",
        description="Database schema of the tables (PostgreSQL: default `public`).",
    )
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="Timeout to connect to the database."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class JdbcSinkConfig(_Connection):
    """Writes records into tables of an SQL database; applies `canal` CDC records."""

    table: str | None = Field(
        default=None,
        description=(
            "Target table: a literal or a template over the record (`{data.table}`, "
            "`{subject}`, `{type}`, `{id}`, `{source}`, `{topic}`, any extension such as "
            "`{partitionkey}`). Default: for records of the `canal` source the source table's "
            "name, otherwise the record's topic."
        ),
    )
    mode: Literal["insert", "upsert", "update"] = Field(
        default="upsert",
        description=(
            "For plain records: `insert` (a duplicate key is an error: dead letter), `upsert` "
            "(insert or replace by key: PostgreSQL/SQLite `ON CONFLICT`, MySQL `ON DUPLICATE "
            "KEY UPDATE`), `update` (update by key; a missing row is left missing). CDC records "
            "are always applied as upsert/delete by key, so a replay is harmless."
        ),
    )
    key: list[str] | None = Field(
        default=None,
        description=(
            "Key columns. Default: the record's primary key (`pkNames` of Canal messages), "
            "else the target table's primary key."
        ),
    )
    auto_create: bool = Field(
        default=False,
        description=(
            "Create a missing table: column types from Canal's `mysqlType` when present, "
            "otherwise inferred from the values (see the type mapping); the key becomes its "
            "primary key."
        ),
    )
    auto_evolve: bool = Field(
        default=False,
        description=(
            "Add columns a record has and the table lacks (nullable, mapped types). Columns "
            "are never dropped or retyped."
        ),
    )
    ddl: Literal["apply", "ignore", "fail"] = Field(
        default="apply",
        description=(
            "DDL records of the `canal` source: `apply` runs `ADD COLUMN`, `RENAME COLUMN` "
            "and `TRUNCATE TABLE` on the target (each other statement is logged and skipped), "
            "`ignore` skips all, "
            "`fail` stops the sink on any DDL record."
        ),
    )
    exactly_once: bool = Field(
        default=False,
        description=(
            "Store this sink's consumer offsets in the target database (table "
            "`offsets_table`) in the same transaction as each batch, and skip what they cover "
            "after a restart: exactly once even in `insert` mode."
        ),
    )
    offsets_table: str = Field(
        default="meshconnect_sink_offsets",
        min_length=1,
        description="Table of the offsets for `exactly_once` (created when missing).",
    )
    skip_replication: bool = Field(
        default=False,
        description=(
            "MariaDB/MySQL targets: run every write with `SET SESSION skip_replication = 1`, "
            "so the binlog events carry MariaDB's skip-replication flag and a `canal` source "
            "with `skip_replicated: true` on that server does not capture them again "
            "(bidirectional sync without echo). Needs the SUPER or BINLOG ADMIN privilege."
        ),
    )
    last_writer_wins: str | None = Field(
        default=None,
        description=(
            "A version or timestamp column: an upsert changes an existing row only when the "
            "record's value of it is greater than the stored one (PostgreSQL/SQLite `ON "
            "CONFLICT … DO UPDATE … WHERE`, MySQL `IF()` per column). Conflict rule for "
            "bidirectional sync; the column must order all writes (no ties). Deletes are not "
            "guarded."
        ),
    )

    @field_validator("key")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one column, or leave `key` out")
        return value


class JdbcSourceConfig(_Connection):
    """Polls tables or a query of an SQL database."""

    mode: Literal["bulk", "incrementing", "timestamp", "timestamp+incrementing"] = Field(
        default="bulk",
        description=(
            "`bulk`: read everything once (a bounded source); `incrementing`: rows whose "
            "`incrementing_column` is above the last seen; `timestamp`: rows whose "
            "`timestamp_column` is above the last seen and at most the database's now minus "
            "`delay`; `timestamp+incrementing`: both, ordered by (timestamp, id)."
        ),
    )
    table: str | None = Field(default=None, description="One table to read.")
    tables: list[str] | None = Field(
        default=None,
        description=(
            "Tables to read: names or glob patterns (`orders_*`), matched against the "
            "database's tables (in `schema`)."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list, description="Glob patterns of tables not to read."
    )
    query: str | None = Field(
        default=None,
        description=(
            "A custom SELECT instead of tables (a trailing `;` is dropped). In the incremental "
            "modes it is wrapped as "
            "`SELECT * FROM (query) AS q WHERE <cursor columns> … ORDER BY …`, so the cursor "
            "columns must be among its output columns."
        ),
    )
    query_name: str = Field(
        default="query",
        description="The partition and `subject` of records of `query` (instead of a table).",
    )
    incrementing_column: str | None = Field(
        default=None, description="A strictly increasing column (an auto-increment id)."
    )
    timestamp_column: str | None = Field(
        default=None, description="A column set to the time of each insert and update."
    )
    delay: Duration = Field(
        default=0.0,
        ge=0,
        description=(
            "Timestamp modes: read only rows whose timestamp is at least this much older than "
            "the database's clock, so rows committed late by transactions open up to this "
            "long are not skipped (Kafka Connect's `timestamp.delay.interval.ms`)."
        ),
    )
    timezone: str | None = Field(
        default=None,
        description=(
            "Timestamp modes, a `timestamp_column` without a time zone (PostgreSQL "
            "`timestamp`, MySQL `DATETIME`): the time zone its values are written in, e.g. "
            "`UTC` for values the application writes in UTC (Kafka Connect's `db.timezone`). "
            "Default: the database session's own (PostgreSQL `TimeZone`, MySQL `time_zone`), "
            "whose clock the `delay` is measured on."
        ),
    )
    poll_interval: Duration = Field(
        default=5.0, gt=0, description="Pause between polls once caught up (incremental modes)."
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="The most rows per batch. A batch also ends once its rows' data reach "
        "16 MiB (a fixed bound; the row that crosses it included), so tables of large "
        "BLOB/TEXT/BYTEA values make shorter batches.",
    )
    key: list[str] | None = Field(
        default=None,
        description=(
            "Columns making the record's `partitionkey` and id (default: the table's primary "
            "key; for `query`: the cursor columns)."
        ),
    )

    @field_validator("query")
    @classmethod
    def _one_statement(cls, value: str | None) -> str | None:
        # The query is wrapped as a subquery: a trailing `;` (as a psql user writes it) would
        # end the statement inside the parentheses.
        if value is None:
            return None
        value = value.strip()
        while value.endswith(";"):
            value = value[:-1].rstrip()
        if not value:
            raise ValueError("empty query")
        return value

    @field_validator("incrementing_column", "timestamp_column")
    @classmethod
    def _used_by_mode(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a cursor column beside the default mode (bulk) read the table once and never again:
        # the user meant an incremental mode and forgot to say so
        # (timestamp mode orders rows tied on the timestamp by the incrementing column)
        mode = info.data.get("mode")
        timestamp = info.field_name == "timestamp_column"
        if value is not None and (mode == "bulk" or (timestamp and mode == "incrementing")):
            modes = (
                "timestamp or timestamp+incrementing"
                if timestamp
                else "incrementing or timestamp+incrementing"
            )
            raise ValueError(
                f"mode {mode} does not use {info.field_name}: set mode: {modes}, or leave it out"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: an IANA name such as UTC or Europe/Berlin"
            ) from None
        mode = info.data.get("mode")
        if mode is not None and "timestamp" not in mode:
            raise ValueError(f"mode {mode} does not use timezone (only the timestamp modes)")
        return value

    @field_validator("delay")
    @classmethod
    def _delay_by_mode(cls, value: float, info: ValidationInfo) -> float:
        mode = info.data.get("mode")
        if value and mode is not None and "timestamp" not in mode:
            raise ValueError(
                f"mode {mode} does not use delay (only the timestamp modes wait); "
                "for ids allocated by transactions that commit out of order, use mode: "
                "timestamp+incrementing with a delay"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JdbcSourceConfig:
        given = [n for n in ("table", "tables", "query") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `table`, `tables` or `query`")
        if self.mode in ("incrementing", "timestamp+incrementing") and not (
            self.incrementing_column
        ):
            raise ValueError(f"mode {self.mode} needs `incrementing_column`")
        if self.mode in ("timestamp", "timestamp+incrementing") and not self.timestamp_column:
            raise ValueError(f"mode {self.mode} needs `timestamp_column`")
        return self
