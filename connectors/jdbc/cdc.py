"""What a record asks of the sink: :func:`decode` turns one record into :class:`Change` s.

Recognised, without settings, are the three formats of the ``canal`` source (docs/cdc.md),
told apart by the CloudEvent ``type`` (``mysql.insert|update|delete|read|ddl``) and the
shape of ``data``:

* ``canal`` (Canal's FlatMessage: ``isDdl``, ``type``, ``data``/``old`` lists, ``pkNames``,
  ``mysqlType``): INSERT → upsert, UPDATE → upsert, or, when ``old`` holds a primary-key
  column (a primary-key change), a delete of the old key then an upsert of the new row;
  DELETE → delete; ``isDdl`` → DDL. Values are text and ``mysqlType`` gives the types.
* ``debezium`` (``op`` ``c|u|d|r``, ``before``/``after``, ``source.db``/``source.table``):
  ``c``/``u``/``r`` → upsert of ``after``, ``d`` → delete of ``before``; a DDL envelope has
  ``ddl``. (The source splits primary-key changes into ``d`` + ``c``, as Debezium does.)
* ``row`` (the typed row; the event type says what happened): ``mysql.delete`` → delete,
  ``mysql.ddl`` → DDL, the others → upsert; the table is the ``subject`` ``schema.table``
  (split at the first dot).

Any other record is a plain row: ``data`` (an object) is written by the sink's ``mode``; a
record with null ``data`` is a tombstone deleting the row whose key is ``partitionkey``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meshconnect import DataError, Record

__all__ = ["Change", "decode"]

_CDC_TYPES = frozenset({"mysql.insert", "mysql.update", "mysql.delete", "mysql.read", "mysql.ddl"})


@dataclass(slots=True)
class Change:
    """One operation on one table.

    ``op``: ``upsert`` (CDC insert/update/read), ``write`` (a plain row, by the sink's mode),
    ``delete`` (by the key values in ``row``), ``tombstone`` (delete by ``partitionkey``),
    ``ddl`` (``sql`` holds the statement). ``table`` is the source table (CDC) or None;
    ``pk`` the primary-key column names the record carries (Canal's ``pkNames``) or None;
    ``mysql_types`` Canal's ``mysqlType``; ``json_text``: JSON values come as text."""

    op: str
    table: str | None
    row: dict[str, Any] | None = None
    pk: list[str] | None = None
    mysql_types: dict[str, str] | None = None
    json_text: bool = False
    sql: str | None = None
    schema: str | None = None
    cdc: bool = False


def _split_subject(subject: str | None) -> tuple[str | None, str | None]:
    if not subject:
        return None, None
    schema, dot, table = subject.partition(".")
    return (schema, table) if dot else (None, schema)


def decode(record: Record) -> list[Change]:
    """The changes of one record, in the order to apply them. Raises DataError for a record
    that claims a CDC format but is malformed."""
    data = record.data
    if record.type in _CDC_TYPES:
        if isinstance(data, dict):
            if "isDdl" in data and "mysqlType" in data:
                return _canal(record, data)
            if "op" in data and isinstance(data.get("source"), dict):
                return _debezium(record, data)
            if "ddl" in data and "databaseName" in data:
                source = data.get("source") or {}
                return [
                    Change(
                        "ddl",
                        data.get("table") or source.get("table"),
                        sql=data.get("ddl"),
                        schema=data.get("databaseName"),
                        cdc=True,
                    )
                ]
        return _row(record, data)
    if data is None:
        return [Change("tombstone", None)]
    if not isinstance(data, dict):
        raise DataError(f"jdbc: the record's data is a {type(data).__name__}, not an object")
    return [Change("write", None, data)]


def _canal(record: Record, data: dict[str, Any]) -> list[Change]:
    table = data.get("table")
    schema = data.get("database")
    if data.get("isDdl"):
        return [Change("ddl", table or None, sql=data.get("sql") or "", schema=schema, cdc=True)]
    rows = data.get("data")
    if not isinstance(rows, list) or not rows:
        raise DataError("jdbc: Canal message without data rows")
    kind = data.get("type")
    pk = data.get("pkNames") or None
    types = data.get("mysqlType") or None
    olds = data.get("old") or []
    out: list[Change] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError("jdbc: Canal message with a row that is not an object")
        if kind in ("INSERT", "UPDATE"):
            old = olds[i] if i < len(olds) and isinstance(olds[i], dict) else None
            if kind == "UPDATE" and old and pk and any(k in old for k in pk):
                before = {k: old.get(k, row.get(k)) for k in pk}
                out.append(
                    Change("delete", table, before, pk, types, True, schema=schema, cdc=True)
                )
            out.append(Change("upsert", table, row, pk, types, True, schema=schema, cdc=True))
        elif kind == "DELETE":
            out.append(Change("delete", table, row, pk, types, True, schema=schema, cdc=True))
        else:
            raise DataError(f"jdbc: Canal message of unknown type {kind!r}")
    return out


def _debezium(record: Record, data: dict[str, Any]) -> list[Change]:
    source = data["source"]
    table = source.get("table")
    schema = source.get("db")
    op = data.get("op")
    if op in ("c", "u", "r"):
        after = data.get("after")
        if not isinstance(after, dict):
            raise DataError(f"jdbc: Debezium op {op!r} without an `after` object")
        return [Change("upsert", table, after, schema=schema, cdc=True)]
    if op == "d":
        before = data.get("before")
        if not isinstance(before, dict):
            raise DataError("jdbc: Debezium delete without a `before` object")
        return [Change("delete", table, before, schema=schema, cdc=True)]
    raise DataError(f"jdbc: Debezium envelope with unknown op {op!r}")


def _row(record: Record, data: Any) -> list[Change]:
    schema, table = _split_subject(record.subject)
    if record.type == "mysql.ddl":
        if not isinstance(data, dict):
            raise DataError("jdbc: DDL record without an object")
        return [
            Change(
                "ddl",
                data.get("table") or None,
                sql=data.get("sql") or "",
                schema=data.get("database"),
                cdc=True,
            )
        ]
    if not isinstance(data, dict):
        raise DataError(f"jdbc: {record.type} record whose data is not an object")
    op = "delete" if record.type == "mysql.delete" else "upsert"
    return [Change(op, table, data, schema=schema, cdc=True)]
