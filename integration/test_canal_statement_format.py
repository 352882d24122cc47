"""Row changes logged as statements (found trying the canal connector from its docs): the
server check at start sees ``binlog_format=ROW``, but a session may still write with
``SET SESSION binlog_format = 'STATEMENT'`` (or ``MIXED``, which picks statements for safe
ones). Their rows are not in the binlog; the source dropped them silently (and took the
statement for DDL that ended the transaction). Now a change of a captured table is a data
error by the source's ``errors:`` policy, one of another table is skipped like its rows."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from canal_support import DECODER, end_positions, mariadb
from mariadb import MariaDB

from meshconnect.api import ConnectorContext
from meshconnect.connectors.canal.config import CanalSourceConfig
from meshconnect.connectors.canal.source import CanalSource
from meshconnect.errors import DataError

__all__ = ["mariadb"]


def poll(server: MariaDB, positions: dict[str, Any], count: int) -> tuple[list[Any], list[Any]]:
    """Records and failures of a canal source from ``positions`` until ``count`` of both
    (at most 60 s)."""

    async def go() -> tuple[list[Any], list[Any]]:
        source = CanalSource(
            CanalSourceConfig(
                host=server.host, port=server.port, user=server.user, server_id=2001,
                decoder=DECODER, format="row", snapshot="never", include=["st\\.t.*"],
            ),
            ConnectorContext("test", "canal", logging.getLogger("canal-test")),
        )  # fmt: skip
        records: list[Any] = []
        failures: list[Any] = []
        try:
            await source.start(dict(positions))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(records) + len(failures) < count and loop.time() < deadline:
                batch = await source.poll()
                if batch is None:
                    break
                records.extend(batch.records)
                failures.extend(batch.failures)
        finally:
            await source.stop()
        return records, failures

    return asyncio.run(go())


def test_changes_logged_as_statements_are_errors_not_silence(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE st",
        "CREATE TABLE st.t (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE st.other (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE st.t2 (id INT PRIMARY KEY, v INT)",
    )
    start = end_positions(mariadb)
    mariadb.execute(
        "SET SESSION binlog_format = 'STATEMENT'",
        "INSERT INTO st.t VALUES (1, 1)",
        "UPDATE LOW_PRIORITY st.t SET v = 2 WHERE id = 1",
        "REPLACE INTO `st`.`t` VALUES (1, 3)",
        "INSERT INTO st.other VALUES (1, 1)",  # not captured: skipped
        "DELETE FROM st.other",
        "DELETE st.t, st.t2 FROM st.t JOIN st.t2 USING (id)",  # which tables: unknown
        "SET SESSION binlog_format = 'ROW'",
        "INSERT INTO st.t VALUES (2, 2)",
    )
    records, failures = poll(mariadb, start, 5)
    assert [(r.type, r.extensions["partitionkey"]) for r in records] == [("mysql.insert", "2")]
    errors = [str(e) for _, e in failures]
    assert all(isinstance(e, DataError) for _, e in failures)
    assert [e.split(" at ")[0] for e in errors] == [
        "canal: INSERT on st.t",
        "canal: UPDATE on st.t",
        "canal: REPLACE on st.t",
        "canal: DELETE on a table (from schema (none))",
    ]
    assert all("set binlog_format = ROW" in e for e in errors)
    assert failures[0][0].data["sql"] == "INSERT INTO st.t VALUES (1, 1)"
