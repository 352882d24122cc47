"""What the stores keep in memory for their readers (core/mesh/tail.py), bounded in bytes."""

from __future__ import annotations

from meshconnect.mesh.tail import DecodedSegments
from meshconnect.records import Record


def segment(n: int) -> list[Record]:
    return [Record({"i": i}) for i in range(n)]


def test_decoded_segments_are_bounded_in_bytes_for_all_topics_together() -> None:
    """One decoded segment per topic, as the Redis and NATS stores kept them, held a segment of
    every topic a reader read; now the least recently decoded go beyond the budget, and the
    newest stays whatever its size."""
    kept = DecodedSegments(budget=1000)
    a, b, c = segment(3), segment(3), segment(3)
    kept.put("a", 0, a, 400)
    kept.put("b", 10, b, 400)
    assert kept.get("a") == (0, a) and kept.size == 800
    kept.put("c", 20, c, 400)  # 1,200 bytes: the oldest (a) goes
    assert kept.get("a") is None and kept.get("b") == (10, b) and kept.size == 800
    newer = segment(2)
    kept.put("b", 13, newer, 100)  # a topic keeps its last segment only
    assert kept.get("b") == (13, newer) and kept.size == 500
    huge = segment(1)
    kept.put("d", 0, huge, 5000)  # over the budget alone: kept, the others go
    assert list(kept.entries) == ["d"] and kept.size == 5000
    kept.forget("d")
    assert kept.get("d") is None and kept.size == 0
