"""Type mapping: MySQL column types (Canal's ``mysqlType``) and JSON values to SQLAlchemy
types per target dialect, and the coercion of record values into bind values for a target
column.

The tables in docs/connectors/jdbc.md are generated from :data:`MYSQL_TYPES` and
:func:`mapped` (``docs/generate.py``), so the docs and the code agree.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from meshconnect import DataError, jsonvalue

__all__ = [
    "MYSQL_TYPES",
    "ZeroDate",
    "coercer",
    "for_plain_records",
    "infer_type",
    "mapped",
    "parse_time",
    "sa_type_for_mysql",
]

_TYPE = re.compile(r"^\s*([a-z]+)\s*(?:\(([^)]*)\))?\s*(unsigned)?", re.IGNORECASE)

#: MySQL column types shown in the docs' mapping table (the `mysqlType` text).
MYSQL_TYPES = (
    "tinyint(4)",
    "tinyint(3) unsigned",
    "smallint(6)",
    "mediumint(9)",
    "int(11)",
    "int(10) unsigned",
    "bigint(20)",
    "bigint(20) unsigned",
    "decimal(65,30)",
    "float",
    "double",
    "bit(8)",
    "year(4)",
    "date",
    "datetime(6)",
    "timestamp(3)",
    "time(6)",
    "char(10)",
    "varchar(255)",
    "text",
    "longtext",
    "enum('a','b')",
    "set('a','b')",
    "json",
    "binary(16)",
    "varbinary(64)",
    "blob",
    "uuid",
    "inet6",
    "geometry",
)


class ZeroDate(Exception):
    """A zero or partly zero MySQL date (``0000-00-00``): written as NULL, counted."""


def _dialect_module(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql
    if dialect in ("mysql", "mariadb"):
        from sqlalchemy.dialects import mysql

        return mysql
    return None


def sa_type_for_mysql(mysql_type: str, dialect: str, key: bool = False) -> Any:
    """The SQLAlchemy type for a MySQL column type text (``decimal(10,2) unsigned``) on the
    target ``dialect`` (``postgresql``, ``mysql``/``mariadb``, ``sqlite``, others generic).
    ``key``: the column is part of a primary key (MySQL needs bounded text there)."""
    import sqlalchemy as sa

    m = _TYPE.match(mysql_type or "")
    name = (m.group(1) if m else "text").lower()
    args = [a.strip() for a in (m.group(2) or "").split(",")] if m and m.group(2) else []
    unsigned = bool(m and m.group(3))
    pg = dialect == "postgresql"
    my = dialect in ("mysql", "mariadb")
    lite = dialect == "sqlite"
    if my:
        from sqlalchemy.dialects import mysql

        # A MySQL target keeps the source's own type, but for MariaDB's own types (as text,
        # so MySQL takes them too) and GEOMETRY (its WKB bytes).
        if name in ("json",):
            return mysql.JSON()
        if name == "bit":  # the records carry the number: a BIT column would take its text
            return mysql.BIGINT(unsigned=True)
        if name == "uuid":
            return mysql.CHAR(36)
        if name in ("inet4", "inet6"):
            return mysql.VARCHAR(45)
        if name == "geometry":
            return mysql.LONGBLOB()
        if name in ("enum", "set") or name.endswith("text") or name.endswith("blob"):
            return mysql.LONGTEXT() if name.endswith("text") else _my_simple(mysql_type)
        return _my_simple(mysql_type)
    if name in ("tinyint", "smallint", "year"):
        return sa.SmallInteger() if not lite else sa.Integer()
    if name in ("mediumint", "int", "integer"):
        return sa.BigInteger() if unsigned and name == "int" and not lite else (sa.Integer())
    if name == "bigint":
        if unsigned:  # beyond SQLite's 64-bit INTEGER: exact text there
            return sa.Numeric(20, 0) if not lite else sa.Text()
        return sa.BigInteger() if not lite else sa.Integer()
    if name == "bit":
        wide = bool(args and args[0].isdigit() and int(args[0]) > 63)  # beyond BIGINT's range
        if wide:
            return sa.Numeric(20, 0) if not lite else sa.Text()
        return sa.BigInteger() if not lite else sa.Integer()
    if name in ("decimal", "numeric", "dec", "fixed"):
        if lite:  # SQLite's NUMERIC is a binary float: exact text instead
            return sa.Text()
        p = int(args[0]) if args and args[0].isdigit() else 10
        s = int(args[1]) if len(args) > 1 and args[1].isdigit() else 0
        return sa.Numeric(p, s)
    if name == "float":
        return sa.REAL()
    if name in ("double", "real"):
        return sa.Double()
    if name == "date":
        return sa.Date()
    if name in ("datetime", "timestamp"):
        fsp = int(args[0]) if args and args[0].isdigit() else 0
        if pg:
            from sqlalchemy.dialects import postgresql

            return postgresql.TIMESTAMP(timezone=name == "timestamp", precision=fsp)
        return sa.DateTime(timezone=name == "timestamp")
    if name == "time":
        if pg:
            from sqlalchemy.dialects import postgresql

            return postgresql.INTERVAL()
        return sa.String(20)
    if name in ("char", "varchar"):
        n = int(args[0]) if args and args[0].isdigit() else None
        return sa.String(n) if n and not lite else sa.Text()
    if name == "json":
        if pg:
            from sqlalchemy.dialects import postgresql

            return postgresql.JSONB()
        return sa.JSON()
    if name in ("binary", "varbinary", "geometry") or name.endswith("blob"):
        return sa.LargeBinary()
    if name in ("uuid",) and pg:
        return sa.Uuid(as_uuid=False)
    return sa.Text()


def _my_simple(mysql_type: str) -> Any:
    """A MySQL type text as a SQLAlchemy type that renders it verbatim (MySQL targets)."""
    from sqlalchemy.types import UserDefinedType

    text = re.sub(r"\s+", " ", mysql_type.strip())
    if not re.fullmatch(r"[A-Za-z0-9_(), '.]+", text):
        raise DataError(f"jdbc: unsupported column type {mysql_type!r}")

    class _Verbatim(UserDefinedType[Any]):
        cache_ok = True

        def get_col_spec(self, **kw: Any) -> str:
            return text

    return _Verbatim()


def infer_type(value: Any, dialect: str, key: bool = False) -> Any:
    """The SQLAlchemy type for a column first seen with ``value`` (no ``mysqlType``): bool,
    int → BIGINT (NUMERIC(20) beyond 64 bits), Decimal → NUMERIC, float → DOUBLE, str →
    TEXT (VARCHAR(255) for a MySQL key column), dict/list → JSON (JSONB on PostgreSQL),
    None → TEXT."""
    import sqlalchemy as sa

    if isinstance(value, bool):
        return sa.Boolean()
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return sa.BigInteger() if dialect != "sqlite" else sa.Integer()
        return sa.Numeric(65, 0) if dialect != "sqlite" else sa.Text()
    if isinstance(value, Decimal):
        if dialect == "sqlite":
            return sa.Text()
        return sa.Numeric() if dialect == "postgresql" else sa.Numeric(65, 30)
    if isinstance(value, float):
        return sa.Double()
    if isinstance(value, dict | list):
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.JSONB()
        return sa.JSON()
    if dialect in ("mysql", "mariadb"):
        return sa.String(255) if key else sa.Text()
    return sa.Text()


def mapped(mysql_type: str, dialect: str) -> str:
    """The target column type's DDL text for the docs' table."""
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    d = {"postgresql": postgresql, "mysql": mysql, "sqlite": sqlite}[dialect].dialect()
    return str(sa_type_for_mysql(mysql_type, dialect).compile(dialect=d))


# -- values --------------------------------------------------------------------------------

_TIME = re.compile(r"^(-)?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


def parse_time(text: str) -> dt.timedelta:
    """MySQL's TIME text (``-838:59:59.000000``) as a timedelta."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"not a TIME value: {text!r}")
    micros = int((m.group(5) or "0").ljust(6, "0"))
    value = dt.timedelta(
        hours=int(m.group(2)), minutes=int(m.group(3)), seconds=int(m.group(4)), microseconds=micros
    )
    return -value if m.group(1) else value


