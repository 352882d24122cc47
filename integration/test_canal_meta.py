"""Keys, metadata, transactions and DDL exactly as the server had them (issue 8 items 4-9,
12): each case read in every format, from the snapshot and from the binlog where both apply,
against the private binlog MariaDB (CI runs this file on both decoders)."""

from __future__ import annotations

import logging
from typing import Any

import pymysql
import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

from meshconnect.errors import ConfigError

__all__ = ["mariadb"]

FORMATS = ["canal", "debezium", "row"]


def row_of(record: Any, fmt: str) -> dict[str, Any]:
    """The row image a change record carries, in any format (canal: its strings)."""
    d = record.data
    if fmt == "canal":
        return dict(d["data"][0])
    if fmt == "debezium":
        return dict(d["after"] if d["after"] is not None else d["before"])
    return dict(d)


def text(row: dict[str, Any]) -> dict[str, Any]:
    """A typed row as Canal writes it (ints and strings here)."""
    return {k: None if v is None else str(v) for k, v in row.items()}


def _data(record: Any) -> Any:
    """A record's data without the build time (``ts``, ``ts_ms``) and batch id."""
    data = dict(record.data)
    for volatile in ("ts", "ts_ms", "id"):
        data.pop(volatile, None)
    return data


def changes(records: list[Any]) -> list[Any]:
    return [r for r in records if r.type != "mysql.ddl"]


def ddl_table(record: Any, fmt: str) -> Any:
    return record.data["table"]


# -- item 7: composite keys ---------------------------------------------------------------------

KEYED = {"a\\|b|c": ("a|b", "c", 1), "a|b\\|c": ("a", "b|c", 2), "a\\\\|\\|c": ("a\\", "|c", 3)}


@pytest.fixture(scope="module")
def composite(mariadb: MariaDB) -> dict[str, Any]:
    mariadb.execute(
        "CREATE DATABASE k7",
        "CREATE TABLE k7.t (a VARCHAR(10), b VARCHAR(10), n INT, PRIMARY KEY (a, b))",
    )
    start = end_positions(mariadb)
    mariadb.execute("INSERT INTO k7.t VALUES ('a|b','c',1), ('a','b|c',2), ('a\\\\','|c',3)")
    return start


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["snapshot", "binlog"])
def test_composite_keys_of_distinct_rows_are_distinct(
    mariadb: MariaDB, composite: dict[str, Any], fmt: str, mode: str
) -> None:
    if mode == "snapshot":
        records, _ = run_source(
            mariadb, None, 3, format=fmt, snapshot="initial_only", include=["k7\\..*"]
        )
    else:
        records, _ = run_source(
            mariadb, composite, 3, format=fmt, snapshot="never", include=["k7\\..*"]
        )
    got = {r.extensions["partitionkey"]: row_of(r, fmt) for r in changes(records)}
    want = {k: {"a": a, "b": b, "n": n} for k, (a, b, n) in KEYED.items()}
    assert got == ({k: text(v) for k, v in want.items()} if fmt == "canal" else want)
    if fmt == "canal":
        assert {tuple(r.data["pkNames"]) for r in records} == {("a", "b")}


# -- item 6: the key the server uses as primary -------------------------------------------------


@pytest.fixture(scope="module")
def implicit(mariadb: MariaDB) -> dict[str, Any]:
    mariadb.execute(
        "CREATE DATABASE i6",
        # `b` is unique but nullable; `a` is the server's primary key (NOT NULL UNIQUE).
        "CREATE TABLE i6.t (a INT NOT NULL, b INT, UNIQUE KEY (b), UNIQUE KEY (a))",
        # Two NOT NULL columns of a unique key, after a nullable unique one.
        "CREATE TABLE i6.u (x INT, c VARCHAR(5) NOT NULL, d INT NOT NULL, "
        "UNIQUE KEY (x), UNIQUE KEY (c, d))",
    )
    start = end_positions(mariadb)
    mariadb.execute(
        "INSERT INTO i6.t VALUES (1, 10), (2, NULL)",
        "INSERT INTO i6.u VALUES (NULL, 'p|q', 7)",
    )
    return start


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["snapshot", "binlog"])
def test_a_not_null_unique_key_is_the_key_in_snapshot_and_stream(
    mariadb: MariaDB, implicit: dict[str, Any], fmt: str, mode: str
) -> None:
    config: dict[str, Any] = {"format": fmt, "include": ["i6\\..*"]}
    if mode == "snapshot":
        records, _ = run_source(mariadb, None, 3, snapshot="initial_only", **config)
    else:
        records, _ = run_source(mariadb, implicit, 3, snapshot="never", **config)
    got = sorted((r.subject, r.extensions["partitionkey"]) for r in changes(records))
    assert got == [("i6.t", "1"), ("i6.t", "2"), ("i6.u", "p\\|q|7")]
    if fmt == "canal":
        assert sorted((r.data["table"], tuple(r.data["pkNames"])) for r in records) == [
            ("t", ("a",)),
            ("t", ("a",)),
            ("u", ("c", "d")),
        ]


