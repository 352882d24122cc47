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


# -------------------------------------------------------------------- JSON numbers (issue 8.2)

JSON_ROWS = [
    (1, '{"e": 1e400}'),
    (
        2,
        '{"n": 12345678901234567890123, "m": -9223372036854775809, '
        '"f": 0.1000000000000000055511151231257827}',
    ),
    (3, '{"broken": '),  # stored past the json_valid check
    (4, "[1.10, -0.0, 1E-7, 18446744073709551616]"),
]


def _collect(
    server: MariaDB, positions: dict[str, Any] | None, **config: Any
) -> tuple[list[Any], list[tuple[Any, BaseException]]]:
    """Run a canal source until the end of its input: its records and its failures."""
    import asyncio
    import logging
    import time

    from canal_support import DECODER

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.canal.config import CanalSourceConfig
    from meshconnect.connectors.canal.source import CanalSource

    settings = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 2002,
        "decoder": DECODER,
        "heartbeat_interval": 1,
        **config,
    }

    async def go() -> tuple[list[Any], list[tuple[Any, BaseException]]]:
        source = CanalSource(
            CanalSourceConfig(**settings),
            ConnectorContext("test", "canal", logging.getLogger("canal-test")),
        )
        records: list[Any] = []
        failures: list[tuple[Any, BaseException]] = []
        try:
            await source.start(dict(positions or {}))
            deadline = time.monotonic() + 30
            while len(records) + len(failures) < len(JSON_ROWS) and time.monotonic() < deadline:
                batch = await source.poll()
                if batch is None:
                    break
                records.extend(batch.records)
                failures.extend(batch.failures)
        finally:
            await source.stop()
        return records, failures

    return asyncio.run(go())


@pytest.fixture(scope="module")
def json_loaded(mariadb: MariaDB) -> dict[str, Any]:
    """The JSON rows in ``types.json_snap`` (before the start) and ``types.json_live``."""
    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS types",
        "CREATE TABLE types.json_snap (id INT PRIMARY KEY, j JSON)",
        "CREATE TABLE types.json_live (id INT PRIMARY KEY, j JSON)",
    )
    values = ", ".join(f"({i}, '{text}')" for i, text in JSON_ROWS)
    insert = ["SET check_constraint_checks = 0", "INSERT INTO @t VALUES " + values]
    mariadb.execute(*[s.replace("@t", "types.json_snap") for s in insert])
    start = end_positions(mariadb)
    mariadb.execute(*[s.replace("@t", "types.json_live") for s in insert])
    return {"start": start}


@pytest.mark.parametrize("fmt", ["row", "debezium", "canal"])
def test_json_numbers_exact_and_unparsable_json_is_a_failure(
    mariadb: MariaDB, json_loaded: dict[str, Any], fmt: str
) -> None:
    """Every digit as stored, the same from the snapshot and the binlog; text that is not
    JSON is a failure for the errors policy naming table, column and position, and the rows
    after it still come."""
    from decimal import Decimal

    from meshconnect import jsonvalue

    streamed = _collect(
        mariadb, json_loaded["start"], format=fmt, snapshot="never", include=["types\\.json_live"]
    )
    snapshot = _collect(
        mariadb, None, format=fmt, snapshot="initial_only", include=["types\\.json_snap"]
    )
    values = []
    for records, failures in (streamed, snapshot):
        if fmt == "canal":
            got = {int(r.data["data"][0]["id"]): r.data["data"][0]["j"] for r in records}
            assert got == {i: text for i, text in JSON_ROWS}
            assert failures == []
            continue
        rows = [r.data["after"] if fmt == "debezium" else r.data for r in records]
        got = {row["id"]: row["j"] for row in rows}
        assert got == {
            1: {"e": Decimal("1e400")},
            2: {
                "n": 12345678901234567890123,
                "m": -9223372036854775809,
                "f": Decimal("0.1000000000000000055511151231257827"),
            },
            4: [Decimal("1.10"), Decimal("-0.0"), Decimal("1E-7"), 18446744073709551616],
        }
        assert isinstance(got[2]["n"], int) and not isinstance(got[2]["f"], float)
        assert jsonvalue.dumps(got[1]) == b'{"e":1E+400}'
        assert jsonvalue.dumps(got[4]) == b"[1.10,-0.0,1E-7,18446744073709551616]"
        [(failed, error)] = failures
        table = "types.json_live" if records is streamed[0] else "types.json_snap"
        assert failed.subject == table
        assert failed.data["after"] == {"id": "3", "j": '{"broken": '}
        assert f"canal: {table} column 'j'" in str(error)
        where = "binlog binlog.0" if table.endswith("live") else "the snapshot"
        assert where in str(error)
        values.append(got)
    if fmt != "canal":
        assert values[0] == values[1]


