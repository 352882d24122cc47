"""Topic routing, in one place: which topic a record goes to, and which topics a sink reads.

* :func:`route` gives each record of a pipeline's batch its topic: the pipeline's ``topic:``
  (a literal, or a template rendered per record); a template that fails for a record makes
  it a failure of the ``topic`` stage (dead-lettered by the source's errors policy).
* :func:`sink_patterns` is what a sink subscribes to: its ``topics:`` (names or globs), else
  its pipeline's topic, where a templated topic becomes the glob of everything the template
  can produce (:func:`template_glob`, built with the expression template scanner).
* :func:`resolve_topics` turns a :class:`Subscription` (patterns, and which partitions) into
  the topics the store holds now.

Partitions (docs/scaleout.md#partitions)
    A pipeline with ``partitions: N`` (N > 1) writes each record to partition
    ``crc32(partitionkey) mod N`` of its topic, stored as the topic ``T#k`` (``#`` is in no
    topic name, so no user topic can clash); a record without a ``partitionkey`` goes to
    partition 0, as Canal sends DDL to partition 0 (``canal.mq.partitionHash``). Records with
    the same key keep their order; records of different partitions have no order between them.
    Each sink of such a pipeline runs as N consumers, consumer ``k`` reading partitions
    ``p`` with ``p mod N == k`` of the topics it names (an unpartitioned topic counts as
    partition 0), so a reader of any partition count sees every record once.

The ``route`` transform (``core/transforms/routing.py``) sets ``record.topic`` before this
runs; a record that already has a topic keeps it.
"""

from __future__ import annotations

import fnmatch
import logging
import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.topics import PARTITION_MARK, partition_of, topic_problem
from ..errors import DataError
from ..expr import template_pieces

if TYPE_CHECKING:
    from ..config.loader import LoadedPipeline, LoadedSink
    from ..records import Record
    from .store import MeshStore

__all__ = [
    "PARTITION_MARK",
    "Subscription",
    "partition_of",
    "partition_topic",
    "resolve_topics",
    "route",
    "sink_patterns",
    "template_glob",
]


log = logging.getLogger(__name__)
#: Pipelines already warned that records without a partitionkey all go to partition 0.
_warned_keyless: set[str] = set()
_GLOB_SPECIAL = str.maketrans({"*": "[*]", "?": "[?]", "[": "[[]"})
_TOPIC = operator.attrgetter("topic")
_UNSET = {None}


def route(
    pipeline: LoadedPipeline, records: list[Record]
) -> tuple[list[Record], list[tuple[Record, BaseException, str]]]:
    """Give each record without a topic the pipeline's topic. Failures of the ``topic`` stage:
    records whose topic template cannot be rendered, and records whose topic (rendered, or
    set by a ``route`` step) breaks the topic-name rule of :mod:`meshconnect.config.topics`.
    A literal pipeline topic was checked by ``validate``."""
    routed, failures = _route(pipeline, records)
    partitions = pipeline.partitions
    if partitions > 1:
        keyless = 0
        for record in routed:
            key = record.extensions.get("partitionkey")
            keyless += key is None
            record.topic = partition_topic(record.topic, partition_for(key, partitions))  # type: ignore[arg-type]
        if keyless and pipeline.name not in _warned_keyless:
            _warned_keyless.add(pipeline.name)
            log.warning(
                "pipeline %s: %d of %d records have no partitionkey and go to partition 0 "
                "(set one with set_key: docs/scaleout.md#partitions); said once",
                pipeline.name,
                keyless,
                len(routed),
            )
    return routed, failures


def _route(
    pipeline: LoadedPipeline, records: list[Record]
) -> tuple[list[Record], list[tuple[Record, BaseException, str]]]:
    template = pipeline.topic
    literal = template.literal
    if literal is not None and set(map(_TOPIC, records)) == _UNSET:
        for record in records:  # the usual batch: one literal topic, checked by validate
            record.topic = literal
        return records, []
    render = template.render
    routed: list[Record] = []
    failures: list[tuple[Record, BaseException, str]] = []
    for record in records:
        topic = record.topic
        if topic is None:
            if literal is not None:
                record.topic = literal
                routed.append(record)
                continue
            try:
                topic = render(record)
            except Exception as exc:
                failures.append((record, exc, "topic"))
                continue
        problem = topic_problem(topic)
        if problem is not None:
            how = (
                "rendered from the topic template" if record.topic is None else "set by a transform"
            )
            failures.append((record, DataError(f"topic {topic!r} ({how}): {problem}"), "topic"))
            continue
        record.topic = topic
        routed.append(record)
    return routed, failures