# -- items 4 and the DDL-while-behind acceptance: metadata at event time -----------------------

BEHIND = [
    "CREATE TABLE b4.t (id INT PRIMARY KEY, v VARCHAR(10), n INT)",
    "INSERT INTO b4.t VALUES (1, 'a', 1)",
    "ALTER TABLE b4.t ADD COLUMN z VARCHAR(5) NOT NULL DEFAULT 'zz' FIRST",
    "INSERT INTO b4.t VALUES ('z2', 2, 'b', 2)",
    "ALTER TABLE b4.t MODIFY v VARCHAR(30) CHARACTER SET latin1",
    "INSERT INTO b4.t VALUES ('z3', 3, 'c', 3)",
    "ALTER TABLE b4.t DROP COLUMN n",
    "INSERT INTO b4.t VALUES ('z4', 4, 'd')",
    "ALTER TABLE b4.t RENAME COLUMN v TO w",
    "INSERT INTO b4.t VALUES ('z5', 5, 'e')",
    "ALTER TABLE b4.t DROP PRIMARY KEY, ADD PRIMARY KEY (z)",
    "INSERT INTO b4.t VALUES ('z6', 6, 'f')",
    "ALTER TABLE b4.t MODIFY id BIGINT UNSIGNED NOT NULL, ADD COLUMN d DECIMAL(8,3)",
    "INSERT INTO b4.t VALUES ('z7', 7, 'g', 1.5)",
    "ALTER TABLE b4.t DROP PRIMARY KEY, ADD PRIMARY KEY (w, id)",
    "UPDATE b4.t SET d = 2.25 WHERE id = 7",
    "ALTER TABLE b4.t ADD COLUMN j JSON",
    "INSERT INTO b4.t VALUES ('z8', 8, 'h', NULL, '{\"k\": [1, 2]}')",
    "RENAME TABLE b4.t TO b4.t2",
    "INSERT INTO b4.t2 VALUES ('z9', 9, 'i', NULL, NULL)",
    "ALTER TABLE b4.t2 DROP COLUMN d, MODIFY w VARCHAR(2)",
    "DELETE FROM b4.t2 WHERE id = 9",
    "ALTER TABLE b4.t2 ADD COLUMN lt LONGTEXT",
    "INSERT INTO b4.t2 VALUES ('z10', 10, 'j', NULL, '{\"x\": 1}')",
    "ALTER TABLE b4.t2 MODIFY lt JSON",
    "INSERT INTO b4.t2 VALUES ('z11', 11, 'k', NULL, '{\"y\": 2}')",
    "ALTER TABLE b4.t2 DROP COLUMN j",
    "INSERT INTO b4.t2 VALUES ('z12', 12, 'l', '[3]')",
    "ALTER TABLE b4.t2 ADD COLUMN e ENUM('p','q''r') DEFAULT 'p', ADD COLUMN st SET('x','y')",
    "INSERT INTO b4.t2 VALUES ('z13', 13, 'm', NULL, 'q''r', 'x,y')",
    "ALTER TABLE b4.t2 MODIFY e ENUM('p','q''r','s'), MODIFY st SET('x','y','w')",
    "INSERT INTO b4.t2 VALUES ('z14', 14, 'n', NULL, 's', 'w')",
]


