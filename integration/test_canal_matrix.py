"""The type-and-charset matrix: every column type MariaDB has (MariaDB's own UUID, INET4 and
INET6 too) and every character set ``SHOW CHARACTER SET`` lists, inserted, snapshotted and
streamed: the snapshot value equals the binlog value equals what the server prints.

Two tables, loaded twice (``*_snap`` before the source starts, read by the snapshot; ``*_live``
after, read from the binlog), in one module-scoped server:

* ``types``: a column per type, rows of edge values (extremes, zero dates, the SET's empty
  member, IPv4-mapped INET6, UUIDs MariaDB stores swapped, …);
* ``charsets``: per charset a MEDIUMTEXT holding *every* character the server reads in that
  charset (all 256 bytes of the single-byte ones, every valid one-, two- and three-byte
  sequence of the multi-byte ones, a sample of Unicode for the Unicode ones), plus an ENUM and
  a SET of characters of that charset.

What the server prints is ``CAST(col AS CHAR)`` (``HEX`` for binary values, ``col+0`` for
BIT, ``CAST(col AS DOUBLE)`` for FLOAT, whose text has only six digits), read over a UTF-8
session in UTC. The decoder is ``CANAL_TEST_DECODER`` (CI runs this module on both).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest
from canal_support import end_positions, mariadb, run_source
from gen_charsets import PYTHON_CODEC, _convert
from mariadb import MariaDB

__all__ = ["mariadb"]

# (column, type, values for rows 1..n as SQL; missing rows are NULL)
TYPES: list[tuple[str, str, list[str]]] = [
    ("ti", "TINYINT", ["-128", "127", "0"]),
    ("tiu", "TINYINT UNSIGNED", ["255", "0", "1"]),
    ("bo", "BOOLEAN", ["1", "0"]),
    ("si", "SMALLINT", ["-32768", "32767"]),
    ("siu", "SMALLINT UNSIGNED", ["65535"]),
    ("mi", "MEDIUMINT", ["-8388608", "8388607"]),
    ("miu", "MEDIUMINT UNSIGNED", ["16777215"]),
    ("i", "INT", ["-2147483648", "2147483647"]),
    ("iu", "INT UNSIGNED", ["4294967295"]),
    ("bi", "BIGINT", ["-9223372036854775808", "9223372036854775807"]),
    ("biu", "BIGINT UNSIGNED", ["18446744073709551615", "0"]),
    (
        "dc",
        "DECIMAL(65,30)",
        [
            "-99999999999999999999999999999999999.999999999999999999999999999999",
            "0.000000000000000000000000000001",
            "0",
        ],
    ),
    ("dc0", "DECIMAL(10,0)", ["-9999999999", "1"]),
    ("dc5", "DECIMAL(5,5)", ["0.99999", "-0.00001"]),
    ("fl", "FLOAT", ["1.2345678", "16777217", "-3.4028234e38", "1.4e-45", "1.1"]),
    ("db", "DOUBLE", ["0.1", "1.7976931348623157e308", "-4.9e-324", "2.5e-300"]),
    ("b1", "BIT(1)", ["b'1'", "b'0'"]),
    ("b64", "BIT(64)", ["b'" + "1" * 64 + "'", "0", "b'1010101010'"]),
    ("ch", "CHAR(10)", ["'abc'", "''", "'é ü'"]),
    ("vc", "VARCHAR(300)", ["'trailing  '", "''", "'" + "x" * 300 + "'"]),
    ("bn", "BINARY(4)", ["0x00ff0100", "0x01", "''"]),
    ("vb", "VARBINARY(10)", ["0x00", "''", "0xfffe"]),
    ("tt", "TINYTEXT", ["'tiny 🙂'", "''"]),
    ("tx", "TEXT", ["'text'"]),
    ("mt", "MEDIUMTEXT", ["REPEAT('m', 70000)"]),
    ("lt", "LONGTEXT", ["'long'"]),
    ("tb", "TINYBLOB", ["0x00"]),
    ("bl", "BLOB", ["0x000180ff"]),
    ("mb", "MEDIUMBLOB", ["REPEAT(0x00ff, 40000)"]),
    ("lb", "LONGBLOB", ["0xff"]),
    ("d", "DATE", ["'2024-02-29'", "'9999-12-31'", "'0000-00-00'", "'0001-00-00'", "'1000-01-01'"]),
    (
        "dt0",
        "DATETIME",
        ["'2024-02-29 23:59:59'", "'0000-00-00 00:00:00'", "'9999-12-31 23:59:59'"],
    ),
    ("dt2", "DATETIME(2)", ["'0000-00-00 14:02:10.00'", "'2024-01-01 00:00:00.01'"]),
    ("dt6", "DATETIME(6)", ["'2024-02-29 23:59:59.123456'", "'0001-01-00 00:00:00.000001'"]),
    ("ts0", "TIMESTAMP NULL", ["'1970-01-01 00:00:01'", "0", "'2038-01-19 03:14:07'"]),
    ("ts3", "TIMESTAMP(3) NULL", ["'2024-02-29 17:00:00.5'", "0"]),
    ("ts6", "TIMESTAMP(6) NULL", ["'2038-01-19 03:14:07.999999'", "0"]),
    ("tm0", "TIME", ["'-838:59:59'", "'838:59:59'", "'00:00:00'"]),
    ("tm1", "TIME(1)", ["'-00:00:00.5'", "'12:34:56.7'"]),
    ("tm6", "TIME(6)", ["'-838:59:58.999999'", "'-00:00:01'", "'00:00:00.000001'"]),
    ("y", "YEAR", ["1901", "2155", "0"]),
    ("j", "JSON", ['\'{"k": [1, 2.5, "x", null, true]}\'', "'[]'", "'\"s\"'"]),
    ("e", "ENUM('a','b','','é')", ["'é'", "'zz'", "''", "'b'"]),
    ("s", "SET('','a','b')", ["1", "3", "6", "0", "7"]),
    ("g", "GEOMETRY", ["ST_GeomFromText('POINT(1 2)')"]),
    ("pt", "POINT", ["ST_GeomFromText('POINT(-1.5 2e10)')"]),
    ("ls", "LINESTRING", ["ST_GeomFromText('LINESTRING(0 0, 1 1)')"]),
    ("pg", "POLYGON", ["ST_GeomFromText('POLYGON((0 0, 1 0, 1 1, 0 0))')"]),
    ("mpt", "MULTIPOINT", ["ST_GeomFromText('MULTIPOINT(0 0, 1 1)')"]),
    ("mls", "MULTILINESTRING", ["ST_GeomFromText('MULTILINESTRING((0 0, 1 1))')"]),
    ("mpg", "MULTIPOLYGON", ["ST_GeomFromText('MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)))')"]),
    ("gc", "GEOMETRYCOLLECTION", ["ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1))')"]),
    (
        "u",
        "UUID",
        [
            "'01020304-0506-0708-090a-0b0c0d0e0f10'",
            "'6ccd780c-baba-1026-9564-5b8c656024db'",
            "'00000000-0000-0000-0000-000000000000'",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "'1ef6c6a2-36f8-6a1e-8d6b-0242ac120002'",
        ],
    ),
    ("i4", "INET4", ["'10.0.0.1'", "'255.255.255.255'", "'0.0.0.0'"]),
    (
        "i6",
        "INET6",
        [
            "'::ffff:1.2.3.4'",
            "'::1.2.3.4'",
            "'::'",
            "'::1'",
            "'1::'",
            "'1:0:2:0:0:3:0:4'",
            "'2001:db8:0:0:1:0:0:1'",
            "'fe80::1:2:3:4:5'",
            "'1:2:3:4:5:6:7:8'",
            "'0:0:1::'",
            "'::ffff:0:0'",
            "'ffff::ffff:1.2.3.4'",
        ],
    ),
]
ROWS = max(len(values) for _, _, values in TYPES)
BINARY = {"BINARY", "VARBINARY", "TINYBLOB", "BLOB", "MEDIUMBLOB", "LONGBLOB"}
GEOMETRY = {"GEOMETRY", "POINT", "LINESTRING", "POLYGON", "MULTIPOINT", "MULTILINESTRING"}
GEOMETRY |= {"MULTIPOLYGON", "GEOMETRYCOLLECTION"}
CHUNK = 2000  # characters per charset per row


def _base(sql_type: str) -> str:
    return sql_type.split("(")[0].split()[0].upper()


def _server_expr(column: str, sql_type: str) -> str:
    """What the server prints for a column (see the module docstring)."""
    base = _base(sql_type)
    if base in BINARY or base in GEOMETRY:
        return f"HEX(`{column}`)"
    if base == "BIT":
        return f"`{column}` + 0"
    if base == "FLOAT":
        return f"CAST(`{column}` AS DOUBLE)"
    return f"CAST(`{column}` AS CHAR)"


# -------------------------------------------------------------------- charsets


def _characters(server: MariaDB, charset: str, maxlen: int) -> list[bytes]:
    """Every byte sequence the server reads as one character of ``charset``, mapped or not (a
    sample of Unicode for the Unicode charsets)."""
    unicode = {
        "utf8mb3": "utf-8",
        "utf8mb4": "utf-8",
        "ucs2": "utf-16-be",
        "utf16": "utf-16-be",
        "utf16le": "utf-16-le",
        "utf32": "utf-32-be",
    }
    if charset in unicode:
        top = 0xFFFF if charset in ("utf8mb3", "ucs2") else 0x10FFFF
        points = [*range(0, 0x800), *range(0x800, top + 1, 97), 0xFFFD, top]
        return [chr(p).encode(unicode[charset]) for p in points if not 0xD800 <= p <= 0xDFFF]
    if maxlen == 1:
        return [bytes([b]) for b in range(256)]
    import pymysql

    conn = pymysql.connect(**server.connect_args("mysql"), charset="utf8mb4")
    try:
        out = [
            bytes([i])
            for i, t in _convert(conn, charset, 0, 255, 1).items()
            if len(t) == 1 and (t != "?" or i == 0x3F)
        ]
        singles = set(out)
        pairs = _convert(conn, charset, 0x8000, 0xFFFF, 2)
        # One '?' from two bytes: well formed (so stored) but without a Unicode mapping.
        out += [n.to_bytes(2, "big") for n, t in pairs.items() if len(t) == 1]
        if charset in ("ujis", "eucjpms"):
            triples = _convert(conn, charset, 0x8FA1A1, 0x8FFEFE, 3)
            out += [
                n.to_bytes(3, "big")
                for n, t in triples.items()
                if len(t) == 1 and n >> 8 & 0xFF >= 0xA1 and n & 0xFF >= 0xA1
            ]
        return [b for b in out if len(b) > 1 or b in singles]
    finally:
        conn.close()


def _members(server: MariaDB, charset: str, characters: list[bytes]) -> list[str]:
    """Six ENUM/SET members: the last characters of the charset (as the server prints them,
    non-ASCII where the charset has them)."""
    raw = "".join(c.hex() for c in characters[-400:])
    rows = server.execute(
        f"SELECT HEX(CONVERT(CONVERT(UNHEX('{raw}') USING {charset}) USING utf8mb4))"
    )
    text = bytes.fromhex(rows[0][0]).decode("utf-8")
    seen: list[str] = []
    for ch in text + "QqZz":  # an ASCII charset has no others
        if ch not in ",?\ufffd" and not ch.isspace() and ch not in seen and ch.isprintable():
            seen.append(ch)
    return seen[:6]


def _sql_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.fixture(scope="module")
def loaded(mariadb: MariaDB) -> dict[str, Any]:
    charsets = [
        (str(name), int(maxlen))
        for name, _d, _c, maxlen in mariadb.execute("SHOW CHARACTER SET")
        if name != "binary"
    ]
    assert len(charsets) >= 39, charsets
    chars = {cs: _characters(mariadb, cs, maxlen) for cs, maxlen in charsets}
    members = {cs: _members(mariadb, cs, chars[cs]) for cs, _ in charsets}
    type_columns = ", ".join(f"`{c}` {t}" for c, t, _ in TYPES)
    cs_columns = []
    for cs, _ in charsets:
        cs_columns.append(f"`c_{cs}` MEDIUMTEXT CHARACTER SET {cs}")
        enum = ", ".join(_sql_str(m) for m in members[cs])
        cs_columns.append(f"`e_{cs}` ENUM({enum}) CHARACTER SET {cs} COLLATE {cs}_bin")
        cs_columns.append(f"`s_{cs}` SET({enum}) CHARACTER SET {cs} COLLATE {cs}_bin")
    mariadb.execute(
        "CREATE DATABASE matrix",
        *(
            f"CREATE TABLE matrix.types_{w} (id INT PRIMARY KEY, {type_columns})"
            for w in ("snap", "live")
        ),
        *(
            f"CREATE TABLE matrix.charsets_{w} (id INT PRIMARY KEY, {', '.join(cs_columns)})"
            for w in ("snap", "live")
        ),
    )
    type_rows = []
    for r in range(ROWS):
        values = [values[r] if r < len(values) else "NULL" for _, _, values in TYPES]
        type_rows.append(f"({r + 1}, {', '.join(values)})")
    type_rows.append(f"({ROWS + 1}" + ", NULL" * len(TYPES) + ")")
    chunks = max(-(-len(c) // CHUNK) for c in chars.values())
    cs_rows = []
    for k in range(chunks):
        values = [str(k + 1)]
        for cs, _ in charsets:
            part = chars[cs][k * CHUNK : (k + 1) * CHUNK]
            values.append(
                f"CONVERT(UNHEX('{b''.join(part).hex()}') USING {cs})" if part else "NULL"
            )
            n = len(members[cs])
            values.append(str(k % (n + 1)) if n else "NULL")  # 0: the '' error value
            values.append(str(k * 5 % (1 << n)) if n else "NULL")
        cs_rows.append(f"({', '.join(values)})")

    def load(which: str) -> None:
        mariadb.execute(
            "SET sql_mode = ''",
            "SET time_zone = '+00:00'",
            f"INSERT INTO matrix.types_{which} VALUES {', '.join(type_rows)}",
            *(f"INSERT INTO matrix.charsets_{which} VALUES {row}" for row in cs_rows),
        )

    load("snap")
    start = end_positions(mariadb)
    load("live")
    return {
        "start": start,
        "charsets": charsets,
        "type_rows": len(type_rows),
        "cs_rows": len(cs_rows),
    }


def _printed(server: MariaDB, table: str, columns: list[tuple[str, str]]) -> dict[int, dict]:
    """``id -> column -> the server's text`` (see the module docstring)."""
    import pymysql

    exprs = ", ".join(_server_expr(c, t) for c, t in columns)
    conn = pymysql.connect(**server.connect_args(), charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            cur.execute(f"SELECT id, {exprs} FROM {table}")
            rows = cur.fetchall()
    finally:
        conn.close()
    return {row[0]: dict(zip([c for c, _ in columns], row[1:], strict=True)) for row in rows}


def _canal_form(printed: Any, sql_type: str) -> Any:
    """The server's text as the canal format gives it."""
    if printed is None:
        return None
    base = _base(sql_type)
    if base in BINARY or base in GEOMETRY:
        return base64.b64encode(bytes.fromhex(printed)).decode()
    if base == "BIT":
        return str(printed)
    return printed


def _same_float32(a: str, b: Any) -> bool:
    return struct.pack("<f", float(a)) == struct.pack("<f", float(b))


def _records(
    mariadb: MariaDB, loaded: dict[str, Any], fmt: str, table: str
) -> tuple[dict[int, Any], dict[int, Any]]:
    """``(snapshot, binlog)`` data by id of ``matrix.<table>_snap`` / ``_live``."""
    count = loaded["type_rows"] if table == "types" else loaded["cs_rows"]
    live, _ = run_source(
        mariadb,
        loaded["start"],
        count,
        format=fmt,
        snapshot="never",
        include=[f"matrix\\.{table}_live"],
    )
    snap, _ = run_source(
        mariadb,
        None,
        count,
        format=fmt,
        snapshot="initial_only",
        include=[f"matrix\\.{table}_snap"],
    )
    assert len(live) == len(snap) == count

    def by_id(records: list[Any]) -> dict[int, Any]:
        out = {}
        for r in records:
            data = r.data
            if fmt == "canal":
                data = data["data"][0]
                out[int(data["id"])] = data
            elif fmt == "debezium":
                out[data["after"]["id"]] = data["after"]
            else:
                out[data["id"]] = data
        return out

    return by_id(snap), by_id(live)


@pytest.mark.parametrize("fmt", ["row", "debezium", "canal"])
def test_types_snapshot_equals_binlog(mariadb: MariaDB, loaded: dict[str, Any], fmt: str) -> None:
    snap, live = _records(mariadb, loaded, fmt, "types")
    for i in live:
        for column, _, _ in TYPES:
            assert snap[i][column] == live[i][column], (fmt, i, column)


def test_types_canal_text_is_what_the_server_prints(
    mariadb: MariaDB, loaded: dict[str, Any]
) -> None:
    _snap, live = _records(mariadb, loaded, "canal", "types")
    printed = _printed(mariadb, "matrix.types_live", [(c, t) for c, t, _ in TYPES])
    for i, row in live.items():
        for column, sql_type, _ in TYPES:
            want, got = _canal_form(printed[i][column], sql_type), row[column]
            if _base(sql_type) == "FLOAT" and want is not None:
                assert _same_float32(got, want), (i, column, got, want)
            elif _base(sql_type) == "DOUBLE" and want is not None:
                assert float(got) == float(want), (i, column, got, want)
            elif _base(sql_type) == "YEAR" and want is not None:
                assert got == want, (i, column)
            else:
                assert got == want, (i, column, got, want)


def test_types_row_values(mariadb: MariaDB, loaded: dict[str, Any]) -> None:
    """The values of the issue, exactly, in ``row`` format (the snapshot equals them too)."""
    _snap, live = _records(mariadb, loaded, "row", "types")
    assert [live[i]["u"] for i in (1, 2, 3)] == [
        "01020304-0506-0708-090a-0b0c0d0e0f10",
        "6ccd780c-baba-1026-9564-5b8c656024db",
        "00000000-0000-0000-0000-000000000000",
    ]
    assert [live[i]["i6"] for i in range(1, 13)] == [
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "::",
        "::1",
        "1::",
        "1:0:2::3:0:4",
        "2001:db8::1:0:0:1",
        "fe80::1:2:3:4:5",
        "1:2:3:4:5:6:7:8",
        "0:0:1::",
        "::ffff:0.0.0.0",
        "ffff::ffff:102:304",
    ]
    assert [live[i]["d"] for i in (3, 4)] == ["0000-00-00", "0001-00-00"]
    assert live[1]["dt2"] == "0000-00-00 14:02:10.00"
    assert live[2]["ts0"] == "0000-00-00 00:00:00"
    assert live[2]["ts6"] == "0000-00-00 00:00:00.000000"
    assert [live[i]["s"] for i in range(1, 6)] == [[""], ["", "a"], ["a", "b"], [], ["", "a", "b"]]
    assert [live[i]["fl"] for i in range(1, 6)] == [
        1.2345678,
        16777216.0,
        -3.4028235e38,
        1e-45,
        1.1,
    ]


def test_charsets(mariadb: MariaDB, loaded: dict[str, Any]) -> None:
    """Every charset: snapshot == binlog == the server's CONVERT(... USING utf8mb4), for text,
    ENUM and SET columns, in row and canal format."""
    columns = []
    for cs, _ in loaded["charsets"]:
        columns += [(f"c_{cs}", "TEXT"), (f"e_{cs}", "ENUM"), (f"s_{cs}", "SET")]
    printed = _printed(mariadb, "matrix.charsets_live", columns)
    wrong: list[tuple[Any, ...]] = []
    for fmt in ("row", "canal"):
        snap, live = _records(mariadb, loaded, fmt, "charsets")
        for i, row in live.items():
            for column, kind in columns:
                want = printed[i][column]
                got = row[column]
                if fmt == "row" and kind == "SET" and got is not None:
                    got = ",".join(got)  # no empty member here
                if not (snap[i][column] == row[column] and got == want):
                    first = next(
                        (
                            k
                            for k, (a, b) in enumerate(zip(got or "", want or "", strict=False))
                            if a != b
                        ),
                        None,
                    )
                    at = first or 0
                    wrong.append(
                        (
                            fmt,
                            i,
                            column,
                            at,
                            (got or "")[at:][:4],
                            (want or "")[at:][:4],
                            (snap[i][column] or "")[at:][:4] if kind == "TEXT" else snap[i][column],
                        )
                    )
    assert not wrong, wrong[:20]
    assert {cs for cs, _ in loaded["charsets"]} >= set(PYTHON_CODEC)
