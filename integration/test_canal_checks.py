"""Start checks against real servers: the machine's own MariaDB (binlog off), missing
privileges, a purged binlog (a clear error naming the file, or a fresh snapshot with
``snapshot: when_needed``), and ``end_positions`` for ``offsets reset --to end``."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from canal_support import end_positions, mariadb, run_source
from mariadb import MariaDB

from meshconnect.errors import ConfigError

__all__ = ["mariadb"]


def machine_mariadb() -> dict[str, Any]:
    """The machine's MariaDB on 3306 (binlog off), when it runs and lets root in."""
    import pymysql

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 3306), 1):
        try:
            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
        except pymysql.err.MySQLError as exc:
            pytest.skip(f"the machine's MariaDB refuses root: {exc}")
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin")
            (log_bin,) = cur.fetchone()
        conn.close()
        if log_bin:
            pytest.skip("the machine's MariaDB has the binlog on")
        return {"host": "127.0.0.1", "port": 3306, "user": "root"}
    pytest.skip("no MariaDB on 127.0.0.1:3306")


def test_binlog_off_is_refused_with_the_my_cnf_lines_to_add() -> None:
    server = machine_mariadb()

    class Off:
        host, port, user = server["host"], server["port"], server["user"]

    with pytest.raises(ConfigError) as info:
        run_source(Off, None, 1)  # type: ignore[arg-type]
    message = str(info.value)
    assert "binary log is off on 127.0.0.1:3306" in message
    assert "log_bin" in message and "binlog_format = ROW" in message


def test_missing_replication_privileges_are_named(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE USER 'plain'@'%' IDENTIFIED BY 'pw'",
        "GRANT SELECT ON *.* TO 'plain'@'%'",
    )
    with pytest.raises(ConfigError) as info:
        run_source(mariadb, None, 1, user="plain", password="pw")
    message = str(info.value)
    assert "lacks REPLICATION SLAVE and BINLOG MONITOR" in message
    assert "GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.*" in message


def test_a_purged_binlog_is_an_error_naming_the_file_or_a_fresh_snapshot(
    mariadb: MariaDB,
) -> None:
    mariadb.execute(
        "CREATE DATABASE purged",
        "CREATE TABLE purged.t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO purged.t VALUES (1, 1), (2, 2)",
    )
    config = {"include": ["purged\\..*"], "format": "row"}
    records, reached = run_source(mariadb, None, 2, snapshot="initial", **config)
    assert sorted(r.data["id"] for r in records) == [1, 2]
    stored = reached["binlog"]
    # Changes the connector does not see, then the file holding its position goes away.
    mariadb.execute("INSERT INTO purged.t VALUES (3, 3)")
    for _ in range(100):  # a file still needed for crash recovery is kept: flush again
        mariadb.execute("FLUSH BINARY LOGS")
        current = mariadb.execute("SHOW MASTER STATUS")[0][0]
        mariadb.execute(f"PURGE BINARY LOGS TO '{current}'")
        if stored["file"] not in [r[0] for r in mariadb.execute("SHOW BINARY LOGS")]:
            break
        time.sleep(0.1)
    with pytest.raises(ConfigError) as info:
        run_source(mariadb, reached, 1, snapshot="initial", **config)
    assert f"binlog file {stored['file']} was purged" in str(info.value)
    assert "snapshot: when_needed" in str(info.value)
    records, again = run_source(mariadb, reached, 3, snapshot="when_needed", **config)
    assert sorted((r.type, r.data["id"]) for r in records) == [
        ("mysql.read", 1),
        ("mysql.read", 2),
        ("mysql.read", 3),
    ]
    assert again["binlog"]["file"] == current


def test_end_positions_start_after_everything_written(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE ends",
        "CREATE TABLE ends.t (id INT PRIMARY KEY)",
        "INSERT INTO ends.t VALUES (1)",
    )
    end = end_positions(mariadb)
    assert "snapshot" not in end["binlog"] and end["binlog"]["gtids"]
    mariadb.execute("INSERT INTO ends.t VALUES (2)")
    records, _ = run_source(mariadb, end, 1, include=["ends\\..*"], format="row")
    assert [r.data for r in records] == [{"id": 2}]


