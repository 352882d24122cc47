"""The admin API of cluster members (``run --cluster --admin``), in one process on a shared
memory store: every member shows the whole cluster and its own tasks, a restart restarts the
units the member owns, pause, resume and stop set a target state every member applies, and
what cannot act on the whole cluster is refused with a 409 (integration/test_cluster_admin.py
and test_cluster_targets.py run worker processes on Redis and NATS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_cluster import PIPELINE, UNITS, Running, delivered, fileless, load, until

from meshconnect.admin import AdminServer, Controller
from meshconnect.admin.control import NotFound
from meshconnect.cluster import cluster_report
from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import MemorySink, test_registry
from meshconnect.worker import Worker

TOKEN = "cluster-admin-test-token"


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    MemorySink.outputs.clear()


class Member(Running):
    """A cluster member with its admin API on a free loopback port."""

    async def start(self) -> Member:
        await super().start()
        self.server = AdminServer(
            Controller(self.worker, test_registry()), "127.0.0.1:0", TOKEN, None
        )
        port = await self.server.start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.url + path, json=body, headers=headers) as response,
        ):
            return response.status, await response.json(content_type=None)

    async def stop(self) -> int:
        code = await super().stop()
        await self.server.close()
        return code


@pytest.fixture
async def members(tmp_path: Path) -> AsyncIterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        if m.task is not None and not m.task.done():
            await m.stop()


def owners(view: dict[str, Any]) -> dict[str, str | None]:
    return {u["unit"]: u["owner"] for p in view["pipelines"] for u in p["units"]}


async def test_every_member_shows_the_whole_cluster_and_its_own_tasks(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-view"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    b = await Member(fileless(), url).start()
    members.append(b)
    await until(lambda: len(a.units()) == 2 and len(b.units()) == 2)
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    views = {}
    for m in (a, b):
        status, views[m] = await m.call("GET", "/cluster")
        assert status == 200
        view = views[m]
        assert view["cluster"] == "c" and view["member"]["id"] == m.member.owner
        assert view["member"]["joined"] is True
        alive = {x["id"] for x in view["members"] if x["alive"]}
        assert alive == {a.member.owner, b.member.owner}
        assert owners(view) == {
            **dict.fromkeys(a.units(), a.member.owner),
            **dict.fromkeys(b.units(), b.member.owner),
        }
        (pipeline,) = view["pipelines"]
        assert (pipeline["name"], pipeline["version"], pipeline["loaded"]) == ("p", 1, True)
        for unit in pipeline["units"]:
            assert unit["local"] is (unit["unit"] in m.units())
            assert unit["epoch"] is not None
            if unit["local"]:
                assert unit["task"]["state"] == "RUNNING"
            else:
                assert unit["task"] is None
    # A connector's status: this member's tasks only, and who owns every unit.
    for m in (a, b):
        status, body = await m.call("GET", "/connectors/p/status")
        assert status == 200
        assert body["state"] == "RUNNING" and body["origin"] == "cluster c version 1"
        tasks = {("group " if t["kind"] == "sink" else "source ") + t["id"] for t in body["tasks"]}
        assert tasks == m.units()
        assert body["cluster"]["version"] == 1
        assert {u["unit"]: u["owner"] for u in body["cluster"]["units"]} == owners(views[m])
        status, ready = await m.call("GET", "/ready")
        assert (status, ready) == (200, {"status": "READY"})
    # A fifth member with four units on four members runs nothing: it still shows the
    # cluster, its connector as run by the others, and refuses to restart it.
    extra = [await Member(fileless(), url).start() for _ in range(3)]
    members.extend(extra)
    everyone = (a, b, *extra)
    await until(lambda: sorted(len(m.units()) for m in everyone) == [0, 1, 1, 1, 1])
    c = next(m for m in everyone if not m.units())
    await until(lambda: c.member.joined and c.member._rounds >= 3)
    assert c.units() == set()
    status, view = await c.call("GET", "/cluster")
    assert len([x for x in view["members"] if x["alive"]]) == 5
    assert not any(u["local"] for p in view["pipelines"] for u in p["units"])
    status, body = await c.call("GET", "/connectors/p/status")
    assert (status, body["state"], body["tasks"]) == (200, "RUNNING", [])
    status, body = await c.call("POST", "/connectors/p/restart")
    assert status == 409
    assert "runs none of its units" in body["detail"]
    assert "worker pid" in body["detail"]  # names the owners
    for m in everyone:
        assert await m.stop() == 0
    for s in ("s1", "s2", "s3"):
        assert delivered(s) == list(range(50))


async def test_a_restart_restarts_the_units_the_member_owns_and_nothing_else(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-restart"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    b = await Member(fileless(), url).start()
    members.append(b)
    await until(lambda: len(a.units()) == 2 and len(b.units()) == 2)
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    mine = set(a.units())
    tasks = {n: u.task for n, u in a.member.units.items()}
    others = {n: u.task for n, u in b.member.units.items()}
    epochs = {n: lease.epoch for n, lease in ((lease.name, lease) for lease in
              await a.worker.store.leases())}  # fmt: skip
    status, body = await a.call("POST", "/connectors/p/restart")
    assert status == 202 and body["name"] == "p"
    assert a.units() == mine  # the same units, under the same leases ...
    for name in mine:  # ... with new tasks
        assert a.member.units[name].task is not tasks[name]
        assert not a.member.units[name].task.done()  # type: ignore[union-attr]
    for name, task in others.items():  # the other member's were not touched
        assert b.member.units[name].task is task
    leases = {lease.name: lease for lease in await a.worker.store.leases()}
    for name in mine:
        assert (leases[name].owner, leases[name].epoch) == (a.member.owner, epochs[name])
    await until(
        lambda: all(a.worker.statuses[a.member._status_key(a.member.units[n])].state == "RUNNING"
                    for n in mine)
    )  # fmt: skip
    # Rounds go on without reaping the restarted units.
    rounds = a.member._rounds
    await until(lambda: a.member._rounds >= rounds + 3)
    assert a.units() == mine
    assert await a.stop() == 0 and await b.stop() == 0
    for s in ("s1", "s2", "s3"):  # restarted sinks resumed from their commits
        assert delivered(s) == list(range(50))


async def test_what_cannot_act_on_the_whole_cluster_is_refused(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-refuse"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    refused = [
        ("PUT", "/connectors/p", {"source": {"connector": "memory"}}),
        ("PUT", "/connectors/new/config", {"source": {"connector": "memory"}}),
        ("DELETE", "/connectors/p", None),
        ("PATCH", "/connectors/p/offsets", {"sinks": {"s1": "beginning"}}),
        ("DELETE", "/connectors/p/offsets", None),
    ]
    for method, path, body in refused:
        status, problem = await a.call(method, path, body)
        assert status == 409, (method, path, problem)
        assert "cluster 'c'" in problem["detail"], (method, path, problem)
    # Nothing was done: the units run on, unpaused, offsets where they were.
    assert a.units() == UNITS
    assert all(not u.view.paused and not u.view.halted for u in a.member.units.values())
    status, plan = await a.call("PATCH", "/connectors/p/offsets?dry_run=true", {"sinks": {"s1": 0}})
    assert status == 200 and plan["dry_run"] is True and plan["plans"][0]["id"] == "p/s1"
    assert (await a.call("GET", "/connectors"))[1] == ["p"]
    status, offsets = await a.call("GET", "/connectors/p/offsets")
    assert status == 200 and offsets["name"] == "p"
    assert await a.stop() == 0


async def test_outside_a_cluster_there_is_no_cluster_to_show(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.replace("cluster: {name: c, failover_timeout: 3s}\n", "").replace(
        "RECORDS", "[1]"))  # fmt: skip
    worker = Worker(load_pipeline_files([path], test_registry()), MemoryStore("memory://"))
    controller = Controller(worker, test_registry())
    assert controller.cluster is None
    with pytest.raises(NotFound, match="not a cluster member"):
        await controller.cluster_view()
    assert controller.origin("p") == f"file {path}"


def paused(m: Member) -> bool:
    """Whether ``m`` runs units and every one of them is paused."""
    units = [u for u in m.member.units.values() if not u.leaving]
    return bool(units) and all(u.view.paused for u in units)


async def split(a: Member, b: Member) -> None:
    await until(lambda: len(a.units()) == 2 and len(b.units()) == 2)


async def test_a_pause_on_one_member_pauses_every_members_units_and_those_taken_over(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-pause"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    b = await Member(fileless(), url).start()
    members.append(b)
    await split(a, b)
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    status, body = await b.call("PUT", "/connectors/p/pause")
    assert (status, body["state"]) == (202, "PAUSED")
    assert paused(b)  # the member asked at once; the other at its next round
    await until(lambda: paused(a))
    for m in (a, b):
        status, body = await m.call("GET", "/connectors/p/status")
        assert (body["state"], body["cluster"]["target_state"]) == ("PAUSED", "PAUSED")
        assert {t["state"] for t in body["tasks"]} == {"RUNNING"}  # the tasks' own states
        status, view = await m.call("GET", "/cluster")
        assert view["pipelines"][0]["target_state"] == "PAUSED"
    # B leaves: A takes its units over, paused before they poll or read.
    assert await b.stop() == 0
    await until(lambda: a.units() == UNITS)
    assert paused(a)
    status, body = await a.call("PUT", "/connectors/p/resume")
    assert status == 202 and body["state"] == "RUNNING"
    assert not any(u.view.paused for u in a.member.units.values())
    assert await a.stop() == 0
    for s in ("s1", "s2", "s3"):
        assert delivered(s) == list(range(50))


async def test_a_stopped_pipeline_runs_on_no_member_until_it_is_resumed(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-stop"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    b = await Member(fileless(), url).start()
    members.append(b)
    await split(a, b)
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    status, body = await a.call("PUT", "/connectors/p/stop")
    assert (status, body["state"]) == (202, "STOPPED")
    await until(lambda: not a.member.units and not b.member.units)
    for m in (a, b):  # the tasks each ran were drained, flushed and committed
        assert {st.state for st in m.worker.statuses.values()} == {"STOPPED"}
    rounds = b.member._rounds
    await until(lambda: b.member._rounds >= rounds + 3 and a.member._rounds >= rounds + 3)
    assert a.units() == b.units() == set()  # no member takes a stopped pipeline's units
    report = await cluster_report(a.worker.store, "c")
    assert not any(u["owner"] for u in report["pipelines"][0]["units"])
    assert report["pipelines"][0]["target_state"] == "STOPPED"
    for m in (a, b):
        status, body = await m.call("GET", "/connectors/p/status")
        assert (body["state"], body["cluster"]["target_state"], body["tasks"]) == (
            "STOPPED",
            "STOPPED",
            [],
        )
    status, problem = await b.call("PUT", "/connectors/p/pause")
    assert status == 409 and "resume it first" in problem["detail"]
    status, problem = await b.call("POST", "/connectors/p/restart")
    assert status == 409 and "is stopped" in problem["detail"]
    status, body = await b.call("PUT", "/connectors/p/resume")
    assert status == 202
    await split(a, b)
    assert await a.stop() == 0 and await b.stop() == 0
    for s in ("s1", "s2", "s3"):  # stopped after committing: nothing twice
        assert delivered(s) == list(range(50))


async def test_a_restarted_member_honours_the_target_state(
    tmp_path: Path, members: list[Member]
) -> None:
    url = "memory://cluster-admin-restart-member"
    a = await Member(load(tmp_path, PIPELINE), url).start()
    members.append(a)
    await until(lambda: a.units() == UNITS)
    await until(lambda: all(len(delivered(s)) == 50 for s in ("s1", "s2", "s3")))
    status, _ = await a.call("PUT", "/connectors/p/pause")
    assert status == 202 and paused(a)
    assert await a.stop() == 0
    again = await Member(load(tmp_path, PIPELINE), url).start()  # the same file
    members.append(again)
    await until(lambda: again.units() == UNITS)
    assert paused(again)
    tasks = {n: u.task for n, u in again.member.units.items()}
    status, _ = await again.call("POST", "/connectors/p/restart")
    assert status == 202
    assert all(u.task is not tasks[n] for n, u in again.member.units.items())
    assert paused(again)  # restarted units keep the cluster's target state
    assert await again.stop() == 0
