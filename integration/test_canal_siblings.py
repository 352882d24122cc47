"""Siblings of the faults of issue 8, inputs its own tests do not use: text in the
fixed/variable-length columns of the UTF-16/32 charsets, DDL that changes how stored bytes read
(charset conversion, reordered ENUM/SET members, a table dropped and made again) while the
source is behind, zero parts in dates on both decoders, JSON the server stored past its check,
XA across a binlog rotation, implicit keys chosen by the server's key order, and statements
naming several tables. Each against the private binlog MariaDB (CI runs this file on both
decoders)."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from canal_support import DECODER, end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]

FORMATS = ["canal", "debezium", "row"]


def row_of(record: Any, fmt: str) -> dict[str, Any]:
    d = record.data
    if fmt == "canal":
        return dict(d["data"][0])
    if fmt == "debezium":
        return dict(d["after"] if d["after"] is not None else d["before"])
    return dict(d)


def changes(records: list[Any]) -> list[Any]:
    return [r for r in records if r.type != "mysql.ddl"]


def both(
    server: MariaDB, table: str, start: dict[str, Any], count: int, **config: Any
) -> tuple[list[Any], list[Any]]:
    """``(snapshot, binlog)`` records of ``<table>_snap`` and ``<table>_live``."""
    snap, _ = run_source(
        server, None, count, snapshot="initial_only", include=[f"{table}_snap"], **config
    )
    live, _ = run_source(
        server, start, count, snapshot="never", include=[f"{table}_live"], **config
    )
    return changes(snap), changes(live)


# -- item 3: CHAR/VARCHAR (not only TEXT) in the UTF-16/32 charsets -----------------------------

WIDE = {
    "v16": ("VARCHAR(20) CHARACTER SET utf16", "😀a"),
    "v16le": ("VARCHAR(20) CHARACTER SET utf16le", "😀a"),
    "v32": ("VARCHAR(20) CHARACTER SET utf32", "😀a"),
    "vu": ("VARCHAR(20) CHARACTER SET ucs2", "éa"),
    "c16": ("CHAR(5) CHARACTER SET utf16", "😀a"),
    "c16le": ("CHAR(5) CHARACTER SET utf16le", "😀a"),
    "c32": ("CHAR(5) CHARACTER SET utf32", "😀a"),
    "cu": ("CHAR(5) CHARACTER SET ucs2", "éa"),
    "c8": ("CHAR(5) CHARACTER SET utf8mb4", "😀a"),
}


@pytest.fixture(scope="module")
def wide(mariadb: MariaDB) -> dict[str, Any]:
    columns = ", ".join(f"{c} {t}" for c, (t, _) in WIDE.items())
    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS sib",
        *(
            f"CREATE TABLE sib.wide_{w} (k VARCHAR(10) CHARACTER SET utf16 PRIMARY KEY, {columns})"
            for w in ("snap", "live")
        ),
    )
    values = ", ".join(f"'{v}'" for _, v in WIDE.values())
    insert = [
        f"INSERT INTO @t VALUES ('😀k', {values})",
        "INSERT INTO @t VALUES ('', " + ", ".join(["''"] * len(WIDE)) + ")",
        "INSERT INTO @t VALUES ('b ', " + ", ".join(["'b '"] * len(WIDE)) + ")",
    ]
    mariadb.execute(*[s.replace("@t", "sib.wide_snap") for s in insert])
    start = end_positions(mariadb)
    mariadb.execute(*[s.replace("@t", "sib.wide_live") for s in insert])
    return start


@pytest.mark.parametrize("fmt", FORMATS)
def test_utf16_and_utf32_char_and_varchar_columns_and_keys(
    mariadb: MariaDB, wide: dict[str, Any], fmt: str
) -> None:
    snap, live = both(mariadb, "sib\\.wide", wide, 3, format=fmt)
    # What the server prints (CHAR drops trailing spaces, VARCHAR keeps them).
    printed = {
        r[0]: r[1:]
        for r in mariadb.execute(
            f"SELECT k, {', '.join(WIDE)} FROM sib.wide_live",
        )
    }
    for records in (snap, live):
        got = {r.extensions["partitionkey"]: row_of(r, fmt) for r in records}
        assert sorted(got) == sorted(printed), got
        for key, row in got.items():
            assert row["k"] == key
            assert [row[c] for c in WIDE] == list(printed[key]), (fmt, key)
        assert [got["😀k"][c] for c in WIDE] == [v for _, v in WIDE.values()]


# -- item 4: metadata that changes how stored bytes read, changed while behind -----------------

BEHIND = [
    "CREATE TABLE sib.m (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET latin1, "
    "e ENUM('p','q','r'), s SET('x','y','z'))",
    "INSERT INTO sib.m VALUES (1, 'é', 'q', 'x,z')",
    # the stored bytes of `v` become UTF-16; ENUM/SET members change their numbers
    "ALTER TABLE sib.m MODIFY v VARCHAR(10) CHARACTER SET utf16, "
    "MODIFY e ENUM('r','q','p'), MODIFY s SET('z','y','x')",
    "INSERT INTO sib.m VALUES (2, 'é', 'q', 'x,z')",
    "UPDATE sib.m SET e = 'r' WHERE id = 1",
    # dropped and made again under the same name: other columns, another key
    "DROP TABLE sib.m",
    "CREATE TABLE sib.m (k VARCHAR(5) PRIMARY KEY, id INT, v TEXT CHARACTER SET utf32)",
    "INSERT INTO sib.m VALUES ('k3', 3, '😀')",
    "ALTER TABLE sib.m CHANGE COLUMN v w VARCHAR(4) CHARACTER SET utf8mb4",
    "INSERT INTO sib.m VALUES ('k4', 4, 'ü')",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_charset_enum_order_and_recreated_tables_changed_while_behind(
    mariadb: MariaDB, fmt: str
) -> None:
    mariadb.execute("CREATE DATABASE IF NOT EXISTS sib", "DROP TABLE IF EXISTS sib.m")
    start = end_positions(mariadb)
    mariadb.execute(*BEHIND)
    records, _ = run_source(
        mariadb, start, 6 + 5, format=fmt, snapshot="never", include=["sib\\.m"]
    )
    rows = changes(records)
    got = [(r.type, r.extensions["partitionkey"], row_of(r, fmt)) for r in rows]
    one = {"id": 1, "v": "é", "e": "q", "s": ["x", "z"]}
    two = {"id": 2, "v": "é", "e": "q", "s": ["z", "x"]}
    want = [
        ("mysql.insert", "1", one),
        ("mysql.insert", "2", two),
        ("mysql.update", "1", {**one, "s": ["z", "x"], "e": "r"}),
        ("mysql.insert", "k3", {"k": "k3", "id": 3, "v": "😀"}),
        ("mysql.insert", "k4", {"k": "k4", "id": 4, "w": "ü"}),
    ]
    if fmt == "canal":
        want = [
            (
                t,
                k,
                {
                    c: ",".join(v) if isinstance(v, list) else str(v) if v is not None else None
                    for c, v in row.items()
                },
            )
            for t, k, row in want
        ]
    assert got == want
    if fmt == "canal":
        assert [r.data["pkNames"] for r in rows] == [["id"]] * 3 + [["k"]] * 2
        assert rows[0].data["mysqlType"]["e"] == "enum('p','q','r')"
        assert rows[1].data["mysqlType"]["e"] == "enum('r','q','p')"
        assert rows[3].data["mysqlType"] == {"k": "varchar(5)", "id": "int(11)", "v": "text"}


# -- item 10: MariaDB's types in other keys -----------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_inet4_keys_and_uuid_in_a_composite_key(mariadb: MariaDB, fmt: str) -> None:
    db = f"sk_{fmt}"
    tables = [
        "CREATE TABLE @.i4_@w (k INET4 PRIMARY KEY, n INT)",
        "CREATE TABLE @.uc_@w (u UUID, n INT, PRIMARY KEY (u, n))",
    ]
    rows = [
        "INSERT INTO @.i4_@w VALUES ('10.0.0.1', 1), ('255.255.255.255', 2)",
        "INSERT INTO @.uc_@w VALUES ('01020304-0506-0708-090a-0b0c0d0e0f10', 7)",
    ]
    mariadb.execute(
        f"CREATE DATABASE {db}",
        *(s.replace("@w", w).replace("@.", f"{db}.") for s in tables for w in ("snap", "live")),
        *(s.replace("@w", "snap").replace("@.", f"{db}.") for s in rows),
    )
    start = end_positions(mariadb)
    mariadb.execute(*(s.replace("@w", "live").replace("@.", f"{db}.") for s in rows))
    snap, live = both(mariadb, f"{db}\\..*", start, 3, format=fmt)
    want = ["01020304-0506-0708-090a-0b0c0d0e0f10|7", "10.0.0.1", "255.255.255.255"]
    for records in (snap, live):
        assert sorted(r.extensions["partitionkey"] for r in records) == want


# -- item 11: zero parts of dates; both decoders agree with the server and the snapshot ---------

ZERO_PARTS = [
    ("d", "DATE", ["'2024-02-00'", "'2024-00-10'", "'0000-01-01'"]),
    ("dt", "DATETIME", ["'2024-00-00 10:11:12'", "'0000-00-00 00:00:01'", "'2024-02-00 00:00:00'"]),
    ("dt3", "DATETIME(3)", ["'2024-00-00 10:11:12.123'", "'0000-00-00 00:00:00.001'", "NULL"]),
    ("ts4", "TIMESTAMP(4) NULL", ["0", "'1970-01-01 00:00:01.0001'", "'2038-01-19 03:14:07.9999'"]),
    ("tm3", "TIME(3)", ["'-00:00:00.001'", "'00:00:00'", "'838:59:59.000'"]),
]


def test_dates_with_zero_parts_read_alike_from_both_decoders_and_the_snapshot(
    mariadb: MariaDB,
) -> None:
    columns = ", ".join(f"{c} {t}" for c, t, _ in ZERO_PARTS)
    insert = [
        "SET sql_mode = ''",
        "SET time_zone = '+00:00'",
        *(
            f"INSERT INTO @t VALUES ({i + 1}, {', '.join(v[i] for _, _, v in ZERO_PARTS)})"
            for i in range(3)
        ),
    ]
    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS sib",
        f"CREATE TABLE sib.zp_snap (id INT PRIMARY KEY, {columns})",
        f"CREATE TABLE sib.zp_live (id INT PRIMARY KEY, {columns})",
        *[s.replace("@t", "sib.zp_snap") for s in insert],
    )
    start = end_positions(mariadb)
    mariadb.execute(*[s.replace("@t", "sib.zp_live") for s in insert])
    conn = pymysql.connect(**mariadb.connect_args(), charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
            exprs = ", ".join(f"CAST({c} AS CHAR)" for c, _, _ in ZERO_PARTS)
            cur.execute(f"SELECT id, {exprs} FROM sib.zp_live ORDER BY id")
            printed = {r[0]: list(r[1:]) for r in cur.fetchall()}
    finally:
        conn.close()
    typed: dict[str, Any] = {}
    for fmt in ("canal", "row", "debezium"):
        seen = []
        for decoder in ("library", "fast"):
            snap, live = both(mariadb, "sib\\.zp", start, 3, format=fmt, decoder=decoder)
            by_id = {int(row_of(r, fmt)["id"]): row_of(r, fmt) for r in live}
            snap_by_id = {int(row_of(r, fmt)["id"]): row_of(r, fmt) for r in snap}
            assert snap_by_id == by_id, (fmt, decoder)
            seen.append(by_id)
            if fmt == "canal":
                got = {i: [row[c] for c, _, _ in ZERO_PARTS] for i, row in by_id.items()}
                assert got == printed, decoder
        assert seen[0] == seen[1], fmt
        typed[fmt] = seen[0]
    assert typed["debezium"] == typed["row"]
    assert [typed["row"][1][c] for c, _, _ in ZERO_PARTS] == [
        "2024-02-00",
        "2024-00-00 10:11:12",
        "2024-00-00 10:11:12.123",
        "0000-00-00 00:00:00.0000",
        "-00:00:00.001",
    ]


# -- item 2: JSON the server stored past its check never stops the source ----------------------

JSON_SIBLINGS = [
    (1, "[" * 300 + "]" * 300),  # deeper than JSON values are kept
    (2, '{"s": "\\\\ud800"}'),  # an unpaired surrogate by escape (SQL: backslash twice)
    (3, '{"e": 1e-400, "z": -0, "big": 1E+999999999}'),
    (4, '{"ok": 1}'),
]


@pytest.mark.parametrize("fmt", ["row", "debezium"])
def test_json_the_server_stored_past_its_check_goes_by_the_errors_policy(
    mariadb: MariaDB, fmt: str
) -> None:
    from decimal import Decimal

    from test_canal_types import _collect

    table = f"sib.js_{fmt}"
    mariadb.execute(
        "CREATE DATABASE IF NOT EXISTS sib", f"CREATE TABLE {table} (id INT PRIMARY KEY, j JSON)"
    )
    start = end_positions(mariadb)
    values = ", ".join(f"({i}, '{text}')" for i, text in JSON_SIBLINGS)
    mariadb.execute("SET check_constraint_checks = 0", f"INSERT INTO {table} VALUES {values}")
    records, failures = _collect(
        mariadb, start, format=fmt, snapshot="never", include=[table.replace(".", "\\.")]
    )
    rows = [r.data["after"] if fmt == "debezium" else r.data for r in records]
    got = {row["id"]: row["j"] for row in rows}
    assert got[4] == {"ok": 1}
    assert got[3] == {"e": Decimal("1e-400"), "z": 0, "big": Decimal("1E+999999999")}
    assert sorted(int(f.data["after"]["id"]) for f, _ in failures) == [1, 2]
    for _, error in failures:
        assert f"canal: {table} column 'j'" in str(error)
        assert "binlog binlog.0" in str(error)


# -- item 5: XA across a binlog rotation, restarted between the phases -------------------------


def test_xa_prepared_before_a_binlog_rotation_and_committed_after(mariadb: MariaDB) -> None:
    mariadb.execute("CREATE DATABASE xrot", "CREATE TABLE xrot.t (id INT PRIMARY KEY, v INT)")
    start = end_positions(mariadb)
    conn = pymysql.connect(**mariadb.connect_args())
    config: dict[str, Any] = {"format": "row", "snapshot": "never", "include": ["xrot\\..*"]}
    try:
        with conn.cursor() as cur:
            for sql in ("XA START 'rot'", "INSERT INTO xrot.t VALUES (1, 1)", "XA END 'rot'"):
                cur.execute(sql)
            cur.execute("XA PREPARE 'rot'")
        mariadb.execute("FLUSH BINARY LOGS", "INSERT INTO xrot.t VALUES (2, 2)")
        first, reached = run_source(mariadb, start, 1, **config)
        assert [r.extensions["partitionkey"] for r in first] == ["2"]
        mariadb.execute("FLUSH BINARY LOGS")
        with conn.cursor() as cur:
            cur.execute("XA COMMIT 'rot'")
    finally:
        conn.close()
    mariadb.execute("INSERT INTO xrot.t VALUES (3, 3)")
    rest, _ = run_source(mariadb, reached, 2, **config)
    assert [(r.type, r.extensions["partitionkey"]) for r in rest] == [
        ("mysql.insert", "1"),
        ("mysql.insert", "3"),
    ]
    whole, _ = run_source(mariadb, start, 3, **config)
    assert [r.id for r in whole] == [r.id for r in first + rest]


# -- item 6: the key the server clusters by, among several candidates ---------------------------


@pytest.mark.parametrize("mode", ["snapshot", "binlog"])
def test_the_implicit_key_is_the_index_the_server_clusters_by(mariadb: MariaDB, mode: str) -> None:
    db = f"ik_{mode}"
    mariadb.execute(
        f"CREATE DATABASE {db}",
        # two NOT NULL unique keys: the first defined (two columns) is the server's key
        f"CREATE TABLE {db}.t (a INT NOT NULL, c INT NOT NULL, d INT NOT NULL, "
        "UNIQUE KEY cd (c, d), UNIQUE KEY ua (a))",
        # a prefix key is no primary key: the full one defined after it is
        f"CREATE TABLE {db}.p (v VARCHAR(20) NOT NULL, w INT NOT NULL, "
        "UNIQUE KEY pv (v(3)), UNIQUE KEY uw (w))",
    )
    # The oracle: the index InnoDB clusters by (TYPE 3: clustered and unique).
    clustered = mariadb.execute(
        "SELECT t.NAME, i.NAME FROM information_schema.INNODB_SYS_INDEXES i JOIN "
        "information_schema.INNODB_SYS_TABLES t USING (TABLE_ID) "
        f"WHERE t.NAME LIKE '{db}/%' AND i.TYPE = 3 ORDER BY t.NAME"
    )
    assert clustered == [(f"{db}/p", "uw"), (f"{db}/t", "cd")]
    start = end_positions(mariadb)
    mariadb.execute(
        f"INSERT INTO {db}.t VALUES (1, 2, 3)", f"INSERT INTO {db}.p VALUES ('vvvv', 9)"
    )
    records, _ = run_source(
        mariadb,
        None if mode == "snapshot" else start,
        2,
        format="canal",
        snapshot="initial_only" if mode == "snapshot" else "never",
        include=[f"{db}\\..*"],
    )
    got = sorted(
        (r.subject, r.extensions["partitionkey"], tuple(r.data["pkNames"]))
        for r in changes(records)
    )
    assert got == [(f"{db}.p", "9", ("w",)), (f"{db}.t", "2|3", ("c", "d"))]


# -- item 9: statements naming several tables ---------------------------------------------------


def test_table_maintenance_statements_reach_every_table_they_name(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE mt",
        "CREATE TABLE mt.a (id INT PRIMARY KEY)",
        "CREATE TABLE mt.b (id INT PRIMARY KEY)",
    )
    start = end_positions(mariadb)
    mariadb.execute("ANALYZE TABLE a, b", "OPTIMIZE TABLE a, b", "TRUNCATE TABLE b", database="mt")
    records, _ = run_source(
        mariadb, start, 5, limit=10, format="canal", snapshot="never", include=["mt\\..*"]
    )
    got = [(r.subject, r.extensions.get("statement")) for r in records]
    assert got == [
        ("mt.a", "ANALYZE"),
        ("mt.b", "ANALYZE"),
        ("mt.a", "OPTIMIZE"),
        ("mt.b", "OPTIMIZE"),
        ("mt.b", "TRUNCATE"),
    ], DECODER


# -- item 9 (and 4): names written in double quotes under sql_mode=ANSI_QUOTES ------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_ansi_quotes_ddl_names_its_tables_and_json_columns(mariadb: MariaDB, fmt: str) -> None:
    """A session with ``sql_mode=ANSI_QUOTES`` writes ``"q t"`` for the table ``q t``: the DDL
    records name it (the same subject as its rows), and a JSON column added that way is JSON
    in the events written after it."""
    db = f"aq_{fmt}"
    mariadb.execute(f"CREATE DATABASE {db}")
    start = end_positions(mariadb)
    mariadb.execute(
        "SET sql_mode = 'ANSI_QUOTES'",
        'CREATE TABLE "q t" ("id" INT PRIMARY KEY, "v" VARCHAR(5) DEFAULT \'x\')',
        "INSERT INTO \"q t\" VALUES (1, 'a')",
        'ALTER TABLE "q t" ADD COLUMN "j" JSON',
        "INSERT INTO \"q t\" VALUES (2, 'b', '{\"n\": 1}')",
        'RENAME TABLE "q t" TO "r""s"',
        "INSERT INTO \"r\"\"s\" VALUES (3, 'c', '[1]')",
        database=db,
    )
    records, _ = run_source(mariadb, start, 7, format=fmt, snapshot="never", include=[f"{db}\\..*"])
    got = [(r.type, r.subject, r.extensions.get("statement")) for r in records]
    assert got == [
        ("mysql.ddl", f"{db}.q t", "CREATE TABLE"),
        ("mysql.insert", f"{db}.q t", None),
        ("mysql.ddl", f"{db}.q t", "ALTER TABLE"),
        ("mysql.insert", f"{db}.q t", None),
        ("mysql.ddl", f"{db}.q t", "RENAME TABLE"),
        ("mysql.ddl", f'{db}.r"s', "RENAME TABLE"),
        ("mysql.insert", f'{db}.r"s', None),
    ]
    rows = [row_of(r, fmt) for r in changes(records)]
    if fmt == "row":
        assert [row.get("j") for row in rows] == [None, {"n": 1}, [1]]
    if fmt == "canal":
        assert [r.data["mysqlType"].get("j") for r in changes(records)] == [None, "json", "json"]
