"""The records a store appended itself, kept so that readers in the same process (the
worker's sinks) read them without a round trip to the engine and without decoding them.

Every store (SQLite, Redis, NATS) keeps its tail the same way (:class:`RecordTail`): bounded
by the *stored* bytes of the segments the records came in, for all topics together
(:data:`TAIL_BYTES`, always keeping the newest :data:`TAIL_SEGMENTS` segments whatever their
size), and trimmed of what every in-process reader has delivered (:meth:`RecordTail.consumed`).
A record held as Python objects takes several times its encoded size, so a bound in records
(40,000 per topic, as the Redis and NATS stores had) let records of 100 KB hold gigabytes.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from ..records import Record

__all__ = ["DECODED_BYTES", "TAIL_BYTES", "TAIL_SEGMENTS", "DecodedSegments", "RecordTail"]

#: Stored bytes (segment bodies, all topics together) the tail keeps: a sink further behind
#: its topic's end reads from the engine (and decodes). Trimmed at every append, a segment at
#: a time, so records are freed a batch at a time. An in-process sink normally reads a
#: segment right after its append; the budget covers the appends that land while it waits
#: for a flush and commit.
TAIL_BYTES = 1 << 20
#: Segments the tail keeps whatever their size: a sink waiting for its flush and commit falls
#: several batches behind, and with large batches (``batch_size: 5000``) 1 MiB would not hold
#: them: it would decode most segments from the engine (SQLite: +30-50 % CPU, measured with 4).
TAIL_SEGMENTS = 8


class RecordTail:
    """Per topic, ``(first offset, records)`` with contiguous offsets, as appended by this
    process, and the segments they came in, oldest first. The records are shared with
    readers, who copy one before changing it (:meth:`MeshStore.read`'s contract).

    ``budget`` (bytes, default :data:`TAIL_BYTES`) and ``keep`` (segments, default
    :data:`TAIL_SEGMENTS`) bound it; see the module docstring."""

    __slots__ = ("budget", "keep", "readers", "segments", "size", "topics")

    def __init__(self, budget: int | None = None, keep: int | None = None) -> None:
        self.budget = TAIL_BYTES if budget is None else budget
        self.keep = TAIL_SEGMENTS if keep is None else keep
        self.topics: dict[str, tuple[int, list[Record]]] = {}
        #: The kept segments, oldest first: (topic, records, stored bytes).
        self.segments: collections.deque[tuple[str, int, int]] = collections.deque()
        #: The stored bytes of the kept segments.
        self.size = 0
        #: Per topic, the offset each consumer group reading in this process delivered up to.
        self.readers: dict[str, dict[str, int]] = {}

    def remember(self, topic: str, group: Sequence[Record], size: int) -> None:
        """Add ``group``, appended to ``topic`` with contiguous offsets from its first one's
        in a segment of ``size`` stored bytes; a gap from what is kept (another process
        appended in between) starts the topic's tail again from ``group``. Then drop the
        oldest segments beyond the budget."""
        first = group[0].offset
        assert first is not None
        entry = self.topics.get(topic)
        if entry is None or entry[0] + len(entry[1]) != first:
            if entry is not None:
                self.forget(topic)
            entry = self.topics[topic] = (first, [])
        entry[1].extend(group)
        self.segments.append((topic, len(group), size))
        self.size += size
        segments, topics = self.segments, self.topics
        while self.size > self.budget and len(segments) > self.keep:
            name, count, dropped = segments.popleft()
            self.size -= dropped
            start, cached = topics[name]
            del cached[:count]
            if cached:
                topics[name] = (start + count, cached)
            else:
                del topics[name]

    def consumed(self, group: str, topic: str, offset: int) -> None:
        """Consumer group ``group`` delivered ``topic`` up to ``offset`` (next to read): drop
        the segments of ``topic`` that every group heard from has passed (see
        :meth:`MeshStore.consumed`). A sink in step with the source then leaves almost
        nothing kept. A group that stopped reading keeps its mark: the tail is then bounded
        by the budget alone."""
        readers = self.readers.setdefault(topic, {})
        readers[group] = offset
        entry = self.topics.get(topic)
        if entry is None:
            return
        low = min(readers.values())
        first, cached = entry
        for segment in [s for s in self.segments if s[0] == topic]:
            count = segment[1]
            if first + count > low:
                break
            self.segments.remove(segment)
            self.size -= segment[2]
            del cached[:count]
            first += count
        # Kept when empty: a reader at its end then waits for the append in flight.
        self.topics[topic] = (first, cached)

    def read(self, topic: str, offset: int, limit: int, appending: bool) -> list[Record] | None:
        """Up to ``limit`` kept records of ``topic`` from ``offset`` on; ``[]`` at the end of
        the tail while an append of this store is in flight (what comes next will be here in a
        moment); ``None`` when the engine must be asked."""
        entry = self.topics.get(topic)
        if entry is None:
            return None
        first, cached = entry
        end = first + len(cached)
        if first <= offset < end:
            return cached[offset - first : offset - first + limit]
        if offset == end and appending:
            return []
        return None

    def forget(self, topic: str) -> None:
        """Drop what is kept of ``topic`` (its records may no longer be the engine's)."""
        if self.topics.pop(topic, None) is None:
            return
        kept = [s for s in self.segments if s[0] != topic]
        self.segments = collections.deque(kept)
        self.size = sum(size for _, _, size in kept)

    def clear(self) -> None:
        self.topics.clear()
        self.readers.clear()
        self.segments.clear()
        self.size = 0


#: Stored bytes of the segments a store keeps decoded for readers that read them in slices, for
#: all topics together (:class:`DecodedSegments`).
DECODED_BYTES = 4 << 20


class DecodedSegments:
    """The last segment a store decoded for each topic (a reader that asks for fewer records
    than a segment holds reads it in slices: the next slice is not decoded again), bounded by
    the segments' stored bytes for all topics together (:data:`DECODED_BYTES`, at least the
    newest segment whatever its size), the least recently decoded dropped first. One per
    topic without a bound held a segment of every topic a reader read: a consumer of 50
    tables' topics of bulk CDC batches (~6 MB each, about seven times that decoded) held
    gigabytes."""

    __slots__ = ("budget", "entries", "size")

    def __init__(self, budget: int | None = None) -> None:
        self.budget = DECODED_BYTES if budget is None else budget
        #: topic -> (the segment's key: its first offset or its message sequence, its
        #: records, its stored bytes), least recently decoded first.
        self.entries: collections.OrderedDict[str, tuple[int, list[Record], int]] = (
            collections.OrderedDict()
        )
        self.size = 0

    def get(self, topic: str) -> tuple[int, list[Record]] | None:
        """``(key, records)`` of the segment kept for ``topic``, or None."""
        entry = self.entries.get(topic)
        return None if entry is None else (entry[0], entry[1])

    def put(self, topic: str, key: int, records: list[Record], size: int) -> None:
        """Keep ``records``, the segment ``key`` of ``topic`` (``size`` stored bytes), in place
        of the topic's last one; then drop the least recently decoded beyond the budget."""
        self.forget(topic)
        self.entries[topic] = (key, records, size)
        self.size += size
        while self.size > self.budget and len(self.entries) > 1:
            _, (_, _, dropped) = self.entries.popitem(last=False)
            self.size -= dropped

    def forget(self, topic: str) -> None:
        entry = self.entries.pop(topic, None)
        if entry is not None:
            self.size -= entry[2]

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0