def _schema_now(conn: Any, table: str) -> tuple[list[str], dict[str, str], list[str]]:
    """Column names, COLUMN_TYPEs (MariaDB JSON as `json`) and the primary key, as the
    server shows them right now."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE, COLUMN_NAME IN (SELECT SUBSTRING_INDEX("
            "SUBSTRING_INDEX(CHECK_CLAUSE, '`', 2), '`', -1) FROM information_schema."
            "CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA='b4' AND TABLE_NAME=%s AND CHECK_CLAUSE "
            "LIKE 'json_valid(%%') FROM information_schema.COLUMNS WHERE TABLE_SCHEMA='b4' AND "
            "TABLE_NAME=%s ORDER BY ORDINAL_POSITION",
            (table, table),
        )
        cols = cur.fetchall()
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA="
            "'b4' AND TABLE_NAME=%s AND CONSTRAINT_NAME='PRIMARY' ORDER BY ORDINAL_POSITION",
            (table,),
        )
        pk = [r[0] for r in cur.fetchall()]
    names = [c[0] for c in cols]
    types = {c[0]: "json" if c[2] else c[1] for c in cols}
    return names, types, pk


@pytest.fixture(scope="module")
def behind(mariadb: MariaDB) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The script applied while no source runs, and what the server showed at each change."""
    mariadb.execute("CREATE DATABASE b4")
    start = end_positions(mariadb)
    seen: list[tuple[Any, ...]] = []
    conn = pymysql.connect(**mariadb.connect_args())
    try:
        for sql in BEHIND:
            with conn.cursor() as cur:
                cur.execute(sql)
            if sql.startswith(("INSERT", "UPDATE", "DELETE")):
                table = "t2" if "t2" in sql else "t"
                seen.append((f"b4.{table}", *_schema_now(conn, table)))
    finally:
        conn.close()
    return start, seen


@pytest.mark.parametrize("fmt", FORMATS)
def test_ddl_while_behind_every_event_has_the_columns_key_and_types_of_its_time(
    mariadb: MariaDB, behind: tuple[dict[str, Any], list[tuple[Any, ...]]], fmt: str
) -> None:
    start, seen = behind
    ddl_count = sum(1 for s in BEHIND if not s.startswith(("INSERT", "UPDATE", "DELETE"))) + 1
    records, _ = run_source(
        mariadb, start, len(seen) + ddl_count, format=fmt, snapshot="never", include=["b4\\..*"]
    )
    rows = changes(records)
    assert len(rows) == len(seen)
    # Stopped halfway and resumed: the same records (the history is in the position).
    half, reached = run_source(
        mariadb, start, len(records) // 2, format=fmt, snapshot="never", include=["b4\\..*"]
    )
    rest, _ = run_source(
        mariadb,
        reached,
        len(records) - len(half),
        format=fmt,
        snapshot="never",
        include=["b4\\..*"],
    )
    assert [(r.id, _data(r)) for r in half + rest] == [(r.id, _data(r)) for r in records]
    for record, (subject, names, types, pk) in zip(rows, seen, strict=True):
        row = row_of(record, fmt)
        key = [row[c] for c in pk]
        want_key = "|".join(str(v).replace("\\", "\\\\").replace("|", "\\|") for v in key)
        assert (record.subject, list(row), record.extensions["partitionkey"]) == (
            subject,
            names,
            want_key if len(key) > 1 else str(key[0]),
        )
        if fmt == "canal":
            assert record.data["pkNames"] == pk
            assert record.data["mysqlType"] == types
    # The same, spelled out for a few events.
    first, after_first, _, _, _, pk_changed, unsigned, composite, js, renamed, deleted = rows[:11]
    text_then, json_now, json_dropped, enum_then, enum_now = rows[11:]
    assert after_first.extensions["partitionkey"] == "2"
    assert pk_changed.extensions["partitionkey"] == "z6"
    assert composite.extensions["partitionkey"] == "g|7"
    assert renamed.subject == "b4.t2" and deleted.subject == "b4.t2"
    if fmt == "canal":
        assert first.data["mysqlType"] == {"id": "int(11)", "v": "varchar(10)", "n": "int(11)"}
        assert first.data["sqlType"] == {"id": 4, "v": 12, "n": 4}
        assert unsigned.data["mysqlType"]["id"] == "bigint(20) unsigned"
        assert unsigned.data["sqlType"]["id"] == 3
        assert unsigned.data["mysqlType"]["w"] == "varchar(30)"
        # written after `d` was dropped and `w` shrank (`z`, `id`, `j`: as the server has them)
        assert js.data["mysqlType"]["j"] == "json" and js.data["sqlType"]["j"] == 12
        assert text_then.data["mysqlType"]["lt"] == "longtext"
        assert (enum_then.data["mysqlType"]["e"], enum_then.data["mysqlType"]["st"]) == (
            "enum('p','q''r')",
            "set('x','y')",
        )
        assert enum_now.data["mysqlType"]["e"] == "enum('p','q''r','s')"
        assert deleted.data["mysqlType"] == {
            "z": "varchar(5)",
            "id": "bigint(20) unsigned",
            "w": "varchar(2)",
            "j": "json",
        }
    if fmt == "row":
        # MariaDB JSON (a LONGTEXT with a json_valid check) as it was: b4.t was renamed and
        # its `j` dropped since; `lt` was a LONGTEXT when {"x": 1} was written.
        assert js.data["j"] == {"k": [1, 2]}
        assert text_then.data["lt"] == '{"x": 1}' and json_now.data["lt"] == {"y": 2}
        assert json_dropped.data["lt"] == [3]
        assert unsigned.data == {"z": "z7", "id": 7, "w": "g", "d": "1.500"}


