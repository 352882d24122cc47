"""Leases in the store: one owner per source and consumer group (docs/security.md), on every
store backend."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.ownership import (
    LEASE_TTL,
    Ownership,
    OwnershipError,
    describe_owner,
    live_leases,
    worker_identity,
)
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.mesh.store import Lease, MeshStore


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MeshStore]:
    made: MeshStore = (
        SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
        if request.param == "sqlite"
        else MemoryStore()
    )
    await made.open()
    yield made
    await made.close()


async def test_leases_are_taken_all_or_none(store: MeshStore) -> None:
    first = await store.acquire_leases(["source a", "group a"], "w1", 30, now=100)
    second = await store.acquire_leases(["group b", "group a"], "w2", 30, now=110)
    renewed = await store.acquire_leases(["source a", "group a"], "w1", 30, now=120)

    assert (first, renewed) == ([], [])
    assert second == [Lease("group a", "w1", 130)]
    assert await store.leases() == [Lease("group a", "w1", 150), Lease("source a", "w1", 150)]


async def test_an_expired_lease_is_free_and_a_released_one_is_gone(store: MeshStore) -> None:
    await store.acquire_leases(["group a"], "w1", 30, now=100)
    taken = await store.acquire_leases(["group a"], "w2", 30, now=131)
    await store.release_leases("w2")

    assert taken == []
    assert await store.leases() == []


async def test_break_leases_deletes_only_the_same_owners(store: MeshStore) -> None:
    await store.acquire_leases(["group a"], "w1", 30, now=100)
    await store.break_leases([Lease("group a", "w0", 0)])
    kept = await store.leases()
    await store.break_leases([Lease("group a", "w1", 0)])

    assert kept == [Lease("group a", "w1", 130)]
    assert await store.leases() == []


async def test_a_second_owner_is_refused_with_the_holders_name(store: MeshStore) -> None:
    first = Ownership(store, ["source p/file", "group p/file"])
    await first.acquire()
    second = Ownership(store, ["group p/file"])

    with pytest.raises(OwnershipError) as caught:
        await second.acquire()
    await first.release()
    await second.acquire()

    assert str(caught.value).startswith(
        f"another worker is running these pipelines on the store {store.url}: group p/file "
        f"owned by worker pid {os.getpid()} on host {socket.gethostname()} (its lease ends "
        f"{round(LEASE_TTL)} s after it stops renewing it)"
    )
    assert [lease.owner for lease in await live_leases(store)] == [second.owner]


@pytest.mark.parametrize(
    "dead",
    [
        "{host}:999999999::token",  # no such process
        "{host}:{pid}:1:token",  # our pid, but a process that started at boot: not us
        "{host}:999999999:5@{ns}:token",  # no such process in our PID namespace
    ],
)
async def test_a_dead_workers_lease_on_this_host_is_taken_over(store: MeshStore, dead: str) -> None:
    owner = dead.format(
        host=socket.gethostname(), pid=os.getpid(), ns=os.stat("/proc/self/ns/pid").st_ino
    )
    await store.acquire_leases(["group p/file"], owner, 3600, now=0)
    ours = Ownership(store, ["group p/file"])

    stale = await live_leases(store)
    await ours.acquire()

    assert stale == []
    assert [lease.owner for lease in await store.leases()] == [ours.owner]


async def test_a_killed_worker_not_yet_reaped_is_taken_for_dead(store: MeshStore) -> None:
    """A worker killed with SIGKILL whose parent has not reaped it yet is a zombie: its pid
    answers ``kill(pid, 0)`` with the same start time, so a restart right after the kill was
    refused until the lease expired (found by the cdctrial, restarting a worker run from a
    shell script)."""
    import signal
    import subprocess
    import sys
    import time

    from meshconnect.mesh.ownership import _started

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = _started(child.pid)
        namespace = os.stat("/proc/self/ns/pid").st_ino
        owner = f"{socket.gethostname()}:{child.pid}:{start}@{namespace}:t"
        await store.acquire_leases(["group p/file"], owner, 3600, now=time.time())
        assert [lease.owner for lease in await live_leases(store)] == [owner]  # alive
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until the kernel has made it a zombie
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        ours = Ownership(store, ["group p/file"])
        await ours.acquire()
        assert [lease.owner for lease in await store.leases()] == [ours.owner]
    finally:
        child.kill()
        child.wait()


async def test_a_remote_workers_lease_waits_for_its_expiry(store: MeshStore) -> None:
    import time

    await store.acquire_leases(["group p/file"], "elsewhere:1:5:t", 3600, now=time.time())

    with pytest.raises(OwnershipError, match="owned by worker pid 1 on host elsewhere"):
        await Ownership(store, ["group p/file"]).acquire()


async def test_a_lease_of_another_pid_namespace_on_this_host_waits_for_its_expiry(
    store: MeshStore,
) -> None:
    """Containers sharing the host's name (host networking) each have their own pids: a pid
    that does not exist here may be a live worker there. Taking such a lease for dead made two
    cluster members take each other's units every round (found by the cluster trial)."""
    import time

    other = os.stat("/proc/self/ns/pid").st_ino + 1
    owner = f"{socket.gethostname()}:999999999:5@{other}:t"
    await store.acquire_leases(["group p/file"], owner, 3600, now=time.time())

    assert [lease.owner for lease in await live_leases(store)] == [owner]
    with pytest.raises(OwnershipError, match="owned by worker pid 999999999 on host"):
        await Ownership(store, ["group p/file"]).acquire()


def test_a_worker_identity_names_host_pid_and_start() -> None:
    identity = worker_identity()
    host, pid, start, token = identity.split(":")

    assert (host, pid) == (socket.gethostname(), str(os.getpid()))
    ticks, _, namespace = start.partition("@")
    assert ticks.isdigit() and namespace == str(os.stat("/proc/self/ns/pid").st_ino)
    assert len(token) == 12
    assert describe_owner(identity) == f"worker pid {os.getpid()} on host {host}"