def test_an_initial_only_run_is_bounded(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE bounded",
        "CREATE TABLE bounded.t (id INT PRIMARY KEY)",
        "INSERT INTO bounded.t VALUES (1), (2), (3)",
    )
    config = {"include": ["bounded\\..*"], "format": "row", "snapshot": "initial_only"}
    records, reached = run_source(mariadb, None, 100, **config)  # ends by itself
    assert [r.data["id"] for r in records] == [1, 2, 3]
    assert "snapshot" not in reached["binlog"]
    again, _ = run_source(mariadb, reached, 100, **config)
    assert again == []


def test_a_filtered_stream_still_advances_its_position(mariadb: MariaDB) -> None:
    mariadb.execute(
        "CREATE DATABASE quiet",
        "CREATE TABLE quiet.watched (id INT PRIMARY KEY)",
        "CREATE TABLE quiet.other (id INT PRIMARY KEY)",
    )
    start = end_positions(mariadb)
    mariadb.execute(*[f"INSERT INTO quiet.other VALUES ({i})" for i in range(50)])
    end = end_positions(mariadb)["binlog"]
    records, reached = run_source(
        mariadb, start, 1, limit=3, include=["quiet\\.watched"], format="row"
    )
    assert records == []
    assert (reached["binlog"]["file"], reached["binlog"]["pos"]) == (end["file"], end["pos"])


def _through_a_killed_dump(
    mariadb: MariaDB,
    database: str,
    decoder: str,
    server_id: int,
    before: list[int],
    after: list[int],
    killing: Callable[[Any], None] = lambda source: None,
) -> tuple[Any, list[int], int]:
    """A canal source on ``database.t`` from the binlog's end: ``before``'s rows inserted and
    polled, the server's binlog dump threads killed (``killing(source)`` called first), then
    ``after``'s rows inserted and polled until they are in. The source, the ids read, and
    how many polls raised a RetriableError."""
    import asyncio
    import logging

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.canal.config import CanalSourceConfig
    from meshconnect.connectors.canal.source import CanalSource
    from meshconnect.errors import RetriableError

    mariadb.execute(
        f"CREATE DATABASE {database}", f"CREATE TABLE {database}.t (id INT PRIMARY KEY)"
    )
    start = end_positions(mariadb)
    source = CanalSource(
        CanalSourceConfig(
            host=mariadb.host,
            port=mariadb.port,
            user=mariadb.user,
            server_id=server_id,
            decoder=decoder,
            include=[f"{database}\\..*"],
            format="row",
            heartbeat_interval=1,
        ),
        ConnectorContext("test", "canal", logging.getLogger("canal-test")),
    )

    def insert(ids: list[int]) -> None:
        mariadb.execute(f"INSERT INTO {database}.t VALUES " + ", ".join(f"({i})" for i in ids))

    async def go() -> tuple[list[int], int]:
        await source.start(start)
        ids: list[int] = []
        errors = 0
        try:
            insert(before)
            while len(ids) < len(before):
                batch = await source.poll()
                assert batch is not None
                ids += [r.data["id"] for r in batch.records]
            killing(source)
            for (pid,) in mariadb.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'"
            ):
                mariadb.execute(f"KILL {pid}")
            insert(after)
            for _ in range(100):
                try:
                    batch = await source.poll()
                except RetriableError:
                    errors += 1
                    continue
                assert batch is not None
                ids += [r.data["id"] for r in batch.records]
                if len(ids) >= len(before) + len(after):
                    break
        finally:
            await source.stop()
        return ids, errors

    ids, errors = asyncio.run(go())
    return source, ids, errors


def test_a_killed_replication_connection_is_retried_without_loss(mariadb: MariaDB) -> None:
    """The server kills the binlog dump thread mid-stream. The library reader reconnects at
    the event it had reached (or poll raises a RetriableError, which the worker retries, and
    the next poll resumes at the last position handed out): either way nothing is lost or
    repeated."""
    _, ids, _errors = _through_a_killed_dump(mariadb, "lost", "library", 3001, [1, 2], [3])
    assert ids == [1, 2, 3]


