"""Table maps and rows-event images for :mod:`.fastbinlog`: parsing, and decoders made per table.

:func:`parse_table_map` reads a TABLE_MAP event body (with ``binlog_row_metadata=FULL``
optional metadata: names, signedness, charsets, ENUM/SET members, primary key) into a
:class:`~.events.Table`. :func:`column_reader` gives, for one column, a ``read(data, pos) ->
(value, next_pos)`` closure that decodes its binlog value as the contract in :mod:`.events`
says; ``_rowgen`` inlines the common types and calls these closures for the rest.

Strings (and ENUM/SET member names) are decoded with the column's charset as the server
converts it (see :mod:`._charsets`); bytes that are not valid in the charset become ``?``, as
the server prints them, rather than stopping the stream.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

from meshconnect.connectors.canal import _charsets
from meshconnect.connectors.canal._jsonb import parse_jsonb
from meshconnect.connectors.canal.events import Column, Table

__all__ = [
    "UnsupportedColumn",
    "column_reader",
    "decode_decimal_bin",
    "fixed_format",
    "parse_table_map",
    "string_prefix",
    "text_codec",
]

# Binlog column type codes (MySQL's enum_field_types).
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP = 0, 1, 2, 3, 4, 5, 6, 7
LONGLONG, INT24, DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR = 8, 9, 10, 11, 12, 13, 14, 15
BIT, TIMESTAMP2, DATETIME2, TIME2 = 16, 17, 18, 19
JSON, NEWDECIMAL, ENUM, SET = 245, 246, 247, 248
TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = (
    249,
    250,
    251,
    252,
    253,
    254,
    255,
)

_NUMERIC = frozenset({TINY, SHORT, INT24, LONG, LONGLONG, NEWDECIMAL, FLOAT, DOUBLE, YEAR})
_CHARACTER = frozenset({STRING, VAR_STRING, VARCHAR, BLOB})
_BINARY_CHARSET = 63
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
UTC = dt.UTC


def _encoding(charset: int) -> tuple[str, str]:
    """Python codec and error handler for a MySQL collation id (see :mod:`._charsets`)."""
    return _charsets.codec(charset) or ("latin-1", "strict")


def _lenenc(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 251:
        return first, pos + 1
    if first == 252:
        return data[pos + 1] | data[pos + 2] << 8, pos + 3
    if first == 253:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    return int.from_bytes(data[pos + 1 : pos + 9], "little"), pos + 9


def parse_table_map(data: bytes, pos: int, end: int, *, mariadb: bool) -> Table:
    """Parse a TABLE_MAP body ``data[pos:end]`` (after the common header, without checksum)."""
    table_id = int.from_bytes(data[pos : pos + 6], "little")
    pos += 8
    n = data[pos]
    schema = data[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += n + 2
    n = data[pos]
    name = data[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += n + 2
    count, pos = _lenenc(data, pos)
    types = list(data[pos : pos + count])
    pos += count
    meta_len, pos = _lenenc(data, pos)
    meta_end = pos + meta_len
    metas: list[Any] = []
    for i, t in enumerate(types):
        if t in (FLOAT, DOUBLE, BLOB, GEOMETRY, JSON, TIMESTAMP2, DATETIME2, TIME2) or (
            TINY_BLOB <= t <= LONG_BLOB
        ):
            metas.append(data[pos])
            pos += 1
            if TINY_BLOB <= t <= LONG_BLOB:
                types[i] = BLOB
        elif t in (VARCHAR, VAR_STRING):
            metas.append(data[pos] | data[pos + 1] << 8)
            pos += 2
        elif t == NEWDECIMAL:
            metas.append((data[pos], data[pos + 1]))
            pos += 2
        elif t == BIT:
            metas.append(data[pos + 1] * 8 + data[pos])
            pos += 2
        elif t in (STRING, ENUM, SET):
            b0, b1 = data[pos], data[pos + 1]
            pos += 2
            if b0 in (ENUM, SET):
                types[i] = b0
                metas.append(b1)
            else:
                metas.append((((b0 & 0x30) ^ 0x30) << 4) | b1)
        else:
            metas.append(0)
    pos = meta_end
    nb = (count + 7) // 8
    null_bits = int.from_bytes(data[pos : pos + nb], "little")
    pos += nb
    nullable = tuple(bool(null_bits >> i & 1) for i in range(count))

    names: list[str] = []
    unsigned = [False] * count
    charsets: list[int] = []
    enum_set_charsets: list[int] = []
    # Member names as bytes: their charset (the column's) comes later in the metadata.
    enum_values: list[tuple[bytes, ...]] = []
    set_values: list[tuple[bytes, ...]] = []
    pk: list[int] = []
    character = [
        t in _CHARACTER or (mariadb and t == GEOMETRY) for t in types
    ]  # columns the charset lists count
    enum_or_set = [t in (ENUM, SET) for t in types]
    while pos < end:
        kind = data[pos]
        length, pos = _lenenc(data, pos + 1)
        stop = pos + length
        if kind == 1:  # SIGNEDNESS: one bit per numeric column, most significant first
            bit = 0
            for i, t in enumerate(types):
                if t in _NUMERIC:
                    unsigned[i] = bool(data[pos + bit // 8] & (0x80 >> (bit % 8)))
                    bit += 1
        elif kind in (2, 10):  # DEFAULT_CHARSET, ENUM_AND_SET_DEFAULT_CHARSET
            default, p = _lenenc(data, pos)
            overrides: dict[int, int] = {}
            while p < stop:
                index, p = _lenenc(data, p)
                overrides[index], p = _lenenc(data, p)
            wanted = character if kind == 2 else enum_or_set
            target = charsets if kind == 2 else enum_set_charsets
            target[:] = [overrides.get(k, default) for k in range(sum(wanted))]
        elif kind in (3, 11):  # COLUMN_CHARSET, ENUM_AND_SET_COLUMN_CHARSET
            values, p = [], pos
            while p < stop:
                value, p = _lenenc(data, p)
                values.append(value)
            (charsets if kind == 3 else enum_set_charsets)[:] = values
        elif kind == 4:  # COLUMN_NAME
            p = pos
            while p < stop:
                n, p = _lenenc(data, p)
                names.append(data[p : p + n].decode("utf-8"))
                p += n
        elif kind in (5, 6):  # SET_STR_VALUE, ENUM_STR_VALUE
            p = pos
            while p < stop:
                members, p = _lenenc(data, p)
                strings = []
                for _ in range(members):
                    n, p = _lenenc(data, p)
                    strings.append(data[p : p + n])
                    p += n
                (set_values if kind == 5 else enum_values).append(tuple(strings))
        elif kind in (8, 9):  # SIMPLE_PRIMARY_KEY, PRIMARY_KEY_WITH_PREFIX
            p, ints = pos, []
            while p < stop:
                value, p = _lenenc(data, p)
                ints.append(value)
            pk = ints if kind == 8 else ints[0::2]
        pos = stop

    columns: list[Column] = []
    char_i = es_i = enum_i = set_i = 0
    for i, t in enumerate(types):
        charset: int | None = None
        enums = sets = None
        if character[i]:
            if char_i < len(charsets):
                charset = charsets[char_i]
            char_i += 1
        if enum_or_set[i]:
            if es_i < len(enum_set_charsets):
                charset = enum_set_charsets[es_i]
            es_i += 1
            decode = _members_decoder(charset)
            if t == ENUM:
                enums = decode(enum_values[enum_i] if enum_i < len(enum_values) else ())
                enum_i += 1
            else:
                sets = decode(set_values[set_i] if set_i < len(set_values) else ())
                set_i += 1
        binary = charset == _BINARY_CHARSET
        if binary or t == GEOMETRY:
            charset = None
        columns.append(
            Column(
                name=names[i] if i < len(names) else f"col{i}",
                type=t,
                unsigned=unsigned[i],
                nullable=nullable[i],
                metadata=metas[i],
                charset=charset,
                enum_values=enums,
                set_values=sets,
                binary=binary,
            )
        )
    pk_names = tuple(columns[i].name for i in pk if i < count)
    return Table(table_id, schema, name, tuple(columns), pk_names)


def _members_decoder(charset: int | None) -> Callable[[tuple[bytes, ...]], tuple[str, ...]]:
    """ENUM/SET member names are stored in the column's charset."""
    encoding, errors = _encoding(charset) if charset is not None else ("utf-8", _charsets.ERRORS)
    return lambda names: tuple(n.decode(encoding, errors) for n in names)


