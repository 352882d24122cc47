"""Config model of the ``canal`` source (the docs are generated from these fields) and the
Canal-style filters built from it.

Filters follow Canal's ``canal.instance.filter.regex``: each entry is a regular expression
matched, anchored at both ends and case-insensitively, against ``schema.table`` (a column
filter against ``schema.table.column``). A table is captured when it matches an ``include``
entry and no ``exclude`` entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from meshconnect import ConnectorConfig, Duration
from meshconnect.expr import compile_re2

__all__ = ["CanalSourceConfig", "ColumnFilter", "TableMatcher"]


def _compile(patterns: Sequence[str]) -> Any:
    """The patterns as one RE2 expression (linear time: a table name from the server cannot
    make a pattern such as ``(a+)+$`` backtrack and stall the worker)."""
    if not patterns:
        return None
    return compile_re2("|".join(f"(?:{p})" for p in patterns), ignore_case=True, dot_nl=True)


def _check_patterns(value: list[str]) -> list[str]:
    for p in value:
        try:
            compile_re2(p, ignore_case=True, dot_nl=True)
        except ValueError as exc:
            raise ValueError(
                f"bad regular expression {p!r}: {exc} (RE2 syntax: no lookaround or "
                "backreferences; use 'exclude' to leave tables out)"
            ) from None
    return value


class TableMatcher:
    """``matcher(schema, table)``: whether a table is captured (cached per name)."""

    __slots__ = ("_cache", "_exclude", "_include")

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude)
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._cache.get(key)
        if hit is None:
            name = f"{schema}.{table}"
            hit = (self._include is None or self._include.fullmatch(name) is not None) and (
                self._exclude is None or self._exclude.fullmatch(name) is None
            )
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit


class ColumnFilter:
    """Which columns of a table are kept: ``keep(schema, table, names) -> indexes or None``
    (None: all of them)."""

    __slots__ = ("_exclude", "_include")

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self._include = _compile(include)
        self._exclude = _compile(exclude)

    @property
    def active(self) -> bool:
        return self._include is not None or self._exclude is not None

    def keep(self, schema: str, table: str, names: Sequence[str]) -> list[int] | None:
        if not self.active:
            return None
        out = []
        for i, name in enumerate(names):
            full = f"{schema}.{table}.{name}"
            if self._include is not None and self._include.fullmatch(full) is None:
                continue
            if self._exclude is not None and self._exclude.fullmatch(full) is not None:
                continue
            out.append(i)
        return None if len(out) == len(names) else out


class CanalSourceConfig(ConnectorConfig):
    """Change data capture from a MySQL 8.x or MariaDB 10.6+ binlog."""

    host: str = Field(default="127.0.0.1", description="Server host name or address.")
    port: int = Field(default=3306, ge=1, le=65535, description="Server port.")
    user: str = Field(
        description=(
            "User to connect as. It needs SELECT on the captured tables, REPLICATION SLAVE and "
            "REPLICATION CLIENT (MariaDB 10.5+: REPLICATION SLAVE and BINLOG MONITOR)."
        ),
        min_length=1,
    )
    password: SecretStr = Field(
        default=SecretStr(""), description="Password, e.g. `${env:CDC_PASSWORD}`."
    )
    server_id: int = Field(
        ge=1,
        le=4294967295,
        description=(
            "The replica server id this connector uses; unique among the server's replicas "
            "and different from the server's own `server_id`."
        ),
    )
    include: list[str] = Field(
        default_factory=lambda: [".*\\..*"],
        description=(
            "Tables to capture: regular expressions matched against `schema.table`, anchored "
            "and case-insensitive (Canal syntax on RE2: no lookaround or backreferences), e.g. "
            '`["shop\\\\..*"]`.'
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Tables not to capture, same syntax; wins over `include`.",
    )
    column_include: list[str] = Field(
        default_factory=list,
        description=(
            "Columns to keep, as regexes against `schema.table.column` (empty: all). Primary "
            "key columns should stay: they are the record's `partitionkey`."
        ),
    )
    column_exclude: list[str] = Field(
        default_factory=list,
        description="Columns to drop, regexes against `schema.table.column`.",
    )
    snapshot: Literal["initial", "when_needed", "never", "initial_only"] = Field(
        default="initial",
        description=(
            "`initial`: without a stored position, snapshot the captured tables, then stream; "
            "a restart whose `include`/`exclude` capture more tables snapshots those. "
            "`when_needed`: like `initial`, and also snapshot again when the stored position's "
            "binlog file was purged from the server. `never`: stream from the current end of "
            "the binlog (no snapshot). `initial_only`: snapshot, then stop (a bounded source)."
        ),
    )
    format: Literal["canal", "debezium", "row"] = Field(
        default="canal",
        description=(
            "Record data: `canal` a Canal FlatMessage (one per row change), `debezium` the "
            "before/after/source/op envelope, `row` the typed row itself. See docs/cdc.md."
        ),
    )
    binary: Literal["base64", "latin1"] = Field(
        default="base64",
        description=(
            "How BINARY/VARBINARY/BLOB/GEOMETRY values are written: `base64`, or `latin1` "
            "(each byte as one ISO-8859-1 character, Canal's own FlatMessage behaviour)."
        ),
    )
    ddl: Literal["all", "tables", "none"] = Field(
        default="all",
        description=(
            "Which statements logged as statements become `mysql.ddl` records: `all` (also "
            "those naming no captured table: CREATE DATABASE, GRANT, CREATE PROCEDURE …, as "
            "Canal type QUERY), `tables` (only those naming a captured table: CREATE/ALTER/"
            "DROP/RENAME/TRUNCATE TABLE, indexes, triggers), `none`. Each record's "
            "`statement` extension says what it is (`CREATE TRIGGER`, `GRANT`, …)."
        ),
    )
    heartbeat_interval: Duration = Field(
        default=5.0,
        gt=0,
        description=(
            "Server heartbeat period while the binlog is idle; the committed position also "
            "advances at least this often when only filtered tables change."
        ),
    )
    chunk_size: int = Field(
        default=5000,
        ge=1,
        description="Rows per snapshot chunk (one SELECT by primary key). A chunk also ends "
        "once its rows' data reach 16 MiB (a fixed bound; the row that crosses it included).",
    )
    snapshot_locking: Literal["share", "none"] = Field(
        default="share",
        description=(
            "`share`: each chunk SELECT is a locking read (`LOCK IN SHARE MODE`), which waits "
            "for transactions already in the binlog but not yet committed in InnoDB, so the "
            "hand-off is exact (MySQL 8 needs SELECT plus UPDATE, DELETE or LOCK TABLES for "
            "it); its shared locks can make InnoDB roll back an application's transaction as a "
            "deadlock victim, to be retried (docs/cdc.md). `none`: plain consistent reads "
            "(read-only users; a change committing at that very instant may be missed)."
        ),
    )
    batch_events: int = Field(
        default=5000,
        ge=1,
        description="The most binlog events turned into one batch. A batch also ends once "
        "its events weigh 16 MiB (a fixed bound; the event that crosses it included).",
    )
    batch_rows: int = Field(
        default=10000,
        ge=1,
        description="About how many row changes one batch holds: fewer events are read at a "
        "time when they carry many rows (multi-row statements), so batches stay this size.",
    )
    decoder: Literal["auto", "fast", "library"] = Field(
        default="auto",
        description=(
            "Binlog decoder: `library` (pymysqlreplication), `fast` (meshconnect's own "
            "specialised decoder), `auto` (fast when it is available)."
        ),
    )
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="Timeout to connect to the server."
    )
    skip_replicated: bool = Field(
        default=False,
        description=(
            "Do not capture transactions written with MariaDB's `skip_replication` session "
            "flag (a `jdbc` sink with `skip_replication: true` sets it): the binlog dump "
            "session sets `skip_replication = 1`, so the server leaves those events out, as "
            "for a MariaDB replica with `replicate_events_marked_for_skip = "
            "FILTER_ON_MASTER`. For bidirectional sync without echo (docs/connectors/jdbc.md)."
        ),
    )

    @field_validator("include", "exclude", "column_include", "column_exclude")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    def table_matcher(self) -> TableMatcher:
        return TableMatcher(self.include, self.exclude)

    def column_filter(self) -> ColumnFilter:
        return ColumnFilter(self.column_include, self.column_exclude)
