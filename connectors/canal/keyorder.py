"""Primary keys in the server's order, for the snapshot's chunks and windows.

The snapshot pages a table by primary key (``WHERE (pk) > (last) ORDER BY pk``) and, while a
chunk's window is open, sorts each binlog change into "already read", "in this chunk" or
"later" by comparing its key with the chunk's bounds. Both must follow the order the server
uses for ``ORDER BY``, which is not Python's for several key types:

* strings under a collation: ``utf8mb4_general_ci`` puts ``'a'`` before ``'B'``, Python after;
  accent-insensitive collations make ``'É'`` equal to ``'e'``; PAD SPACE collations ignore
  trailing spaces;
* ``UUID`` (MariaDB 10.7+) sorts time-based UUIDs by their swapped segments, ``INET6`` and
  ``INET4`` by their bytes, not their text;
* ``ENUM`` sorts by the member's index and ``SET`` by its bit mask, while a comparison with the
  member's text (``enum_col > 'm'``) compares text — so a page's ``WHERE`` must give the index.

:class:`KeyOrder` gives the page query its parameters (an ENUM member as its index, a SET as its
mask) and decides ``key <= bound``: in Python where Python's order is the server's (numbers,
temporal values, binary strings, ENUM/SET by index/mask), and otherwise by asking the server,
with each value cast to the column's type and collation (one query for many comparisons,
remembered for the window).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["KeyOrder", "members"]

_IDENT = re.compile(r"^\w+$")
#: Comparisons per query to the server (two placeholders each side a column).
_PER_QUERY = 200
_PYTHON_KINDS = {
    "tinyint",
    "smallint",
    "mediumint",
    "int",
    "integer",
    "bigint",
    "decimal",
    "numeric",
    "float",
    "double",
    "real",
    "date",
    "datetime",
    "timestamp",
    "time",
    "year",
    "bit",
}
_BINARY_KINDS = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_CAST_KINDS = {"uuid": "UUID", "inet6": "INET6", "inet4": "INET4"}


_TEMPORAL_KINDS = {"date", "datetime", "timestamp"}


def temporal_text(v: Any) -> Any:
    """A DATE/DATETIME/TIMESTAMP key value as fixed-width text (``YYYY-MM-DD``, or with
    ``HH:MM:SS.ffffff``), whose text order is the server's order: a ``date``/``datetime``
    (a TIMESTAMP's in UTC) and the text of a zero or invalid date (``0000-00-00 00:00:00.00``,
    ``2024-00-00``) alike. ``None`` stays ``None``."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC)
        return (
            f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
            f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
        )
    if isinstance(v, dt.date):
        return f"{v.year:04d}-{v.month:02d}-{v.day:02d}"
    if isinstance(v, str) and len(v) > 10:
        whole, _, fraction = v.partition(".")
        return f"{whole}.{fraction.ljust(6, '0')[:6]}"
    return v


def members(column_type: str) -> tuple[str, ...]:
    """The members of ``enum('a','b''c')`` / ``set(…)`` as ``information_schema`` writes the
    type (a quote inside a member doubled)."""
    return tuple(m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", column_type))


class _Column:
    """One key column: how its values become page parameters, Python sort values, and SQL."""

    __slots__ = ("param", "python", "sort", "sql")

    def __init__(
        self, data_type: str, column_type: str, charset: str | None, collation: str | None
    ) -> None:
        kind = data_type.lower()
        self.param: Callable[[Any], Any] = lambda v: v
        #: The value as Python compares it in the server's order (see :func:`temporal_text`).
        self.sort: Callable[[Any], Any] = lambda v: v
        self.python = True
        self.sql = "%s"
        if kind == "enum":
            index = {m: i + 1 for i, m in enumerate(members(column_type))}
            self.param = lambda v: v if isinstance(v, int) else index.get(v, 0)
        elif kind == "set":
            bits = {m: 1 << i for i, m in enumerate(members(column_type))}

            def mask(v: Any) -> Any:
                if isinstance(v, int):
                    return v
                if isinstance(v, str):
                    v = [m for m in v.split(",") if m] if v else []
                return sum(bits.get(m, 0) for m in v)

            self.param = mask
        elif kind in _TEMPORAL_KINDS:
            # a zero or partly zero date is the text the server prints, the others are
            # date/datetime objects: compare them all as the server's fixed-width text
            self.sort = temporal_text
        elif kind in _CAST_KINDS:
            self.python = False
            self.sql = f"CAST(%s AS {_CAST_KINDS[kind]})"
        elif kind in _PYTHON_KINDS or kind in _BINARY_KINDS:
            pass
        elif charset and collation and _IDENT.match(charset) and _IDENT.match(collation):
            self.python = False
            self.sql = f"CONVERT(%s USING {charset}) COLLATE {collation}"
        else:  # a type of unknown order: let the server compare it as it is
            self.python = False


class KeyOrder:
    """The server's order of one table's primary key (see the module docstring).

    ``columns``: per key column ``(data_type, column_type, charset, collation)`` as
    ``information_schema.COLUMNS`` has them (charset and collation ``None`` for non-strings).
    ``query(sql, args)`` runs a query on the server and returns its rows."""

    def __init__(
        self,
        columns: Sequence[tuple[str, str, str | None, str | None]],
        query: Callable[[str, list[Any]], list[tuple[Any, ...]]],
    ) -> None:
        self._columns = [_Column(*c) for c in columns]
        self._query = query
        self.python = all(c.python for c in self._columns)
        self._known: dict[tuple[tuple[Any, ...], tuple[Any, ...]], bool] = {}

    def params(self, key: Sequence[Any]) -> list[Any]:
        """``key`` as the page query's parameters (an ENUM member as its index, …)."""
        return [c.param(v) for c, v in zip(self._columns, key, strict=True)]

    def sort_key(self, key: Sequence[Any]) -> tuple[Any, ...]:
        """``key`` as Python sorts keys of this table (the server's order where
        :attr:`python`)."""
        return tuple(c.sort(v) for c, v in zip(self._columns, key, strict=True))

    def forget(self) -> None:
        """Drop remembered comparisons (a new window has new bounds)."""
        self._known.clear()

    def at_most(self, keys: Sequence[tuple[Any, ...]], bound: tuple[Any, ...]) -> list[bool]:
        """``key <= bound`` for each key, in the server's order."""
        if self.python:
            b = self.sort_key(self.params(bound))
            return [self.sort_key(self.params(k)) <= b for k in keys]
        ask = [k for k in dict.fromkeys(keys) if (k, bound) not in self._known]
        row = "(" + ", ".join(c.sql for c in self._columns) + ")"
        for start in range(0, len(ask), _PER_QUERY):
            part = ask[start : start + _PER_QUERY]
            sql = "SELECT " + ", ".join(f"{row} <= {row}" for _ in part)
            args: list[Any] = []
            for k in part:
                args += self.params(k)
                args += self.params(bound)
            (answers,) = self._query(sql, args)
            for k, answer in zip(part, answers, strict=True):
                self._known[(k, bound)] = bool(answer)
        return [self._known[(k, bound)] for k in keys]
