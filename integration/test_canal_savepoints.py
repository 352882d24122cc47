"""Savepoints in the binlog (found trying the canal connector from its docs): a transaction that
also changed a non-transactional table (MyISAM, Aria) reaches the binlog with its
``SAVEPOINT`` and ``ROLLBACK TO`` statements *and* the row changes the rollback undid. Those
changes must not become records, the changes of the non-transactional table (which the server
did not undo) must, and a restart in the middle of such a transaction must resume exactly.
Against the private binlog MariaDB (CI runs this file on both decoders)."""

from __future__ import annotations

from typing import Any

import pymysql
import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]

FORMATS = ["canal", "debezium", "row"]


def keyed_state(records: list[Any]) -> dict[tuple[str, str], Any]:
    """(subject, key) -> the row a consumer that upserts and deletes by key ends with
    (``row`` format)."""
    state: dict[tuple[str, str], Any] = {}
    for r in records:
        if r.type == "mysql.ddl":
            continue
        key = (r.subject, r.extensions["partitionkey"])
        if r.type == "mysql.delete":
            state.pop(key, None)
        else:
            state[key] = r.data
    return state


def server_state(server: MariaDB, db: str) -> dict[tuple[str, str], Any]:
    state: dict[tuple[str, str], Any] = {}
    for table in ("i", "m", "a"):
        for id_, v in server.execute(f"SELECT id, v FROM {db}.{table}"):
            state[(f"{db}.{table}", str(id_))] = {"id": id_, "v": v}
    return state


def _tables(server: MariaDB, db: str) -> None:
    server.execute(
        f"CREATE DATABASE {db}",
        f"CREATE TABLE {db}.i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        f"CREATE TABLE {db}.m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM",
        f"CREATE TABLE {db}.a (id INT PRIMARY KEY, v INT) ENGINE=Aria",
    )


def _savepoint_body(db: str) -> list[str]:
    """Nested, quoted, re-set savepoints and rollbacks to them, with MyISAM and Aria
    changes in between (so the server writes the rollbacks to the binlog)."""
    return [
        f"INSERT INTO {db}.i VALUES (1, 1)",
        "SAVEPOINT `s 1`",
        f"INSERT INTO {db}.i VALUES (2, 2)",
        f"INSERT INTO {db}.m VALUES (2, 2)",
        "SAVEPOINT s2",
        f"UPDATE {db}.i SET v = 10 WHERE id = 1",
        f"INSERT INTO {db}.a VALUES (3, 3)",
        "ROLLBACK TO SAVEPOINT `S 1`",  # names are case-insensitive; drops 2, 10 and s2
        f"INSERT INTO {db}.i VALUES (4, 4)",
        "SAVEPOINT s3",
        f"DELETE FROM {db}.i WHERE id = 1",
        "SAVEPOINT s3",  # set again: moves past the delete
        f"INSERT INTO {db}.i VALUES (5, 5)",
        f"INSERT INTO {db}.m VALUES (5, 5)",
        "ROLLBACK WORK TO s3",
        f"INSERT INTO {db}.i VALUES (6, 6), (7, 7)",
        "ROLLBACK TO `s 1`",  # again: the MyISAM/Aria changes stay, 4 and 6, 7 go
        f"INSERT INTO {db}.i VALUES (8, 8)",
    ]


