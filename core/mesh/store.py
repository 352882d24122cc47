"""The mesh store interface: topics, source positions and consumer offsets.

A store holds ordered, append-only topics of records. Each record in a topic has an offset
(0, 1, 2, ... per topic). Its contract, which every backend keeps and
``tests/test_store.py`` checks against each one:

* :meth:`MeshStore.append` appends records to their topics **and** sets source positions in
  one atomic step: after a crash either both are there or neither is. This is what makes the
  path into the mesh exactly-once.
* :meth:`MeshStore.commit` sets a consumer group's next offsets per topic together with a
  small sink state (e.g. the size of the file the sink wrote), atomically. The worker calls it
  only after the sink's flush, so a committed offset never runs ahead of durable output.
* Offsets are "next to read": a group whose committed offset for ``t`` is 5 reads from offset 5.
* Retention removes the oldest records of a topic by age or count; it never moves offsets.
  A group whose offset falls below the earliest retained one resumes at the earliest.
* **Leases** make one worker the owner of each source and each consumer group
  (:mod:`meshconnect.mesh.ownership`): :meth:`MeshStore.acquire_leases` takes (or renews) a set
  of named leases for an owner until a deadline, all or none, atomically, so two workers on one
  store never run the same pipeline. A Redis backend does the same with one Lua script over
  ``SET NX PX`` keys, a JetStream backend with a KV bucket's create/update revisions and TTL.

Nothing here assumes SQLite: a backend is free to be a Redis Stream or a JetStream stream, with
its own notion of a transaction for ``append`` (e.g. one Lua script or a KV CAS on the
position bucket). Methods are ``async`` so network backends fit; the embedded backends run
their blocking calls on a private thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import FencedError
from ..records import Record

__all__ = ["FencedError", "GroupInfo", "Lease", "MeshStore", "Retention", "StoreSpec", "TopicInfo"]


@dataclass(frozen=True, slots=True)
class Retention:
    """How much a topic keeps: records older than ``max_age_s`` seconds, beyond the newest
    ``max_records``, or beyond about ``max_bytes`` of stored size may be deleted (by size, the
    oldest go first, in whole batches where a backend stores batches, and the newest record
    or batch always stays). ``None``: no limit."""

    max_age_s: float | None = None
    max_records: int | None = None
    max_bytes: int | None = None


@dataclass(slots=True)
class TopicInfo:
    name: str
    #: Offset of the oldest record still stored (== end when empty).
    start: int
    #: Offset the next appended record will get (== number of records ever appended).
    end: int


@dataclass(slots=True)
class GroupInfo:
    group: str
    offsets: dict[str, int] = field(default_factory=dict)
    state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    """A named lease (``"source <id>"``, ``"group <group>"``) held by ``owner`` (a worker's
    identity, see :func:`~meshconnect.mesh.ownership.worker_identity`) until ``expires``
    (unix seconds). ``epoch``: the fencing epoch, where the backend keeps one (Redis, NATS),
    else 0; it takes no part in comparisons."""

    name: str
    owner: str
    expires: float
    epoch: int = field(default=0, compare=False)


class MeshStore:
    """Abstract mesh store. See the module docstring for the contract."""

    #: The URL this store was opened with (for messages; never contains a password).
    url: str = ""

    async def open(self) -> None:
        """Connect / create tables. Called once before anything else."""

    async def close(self) -> None:
        """Release connections; safe to call twice and after a failed ``open``."""

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Append ``records`` (each to ``record.topic``) and set ``positions`` atomically.

        ``positions`` maps ``(connector_id, partition)`` to the position to store (JSON-able).
        Returns the offset each record got, in order, and sets ``record.offset``.
        """
        raise NotImplementedError

    async def positions(self, connector_id: str) -> dict[str, dict[str, Any]]:
        """The committed source positions of one connector, by partition."""
        raise NotImplementedError

    async def source_ids(self) -> list[str]:
        """Every connector id that has committed positions, sorted."""
        raise NotImplementedError

    async def set_positions(
        self, connector_id: str, positions: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        """Replace one connector's positions (``None``: forget them all; used by reset)."""
        raise NotImplementedError

    async def read(self, topic: str, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of ``topic`` from ``offset`` on, in order, with
        ``topic`` and ``offset`` set. Offsets below the retained start read from the start.

        The records may be shared with other readers (a backend may serve recent records from
        memory): a reader that changes one must change a copy (``Record.copy()``)."""
        raise NotImplementedError

    def consumed(self, group: str, topic: str, offset: int) -> None:
        """A hint from a reader in this process: consumer group ``group`` has delivered
        ``topic`` up to ``offset`` (next to read) and will not read below it again unless it
        starts over from its committed offsets. A backend that keeps recent records in memory
        for its readers may drop those every reader it heard from has passed; a read of them
        is still answered, from the engine. Not a commit: nothing here is durable. The
        default does nothing."""

    async def topics(self) -> list[TopicInfo]:
        """Every topic with its start and end offsets."""
        raise NotImplementedError

    async def end_offsets(self, topics: Sequence[str]) -> dict[str, int]:
        """The end offset (next to be assigned) of each named topic; 0 for unknown topics."""
        raise NotImplementedError

    async def group(self, group: str) -> GroupInfo:
        """A consumer group's committed offsets and sink state (empty if never committed)."""
        raise NotImplementedError

    async def groups(self) -> list[GroupInfo]:
        """Every consumer group."""
        raise NotImplementedError

    async def commit(
        self, group: str, offsets: Mapping[str, int], state: Mapping[str, Any] | None = None
    ) -> None:
        """Set the group's next offsets for the given topics and its sink state, atomically.
        Topics not named keep their offsets; ``state`` replaces the previous one."""
        raise NotImplementedError

    async def reset_group(self, group: str, offsets: Mapping[str, int] | None) -> None:
        """Replace a group's offsets (``None``: forget them all, so it reads from the
        beginning) and **keep its sink state**: the sink resumes its output from what it last
        committed (a file sink appends after the size it committed) instead of starting a fresh
        output, which for a file sink would mean discarding the file. Rewinding re-delivers
        records into that output; moving forward skips them."""
        raise NotImplementedError

    async def apply_retention(self, topic: str, retention: Retention) -> int:
        """Delete what ``retention`` allows in ``topic``; returns how many records went."""
        raise NotImplementedError

    async def acquire_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, now: float
    ) -> list[Lease]:
        """Take or renew every lease in ``names`` for ``owner`` until ``now + ttl``, atomically:
        all of them, or none when another owner holds one that has not expired at ``now``.
        Returns those conflicting leases (``[]``: all taken). Renewing is acquiring again."""
        raise NotImplementedError

    async def break_leases(self, leases: Sequence[Lease]) -> None:
        """Delete each of ``leases`` if it is still held by the same owner (a dead worker's)."""
        raise NotImplementedError

    async def release_leases(self, owner: str) -> None:
        """Give up every lease ``owner`` holds."""
        raise NotImplementedError

    async def leases(self) -> list[Lease]:
        """Every lease held, expired or not, by name."""
        raise NotImplementedError

    def data_changed(self) -> Any:
        """An awaitable that completes when new records may be readable (or after a short
        while; readers also poll, since other processes may append)."""
        raise NotImplementedError


@dataclass(slots=True)
class StoreSpec:
    """A store backend, chosen by URL scheme (``sqlite:///path``, ``memory://``)."""

    scheme: str
    factory: Callable[[str], MeshStore]
    description: str = ""
