"""A partitioned topic in a cluster (docs/scaleout.md#partitions): two ``run --cluster``
members on a private Redis and on a private NATS split one sink's four consumers between them,
so one sink is written by both members at once; SIGKILL the member holding most of them while
records flow, and the other takes them over: every record is in its key's partition file
exactly once, in order per key."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_support import Members, StoreProbe

from conftest import run_cli
from meshconnect.mesh.routing import partition_for

PARTITIONS = 4
TOTAL = 12_000
KEYS = 97


def lines(path: Path) -> list[Any]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def writer(path: Path, start_at: threading.Event, done: threading.Event) -> None:
    """Append TOTAL records in bursts over ~10 s, keys cycling over KEYS customers."""
    n = 0
    with path.open("a") as f:
        while n < TOTAL:
            if n >= 2_000:
                start_at.set()
            burst = min(TOTAL - n, 150)
            f.write(
                "".join(
                    json.dumps({"k": f"c{i % KEYS}", "n": i}) + "\n" for i in range(n, n + burst)
                )
            )
            f.flush()
            n += burst
            time.sleep(0.12)
    done.set()


def until(check: Any, what: str, members: Members, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{members.tails()}"
        time.sleep(0.1)


@pytest.mark.parametrize("engine", ["redis", "nats"])
def test_two_members_share_one_sinks_partitions_and_survive_a_sigkill(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue(f"{engine}_server")
    url = f"{server.url}?prefix=parts{time.monotonic_ns()}"
    source = tmp_path / "in.jsonl"
    source.touch()
    pipeline = {
        "name": "orders",
        "source": {
            "connector": "file",
            "config": {"path": str(source), "follow": True, "poll_interval": 0.05},
        },
        "transforms": [{"type": "set_key", "fields": ["data.k"]}],
        "topic": "orders",
        "partitions": PARTITIONS,
        "sinks": [
            {
                "name": "out",
                "connector": "file",
                "commit_interval": 0.1,
                "config": {"path": str(tmp_path / "out" / "orders-{partition}.jsonl")},
            }
        ],
    }
    config = tmp_path / "p.yaml"
    config.write_text(
        json.dumps(
            {
                "store": url,
                "cluster": {"name": "parts", "failover_timeout": "3s"},
                "pipelines": [pipeline],
            }
        )
    )
    consumers = [f"group orders/out#{k}" for k in range(PARTITIONS)]
    members = Members(tmp_path, ["run", str(config)])
    probe = StoreProbe(url)
    try:
        members.start("w1")
        members.start("w2", ["--store", url, "run", "--cluster", "parts"])

        def holders() -> dict[str, str | None]:
            leases = {name: probe.owner(name) for name in consumers}
            return {
                name: (members.named(lease.owner) if lease is not None else None)
                for name, lease in leases.items()
            }

        # Five units (the source, four consumers) on two members: 3 and 2, and the sink's
        # consumers on both members.
        until(
            lambda: None not in holders().values() and len(set(holders().values())) == 2,
            "the sink's four consumers to be spread over both members",
            members,
        )
        status = run_cli(tmp_path, "--store", url, "status", "--cluster", "parts", "--json")
        assert status.returncode == 0, status.stderr
        units = {u["unit"] for p in json.loads(status.stdout)["pipelines"] for u in p["units"]}
        assert units == {"source orders/file", *consumers}

        start_kill, done = threading.Event(), threading.Event()
        thread = threading.Thread(target=writer, args=(source, start_kill, done), daemon=True)
        thread.start()
        assert start_kill.wait(60)
        held = holders()
        victim = max(("w1", "w2"), key=lambda w: list(held.values()).count(w))
        survivor = "w2" if victim == "w1" else "w1"
        time.sleep(0.5)  # records are flowing through both members' consumers
        members.kill(victim)
        killed_at = time.monotonic()
        until(
            lambda: all(h == survivor for h in holders().values()),
            f"{survivor} to take over every consumer",
            members,
        )
        taken_over = time.monotonic() - killed_at
        print(
            f"{engine}: {survivor} owned all {PARTITIONS} consumers {taken_over:.1f} s after a kill"
        )
        thread.join(60)
        assert done.is_set()
        files = [tmp_path / "out" / f"orders-{k}.jsonl" for k in range(PARTITIONS)]
        until(
            lambda: sum(len(lines(f)) for f in files) >= TOTAL,
            "every record in the output",
            members,
            timeout=120,
        )
        time.sleep(1.0)  # would anything more arrive?
        codes = members.stop_all()
        assert codes[survivor] == 0, members.tails()
        got: dict[int, list[Any]] = {k: lines(f) for k, f in enumerate(files)}
        assert all(got.values()), "a partition was empty"
        seen = sorted(row["n"] for rows in got.values() for row in rows)
        assert seen == list(range(TOTAL)), "a record is missing or twice"
        for k, rows in got.items():
            by_key: dict[str, list[int]] = {}
            for row in rows:
                assert partition_for(row["k"], PARTITIONS) == k
                by_key.setdefault(row["k"], []).append(row["n"])
            assert all(ns == sorted(ns) for ns in by_key.values()), "out of order for a key"
        # Another count is refused at start, and not published over the definition that runs.
        pipeline["partitions"] = 2
        pipeline["sinks"][0]["name"] = "out2"
        changed = tmp_path / "p2.yaml"
        changed.write_text(json.dumps({"store": url, "cluster": "parts", "pipelines": [pipeline]}))
        refused = run_cli(tmp_path / "state-w3", "run", str(changed), timeout=120)
        assert refused.returncode == 1, refused.stderr[-3000:]
        assert "pipeline 'orders' ran with partitions: 4 and now has partitions: 2" in (
            refused.stderr
        )
        status = run_cli(tmp_path, "--store", url, "status", "--cluster", "parts", "--json")
        units = {u["unit"] for p in json.loads(status.stdout)["pipelines"] for u in p["units"]}
        assert units == {"source orders/file", *consumers}
    finally:
        members.stop_all()
        probe.close()
