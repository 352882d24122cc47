"""MySQL's binary JSON (the ``JSON`` column type as it is stored in the binlog) to Python.

:func:`parse_jsonb` turns one stored value into the parsed JSON value: objects become ``dict``
(``str`` keys), arrays ``list``, strings ``str``, numbers ``int``/``float``, literals
``None``/``True``/``False``. Opaque scalars MySQL keeps inside JSON become: DECIMAL an exact
``decimal.Decimal``; DATE, DATETIME, TIMESTAMP and TIME the string MySQL prints for them
(``'2024-01-31'``, ``'2024-01-31 12:00:00.000000'``, ``'-01:02:03.000000'``); anything else
``'base64:typeNN:…'`` as MySQL prints it.

The format is MySQL's ``sql/json_binary.h``: a type byte, then for objects and arrays a count,
a byte size, key entries (offset, length), value entries (type, offset or inline value), keys
and values; small containers use 16-bit offsets, large ones 32-bit. MariaDB has no binary JSON
(its ``JSON`` is ``LONGTEXT``), so this only runs against MySQL.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

__all__ = ["JsonbError", "parse_jsonb"]

_U16 = struct.Struct("<H").unpack_from
_I16 = struct.Struct("<h").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I32 = struct.Struct("<i").unpack_from
_I64 = struct.Struct("<q").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_F64 = struct.Struct("<d").unpack_from

# Field types of opaque values (pymysqlreplication.constants.FIELD_TYPE).
_DECIMAL, _NEWDECIMAL = 0, 246
_TIMESTAMP, _DATE, _TIME, _DATETIME = 7, 10, 11, 12
_TIMESTAMP2, _DATETIME2, _TIME2 = 17, 18, 19


class JsonbError(ValueError):
    """The bytes are not valid MySQL binary JSON."""


def parse_jsonb(data: bytes) -> Any:
    """The JSON value stored in ``data`` (an empty value is JSON ``null``)."""
    if not data:
        return None
    try:
        return _value(data[0], data, 1, len(data))
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise JsonbError(f"invalid binary JSON ({len(data)} bytes): {exc}") from exc


def _value(kind: int, data: bytes, pos: int, end: int) -> Any:
    """The value of type ``kind`` whose data starts at ``pos`` (container offsets are
    relative to ``pos``)."""
    if kind == 0x0C:  # string
        length, pos = _varlen(data, pos)
        return data[pos : pos + length].decode("utf-8")
    if kind <= 0x03:
        return _container(data, pos, small=not kind & 1, is_object=kind < 2)
    if kind == 0x04:
        return _literal(data[pos])
    if kind == 0x05:
        return _I16(data, pos)[0]
    if kind == 0x06:
        return _U16(data, pos)[0]
    if kind == 0x07:
        return _I32(data, pos)[0]
    if kind == 0x08:
        return _U32(data, pos)[0]
    if kind == 0x09:
        return _I64(data, pos)[0]
    if kind == 0x0A:
        return _U64(data, pos)[0]
    if kind == 0x0B:
        return _F64(data, pos)[0]
    if kind == 0x0F:
        return _opaque(data, pos)
    raise JsonbError(f"unknown binary JSON type {kind:#x}")


def _literal(byte: int) -> Any:
    if byte == 0:
        return None
    if byte == 1:
        return True
    if byte == 2:
        return False
    raise JsonbError(f"unknown binary JSON literal {byte:#x}")


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    """A length in 7-bit groups, low group first; the length and the position after it."""
    length = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length, pos
        shift += 7
        if shift > 28:
            raise JsonbError("binary JSON length too long")


def _container(data: bytes, base: int, *, small: bool, is_object: bool) -> Any:
    if small:
        count, size = _U16(data, base)[0], _U16(data, base + 2)[0]
        offset_size, read_offset = 2, _U16
    else:
        count, size = _U32(data, base)[0], _U32(data, base + 4)[0]
        offset_size, read_offset = 4, _U32
    if base + size > len(data):
        raise JsonbError("binary JSON container larger than its value")
    entries = base + 2 * offset_size
    keys: list[str] = []
    if is_object:
        key_entry = offset_size + 2
        for i in range(count):
            at = entries + i * key_entry
            key_offset = read_offset(data, at)[0]
            key_length = _U16(data, at + offset_size)[0]
            start = base + key_offset
            keys.append(data[start : start + key_length].decode("utf-8"))
        entries += count * key_entry
    value_entry = 1 + offset_size
    values: list[Any] = []
    for i in range(count):
        at = entries + i * value_entry
        kind = data[at]
        if kind == 0x04:
            values.append(_literal(data[at + 1]))
        elif kind == 0x05:
            values.append(_I16(data, at + 1)[0])
        elif kind == 0x06:
            values.append(_U16(data, at + 1)[0])
        elif kind == 0x07 and not small:
            values.append(_I32(data, at + 1)[0])
        elif kind == 0x08 and not small:
            values.append(_U32(data, at + 1)[0])
        else:
            values.append(_value(kind, data, base + read_offset(data, at + 1)[0], base + size))
    if is_object:
        return dict(zip(keys, values, strict=True))
    return values


def _opaque(data: bytes, pos: int) -> Any:
    field_type = data[pos]
    length, pos = _varlen(data, pos + 1)
    raw = data[pos : pos + length]
    if field_type in (_NEWDECIMAL, _DECIMAL):
        from meshconnect.connectors.canal._rowcodec import decode_decimal_bin

        precision, scale = raw[0], raw[1]
        return decode_decimal_bin(raw, 2, precision, scale)[0]
    if field_type in (_DATE, _DATETIME, _DATETIME2, _TIMESTAMP, _TIMESTAMP2, _TIME, _TIME2):
        packed = _I64(raw, 0)[0]
        if field_type in (_TIME, _TIME2):
            return _packed_time(packed)
        return _packed_datetime(packed, date_only=field_type == _DATE)
    return f"base64:type{field_type}:{base64.b64encode(raw).decode('ascii')}"


def _packed_datetime(packed: int, *, date_only: bool) -> str:
    negative = packed < 0
    packed = -packed if negative else packed
    frac = packed % (1 << 24)
    ymdhms = packed >> 24
    ymd, hms = ymdhms >> 17, ymdhms % (1 << 17)
    ym = ymd >> 5
    text = f"{ym // 13:04d}-{ym % 13:02d}-{ymd % 32:02d}"
    if not date_only:
        text += f" {hms >> 12:02d}:{(hms >> 6) % 64:02d}:{hms % 64:02d}.{frac:06d}"
    return "-" + text if negative else text


def _packed_time(packed: int) -> str:
    negative = packed < 0
    packed = -packed if negative else packed
    frac = packed % (1 << 24)
    hms = packed >> 24
    text = f"{(hms >> 12) % 1024:02d}:{(hms >> 6) % 64:02d}:{hms % 64:02d}.{frac:06d}"
    return "-" + text if negative else text
