"""The in-memory mesh store, for tests and throwaway runs.

URL: ``memory://`` (a fresh store of its own) or ``memory://NAME``: every store opened with the
same name in this process shares one set of data, so a test can stop a worker and start
another on what the first one stored. Nothing survives the process;
:meth:`MemoryStore.discard` forgets a name.

It keeps the contract of every backend (``tests/test_store.py`` runs the same tests against
it and the SQLite store). Records go through the same codec as in SQLite, so what SQLite
cannot store fails here too and what is read back is a new record, never the appended
object. ``append`` encodes and validates everything before it changes anything and never
awaits in between, which makes it atomic.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, StoreError
from ..records import Record
from .codec import (
    ChangeSignal,
    check_offsets,
    decode_json,
    decode_rows,
    encode_positions,
    encode_row,
    encode_state,
)
from .store import GroupInfo, Lease, MeshStore, Retention, TopicInfo

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Topic:
    start: int = 0
    #: ``rows[i]`` is the record at offset ``start + i``, as ``(offset, *ROW_FIELDS)``.
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    appended_at: list[float] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + len(self.rows)


@dataclass(slots=True)
class _Group:
    offsets: dict[str, int] = field(default_factory=dict)
    state: str | None = None  # JSON text


@dataclass(slots=True)
class _Data:
    topics: dict[str, _Topic] = field(default_factory=dict)
    positions: dict[str, dict[str, str]] = field(default_factory=dict)  # JSON text
    groups: dict[str, _Group] = field(default_factory=dict)
    changes: ChangeSignal = field(default_factory=ChangeSignal)
    leases: dict[str, Lease] = field(default_factory=dict)


_NAMED: dict[str, _Data] = {}


class MemoryStore(MeshStore):
    """A mesh store in this process's memory; see the module docstring. ``clock`` (unix
    seconds) stamps appends and judges retention by age; ``poll_interval`` bounds how long
    :meth:`data_changed` waits."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.2,
    ) -> None:
        scheme, sep, name = url.partition("://")
        if scheme != "memory" or not sep or "/" in name or "?" in name:
            raise ConfigError(f"invalid memory store URL {url!r}: use memory:// or memory://NAME")
        self.url = url
        self.name = name or None
        self._clock = clock
        self._poll_interval = poll_interval
        self._data: _Data | None = None
        self._changes = ChangeSignal()

    @classmethod
    def discard(cls, name: str) -> None:
        """Forget the data shared under ``name`` (stores still open on it keep their copy)."""
        _NAMED.pop(name, None)

    async def open(self) -> None:
        if self._data is not None:
            return
        if self.name is None:
            self._data = _Data()
        else:
            self._data = _NAMED.setdefault(self.name, _Data())
        self._changes = self._data.changes

    async def close(self) -> None:
        self._data = None

    def _state(self) -> _Data:
        if self._data is None:
            raise StoreError(f"mesh store {self.url} is not open")
        return self._data

    # -- append and read -----------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """See :meth:`MeshStore.append`; fails like the SQLite store, before any change."""
        data = self._state()
        if any(r.topic is None for r in records):
            raise ValueError("cannot append a record whose topic is None (route it first)")
        position_rows = encode_positions(positions)
        appended_at = self._clock()
        ends: dict[str, int] = {}
        offsets: list[int] = []
        for r in records:
            name = str(r.topic)
            end = ends.get(name)
            if end is None:
                topic = data.topics.get(name)
                end = topic.end if topic is not None else 0
            offsets.append(end)
            ends[name] = end + 1
        rows = [
            encode_row(i, r, offset, appended_at)
            for i, (r, offset) in enumerate(zip(records, offsets, strict=True))
        ]
        # Everything is encoded: from here on nothing can fail.
        for r, row in zip(records, rows, strict=True):
            topic = data.topics.setdefault(str(r.topic), _Topic())
            topic.rows.append((row[0], *row[2:]))
            topic.appended_at.append(appended_at)
        for connector, partition, text in position_rows:
            data.positions.setdefault(connector, {})[partition] = text
        for r, offset in zip(records, offsets, strict=True):
            r.offset = offset
        if records:
            data.changes.notify()
        return offsets

    async def read(self, topic: str, offset: int, limit: int) -> list[Record]:
        stored = self._state().topics.get(topic)
        if stored is None or limit <= 0:
            return []
        first = max(offset - stored.start, 0)
        return decode_rows(stored.rows[first : first + limit], topic)

    async def topics(self) -> list[TopicInfo]:
        topics = self._state().topics
        return [TopicInfo(name, topics[name].start, topics[name].end) for name in sorted(topics)]

    async def end_offsets(self, topics: Sequence[str]) -> dict[str, int]:
        stored = self._state().topics
        return {name: stored[name].end if name in stored else 0 for name in topics}

    async def acquire_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, now: float
    ) -> list[Lease]:
        leases = self._state().leases
        conflicts = [
            lease
            for name in names
            if (lease := leases.get(name)) is not None
            and lease.owner != owner
            and lease.expires > now
        ]
        if not conflicts:
            leases.update({name: Lease(name, owner, now + ttl) for name in names})
        return conflicts

    async def break_leases(self, leases: Sequence[Lease]) -> None:
        held = self._state().leases
        for lease in leases:
            if lease.name in held and held[lease.name].owner == lease.owner:
                del held[lease.name]

    async def release_leases(self, owner: str) -> None:
        held = self._state().leases
        for name in [n for n, lease in held.items() if lease.owner == owner]:
            del held[name]

    async def leases(self) -> list[Lease]:
        return sorted(self._state().leases.values(), key=lambda lease: lease.name)

    def data_changed(self) -> Awaitable[None]:
        """Completes when records were appended to this data, or after ``poll_interval``."""
        return self._changes.wait(self._poll_interval)

    # -- source positions ----------------------------------------------------------------------

    async def positions(self, connector_id: str) -> dict[str, dict[str, Any]]:
        stored = self._state().positions.get(connector_id, {})
        return {partition: decode_json(text) for partition, text in stored.items()}

    async def source_ids(self) -> list[str]:
        return sorted(c for c, positions in self._state().positions.items() if positions)

    async def set_positions(
        self, connector_id: str, positions: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        data = self._state()
        rows = encode_positions({(connector_id, p): v for p, v in (positions or {}).items()})
        data.positions[connector_id] = {partition: text for _, partition, text in rows}

    # -- consumer groups -----------------------------------------------------------------------

    async def group(self, group: str) -> GroupInfo:
        stored = self._state().groups.get(group)
        if stored is None:
            return GroupInfo(group)
        return GroupInfo(group, dict(stored.offsets), decode_json(stored.state))

    async def groups(self) -> list[GroupInfo]:
        names = sorted(self._state().groups)
        return [await self.group(name) for name in names]

    async def commit(
        self, group: str, offsets: Mapping[str, int], state: Mapping[str, Any] | None = None
    ) -> None:
        data = self._state()
        checked = check_offsets(offsets)
        text = encode_state(group, state)
        stored = data.groups.setdefault(group, _Group())
        stored.offsets.update(checked)
        stored.state = text

    async def reset_group(self, group: str, offsets: Mapping[str, int] | None) -> None:
        data = self._state()
        checked = check_offsets(offsets or {})
        stored = data.groups.get(group)
        if stored is None:
            if checked:
                data.groups[group] = _Group(checked)
            return
        stored.offsets = dict(checked)
        if not stored.offsets and stored.state is None:
            del data.groups[group]

    # -- retention -----------------------------------------------------------------------------

    async def apply_retention(self, topic: str, retention: Retention) -> int:
        """Like the SQLite store: drop the records beyond the newest ``max_records`` and the
        oldest ones appended more than ``max_age_s`` ago; offsets never change."""
        stored = self._state().topics.get(topic)
        if stored is None:
            return 0
        cut = stored.start
        if retention.max_records is not None:
            cut = max(cut, stored.end - max(retention.max_records, 0))
        if retention.max_age_s is not None:
            oldest_kept = self._clock() - retention.max_age_s
            index, times = cut - stored.start, stored.appended_at
            while index < len(times) and times[index] < oldest_kept:
                index += 1
            cut = stored.start + index
        if retention.max_bytes is not None:
            sizes = [_row_size(row) for row in stored.rows]
            excess = sum(sizes) - retention.max_bytes
            index = 0
            while excess > 0 and index < len(sizes) - 1:
                excess -= sizes[index]
                index += 1
            cut = max(cut, stored.start + index)
        dropped = cut - stored.start
        del stored.rows[:dropped]
        del stored.appended_at[:dropped]
        stored.start = cut
        return dropped

    def __repr__(self) -> str:
        return f"<MemoryStore {self.url!r}>"


def _row_size(row: tuple[object, ...]) -> int:
    """About how many bytes a stored row takes (its text and bytes fields)."""
    return sum(len(v) for v in row if isinstance(v, str | bytes))
