"""Three ``meshconnect run --cluster`` workers on a private Redis, and on a private NATS
JetStream, one canal CDC source (a
private MariaDB with the binlog) and two file sinks, while a writer changes the tables:

* a second and a third worker join and take their share without stopping the first's other
  units (incremental rebalance);
* the worker that owns the source is SIGKILLed five times (each time whichever owns it then,
  restarted at once as a supervisor would): the failover (last record stored before the kill
  to the first after) is printed;
* the owner of the source is SIGSTOPped past its lease, another takes over with a higher
  epoch, and after SIGCONT the paused one steps down without storing anything;
* the engine (Redis, NATS) is SIGKILLed and restarted under the running cluster;

and at the end both sinks' outputs, replayed by primary key, equal the source tables, no
change arrives twice, and the topic holds every change once."""

from __future__ import annotations

import collections
import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from canal_support import events, mariadb, pipeline, replay, table_rows, transaction
from cluster_support import Members, StoreProbe
from mariadb import MariaDB
from nats_support import NatsServer, private_nats
from redis_support import RedisServer, private_redis

from conftest import require_server, run_cli

__all__ = ["mariadb"]

TABLES = ["shop.t1", "shop.t2"]
SOURCE = "source cdc/canal"
UNITS = [SOURCE, "group cdc/out1", "group cdc/out2"]
#: A failover that takes longer than this is broken (the target is 10 s; the figures are
#: printed, and the machine may be loaded: no tighter timed assert).
BROKEN = 30.0


class Writer(threading.Thread):
    """Small transactions every few milliseconds (inserts, updates, deletes, a primary-key
    change) and a few 2,000-row ones, until stopped; every change sets ``ver`` anew."""

    def __init__(self, server: MariaDB) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self.ver = 1_000_000
        self.next_id = dict.fromkeys(TABLES, 1001)
        self.big = 0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        rng = random.Random(3)
        conn = pymysql.connect(**self.server.connect_args())
        cur = conn.cursor()
        rounds = 0
        while not self.stopped.is_set():
            rounds += 1
            t = rng.choice(TABLES)
            big = rounds % 400 == 0
            transaction(cur, lambda cur, t=t, big=big: self._changes(cur, rng, t, big))
            self.big += big
            time.sleep(rng.uniform(0.005, 0.02))
        conn.close()

    def _changes(self, cur: Any, rng: random.Random, t: str, big: bool) -> None:
        """One transaction's statements (run again, with new values, when InnoDB rolls it
        back)."""
        if big:
            start = self.next_id[t]
            self.next_id[t] += 2000
            values = ",".join(f"({i}, {self._ver()}, 'big')" for i in range(start, start + 2000))
            cur.execute(f"INSERT INTO {t} VALUES {values}")
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.4:
                start = self.next_id[t]
                n = rng.randint(1, 5)
                self.next_id[t] += n
                values = ",".join(f"({i}, {self._ver()}, 'n{i}')" for i in range(start, start + n))
                cur.execute(f"INSERT INTO {t} VALUES {values}")
            elif op < 0.75:
                lo = rng.randint(1, self.next_id[t])
                cur.execute(
                    f"UPDATE {t} SET ver = {self._ver()} + id, note = 'u' "
                    f"WHERE id >= {lo} AND id < {lo + 5}"
                )
                self.ver += 10_000
            elif op < 0.9:
                lo = rng.randint(1, self.next_id[t])
                cur.execute(f"DELETE FROM {t} WHERE id >= {lo} AND id < {lo + 2}")
            else:
                old, new = rng.randint(1, self.next_id[t]), self.next_id[t]
                self.next_id[t] += 1
                cur.execute(f"UPDATE {t} SET id = {new}, ver = {self._ver()} WHERE id = {old}")

    def _ver(self) -> int:
        self.ver += 1
        return self.ver


def setup(server: MariaDB) -> None:
    statements = ["CREATE DATABASE shop"]
    for t in TABLES:
        statements.append(
            f"CREATE TABLE {t} (id INT PRIMARY KEY, ver BIGINT NOT NULL, note VARCHAR(40))"
        )
        values = ",".join(f"({i}, {i}, 'seed')" for i in range(1, 1001))
        statements.append(f"INSERT INTO {t} VALUES {values}")
    statements.append("CREATE TABLE shop.zz_end (id INT PRIMARY KEY)")
    server.execute(*statements)


def config_text(server: MariaDB, out: Path, store: str) -> str:
    doc = json.loads(pipeline(server, out / "out1.jsonl", format="row", batch_events=40))
    doc["store"] = store
    doc["cluster"] = {"name": "cdc", "failover_timeout": "10s"}
    p = doc["pipelines"][0]
    p["sinks"][0]["name"] = "out1"
    p["sinks"].append({**p["sinks"][0], "name": "out2", "config": {**p["sinks"][0]["config"]}})
    p["sinks"][1]["config"]["path"] = str(out / "out2.jsonl")
    return json.dumps(doc)