# ---------------------------------------------------------------- per-column decoders

Reader = Callable[[bytes, int], tuple[Any, int]]


def decode_decimal_bin(data: bytes, pos: int, precision: int, scale: int) -> tuple[Decimal, int]:
    """MySQL's binary DECIMAL at ``pos``: the exact value and the position after it."""
    return _decimal_reader(precision, scale)(data, pos)


def _decimal_reader(precision: int, scale: int) -> Reader:
    return _decimal_readers(precision, scale)


def decimal_text_reader(precision: int, scale: int) -> Reader:
    """MySQL's binary DECIMAL at ``pos`` as its exact digits in fixed-point notation (what
    ``Decimal``'s value prints as, in ``format(v, "f")`` form: ``-0.50``, ``0.0000001``, ``0``),
    without making the ``Decimal``: for the ``canal`` format, which writes the text."""
    return _decimal_readers(precision, scale, text_only=True)


@functools.lru_cache(maxsize=512)
def _decimal_readers(precision: int, scale: int, text_only: bool = False) -> Reader:
    """Generated per (precision, scale): the whole value is read as one big-endian int, the
    sign bit flipped (and every bit, for negatives), then cut into its base-10**9 groups;
    ``Decimal`` of that text, or (``text_only``) the text."""
    intg = precision - scale
    intg0, intg0x = divmod(intg, 9)
    frac0, frac0x = divmod(scale, 9)
    # (bytes, decimal digits) of each group, most significant first.
    int_groups = ([(_DIG2BYTES[intg0x], intg0x)] if intg0x else []) + [(4, 9)] * intg0
    frac_groups = [(4, 9)] * frac0 + ([(_DIG2BYTES[frac0x], frac0x)] if frac0x else [])
    size = sum(b for b, _ in int_groups + frac_groups)
    bits = 8 * size

    def expr(groups: list[tuple[int, int]], end_bits: int) -> str:
        """The groups as one integer: sum of group * 10**(digits after it)."""
        terms, shift, digits_after = [], end_bits, 0
        for nbytes, digits in reversed(groups):
            mask = (1 << 8 * nbytes) - 1
            term = f"((x >> {shift}) & {mask})" if shift else f"(x & {mask})"
            terms.append(f"{term} * {10**digits_after}" if digits_after else term)
            shift += 8 * nbytes
            digits_after += digits
        return " + ".join(terms) or "0"

    frac_bits = sum(8 * b for b, _ in frac_groups)
    whole = expr(int_groups, frac_bits)
    if scale:
        text = f"f'{{sign}}{{{whole}}}.{{{expr(frac_groups, 0)}:0{scale}d}}'"
    else:
        text = f"f'{{sign}}{{{whole}}}'"
    source = f"""
def read(data, pos):
    x = from_bytes(data[pos:pos + {size}], 'big')
    if x >> {bits - 1}:
        x ^= {1 << (bits - 1)}
        sign = ''
    else:
        x ^= {(1 << (bits - 1)) - 1}
        sign = '-'
    return {"Decimal(" + text + ")" if not text_only else text}, pos + {size}
"""
    scope: dict[str, Any] = {"from_bytes": int.from_bytes, "Decimal": Decimal}
    name = f"<decimal({precision},{scale}){' text' if text_only else ''}>"
    exec(compile(source, name, "exec"), scope)
    return cast(Reader, scope["read"])


