"""PostgreSQL restarted under a running jdbc sink: a private PostgreSQL 15 instance is stopped
while records keep arriving and started again; the sink's writes fail as retriable, are
retried (pool_pre_ping replaces the dead connections), and in the end every record is in the
table exactly once (`insert` mode with `exactly_once`: a duplicate would be visible)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from jdbc_support import PrivatePostgres, pg_database, private_pg, wait_for

from conftest import meshconnect, start_worker

__all__ = ["private_pg"]


@pytest.fixture
def target(private_pg: PrivatePostgres) -> Iterator[str]:
    yield from pg_database(port=private_pg.port)


def count(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            if not conn.execute("SELECT to_regclass('events')").fetchone()[0]:
                return 0
            return int(conn.execute("SELECT count(DISTINCT n) FROM events").fetchone()[0])
    except psycopg.Error:
        return -1


def test_postgres_restart_mid_stream_loses_nothing(
    tmp_path: Path, private_pg: PrivatePostgres, target: str
) -> None:
    dsn = target.replace("postgresql+psycopg://", "postgresql://")
    data = tmp_path / "in.jsonl"
    half = 20_000

    def append(lo: int, hi: int) -> None:
        with data.open("a") as f:
            f.writelines(json.dumps({"n": i, "text": f"row {i}"}) + "\n" for i in range(lo, hi))

    append(0, half)
    config = tmp_path / "p.yaml"
    config.write_text(
        json.dumps(
            {
                "pipelines": [
                    {
                        "name": "pgrestart",
                        "source": {
                            "connector": "file",
                            "config": {
                                "path": str(data),
                                "format": "json",
                                "follow": True,
                                "poll_interval": 0.1,
                            },
                        },
                        "sinks": [
                            {
                                "connector": "jdbc",
                                "batch_size": 500,
                                "config": {
                                    "url": target,
                                    "table": "events",
                                    "mode": "insert",
                                    "auto_create": True,
                                    "exactly_once": True,
                                    "connect_timeout": "2s",
                                },
                                "errors": {
                                    "retry": {
                                        "max_attempts": 1000,
                                        "initial_backoff": "100ms",
                                        "max_backoff": "1s",
                                    }
                                },
                            }
                        ],
                    }
                ]
            }
        )
    )
    log_path = tmp_path / "worker.log"
    proc = start_worker(meshconnect(tmp_path / "state", "run", str(config)), log_path)
    try:
        wait_for(lambda: count(dsn) == half, what="the first half in PostgreSQL")
        private_pg.stop()
        append(half, 2 * half)  # arrives while the database is down
        # the sink is failing now: wait until the worker has logged a retry
        wait_for(
            lambda: (
                "retry" in log_path.read_text().lower() or "retri" in log_path.read_text().lower()
            ),
            what="a retried write",
        )
        private_pg.start()
        wait_for(lambda: count(dsn) == 2 * half, timeout=180, what="every record")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log_path.read_text()[-3000:]
    with psycopg.connect(dsn) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT n) FROM events").fetchone()
    assert (total, distinct) == (2 * half, 2 * half)
