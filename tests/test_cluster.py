"""Clustered workers in one process on a shared memory store (the logic of
:mod:`meshconnect.cluster`; integration/test_cluster_cdc.py runs real processes on Redis and
NATS): definitions shared and refused, fair shares without stopping the others, stepping
down, and the CLI's refusal of a store a cluster cannot run on."""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshconnect.cli import cli
from meshconnect.cluster import (
    ClusterError,
    ClusterMember,
    cluster_report,
    definitions_id,
    over_share,
    target_states_id,
)
from meshconnect.config.loader import LoadedConfig, load_pipeline_files
from meshconnect.config.model import ClusterConfig, RetentionConfig
from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.store import FencedError, Lease
from meshconnect.records import Record
from meshconnect.testing import MemorySink, test_registry
from meshconnect.worker import Worker

PIPELINE = """
cluster: {name: c, failover_timeout: 3s}
pipelines:
  - name: p
    source:
      connector: memory
      config: {records: RECORDS, follow: true, batch_size: 7}
    topic: t
    sinks:
      - {name: s1, connector: memory, commit_interval: 50ms, config: {name: s1}}
      - {name: s2, connector: memory, commit_interval: 50ms, config: {name: s2}}
      - {name: s3, connector: memory, commit_interval: 50ms, config: {name: s3}}
"""
UNITS = {"source p/memory", "group p/s1", "group p/s2", "group p/s3"}


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()


def load(tmp_path: Path, text: str, name: str = "p.yaml") -> LoadedConfig:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("RECORDS", str(list(range(50)))))
    return load_pipeline_files([path], test_registry())


def fileless() -> LoadedConfig:
    return LoadedConfig(
        [], None, RetentionConfig(), [], cluster=ClusterConfig(name="c", failover_timeout=3)
    )


class Running:
    """A worker running as a cluster member in this process."""

    def __init__(self, config: LoadedConfig, url: str) -> None:
        self.worker = Worker(config, MemoryStore(url))
        self.worker.registry = test_registry()
        self.task: asyncio.Task[int] | None = None

    async def start(self) -> Running:
        await self.worker.store.open()
        self.task = asyncio.create_task(self.worker.run())
        return self

    @property
    def member(self) -> ClusterMember:
        assert self.worker.member is not None
        return self.worker.member  # type: ignore[no-any-return]

    def units(self) -> set[str]:
        member = self.worker.member
        return set() if member is None else {n for n, u in member.units.items() if not u.leaving}

    async def stop(self) -> int:
        self.worker.stop()
        assert self.task is not None
        return await asyncio.wait_for(self.task, 20)


