"""One owner per source and per consumer group: leases in the mesh store.

Two workers started on one store with the same pipeline would both read the source and both
feed the sinks: every record stored twice and written four times. So before it starts a
pipeline, a worker takes a lease in the store on each source (``"source <pipeline>/<name>"``)
and each sink's consumer group (``"group <pipeline>/<sink>"``), all at once or not at all
(:meth:`~meshconnect.mesh.store.MeshStore.acquire_leases`). A second worker finds them held and
stops with a message naming the owner (process id and host); ``offsets reset`` refuses while
a live worker owns the pipeline.

A lease lasts :data:`LEASE_TTL` seconds and the owner renews it every :data:`RENEW_EVERY`
seconds. A worker that dies leaves its lease behind: on the same host the next worker sees
that its process is gone and takes the lease at once; a worker on another host waits for the
lease to expire. A worker that finds its lease taken by another (it stalled past the TTL)
stops, rather than run next to the new owner. The scale-out leases of the Redis and NATS
stores generalise these: the same four store methods, the same names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import MeshconnectError, StoreLostError
from .store import Lease, MeshStore

if TYPE_CHECKING:
    from ..config.loader import LoadedConfig

__all__ = [
    "LEASE_TTL",
    "RENEW_EVERY",
    "Ownership",
    "OwnershipError",
    "describe_owner",
    "lease_names",
    "live_leases",
    "worker_identity",
]

log = logging.getLogger("meshconnect.ownership")

#: How long a lease lasts without renewal (seconds).
LEASE_TTL = 30.0
#: How often the owner renews its leases (seconds).
RENEW_EVERY = 5.0


class OwnershipError(MeshconnectError):
    """Another live worker owns a source or consumer group this worker was to run."""


def worker_identity() -> str:
    """``host:pid:start:token``: unique per worker, where ``start`` is when the process started
    (so a process that got a dead worker's pid, as a restarted container's PID 1 does, is not
    taken for it; empty where the system does not tell), followed by ``@`` and the process's
    PID namespace where Linux tells it (``1234@4026531836``): a pid means something only in its
    own namespace. ``$MESHCONNECT_WORKER_NAME`` replaces the host name (then a dead worker's
    leases are not recognised as this host's: they expire)."""
    pid = os.getpid()
    host = os.environ.get("MESHCONNECT_WORKER_NAME") or socket.gethostname()
    start = _started(pid)
    namespace = _pid_namespace()
    if namespace:
        start = f"{start}@{namespace}"
    return f"{host}:{pid}:{start}:{uuid.uuid4().hex[:12]}"


def _pid_namespace() -> str:
    """This process's PID namespace (the inode number of ``/proc/self/ns/pid``), or ``""``."""
    try:
        link = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return ""
    return "".join(c for c in link if c.isdigit())


def _parts(owner: str) -> tuple[str, str, str]:
    """``(host, pid, start)`` of an identity."""
    host, _, rest = owner.partition(":")
    pid, _, rest = rest.partition(":")
    start = rest.partition(":")[0]
    return host, pid, start


def _stat(pid: int) -> list[bytes]:
    """The fields of ``/proc/PID/stat`` after the command name (state first), or ``[]``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    # The command name (field 2) is in parentheses and may hold spaces: count after it.
    return stat[stat.rfind(b")") + 2 :].split()


def _started(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``), or ``""``."""
    fields = _stat(pid)
    return fields[19].decode() if len(fields) > 19 else ""


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and only waits for its parent to reap it (state ``Z``)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] == b"Z"


def describe_owner(owner: str) -> str:
    """``worker pid 1234 on host db1`` for an identity made by :func:`worker_identity`."""
    host, pid, _ = _parts(owner)
    return f"worker pid {pid} on host {host}" if pid.isdigit() else f"worker {owner}"


def lease_names(config: LoadedConfig) -> list[str]:
    """The leases running ``config`` needs: each source and each sink's consumer group."""
    from ..offsets import sink_groups, source_id

    names = [
        f"source {source_id(p.name, p.source.name)}"
        for p in config.pipelines
        if p.source is not None
    ]
    names += [
        f"group {group}"
        for p in config.pipelines
        for s in p.sinks
        for group in sink_groups(p, s.name)
    ]
    return sorted(set(names))