# -- item 5: XA ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def xa(mariadb: MariaDB) -> dict[str, Any]:
    mariadb.execute("CREATE DATABASE x5", "CREATE TABLE x5.t (id INT PRIMARY KEY, v INT)")
    start = end_positions(mariadb)
    mariadb.execute(
        "XA START 'x2'",
        "INSERT INTO x5.t VALUES (2, 2)",
        "XA END 'x2'",
        "XA PREPARE 'x2'",
        "XA ROLLBACK 'x2'",
        "XA START 'x3'",
        "INSERT INTO x5.t VALUES (3, 3)",
        "XA END 'x3'",
        "XA PREPARE 'x3'",
        "XA COMMIT 'x3'",
        "XA START 'x4'",
        "INSERT INTO x5.t VALUES (4, 4)",
        "XA END 'x4'",
        "XA COMMIT 'x4' ONE PHASE",
        "INSERT INTO x5.t VALUES (5, 5)",
    )
    return start


@pytest.mark.parametrize("fmt", FORMATS)
def test_rolled_back_xa_emits_nothing_committed_xa_its_rows(
    mariadb: MariaDB, xa: dict[str, Any], fmt: str
) -> None:
    records, _ = run_source(mariadb, xa, 3, format=fmt, snapshot="never", include=["x5\\..*"])
    assert [(r.type, r.extensions["partitionkey"]) for r in records] == [
        ("mysql.insert", "3"),
        ("mysql.insert", "4"),
        ("mysql.insert", "5"),
    ]
    assert [row_of(r, fmt) for r in records] == [
        {"id": v, "v": v} if fmt != "canal" else {"id": str(v), "v": str(v)} for v in (3, 4, 5)
    ]
    # Nothing more: no DDL record for XA ROLLBACK (or anything else).
    more, _ = run_source(mariadb, xa, 4, format=fmt, snapshot="never", limit=3)
    assert [r.type for r in more] == ["mysql.insert"] * 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_restart_between_prepare_and_commit_resumes_exactly(mariadb: MariaDB, fmt: str) -> None:
    db = f"xr_{fmt}"
    mariadb.execute(f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY, v INT)")
    start = end_positions(mariadb)
    one = pymysql.connect(**mariadb.connect_args())
    two = pymysql.connect(**mariadb.connect_args())
    try:
        for conn, xid, n in ((one, "r1", 10), (two, "r2", 11)):
            with conn.cursor() as cur:
                for sql in (
                    f"XA START '{xid}'",
                    f"INSERT INTO {db}.t VALUES ({n}, {n})",
                    f"XA END '{xid}'",
                    f"XA PREPARE '{xid}'",
                ):
                    cur.execute(sql)
        mariadb.execute(f"INSERT INTO {db}.t VALUES (12, 12)")
        config: dict[str, Any] = {"format": fmt, "snapshot": "never", "include": [f"{db}\\..*"]}
        first, reached = run_source(mariadb, start, 1, **config)
        assert [r.extensions["partitionkey"] for r in first] == ["12"]
        assert sorted(reached["binlog"]["xa"]) == ["X'7231',X'',1", "X'7232',X'',1"]
        with one.cursor() as cur:
            cur.execute("XA COMMIT 'r1'")
        with two.cursor() as cur:
            cur.execute("XA ROLLBACK 'r2'")
    finally:
        one.close()
        two.close()
    mariadb.execute(f"INSERT INTO {db}.t VALUES (13, 13)")
    rest, after = run_source(mariadb, reached, 2, **config)
    assert [(r.type, r.extensions["partitionkey"]) for r in rest] == [
        ("mysql.insert", "10"),
        ("mysql.insert", "13"),
    ]
    assert "xa" not in after["binlog"]
    again, _ = run_source(mariadb, start, 3, **config)
    assert [r.id for r in again] == [r.id for r in first + rest]


