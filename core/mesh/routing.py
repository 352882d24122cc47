"""Topic routing, in one place: which topic a record goes to, and which topics a sink reads.

* :func:`route` gives each record of a pipeline's batch its topic: the pipeline's ``topic:``
  (a literal, or a template rendered per record); a template that fails for a record makes
  it a failure of the ``topic`` stage (dead-lettered by the source's errors policy).
* :func:`sink_patterns` is what a sink subscribes to: its ``topics:`` (names or globs), else
  its pipeline's topic, where a templated topic becomes the glob of everything the template
  can produce (:func:`template_glob`, built with the expression template scanner).
* :func:`resolve_topics` turns patterns into the topics the store holds now.

The ``route`` transform (``core/transforms/routing.py``) sets ``record.topic`` before this
runs; a record that already has a topic keeps it.
"""

from __future__ import annotations

import fnmatch
import operator
from typing import TYPE_CHECKING

from ..config.topics import topic_problem
from ..errors import DataError
from ..expr import template_pieces

if TYPE_CHECKING:
    from ..config.loader import LoadedPipeline, LoadedSink
    from ..records import Record
    from .store import MeshStore

__all__ = ["resolve_topics", "route", "sink_patterns", "template_glob"]

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


async def resolve_topics(store: MeshStore, patterns: list[str]) -> list[str]:
    """The topics that exist now (or are named literally) matching ``patterns``."""
    literal = [p for p in patterns if not is_glob(p)]
    globs = [p for p in patterns if is_glob(p)]
    names = set(literal)
    if globs:
        for info in await store.topics():
            if any(fnmatch.fnmatchcase(info.name, g) for g in globs):
                names.add(info.name)
    return sorted(names)
