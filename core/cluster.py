"""Clustered workers: several ``meshconnect run --cluster NAME`` processes share the pipelines
of a Redis or NATS mesh store and split their work (docs/scaleout.md).

* **Definitions** live in the store, as the positions of the pseudo-connector
  ``cluster:NAME`` (one partition per pipeline: the pipeline as written, before
  interpolation, so no secret value is stored; each worker interpolates ``${env:…}`` with its
  own environment). A worker started with files publishes their pipelines; one started with
  none runs what the store holds, and every member picks up pipelines published later. A file
  whose pipeline differs from the stored one of the same name is refused while another member
  is alive (a stale file on a restarted worker must not undo a change); with no other live
  member it replaces it, with the next version number.
* **Units of work**: each pipeline's source and each of its sinks (consumer groups) is one
  unit, owned through its own store lease, named as a single worker's are (``source P/S``,
  ``group P/S``), with a fencing epoch that the store checks on every position update and
  group commit.
* **Members** hold a lease ``member NAME IDENTITY``. Every ``failover_timeout / 10`` seconds a
  member renews its leases (they last ``failover_timeout / 2``) in one call, then takes free
  units up to its fair share ``ceil(units / members)``, and gives back one unit over its
  share at a time (drained, flushed and committed, then released) for a newcomer to take:
  the other units never stop.
* **Target states**: each pipeline's ``STARTED``, ``PAUSED`` or ``STOPPED``, set over any
  member's admin API, lives in the store as the positions of ``cluster:NAME/targets`` (one
  partition per pipeline: ``{"state", "by", "at"}``; none: ``STARTED``). Every member reads
  them each round and applies them to the units it owns, and to every unit it takes later: a
  paused pipeline's units are paused (the source does not poll, the sinks committed and wait),
  a stopped pipeline's units are given back (drained, flushed, committed) and no member takes
  them until it is resumed.
* **Stepping down**: a unit writes (appends, sink writes and flushes) only while its lease is
  valid by this worker's clock (renewed less than ``failover_timeout / 2 - failover_timeout /
  10`` seconds ago) and the last renewal found it still its own. A worker that stalled past
  its lease (SIGSTOP, a long GC pause, a partition) stops the unit without writing when it
  wakes; a write that got past that check is refused by the store's epoch check
  (:class:`~meshconnect.mesh.store.FencedError`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, StoreError, StoreLostError, ValidationErrors
from .mesh.ownership import _dead_here, describe_owner, worker_identity
from .mesh.store import FencedError, Lease, MeshStore
from .offsets import check_partitions, sink_group, source_id
from .runstate import PipelineRunState, RunState

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline, LoadedSink
    from .worker import Worker

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterError",
    "ClusterMember",
    "check_cluster_store",
    "cluster_report",
    "definitions_id",
    "read_target_states",
    "target_states_id",
    "timings",
    "unit_owner",
]

log = logging.getLogger("meshconnect.cluster")

#: Store URL schemes a cluster runs on (a store every member reaches, with fenced leases).
CLUSTER_SCHEMES = ("redis", "rediss", "nats")


class ClusterError(ConfigError):
    """A cluster cannot run as configured (a store without fenced leases, a definition that
    differs from the one the cluster runs)."""


def timings(failover_timeout: float) -> tuple[float, float]:
    """``(lease TTL, renew interval)``: a lease lasts half the failover timeout and is renewed
    every tenth, so a dead worker's unit is free after at most the TTL and taken at the next
    round of a member (one interval), with half the timeout left for the unit to start."""
    return failover_timeout / 2, failover_timeout / 10


#: Rounds for which a unit this member gave back counts as on its way to another member.
GIVEN_BACK_ROUNDS = 3


def over_share(mine: int, others: Sequence[int], units: int, coming: int) -> bool:
    """Whether a member running ``mine`` units gives one back: it is above the fair share
    ``ceil(units / members)`` while the others (``others``: how many each runs) lack more than
    the ``coming`` units (being given back, or just given back) can fill; or above the lower
    share ``units // members`` while the others lack more than that of it (4 units on 3
    members end 2, 1, 1, not 2, 2, 0). Counting ``coming`` keeps a member that just gave one
    back from giving back a second before the newcomer's next round took the first (3 units on
    2 members ended 1 and 2, with a unit stopped for nothing)."""
    members = len(others) + 1
    for target in (math.ceil(units / members), units // members):
        lacking = sum(max(0, target - n) for n in others)
        if mine > target and lacking > coming:
            return True
    return False


def definitions_id(cluster: str) -> str:
    """The pseudo-connector whose positions hold a cluster's pipeline definitions."""
    return f"cluster:{cluster}"