def _is_zero_date(text: str) -> bool:
    head = text[:10]
    return head.startswith("0000") or head[5:7] == "00" or head[8:10] == "00"


def _datetime(v: Any, aware: bool) -> Any:
    """A timestamp value for a column with (``aware``) or without a time zone. Text without
    an offset is UTC (the canal source writes MySQL TIMESTAMP so), and text with one is
    turned to UTC: into a column without a time zone the UTC wall time goes, on every
    dialect (the offset was dropped by PyMySQL and SQLite, and applied in the session's time
    zone by PostgreSQL), so ``10:00+02:00`` and ``08:00Z`` are the same value everywhere."""
    if isinstance(v, str):
        if _is_zero_date(v):
            raise ZeroDate(v)
        text = v.replace(" ", "T", 1)
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        v = dt.datetime.fromisoformat(text)
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            return v.replace(tzinfo=dt.UTC) if aware else v
        utc = v.astimezone(dt.UTC)
        return utc if aware else utc.replace(tzinfo=None)
    return v


def _date(v: Any) -> Any:
    if isinstance(v, str):
        if _is_zero_date(v):
            raise ZeroDate(v)
        return dt.date.fromisoformat(v[:10])
    return v


def _int(v: Any) -> Any:
    """An integer, exactly: ``2.0`` and ``"7"`` are taken, ``1.5`` is refused (PostgreSQL and
    MySQL would round it to 2 without a word, and SQLite cannot bind a Decimal at all)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            v = _decimal(v)  # "2.0", "1e3"
    if isinstance(v, float | Decimal):
        if not (v.is_finite() if isinstance(v, Decimal) else math.isfinite(v)):
            raise ValueError(f"not an integer: {v}")
        if v != int(v):
            raise ValueError(f"not an integer: {v} (the column takes whole numbers)")
        return int(v)
    return v


def _tinyint1(v: Any) -> Any:
    """A MySQL ``TINYINT(1)`` (``BOOLEAN``): ``"true"``/``"no"`` as 1/0, numbers as
    :func:`_int` takes them (the column holds -128…127)."""
    if isinstance(v, str):
        word = v.strip().lower()
        if word in _TRUE or word in _FALSE:
            return int(word in _TRUE)
    return _int(v)


def _decimal(v: Any) -> Any:
    if isinstance(v, bool):
        return Decimal(int(v))
    if isinstance(v, str | int | float):
        try:
            return Decimal(str(v)) if not isinstance(v, str) else Decimal(v.strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {v!r}") from None
    return v


def _scaled(scale: int) -> Callable[[Any], Any]:
    """A value for a ``NUMERIC(p, scale)`` column, refused when it has more digits after
    the point than ``scale`` (the databases would round ``1.239`` to ``1.24`` silently);
    trailing zeros are no digits lost (``1.500`` fits ``NUMERIC(10,2)``)."""

    def convert(v: Any) -> Any:
        value = _decimal(v)
        if isinstance(value, Decimal) and value.is_finite():
            exponent = value.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > scale:
                raise ValueError(
                    f"{value} has more digits after the point than the column's scale "
                    f"({scale}): it would be rounded"
                )
        return value

    return convert


def _float(v: Any) -> Any:
    if isinstance(v, str | Decimal):
        return float(v)
    return v


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _bool(v: Any) -> Any:
    """A boolean from ``true``/``false``, 1/0 and their usual words; any other text or
    number is refused (``"banana"`` was written as false, ``2`` as true)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        word = v.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ValueError(f"not a boolean: {v!r}")
    if isinstance(v, int | float | Decimal):
        if v in (0, 1):
            return bool(v)
        raise ValueError(f"not a boolean: {v!r} (1 or 0, true or false)")
    return v


