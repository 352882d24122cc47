"""The ``redis`` source: streams through a consumer group, or pub/sub.

Streams (``mode: stream``)
    Each stream is a partition. Entries are read with ``XREADGROUP`` as consumer ``consumer``
    of ``group`` (created at ``group_start``, ``0`` by default, when missing); an entry's
    fields become the record's ``data`` object (UTF-8 text; an entry that is not UTF-8 goes by
    the source's ``errors:`` policy, its fields base64). ``XACK`` follows only the batch's
    acknowledgement, i.e. once its records are durably in the mesh
    (:attr:`meshconnect.SourceBatch.ack`).

    A partition's position is ``{"last": ID, "inflight": [[FIRST, LAST], …], "ids": [ID, …]}``:
    ``last`` the newest entry read with ``>`` that is in the mesh, ``inflight`` and ``ids`` the
    entries in the mesh whose XACK was not yet confirmed when the batch was polled (ranges of
    one ``XREADGROUP`` each, which Redis hands out contiguously, and single entries claimed or
    re-read). On start the source reads its own pending entries (``XREADGROUP … 0``): those
    the position lists are in the mesh and are only acknowledged now; the others (read before
    a crash, never stored) are read again. When the group has no other consumer, the
    committed position is also where the group resumes (``XGROUP SETID`` to ``last``), so an
    ``offsets reset`` re-reads. Nothing is lost or stored twice across crashes.

    Entries pending with *another* consumer for ``claim_idle`` seconds (a consumer that died)
    are claimed with ``XAUTOCLAIM`` and read here. Claiming hands over entries the dead
    consumer may already have stored in its own mesh: across consumers the delivery is at
    least once (as every consumer-group reader's).

Pub/sub (``mode: pubsub``)
    ``SUBSCRIBE``/``PSUBSCRIBE`` to ``channels``; each message becomes a record. Redis keeps
    no message for a subscriber that is not connected: messages published while the worker is
    down or reconnecting are lost. At most once, by the nature of pub/sub.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from redis import exceptions as rx

from meshconnect import (
    ConfigError,
    DataError,
    MeshconnectError,
    Position,
    Record,
    Source,
    SourceBatch,
    eventrules,
)
from meshconnect.jsonvalue import loads
from meshconnect.positioncheck import (
    Check,
    fields_problem,
    list_of,
    no_position,
    nullable,
    partition_problem,
)

from .client import classify_redis, connect, describe
from .config import RedisSourceConfig

__all__ = ["RedisSource"]


def _sid(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _name(value: Any) -> str:
    """A channel name Redis sent: its undecodable bytes (it is not UTF-8) as lone
    surrogates, which :func:`_spelled` writes ``\\udcXX``, one to one."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _spelled(name: str) -> str:
    """A stream or channel name as a CloudEvents String (``subject`` and the start of
    ``id``): one holding a tab, a newline or a noncharacter spelled ``\\uXXXX``, backslashes
    doubled first (``eventrules.spelled_string``); a plain name as it is."""
    return eventrules.spelled_string(name)


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class _Read:
    """The entries of one stream in one batch: ``ranges`` from ``>`` reads, ``ids`` others."""

    ranges: list[list[str]] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    all: list[str] = field(default_factory=list)
    entries: list[tuple[str, Any]] = field(default_factory=list)

    def add(self, eid: str, fields: Any) -> None:
        self.all.append(eid)
        self.entries.append((eid, fields))


@dataclass(slots=True)
class _Polled:
    """A batch polled and not yet confirmed acknowledged by Redis."""

    seq: int
    reads: dict[str, _Read]
    stored: bool = False


