"""The fast reader's pure decoders: MySQL binary JSON and binary DECIMAL.

Values are encoded here following MySQL's formats (``sql/json_binary.cc``,
``strings/decimal.cc``: ``decimal2bin``) and must decode back to themselves; binary JSON is
also checked against pymysqlreplication's own parser when it is installed.
"""

from __future__ import annotations

import datetime
import struct
from decimal import Decimal, localcontext
from typing import Any

import pytest

from meshconnect.connectors.canal._jsonb import JsonbError, parse_jsonb
from meshconnect.connectors.canal._rowcodec import decode_decimal_bin

# ---------------------------------------------------------------- DECIMAL

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def decimal2bin(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's binary DECIMAL(precision, scale) of ``value``."""
    negative = value < 0
    with localcontext() as ctx:
        ctx.prec = 100
        digits = f"{abs(value):.{scale}f}"
    whole, _, frac = digits.partition(".")
    intg = precision - scale
    whole = whole.rjust(intg, "0")[-intg:] if intg else ""
    out = bytearray()
    lead = intg % 9
    if lead:
        out += int(whole[:lead]).to_bytes(_DIG2BYTES[lead], "big")
    for i in range(lead, intg, 9):
        out += int(whole[i : i + 9]).to_bytes(4, "big")
    for i in range(0, scale - scale % 9, 9):
        out += int(frac[i : i + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(frac[scale - scale % 9 :]).to_bytes(_DIG2BYTES[scale % 9], "big")
    if negative:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


@pytest.mark.parametrize(
    ("text", "precision", "scale"),
    [
        ("0", 1, 0),
        ("1234.56", 10, 2),
        ("-1234.56", 10, 2),
        ("-0.01", 10, 2),
        ("99999999.99", 10, 2),
        ("99999", 5, 0),
        ("-99999", 5, 0),
        ("123456789.000000001", 18, 9),
        ("12345678901234567890123456789012345.123456789012345678901234567890", 65, 30),
        ("-12345678901234567890123456789012345.123456789012345678901234567890", 65, 30),
        ("0.000000000000000000000000000001", 65, 30),
        ("7", 3, 3 - 3),
        ("0.5", 1, 1),
        ("-0.123", 3, 3),
    ],
)
def test_decimal_round_trip(text: str, precision: int, scale: int) -> None:
    value = Decimal(text)
    raw = b"\xaa" + decimal2bin(value, precision, scale) + b"\xbb"
    got, end = decode_decimal_bin(raw, 1, precision, scale)
    assert got == value
    assert got.as_tuple().exponent == -scale  # the column's scale is kept
    assert end == len(raw) - 1


@pytest.mark.parametrize(
    ("text", "precision", "scale"),
    [
        ("0", 1, 0),
        ("-0", 5, 0),
        ("0", 10, 7),  # Decimal prints 0E-7
        ("-0.00", 10, 2),
        ("0.0000001", 10, 7),  # Decimal prints 1E-7
        ("-0.0000001", 10, 7),
        ("1234.56", 10, 2),
        ("-0.01", 10, 2),
        ("99999999.99", 10, 2),
        ("0.5", 1, 1),
        ("-12345678901234567890123456789012345.123456789012345678901234567890", 65, 30),
        ("0.000000000000000000000000000001", 65, 30),
        ("1000000000000000000000000000000000000000000000000000000000000000", 65, 0),
    ],
)
def test_decimal_text_is_the_canal_text_of_the_decimal(
    text: str, precision: int, scale: int
) -> None:
    """The canal format's reader of DECIMAL text gives what the format writes for the
    ``Decimal`` the plain reader makes: fixed-point digits at the column's scale, never an
    exponent, the sign of a negative zero kept."""
    from meshconnect.connectors.canal._rowcodec import decimal_text_reader
    from meshconnect.connectors.canal.formats import _canal_conv

    raw = b"\xaa" + decimal2bin(Decimal(text), precision, scale) + b"\xbb"
    value, _ = decode_decimal_bin(raw, 1, precision, scale)
    got, end = decimal_text_reader(precision, scale)(raw, 1)
    assert got == _canal_conv("decimal", 0, "base64")(value)
    assert "E" not in got
    assert end == len(raw) - 1


# ---------------------------------------------------------------- binary JSON


def _varlen(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(value: Any, *, large: bool = False) -> bytes:
    """MySQL binary JSON of ``value`` (type byte + data)."""
    kind, data = _encode(value, large)
    return bytes([kind]) + data


def _scalar(value: Any) -> tuple[int, bytes]:
    if value is None:
        return 0x04, b"\x00"
    if value is True:
        return 0x04, b"\x01"
    if value is False:
        return 0x04, b"\x02"
    if isinstance(value, int):
        for kind, fmt, lo, hi in (
            (0x05, "<h", -(2**15), 2**15 - 1),
            (0x07, "<i", -(2**31), 2**31 - 1),
            (0x09, "<q", -(2**63), 2**63 - 1),
            (0x0A, "<Q", 0, 2**64 - 1),
        ):
            if lo <= value <= hi:
                return kind, struct.pack(fmt, value)
        raise ValueError(value)
    if isinstance(value, float):
        return 0x0B, struct.pack("<d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return 0x0C, _varlen(len(raw)) + raw
    if isinstance(value, Decimal):
        precision, scale = 20, 6
        payload = bytes([precision, scale]) + decimal2bin(value, precision, scale)
        return 0x0F, bytes([246]) + _varlen(len(payload)) + payload
    raise TypeError(value)


def _encode(value: Any, large: bool) -> tuple[int, bytes]:
    if not isinstance(value, (dict, list)):
        return _scalar(value)
    is_object = isinstance(value, dict)
    items = list(value.items()) if is_object else [(None, v) for v in value]
    osize = 4 if large else 2
    pack = "<I" if large else "<H"
    count = len(items)
    header = 2 * osize + count * (1 + osize) + (count * (osize + 2) if is_object else 0)
    keys = b""
    key_entries = b""
    if is_object:
        at = header
        for key, _ in items:
            raw = key.encode("utf-8")
            key_entries += struct.pack(pack, at) + struct.pack("<H", len(raw))
            keys += raw
            at += len(raw)
    body = b""
    value_entries = b""
    base = header + len(keys)
    for _, item in items:
        kind, data = _encode(item, large)
        inline = kind in (0x04, 0x05, 0x06) or (large and kind in (0x07, 0x08))
        if inline:
            value_entries += bytes([kind]) + data.ljust(osize, b"\x00")
        else:
            value_entries += bytes([kind]) + struct.pack(pack, base + len(body))
            body += data
    size = header + len(keys) + len(body)
    data = struct.pack(pack, count) + struct.pack(pack, size) + key_entries + value_entries
    data += keys + body
    kind = (0x00 if is_object else 0x02) | (1 if large else 0)
    return kind, data


DOCUMENTS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    32767,
    -32768,
    70000,
    -(2**31),
    2**40,
    2**63 + 5,
    -(2**62),
    1.5,
    -2.25e-300,
    "",
    "plain",
    "ü😀" * 100,  # a length needing two varlen bytes
    [],
    {},
    [1, "two", 3.0, None, True, False, [70000, {"k": "v"}]],
    {"a": 1, "nested": {"list": [1, 2, {"deep": "😀"}], "empty": {}}, "n": None},
    {f"key{i}": i * 1000 for i in range(50)},
    Decimal("-12345.678900"),
    {"price": Decimal("19.990000")},
]


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("document", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_binary_json_decodes_to_the_document(document: Any, large: bool) -> None:
    got = parse_jsonb(encode(document, large=large))
    assert got == document
    assert type(got) is type(document)


def _strs(value: Any) -> Any:
    """pymysqlreplication's bytes keys and strings as str, for comparing."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {_strs(k): _strs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strs(v) for v in value]
    return value


@pytest.mark.parametrize("document", DOCUMENTS[:-2], ids=range(len(DOCUMENTS) - 2))
def test_binary_json_agrees_with_pymysqlreplication(document: Any) -> None:
    json_binary = pytest.importorskip("pymysqlreplication.json_binary")
    for large in (False, True):
        raw = encode(document, large=large)
        assert parse_jsonb(raw) == _strs(json_binary.parse_json(raw[0], raw[1:]))


def test_empty_json_is_null_and_garbage_is_a_clear_error() -> None:
    assert parse_jsonb(b"") is None
    with pytest.raises(JsonbError, match="unknown binary JSON type"):
        parse_jsonb(b"\x0e\x00")
    with pytest.raises(JsonbError, match="invalid binary JSON"):
        parse_jsonb(b"\x00\x05\x00")


def _datetime2(y: int, mo: int, d: int, h: int, mi: int, s: int, us: int, fsp: int) -> bytes:
    """A DATETIME2(fsp) value as the binlog packs it."""
    packed = ((((y * 13 + mo) << 5 | d) << 17) | h << 12 | mi << 6 | s) + 0x8000000000
    frac = {0: b"", 1: (us // 10000).to_bytes(1, "big"), 3: (us // 100).to_bytes(2, "big")}
    frac[2], frac[4], frac[5], frac[6] = (
        frac[1],
        frac[3],
        us.to_bytes(3, "big"),
        us.to_bytes(3, "big"),
    )
    return packed.to_bytes(5, "big") + frac[fsp]


@pytest.mark.parametrize("fsp", range(7))
def test_text_values_is_the_canal_text_of_the_datetime(fsp: int) -> None:
    """``RowDecoder(text_values=True)`` hands DATETIME values outside the key as the text
    the canal format writes for the ``datetime`` the plain decoder makes: the same Canal rows
    for valid, zero and invalid dates, any year, any digits, and a second seen again (kept);
    the key column stays a ``datetime``."""
    from meshconnect.connectors.canal._rowgen import SECONDS_CACHED, RowDecoder
    from meshconnect.connectors.canal.events import Column, Table
    from meshconnect.connectors.canal.formats import Shape

    columns = (Column("k", 18, nullable=False, metadata=fsp), Column("v", 18, metadata=fsp))
    table = Table(7, "s", "t", columns, ("k",))
    step = 10 ** (6 - fsp) if fsp else 1_000_000
    values = [
        (2024, 5, 6, 7, 8, 9, 123456),
        (2024, 5, 6, 7, 8, 9, 999999),  # the same second again
        (1, 1, 1, 0, 0, 0, 0),
        (999, 12, 31, 23, 59, 59, 10),
        (9999, 12, 31, 23, 59, 59, 999999),
        (0, 0, 0, 0, 0, 0, 0),  # zero date
        (2024, 2, 30, 1, 2, 3, 500000),  # invalid (ALLOW_INVALID_DATES)
        (2024, 0, 0, 14, 2, 10, 0),  # a zero month and day
    ]
    body = b""
    for v in values:
        us = v[6] // step * step if fsp else 0
        key = _datetime2(2020, 1, 1, 0, 0, 0, 0, fsp)
        body += b"\x00" + key + _datetime2(*v[:6], us, fsp)  # NULL bitmap, k, v
    body += b"\x02" + _datetime2(2020, 1, 1, 0, 0, 0, 0, fsp)  # v NULL
    present = 0b11
    plain = RowDecoder(table).functions(present)[0](body, 0, len(body))
    text = RowDecoder(table, text_values=True).functions(present)[0](body, 0, len(body))
    assert len(plain) == len(text) == len(values) + 1
    assert all(isinstance(row[0], datetime.datetime) for row in text)
    assert text[-1][1] is None
    shape = Shape.build("s", "t", ("k", "v"), columns, None, None, "base64", ("k",))
    assert [shape.canal(r) for r in text] == [shape.canal(r) for r in plain]
    assert [shape.canal(r)["v"] for r in text][:3] == [
        "2024-05-06 07:08:09" + ("." + "123456"[:fsp] if fsp else ""),
        "2024-05-06 07:08:09" + ("." + "999999"[:fsp] if fsp else ""),
        "0001-01-01 00:00:00" + ("." + "0" * fsp if fsp else ""),
    ]
    # The cache of seconds starts over when full: the texts stay right.
    many = b"".join(
        b"\x00" + _datetime2(2020, 1, 1, 0, 0, 0, 0, fsp) + _datetime2(2024, 1, 1, 0, m, s, 0, fsp)
        for m in range(60)
        for s in range(60)
        for _ in range(2)
    )
    decode = RowDecoder(table, text_values=True).functions(present)[0]
    rows = decode(many + many, 0, 2 * len(many))
    assert SECONDS_CACHED < 2 * 60 * 60 * 2
    assert [r[1] for r in rows] == [
        f"2024-01-01 00:{m:02d}:{s:02d}" + ("." + "0" * fsp if fsp else "")
        for _ in range(2)
        for m in range(60)
        for s in range(60)
        for _ in range(2)
    ]


def test_text_values_gives_decimals_outside_the_key_as_their_canal_text() -> None:
    """With ``text_values`` a DECIMAL column outside the key comes as its text (the same
    Canal rows as from the ``Decimal``), a DECIMAL key stays a ``Decimal``, NULL stays None."""
    from meshconnect.connectors.canal._rowgen import RowDecoder
    from meshconnect.connectors.canal.events import Column, Table
    from meshconnect.connectors.canal.formats import Shape

    columns = (
        Column("k", 246, nullable=False, metadata=(6, 2)),
        Column("v", 246, metadata=(12, 7)),
    )
    table = Table(7, "s", "t", columns, ("k",))
    body = b""
    for k, v in [("1.50", "0.0000001"), ("-2.00", "-0"), ("0.00", "-12345.6789012")]:
        body += b"\x00" + decimal2bin(Decimal(k), 6, 2) + decimal2bin(Decimal(v), 12, 7)
    body += b"\x02" + decimal2bin(Decimal("3"), 6, 2)  # v NULL
    plain = RowDecoder(table).functions(0b11)[0](body, 0, len(body))
    text = RowDecoder(table, text_values=True).functions(0b11)[0](body, 0, len(body))
    assert [type(r[0]) for r in text] == [Decimal] * 4
    assert [r[1] for r in text] == ["0.0000001", "0.0000000", "-12345.6789012", None]
    shape = Shape.build("s", "t", ("k", "v"), columns, None, None, "base64", ("k",))
    assert [shape.canal(r) for r in text] == [shape.canal(r) for r in plain]