def target_states_id(cluster: str) -> str:
    """The pseudo-connector whose positions hold a cluster's target states, by pipeline."""
    return f"cluster:{cluster}/targets"


#: What the admin API may ask of a cluster's pipeline (Kafka Connect's target states).
TARGET_STATES = ("STARTED", "PAUSED", "STOPPED")


async def read_target_states(store: MeshStore, cluster: str) -> dict[str, dict[str, Any]]:
    """Each pipeline's target state as stored (``{"state", "by", "at"}``); a pipeline left out
    is ``STARTED``."""
    stored = await store.positions(target_states_id(cluster))
    return {name: doc for name, doc in stored.items() if doc.get("state") in TARGET_STATES}


def target_state(states: dict[str, dict[str, Any]], pipeline: str) -> str:
    return str((states.get(pipeline) or {}).get("state") or "STARTED")


def member_prefix(cluster: str) -> str:
    return f"member {cluster} "


def check_cluster_store(config: LoadedConfig, url: str) -> None:
    """ClusterError unless ``url`` is a store a cluster can run on."""
    scheme = url.partition("://")[0]
    if scheme in CLUSTER_SCHEMES:
        return
    assert config.cluster is not None
    where = f"{config.cluster_at}: cluster" if config.cluster_at else "--cluster"
    shown = f"{scheme}://…" if "@" in url else url
    raise ClusterError(
        f"{where}: {config.cluster.name!r} needs a redis:// or nats:// store that every member "
        f"reaches (leases with fencing epochs), but this run's store is {shown}; give "
        "`store:` in the file or --store"
    )


def _plain(raw: Any) -> Any:
    """``raw`` (parsed YAML) as JSON data: YAML's exact decimals as JSON numbers (read back as
    the same decimals), dates and times as ISO text."""
    from decimal import Decimal

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if hasattr(value, "isoformat"):
            return value.isoformat()
        return str(value)

    return json.loads(json.dumps(raw, default=default))


def _digest(raw: Any) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:16]


def _difference(stored: Any, mine: Any, at: str = "") -> str:
    """Where two definitions first differ, as a path (``pipeline.sinks[1].config.path``)."""
    if isinstance(stored, dict) and isinstance(mine, dict):
        for key in [*stored, *(k for k in mine if k not in stored)]:
            if stored.get(key, ...) != mine.get(key, ...):
                return _difference(stored.get(key), mine.get(key), f"{at}.{key}" if at else key)
        return ""
    if isinstance(stored, list) and isinstance(mine, list) and len(stored) == len(mine):
        for i, (a, b) in enumerate(zip(stored, mine, strict=True)):
            if a != b:
                return _difference(a, b, f"{at}[{i}]")
        return ""
    return at


@dataclass(eq=False)
class Unit:
    """One source or sink this worker runs (or is starting, or giving back)."""

    lease: str
    pipeline: str
    sink: str | None
    view: UnitState
    #: Which consumer of the sink (a pipeline with ``partitions:``), else ``None``.
    slot: int | None = None
    task: asyncio.Task[None] | None = None
    #: Monotonic time until which this worker may write for the unit (its lease, less a
    #: margin for clocks and the renewal round trip).
    valid_until: float = 0.0
    lost: bool = False
    leaving: bool = False
    #: Being restarted over the admin API (its task ended; a new one starts under the lease).
    restarting: bool = False
    taken_at: float = field(default_factory=time.monotonic)


class UnitState(PipelineRunState):
    """A unit's view of the run: halted alone; :meth:`guard` before every write."""

    def __init__(self, run: RunState, name: str, member: ClusterMember, lease: str) -> None:
        super().__init__(run, name)
        self.member = member
        self.lease = lease

    def guard(self) -> None:
        """FencedError unless this worker still owns the unit (by its own clock)."""
        unit = self.member.units.get(self.lease)
        if unit is None or unit.view is not self:
            raise FencedError(f"{self.lease} is no longer this worker's")
        if unit.lost:
            raise FencedError(f"another worker took over {self.lease}")
        if time.monotonic() > unit.valid_until:
            raise FencedError(
                f"the lease on {self.lease} lapsed (this worker did not renew it in time: "
                "stalled or cut off from the store)"
            )

    def guarded(self, sink: Any) -> Any:
        return _GuardedSink(sink, self.guard)


class _GuardedSink:
    """A sink whose writes and flushes first check that this worker still owns it."""

    def __init__(self, sink: Any, guard: Any) -> None:
        self._sink = sink
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    async def write(self, records: Sequence[Any]) -> None:
        self._guard()
        await self._sink.write(records)

    async def flush(self) -> Any:
        self._guard()
        return await self._sink.flush()