def _frac(fsp: int) -> tuple[int, int]:
    """Bytes of the fractional part for ``fsp`` and the factor to microseconds."""
    return ((0, 1), (1, 10_000), (1, 10_000), (2, 100), (2, 100), (3, 1), (3, 1))[fsp]


def _zero_text(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, fsp: int) -> str:
    text = f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
    return text + "." + f"{us:06d}"[:fsp] if fsp else text


def _datetime2_reader(fsp: int) -> Reader:
    fbytes, factor = _frac(fsp)
    size = 5 + fbytes
    datetime = dt.datetime

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(data[pos : pos + 5], "big") - 0x8000000000
        us = int.from_bytes(data[pos + 5 : pos + size], "big") * factor if fbytes else 0
        ymd = v >> 17
        ym = ymd >> 5
        try:
            return datetime(
                ym // 13, ym % 13, ymd & 31, (v >> 12) & 31, (v >> 6) & 63, v & 63, us
            ), pos + size
        except ValueError:
            text = _zero_text(
                ym // 13, ym % 13, ymd & 31, (v >> 12) & 31, (v >> 6) & 63, v & 63, us, fsp
            )
            return text, pos + size

    return read


def _timestamp2_reader(fsp: int) -> Reader:
    fbytes, factor = _frac(fsp)
    size = 4 + fbytes
    fromtimestamp = dt.datetime.fromtimestamp
    zero = _zero_text(0, 0, 0, 0, 0, 0, 0, fsp)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "big")
        if not seconds:
            return zero, pos + size
        value = fromtimestamp(seconds, UTC)
        if fbytes:
            us = int.from_bytes(data[pos + 4 : pos + size], "big") * factor
            if us:
                value = value.replace(microsecond=us)
        return value, pos + size

    return read