def wait(what: str, check, timeout: float, members: Members) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{members.tails()}")


def owners(probe: StoreProbe, members: Members) -> dict[str, str | None]:
    leases = probe.leases()
    now = time.time()
    return {
        unit: members.named(leases[unit].owner)
        if unit in leases and leases[unit].expires > now
        else None
        for unit in UNITS
    }


def started_lines(log: Path, unit: str) -> int:
    kind, name = unit.split(" ", 1)
    word = "source" if kind == "source" else "sink"
    return log.read_text().count(f"{word} {name} started")


@contextlib.contextmanager
def engine(backend: str, base: Path) -> Iterator[Any]:
    server: type[RedisServer] | type[NatsServer] = RedisServer if backend == "redis" else NatsServer
    missing = server.missing()
    if missing:
        require_server(f"{backend}-server", missing)
    with (private_redis if backend == "redis" else private_nats)(base) as running:
        yield running


@pytest.mark.parametrize("backend", ["redis", "nats"])
def test_three_workers_fail_over_fence_and_stay_exact(
    tmp_path: Path, mariadb: MariaDB, backend: str
) -> None:
    mariadb.execute("DROP DATABASE IF EXISTS shop")
    setup(mariadb)
    out = tmp_path / "out"
    out.mkdir()
    with engine(backend, tmp_path / backend) as redis:
        url = f"{redis.url}?prefix=cl"
        config = tmp_path / "cdc.yaml"
        config.write_text(config_text(mariadb, out, url))
        probe = StoreProbe(url, "cdc")
        members = Members(tmp_path, ["run", str(config)])
        writer = Writer(mariadb)
        writer.start()
        try:
            try:
                _run(probe, members, redis, writer)
            except AssertionError as exc:  # a stall with no change written is the writer's
                if writer.error is not None:
                    raise AssertionError(f"{exc}\nthe writer stopped: {writer.error!r}") from exc
                raise
            writer.stopped.set()
            writer.join(30)
            assert writer.error is None, writer.error
            mariadb.execute("INSERT INTO shop.zz_end VALUES (1)")
            for name in ("out1.jsonl", "out2.jsonl"):
                wait(
                    f"the last change in {name}",
                    lambda name=name: any(
                        r["subject"] == "shop.zz_end" for r in events(out / name, partial=True)
                    ),
                    120,
                    members,
                )
            stored = probe.read_all("cdc")
        finally:
            writer.stopped.set()
            codes = members.stop_all()
            probe.close()
    assert all(code == 0 for code in codes.values()), (codes, members.tails())
    assert writer.big >= 1
    ids = collections.Counter(r.id for r in stored)
    twice = sorted(i for i, n in ids.items() if n > 1)
    print(f"{backend}: {len(stored)} records in the topic, {len(twice)} stored twice")
    expected = {t: table_rows(mariadb, t) for t in TABLES}
    in_topic = [{**r.to_dict(), "offset": r.offset} for r in stored]
    # The topic first: a change missing there is the source's (or the store's append); missing
    # only from a file, the sink's.
    for t in TABLES:
        assert replay(in_topic).get(t) == expected[t], differences("topic", t, in_topic, expected)
    for name in ("out1.jsonl", "out2.jsonl"):
        records = events(out / name)
        tables = replay(records)
        for t in TABLES:
            assert tables.get(t) == expected[t], differences(name, t, records, expected)
        counted = collections.Counter(r["id"] for r in records)
        # Sinks deliver what the topic holds, once (the file sink truncates to its checkpoint
        # whichever worker opens it).
        assert sorted(i for i, n in counted.items() if n > 1) == twice, name
        assert len(records) == len(stored), name
    if backend == "redis":
        # The mesh holds every change once: a stale owner's append, or a dead one's batch
        # read again, would have stored some twice.
        assert twice == []
    else:
        # JetStream: a batch a dead owner published before its position update is recognised
        # when read again in the same split; read again in a smaller batch, the rest of the
        # first copy is stored again (docs/stores.md): a repeated run of consecutive changes,
        # which replays to the same rows (checked above).
        offsets: dict[str, list[int]] = collections.defaultdict(list)
        for r in stored:
            offsets[r.id].append(r.offset)
        runs = sorted(o[1] - o[0] for i, o in offsets.items() if len(o) > 1)
        assert all(gap <= 5000 for gap in runs), runs  # within a batch of the source


def differences(
    where: str, table: str, records: list[dict[str, Any]], expected: dict[str, Any]
) -> str:
    """The rows of ``table`` that ``records`` replay to differently from the table, with the
    records of those rows (offsets where the store gave them)."""
    got = replay(records).get(table, {})
    keys = sorted(k for k in {*got, *expected[table]} if got.get(k) != expected[table].get(k))
    lines = [f"{where}: {len(keys)} row(s) of {table} differ: {keys[:10]}"]
    for key in keys[:4]:
        lines.append(f"  {key}: table {expected[table].get(key)}, replayed {got.get(key)}")
        for r in records:
            if r.get("subject") == table and r.get("partitionkey") == key:
                lines.append(f"    {r.get('offset', '')} {r['id']} {r['type']} {r.get('data')}")
    return "\n".join(lines)


