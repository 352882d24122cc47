"""Waiting until records are delivered: committed by every sink of this worker that reads them.

A source that answers a caller (the webhook source's synchronous mode, a request/reply
endpoint) can hold its answer until the records it produced went all the way through: stored
in the mesh, read by each sink of the worker whose topics match, written out and committed.
The worker registers each sink's consumer group with the topic patterns it reads; the sink
loop reports each commit; :meth:`Deliveries.wait` resolves when every group that reads a
record's topic has committed past the record's offset.

Only the sinks of the same worker count: a sink run by another worker on the same store is
not seen (its records are delivered as far as this worker can tell once stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .mesh.routing import Subscription

if TYPE_CHECKING:
    from .records import Record

__all__ = ["Deliveries"]


class Deliveries:
    """The commits of a worker's sinks, and the callers waiting for them."""

    def __init__(self) -> None:
        self._wanted: dict[str, Subscription] = {}
        self._committed: dict[str, dict[str, int]] = {}
        self._waiters: list[tuple[list[tuple[str, int]], asyncio.Future[None]]] = []

    def add_group(
        self,
        group: str,
        wanted: Subscription | Sequence[str],
        committed: Mapping[str, int] | None = None,
    ) -> None:
        """Count consumer group ``group``, reading the topics ``wanted`` (a subscription, or
        topic names and globs), with its ``committed`` offsets (topic -> next offset)."""
        if not isinstance(wanted, Subscription):
            wanted = Subscription(tuple(wanted))
        self._wanted[group] = wanted
        self._committed[group] = dict(committed or {})

    def remove_group(self, group: str) -> None:
        """Stop counting ``group`` (its sink stopped for good): waiters need it no longer."""
        self._wanted.pop(group, None)
        self._committed.pop(group, None)
        self._wake()

    def committed(self, group: str, offsets: Mapping[str, int]) -> None:
        """``group`` committed ``offsets`` (topic -> next offset to read)."""
        if group in self._committed:
            self._committed[group].update(offsets)
            self._wake()

    def _readers(self, topic: str) -> list[str]:
        return [group for group, wanted in self._wanted.items() if wanted.matches(topic)]

    def _done(self, places: list[tuple[str, int]]) -> bool:
        return all(
            self._committed[group].get(topic, 0) > offset
            for topic, offset in places
            for group in self._readers(topic)
            if group in self._committed
        )

    def _wake(self) -> None:
        left = []
        for places, future in self._waiters:
            if future.done():
                continue
            if self._done(places):
                future.set_result(None)
            else:
                left.append((places, future))
        self._waiters = left

    async def wait(self, records: Sequence[Record], timeout: float) -> bool:
        """Wait until each stored record (``topic`` and ``offset`` set by the store) has been
        committed by every sink of this worker that reads its topic; ``True`` then, ``False``
        after ``timeout`` seconds. Records never stored (no offset) are not waited for."""
        places = [
            (r.topic, r.offset) for r in records if r.topic is not None and r.offset is not None
        ]
        if self._done(places):
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((places, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
        return True
