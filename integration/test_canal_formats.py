"""Row changes and DDL across three tables, read from the binlog in all three formats with
exact values: multi-row inserts, updates (one with a primary-key change), deletes, a
10,000-row transaction, ADD COLUMN and RENAME TABLE; a FlatMessage compared field by field
with Canal's documented one; resuming in the middle of the 10,000-row transaction, also after
a run that stopped before it read back to its resume point."""

from __future__ import annotations

from typing import Any

import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]

BULK = 10_000
# Records: 2 inserts, 1 update, 1 PK change (delete + insert in row/debezium), 1 delete,
# 1 insert, BULK inserts, 1 ALTER, 1 insert, 1 RENAME (a record for each name), 1 insert.
SQL = [
    "INSERT INTO fmt.a VALUES (1, 'x', 1.50), (2, 'y', 2.00)",
    "UPDATE fmt.a SET name = 'z' WHERE id = 1",
    "UPDATE fmt.a SET id = 3 WHERE id = 2",
    "DELETE FROM fmt.a WHERE id = 1",
    "INSERT INTO fmt.b VALUES ('k1', 4294967295)",
    "BEGIN",
    "INSERT INTO fmt.c SELECT seq, JSON_OBJECT('n', seq) FROM seq_1_to_10000",
    "COMMIT",
    "ALTER TABLE fmt.b ADD COLUMN extra INT DEFAULT 7",
    "INSERT INTO fmt.b VALUES ('k2', 5, 8)",
    "RENAME TABLE fmt.d TO fmt.d2",
    "INSERT INTO fmt.d2 VALUES (7, 'r')",
]


@pytest.fixture(scope="module")
def start(mariadb: MariaDB) -> dict[str, Any]:
    mariadb.execute(
        "CREATE DATABASE fmt",
        "CREATE TABLE fmt.a (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2))",
        "CREATE TABLE fmt.b (k VARCHAR(10) PRIMARY KEY, n INT UNSIGNED)",
        "CREATE TABLE fmt.c (id BIGINT PRIMARY KEY, j JSON)",
        "CREATE TABLE fmt.d (id INT PRIMARY KEY, name VARCHAR(5))",
    )
    position = end_positions(mariadb)
    mariadb.execute(*SQL, database="fmt")
    return position


def by_type(records: list[Any], kind: str) -> list[Any]:
    return [r for r in records if r.type == kind]


def test_row_format_has_every_change_with_exact_values(
    mariadb: MariaDB, start: dict[str, Any]
) -> None:
    records, _ = run_source(mariadb, start, 7 + BULK + 5, format="row", snapshot="never")
    head = [(r.type, r.subject, r.extensions.get("partitionkey"), r.data) for r in records[:7]]
    assert head == [
        ("mysql.insert", "fmt.a", "1", {"id": 1, "name": "x", "price": "1.50"}),
        ("mysql.insert", "fmt.a", "2", {"id": 2, "name": "y", "price": "2.00"}),
        ("mysql.update", "fmt.a", "1", {"id": 1, "name": "z", "price": "1.50"}),
        ("mysql.delete", "fmt.a", "2", {"id": 2, "name": "y", "price": "2.00"}),
        ("mysql.insert", "fmt.a", "3", {"id": 3, "name": "y", "price": "2.00"}),
        ("mysql.delete", "fmt.a", "1", {"id": 1, "name": "z", "price": "1.50"}),
        ("mysql.insert", "fmt.b", "k1", {"k": "k1", "n": 4294967295}),
    ]
    bulk = records[7 : 7 + BULK]
    assert [(r.type, r.subject, r.data) for r in bulk] == [
        ("mysql.insert", "fmt.c", {"id": i, "j": {"n": i}}) for i in range(1, BULK + 1)
    ]
    assert len({r.extensions["txid"] for r in bulk}) == 1
    tail = [(r.type, r.subject, r.data) for r in records[7 + BULK :]]
    assert tail == [
        (
            "mysql.ddl",
            "fmt.b",
            {
                "database": "fmt",
                "table": "b",
                "type": "ALTER",
                "sql": "ALTER TABLE fmt.b ADD COLUMN extra INT DEFAULT 7",
            },
        ),
        ("mysql.insert", "fmt.b", {"k": "k2", "n": 5, "extra": 8}),
        (
            "mysql.ddl",
            "fmt.d",
            {"database": "fmt", "table": "d", "type": "RENAME", "sql": SQL[10]},
        ),
        (
            "mysql.ddl",
            "fmt.d2",
            {"database": "fmt", "table": "d2", "type": "RENAME", "sql": SQL[10]},
        ),
        ("mysql.insert", "fmt.d2", {"id": 7, "name": "r"}),
    ]
    # Record ids are unique and say where the change is in the binlog.
    assert len({r.id for r in records}) == len(records)
    assert all(r.id.startswith(r.extensions["binlogfile"] + ":") for r in records)