class RedisSource(Source[RedisSourceConfig]):
    """Reads Redis streams or channels (module docstring)."""

    empty_position = (
        "reads each stream from group_start when the group has no other consumer, else from "
        "where the group is"
    )

    def __init__(self, config: RedisSourceConfig, context: Any) -> None:
        super().__init__(config, context)
        self.bounded = config.mode == "stream" and config.until_end

    # -- start ------------------------------------------------------------------------------

    async def start(self, positions: Mapping[str, Position]) -> Mapping[str, Position] | None:
        c = self.config
        self.client: Any = connect(c)  # redis-py's reply types are unions of everything
        self.where = describe(c)
        self.source_uri = self.where if "://" in self.where else f"redis://{self.where}"
        if c.mode == "pubsub":
            await self._subscribe()
            return None
        self.consumer = c.consumer or f"meshconnect-{self.context.pipeline}"
        self.streams = c.stream_names
        #: stream -> newest ``>``-read entry in the mesh (committed) / polled (in memory).
        self.last: dict[str, str | None] = {}
        #: Batches polled whose XACK is not confirmed yet, oldest first.
        self.unconfirmed: deque[_Polled] = deque()
        #: Entries to read again before anything else (own pending ones), by stream.
        self.again: dict[str, deque[tuple[str, Any]]] = {s: deque() for s in self.streams}
        self.polled = 0
        self.ack_lock = asyncio.Lock()
        self.reread = False
        self.next_claim = time.monotonic()  # look for a dead consumer's entries at once
        #: The largest entry of the last ``>`` read, in bytes: the next read's ``COUNT`` is
        #: what fits in :data:`READ_BYTES` (at first, as if entries were 1 MiB).
        self.entry_bytes = READ_BYTES // READ_FIRST
        self.claim_cursor: dict[str, str] = {s: "0-0" for s in self.streams}
        #: Where a "from now" start began (`group_start: $`), for the worker to commit.
        self.started: dict[str, Position] = {}
        for stream in self.streams:
            await self._start_stream(stream, positions.get(stream) or {})
        return self.started or None

    def position_problem(self, partition: str, position: Position) -> str | None:
        """A stream of ``stream``/``streams`` with ``{"last": ID, "inflight": [[FIRST, LAST],
        ...], "ids": [ID, ...]}`` (module docstring); pub/sub keeps none."""
        if self.config.mode == "pubsub":
            return no_position("pub/sub reads what is published while it runs")
        return partition_problem(
            partition, self.config.stream_names, "the streams of config.stream/streams"
        ) or _position_problem(position)

    async def end_positions(self) -> dict[str, Position]:
        """Each stream at its newest entry (``offsets reset --to end``): the group resumes
        after it when it has no other consumer. Pub/sub has no positions: it always reads
        from now."""
        c = self.config
        if c.mode != "stream":
            raise NotImplementedError
        client: Any = connect(c)
        out: dict[str, Position] = {}
        try:
            for stream in c.stream_names:
                try:
                    info = await client.xinfo_stream(stream)
                    last = _sid(info["last-generated-id"])
                except rx.ResponseError as exc:  # no such key: nothing to skip
                    if "no such key" not in str(exc).lower():
                        raise
                    last = "0-0"
                out[stream] = {"last": last, "inflight": [], "ids": []}
        finally:
            await client.aclose()
        return out

    async def _start_stream(self, stream: str, position: Mapping[str, Any]) -> None:
        c = self.config
        _check_position(stream, position)
        try:
            await self.client.xgroup_create(stream, c.group, id=c.group_start, mkstream=True)
        except rx.ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                kind = await self.client.type(stream)
                kind = kind.decode() if isinstance(kind, bytes) else kind
                raise ConfigError(
                    f"redis source: key {stream!r} holds a {kind}, not a stream "
                    "(config.stream/streams)"
                ) from None
            if "BUSYGROUP" not in str(exc):
                raise
        last = position.get("last")
        moved = False
        consumers = await self.client.xinfo_consumers(stream, c.group)
        if all(_sid(x.get("name")) == self.consumer for x in consumers):
            # The group has no other reader: the mesh says where it resumes. After a crash
            # the group may be past `last` (entries read, never stored: `>` delivers them
            # again); after an `offsets reset`, or with nothing committed, it starts over
            # at `group_start`.
            if last is None:
                last = c.group_start
                if last == "$":
                    info = await self.client.xinfo_stream(stream)
                    last = _sid(info["last-generated-id"])
                    self.started[stream] = {"last": last, "inflight": [], "ids": []}
            await self.client.xgroup_setid(stream, c.group, last)
            moved = True
        self.last[stream] = last
        in_mesh_ranges = [(_key(a), _key(b)) for a, b in position.get("inflight", [])]
        in_mesh_ids = set(position.get("ids", []))
        last_key = _key(last) if last is not None else None
        start = "0-0"
        stored: list[str] = []
        while True:
            reply = await self.client.xreadgroup(
                c.group, self.consumer, {stream: start}, count=1000
            )
            entries = reply[0][1] if reply else []
            if not entries:
                break
            for entry_id, fields in entries:
                eid = _sid(entry_id)
                k = _key(eid)
                if not fields:  # deleted (XDEL, MAXLEN) while pending: nothing to read
                    stored.append(eid)
                elif eid in in_mesh_ids or any(a <= k <= b for a, b in in_mesh_ranges):
                    stored.append(eid)  # in the mesh: only its XACK was missing
                elif moved and last_key is not None and k > last_key:
                    pass  # `>` delivers it again after the SETID
                else:
                    self.again[stream].append((eid, fields))
            start = _sid(entries[-1][0])
        for i in range(0, len(stored), 1000):
            await self.client.xack(stream, c.group, *stored[i : i + 1000])
        if self.again[stream]:
            self.context.logger.info(
                "redis: %d pending entries of %s on %s are read again (read before a stop, "
                "never stored)",
                len(self.again[stream]),
                self.consumer,
                stream,
            )

    # -- poll -------------------------------------------------------------------------------

    async def poll(self) -> SourceBatch | None:
        if self.config.mode == "pubsub":
            return await self._poll_pubsub()
        await self._retry_acks()
        if self.reread:
            await self._reread_own_pending()
        reads: dict[str, _Read] = {}
        records: list[Record] = []
        failures: list[tuple[Record, BaseException]] = []
        room = self.config.batch_size
        for stream in self.streams:
            again = self.again[stream]
            while again and room:
                eid, fields = again.popleft()
                self._entry(stream, eid, fields, records, failures)
                read = reads.setdefault(stream, _Read())
                read.ids.append(eid)
                read.add(eid, fields)
                room -= 1
        if room and time.monotonic() >= self.next_claim:
            room = await self._claim(reads, records, failures, room)
            self.next_claim = time.monotonic() + self.config.claim_interval
        if room and not records:
            try:
                room = await self._read_new(reads, records, failures, room)
            except (rx.ConnectionError, rx.TimeoutError):
                # Redis may have handed out entries whose reply was lost: they are pending
                # with this consumer, and `>` will not deliver them again.
                self.reread = True
                raise
        if not reads:
            if self.bounded and not any(self.again.values()):
                return None
            return SourceBatch([])
        return self._batch(reads, records, failures)

    async def _reread_own_pending(self) -> None:
        """Queue this consumer's pending entries that no polled batch holds (read by a
        command whose reply was lost) to be read again."""
        mine = {e for batch in self.unconfirmed for r in batch.reads.values() for e in r.all}
        for stream in self.streams:
            queued = {e for e, _ in self.again[stream]}
            start = "0-0"
            while True:
                reply = await self.client.xreadgroup(
                    self.config.group, self.consumer, {stream: start}, count=1000
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                for entry_id, fields in entries:
                    eid = _sid(entry_id)
                    if eid not in mine and eid not in queued and fields:
                        self.again[stream].append((eid, fields))
                start = _sid(entries[-1][0])
        self.reread = False

    async def _read_new(
        self,
        reads: dict[str, _Read],
        records: list[Record],
        failures: list[tuple[Record, BaseException]],
        room: int,
    ) -> int:
        """Read new entries (``>``), ``room`` at most in all. Redis applies ``COUNT`` to each
        stream of an ``XREADGROUP``: the room is shared among the streams, and those that
        filled their share are read again (without blocking) while room is left. An entry
        past the room (more streams than room) is kept to be read first at the next poll."""
        block = None if self.bounded else max(1, int(self.config.block * 1000))
        want = list(self.streams)
        budget = READ_BYTES  # COUNT is entries, and an entry may be megabytes
        while room and want and budget > 0:
            # Each read asks for what fits in the budget left at the size of the largest
            # entry of the last read.
            fit = max(1, budget // (self.entry_bytes * len(want)))
            count = max(1, min(room // len(want), fit))
            reply = await self.client.xreadgroup(
                self.config.group,
                self.consumer,
                dict.fromkeys(want, ">"),
                count=count,
                block=block,
            )
            block = None  # only the first read waits for news
            want = []
            if reply:
                sizes = list(map(_entry_bytes, chain(*(e for _, e in reply))))
                if sizes:
                    self.entry_bytes = max(1, max(sizes))
                    budget -= sum(sizes)
            for name, entries in reply or []:
                stream = _sid(name)
                if not entries:
                    continue
                if len(entries) == count:
                    want.append(stream)  # may hold more
                taken, rest = entries[:room], entries[room:]
                self.again[stream].extend((_sid(e), f) for e, f in rest)
                if not taken:
                    continue
                read = reads.setdefault(stream, _Read())
                first = _sid(taken[0][0])
                for entry_id, fields in taken:
                    eid = _sid(entry_id)
                    self._entry(stream, eid, fields, records, failures)
                    read.add(eid, fields)
                read.ranges.append([first, read.all[-1]])
                self.last[stream] = read.all[-1]
                room -= len(taken)
        return room

    async def _claim(
        self,
        reads: dict[str, _Read],
        records: list[Record],
        failures: list[tuple[Record, BaseException]],
        room: int,
    ) -> int:
        """Claim entries idle for ``claim_idle`` with other consumers (dead ones)."""
        mine = {e for batch in self.unconfirmed for r in batch.reads.values() for e in r.all}
        mine.update(e for again in self.again.values() for e, _ in again)
        for stream in self.streams:
            if not room:
                break
            reply = await self.client.xautoclaim(
                stream,
                self.config.group,
                self.consumer,
                min_idle_time=int(self.config.claim_idle * 1000),
                start_id=self.claim_cursor[stream],
                count=room,
            )
            cursor, entries = _sid(reply[0]), reply[1]
            self.claim_cursor[stream] = cursor
            taken = 0
            for entry_id, fields in entries:
                eid = _sid(entry_id)
                if eid in mine or fields is None:
                    continue  # ours and on its way to the mesh, or deleted
                self._entry(stream, eid, fields, records, failures)
                read = reads.setdefault(stream, _Read())
                read.ids.append(eid)
                read.add(eid, fields)
                taken += 1
            if taken:
                self.context.logger.warning(
                    "redis: claimed %d entries of %s pending for %.0fs or more in group %s (a "
                    "consumer that stopped without acknowledging them)",
                    taken,
                    stream,
                    self.config.claim_idle,
                    self.config.group,
                )
            room -= taken
        return room

    def _entry(
        self,
        stream: str,
        eid: str,
        fields: Mapping[bytes, bytes],
        records: list[Record],
        failures: list[tuple[Record, BaseException]],
    ) -> None:
        try:
            data = {k.decode(): v.decode() for k, v in fields.items()}
        except UnicodeDecodeError as exc:
            raw = {
                base64.b64encode(k).decode(): base64.b64encode(v).decode()
                for k, v in fields.items()
            }
            record = self._record(stream, eid, raw)
            failures.append(
                (record, DataError(f"redis: entry {eid} of {stream} is not UTF-8: {exc}"))
            )
            return
        records.append(self._record(stream, eid, data))

    def _record(self, stream: str, eid: str, data: Any) -> Record:
        stream = _spelled(stream)
        return Record.fast(
            data,
            f"{stream}-{eid}",
            self.source_uri,
            self.config.type,
            stream,
            "application/json",
            _entry_time(eid),
        )

    def _batch(
        self,
        reads: dict[str, _Read],
        records: list[Record],
        failures: list[tuple[Record, BaseException]],
    ) -> SourceBatch:
        self.polled += 1
        seq = self.polled
        self.unconfirmed.append(_Polled(seq, reads))
        positions: dict[str, Position] = {}
        for stream in reads:
            inflight: list[list[str]] = []
            ids: list[str] = []
            for batch in self.unconfirmed:
                read = batch.reads.get(stream)
                if read is not None:
                    inflight.extend(read.ranges)
                    ids.extend(read.ids)
            position: dict[str, Any] = {"inflight": inflight, "ids": ids}
            if self.last.get(stream) is not None:
                position["last"] = self.last[stream]
            positions[stream] = position

        async def ack(error: BaseException | None) -> None:
            await self._acked(seq, error)

        return SourceBatch(records, positions, failures, ack)

    async def _acked(self, seq: int, error: BaseException | None) -> None:
        batch = next((b for b in self.unconfirmed if b.seq == seq), None)
        if batch is None:
            return
        if error is not None:
            # Not in the mesh (the worker gave up on it): read these entries again, first.
            self.unconfirmed.remove(batch)
            for stream, read in batch.reads.items():
                self.again[stream].extendleft(reversed(read.entries))
            return
        batch.stored = True
        await self._retry_acks()

    async def _retry_acks(self) -> None:
        """XACK the batches that are in the mesh, oldest first. A batch leaves
        ``unconfirmed`` (and the positions) only once Redis confirmed its XACK; on a lost
        connection it stays, and the next poll tries again."""
        async with self.ack_lock:
            while self.unconfirmed and self.unconfirmed[0].stored:
                batch = self.unconfirmed[0]
                try:
                    for stream, read in batch.reads.items():
                        ids = read.all
                        for i in range(0, len(ids), 1000):
                            await self.client.xack(stream, self.config.group, *ids[i : i + 1000])
                except rx.RedisError as exc:
                    self.context.logger.warning(
                        "redis: XACK failed (%s); retried at the next poll", exc
                    )
                    return
                self.unconfirmed.popleft()

    # -- pub/sub ------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        patterns = [ch for ch in self.config.channels if any(x in ch for x in "*?[")]
        plain = [ch for ch in self.config.channels if ch not in patterns]
        if plain:
            await self.pubsub.subscribe(*plain)
        if patterns:
            await self.pubsub.psubscribe(*patterns)

    async def _poll_pubsub(self) -> SourceBatch:
        records: list[Record] = []
        failures: list[tuple[Record, BaseException]] = []
        deadline = time.monotonic() + self.config.block
        while len(records) + len(failures) < self.config.batch_size:
            # at least one look, however short the wait: a poll that never read spun
            wait = max(0.0, deadline - time.monotonic())
            message = await self.pubsub.get_message(
                ignore_subscribe_messages=True, timeout=wait if not records else 0.0
            )
            if message is None:
                if records or wait <= 0:
                    break
                continue
            # A pattern matches names of any bytes: undecodable ones spelled \\udcXX
            channel = _spelled(_name(message["channel"]))
            payload = message["data"]
            now = _now_iso()  # ingestion time: a message carries no time of its own
            try:
                text = payload.decode() if isinstance(payload, bytes) else str(payload)
                data = loads(text) if self.config.format == "json" else text
            except ValueError as exc:  # the message as it came: its text, else its bytes
                raw: str | bytes = payload if isinstance(payload, bytes) else str(payload)
                if isinstance(raw, bytes):
                    try:
                        raw = raw.decode()
                    except UnicodeDecodeError:
                        pass
                record = Record(
                    raw,
                    source=self.source_uri,
                    type=self.config.type,
                    subject=channel,
                    time=now,
                    datacontenttype="text/plain"
                    if isinstance(raw, str)
                    else "application/octet-stream",
                )
                failures.append((record, DataError(f"redis: a message on {channel}: {exc}")))
                continue
            records.append(
                Record(
                    data, source=self.source_uri, type=self.config.type, subject=channel, time=now
                )
            )
        return SourceBatch(records, failures=failures)

    # -- the rest -----------------------------------------------------------------------------

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_redis(exc)

    async def stop(self) -> None:
        pubsub = getattr(self, "pubsub", None)
        if pubsub is not None:
            try:
                await pubsub.aclose()
            except Exception:  # a lost connection: nothing to release
                pass
        client = getattr(self, "client", None)
        if client is not None:
            await client.aclose()


#: Bytes of entries one ``>`` read asks for (the fields' names and values), whatever
#: ``batch_size`` says: 1,000 entries of 1 MB each were a 1 GB read, several times that as
#: records (a 100 MB entry took 670 MB).
READ_BYTES = 16 * 1024 * 1024
#: Entries of the first read, before any size is known.
READ_FIRST = 16


def _entry_bytes(entry: tuple[Any, Any]) -> int:
    """An entry's fields' names and values, in bytes (a deleted entry's: 0)."""
    fields = entry[1]
    if not fields:
        return 0
    return sum(map(len, fields)) + sum(map(len, fields.values()))


_ENTRY_ID = re.compile(r"(\d{1,20})(?:-(\d{1,20}))?")
_U64 = 2**64 - 1


def _is_entry_id(value: Any) -> bool:
    """An entry id Redis accepts: ``MS-SEQ`` (or ``MS``), each at most 2**64-1."""
    match = _ENTRY_ID.fullmatch(value) if isinstance(value, str) else None
    return match is not None and all(int(n or 0) <= _U64 for n in match.groups())


def _is_range(value: Any) -> bool:
    """``[FIRST, LAST]``, entry ids in that order (one ``XREADGROUP``'s entries)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(map(_is_entry_id, value))
        and _key(value[0]) <= _key(value[1])
    )


_ENTRY = Check('an entry id "MS-SEQ" such as "1700000000000-0"', _is_entry_id)
_POSITION_FIELDS = {
    "last": nullable(_ENTRY),
    "inflight": Check(
        'a list of [FIRST, LAST] entry-id pairs, FIRST up to LAST, such as [["1-0", "1-5"]]',
        lambda v: isinstance(v, list) and all(map(_is_range, v)),
    ),
    "ids": list_of(_ENTRY, 'a list of entry ids such as ["1700000000000-0"]'),
}


def _position_problem(position: Mapping[str, Any]) -> str | None:
    return fields_problem(position, _POSITION_FIELDS)


def _check_position(stream: str, position: Mapping[str, Any]) -> None:
    """``ConfigError`` for a committed position that is not one this source writes (one
    given to ``offsets reset --to`` by an older version): Redis would refuse its ids at every
    start, and a typo'd field would be ignored."""
    if not isinstance(position, Mapping) or (problem := _position_problem(position)):
        raise ConfigError(
            f"redis source: the position of stream {stream!r} is not one this source wrote "
            f"({problem or 'not an object'}): set it again with meshconnect offsets reset"
        )


def _now_iso() -> str:
    """The ingestion time: now, as an RFC 3339 timestamp in UTC."""
    us = time.time_ns() // 1000
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"
    )


#: 10000-01-01T00:00:00Z in milliseconds: RFC 3339 writes years of four digits.
_YEAR_10000_MS = 253_402_300_800_000


def _entry_time(eid: str) -> str | None:
    """An entry id's milliseconds as the record's RFC 3339 time; none for an id past the
    year 9999 (an explicit id, such as ``18446744073709551615-0``: no time it could be)."""
    ms = _key(eid)[0]
    if ms >= _YEAR_10000_MS:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
