"""Bidirectional sync between two private binlog MariaDBs without echo.

The rule (docs/connectors/jdbc.md#bidirectional-sync): each `jdbc` sink writes with
`skip_replication: true` (MariaDB's session flag, set on every event it writes), each `canal`
source reads with `skip_replicated: true` (its dump session asks the server to leave flagged
events out). So a change applied by a sink is never captured again. Conflicts on shared keys:
last writer wins by a version column (`last_writer_wins: ver`): an upsert changes a row only
when its `ver` is greater than the stored one, on both sides."""

from __future__ import annotations

import itertools
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from canal_support import DECODER, run_source
from jdbc_support import wait_for
from mariadb import MariaDB, private_mariadb

from conftest import meshconnect, require_server, run_cli, start_worker

DISJOINT = 1000
SHARED = 100


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MariaDB, MariaDB]]:
    missing = MariaDB.missing()
    if missing:
        require_server("MariaDB", missing)
    with (
        private_mariadb(tmp_path_factory.mktemp("a"), server_id=1) as a,
        private_mariadb(tmp_path_factory.mktemp("b"), server_id=2) as b,
    ):
        yield a, b


@pytest.mark.parametrize("decoder", ["library", "fast"])
def test_skip_replicated_leaves_flagged_transactions_out(
    pair: tuple[MariaDB, MariaDB], decoder: str
) -> None:
    a, _ = pair
    db = f"flag_{decoder}"
    a.execute(f"CREATE DATABASE {db}", f"CREATE TABLE {db}.t (id INT PRIMARY KEY)")
    conn = pymysql.connect(**a.connect_args(db))
    with conn.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (1)")
        cur.execute("SET SESSION skip_replication = 1")
        cur.execute("INSERT INTO t VALUES (2)")  # flagged
        cur.execute("SET SESSION skip_replication = 0")
        cur.execute("INSERT INTO t VALUES (3)")
    conn.close()
    common = {"include": [f"{db}\\.t"], "format": "row", "snapshot": "never", "decoder": decoder}
    start = {"binlog": {"file": "binlog.000001", "pos": 4}}
    seen = {
        skip: [
            r.data["id"]
            for r in run_source(a, start, 3, limit=15, skip_replicated=skip, **common)[0]
            if r.type == "mysql.insert"
        ]
        for skip in (False, True)
    }
    assert seen == {False: [1, 2, 3], True: [1, 3]}


def pipeline(name: str, src: MariaDB, dst: MariaDB, server_id: int) -> dict[str, Any]:
    return {
        "name": name,
        "source": {
            "connector": "canal",
            "config": {
                "host": src.host,
                "port": src.port,
                "user": src.user,
                "server_id": server_id,
                "decoder": DECODER,
                "heartbeat_interval": 1,
                "include": ["sync\\.items"],
                "format": "row",
                "snapshot": "never",
                "skip_replicated": True,
            },
        },
        "topic": name,
        "sinks": [
            {
                "connector": "jdbc",
                "config": {
                    "url": f"mysql+pymysql://root@{dst.host}:{dst.port}/sync",
                    "skip_replication": True,
                    "last_writer_wins": "ver",
                },
            }
        ],
    }


class Side(threading.Thread):
    """The application on one side: its own keys, then its writes to the shared keys, each
    with a version from one global counter (parity tells the side) and guarded by it."""

    def __init__(
        self, server: MariaDB, base: int, versions: Iterator[int], lock: threading.Lock
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.base, self.versions, self.lock = server, base, versions, lock
        self.error: BaseException | None = None
        self.shared: dict[int, int] = {}  # shared key -> the last version this side wrote

    def version(self) -> int:
        with self.lock:
            return next(self.versions)

    def run(self) -> None:
        try:
            conn = pymysql.connect(**self.server.connect_args("sync"))
            with conn.cursor() as cur:
                for i in range(DISJOINT):
                    cur.execute(
                        "INSERT INTO items VALUES (%s, %s, %s)",
                        (self.base + i, f"own {i}", self.version()),
                    )
                    if i % 10 == 0:  # the shared keys, interleaved with the own writes
                        k = 1_000_000 + (i // 10)
                        v = self.version()
                        cur.execute(
                            "UPDATE items SET note = %s, ver = %s WHERE id = %s AND ver < %s",
                            (f"shared by {self.base} at {v}", v, k, v),
                        )
                        if cur.rowcount == 1:  # else the other side's newer write was there
                            self.shared[k] = v
            conn.close()
        except BaseException as exc:
            self.error = exc


def rows(server: MariaDB) -> dict[int, tuple[Any, ...]]:
    return {r[0]: r for r in server.execute("SELECT id, note, ver FROM sync.items")}


def test_two_way_sync_converges_without_echo(tmp_path: Path, pair: tuple[MariaDB, MariaDB]) -> None:
    a, b = pair
    for server in (a, b):
        server.execute("CREATE DATABASE sync")
        server.execute(
            "CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(60), ver BIGINT NOT NULL)",
            "INSERT INTO items SELECT 1000000 + seq, 'seed', 0 FROM seq_0_to_99",
            database="sync",
        )
    config = tmp_path / "sync.yaml"
    config.write_text(
        json.dumps(
            {
                "pipelines": [
                    pipeline("a_to_b", a, b, 3101),
                    pipeline("b_to_a", b, a, 3102),
                ]
            }
        )
    )
    state = tmp_path / "state"
    log = tmp_path / "worker.log"
    proc = start_worker(meshconnect(state, "run", str(config)), log)
    try:
        # both sources fix their start ("from now") before logging that they started
        wait_for(lambda: log.read_text().count(" started") >= 2, what="both pipelines")
        versions, lock = itertools.count(1), threading.Lock()
        sides = [Side(a, 1, versions, lock), Side(b, 500_001, versions, lock)]
        for side in sides:
            side.start()
        for side in sides:
            side.join()
            assert side.error is None, side.error
        wait_for(
            lambda: rows(a) == rows(b) and len(rows(a)) == 2 * DISJOINT + SHARED,
            timeout=120,
            what="both sides equal",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    final = rows(a)
    shared = [final[1_000_000 + k] for k in range(SHARED)]
    assert all(r[2] > 0 for r in shared)  # every shared key was written
    # last writer wins: each shared key holds the newest version either side wrote to it
    newest = {k: max(side.shared.get(k, 0) for side in sides) for k in range(1_000_000, 1_000_100)}
    assert {k: final[k][2] for k in newest} == newest
    # No echo: each topic holds only changes written by applications on its own side.
    for topic, own in (
        ("a_to_b", range(1, 1 + DISJOINT)),
        ("b_to_a", range(500_001, 500_001 + DISJOINT)),
    ):
        out = run_cli(state, "topics", "tail", topic, "--from-beginning", timeout=60)
        records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        ids = [r["data"]["id"] for r in records]
        mine = [i for i in ids if i < 1_000_000]
        assert sorted(mine) == list(own), topic  # its own inserts, each once
        assert len(ids) == len(set((r["data"]["id"], r["data"]["ver"]) for r in records))
        assert len(ids) <= DISJOINT + SHARED
