"""Replaying dead letters (``meshconnect topics replay``, docs/errors.md#replaying-dead-letters).

:func:`replay_dead_letters` publishes dead letters again once the cause is fixed: without the
``error*`` extensions, to a topic, optionally filtered. Its progress is a source position
``replay/<dlq>-><topic>`` appended in the same store transaction as the records, so a crash
never replays a dead letter twice and a second run only replays new ones.

Into a partitioned topic (docs/scaleout.md#partitions), each record goes to the partition of
its ``partitionkey``, as the router would have put it (:func:`replay_target` finds the count):
a Kafka producer sends a replayed record by its key too, and a record in another partition
than its key's would be written by another consumer, in no order with the key's records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .config.topics import partition_of, partitions_in
from .errorpolicy import ERROR_ATTRIBUTES, ERROR_EXTENSIONS
from .errors import ConfigError
from .mesh.routing import partition_for, partition_topic
from .offsets import partitions_id
from .records import Record

if TYPE_CHECKING:
    from .mesh.store import MeshStore

__all__ = [
    "ReplaySummary",
    "ReplayTarget",
    "replay_dead_letters",
    "replay_id",
    "replay_target",
    "revived",
]


def replay_id(dead_letter_topic: str, to: str) -> str:
    """The id under which replay progress from ``dead_letter_topic`` to ``to`` is stored."""
    return f"replay/{dead_letter_topic}->{to}"


@dataclass(frozen=True, slots=True)
class ReplayTarget:
    """Where a replay writes: ``topic``, in ``partitions`` partitions (1: the topic itself).
    ``why`` says where the count came from, for the report."""

    topic: str
    partitions: int = 1
    why: str = ""

    def topic_of(self, record: Record) -> str:
        """The store topic ``record`` goes to: its key's partition, as the router does
        (:func:`~meshconnect.mesh.routing.partition_for`; no ``partitionkey``: ``T#0``)."""
        if self.partitions <= 1:
            return self.topic
        key = record.extensions.get("partitionkey")
        return partition_topic(self.topic, partition_for(key, self.partitions))


async def replay_target(store: MeshStore, to: str) -> ReplayTarget:
    """How ``to`` is split, from what the store records (docs/scaleout.md#partitions).

    * The count recorded for the literal topic ``to`` (``partitions/topic:<to>``: every
      pipeline whose ``topic:`` is ``to`` writes it with that count, and one with another
      count is refused before it stores anything) is exact.
    * Without one, partitions ``to#k`` in the store were written by a pipeline whose topic is a
      template (``cdc.{data.table}``), and the store records each partitioned pipeline's count
      (``partitions/<pipeline>``) but not which topics a template produced. When every
      recorded count is the same, it is the count that wrote them; when they differ (or none
      is recorded), which one wrote ``to`` is unknown, and the replay is refused.
    * No count and no partitions: the unpartitioned topic, as before partitions.

    Refused as well (a :class:`ConfigError` naming what was found; nothing is changed):
    ``to`` naming a partition (``orders#2``); a partition ``to#k`` beyond the count. Records
    in the unpartitioned topic ``to`` beside a count were written before the pipeline had
    ``partitions:`` (docs/scaleout.md#partitions); a replayed record goes by its key, as the
    router puts the key's records now."""
    base, number = partition_of(to)
    if base != to:
        raise ConfigError(
            f"--to {to!r} names partition {number} of topic {base!r}: give the topic (--to {base}) "
            "and each record goes to the partition of its partitionkey"
        )
    parts = partitions_in(to, [t.name for t in await store.topics()])
    recorded = (await store.positions(partitions_id(f"topic:{to}"))).get("count")
    if recorded is not None:
        n = int(recorded.get("n", 1))
        why = f"the count recorded for topic {to!r} by the pipelines writing it"
    elif parts:
        counts: dict[int, list[str]] = {}
        for ident in await store.source_ids():
            if ident.startswith("partitions/") and not ident.startswith("partitions/topic:"):
                count = (await store.positions(ident)).get("count")
                if count is not None:
                    counts.setdefault(int(count.get("n", 1)), []).append(
                        ident.removeprefix("partitions/")
                    )
        found = f"the store holds its partitions {_names(to, parts)}"
        if not counts:
            raise ConfigError(
                f"--to {to!r}: {found} but no partition count is recorded for it or for any "
                "pipeline, so the partition of a record's key is unknown. Replay to a topic "
                "of its own and add it to the fixed sink's topics:"
            )
        if len(counts) > 1:
            described = "; ".join(
                f"partitions: {n} ({', '.join(sorted(names))})"
                for n, names in sorted(counts.items())
            )
            raise ConfigError(
                f"--to {to!r}: {found} but no count for the topic itself (a templated topic "
                "wrote them), and the partitioned pipelines in the store have different "
                f"counts ({described}): which one wrote it is not recorded, so the partition "
                "of a record's key is unknown. Replay to a topic of its own and add it to the "
                "fixed sink's topics:"
            )
        ((n, names),) = counts.items()
        why = f"the count of partitioned pipeline(s) {', '.join(sorted(names))}"
    else:
        return ReplayTarget(to)
    n = max(n, 1)
    if beyond := [k for k in parts if k >= n]:
        raise ConfigError(
            f"--to {to!r}: {why} is partitions: {n}, but the store holds its partitions "
            f"{_names(to, beyond)} beyond it: two counts wrote this topic, so the partition "
            "of a record's key is unknown. Replay to a topic of its own and add it to the "
            "fixed sink's topics:"
        )
    # Records in the unpartitioned topic beside a count (a pipeline given ``partitions:``
    # after it wrote) are earlier ones; the router puts a key's records in its partition now.
    return ReplayTarget(to, n, why)


def _names(topic: str, parts: list[int]) -> str:
    shown = ", ".join(partition_topic(topic, k) for k in parts[:8])
    return shown + (f" and {len(parts) - 8} more" if len(parts) > 8 else "")


@dataclass(slots=True)
class ReplaySummary:
    """What one replay did."""

    #: Offset of the dead-letter topic the replay started at (after earlier replays).
    start: int
    #: Offset it stopped at (the end of the topic when it started).
    end: int
    replayed: int = 0
    #: Dead letters for which ``where`` was false.
    skipped: int = 0
    #: Dead letters for which ``where`` failed (a data error); not replayed.
    failed: int = 0
    first_failure: str = ""
    #: Where the records went (or would go): the target, and records by store topic.
    target: ReplayTarget = field(default_factory=lambda: ReplayTarget(""))
    topics: dict[str, int] = field(default_factory=dict)


def revived(dead: Record, to: str) -> Record:
    """The record a dead letter came from: the same id, attributes and data, without the
    ``error*`` extensions, for topic ``to``."""
    record = dead.copy()
    for name in (*ERROR_EXTENSIONS, ERROR_ATTRIBUTES):
        record.extensions.pop(name, None)
    record.topic = to
    record.offset = None
    return record


async def replay_dead_letters(
    store: MeshStore,
    dead_letter_topic: str,
    to: str,
    where: Callable[[Record], Any] | None = None,
    *,
    from_beginning: bool = False,
    dry_run: bool = False,
    batch_size: int = 1000,
) -> ReplaySummary:
    """Append the dead letters of ``dead_letter_topic`` (those ``where`` accepts; it sees the
    dead letter, ``error*`` extensions included) to ``to``, as :func:`revived` makes them;
    into a partitioned ``to``, each to its key's partition (:func:`replay_target`, which
    raises :class:`ConfigError` before anything is read when the count is ambiguous).

    Starts after what earlier replays to ``to`` did, or at the beginning with
    ``from_beginning``; stops at the end the topic had when it started (dead letters arriving
    meanwhile wait for the next replay). Each batch is appended with the replay's position in
    one store transaction. ``dry_run`` counts without appending or moving the position."""
    target = await replay_target(store, to)
    ident = replay_id(dead_letter_topic, to)
    done = await store.positions(ident)
    offset = 0 if from_beginning else int(done.get(dead_letter_topic, {}).get("next", 0))
    end = (await store.end_offsets([dead_letter_topic]))[dead_letter_topic]
    summary = ReplaySummary(start=offset, end=end, target=target)
    topics = summary.topics
    while offset < end:
        batch = await store.read(dead_letter_topic, offset, min(batch_size, end - offset))
        if not batch:
            break
        batch = [r for r in batch if r.offset is not None and r.offset < end]
        if not batch:
            break
        out: list[Record] = []
        for dead in batch:
            if where is not None:
                try:
                    keep = where(dead)
                except Exception as exc:
                    summary.failed += 1
                    if not summary.first_failure:
                        summary.first_failure = f"offset {dead.offset}: {exc}"
                    continue
                if not keep:
                    summary.skipped += 1
                    continue
            record = revived(dead, to)
            record.topic = name = target.topic_of(record)
            topics[name] = topics.get(name, 0) + 1
            out.append(record)
        offset = int(batch[-1].offset) + 1  # type: ignore[arg-type]
        if not dry_run:  # every partition's records and the position: one transaction
            await store.append(out, {(ident, dead_letter_topic): {"next": offset}})
        summary.replayed += len(out)
    summary.end = offset
    return summary
