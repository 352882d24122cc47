"""A restart with other table filters (found trying the canal connector from its docs): a
table that ``include``/``exclude`` capture now but did not before is snapshotted, so its rows
from before arrive (they never did: only its later changes streamed); a snapshot still
running leaves out the tables no longer captured. Against the private binlog MariaDB."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from canal_support import mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]


def keys(records: list[Any]) -> list[tuple[str, str, str]]:
    return [(r.type, r.subject, r.extensions["partitionkey"]) for r in records]


def test_a_table_added_to_include_is_snapshotted_at_the_restart(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE fa",
        "CREATE TABLE fa.a (id INT PRIMARY KEY)",
        "CREATE TABLE fa.b (id INT PRIMARY KEY)",
        "INSERT INTO fa.a VALUES (1)",
        "INSERT INTO fa.b VALUES (1), (2)",
    )
    config: dict[str, Any] = {"format": "row", "heartbeat_interval": 0.001}
    first, reached = run_source(mariadb, None, 1, include=["fa\\.a"], **config)
    assert keys(first) == [("mysql.read", "fa.a", "1")]
    mariadb.execute("INSERT INTO fa.b VALUES (3)", "INSERT INTO fa.a VALUES (2)")
    again, reached = run_source(mariadb, reached, 4, include=["fa\\.a", "fa\\.b"], **config)
    assert sorted(keys(again)) == [
        ("mysql.insert", "fa.a", "2"),
        ("mysql.read", "fa.b", "1"),
        ("mysql.read", "fa.b", "2"),
        ("mysql.read", "fa.b", "3"),
    ]
    assert reached["binlog"]["filter"] == {"include": ["fa\\.a", "fa\\.b"], "exclude": []}
    # snapshotted once: the next restart streams
    mariadb.execute("INSERT INTO fa.b VALUES (4)")
    more, _ = run_source(mariadb, reached, 1, include=["fa\\.a", "fa\\.b"], **config)
    assert keys(more) == [("mysql.insert", "fa.b", "4")]


def test_a_running_snapshot_leaves_out_a_table_no_longer_captured(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE fr",
        "CREATE TABLE fr.a (id INT PRIMARY KEY)",
        "CREATE TABLE fr.b (id INT PRIMARY KEY)",
        "INSERT INTO fr.a VALUES (1), (2), (3)",
        "INSERT INTO fr.b VALUES (1), (2)",
    )
    config: dict[str, Any] = {"format": "row", "chunk_size": 1, "snapshot": "initial_only"}
    first, reached = run_source(mariadb, None, 1, include=["fr\\..*"], **config)
    assert keys(first) == [("mysql.read", "fr.a", "1")]
    assert reached["binlog"]["snapshot"]["tables"] == [["fr", "a"], ["fr", "b"]]
    rest, _ = run_source(mariadb, reached, 10, include=["fr\\..*"], exclude=["fr\\.a"], **config)
    assert keys(rest) == [("mysql.read", "fr.b", "1"), ("mysql.read", "fr.b", "2")]


def test_an_added_table_is_not_snapshotted_with_snapshot_never(
    mariadb: MariaDB, caplog: pytest.LogCaptureFixture
) -> None:
    mariadb.execute(
        "CREATE DATABASE fn",
        "CREATE TABLE fn.a (id INT PRIMARY KEY)",
        "CREATE TABLE fn.b (id INT PRIMARY KEY)",
        "INSERT INTO fn.a VALUES (1)",
        "INSERT INTO fn.b VALUES (1)",
    )
    config: dict[str, Any] = {"format": "row", "snapshot": "never", "heartbeat_interval": 0.001}
    _, reached = run_source(mariadb, None, 1, include=["fn\\.a"], format="row")
    mariadb.execute("INSERT INTO fn.b VALUES (2)")
    with caplog.at_level(logging.WARNING, "canal-test"):
        got, _ = run_source(mariadb, reached, 1, include=["fn\\..*"], **config)
    assert keys(got) == [("mysql.insert", "fn.b", "2")]
    assert "captured now but not before (fn.b): streamed from here" in caplog.text


def test_an_initial_only_rerun_snapshots_the_tables_added_to_include(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE fo",
        "CREATE TABLE fo.a (id INT PRIMARY KEY)",
        "CREATE TABLE fo.b (id INT PRIMARY KEY)",
        "INSERT INTO fo.a VALUES (1)",
        "INSERT INTO fo.b VALUES (1)",
    )
    config: dict[str, Any] = {"format": "row", "snapshot": "initial_only"}
    first, reached = run_source(mariadb, None, 5, include=["fo\\.a"], **config)
    assert keys(first) == [("mysql.read", "fo.a", "1")]
    again, reached = run_source(mariadb, reached, 5, include=["fo\\..*"], **config)
    assert keys(again) == [("mysql.read", "fo.b", "1")]
    done, _ = run_source(mariadb, reached, 5, include=["fo\\..*"], **config)
    assert done == []
