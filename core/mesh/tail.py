"""The records a store appended itself, kept per topic so that readers in the same process
(the worker's sinks) read them without a round trip to the engine.

The Redis and NATS stores keep the last :data:`TAIL_RECORDS` records of each topic; the
SQLite store bounds its tail in bytes and whole segments instead (:mod:`.sqlite`)."""

from __future__ import annotations

from collections.abc import Sequence

from ..records import Record

__all__ = ["TAIL_RECORDS", "RecordTail"]

#: Records per topic kept from this process's appends.
TAIL_RECORDS = 40_000


class RecordTail:
    """Per topic, ``(first offset, records)`` with contiguous offsets, at most
    :data:`TAIL_RECORDS` of them (the oldest go first). The records are shared with readers,
    who copy one before changing it (:meth:`MeshStore.read`'s contract)."""

    __slots__ = ("topics",)

    def __init__(self) -> None:
        self.topics: dict[str, tuple[int, list[Record]]] = {}

    def remember(self, topic: str, group: Sequence[Record]) -> None:
        """Add ``group``, appended to ``topic`` with contiguous offsets from its first one's;
        a gap from what is kept starts the topic's tail again from ``group``."""
        first = group[0].offset
        assert first is not None
        entry = self.topics.get(topic)
        if entry is None or entry[0] + len(entry[1]) != first:
            entry = self.topics[topic] = (first, [])
        entry[1].extend(group)
        if len(entry[1]) > TAIL_RECORDS:
            drop = len(entry[1]) - TAIL_RECORDS
            del entry[1][:drop]
            self.topics[topic] = (entry[0] + drop, entry[1])

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
        self.topics.pop(topic, None)

    def clear(self) -> None:
        self.topics.clear()
