"""Column types as they were when a binlog event was written.

The stream must describe each row change with the table as it was then (``mysqlType``,
``sqlType``, JSON or not, the key), not as ``information_schema`` shows it now: a connector
that is behind reads events written before later DDL. The table map written with every
transaction carries (with ``binlog_row_metadata=FULL``) the column names, binlog types and
their metadata (lengths in bytes, DECIMAL precision and scale, fractional digits), signedness,
character sets, ENUM/SET members and the primary key, so :func:`binlog_type` rebuilds the
column type text from it (``varchar(20)``, ``decimal(10,2) unsigned``, ``datetime(3)``,
``enum('a','b')``, with MariaDB's default integer display widths).

What the binlog does not carry: a custom integer display width or ZEROFILL, FLOAT(M,D), and
MariaDB's JSON (a LONGTEXT with a ``json_valid`` check). :func:`same_definition` says whether
the current ``information_schema`` column has the very binlog definition of the event's
column; only then is its text (and its JSON flag) used, otherwise the binlog's.
"""

from __future__ import annotations

import re

from .events import Column
from .server import ColumnSchema

__all__ = ["binlog_type", "same_definition"]

_BINARY_CHARSET = 63
# MariaDB prints integer display widths: signed / unsigned.
_WIDTH = {
    "tinyint": (4, 3),
    "smallint": (6, 5),
    "mediumint": (9, 8),
    "int": (11, 10),
    "bigint": (20, 20),
}
_INTS = {1: "tinyint", 2: "smallint", 9: "mediumint", 3: "int", 8: "bigint"}
_BLOBS = {1: "tiny", 2: "", 3: "medium", 4: "long"}


def _quote_members(values: tuple[str, ...]) -> str:
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def binlog_type(col: Column, maxlen: dict[int, int], mariadb: bool) -> str:
    """The column type text (as ``information_schema.COLUMNS.COLUMN_TYPE`` prints it) rebuilt
    from a table map column. ``maxlen``: bytes per character by charset number."""
    t, meta = col.type, col.metadata
    unsigned = " unsigned" if col.unsigned else ""
    if t in _INTS:
        name = _INTS[t]
        width = f"({_WIDTH[name][1 if col.unsigned else 0]})" if mariadb else ""
        return f"{name}{width}{unsigned}"
    if t in (0, 246):
        p, s = meta if isinstance(meta, tuple) else (10, 0)
        return f"decimal({p},{s}){unsigned}"
    if t == 4:
        return "float" + unsigned
    if t == 5:
        return "double" + unsigned
    if t in (7, 17, 12, 18, 11, 19):
        name = {7: "timestamp", 17: "timestamp", 12: "datetime", 18: "datetime"}.get(t, "time")
        fsp = meta if isinstance(meta, int) and 0 < meta <= 6 else 0
        return f"{name}({fsp})" if fsp else name
    if t in (10, 14):
        return "date"
    if t == 13:
        return "year(4)" if mariadb else "year"
    if t == 16:
        return f"bit({meta or 1})"
    if t == 245:
        return "json"
    if t == 247:
        return f"enum({_quote_members(col.enum_values or ())})"
    if t == 248:
        return f"set({_quote_members(col.set_values or ())})"
    if t == 255:
        return "geometry"
    binary = col.binary or col.charset == _BINARY_CHARSET
    if t == 252:
        size = _BLOBS.get(meta if isinstance(meta, int) else 2, "")
        return size + ("blob" if binary else "text")
    if t in (15, 253, 254):
        nbytes = meta if isinstance(meta, int) else 0
        per = 1 if binary else maxlen.get(col.charset or 0, 0)
        n = nbytes // per if per else nbytes
        if t == 254:
            return f"{'binary' if binary else 'char'}({n})"
        return f"{'varbinary' if binary else 'varchar'}({n})"
    return "varchar"


_STRIP = re.compile(r"^(tinyint|smallint|mediumint|int|bigint)\(\d+\)")


def _normal(text: str) -> str:
    """A type text without what the binlog cannot carry (display width, ZEROFILL)."""
    text = text.lower().replace(" zerofill", "").strip()
    text = _STRIP.sub(r"\1", text)
    return re.sub(r"^(float|double)\(\d+,\d+\)", r"\1", text)


def same_definition(derived: str, info: ColumnSchema, mariadb: bool) -> bool:
    """Whether the current column ``info`` is the column the binlog described (see the
    module docstring): the same type text, up to what the binlog does not carry."""
    have = _normal(derived)
    if info.json and mariadb:  # MariaDB JSON is a LONGTEXT with a json_valid check
        return have == "longtext"
    want = _normal(info.column_type)
    if info.data_type.lower() in ("uuid", "inet4", "inet6"):  # MariaDB: fixed binary
        return have.startswith(("binary(", "char("))
    return have == want