def test_debezium_format_envelopes(mariadb: MariaDB, start: dict[str, Any]) -> None:
    records, _ = run_source(mariadb, start, 7, format="debezium", snapshot="never")
    ops = [(r.data["op"], r.data["before"], r.data["after"]) for r in records[:7]]
    assert ops == [
        ("c", None, {"id": 1, "name": "x", "price": "1.50"}),
        ("c", None, {"id": 2, "name": "y", "price": "2.00"}),
        ("u", {"id": 1, "name": "x", "price": "1.50"}, {"id": 1, "name": "z", "price": "1.50"}),
        ("d", {"id": 2, "name": "y", "price": "2.00"}, None),
        ("c", None, {"id": 3, "name": "y", "price": "2.00"}),
        ("d", {"id": 1, "name": "z", "price": "1.50"}, None),
        ("c", None, {"k": "k1", "n": 4294967295}),
    ]
    source = records[2].data["source"]
    assert source["db"] == "fmt" and source["table"] == "a"
    assert source["connector"] == "mariadb" and source["snapshot"] == "false"
    assert source["server_id"] == 1 and source["row"] == 0
    assert source["file"] == records[2].extensions["binlogfile"]
    assert source["pos"] == records[2].extensions["binlogpos"]
    assert source["gtid"] == records[2].extensions["gtid"]
    assert source["ts_ms"] % 1000 == 0 and isinstance(records[2].data["ts_ms"], int)


def test_canal_format_flat_messages(mariadb: MariaDB, start: dict[str, Any]) -> None:
    records, _ = run_source(mariadb, start, 6 + BULK + 5, format="canal", snapshot="never")
    update = records[2].data
    assert update["data"] == [{"id": "1", "name": "z", "price": "1.50"}]
    assert update["old"] == [{"name": "x"}]
    assert update["type"] == "UPDATE" and update["pkNames"] == ["id"]
    assert update["mysqlType"] == {"id": "int(11)", "name": "varchar(20)", "price": "decimal(10,2)"}
    assert update["sqlType"] == {"id": 4, "name": 12, "price": 3}
    # The primary-key change is one UPDATE, as Canal sends it; `old` holds the old key.
    pk_change = records[3].data
    assert (pk_change["type"], pk_change["data"], pk_change["old"]) == (
        "UPDATE",
        [{"id": "3", "name": "y", "price": "2.00"}],
        [{"id": "2"}],
    )
    delete = records[4].data
    assert (delete["type"], delete["data"], delete["old"]) == (
        "DELETE",
        [{"id": "1", "name": "z", "price": "1.50"}],
        None,
    )
    unsigned = records[5].data
    assert unsigned["data"] == [{"k": "k1", "n": "4294967295"}]
    assert unsigned["mysqlType"]["n"] == "int(10) unsigned" and unsigned["sqlType"]["n"] == -5
    bulk = records[6 : 6 + BULK]
    assert [r.data["data"] for r in bulk] == [
        [{"id": str(i), "j": f'{{"n": {i}}}'}] for i in range(1, BULK + 1)
    ]
    alter, after_alter, rename, rename2, last = (r.data for r in records[6 + BULK : 11 + BULK])
    assert (alter["isDdl"], alter["type"], alter["sql"], alter["table"]) == (
        True,
        "ALTER",
        SQL[8],
        "b",
    )
    assert alter["data"] is None and alter["pkNames"] is None and alter["mysqlType"] is None
    assert after_alter["data"] == [{"k": "k2", "n": "5", "extra": "8"}]
    assert after_alter["mysqlType"]["extra"] == "int(11)"
    assert (rename["type"], rename["table"]) == ("RENAME", "d")
    assert (rename2["type"], rename2["table"]) == ("RENAME", "d2")
    assert (last["table"], last["data"]) == ("d2", [{"id": "7", "name": "r"}])


