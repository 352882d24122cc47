"""Type fidelity: every type of the value table in ``events.py``, read by the snapshot (a
SELECT) and from the binlog, gives the same exact values in ``row`` format, and Canal's text
forms in ``canal`` format."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]

COLUMNS = """
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mu MEDIUMINT UNSIGNED, i INT,
    bu BIGINT UNSIGNED, dc DECIMAL(30,10), fl FLOAT, db DOUBLE,
    ch CHAR(3) CHARACTER SET utf8mb4, vc VARCHAR(20) CHARACTER SET latin1,
    tx TEXT CHARACTER SET utf8mb4, bn BINARY(4), vb VARBINARY(8), bl BLOB,
    d DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(2), y YEAR, j JSON,
    e ENUM('a','b','c'), s SET('a','b','c'), bt BIT(10), g GEOMETRY
"""
ROW = (
    "(1, -128, 255, -32768, 16777215, -2147483648, 18446744073709551615, "
    "-12345678901234567890.0123456789, 1.1, 2.5e-300, 'été', 'latin ñ', 'text 🙂', "
    "0x00ff0100, 0xfe, 0x000180ff, '2024-02-29', '2024-02-29 23:59:59.123456', "
    "'2024-02-29 17:00:00.5', '-12:34:56.78', 2155, '{\"k\": [1, 2.5, \"x\", null, true]}', "
    "'b', 'c,a', b'1010101010', ST_GeomFromText('POINT(1 2)'))"
)
NULLS = "(2" + ", NULL" * 25 + ")"
ZERO = "(3, 0, 0, 0, 0, 0, 0, 0, 0, 0, '', '', '', '', '', '', '0000-00-00', " + (
    "'0000-00-00 00:00:00', NULL, '00:00:00', 0, NULL, '', '', b'0', NULL)"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def loaded(mariadb: MariaDB) -> dict[str, Any]:
    """Rows inserted twice: into ``types.snap`` before the start (read by the snapshot) and
    into ``types.live`` after it (read from the binlog)."""
    mariadb.execute(
        "CREATE DATABASE types",
        f"CREATE TABLE types.snap ({COLUMNS})",
        f"CREATE TABLE types.live ({COLUMNS})",
    )
    insert = [
        "SET time_zone = '+05:00'",
        "SET sql_mode = ''",
        f"INSERT INTO @table VALUES {ROW}, {NULLS}, {ZERO}",
        "INSERT INTO @table (id, tm) VALUES (4, '-00:00:00.5'), (5, '-838:59:58.99'), "
        "(6, '00:00:01.01'), (7, '-00:00:01')",
    ]
    mariadb.execute(*[s.replace("@table", "types.snap") for s in insert])
    start = end_positions(mariadb)
    mariadb.execute(*[s.replace("@table", "types.live") for s in insert])
    wkb = mariadb.execute("SELECT g FROM types.live WHERE id = 1")[0][0]
    return {"start": start, "wkb": wkb}


EXPECTED = {
    "id": 1,
    "ti": -128,
    "tu": 255,
    "si": -32768,
    "mu": 16777215,
    "i": -2147483648,
    "bu": 18446744073709551615,
    "dc": "-12345678901234567890.0123456789",
    "fl": 1.1,
    "db": 2.5e-300,
    "ch": "été",
    "vc": "latin ñ",
    "tx": "text 🙂",
    "bn": b64(b"\x00\xff\x01\x00"),
    "vb": b64(b"\xfe"),
    "bl": b64(b"\x00\x01\x80\xff"),
    "d": "2024-02-29",
    "dt": "2024-02-29T23:59:59.123456",
    "ts": "2024-02-29T12:00:00.500Z",
    "tm": "-12:34:56.78",
    "y": 2155,
    "j": {"k": [1, 2.5, "x", None, True]},
    "e": "b",
    "s": ["a", "c"],
    "bt": 682,
}
ZERO_EXPECTED = {
    "d": "0000-00-00",
    "dt": "0000-00-00 00:00:00.000000",
    "tm": "00:00:00.00",
    "s": [],
    "e": "",
    "bt": 0,
    "y": 0,
    "bu": 0,
    "dc": "0.0000000000",
}


def rows(records: list[Any], table: str) -> dict[int, dict[str, Any]]:
    return {r.data["id"]: r.data for r in records if r.subject == table}


def test_binlog_values_are_exact(mariadb: MariaDB, loaded: dict[str, Any]) -> None:
    records, _ = run_source(mariadb, loaded["start"], 7, format="row", snapshot="never")
    got = rows(records, "types.live")
    assert [got[i]["tm"] for i in range(4, 8)] == [
        "-00:00:00.50",
        "-838:59:58.99",
        "00:00:01.01",
        "-00:00:01.00",
    ]
    assert {k: got[1][k] for k in EXPECTED} == EXPECTED
    assert got[1]["g"] == b64(loaded["wkb"])
    assert got[2] == {"id": 2, **{k: None for k in got[2] if k != "id"}}
    assert {k: got[3][k] for k in ZERO_EXPECTED} == ZERO_EXPECTED


def test_snapshot_values_equal_binlog_values(mariadb: MariaDB, loaded: dict[str, Any]) -> None:
    streamed, _ = run_source(mariadb, loaded["start"], 7, format="row", snapshot="never")
    snapshot, _ = run_source(
        mariadb, None, 7, format="row", snapshot="initial_only", include=["types\\.snap"]
    )
    assert all(r.type == "mysql.read" for r in snapshot)
    assert rows(snapshot, "types.snap") == rows(streamed, "types.live")


def test_canal_text_values(mariadb: MariaDB, loaded: dict[str, Any]) -> None:
    records, _ = run_source(mariadb, loaded["start"], 3, format="canal", snapshot="never")
    data = records[0].data["data"][0]
    assert {k: data[k] for k in ("bu", "dc", "fl", "s", "j", "ts", "dt", "tm", "bt", "y")} == {
        "bu": "18446744073709551615",
        "dc": "-12345678901234567890.0123456789",
        "fl": "1.1",
        "s": "a,c",
        "j": '{"k": [1, 2.5, "x", null, true]}',
        "ts": "2024-02-29 12:00:00.500",
        "dt": "2024-02-29 23:59:59.123456",
        "tm": "-12:34:56.78",
        "bt": "682",
        "y": "2155",
    }
    assert data["bl"] == b64(b"\x00\x01\x80\xff")
    types = records[0].data["mysqlType"]
    assert (types["bu"], types["j"], records[0].data["sqlType"]["bu"]) == (
        "bigint(20) unsigned",
        "json",
        3,
    )
    latin, _ = run_source(
        mariadb, loaded["start"], 1, format="canal", snapshot="never", binary="latin1"
    )
    assert latin[0].data["data"][0]["bl"] == "\x00\x01\x80\xff"
