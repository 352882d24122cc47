"""MariaDB → PostgreSQL replication (docs/guides/mysql-to-postgresql.md) on the edges a real
schema has, found by the cdctrial: a table without a primary key among keyed ones, and the
forms of ``ALTER TABLE … ADD`` that ``ddl: apply`` carries over (``ADD COLUMN (a T, b T)``,
unsigned types). Each runs the guide's pipeline (canal format, auto_create, exactly_once,
tolerance all) in a worker until a last table arrives, then compares."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from canal_support import DECODER, mariadb
from jdbc_support import pg_replica
from mariadb import MariaDB

from conftest import meshconnect, run_cli

__all__ = ["mariadb"]


def _config(tmp_path: Path, server: MariaDB, db: str, url: str, server_id: int) -> Path:
    config = tmp_path / "replicate.yaml"
    pipeline = {
        "name": "replicate",
        "source": {
            "connector": "canal",
            "config": {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "server_id": server_id,
                "decoder": DECODER,
                "heartbeat_interval": 1,
                "include": [f"{db}\\..*"],
                "format": "canal",
                "snapshot": "initial",
                "ddl": "tables",
            },
        },
        "topic": "cdc",
        "sinks": [
            {
                "name": "pg",
                "connector": "jdbc",
                "config": {"url": url, "auto_create": True, "ddl": "apply", "exactly_once": True},
                "errors": {"tolerance": "all", "dead_letter_topic": "dlq"},
            }
        ],
    }
    config.write_text(json.dumps({"pipelines": [pipeline]}))
    return config


def _pg_has(dsn: str, table: str) -> bool:
    try:
        with psycopg.connect(dsn) as conn:
            return bool(conn.execute("SELECT to_regclass(%s)", (f'"{table}"',)).fetchone()[0])
    except psycopg.Error:
        return False


def _replicate(
    tmp_path: Path, config: Path, dsn: str, server: MariaDB, db: str, first: str, *changes: str
) -> Path:
    """Run the worker until table ``first`` is in PostgreSQL, then write ``changes`` and a
    last table ``zz_end``, wait for that one too and stop the worker."""
    state, log_path = tmp_path / "state", tmp_path / "worker.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(meshconnect(state, "run", str(config)), stdout=log, stderr=log)
    try:
        for table in (first, "zz_end"):
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and proc.poll() is None:
                if _pg_has(dsn, table):
                    break
                time.sleep(0.3)
            assert _pg_has(dsn, table), log_path.read_text()[-3000:]
            if table == first:
                server.execute(
                    *changes,
                    "CREATE TABLE zz_end (id INT PRIMARY KEY)",
                    "INSERT INTO zz_end VALUES (1)",
                    database=db,
                )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return state


def _rows_my(server: MariaDB, db: str, table: str) -> list[tuple[Any, ...]]:
    return sorted(server.execute(f"SELECT * FROM {table}", database=db))


def _rows_pg(dsn: str, table: str, columns: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return sorted(conn.execute(f'SELECT {columns} FROM "{table}"').fetchall())


def test_a_keyless_table_is_dead_lettered_and_the_other_tables_replicate(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    """The guide's `include: ["shop\\\\..*"]` over a schema with one table without a primary
    key: the sink failed (a ConfigError, "cannot create table 'logs'") and replicated nothing
    more of any table. Now the keyless table's records are dead letters naming the cause, as
    docs/connectors/jdbc.md says, and the keyed tables go on."""
    db = "edge_keyless"
    mariadb.execute(f"CREATE DATABASE {db}")
    mariadb.execute(
        "CREATE TABLE logs (msg VARCHAR(20), level INT)",
        "CREATE TABLE orders (id INT UNSIGNED PRIMARY KEY, total DECIMAL(10,2))",
        "INSERT INTO logs VALUES ('a', 1), ('a', 1), (NULL, 2)",
        "INSERT INTO orders VALUES (1, 1.50), (2, NULL)",
        database=db,
    )
    with pg_replica() as (url, dsn):
        config = _config(tmp_path, mariadb, db, url, 1201)
        state = _replicate(
            tmp_path,
            config,
            dsn,
            mariadb,
            db,
            "orders",
            "INSERT INTO logs VALUES ('b', 3)",
            "INSERT INTO orders VALUES (3, 7.25)",
            "UPDATE orders SET total = 2.00 WHERE id = 1",
        )
        assert _rows_pg(dsn, "orders", "id, total") == _rows_my(mariadb, db, "orders")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT to_regclass('logs')").fetchone()[0] is None
        tail = run_cli(state, "topics", "tail", "dlq", "--from-beginning")
        dead = [json.loads(line) for line in tail.stdout.splitlines() if line.startswith("{")]
        assert len(dead) == 4, tail.stdout + tail.stderr
        assert all(d["subject"] == f"{db}.logs" for d in dead)
        assert all("no primary key" in d["errormessage"] for d in dead), dead[0]


def test_ddl_apply_carries_add_column_lists_and_unsigned_types(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    """`ADD COLUMN (a T, b T)` was skipped as a clause the sink does not know, and
    `ADD COLUMN c BIGINT UNSIGNED` made a BIGINT (the type parse lost UNSIGNED), so every later
    row using the columns was a dead letter (a value above 2^63 - 1 does not fit)."""
    db = "edge_add"
    mariadb.execute(f"CREATE DATABASE {db}")
    mariadb.execute(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(10))",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        database=db,
    )
    with pg_replica() as (url, dsn):
        config = _config(tmp_path, mariadb, db, url, 1202)
        state = _replicate(
            tmp_path,
            config,
            dsn,
            mariadb,
            db,
            "t",
            "ALTER TABLE t ADD COLUMN (zip CHAR(5), `l at` DECIMAL(8,3) NOT NULL DEFAULT 0)",
            "ALTER TABLE t ADD big BIGINT UNSIGNED, ADD COLUMN u INT(10) UNSIGNED NULL",
            "INSERT INTO t VALUES (3, 'c', '12345', 1.125, 18446744073709551615, 4294967295)",
            "UPDATE t SET zip = '00001', big = 9223372036854775808 WHERE id = 1",
        )
        want = _rows_my(mariadb, db, "t")
        got = _rows_pg(dsn, "t", 'id, v, zip, "l at", big, u')
        # row 2 existed before the ALTER: MariaDB wrote no row event for its DEFAULT
        assert want[1] == (2, "b", None, Decimal("0.000"), None, None)
        assert got[1] == (2, "b", None, None, None, None)
        assert got[0] == want[0] and got[2] == want[2]
        tail = run_cli(state, "topics", "list")
        assert "dlq" not in tail.stdout, tail.stdout


def test_a_json_null_stays_json_null_and_sql_null_stays_sql_null(
    tmp_path: Path, mariadb: MariaDB
) -> None:
    """A JSON column holding the JSON value `null` became SQL NULL in PostgreSQL (the Canal
    text 'null' was parsed to None, which the sink writes as SQL NULL), so `WHERE j IS NULL`
    counted differently on the two sides. Small runs (executemany) and large ones (COPY)."""
    db = "edge_json_null"
    mariadb.execute(f"CREATE DATABASE {db}")
    mariadb.execute(
        "CREATE TABLE j (id INT PRIMARY KEY, v JSON NULL)",
        "INSERT INTO j VALUES (1, 'null'), (2, NULL), (3, '\"s\"'), (4, '{\"a\": null}')",
        database=db,
    )
    with pg_replica() as (url, dsn):
        config = _config(tmp_path, mariadb, db, url, 1203)
        _replicate(
            tmp_path,
            config,
            dsn,
            mariadb,
            db,
            "j",
            "INSERT INTO j SELECT seq, IF(seq % 2, 'null', NULL) FROM seq_10_to_2009",
            "UPDATE j SET v = 'null' WHERE id = 2",
            "UPDATE j SET v = NULL WHERE id = 1",
            "INSERT INTO j VALUES (5, 'null')",
        )
        want = mariadb.execute("SELECT id, v IS NULL, JSON_TYPE(v) FROM j ORDER BY id", database=db)
        with psycopg.connect(dsn) as conn:
            got = conn.execute(
                "SELECT id, v IS NULL, upper(jsonb_typeof(v)) FROM j ORDER BY id"
            ).fetchall()
        assert [(i, bool(n), t) for i, n, t in want] == [
            (i, n, {"NUMBER": "INTEGER"}.get(t, t)) for i, n, t in got
        ]
        assert sum(1 for _, n, t in got if t == "NULL") == 1002


def test_truncate_empties_the_copy_too(tmp_path: Path, mariadb: MariaDB) -> None:
    """`TRUNCATE TABLE` writes no row events: the sink logged it as not applied and the copy
    kept every row the source had removed, without a dead letter. Rows written after it (in
    the same batch and later) stay."""
    db = "edge_truncate"
    mariadb.execute(f"CREATE DATABASE {db}")
    mariadb.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
        "CREATE TABLE keep (id INT PRIMARY KEY)",
        "INSERT INTO t SELECT seq, 'old' FROM seq_1_to_50",
        "INSERT INTO keep VALUES (1), (2)",
        database=db,
    )
    with pg_replica() as (url, dsn):
        config = _config(tmp_path, mariadb, db, url, 1204)
        _replicate(
            tmp_path,
            config,
            dsn,
            mariadb,
            db,
            "t",
            "INSERT INTO t VALUES (100, 'before')",
            "TRUNCATE TABLE t",
            "INSERT INTO t VALUES (7, 'after'), (8, 'after')",
            "TRUNCATE keep",
            "INSERT INTO keep VALUES (3)",
            "UPDATE t SET v = 'later' WHERE id = 8",
        )
        for table in ("t", "keep"):
            assert _rows_pg(dsn, table, "*") == _rows_my(mariadb, db, table)
        assert _rows_pg(dsn, "t", "*") == [(7, "after"), (8, "later")]