async def until(check: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def delivered(name: str) -> list[Any]:
    return [r.data for r in MemorySink.outputs.get(name, [])]


async def test_a_newcomer_takes_its_share_while_the_other_units_keep_running(
    tmp_path: Path,
) -> None:
    url = "memory://cluster-share"
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    tasks = {name: unit.task for name, unit in a.member.units.items()}
    b = await Running(fileless(), url).start()  # no files: runs what the store holds
    await until(lambda: len(b.units()) == 2 and len(a.units()) == 2)
    for name in a.units():  # the units A kept were never stopped
        assert a.member.units[name].task is tasks[name]
        assert not tasks[name].done()  # type: ignore[union-attr]
    assert a.units() | b.units() == UNITS
    report = await cluster_report(b.worker.store, "c")
    assert len([m for m in report["members"] if m["alive"]]) == 2
    owners = {u["unit"]: u["owner"] for u in report["pipelines"][0]["units"]}
    assert owners == {
        **dict.fromkeys(a.units(), a.member.owner),
        **dict.fromkeys(b.units(), b.member.owner),
    }
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    assert await a.stop() == 0 and await b.stop() == 0
    for s in ("s1", "s2", "s3"):  # a sink that moved resumed from its commit: once each
        assert delivered(s) == list(range(50))


async def test_a_different_definition_is_refused_while_a_member_runs(tmp_path: Path) -> None:
    url = "memory://cluster-refuse"
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    changed = PIPELINE.replace("batch_size: 7", "batch_size: 8")
    b = Running(load(tmp_path, changed, "changed.yaml"), url)
    await b.start()
    assert b.task is not None
    refused = r"pipeline .p. of .*changed.yaml differs from the one cluster .c. runs at "
    with pytest.raises(ClusterError, match=refused + r"source.config.batch_size \(version 1"):
        await asyncio.wait_for(b.task, 10)
    assert await a.stop() == 0
    # With no member left, the changed file replaces the definition (version 2).
    c = await Running(load(tmp_path, changed, "changed.yaml"), url).start()
    await until(lambda: c.units() == UNITS)
    stored = await c.worker.store.positions(definitions_id("c"))
    assert stored["p"]["version"] == 2
    assert await c.stop() == 0


async def test_a_unit_taken_over_steps_down_and_writes_nothing_more(tmp_path: Path) -> None:
    url = "memory://cluster-fence"
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    unit = a.member.units["group p/s1"]
    # Another worker takes the lease, as after this one stalled past it.
    store = a.worker.store
    taken = await store.acquire_leases(["group p/s1"], "intruder", 60, now=time.time() + 30)
    assert taken == []
    await until(lambda: "group p/s1" not in a.member.units)
    assert unit.lost
    with pytest.raises(FencedError, match=r"took over|no longer this worker's"):
        unit.view.guard()
    assert a.worker.statuses["sink p/s1"].state == "STOPPED"
    await asyncio.sleep(0.5)  # several rounds: A does not take it back from a live owner
    assert "group p/s1" not in a.member.units
    assert await a.stop() == 0


def test_run_refuses_a_cluster_on_a_store_without_fenced_leases(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("pipelines: []\ncluster: c\n")
    runner = CliRunner()
    done = runner.invoke(cli, ["--state", str(tmp_path / "s"), "run", str(path)])
    assert done.exit_code == 1
    assert f"{path}:2:10: cluster: 'c' needs a redis:// or nats:// store" in done.output
    assert "sqlite:///" in done.output
    done = runner.invoke(cli, ["--store", "memory://", "run", "--cluster", "x"])
    assert done.exit_code == 1
    assert "--cluster: 'x' needs a redis:// or nats:// store" in done.output


def test_cluster_names_and_timeouts_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("cluster: {name: 'a b', failover_timeout: 100ms}\npipelines: []\n")
    done = CliRunner().invoke(cli, ["validate", str(path)])
    assert done.exit_code == 1
    assert "cluster.name" in done.output and "cluster.failover_timeout" in done.output


async def test_a_stalled_member_neither_retries_nor_dead_letters_a_refused_write(
    tmp_path: Path,
) -> None:
    """A sink under ``tolerance: all`` whose member stalled past its lease while another took
    it: the refused write stops the unit at once. Retried as a store error, it outlasted the
    attempts and its batch went to the dead-letter topic, written by a replaced owner."""
    url = "memory://cluster-fence-dlq"
    text = PIPELINE.replace(
        "{name: s1, connector: memory, commit_interval: 50ms, config: {name: s1}}",
        "{name: s1, connector: memory, commit_interval: 50ms, config: {name: s1}, errors: "
        "{tolerance: all, dead_letter_topic: dlq, retry: {max_attempts: 3, initial_backoff: "
        "10ms, max_backoff: 10ms}}}",
    )
    a = await Running(load(tmp_path, text), url).start()
    await until(lambda: a.units() == UNITS and len(delivered("s1")) == 50)
    store = a.worker.store
    await store.append([Record({"late": i}, topic="t") for i in range(7)])
    assert await store.acquire_leases(["group p/s1"], "intruder", 60, now=time.time() + 30) == []
    time.sleep(1.5)  # the whole member stalls (a SIGSTOP) past its 1.2 s window
    await until(lambda: "group p/s1" not in a.member.units)
    await asyncio.sleep(0.5)
    assert await store.read("dlq", 0, 100) == []
    assert len(delivered("s1")) == 50  # the replaced owner wrote nothing
    assert a.worker.statuses["sink p/s1"].state == "STOPPED"
    assert await a.stop() == 0


def test_status_of_a_cluster_names_a_wrong_or_unreachable_store_without_a_traceback(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    done = runner.invoke(cli, ["--state", str(tmp_path / "s"), "status", "--cluster", "c"])
    assert done.exit_code == 1
    assert "--cluster c: a cluster runs on a redis:// or nats:// store" in done.output
    assert "sqlite:///" in done.output
    assert not (tmp_path / "s").exists()  # no SQLite store made on the way
    url = "redis://u:hunter2@127.0.0.1:1/0?reconnect_timeout=0.2"
    done = runner.invoke(cli, ["--store", url, "status", "--cluster", "c"])
    assert done.exit_code == 1, done.output
    assert "Error: mesh store redis://u:**********@127.0.0.1:1/0" in done.output
    assert "unreachable" in done.output
    assert "Traceback" not in done.output and "hunter2" not in done.output
    assert isinstance(done.exception, SystemExit)


def test_status_of_a_cluster_masks_the_token_of_a_nats_url(tmp_path: Path) -> None:
    """`nats://TOKEN@host` authenticates with TOKEN: it was shown as written."""
    token = f"tok-{uuid.uuid4().hex[:12]}"
    url = f"nats://{token}@127.0.0.1:1?reconnect_timeout=0"
    done = CliRunner().invoke(cli, ["--store", url, "status", "--cluster", "c"])
    assert done.exit_code == 1, done.output
    assert "Error: mesh store nats://**********@127.0.0.1:1" in done.output
    assert token not in done.output


async def test_a_dead_members_lease_is_forgotten_after_the_failover_timeout(
    tmp_path: Path,
) -> None:
    url = "memory://cluster-forget"
    store = MemoryStore(url)
    await store.open()
    dead = "member c otherhost:4711:1:5e0c1a9b22f1"  # SIGKILLed on another host
    assert await store.acquire_leases([dead], "otherhost:4711:1:5e0c1a9b22f1", 1, now=0) == []
    recent = "member c otherhost:4712:1:0b6d7f3e9a14"  # died a moment ago: still shown
    owner = "otherhost:4712:1:0b6d7f3e9a14"
    assert await store.acquire_leases([recent], owner, 1, now=time.time() - 1.5) == []
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    names = {lease.name for lease in await store.leases()}
    assert dead not in names and recent in names
    report = await cluster_report(store, "c")
    assert [m["alive"] for m in report["members"] if m["id"] == owner] == [False]
    assert await a.stop() == 0


def test_validate_names_the_cluster_line_of_a_file_whose_store_cannot_run_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("store: sqlite:///mesh.db\ncluster: shop\npipelines: []\n")
    done = CliRunner().invoke(cli, ["validate", str(path)])
    assert done.exit_code == 1
    assert f"{path}:2:10: cluster: 'shop' needs a redis:// or nats:// store" in done.output
    path.write_text("cluster: shop\npipelines: []\n")  # the store may come from --store
    assert CliRunner().invoke(cli, ["validate", str(path)]).exit_code == 0


def test_a_wrong_cluster_option_is_named_without_pydantic_wording(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--store", "redis://127.0.0.1:1/0", "--state", str(tmp_path), "run", "--cluster"]
    done = runner.invoke(cli, [*args, "a b"])
    assert done.exit_code == 2
    assert "Error: --cluster: use letters, digits" in done.output
    done = runner.invoke(cli, [*args, "c", "--failover-timeout", "500ms"])
    assert "Error: --failover-timeout: at least 1s" in done.output
    assert "Value error" not in done.output
    done = runner.invoke(cli, [*args, "c", "--failover-timeout", "100000h"])
    assert "Error: --failover-timeout: at most 1h" in done.output


@pytest.mark.parametrize(
    ("mine", "others", "units", "coming", "gives_back"),
    [
        (3, [0], 3, 0, True),  # a newcomer: 3 units on 2 members
        # The unit just given back is not taken yet: giving back another left 1 and 2 (the
        # 3-worker CDC test saw it when the newcomer's round came 12 ms after this one's).
        (2, [0], 3, 1, False),
        (2, [1], 3, 0, False),
        (2, [0], 3, 0, True),  # the newcomer has nothing and nothing is on its way
        (4, [0, 0], 4, 0, True),
        (3, [0, 0], 4, 1, True),  # the others lack 4 of the share 2; 1 is coming
        (2, [0, 0], 4, 2, False),  # both lack 1 of the lower share; 2 are coming
        (2, [2, 0], 4, 0, True),  # 2, 2, 0 ends 2, 1, 1
        (2, [1, 1], 4, 0, False),
        (1, [0], 1, 0, False),
        (0, [0], 0, 0, False),
    ],
)
def test_a_member_gives_back_only_what_the_others_lack_beyond_what_is_coming(
    mine: int, others: list[int], units: int, coming: int, gives_back: bool
) -> None:
    assert over_share(mine, others, units, coming) is gives_back


async def test_a_third_member_gets_a_unit_when_two_hold_two_each(tmp_path: Path) -> None:
    """4 units on 3 members: 2, 1, 1. The rule "above ceil(4 / 3) = 2" alone left the third
    member idle next to two members at 2."""
    url = "memory://cluster-third"
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    b = await Running(fileless(), url).start()
    await until(lambda: len(a.units()) == 2 and len(b.units()) == 2)
    c = await Running(fileless(), url).start()
    await until(lambda: sorted(len(m.units()) for m in (a, b, c)) == [1, 1, 2])
    await asyncio.sleep(1.5)  # five rounds: it stays so (no unit moves back and forth)
    assert sorted(len(m.units()) for m in (a, b, c)) == [1, 1, 2]
    assert a.units() | b.units() | c.units() == UNITS
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    for m in (a, b, c):
        assert await m.stop() == 0
    for s in ("s1", "s2", "s3"):
        assert delivered(s) == list(range(50))


async def test_a_member_names_a_unit_held_by_a_worker_outside_the_cluster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "memory://cluster-outside"
    store = MemoryStore(url)
    await store.open()
    plain = "otherhost:4711:1:5e0c1a9b22f1"  # a plain `meshconnect run` of the same pipeline
    assert await store.acquire_leases(["group p/s2"], plain, 60, now=time.time()) == []
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS - {"group p/s2"})
    await until(lambda: "group p/s2 is held by worker pid 4711 on host otherhost" in caplog.text)
    assert caplog.text.count("is held by") == 1  # once, not every round
    await store.break_leases([Lease("group p/s2", plain, 0)])  # the plain worker stops
    await until(lambda: a.units() == UNITS)
    assert await a.stop() == 0


async def test_a_definition_another_members_publish_overwrote_is_published_again(
    tmp_path: Path,
) -> None:
    """On NATS the definitions are one KV value: two members publishing different pipelines at
    the same moment could each write theirs over the other's, and one pipeline was never run
    (1 start in 6 on a real server). Here the overwrite is made by hand."""
    url = "memory://cluster-lost"
    a = await Running(load(tmp_path, PIPELINE), url).start()
    await until(lambda: a.units() == UNITS)
    store = a.worker.store
    other = {"version": 1, "digest": "0", "definition": {"pipeline": {"name": "q"}}, "by": "x"}
    await store.set_positions(definitions_id("c"), {"q": other})  # p's definition is gone
    for _ in range(100):
        await asyncio.sleep(0.05)
        stored = await store.positions(definitions_id("c"))
        if "p" in stored:
            break
    assert set(stored) == {"p", "q"}
    assert stored["p"]["by"] == a.member.owner
    assert a.units() >= UNITS  # p kept running
    assert await a.stop() == 0


async def test_a_member_with_an_equal_file_elsewhere_resolves_paths_as_the_publisher(
    tmp_path: Path,
) -> None:
    """The same text in another directory joins, and its relative paths resolve against the
    publisher's directory (as a member without files does): they resolved against its own, so
    a file source that failed over read another file from its beginning."""
    text = PIPELINE
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    url = "memory://cluster-dirs"
    a = await Running(load(tmp_path / "a", text), url).start()
    await until(lambda: a.units() == UNITS)
    b = await Running(load(tmp_path / "b", text), url).start()
    await until(lambda: b.worker.member is not None and "p" in b.member.pipelines)
    assert b.member.pipelines["p"].base_dir == str(tmp_path / "a")
    assert await a.stop() == 0 and await b.stop() == 0


async def test_a_pipeline_a_member_cannot_load_is_named_by_field_not_by_json_column(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "memory://cluster-broken"
    monkeypatch.setenv("MC_CLUSTER_BATCH", "7")
    text = PIPELINE.replace("batch_size: 7", "batch_size: '${env:MC_CLUSTER_BATCH}'")
    a = await Running(load(tmp_path, text), url).start()
    await until(lambda: a.units() == UNITS)
    monkeypatch.delenv("MC_CLUSTER_BATCH")
    b = await Running(fileless(), url).start()
    await until(lambda: "cannot run pipeline p" in caplog.text)
    line = next(r.getMessage() for r in caplog.records if "cannot run pipeline p" in r.message)
    assert f"version 1 (published from {tmp_path / 'p.yaml'}; it leaves it" in line
    assert line.endswith(
        "): source.config.batch_size: undefined environment variable "
        "MC_CLUSTER_BATCH (set it, or write ${env:MC_CLUSTER_BATCH:-default})"
    )
    assert await b.stop() == 0 and await a.stop() == 0


async def test_a_unit_that_failed_for_good_is_not_taken_again_by_its_member(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sink whose path is wrong (a ConfigError) stops for good on its member, which leaves it
    to the others and stays in the cluster. It was released and taken again every round (five
    failures a second), and a member whose units had all failed left the cluster."""
    (tmp_path / "a-directory").mkdir()
    text = f"""
    cluster: {{name: c, failover_timeout: 3s}}
    pipelines:
      - name: q
        sinks:
          - name: bad
            connector: memory
            topics: [t]
            config: {{name: bad, path: '{tmp_path / "a-directory"}'}}
    """
    a = await Running(load(tmp_path, text), "memory://cluster-failed").start()
    await until(lambda: a.worker.statuses.get("sink q/bad") is not None)
    await until(lambda: a.worker.statuses["sink q/bad"].state == "FAILED")
    await asyncio.sleep(1.5)  # five rounds
    assert caplog.text.count("sink q/bad FAILED") == 1
    assert a.units() == set() and a.member.failed_here == {"group q/bad"}
    assert a.task is not None and not a.task.done()
    report = await cluster_report(a.worker.store, "c")
    assert report["pipelines"][0]["units"][0]["owner"] is None  # free for another member
    (tmp_path / "a-directory").rmdir()  # the cause is fixed; a restart over the admin API
    await a.member.restart_units("q")
    await until(lambda: a.units() == {"group q/bad"})
    await until(lambda: a.worker.statuses["sink q/bad"].state == "RUNNING")
    assert await a.stop() == 0  # the restarted unit runs: its failure is forgotten


async def test_a_target_state_overwritten_at_the_same_moment_is_set_again(
    tmp_path: Path,
) -> None:
    """On NATS a cluster's target states are one KV value: another member that sets another
    pipeline's at the same moment may write back the value it read, without this one."""
    a = await Running(load(tmp_path, PIPELINE), "memory://cluster-target-race").start()
    await until(lambda: a.units() == UNITS)
    store = a.worker.store
    key = target_states_id("c")
    append = store.append
    lost: list[Any] = []

    async def racing(records: Any, positions: Any = None) -> list[int]:
        if positions and any(k == key for k, _ in positions) and not lost:
            lost.append(positions)  # the other member's write replaced this one
            return []
        return await append(records, positions)

    store.append = racing  # type: ignore[method-assign]
    await a.member.set_target("p", "PAUSED")
    assert lost and (await store.positions(key))["p"]["state"] == "PAUSED"
    assert all(u.view.paused for u in a.member.units.values())
    assert await a.stop() == 0
