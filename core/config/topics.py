"""Topic names: the one rule every topic obeys, and dead-letter loops between sinks.

The rule (docs/yaml.md, "Topic names")
    A topic name is 1 to 249 characters (Kafka's limit), each a letter or digit of any script
    (Unicode categories L, M and N) or one of ``.`` ``_`` ``-``; ``.`` and ``..`` alone are
    not names. So a name never holds ``*``, ``?``, ``[`` (the glob characters of a sink's
    ``topics:``), ``/``, spaces, control characters or newlines, and prints safely in
    ``topics list``. Like Kafka's ``[a-zA-Z0-9._-]``, widened to other scripts because CDC
    topics carry database and table names.

    Literal names are checked by ``validate``; a name rendered from a template at run time
    is checked by the worker's router, and a record whose topic breaks the rule goes to the
    dead-letter topic with the reason (:func:`topic_problem`).

Dead-letter loops
    A sink that dead-letters into a topic it reads would feed every failing record back to
    itself, forever; so would two sinks that read each other's dead-letter topics.
    :func:`dead_letter_loops` finds such cycles among the sinks of one run.
"""

from __future__ import annotations

import fnmatch
import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_TOPIC_LENGTH",
    "PARTITION_MARK",
    "DeadLetterSink",
    "base_topic",
    "dead_letter_loops",
    "partition_of",
    "partitions_in",
    "pattern_problem",
    "topic_problem",
]

#: The longest topic name, in characters (Kafka's limit).
MAX_TOPIC_LENGTH = 249
_PUNCTUATION = frozenset("._-")
_GLOB = frozenset("*?[]!")


#: What separates a topic's name from its partition number in the store (``orders#3``,
#: docs/scaleout.md#partitions): no topic name holds it, so nothing can clash.
PARTITION_MARK = "#"


def partition_of(topic: str) -> tuple[str, int]:
    """``"orders#3"`` -> ``("orders", 3)``; an unpartitioned topic is its own partition 0."""
    base, mark, number = topic.rpartition(PARTITION_MARK)
    if mark and number.isdigit() and number.isascii():
        return base, int(number)
    return topic, 0


def partitions_in(topic: str, names: Iterable[str]) -> list[int]:
    """The partitions of ``topic`` among stored topic ``names``, in order: ``[0, 3]`` for
    ``orders#0`` and ``orders#3`` (``orders`` itself, unpartitioned, is not one of them)."""
    prefix = topic + PARTITION_MARK
    return sorted(
        number
        for name in names
        if name.startswith(prefix)
        for base, number in [partition_of(name)]
        if base == topic
    )


def base_topic(topic: str | None) -> str | None:
    """The topic a stored record belongs to, without its partition: what ``topic`` is in
    expressions and templates, and what sinks name tables and collections after."""
    if topic is None or PARTITION_MARK not in topic:
        return topic
    return partition_of(topic)[0]


def _bad_character(name: str, extra: frozenset[str] = frozenset()) -> str | None:
    for ch in name:
        if ch in _PUNCTUATION or ch in extra:
            continue
        if unicodedata.category(ch)[0] in "LMN":
            continue
        return ch
    return None


def _describe(ch: str) -> str:
    if ch == " ":
        return "a space"
    if ch == "\n":
        return "a newline"
    if unicodedata.category(ch)[0] in "CZ":
        return f"the control or space character U+{ord(ch):04X}"
    return repr(ch)


@functools.lru_cache(maxsize=4096)
def topic_problem(name: str) -> str | None:
    """Why ``name`` is not a valid topic name, or None when it is (see the module docstring)."""
    if not name:
        return "a topic name may not be empty"
    if len(name) > MAX_TOPIC_LENGTH:
        return f"a topic name has at most {MAX_TOPIC_LENGTH} characters, this one {len(name)}"
    if name in (".", ".."):
        return f"{name!r} is not a topic name"
    ch = _bad_character(name)
    if ch is not None:
        return (
            f"a topic name may not contain {_describe(ch)}: use letters, digits, '.', '_' and '-'"
        )
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` (a sink's ``topics:`` entry: a name or a glob) can match no valid
    topic name, or None."""
    if not pattern:
        return "a topic name or glob may not be empty"
    if len(pattern) > MAX_TOPIC_LENGTH:
        return f"a topic name has at most {MAX_TOPIC_LENGTH} characters, this one {len(pattern)}"
    ch = _bad_character(pattern, _GLOB)
    if ch is not None:
        return (
            f"a topic name may not contain {_describe(ch)}: use letters, digits, '.', '_' "
            "and '-' (and '*', '?', '[...]' in globs)"
        )
    return None


@dataclass(frozen=True, slots=True)
class DeadLetterSink:
    """A sink as the loop check sees it: its id, the topics it reads, where it dead-letters."""

    id: str
    patterns: tuple[str, ...]
    dead_letter_topic: str


def _reads(sink: DeadLetterSink, topic: str) -> bool:
    return any(fnmatch.fnmatchcase(topic, p) for p in sink.patterns)


def dead_letter_loops(sinks: Sequence[DeadLetterSink]) -> list[tuple[int, str]]:
    """Each dead-letter cycle among ``sinks`` as (index of the sink it is reported on, the
    message). A cycle is reported once, on its first sink in ``sinks`` order."""
    edges = {
        i: [j for j, other in enumerate(sinks) if _reads(other, sink.dead_letter_topic)]
        for i, sink in enumerate(sinks)
    }
    found: list[tuple[int, str]] = []
    seen: set[frozenset[int]] = set()
    for start in range(len(sinks)):
        # Shortest path from start back to itself (breadth first over dead-letter edges).
        parents: dict[int, int] = {}
        frontier = [start]
        cycle: list[int] | None = None
        while frontier and cycle is None:
            nxt: list[int] = []
            for node in frontier:
                for j in edges[node]:
                    if j == start:
                        cycle = [node]
                        while cycle[-1] != start:
                            cycle.append(parents[cycle[-1]])
                        cycle.reverse()
                        break
                    if j not in parents:
                        parents[j] = node
                        nxt.append(j)
                if cycle is not None:
                    break
            frontier = nxt
        if cycle is None or frozenset(cycle) in seen:
            continue
        seen.add(frozenset(cycle))
        first = sinks[cycle[0]]
        if len(cycle) == 1:
            message = (
                f"dead-letter loop: sink {first.id} dead-letters into "
                f"{first.dead_letter_topic!r}, which it reads itself "
                f"(topics: {', '.join(first.patterns)}); a record that fails would come back "
                "to it and fail again, forever. Use a dead-letter topic outside its topics"
            )
        else:
            steps = [f"sink {first.id} dead-letters into {first.dead_letter_topic!r}"]
            steps += [
                f"read by sink {sinks[i].id}, which dead-letters into "
                f"{sinks[i].dead_letter_topic!r}"
                for i in cycle[1:]
            ]
            message = (
                "dead-letter loop: "
                + ", ".join(steps)
                + f", read by sink {first.id}; a record that fails in each would circle "
                "forever. Use dead-letter topics that no sink on the loop reads"
            )
        found.append((cycle[0], message))
    return found