def partition_for(key: object, partitions: int) -> int:
    """The partition of a record whose ``partitionkey`` is ``key``: ``crc32`` of its UTF-8
    text (an integer or boolean extension by its CloudEvents string form, bytes as they are)
    modulo ``partitions``; 0 for a record without a key. Stable across processes and
    versions: a replayed record lands where it landed before."""
    if key is None:
        return 0
    if isinstance(key, bytes):
        raw = key
    else:
        if isinstance(key, bool):
            key = "true" if key else "false"
        raw = str(key).encode("utf-8", "surrogatepass")
    return zlib.crc32(raw) % partitions


def partition_topic(topic: str, partition: int) -> str:
    """The store topic of ``topic``'s partition ``partition`` (``orders#3``)."""
    return f"{topic}{PARTITION_MARK}{partition}"


@dataclass(frozen=True, slots=True)
class Subscription:
    """What one consumer of a sink reads: the sink's topic names or globs, and its share of
    their partitions. Consumer ``slot`` of ``slots`` reads partition ``p`` of a matching topic
    when ``p mod slots == slot``; an unpartitioned topic is partition 0. A name or glob
    matches a topic's name without its partition (``orders`` matches ``orders#2``)."""

    patterns: tuple[str, ...]
    slot: int = 0
    slots: int = 1

    def matches(self, topic: str) -> bool:
        base, partition = partition_of(topic)
        if partition % self.slots != self.slot:
            return False
        return any(fnmatch.fnmatchcase(base, p) if is_glob(p) else base == p for p in self.patterns)

    def literal_topics(self) -> list[str]:
        """The topics read whether or not the store holds them yet: each literal name, or its
        partition ``slot`` when the sink runs as several consumers."""
        names = [p for p in self.patterns if not is_glob(p)]
        if self.slots == 1:
            return names
        return [partition_topic(name, self.slot) for name in names]


def subscription(
    pipeline: LoadedPipeline, sink: LoadedSink, slot: int | None = None
) -> Subscription:
    """What consumer ``slot`` (``None``: the only one) of ``sink`` reads."""
    return Subscription(
        tuple(sink_patterns(pipeline, sink)),
        slot or 0,
        pipeline.partitions if slot is not None else 1,
    )


def sink_patterns(pipeline: LoadedPipeline, sink: LoadedSink) -> list[str]:
    """The topic names or globs a sink reads."""
    if sink.topics:
        return list(sink.topics)
    # The pipeline's topic: what its source writes, or for a sink-only pipeline the topic
    # named like the pipeline (or its `topic:`), written by other pipelines or workers.
    template = pipeline.topic
    if template.is_literal:
        return [str(template.literal)]
    # A templated topic: subscribe to everything the template can produce.
    return [template_glob(template.text)]


def template_glob(text: str) -> str:
    """``cdc.{data.db}.{data.table}`` -> ``cdc.*.*``: the glob of every topic a template can
    produce (each placeholder a ``*``; glob characters in the literal text escaped)."""
    return "".join(
        piece.translate(_GLOB_SPECIAL) if isinstance(piece, str) else "*"
        for piece in template_pieces(text)
    )


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


async def resolve_topics(store: MeshStore, wanted: Subscription | Sequence[str]) -> list[str]:
    """The topics that exist now (or are named literally) that ``wanted`` reads: a
    :class:`Subscription`, or topic names and globs (every partition of each)."""
    if not isinstance(wanted, Subscription):
        wanted = Subscription(tuple(wanted))
    names = set(wanted.literal_topics())
    for info in await store.topics():
        if wanted.matches(info.name):
            names.add(info.name)
    return sorted(names)