class ClusterMember:
    """Runs a worker as a member of its config's cluster (see the module docstring)."""

    def __init__(self, worker: Worker) -> None:
        config = worker.config
        assert config.cluster is not None
        self.worker = worker
        self.store: MeshStore = worker.store
        self.name = config.cluster.name
        self.failover_timeout = config.cluster.failover_timeout
        self.ttl, self.every = timings(self.failover_timeout)
        self.owner = worker_identity()
        self.member_lease = member_prefix(self.name) + self.owner
        #: Units this worker runs, by lease name.
        self.units: dict[str, Unit] = {}
        #: Every pipeline of the cluster this worker can run, by name, with its version.
        self.pipelines: dict[str, LoadedPipeline] = {}
        self.versions: dict[str, int] = {}
        self.broken: dict[str, int] = {}  # pipelines this worker cannot load: name -> version
        self.own = {p.name: p for p in config.pipelines}
        # The worker's pipelines become those of the cluster this worker can run (refresh).
        config.pipelines = []
        self._rounds = 0
        self._given_back: dict[str, int] = {}  # unit -> the round this member released it in
        self._outside: set[str] = set()  # units held by workers outside the cluster
        self.failed_here: set[str] = set()  # units that failed for good on this member
        self._leaving: set[asyncio.Task[None]] = set()
        #: Each pipeline's target state as last read from the store or set here (by name).
        self.targets: dict[str, dict[str, Any]] = {}
        #: When this member last set a target state (monotonic): a round's read of the store
        #: that began before it may not show it yet, and is not applied.
        self._target_set_at = 0.0
        #: Whether :meth:`join` is done (the admin API's ``/ready``).
        self.joined = False

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        worker = self.worker
        await self.join()
        background = [
            asyncio.create_task(worker._retention_loop(), name="retention"),
            asyncio.create_task(worker._progress_loop(), name="progress"),
            asyncio.create_task(worker._metrics_loop(), name="metrics"),
        ]
        try:
            while not worker.stopping:
                began = time.monotonic()
                try:
                    await self.round()
                except (asyncio.CancelledError, KeyboardInterrupt):
                    raise
                except StoreLostError as exc:  # the mesh is gone: nothing left to share
                    log.error("cluster %s: %s: stopping", self.name, exc)
                    worker.state.gave_up.append(str(exc))
                    break
                except Exception as exc:  # the store is away: the next round tries again
                    log.warning("cluster %s: %s: %s", self.name, type(exc).__name__, exc)
                left = self.every - (time.monotonic() - began)
                if left > 0:
                    stopped = asyncio.ensure_future(worker.state.stopped())
                    await asyncio.wait([stopped], timeout=left)
                    stopped.cancel()
        finally:
            worker.stop()
            tasks = [u.task for u in self.units.values() if u.task is not None]
            # The units drain, flush and commit under leases that stay renewed meanwhile.
            keeping = asyncio.create_task(self._keep_while(tasks))
            await asyncio.gather(*tasks, *self._leaving, return_exceptions=True)
            keeping.cancel()
            await asyncio.gather(keeping, return_exceptions=True)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            try:
                await self.store.release_leases(self.owner)
            except Exception as exc:  # they expire by themselves
                log.warning("cluster %s: could not release the leases: %s", self.name, exc)
            await worker.http.close()
        log.info("cluster %s: left", self.name)
        if worker.state.gave_up:
            log.error("run failed: %s", "; ".join(worker.state.gave_up))
            return 1
        return 0

    async def _keep_while(self, tasks: Sequence[asyncio.Task[None]]) -> None:
        """Renew the leases until ``tasks`` are done (a stop that takes a while)."""
        while not all(t.done() for t in tasks):
            await asyncio.sleep(self.every)
            try:
                await self._renew(time.monotonic(), time.time())
            except Exception as exc:
                log.warning("cluster %s: %s: %s", self.name, type(exc).__name__, exc)

    async def join(self) -> None:
        """Publish this worker's pipelines (refusing a different definition of one while
        another member runs), load the others, and take the membership lease."""
        now = time.time()
        others = [m for m in await self._members(now) if m != self.owner]
        stored = await self.store.positions(definitions_id(self.name))
        publish: dict[tuple[str, str], dict[str, Any]] = {}
        refused: list[str] = []
        for name, p in self.own.items():
            raw = _plain(p.raw)
            digest = _digest(raw)
            old = stored.get(name)
            if old is not None and old.get("digest") == digest:
                continue
            version = 1 if old is None else int(old.get("version", 0)) + 1
            try:  # a count the store refuses is not published over the one that runs
                await check_partitions(self.store, p)
            except ConfigError as exc:
                raise ClusterError(f"{p.file}: {exc}") from None
            if old is not None and others:
                at = _difference(_plain(old.get("definition")), raw).removeprefix("pipeline.")
                refused.append(
                    f"pipeline {name!r} of {p.file} differs from the one cluster {self.name!r} "
                    f"runs{f' at {at}' if at else ''} (version {old.get('version')}, published "
                    f"from {old.get('file')} by {describe_owner(str(old.get('by', '')))})"
                )
                continue
            if old is not None:
                log.warning(
                    "cluster %s: pipeline %s: replacing version %s with this worker's (version "
                    "%d): no other member is running",
                    self.name,
                    name,
                    old.get("version"),
                    version,
                )
            publish[(definitions_id(self.name), name)] = self._definition(p, version, now)
        if refused:
            live = ", ".join(describe_owner(m) for m in others)
            raise ClusterError(
                "; ".join(refused)
                + f". Live members: {live}. To change a pipeline, stop every member and start "
                "one with the new file (the others then run what it published), or give the "
                "changed pipeline another name"
            )
        if publish:
            try:
                await self.store.append([], publish)
            except StoreError as exc:
                size = sum(len(json.dumps(doc)) for doc in publish.values())
                hint = ""
                if "MaxPayload" in str(exc):
                    hint = (
                        ": NATS keeps all of a cluster's definitions in one KV value, at most "
                        "the server's max_payload (1 MB by default)"
                    )
                raise ClusterError(
                    f"cluster {self.name!r}: could not store the definitions of "
                    f"{', '.join(sorted(n for _, n in publish))} ({size:,} bytes as JSON): "
                    f"{exc}{hint}"
                ) from None
            log.info(
                "cluster %s: published %s", self.name, ", ".join(sorted(n for _, n in publish))
            )
        await self._renew(time.monotonic(), time.time())
        # Another worker that started at the same moment may have published its own: the
        # store keeps the last one, and a worker whose file lost that race is refused.
        stored = await self.store.positions(definitions_id(self.name))
        raced = [
            f"pipeline {name!r} of {p.file} was published differently by "
            f"{describe_owner(str(stored[name].get('by', '')))} at the same time"
            for name, p in self.own.items()
            if name in stored and stored[name].get("digest") != _digest(_plain(p.raw))
        ]
        if raced:
            await self.store.release_leases(self.owner)
            raise ClusterError("; ".join(raced))
        await self.refresh()
        await self._read_targets()
        self.joined = True
        log.info(
            "cluster %s: joined as %s (failover timeout %gs: leases of %gs renewed every %gs)",
            self.name,
            describe_owner(self.owner),
            self.failover_timeout,
            self.ttl,
            self.every,
        )

    async def _members(self, now: float, leases: Sequence[Lease] | None = None) -> list[str]:
        prefix = member_prefix(self.name)
        held = await self.store.leases() if leases is None else leases
        return sorted(
            lease.owner
            for lease in held
            if lease.name.startswith(prefix) and lease.expires > now and not _dead_here(lease)
        )

    # -- one round -----------------------------------------------------------------------------

    async def round(self) -> None:
        began, now = time.monotonic(), time.time()
        await self._renew(began, now)
        self._reap()
        await self.refresh()
        await self._read_targets()
        leases = await self.store.leases()
        now = time.time()
        members = set(await self._members(now, leases))
        members.add(self.owner)
        # Members that died (SIGKILL, a lost machine) leave their membership lease behind:
        # `status --cluster` shows them as gone for a while, then they are forgotten.
        prefix = member_prefix(self.name)
        gone = [
            lease
            for lease in leases
            if lease.name.startswith(prefix) and lease.expires < now - self.failover_timeout
        ]
        if gone:
            await self.store.break_leases(gone)
        units = self.runnable_units()
        live = {
            lease.name: lease
            for lease in leases
            if lease.name in units and lease.expires > now and not _dead_here(lease)
        }
        outside = {n for n, lease in live.items() if lease.owner not in members}
        for name in sorted(outside - self._outside):
            log.warning(
                "cluster %s: %s is held by %s, not a member of this cluster (a plain `meshconnect "
                "run` or another cluster on this store): no member runs it until that one stops",
                self.name,
                name,
                describe_owner(live[name].owner),
            )
        self._outside = outside
        share = math.ceil(len(units) / len(members)) if units else 0
        mine = [u for u in self.units.values() if not u.leaving]
        self._rounds += 1
        if self._rounds < 2:
            return  # a first round to see the members that start together
        counts: dict[str, int] = {}
        for lease in live.values():
            counts[lease.owner] = counts.get(lease.owner, 0) + 1
        others = [counts.get(m, 0) for m in members if m != self.owner]
        # What this member is draining, and what it gave back in the last rounds that no one
        # took yet, is on its way to the members below their share already. (Units free for
        # another reason are not counted: one that no member can start stays free.)
        self._given_back = {
            n: r for n, r in self._given_back.items() if self._rounds - r <= GIVEN_BACK_ROUNDS
        }
        # (A unit of a stopped pipeline that is draining goes to no one.)
        coming = sum(1 for n, u in self.units.items() if u.leaving and n in units) + sum(
            1 for n in self._given_back if n in units and n not in live
        )
        if over_share(len(mine), others, len(units), coming):
            unit = max(mine, key=lambda u: u.taken_at)  # the newest goes back first
            self._give_back(unit, f"{len(units)} units on {len(members)} members")
            return
        wanted = share - len(mine)
        last_given = max(self._given_back.values(), default=-GIVEN_BACK_ROUNDS)
        if wanted <= 0 or self._rounds < last_given + GIVEN_BACK_ROUNDS:
            return  # a unit this member gave back goes to the member below its share
        free = [
            name
            for name in units
            if name not in self.units and name not in live and name not in self.failed_here
        ]
        free.sort(key=lambda name: hashlib.sha1(f"{self.owner} {name}".encode()).digest())
        stale = [
            lease
            for lease in leases
            if lease.name in free and lease.owner != self.owner and _dead_here(lease)
        ]
        if stale:
            await self.store.break_leases(stale)
        for name in free[:wanted]:
            await self._take(name, units[name])

    async def _renew(self, began: float, now: float) -> None:
        """Renew the membership and every unit's lease in one call; a unit whose lease another
        worker took steps down."""
        names = [self.member_lease, *(n for n, u in self.units.items() if not u.lost)]
        while True:
            conflicts = await self.store.acquire_leases(names, self.owner, self.ttl, now=now)
            if not conflicts:
                break
            for lease in conflicts:
                unit = self.units.get(lease.name)
                if unit is not None:
                    self._step_down(unit, lease)
            lost = {lease.name for lease in conflicts}
            names = [n for n in names if n not in lost]
        until = began + self.ttl - self.every
        for name in names[1:]:
            unit = self.units.get(name)
            if unit is not None:
                unit.valid_until = until

    def _reap(self) -> None:
        """Forget units that ended for another reason than finishing (fenced, failed for good);
        their leases are released so that a member takes them again."""
        for name, unit in list(self.units.items()):
            if unit.leaving or unit.restarting or unit.task is None or not unit.task.done():
                continue
            status = self.worker.statuses.get(self._status_key(unit))
            if status is not None and status.state == "DONE" and not unit.lost:
                continue  # a bounded source that finished: it stays with this worker
            if status is not None and status.state == "FAILED" and not unit.lost:
                # Failed for good (a wrong path, a refused password): another member may run
                # it; this one does not take it again (it failed every round, five times a
                # second) until the pipeline changes, is restarted over the admin API, or this
                # member restarts.
                self.failed_here.add(name)
            del self.units[name]
            if not unit.lost:
                self._spawn_release(name)

    def _spawn_release(self, name: str) -> None:
        async def release() -> None:
            try:
                await self.store.break_leases([Lease(name, self.owner, 0)])
            except Exception as exc:
                log.warning("cluster %s: could not release %s: %s", self.name, name, exc)

        task = asyncio.create_task(release())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    # -- definitions ---------------------------------------------------------------------------

    def _definition(self, p: LoadedPipeline, version: int, now: float) -> dict[str, Any]:
        raw = _plain(p.raw)
        return {
            "version": version,
            "digest": _digest(raw),
            "definition": raw,
            "base_dir": p.base_dir,
            "file": p.file,
            "by": self.owner,
            "at": now,
        }

    async def refresh(self) -> None:
        """Load the pipelines published since the last round (and new versions of them)."""
        stored = await self.store.positions(definitions_id(self.name))
        # On NATS the definitions are one KV value: two members that publish different
        # pipelines at the same moment may each overwrite the other's. Publish them again.
        lost = sorted(name for name in self.own if name not in stored)
        if lost:
            now = time.time()
            await self.store.append(
                [],
                {
                    (definitions_id(self.name), n): self._definition(self.own[n], 1, now)
                    for n in lost
                },
            )
            log.warning(
                "cluster %s: published %s again (missing from the store: another member's "
                "definitions, published at the same moment, replaced them)",
                self.name,
                ", ".join(lost),
            )
            stored = await self.store.positions(definitions_id(self.name))
        for name, doc in sorted(stored.items()):
            version = int(doc.get("version", 0))
            if self.versions.get(name) == version or self.broken.get(name) == version:
                continue
            own = self.own.get(name)
            loaded: LoadedPipeline | None = own
            if own is None or doc.get("digest") != _digest(_plain(own.raw)):
                loaded = self._load(name, doc)
            elif doc.get("base_dir") != own.base_dir:
                # Every member resolves relative paths as the publisher did: a source read from
                # another directory on failover would read other files from their beginning.
                log.warning(
                    "cluster %s: pipeline %s: relative paths resolve against %s, the directory "
                    "of the file that published it, not against %s",
                    self.name,
                    name,
                    doc.get("base_dir"),
                    own.base_dir,
                )
                loaded = self._load(name, doc)
            if loaded is None:
                self.broken[name] = version
                continue
            pipelines = self.worker.config.pipelines
            if name in self.pipelines:
                log.info("cluster %s: pipeline %s is now version %d", self.name, name, version)
                for unit in [u for u in self.units.values() if u.pipeline == name]:
                    self._give_back(unit, f"pipeline {name} changed")
                self.failed_here -= {
                    n for n, (pipeline, *_) in self.all_units().items() if pipeline == name
                }
                pipelines[:] = [loaded if p.name == name else p for p in pipelines]
            else:
                pipelines.append(loaded)
            self.pipelines[name] = loaded
            self.versions[name] = version

    def _load(self, name: str, doc: dict[str, Any]) -> LoadedPipeline | None:
        from .config.loader import load_pipeline_texts

        registry = self.worker.registry
        if registry is None:
            from .plugins import PluginPolicy, load_registry

            registry = self.worker.registry = load_registry(PluginPolicy.read(None))
        raw = _plain(doc.get("definition") or {})
        text = json.dumps(
            {"expressions": raw.get("expressions") or {}, "pipelines": [raw.get("pipeline")]}
        )
        label = f"cluster {self.name} pipeline {name} version {doc.get('version')}"
        try:
            loaded = load_pipeline_texts([(label, text, str(doc.get("base_dir", ".")))], registry)
        except ValidationErrors as exc:
            # The problems' FILE:LINE:COL would point into the stored JSON: name the field.
            log.error(
                "cluster %s: this worker cannot run pipeline %s version %s (published from %s; "
                "it leaves it to the others): %s",
                self.name,
                name,
                doc.get("version"),
                doc.get("file"),
                "; ".join(
                    p.message.removeprefix("pipelines[0].")
                    if p.location is not None and p.location.file == label
                    else str(p)
                    for p in exc.problems
                ),
            )
            return None
        from .config.interpolate import register_secrets

        register_secrets(loaded.secrets)
        return loaded.pipelines[0]

    def all_units(self) -> dict[str, tuple[str, str | None, int | None]]:
        """Every unit of the pipelines this worker can run: lease -> (pipeline, sink, slot);
        a sink of a pipeline with ``partitions: N`` is N units, one per consumer."""
        units: dict[str, tuple[str, str | None, int | None]] = {}
        for p in self.pipelines.values():
            if p.source is not None:
                units[f"source {source_id(p.name, p.source.name)}"] = (p.name, None, None)
            for sink in p.sinks:
                for slot in p.slots():
                    units[f"group {sink_group(p.name, sink.name, slot)}"] = (
                        p.name,
                        sink.name,
                        slot,
                    )
        return units

    # -- units ---------------------------------------------------------------------------------

    async def _take(self, name: str, where: tuple[str, str | None, int | None]) -> None:
        began, now = time.monotonic(), time.time()
        conflicts = await self.store.acquire_leases([name], self.owner, self.ttl, now=now)
        if conflicts:
            return  # another member was faster
        pipeline, sink_name, slot = where
        p = self.pipelines[pipeline]
        sink: LoadedSink | None = None
        if sink_name is not None:
            sink = next(s for s in p.sinks if s.name == sink_name)
        view = UnitState(self.worker.state, p.name, self, name)
        unit = Unit(name, p.name, sink_name, view, slot, valid_until=began + self.ttl - self.every)
        self.units[name] = unit
        epoch = _epoch(self.store, name)
        if self.target(p.name) == "PAUSED":
            view.pause()  # before its first poll or read
        log.info(
            "cluster %s: took %s (epoch %s)%s",
            self.name,
            name,
            epoch,
            " paused" if view.paused else "",
        )
        unit.task = self.worker.spawn_unit(p, sink, view, slot)

    def _give_back(self, unit: Unit, why: str, *, rebalance: bool = True) -> None:
        """Stop ``unit`` as SIGTERM would (drain, flush, commit), then release its lease;
        ``rebalance``: for a member below its share to take (this member takes no new unit for
        a few rounds), else because its pipeline was stopped."""
        if unit.leaving:
            return
        unit.leaving = True
        log.info("cluster %s: giving back %s (%s)", self.name, unit.lease, why)

        async def leave() -> None:
            unit.view.halt()
            if unit.task is not None:
                await asyncio.gather(unit.task, return_exceptions=True)
            status = self.worker.statuses.get(self._status_key(unit))
            if status is not None and status.state not in ("STOPPED", "FAILED"):
                status.set(
                    "STOPPED",
                    "taken over"
                    if unit.lost
                    else "given back to the cluster"
                    if rebalance
                    else why,
                )
            if self.units.get(unit.lease) is unit:
                del self.units[unit.lease]
            if not unit.lost:
                await self.store.break_leases([Lease(unit.lease, self.owner, 0)])
                if rebalance:
                    self._given_back[unit.lease] = self._rounds

        task = asyncio.create_task(leave(), name=f"give back {unit.lease}")
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def restart_units(self, pipeline: str) -> list[str]:
        """Restart the units of ``pipeline`` this worker owns (the admin API's restart): each
        stops as SIGTERM would stop it (drain, flush, commit) and starts again under the lease
        it holds, which stays renewed meanwhile. Returns the leases of the units restarted."""
        # Units that failed for good here may be taken again (the cause may be fixed).
        self.failed_here -= {n for n, (p, *_) in self.all_units().items() if p == pipeline}
        units = [
            u for u in self.units.values() if u.pipeline == pipeline and not (u.leaving or u.lost)
        ]
        done = await asyncio.gather(*(self._restart(u) for u in units))
        return [u.lease for u, ok in zip(units, done, strict=True) if ok]

    async def _restart(self, unit: Unit) -> bool:
        unit.restarting = True
        try:
            unit.view.halt()
            if unit.task is not None:
                await asyncio.gather(unit.task, return_exceptions=True)
            if (
                unit.leaving
                or unit.lost
                or self.units.get(unit.lease) is not unit
                or self.worker.stopping
            ):
                return False  # given back, taken over or stopping meanwhile: not started again
            p = self.pipelines[unit.pipeline]
            sink = None
            if unit.sink is not None:
                sink = next(s for s in p.sinks if s.name == unit.sink)
            unit.view = UnitState(self.worker.state, p.name, self, unit.lease)
            if self.target(p.name) == "PAUSED":
                unit.view.pause()  # the cluster's target state holds across a restart
            status = self.worker.statuses.get(self._status_key(unit))
            if status is not None:
                status.set("STARTING")
            log.info("cluster %s: restarting %s", self.name, unit.lease)
            unit.task = self.worker.spawn_unit(p, sink, unit.view, unit.slot)
            return True
        finally:
            unit.restarting = False

    # -- target states -------------------------------------------------------------------------

    def target(self, pipeline: str) -> str:
        """``pipeline``'s target state: STARTED, PAUSED or STOPPED."""
        return target_state(self.targets, pipeline)

    def runnable_units(self) -> dict[str, tuple[str, str | None, int | None]]:
        """:meth:`all_units` but those of stopped pipelines (no member runs them)."""
        return {n: w for n, w in self.all_units().items() if self.target(w[0]) != "STOPPED"}

    async def _read_targets(self) -> None:
        began = time.monotonic()
        stored = await read_target_states(self.store, self.name)
        if began < self._target_set_at:
            return  # read before this member set one: the next round's read shows it
        self.targets = stored
        self._apply_targets()

    def _apply_targets(self) -> None:
        """Pause, resume or give back the units this member owns as their target states say."""
        for unit in list(self.units.values()):
            if unit.leaving or unit.lost:
                continue
            state = self.target(unit.pipeline)
            if state == "STOPPED":
                self._give_back(unit, "stopped over the admin API", rebalance=False)
            elif state == "PAUSED" and not unit.view.paused:
                log.info("cluster %s: pausing %s", self.name, unit.lease)
                unit.view.pause()
            elif state == "STARTED" and unit.view.paused:
                log.info("cluster %s: resuming %s", self.name, unit.lease)
                unit.view.resume()

    async def set_target(self, pipeline: str, state: str) -> None:
        """Store ``pipeline``'s target state for every member (each applies it at its next
        round) and apply it to the units this member owns now."""
        assert state in TARGET_STATES
        doc: dict[str, Any] = {"state": state, "by": self.owner, "at": time.time()}
        key = target_states_id(self.name)
        self._target_set_at = time.monotonic()
        for _ in range(5):
            # Read first: a NATS store merges a position into those it read last (one KV
            # value); another member's target set meanwhile is kept.
            before = (await self.store.positions(key)).get(pipeline)
            await self.store.append([], {(key, pipeline): doc})
            after = (await self.store.positions(key)).get(pipeline)
            if after != before:
                break  # this one, or one another member set since (by any clock)
            # Overwritten by a member that set another pipeline's at the same moment (NATS).
        self._target_set_at = time.monotonic()
        self.targets[pipeline] = doc
        log.info(
            "cluster %s: pipeline %s target state %s (over the admin API)",
            self.name,
            pipeline,
            state,
        )
        self._apply_targets()

    def local_status_keys(self) -> dict[str, str]:
        """The worker status key (``source …``, ``sink …``) of every unit this worker runs,
        by lease name (units being given back included until they stopped)."""
        return {name: self._status_key(unit) for name, unit in self.units.items()}

    def _step_down(self, unit: Unit, lease: Lease) -> None:
        """Another worker holds ``unit``'s lease: stop it at once; its writes are refused."""
        if unit.lost:
            return
        unit.lost = True
        log.warning(
            "cluster %s: %s was taken over by %s (epoch %s): stepping down",
            self.name,
            unit.lease,
            describe_owner(lease.owner),
            lease.epoch or "?",
        )
        self._give_back(unit, "taken over")

    def fenced(self, key: str, exc: BaseException) -> None:
        """The worker's supervisor: unit ``key`` stopped on a refused write."""
        lease = "group " + key[5:] if key.startswith("sink ") else key
        unit = self.units.get(lease)
        log.warning("cluster %s: %s stopped without committing: %s", self.name, lease, exc)
        if unit is not None and not unit.leaving:
            unit.view.halt()

    @staticmethod
    def _status_key(unit: Unit) -> str:
        return "sink " + unit.lease[6:] if unit.lease.startswith("group ") else unit.lease