def _time2_reader(fsp: int) -> Reader:
    fbytes = _frac(fsp)[0]
    size = 3 + fbytes
    timedelta = dt.timedelta

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        intpart = int.from_bytes(data[pos : pos + 3], "big") - 0x800000
        if fbytes == 0:
            packed = intpart << 24
        elif fbytes == 3:
            packed = int.from_bytes(data[pos : pos + 6], "big") - 0x800000000000
        else:
            frac = int.from_bytes(data[pos + 3 : pos + size], "big")
            if intpart < 0 and frac:
                intpart += 1
                frac -= 0x100 if fbytes == 1 else 0x10000
            packed = (intpart << 24) + frac * (10_000 if fbytes == 1 else 100)
        negative = packed < 0
        if negative:
            packed = -packed
        hms, us = packed >> 24, packed & 0xFFFFFF
        value = timedelta(
            hours=(hms >> 12) & 1023, minutes=(hms >> 6) & 63, seconds=hms & 63, microseconds=us
        )
        return (-value if negative else value), pos + size

    return read


def _date_reader() -> Reader:
    date = dt.date

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        v = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
        try:
            return date(v >> 9, (v >> 5) & 15, v & 31), pos + 3
        except ValueError:
            return f"{v >> 9:04d}-{(v >> 5) & 15:02d}-{v & 31:02d}", pos + 3

    return read