def _dead_here(lease: Lease) -> bool:
    """Whether ``lease`` belongs to a worker on this host whose process is gone (or whose pid
    now belongs to a process that started later). A worker in another PID namespace under the
    same host name (containers with the host's network or one ``hostname:``) cannot be looked
    up by its pid: its lease is left to expire, as a remote worker's is (it was taken for dead,
    and two such members took each other's units every round)."""
    host, pid, start = _parts(lease.owner)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    start, _, namespace = start.partition("@")
    if namespace and namespace != _pid_namespace():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    if _zombie(int(pid)):
        # killed, not yet reaped by its parent (a shell or a container's init that reaps
        # late): its pid still answers, but it renews nothing; a restart right after a
        # SIGKILL was refused until the lease expired (found by the cdctrial)
        return True
    return bool(start) and _started(int(pid)) not in ("", start)


async def live_leases(store: MeshStore, names: Sequence[str] | None = None) -> list[Lease]:
    """The leases (of ``names``, or all) held by a worker that is alive as far as can be told:
    not expired, and not of a dead process on this host. ``[]`` for a store without leases."""
    try:
        held = await store.leases()
    except NotImplementedError:
        return []
    now = time.time()
    wanted = None if names is None else set(names)
    return [
        lease
        for lease in held
        if (wanted is None or lease.name in wanted)
        and lease.expires > now
        and not _dead_here(lease)
    ]


class Ownership:
    """The leases one worker holds; :meth:`acquire` takes them, :meth:`keep` renews them
    until :meth:`release`."""

    def __init__(self, store: MeshStore, names: Sequence[str], owner: str | None = None) -> None:
        self.store = store
        self.names = list(names)
        self.owner = owner or worker_identity()
        self.supported = True
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self) -> None:
        """Take every lease, or raise OwnershipError naming who holds which."""
        if not self.names:
            return
        try:
            conflicts = await self._take()
        except NotImplementedError:
            self.supported = False
            log.warning(
                "store %s has no leases: nothing stops a second worker from running the same "
                "pipelines on it",
                self.store.url,
            )
            return
        if conflicts:
            raise OwnershipError(_conflict_message(conflicts, self.store.url))

    async def _take(self) -> list[Lease]:
        conflicts = await self.store.acquire_leases(
            self.names, self.owner, LEASE_TTL, now=time.time()
        )
        stale = [lease for lease in conflicts if _dead_here(lease)]
        if stale and len(stale) == len(conflicts):
            log.info(
                "taking over from %s, which is no longer running",
                ", ".join(sorted({describe_owner(lease.owner) for lease in stale})),
            )
            await self.store.break_leases(stale)
            conflicts = await self.store.acquire_leases(
                self.names, self.owner, LEASE_TTL, now=time.time()
            )
        return conflicts

    def keep(self, lost: Callable[[str], None]) -> None:
        """Renew the leases in the background; call ``lost(reason)`` if another owner took one,
        or the store lost the mesh (this worker must then stop)."""
        if not self.names or not self.supported:
            return

        async def renew() -> None:
            while True:
                await asyncio.sleep(RENEW_EVERY)
                try:
                    conflicts = await self._take()
                except StoreLostError as exc:  # the mesh is gone: nothing left to own
                    lost(str(exc))
                    return
                except Exception as exc:  # a store hiccup: try again at the next round
                    log.warning("could not renew the pipeline leases: %s", exc)
                    continue
                if conflicts:
                    lost(_conflict_message(conflicts, self.store.url, lost=True))
                    return

        self._renewer = asyncio.create_task(renew(), name="leases")

    async def release(self) -> None:
        """Stop renewing and give the leases up (so the next worker starts at once)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None
        if self.names and self.supported:
            try:
                await self.store.release_leases(self.owner)
            except Exception as exc:  # they expire by themselves
                log.warning("could not release the pipeline leases: %s", exc)


def _conflict_message(conflicts: Sequence[Lease], url: str, *, lost: bool = False) -> str:
    by_owner: dict[str, list[str]] = {}
    for lease in conflicts:
        by_owner.setdefault(lease.owner, []).append(lease.name)
    held = "; ".join(
        f"{', '.join(sorted(names))} owned by {describe_owner(owner)}"
        for owner, names in sorted(by_owner.items())
    )
    if lost:
        return f"another worker took over this worker's pipelines in {url}: {held}"
    expires = max(lease.expires for lease in conflicts) - time.time()
    return (
        f"another worker is running these pipelines on the store {url}: {held} (its lease ends "
        f"{max(0, round(expires))} s after it stops renewing it); stop that worker first, or "
        "give this one another --state / --store"
    )