def _bytes(v: Any) -> Any:
    if isinstance(v, str):
        return base64.b64decode(v, validate=True)
    return v


def _interval(v: Any) -> Any:
    return parse_time(v) if isinstance(v, str) else v


def _text(v: Any) -> Any:
    if isinstance(v, list) and all(isinstance(x, str) and "," not in x for x in v):
        # a SET in the row/debezium formats (plain records: see text_json)
        return ",".join(x for x in v if x != "")
    if isinstance(v, dict | list):
        return jsonvalue.dumps(v).decode()
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    return v


def for_plain_records(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``conv`` (from :func:`coercer`) as it applies to a plain record's values: into a text
    column an object or a list goes as its JSON text (a list is a SET's members only in the
    CDC formats: ``["a,b", "c"]`` and ``[{"x": 1}]`` were written as ``a,b,c`` and Python's
    ``{'x': 1}``)."""
    return _text_json if conv is _text else conv


def _text_json(v: Any) -> Any:
    if isinstance(v, dict | list):
        return jsonvalue.dumps(v).decode()
    return _text(v)


def _json_column_text(v: Any) -> Any:
    """A value for a MariaDB JSON column (a LONGTEXT that must hold JSON): text as it is (the
    ``canal`` source writes MariaDB's JSON as its text), any other value as JSON text."""
    return v if isinstance(v, str) else jsonvalue.dumps(v).decode()


def _json_text(v: Any) -> Any:
    """A JSON column's value given as JSON text (the ``canal`` format): its value, the JSON
    ``null`` as ``sa.JSON.NULL`` so that it is stored as JSON ``null`` and not as SQL
    ``NULL`` (which a record's own null is: MariaDB tells them apart, and so must the copy)."""
    if not isinstance(v, str):
        return v
    value = jsonvalue.loads(v)
    if value is None:
        import sqlalchemy as sa

        return sa.JSON.NULL
    return value


def coercer(sa_type: Any, json_text: bool) -> Callable[[Any], Any] | None:
    """A function turning a record value into the bind value for a column of ``sa_type``;
    None when values pass as they are. ``json_text``: JSON columns receive JSON *text* (the
    Canal format), which is parsed. Raises ValueError (bad value) or :class:`ZeroDate`."""
    import sqlalchemy as sa

    t = sa_type
    if isinstance(t, sa.Boolean):
        return _bool
    if isinstance(t, sa.Integer):
        # MySQL's BOOLEAN is a TINYINT(1): it takes the boolean words too
        return _tinyint1 if getattr(t, "display_width", None) == 1 else _int
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        scale = getattr(t, "scale", None)
        return _scaled(scale) if isinstance(scale, int) else _decimal
    if isinstance(t, sa.Float):
        return _float
    if isinstance(t, sa.DateTime):
        aware = bool(getattr(t, "timezone", False))
        return lambda v: _datetime(v, aware)
    if isinstance(t, sa.Date):
        return _date
    if isinstance(t, sa.Interval):
        return _interval
    if isinstance(t, sa.JSON):
        if json_text:
            return _json_text
        return None
    if getattr(t, "json_text_column", False):
        return _json_column_text
    if isinstance(t, sa.LargeBinary):
        return _bytes
    if isinstance(t, sa.Time):
        return lambda v: parse_time(v) if isinstance(v, str) else v
    if isinstance(t, sa.String | sa.Text | sa.Enum):
        return _text
    return None