def test_old_mariadb_temporal_format_is_refused_clearly(mariadb: MariaDB) -> None:
    """DATETIME(6) made with mysql56_temporal_format=OFF (MariaDB 5.3's format, found in
    upgraded tables) has no precision in the binlog: a clear error, never garbage values."""
    from meshconnect.errors import ConfigError

    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS types",
        "SET GLOBAL mysql56_temporal_format = OFF",
        "CREATE TABLE types.old_temporal (id INT PRIMARY KEY, a DATETIME(6), b TIME(3))",
        "SET GLOBAL mysql56_temporal_format = ON",
    )
    start = end_positions(mariadb)
    mariadb.execute(
        "INSERT INTO types.old_temporal VALUES (1, '2024-02-29 23:59:59.123456', '-12:34:56.789')"
    )
    with pytest.raises(ConfigError, match=r"types\.old_temporal"):
        run_source(
            mariadb, start, 1, format="row", snapshot="never", include=["types\\.old_temporal"]
        )


@pytest.mark.parametrize("fmt", ["row", "canal", "debezium"])
def test_uuid_and_inet6_keys_are_their_text(mariadb: MariaDB, fmt: str) -> None:
    """A UUID or INET6 primary key: the same partitionkey (the server's text) from the
    snapshot and the binlog, and the same value in the data."""
    snap_u, live_u, snap_i, live_i = (
        f"types.{k}_key_{w}_{fmt}" for k in ("uuid", "inet") for w in ("snap", "live")
    )
    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS types",
        *(f"CREATE TABLE {t} (k UUID PRIMARY KEY)" for t in (snap_u, live_u)),
        *(f"CREATE TABLE {t} (k INET6 PRIMARY KEY)" for t in (snap_i, live_i)),
        f"INSERT INTO {snap_u} VALUES ('6ccd780c-baba-1026-9564-5b8c656024db')",
        f"INSERT INTO {snap_i} VALUES ('::ffff:10.0.0.1')",
    )
    start = end_positions(mariadb)
    mariadb.execute(
        f"INSERT INTO {live_u} VALUES ('6ccd780c-baba-1026-9564-5b8c656024db')",
        f"INSERT INTO {live_i} VALUES ('::ffff:10.0.0.1')",
    )
    live, _ = run_source(
        mariadb, start, 2, format=fmt, snapshot="never", include=[f"types\\..*_key_live_{fmt}"]
    )
    snap, _ = run_source(
        mariadb,
        None,
        2,
        format=fmt,
        snapshot="initial_only",
        include=[f"types\\..*_key_snap_{fmt}"],
    )
    for records in (live, snap):
        keys = sorted(r.extensions["partitionkey"] for r in records)
        assert keys == ["6ccd780c-baba-1026-9564-5b8c656024db", "::ffff:10.0.0.1"]
        values = sorted(
            r.data["k"]
            if fmt == "row"
            else r.data["after"]["k"]
            if fmt == "debezium"
            else r.data["data"][0]["k"]
            for r in records
        )
        assert values == keys