@pytest.fixture(scope="module")
def rolled(mariadb: MariaDB) -> dict[str, Any]:
    _tables(mariadb, "sp1")
    start = end_positions(mariadb)
    conn = pymysql.connect(**mariadb.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            for sql in _savepoint_body("sp1"):
                cur.execute(sql)
            cur.execute("COMMIT")
    finally:
        conn.close()
    mariadb.execute("INSERT INTO sp1.i VALUES (100, 100)")
    return start


def test_the_binlog_holds_the_rolled_back_changes(mariadb: MariaDB, rolled: dict[str, Any]) -> None:
    """The premise: the server wrote the undone changes and ROLLBACK TO to the binlog."""
    file = rolled["binlog"]["file"]
    events = mariadb.execute(f"SHOW BINLOG EVENTS IN '{file}' FROM {rolled['binlog']['pos']}")
    assert any(str(e[5]).startswith("ROLLBACK TO") for e in events)


def test_rolled_back_changes_are_not_records(mariadb: MariaDB, rolled: dict[str, Any]) -> None:
    records, _ = run_source(
        mariadb, rolled, 6, format="row", snapshot="never", include=["sp1\\..*"]
    )
    assert keyed_state(records) == server_state(mariadb, "sp1")
    keys = [(r.subject, r.extensions["partitionkey"]) for r in records]
    # every change the server kept, once each, in binlog order: MyISAM/Aria rows were written
    # when they happened, the InnoDB ones at the commit
    assert keys == [
        ("sp1.m", "2"),
        ("sp1.a", "3"),
        ("sp1.m", "5"),
        ("sp1.i", "1"),
        ("sp1.i", "8"),
        ("sp1.i", "100"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_leaves_out_the_undone_changes(
    mariadb: MariaDB, rolled: dict[str, Any], fmt: str
) -> None:
    records, _ = run_source(mariadb, rolled, 3, format=fmt, snapshot="never", include=["sp1\\.i"])
    assert [r.extensions["partitionkey"] for r in records] == ["1", "8", "100"]
    assert {r.type for r in records} == {"mysql.insert"}


def test_a_restart_inside_a_transaction_with_savepoints_resumes_exactly(
    mariadb: MariaDB, rolled: dict[str, Any]
) -> None:
    """Batches of two events end inside the transaction; a restart from each position handed
    out delivers the rest once (the position never points after ROLLBACK TO, into the
    middle of the transaction, where no table map precedes the rows)."""
    config: dict[str, Any] = {
        "format": "row",
        "snapshot": "never",
        "include": ["sp1\\.i"],
        "batch_events": 2,
        "heartbeat_interval": 0.001,  # every poll hands out its position
    }
    whole, _ = run_source(mariadb, rolled, 3, **config)
    assert [r.extensions["partitionkey"] for r in whole] == ["1", "8", "100"]
    inside = 0
    for polls in range(1, 16):
        first, reached = run_source(mariadb, rolled, 3, polls=polls, **config)
        inside += reached["binlog"]["events"] > 0
        rest, _ = run_source(mariadb, reached, 3 - len(first), **config)
        assert [r.id for r in first + rest] == [r.id for r in whole], polls
    assert inside  # some restarts were inside the transaction


@pytest.mark.parametrize("restart", [False, True])
def test_savepoints_in_a_prepared_xa_transaction(mariadb: MariaDB, restart: bool) -> None:
    db = f"sp_xa{int(restart)}"
    _tables(mariadb, db)
    start = end_positions(mariadb)
    conn = pymysql.connect(**mariadb.connect_args())
    config: dict[str, Any] = {"format": "row", "snapshot": "never", "include": [f"{db}\\.i"]}
    try:
        with conn.cursor() as cur:
            cur.execute("XA START 'sp'")
            for sql in _savepoint_body(db):
                cur.execute(sql)
            cur.execute("XA END 'sp'")
            cur.execute("XA PREPARE 'sp'")
        if restart:  # the PREPARE group is read again at the start
            mariadb.execute(f"INSERT INTO {db}.i VALUES (99, 99)")
            first, start = run_source(mariadb, start, 1, **config)
            assert [r.extensions["partitionkey"] for r in first] == ["99"]
        with conn.cursor() as cur:
            cur.execute("XA COMMIT 'sp'")
    finally:
        conn.close()
    records, _ = run_source(mariadb, start, 2, **config)
    assert [r.extensions["partitionkey"] for r in records] == ["1", "8"]


def test_an_innodb_transaction_with_a_savepoint_streams_instead_of_being_held(
    mariadb: MariaDB,
) -> None:
    """ORMs set a savepoint for every nested transaction block (Django's atomic()), and the
    server logs it for InnoDB-only transactions too, where a ROLLBACK TO leaves nothing it
    undid in the binlog: holding such a transaction until its commit kept a bulk change in a
    nested block in memory whole. The GTID event says which groups are transactional
    (FL_TRANSACTIONAL); those stream in batches as any other transaction."""
    mariadb.execute(
        "CREATE DATABASE sp3", "CREATE TABLE sp3.i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"
    )
    start = end_positions(mariadb)
    conn = pymysql.connect(**mariadb.connect_args())
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("INSERT INTO sp3.i VALUES (0, 0)")
            cur.execute("SAVEPOINT nested")
            cur.execute("INSERT INTO sp3.i VALUES (-1, -1)")
            cur.execute("ROLLBACK TO SAVEPOINT nested")  # InnoDB: cut out of the binlog
            cur.execute("SAVEPOINT nested")
            for n in range(1, 61):
                cur.execute(f"INSERT INTO sp3.i VALUES ({n}, {n})")
            cur.execute("COMMIT")
    finally:
        conn.close()
    config: dict[str, Any] = {
        "format": "row",
        "snapshot": "never",
        "include": ["sp3\\.i"],
        "batch_events": 5,
    }
    first, _ = run_source(mariadb, start, 5, **config)
    assert 5 <= len(first) < 61, "the transaction was held back to its commit"
    records, _ = run_source(mariadb, start, 61, **config)
    assert [int(r.extensions["partitionkey"]) for r in records] == list(range(61))
    # a restart from a position inside it (after the SAVEPOINTs) delivers the rest once
    config["heartbeat_interval"] = 0.001  # every poll hands out its position
    for polls in (2, 5, 9):
        part, reached = run_source(mariadb, start, 61, polls=polls, **config)
        assert reached["binlog"]["events"] > 0, polls  # inside the transaction
        rest, _ = run_source(mariadb, reached, 61 - len(part), **config)
        assert [r.id for r in part + rest] == [r.id for r in records], polls
