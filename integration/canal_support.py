"""Helpers for the canal integration tests: a private MariaDB per test module, pipeline files,
and replaying a CDC output file into the tables it describes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mariadb import MariaDB, private_mariadb

from conftest import require_server

#: The binlog decoder the canal tests use (CANAL_TEST_DECODER=fast runs them on FastReader).
DECODER = os.environ.get("CANAL_TEST_DECODER", "library")


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDB]:
    """One private MariaDB with the binlog on for the whole test module."""
    missing = MariaDB.missing()
    if missing:
        require_server("MariaDB", missing)
    with private_mariadb(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


def pipeline(server: MariaDB, out: Path, **config: Any) -> str:
    """A pipeline file: the canal source with ``config`` into a CloudEvents file sink."""
    source: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 1001,
        "decoder": DECODER,
        "heartbeat_interval": 1,
    }
    source.update(config)
    return json.dumps(
        {
            "pipelines": [
                {
                    "name": "cdc",
                    "source": {"connector": "canal", "config": source},
                    "topic": "cdc",
                    "sinks": [
                        {
                            "name": "out",
                            "connector": "file",
                            "commit_interval": 0.05,
                            "config": {"path": str(out), "format": "cloudevents"},
                        }
                    ],
                }
            ]
        }
    )


def events(path: Path, partial: bool = False) -> list[dict[str, Any]]:
    """The records in a CloudEvents output file. ``partial``: the file is being written, a
    last line may be incomplete (it is left out)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    if partial and lines and not lines[-1].endswith("\n"):
        lines.pop()
    return [json.loads(line) for line in lines if line.strip()]


def replay(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``row``-format change events applied in order: table -> primary key -> row."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        kind = r["type"]
        if kind == "mysql.ddl":
            continue
        rows = tables.setdefault(r["subject"], {})
        key = r["partitionkey"]
        if kind == "mysql.delete":
            rows.pop(key, None)
        else:
            rows[key] = r["data"]
    return tables


def table_rows(server: MariaDB, table: str, key: str = "id") -> dict[str, dict[str, Any]]:
    """The rows of ``table`` keyed like the records' ``partitionkey`` (ints and strings only)."""
    import pymysql

    conn = pymysql.connect(**server.connect_args(), cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {table}")
            return {str(row[key]): dict(row) for row in cur.fetchall()}
    finally:
        conn.close()


def run_source(
    server: MariaDB,
    positions: dict[str, Any] | None,
    count: int,
    *,
    limit: float = 60.0,
    polls: int | None = None,
    **config: Any,
) -> tuple[list[Any], dict[str, Any]]:
    """Run a canal source in this process from ``positions`` until it produced ``count``
    records (or ``polls`` polls, or it ended); its records and last positions."""
    import asyncio
    import logging
    import time

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.canal.config import CanalSourceConfig
    from meshconnect.connectors.canal.source import CanalSource

    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "server_id": 2001,
        "decoder": DECODER,
        "heartbeat_interval": 1,
    }
    settings.update(config)

    async def go() -> tuple[list[Any], dict[str, Any]]:
        source = CanalSource(
            CanalSourceConfig(**settings),
            ConnectorContext("test", "canal", logging.getLogger("canal-test")),
        )
        records: list[Any] = []
        reached = dict(positions or {})
        try:
            await source.start(reached)
            deadline = time.monotonic() + limit
            n = 0
            while len(records) < count and time.monotonic() < deadline:
                batch = await source.poll()
                if batch is None:
                    break
                records.extend(batch.records)
                reached.update(batch.positions)
                n += 1
                if polls is not None and n >= polls:
                    break
        finally:
            await source.stop()
        return records, reached

    return asyncio.run(go())


#: The errors InnoDB ends a transaction with that an application retries: lock wait timeout and
#: deadlock (a writer's transaction against the snapshot's locking reads, for one).
RETRIED_ERRORS = (1205, 1213)


def transaction(cur: Any, body: Callable[[Any], Any], attempts: int = 50) -> Any:
    """Run ``body(cur)`` in a transaction and commit it; what ``body`` returns. A transaction
    InnoDB rolled back (deadlock, lock wait timeout) is run again, as an application must:
    ``body`` is called anew, so it must make its own values each time. Test writers that
    stopped on the first deadlock left a CDC test waiting for changes that never came."""
    import pymysql

    for attempt in range(attempts):
        cur.execute("BEGIN")
        try:
            result = body(cur)
            cur.execute("COMMIT")
            return result
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in RETRIED_ERRORS or attempt == attempts - 1:
                raise
            cur.execute("ROLLBACK")
    raise AssertionError("unreachable")


def end_positions(server: MariaDB) -> dict[str, Any]:
    """The binlog end as a committed position (``offsets reset --to end``)."""
    import asyncio
    import logging

    from meshconnect.api import ConnectorContext
    from meshconnect.connectors.canal.config import CanalSourceConfig
    from meshconnect.connectors.canal.source import CanalSource

    source = CanalSource(
        CanalSourceConfig(host=server.host, port=server.port, user=server.user, server_id=2001),
        ConnectorContext("test", "canal", logging.getLogger("canal-test")),
    )
    return asyncio.run(source.end_positions())
