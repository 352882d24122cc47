"""Change records of the ``canal`` source, in each of its formats, as upserts and deletes.

The ``canal`` source (docs/cdc.md) gives each row change a CloudEvent ``type``
``mysql.insert|update|delete|read|ddl``, ``subject`` ``schema.table`` and the primary key as
the ``partitionkey`` extension; ``data`` is a Canal FlatMessage (``format: canal``), a Debezium
envelope (``debezium``) or the row itself (``row``). :func:`change_of` reads any of them as a
:class:`Change`: an upsert of the row after the change, or a delete of the row before it, plus,
for a Canal ``UPDATE`` that changed the primary key (one message there; Debezium and row
formats send a delete and an insert, as Debezium does), the old key to delete.

The ``redis`` and ``mongodb`` sinks share this module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from meshconnect import DataError, Record

__all__ = ["CDC_TYPES", "Change", "change_of", "is_change", "key_parts", "tombstone"]

CDC_TYPES = frozenset({"mysql.insert", "mysql.update", "mysql.delete", "mysql.read", "mysql.ddl"})


@dataclass(slots=True)
class Change:
    """One row change: ``op`` ``upsert`` (``row`` is the row after it), ``delete`` (``row``
    is the row before it) or ``skip`` (DDL: nothing to apply). ``key`` is the
    ``partitionkey`` (None for tables without a primary key); ``old_key`` the key before an
    update that changed it; ``pk`` the key's column names when the format says them."""

    op: Literal["upsert", "delete", "skip"]
    row: dict[str, Any] | None
    key: str | None
    old_key: str | None = None
    old_row: dict[str, Any] | None = None
    pk: list[str] | None = None


def is_change(record: Record) -> bool:
    """Whether the record is a change record of the ``canal`` source."""
    return record.type in CDC_TYPES


def tombstone(record: Record) -> bool:
    """A record with no data (and no explicit JSON null): a delete of its key."""
    return record.data is None


def key_parts(key: str) -> list[str]:
    """The columns' texts of a ``partitionkey`` (``a\\|b|c`` → ``['a|b', 'c']``)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in key:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return "|".join(p.replace("\\", "\\\\").replace("|", "\\|") for p in parts)


def _as_key_text(canal_text: str, mysql_type: str) -> str:
    """A Canal value's text as the ``partitionkey`` writes that column (ISO date-times)."""
    if mysql_type.startswith(("datetime", "timestamp")):
        return dt.datetime.fromisoformat(canal_text).isoformat()
    return canal_text


def change_of(record: Record) -> Change:
    """The change a ``canal`` record describes (:func:`is_change` must hold); a
    :class:`~meshconnect.DataError` when its data has none of the three shapes."""
    data = record.data
    key = record.extensions.get("partitionkey")
    key = None if key is None else str(key)
    if record.type == "mysql.ddl":
        return Change("skip", None, None)
    if not isinstance(data, dict):
        raise DataError(f"{record.type} record {record.id}: data is not an object")
    if "isDdl" in data and "pkNames" in data:  # Canal FlatMessage
        if data.get("isDdl"):
            return Change("skip", None, None)
        rows = data.get("data")
        if not isinstance(rows, list) or len(rows) != 1 or not isinstance(rows[0], dict):
            raise DataError(f"canal record {record.id}: 'data' is not a list of one row")
        row = rows[0]
        pk = data.get("pkNames") or None
        kind = data.get("type")
        if kind == "DELETE":
            return Change("delete", row, key, pk=pk)
        if kind not in ("INSERT", "UPDATE"):
            raise DataError(f"canal record {record.id}: unknown type {kind!r}")
        olds = data.get("old")
        old = olds[0] if isinstance(olds, list) and olds and isinstance(olds[0], dict) else {}
        old_row = {**row, **old} if old else None
        old_key = None
        if key is not None and pk and any(name in old for name in pk):
            old_key = _old_key(record, row, old, pk, key, data.get("mysqlType") or {})
        return Change("upsert", row, key, old_key, old_row, pk)
    if "op" in data and "source" in data and ("after" in data or "before" in data):
        op = data.get("op")
        if op == "d":
            before = data.get("before")
            if not isinstance(before, dict):
                raise DataError(f"debezium record {record.id}: a delete without 'before'")
            return Change("delete", before, key)
        after = data.get("after")
        if op not in ("c", "u", "r") or not isinstance(after, dict):
            raise DataError(f"debezium record {record.id}: op {op!r} without 'after'")
        before = data.get("before")
        return Change("upsert", after, key, None, before if isinstance(before, dict) else None)
    if record.type == "mysql.delete":
        return Change("delete", data, key)
    return Change("upsert", data, key)


def _old_key(
    record: Record,
    row: dict[str, Any],
    old: dict[str, Any],
    pk: list[str],
    key: str,
    mysql_type: dict[str, Any],
) -> str | None:
    """The ``partitionkey`` before a Canal UPDATE that changed key columns: the new key's
    texts with the changed columns' old values (converted as the new ones are)."""
    parts = key_parts(key)
    if len(parts) != len(pk):
        raise DataError(
            f"canal record {record.id}: partitionkey {key!r} does not have the "
            f"{len(pk)} columns of pkNames {pk}"
        )
    out = []
    for name, part in zip(pk, parts, strict=True):
        if name not in old:
            out.append(part)
            continue
        value = old[name]
        if value is None:
            raise DataError(f"canal record {record.id}: key column {name!r} was null")
        new_text = row.get(name)
        if new_text == part:
            out.append(str(value))
            continue
        kind = str(mysql_type.get(name, ""))
        try:
            if new_text is not None and _as_key_text(str(new_text), kind) == part:
                out.append(_as_key_text(str(value), kind))
                continue
        except ValueError:
            pass
        raise DataError(
            f"canal record {record.id}: cannot derive the old key of {name!r} ({kind}) "
            "from the Canal text: use format debezium or row for this table"
        )
    result = _join(out)
    return None if result == key else result
