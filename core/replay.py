"""Replaying dead letters (``meshconnect topics replay``, docs/errors.md#replaying-dead-letters).

:func:`replay_dead_letters` publishes dead letters again once the cause is fixed: without the
``error*`` extensions, to a topic, optionally filtered. Its progress is a source position
``replay/<dlq>-><topic>`` appended in the same store transaction as the records, so a crash
never replays a dead letter twice and a second run only replays new ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errorpolicy import ERROR_ATTRIBUTES, ERROR_EXTENSIONS
from .records import Record

if TYPE_CHECKING:
    from .mesh.store import MeshStore

__all__ = ["ReplaySummary", "replay_dead_letters", "replay_id", "revived"]


def replay_id(dead_letter_topic: str, to: str) -> str:
    """The id under which replay progress from ``dead_letter_topic`` to ``to`` is stored."""
    return f"replay/{dead_letter_topic}->{to}"


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
    dead letter, ``error*`` extensions included) to ``to``, as :func:`revived` makes them.

    Starts after what earlier replays to ``to`` did, or at the beginning with
    ``from_beginning``; stops at the end the topic had when it started (dead letters arriving
    meanwhile wait for the next replay). Each batch is appended with the replay's position in
    one store transaction. ``dry_run`` counts without appending or moving the position."""
    ident = replay_id(dead_letter_topic, to)
    done = await store.positions(ident)
    offset = 0 if from_beginning else int(done.get(dead_letter_topic, {}).get("next", 0))
    end = (await store.end_offsets([dead_letter_topic]))[dead_letter_topic]
    summary = ReplaySummary(start=offset, end=end)
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
            out.append(revived(dead, to))
        offset = int(batch[-1].offset) + 1  # type: ignore[arg-type]
        if not dry_run:
            await store.append(out, {(ident, dead_letter_topic): {"next": offset}})
        summary.replayed += len(out)
    summary.end = offset
    return summary