def _run(probe: StoreProbe, members: Members, redis: Any, writer: Writer) -> None:
    # -- incremental rebalance: w1 runs everything, w2 and w3 join ----------------------------
    members.start("w1")
    wait(
        "w1 owning every unit", lambda: set(owners(probe, members).values()) == {"w1"}, 60, members
    )
    wait("records stored", lambda: probe.end() > 100, 60, members)
    members.start("w2")
    wait(
        "w2 taking a share",
        lambda: list(owners(probe, members).values()).count("w2") == 1,
        60,
        members,
    )
    members.start("w3", ["--store", probe.url, "run", "--cluster", "cdc"])  # no files
    wait(
        "one unit each",
        lambda: sorted(map(str, owners(probe, members).values())) == ["w1", "w2", "w3"],
        60,
        members,
    )
    status = run_cli(members.base, "--store", probe.url, "status", "--cluster", "cdc", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert sorted(m["id"].split(":")[0] for m in shown["members"] if m["alive"]) == [
        "w1",
        "w2",
        "w3",
    ]
    shown_owners = {u["unit"]: u["owner"].split(":")[0] for u in shown["pipelines"][0]["units"]}
    assert shown_owners == owners(probe, members)
    log1 = members.log("w1").read_text()
    given = log1.count("giving back")
    kept = [u for u, o in owners(probe, members).items() if o == "w1"]
    print(f"rebalance: w1 gave back {given} unit(s) and kept {kept}")
    assert given == 2, members.tails()
    for unit in kept:  # never stopped while the others moved
        assert started_lines(members.log("w1"), unit) == 1, (unit, members.tails())
    # -- SIGKILL whichever worker owns the source, five times ---------------------------------
    failovers = []
    rng = random.Random(5)
    for _ in range(5):
        wait("a running source", lambda: owners(probe, members)[SOURCE] is not None, 60, members)
        owner = owners(probe, members)[SOURCE]
        assert owner is not None
        grown = probe.end()
        wait(
            "the source storing",
            lambda grown=grown: probe.end() > grown,  # type: ignore[misc]
            60,
            members,
        )
        time.sleep(rng.uniform(0.3, 1.2))
        killed_at = time.monotonic()
        members.kill(owner)
        time.sleep(0.3)  # what the dead worker sent before it died is in; nothing comes after
        dead_end = probe.end()
        before = [t for t, end in probe.growth if end <= dead_end][-1]
        members.start(owner)  # as a supervisor would restart it
        wait(
            "the source storing again",
            lambda dead_end=dead_end: probe.end() > dead_end,  # type: ignore[misc]
            120,
            members,
        )
        after = next(t for t, end in probe.growth if end > dead_end)
        assert before <= killed_at + 0.3 < after
        failovers.append(after - before)
        print(f"failover after SIGKILL of {owner}: {after - before:.2f} s")
    print("failovers (s):", ", ".join(f"{f:.2f}" for f in failovers))
    assert max(failovers) < BROKEN, failovers
    # -- fencing: SIGSTOP the owner past its lease, SIGCONT --------------------------------------
    lease = probe.owner(SOURCE)
    paused = members.named(lease.owner)
    assert paused is not None
    members.signal(paused, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        wait(
            "another owner",
            lambda: (now := probe.owner(SOURCE)) is not None and now.owner != lease.owner,
            60,
            members,
        )
        took_at = time.monotonic()
        grown = probe.end()
        wait("the new owner storing", lambda: probe.end() > grown, 60, members)
    finally:
        members.signal(paused, signal.SIGCONT)
    print(
        f"SIGSTOP of {paused}: taken over after {took_at - stopped_at:.2f} s, "
        f"resumed after {time.monotonic() - stopped_at:.2f} s"
    )
    new = probe.owner(SOURCE)
    assert new is not None and new.owner != lease.owner and new.epoch > lease.epoch
    log = members.log(paused)
    wait(
        f"{paused} stepping down",
        lambda: "stepping down" in log.read_text() or "without committing" in log.read_text(),
        30,
        members,
    )
    time.sleep(2)
    wait(  # never the paused one's lease again (the source may move on a rebalance meanwhile)
        "a source owner with a newer epoch",
        lambda: (now := probe.owner(SOURCE)) is not None and now.epoch > lease.epoch,
        30,
        members,
    )
    assert members.procs[paused].poll() is None  # still a member, with the units it has now
    # -- the engine restarts under the cluster --------------------------------------------------
    redis.kill()
    time.sleep(1)
    redis.start()
    grown = probe.end()
    wait("storing after the engine restarted", lambda: probe.end() > grown, 120, members)