def test_flat_message_matches_canals_documented_update(mariadb: MariaDB) -> None:
    """The UPDATE of three rows quoted in the CDC reference (a real Canal RabbitMQ payload),
    rebuilt here: every field, its type, and the values that do not depend on time."""
    mariadb.execute(
        "CREATE DATABASE template",
        "CREATE TABLE template.user_info (id INT(11) PRIMARY KEY, nickname VARCHAR(32), "
        "avator VARCHAR(32), remark VARCHAR(255), create_time DATETIME, update_time DATETIME)",
        "INSERT INTO template.user_info VALUES "
        "(1, 'jiang1', NULL, NULL, '2022-08-14 21:39:28', '2022-09-09 22:38:18'),"
        "(2, '221111', NULL, NULL, '2022-09-09 22:22:30', '2022-09-09 22:43:53'),"
        "(3, '22211', NULL, NULL, '2022-09-09 22:38:21', '2022-09-10 21:28:09')",
    )
    start = end_positions(mariadb)
    mariadb.execute(
        "UPDATE template.user_info SET remark = '1111', update_time = '2022-09-10 22:12:45'"
    )
    records, _ = run_source(mariadb, start, 3, format="canal", snapshot="never")
    documented = {
        "data": [
            {
                "id": "1",
                "nickname": "jiang1",
                "avator": None,
                "remark": "1111",
                "create_time": "2022-08-14 21:39:28",
                "update_time": "2022-09-10 22:12:45",
            },
            {
                "id": "2",
                "nickname": "221111",
                "avator": None,
                "remark": "1111",
                "create_time": "2022-09-09 22:22:30",
                "update_time": "2022-09-10 22:12:45",
            },
            {
                "id": "3",
                "nickname": "22211",
                "avator": None,
                "remark": "1111",
                "create_time": "2022-09-09 22:38:21",
                "update_time": "2022-09-10 22:12:45",
            },
        ],
        "database": "template",
        "es": 1662819165000,
        "id": 9,
        "isDdl": False,
        "mysqlType": {
            "id": "int(11)",
            "nickname": "varchar(32)",
            "avator": "varchar(32)",
            "remark": "varchar(255)",
            "create_time": "datetime",
            "update_time": "datetime",
        },
        "old": [
            {"remark": None, "update_time": "2022-09-09 22:38:18"},
            {"remark": None, "update_time": "2022-09-09 22:43:53"},
            {"remark": None, "update_time": "2022-09-10 21:28:09"},
        ],
        "pkNames": ["id"],
        "sql": "",
        "sqlType": {
            "id": 4,
            "nickname": 12,
            "avator": 12,
            "remark": 12,
            "create_time": 93,
            "update_time": 93,
        },
        "table": "user_info",
        "ts": 1662819165548,
        "type": "UPDATE",
    }
    assert len(records) == 3  # one FlatMessage per row (Canal: one per event)
    for i, record in enumerate(records):
        got = record.data
        assert set(got) == set(documented) | {"gtid"}
        for field, value in documented.items():
            if field in ("data", "old"):
                assert got[field] == [value[i]], field
            elif field in ("es", "ts", "id"):
                assert type(got[field]) is int, field
            else:
                assert got[field] == value, field
        assert got["es"] % 1000 == 0 and got["ts"] >= got["es"]
        assert got["gtid"] == record.extensions["gtid"]
        assert len({r.data["id"] for r in records}) == 1  # one batch, one id


def test_resume_in_the_middle_of_a_10000_row_transaction(mariadb: MariaDB) -> None:
    mariadb.execute("CREATE DATABASE mid", "CREATE TABLE mid.t (id INT PRIMARY KEY, v VARCHAR(10))")
    start = end_positions(mariadb)
    mariadb.execute(
        "BEGIN",
        "INSERT INTO mid.t SELECT seq, 'a' FROM seq_1_to_5000",
        "INSERT INTO mid.t SELECT seq, 'b' FROM seq_5001_to_10000",
        "COMMIT",
        "INSERT INTO mid.t VALUES (10001, 'after')",
        database="mid",
    )
    config = {"format": "row", "snapshot": "never", "include": ["mid\\..*"], "batch_events": 7}
    # Stop at the first poll that brings the total to 3,000 rows or more: 7 events of ~1,000
    # rows at most per poll, so well inside the 10,000-row transaction whatever the decoder.
    first, reached = run_source(mariadb, start, 3000, **config)
    position = reached["binlog"]
    # The committed position is the transaction start with events to skip.
    assert 0 < len(first) < BULK and position["events"] > 0
    assert (position["file"], position["pos"]) != (start["binlog"]["file"], 0)
    rest, _ = run_source(mariadb, reached, BULK + 1 - len(first), **config)
    ids = [r.data["id"] for r in first + rest]
    assert ids == list(range(1, BULK + 2))


def test_a_run_killed_before_it_reads_back_to_its_resume_point_delivers_nothing_twice(
    mariadb: MariaDB,
) -> None:
    """A run that resumes inside a transaction reads the transaction's delivered events
    again (to skip them) before the new ones: a position it hands out meanwhile (a poll with
    no records, here the only one before the run ends as a SIGKILL would end it) is still
    the resume point, never the transaction's start, so the next run repeats no row."""
    mariadb.execute("CREATE DATABASE mid2", "CREATE TABLE mid2.t (id INT PRIMARY KEY, v INT)")
    start = end_positions(mariadb)
    mariadb.execute(
        "BEGIN",
        *(f"INSERT INTO mid2.t SELECT seq, {n} FROM seq_{n}001_to_{n + 1}000" for n in range(10)),
        "COMMIT",
        database="mid2",
    )
    config = {"format": "row", "snapshot": "never", "include": ["mid2\\..*"]}
    # Ten 1,000-row statements, a few events each: 3,000 rows are several events in.
    first, reached = run_source(mariadb, start, 3000, batch_events=3, **config)
    assert 0 < len(first) < BULK and reached["binlog"]["events"] >= 3
    # A run whose one poll reads at most two events: all of them were delivered already.
    again, reached = run_source(mariadb, reached, 1, polls=1, batch_events=2, **config)
    assert again == []
    rest, _ = run_source(mariadb, reached, BULK - len(first), **config)
    ids = [r.data["id"] for r in first + rest]
    assert ids == list(range(1, BULK + 1))