def _epoch(store: MeshStore, name: str) -> int | None:
    epochs = getattr(store, "lease_epochs", None)
    return epochs().get(name) if epochs is not None else None


def unit_owner(unit: str, lease: Lease | None, now: float) -> dict[str, Any]:
    """Who owns ``unit`` by its ``lease`` (``None``: none taken yet) at ``now``: the owner's
    identity and description (``None`` unless the lease is live), the epoch and time left."""
    live = lease is not None and lease.expires > now and not _dead_here(lease)
    return {
        "unit": unit,
        "owner": lease.owner if live and lease else None,
        "worker": describe_owner(lease.owner) if live and lease else None,
        "epoch": lease.epoch if lease else None,
        "lease_left": round(lease.expires - now, 1) if lease else None,
    }


async def cluster_report(store: MeshStore, cluster: str) -> dict[str, Any]:
    """The whole cluster as the store shows it: members, pipelines (with their versions and
    target states) and which member owns each unit with its epoch (``meshconnect status
    --cluster``)."""
    now = time.time()
    leases = await store.leases()
    prefix = member_prefix(cluster)
    members = [
        {
            "id": lease.owner,
            "worker": describe_owner(lease.owner),
            "alive": lease.expires > now and not _dead_here(lease),
            "lease_left": round(lease.expires - now, 1),
        }
        for lease in leases
        if lease.name.startswith(prefix)
    ]
    stored = await store.positions(definitions_id(cluster))
    targets = await read_target_states(store, cluster)
    by_name = {lease.name: lease for lease in leases}
    pipelines = []
    for name, doc in sorted(stored.items()):
        raw = (doc.get("definition") or {}).get("pipeline") or {}
        units = []
        source = raw.get("source")
        if isinstance(source, dict):
            units.append(
                f"source {source_id(name, str(source.get('name') or source.get('connector')))}"
            )
        partitions = raw.get("partitions", 1)
        slots = (
            list(range(partitions)) if isinstance(partitions, int) and partitions > 1 else [None]
        )
        for sink in raw.get("sinks") or []:
            if isinstance(sink, dict):
                sink_name = str(sink.get("name") or sink.get("connector"))
                units += [f"group {sink_group(name, sink_name, slot)}" for slot in slots]
        owned = [unit_owner(unit, by_name.get(unit), now) for unit in units]
        pipelines.append(
            {
                "name": name,
                "version": doc.get("version"),
                "target_state": target_state(targets, name),
                "published_by": describe_owner(str(doc.get("by", ""))),
                "file": doc.get("file"),
                "units": owned,
            }
        )
    return {"cluster": cluster, "store": store.url, "members": members, "pipelines": pipelines}
