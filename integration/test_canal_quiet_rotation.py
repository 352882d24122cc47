"""A snapshot on a quiet server whose binlog was rotated (``FLUSH BINARY LOGS``, a restart):
the new binlog file begins with events that are no transaction (format description, GTID
list, checkpoint), so the stream stayed at ``file:4`` while each chunk waited for the
binlog's end, ``file:339``: the snapshot, and a stop of the worker, waited for the next write
to the server (found by the cdctrial, restarting MariaDB during a snapshot). The server's
heartbeats now carry the stream to the end of the binlog."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from canal_support import mariadb, run_source
from mariadb import MariaDB

__all__ = ["mariadb"]


def test_a_snapshot_goes_on_after_the_binlog_rotated_on_a_quiet_server(mariadb: MariaDB) -> None:
    db = "quiet_rotation"
    mariadb.execute(f"CREATE DATABASE {db}")
    mariadb.execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT seq, seq * 2 FROM seq_1_to_200",
        database=db,
    )
    config = {"include": [f"{db}\\.t"], "chunk_size": 50, "server_id": 2301}
    first, reached = run_source(mariadb, None, 50, **config)
    assert 0 < len(first) < 200 and "snapshot" in reached["binlog"], reached
    mariadb.execute("FLUSH BINARY LOGS")  # and nothing is written from now on

    with ThreadPoolExecutor(1) as pool:
        rest = pool.submit(run_source, mariadb, reached, 200 - len(first), **config)
        try:
            more, _ = rest.result(timeout=40)  # heartbeats come every second
        except FutureTimeout:
            mariadb.execute(f"CREATE TABLE {db}.unstick (id INT)")  # ends the wait
            rest.result(timeout=60)
            pytest.fail("the snapshot waited for a write after the binlog was rotated")
    ids = [int(r.data["data"][0]["id"]) for r in first + more]
    assert sorted(ids) == list(range(1, 201))