def test_a_lost_binlog_connection_is_counted_in_canal_disconnects(mariadb: MariaDB) -> None:
    """The fast reader raises a RetriableError when the server kills its dump thread; the
    source drops the reader, counts the disconnect (metric ``canal_disconnects``, Debezium's
    ``NumberOfDisconnects``) and the next poll reconnects, losing nothing."""

    def none_yet(source: Any) -> None:
        assert source.disconnects.value == 0

    source, ids, errors = _through_a_killed_dump(
        mariadb, "counted", "fast", 3002, [1], [2], killing=none_yet
    )
    assert ids == [1, 2]
    assert errors >= 1 and source.disconnects.value == errors
    assert "meshconnect_canal_disconnects_total" in source.context.metrics.registry.render()


@pytest.mark.parametrize(
    ("variable", "bad"), [("binlog_format", "STATEMENT"), ("binlog_row_image", "MINIMAL")]
)
def test_wrong_binlog_settings_are_refused_with_the_fix(
    mariadb: MariaDB, variable: str, bad: str
) -> None:
    good = mariadb.execute(f"SELECT @@GLOBAL.{variable}")[0][0]
    mariadb.execute(f"SET GLOBAL {variable} = '{bad}'")
    try:
        with pytest.raises(ConfigError) as info:
            run_source(mariadb, None, 1)
    finally:
        mariadb.execute(f"SET GLOBAL {variable} = '{good}'")
    message = str(info.value)
    assert f"{variable}={bad}" in message
    assert f"SET GLOBAL {variable} = '{good}'" in message


def _check(position: dict[str, Any]) -> str | None:
    import logging

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.canal.config import CanalSourceConfig
    from meshconnect.connectors.canal.source import CanalSource

    source = CanalSource(
        CanalSourceConfig(host="127.0.0.1", user="root", server_id=2001),
        ConnectorContext("test", "canal", logging.getLogger("canal-test")),
    )
    return source.position_problem("binlog", position)


def test_positions_of_a_real_run_pass_the_hand_written_check(mariadb: MariaDB) -> None:
    """What ``offsets reset --to`` refuses is never a position the source wrote: one of a
    snapshot in progress, one after it, and the binlog's end (``--to end``)."""
    mariadb.execute(
        "CREATE DATABASE handmade",
        "CREATE TABLE handmade.t (id INT PRIMARY KEY, doc JSON)",
        "INSERT INTO handmade.t VALUES (1, '{}'), (2, '[]'), (3, 'null')",
    )
    config = {"include": ["handmade\\..*"], "format": "row", "chunk_size": 1}
    _, during = run_source(mariadb, None, 1, snapshot="initial", **config)
    _, after = run_source(mariadb, during, 2, snapshot="initial", **config)
    mariadb.execute("INSERT INTO handmade.t VALUES (4, '{}')")
    _, streamed = run_source(mariadb, after, 1, snapshot="initial", **config)
    written = [during["binlog"], after["binlog"], streamed["binlog"]]
    written.append(end_positions(mariadb)["binlog"])
    assert any("snapshot" in p for p in written) and any("snapshot" not in p for p in written)
    assert [_check(p) for p in written] == [None] * len(written)


@pytest.mark.parametrize("pos", [10**9, 5])
def test_a_position_the_server_cannot_send_from_fails_the_start(mariadb: MariaDB, pos: int) -> None:
    """Past the file's end, or inside an event: the check cannot know (only the server
    does); the server refuses the dump and the source fails with a ConfigError naming the
    position, never retried as a lost connection."""
    mariadb.execute("CREATE DATABASE IF NOT EXISTS nowhere")
    end = end_positions(mariadb)["binlog"]
    position = {"binlog": {"file": end["file"], "pos": pos}}
    assert _check(position["binlog"]) is None
    with pytest.raises(ConfigError) as info:
        run_source(mariadb, position, 1, limit=30, include=["nowhere\\..*"], format="row")
    assert f"{end['file']}:{pos}" in str(info.value), info.value