def test_a_large_prepared_xa_split_over_batches_is_emitted_once_at_commit(
    mariadb: MariaDB,
) -> None:
    """Batches of two events end inside the PREPARE group; a restart after three of them
    resumes at the group start and emits every row once, at the commit."""
    mariadb.execute("CREATE DATABASE xb", "CREATE TABLE xb.t (id INT PRIMARY KEY, v INT)")
    start = end_positions(mariadb)
    conn = pymysql.connect(**mariadb.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute("XA START 'big'")
            for i in range(1, 31, 3):
                cur.execute(f"INSERT INTO xb.t VALUES ({i}, 0), ({i + 1}, 0), ({i + 2}, 0)")
            cur.execute("XA END 'big'")
            cur.execute("XA PREPARE 'big'")
            cur.execute("XA COMMIT 'big'")
    finally:
        conn.close()
    mariadb.execute("INSERT INTO xb.t VALUES (100, 1)")
    config: dict[str, Any] = {
        "format": "row",
        "snapshot": "never",
        "include": ["xb\\..*"],
        "batch_events": 2,
    }
    first, reached = run_source(mariadb, start, 1, polls=3, **config)
    assert first == [] and reached["binlog"]["pos"] == start["binlog"]["pos"]
    rest, _ = run_source(mariadb, reached, 31, **config)
    assert [r.extensions["partitionkey"] for r in rest] == [str(i) for i in range(1, 31)] + ["100"]
    assert len({r.id for r in rest}) == 31


# -- item 8: privileges and an include matching nothing ----------------------------------------


def test_missing_select_is_refused_with_the_grant_to_run(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE USER 'cdc8'@'%'", "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'cdc8'@'%'"
    )
    with pytest.raises(ConfigError) as err:
        run_source(mariadb, None, 1, user="cdc8", snapshot="initial", limit=5)
    assert str(err.value) == (
        f"canal: user 'cdc8' lacks SELECT on {mariadb.host}:{mariadb.port} (snapshot: initial "
        "reads the tables): GRANT SELECT ON *.* TO 'cdc8'@'%'"
    )


def test_an_include_matching_no_table_warns_and_fails_initial_only(
    mariadb: MariaDB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "canal-test"):
        run_source(mariadb, None, 1, include=["nothing\\..*"], snapshot="initial", limit=1)
    where = f"{mariadb.host}:{mariadb.port}"
    text = f"canal: include ['nothing\\\\..*'] (exclude []) matches no table on {where}"
    assert f"{text} that user 'root' can see; tables created later are captured" in caplog.text
    with pytest.raises(ConfigError) as err:
        run_source(mariadb, None, 1, include=["nothing\\..*"], snapshot="initial_only")
    assert str(err.value) == (
        f"{text} that user 'root' can see: snapshot: initial_only would read nothing"
    )


# -- items 9 and 12: DDL identifiers, several tables, statements that name none ---------------

DDL = [
    "CREATE TABLE `we ird``t` (id INT PRIMARY KEY)",
    "ALTER TABLE `we ird``t` ADD COLUMN c INT",
    "INSERT INTO `we ird``t` VALUES (1, 2)",
    "CREATE TABLE a (id INT PRIMARY KEY)",
    "CREATE TABLE b (id INT PRIMARY KEY)",
    "RENAME TABLE a TO tmp, b TO a, tmp TO b",
    "DROP TABLE a, b",
    "CREATE TRIGGER trg BEFORE INSERT ON `we ird``t` FOR EACH ROW SET NEW.c = NEW.c + 1",
    "CREATE PROCEDURE p9() SELECT 1",
    "XA START 'q'",
    "INSERT INTO `we ird``t` VALUES (2, 2)",
    "XA END 'q'",
    "XA PREPARE 'q'",
    "XA ROLLBACK 'q'",
]


@pytest.fixture(scope="module")
def ddl(mariadb: MariaDB) -> dict[str, Any]:
    mariadb.execute("CREATE DATABASE d9")
    start = end_positions(mariadb)
    mariadb.execute(*DDL, database="d9")
    return start


@pytest.mark.parametrize("fmt", FORMATS)
def test_ddl_reaches_each_table_it_names_by_its_exact_name(
    mariadb: MariaDB, ddl: dict[str, Any], fmt: str
) -> None:
    records, _ = run_source(mariadb, ddl, 12, format=fmt, snapshot="never", include=["d9\\..*"])
    got = [
        (r.type, r.subject, r.extensions.get("statement"), ddl_table(r, fmt) or None)
        for r in records
        if r.type == "mysql.ddl"
    ]
    assert got == [
        ("mysql.ddl", "d9.we ird`t", "CREATE TABLE", "we ird`t"),
        ("mysql.ddl", "d9.we ird`t", "ALTER TABLE", "we ird`t"),
        ("mysql.ddl", "d9.a", "CREATE TABLE", "a"),
        ("mysql.ddl", "d9.b", "CREATE TABLE", "b"),
        ("mysql.ddl", "d9.a", "RENAME TABLE", "a"),
        ("mysql.ddl", "d9.tmp", "RENAME TABLE", "tmp"),
        ("mysql.ddl", "d9.b", "RENAME TABLE", "b"),
        ("mysql.ddl", "d9.a", "DROP TABLE", "a"),
        ("mysql.ddl", "d9.b", "DROP TABLE", "b"),
        ("mysql.ddl", "d9.we ird`t", "CREATE TRIGGER", "we ird`t"),
        ("mysql.ddl", "d9", "CREATE PROCEDURE", None),
    ]
    (row,) = changes(records)
    assert (row.subject, row.extensions["partitionkey"]) == ("d9.we ird`t", "1")
    kinds = [r.data["type"] for r in records if r.type == "mysql.ddl"]
    assert kinds == [
        *("CREATE", "ALTER", "CREATE", "CREATE", "RENAME", "RENAME", "RENAME"),
        *("ERASE", "ERASE", "QUERY", "QUERY"),
    ]


@pytest.mark.parametrize("mode", ["tables", "none"])
def test_statements_naming_no_table_are_left_out_by_the_ddl_setting(
    mariadb: MariaDB, ddl: dict[str, Any], mode: str
) -> None:
    want = 10 if mode == "tables" else 1
    records, _ = run_source(
        mariadb, ddl, want + 1, limit=4, format="row", snapshot="never", ddl=mode
    )
    statements = [r.extensions.get("statement") for r in records if r.type == "mysql.ddl"]
    if mode == "none":
        assert statements == []
    else:
        assert statements == [
            *("CREATE TABLE", "ALTER TABLE", "CREATE TABLE", "CREATE TABLE"),
            *("RENAME TABLE", "RENAME TABLE", "RENAME TABLE", "DROP TABLE", "DROP TABLE"),
            "CREATE TRIGGER",
        ]
    assert [r.type for r in changes(records)] == ["mysql.insert"]


# -- names and keys a CloudEvent cannot hold as they are ---------------------------------------


@pytest.mark.parametrize("snapshot", ["initial", "never"])
def test_a_tab_in_a_table_name_or_a_key_is_escaped_and_the_records_are_valid(
    mariadb: MariaDB, snapshot: str
) -> None:
    """MariaDB allows a tab in a quoted table name and any character in a VARCHAR key; a
    CloudEvents String allows neither control characters nor noncharacters. The subject and
    the partitionkey spell them ``\\u0009`` (backslashes doubled first), so every record is a
    valid CloudEvent and distinct keys stay distinct."""
    from meshconnect import eventrules

    mariadb.execute("DROP DATABASE IF EXISTS tb", "CREATE DATABASE tb")
    mariadb.execute(
        "CREATE TABLE `t\tab` (k VARCHAR(20) PRIMARY KEY, v INT)",
        "INSERT INTO `t\tab` VALUES ('a\tb', 1), ('a\\\\u0009b', 2), ('x\ny', 3)",
        database="tb",
    )
    start = None if snapshot == "initial" else end_positions(mariadb)
    if start is not None:
        mariadb.execute("INSERT INTO `t\tab` VALUES ('a\tc', 4), ('\\\\', 5)", database="tb")
    want = 3 if snapshot == "initial" else 2
    records, _ = run_source(
        mariadb, start, want, format="row", snapshot=snapshot, include=["tb\\..*"], ddl="none"
    )
    rows = changes(records)
    assert {r.subject for r in rows} == {"tb.t\\u0009ab"}
    keys = [r.extensions["partitionkey"] for r in rows]
    if snapshot == "initial":
        assert sorted(keys) == sorted(["a\\u0009b", "a\\\\u0009b", "x\\u000ay"])
    else:
        assert keys == ["a\\u0009c", "\\\\"]
    for r in rows:
        assert eventrules.attribute_problems(r) == {}, r