def _old_datetime_reader() -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(data[pos : pos + 8], "little")
        d, t = divmod(v, 1_000_000)
        parts = (d // 10000, d // 100 % 100, d % 100, t // 10000, t // 100 % 100, t % 100)
        try:
            return dt.datetime(*parts), pos + 8
        except ValueError:
            return _zero_text(*parts, 0, 0), pos + 8

    return read


def _old_time_reader() -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(data[pos : pos + 3], "little", signed=True)
        a = abs(v)
        value = dt.timedelta(hours=a // 10000, minutes=a // 100 % 100, seconds=a % 100)
        return (-value if v < 0 else value), pos + 3

    return read


def _old_timestamp_reader() -> Reader:
    zero = _zero_text(0, 0, 0, 0, 0, 0, 0, 0)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "little")
        return (dt.datetime.fromtimestamp(seconds, UTC) if seconds else zero), pos + 4

    return read


def _set_reader(size: int, members: tuple[str, ...]) -> Reader:
    cache: dict[int, tuple[str, ...]] = {}

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        mask = int.from_bytes(data[pos : pos + size], "little")
        value = cache.get(mask)
        if value is None:
            value = tuple(m for i, m in enumerate(members) if mask >> i & 1)
            if len(cache) < 4096:
                cache[mask] = value
        return value, pos + size

    return read


def _enum_reader(size: int, members: tuple[str, ...]) -> Reader:
    table = ("", *members)

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        index = int.from_bytes(data[pos : pos + size], "little")
        return (table[index] if index < len(table) else ""), pos + size

    return read


def _json_reader(length_size: int) -> Reader:
    def read(data: bytes, pos: int) -> tuple[Any, int]:
        n = int.from_bytes(data[pos : pos + length_size], "little")
        start = pos + length_size
        return parse_jsonb(data[start : start + n]), start + n

    return read


_INT_FORMATS = {TINY: ("b", 1), SHORT: ("h", 2), LONG: ("i", 4), LONGLONG: ("q", 8)}


def string_prefix(column: Column) -> int:
    """Bytes of the length prefix of a string-like column's value."""
    t = column.type
    if t in (BLOB, GEOMETRY, JSON):
        return int(column.metadata)
    if t in (VARCHAR, VAR_STRING, STRING):
        return 1 if column.metadata < 256 else 2
    raise ValueError(f"not a string column: {column}")


def fixed_format(column: Column) -> str | None:
    """The ``struct`` format of a fixed-width numeric column (YEAR reads as ``B``), or None."""
    t = column.type
    if t in _INT_FORMATS:
        fmt = _INT_FORMATS[t][0]
        return fmt.upper() if column.unsigned else fmt
    if t == FLOAT:
        return "f"
    if t == DOUBLE:
        return "d"
    if t == YEAR:
        return "B"
    return None


def column_reader(column: Column) -> Reader:
    """``read(data, pos) -> (value, next_pos)`` for one non-NULL value of ``column``."""
    t = column.type
    fmt = fixed_format(column)
    if fmt is not None:
        unpack = struct.Struct("<" + fmt).unpack_from
        size = struct.calcsize("<" + fmt)
        if t == YEAR:
            return lambda data, pos: ((data[pos] + 1900 if data[pos] else 0), pos + 1)
        return lambda data, pos: (unpack(data, pos)[0], pos + size)
    if t == INT24:
        signed = not column.unsigned
        return lambda data, pos: (
            int.from_bytes(data[pos : pos + 3], "little", signed=signed),
            pos + 3,
        )
    if t in (VARCHAR, VAR_STRING, STRING, BLOB, GEOMETRY):
        prefix = string_prefix(column)
        charset = column.charset

        def read_string(data: bytes, pos: int) -> tuple[Any, int]:
            start = pos + prefix
            end = start + int.from_bytes(data[pos:start], "little")
            return data[start:end], end

        if charset is None and t == STRING:  # BINARY(n): the binlog drops trailing zeros
            width = int(column.metadata)

            def read_binary(data: bytes, pos: int) -> tuple[Any, int]:
                raw, end = read_string(data, pos)
                return raw.ljust(width, b"\0"), end

            return read_binary
        if charset is None:
            return read_string
        encoding, errors = _encoding(charset)

        def read_text(data: bytes, pos: int) -> tuple[Any, int]:
            raw, end = read_string(data, pos)
            return raw.decode(encoding, errors), end

        return read_text
    if t == JSON:
        return _json_reader(int(column.metadata))
    if t == NEWDECIMAL:
        return _decimal_reader(*column.metadata)
    if t == DATETIME2:
        return _datetime2_reader(int(column.metadata))
    if t == TIMESTAMP2:
        return _timestamp2_reader(int(column.metadata))
    if t == TIME2:
        return _time2_reader(int(column.metadata))
    if t in (DATE, NEWDATE):
        return _date_reader()
    if t == DATETIME:
        return _old_datetime_reader()
    if t == TIME:
        return _old_time_reader()
    if t == TIMESTAMP:
        return _old_timestamp_reader()
    if t == ENUM:
        return _enum_reader(int(column.metadata), column.enum_values or ())
    if t == SET:
        return _set_reader(int(column.metadata), column.set_values or ())
    if t == BIT:
        size = (int(column.metadata) + 7) // 8
        return lambda data, pos: (int.from_bytes(data[pos : pos + size], "big"), pos + size)
    raise UnsupportedColumn(f"column {column.name!r}: binlog type {t} cannot be decoded")


class UnsupportedColumn(ValueError):
    """A column type the fast reader does not decode (old DECIMAL, NULL type, …)."""


def text_codec(column: Column) -> tuple[str, str] | None:
    """Python codec and error handler of a text column, None for binary."""
    return None if column.charset is None else _encoding(column.charset)
