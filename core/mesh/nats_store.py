"""The mesh store on NATS JetStream, for workers spread over several machines.

URL: ``nats://[USER:PASSWORD@]HOST:PORT`` (no TLS yet), with options ``?prefix=NAME``
(default ``meshconnect``; letters, digits, ``-`` and ``_``, at most 215 of them: the namespace
of every stream and bucket), ``duplicate_window=SECONDS`` (default 600: how long JetStream
remembers message ids, see *Guarantee*), ``reconnect_timeout=SECONDS`` (default 60: how long
an operation waits for a lost server) and ``replicas=N`` (default 1; 3 on a JetStream
cluster). Needs the ``nats`` extra (``pip install 'meshconnect[nats]'``) and a server started
with JetStream (``-js``).

**Layout.** Each topic is a stream ``MC_<prefix>_T_<topic>`` (the topic's characters other
than letters, digits and ``-`` written ``_XX`` in hex, one per UTF-8 byte) on the subject
``mc.<prefix>.t.<same>``. JetStream takes stream names of at most 255 characters, and a
topic name of up to 249 characters can escape to 2,988: when the name would be longer, the
part after ``_T_`` is instead as many of the escaped name's first characters as fit, ``__``
(never in an escaped name) and a digest of the whole topic name (blake2b, 128 bits, hex), and
the stream's description holds the real name. Every store of the prefix derives the same
name for a topic, at any time; :meth:`NatsStore.topics` takes a stream for a topic when the
name unescaped, or else its description, is a topic whose name is that stream's. (The
description is written when the stream is made, with it: there is no moment a stream exists
without it. Names that fit are as every earlier version wrote them.) A stream holds one
message per appended batch and topic: the records encoded by
:func:`~meshconnect.mesh.codec.encode_segment`, with the headers ``Mc-First`` (offset of its
first record), ``Mc-N`` (records) and ``Mc-At`` (append time). Offsets are dense per topic:
each publish carries ``Nats-Expected-Last-Sequence``, so a message is stored only right after
the one whose end it starts at (another process's append in between makes the store read the
new end and publish again). A read finds the message holding an offset by a binary search on
``Mc-First`` and then reads on, a message per request. Retention purges whole messages and
keeps the newest one (it holds the end); a topic's start inside a message is kept in the KV
bucket ``MC_<prefix>_starts``. Three more buckets hold the rest: ``MC_<prefix>_positions`` (a
connector's positions, one JSON object per connector), ``MC_<prefix>_groups`` (a group's
offsets and sink state) and ``MC_<prefix>_leases`` (every lease in one key, changed by
compare-and-set on its revision). A key is the topic's, connector's or group's name in
base64url; a name whose base64 is longer than 1,024 characters gets the key ``h.<digest>``
instead (a subject longer than the server's ``max_control_line``, 4,096 bytes, would end the
connection), and in the buckets whose keys are listed, positions and groups, its entry
holds ``{"name": ..., "value": ...}``. Appends also publish a core NATS message on
``mc.<prefix>.changed`` so readers wake at once.

**Guarantee.** JetStream has no transaction over several streams and a KV bucket, so an
append publishes the records first and sets the source positions after. Each message is
published with a ``Nats-Msg-Id`` made of the connectors, the positions the batch starts from
(the ones committed before it, with their KV revision, which every commit and reset changes)
and the topic. A worker that dies between the publish and the position update restarts from
the old positions and reads the records again; its batch gets the same id, and JetStream, if
this happens within ``duplicate_window``, answers that it is a duplicate with the first
copy's sequence. The store reads that copy back: when its records are the batch's first
records (the same CloudEvent ``source`` and ``id``, in order) they keep the offsets they got,
and only the rest of the batch is published. So the path into the mesh is exactly-once
**when the source reads the same records in the same order from a committed position** (the
``file``, ``jdbc`` and ``s3`` sources, whose record ids come from what they read) **and the
worker is back within ``duplicate_window``**; otherwise it is at-least-once: the records
published before the crash are stored again (also those of the first copy beyond a smaller
batch read the second time). Records appended without positions are at-least-once. Group
commits and position updates are single KV writes: atomic.

**A lost connection** is waited out for up to ``reconnect_timeout`` seconds (nats-py
reconnects by itself; each operation is retried meanwhile). A publish whose acknowledgement
was lost is simply published again: the message id makes it idempotent. A stream that does
not answer while JetStream answers that the positions bucket no longer exists means the server
lost the mesh (an empty storage directory): :class:`~meshconnect.errors.StoreLostError`, fatal,
instead of waiting for it.

**Durability** is JetStream's: a SIGKILL of ``nats-server`` loses nothing acknowledged (the
data is in the OS's page cache); a power loss may lose what was not yet synced (the server's
``sync_interval``, 2 minutes by default; ``sync_interval: always`` to sync every write).

**Leases and fencing.** All leases live in one KV key, so :meth:`acquire_leases` takes all or
none with one compare-and-set; a lease that changes owner gets a new epoch. The store
remembers the leases it holds; before it sets a source's positions or commits a group whose
lease it holds, it checks that the lease still has its owner and epoch, and fails with
:class:`~meshconnect.mesh.store.FencedError` otherwise. (Unlike Redis the check and the write
are two requests, and the records were already published: a replaced worker is stopped at
its next commit, not before its last publish. A publish goes after the topic's last message as
the store knows it; when another process appended since, the store reads the end anew and
checks the source leases of the batch before it publishes, so a replaced worker never puts its
batch after the new owner's records.)
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson

from ..errors import ConfigError, StoreError, StoreLostError
from ..records import Record
from ..secrets import shown_url
from .codec import (
    ChangeSignal,
    RecordEncodingError,
    check_offsets,
    decode_json,
    decode_segment,
    encode_positions,
    encode_segment,
    encode_state,
)
from .store import FencedError, GroupInfo, Lease, MeshStore, Retention, TopicInfo
from .tail import DecodedSegments, RecordTail

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["NatsStore"]

log = logging.getLogger("meshconnect.mesh.nats")

T = TypeVar("T")
_SAFE = re.compile(r"[A-Za-z0-9-]")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})*")
_LEASES_KEY = "all"

#: JetStream's longest stream name (nats-server's ``JSMaxNameLen``; the name is also a
#: directory of the server's file store).
_MAX_STREAM_NAME = 255
#: What separates a hashed stream name's readable head from its digest: never in an escaped
#: name, where ``_`` always starts ``_XX``.
_HASHED = "__"
_DIGEST_CHARS = 32  # blake2b, 16 bytes, in hex
#: The longest prefix: one that still leaves room for a hashed stream name.
_MAX_PREFIX = _MAX_STREAM_NAME - len("MC__T_") - len(_HASHED) - _DIGEST_CHARS
#: The longest KV key kept as the name's base64. A key ends a subject (``$KV.<bucket>.<key>``;
#: a direct get names the bucket once more), and a client sending a subject past the server's
#: ``max_control_line`` (4096 bytes by default) is disconnected: longer names get a hashed key.
_MAX_KEY = 1024


def _escape(topic: str) -> str:
    """A topic name as stream-name and subject-token characters (letters, digits, ``-``,
    ``_XX`` for each other byte)."""
    return "".join(
        c if _SAFE.fullmatch(c) else "".join(f"_{b:02X}" for b in c.encode()) for c in topic
    )


def _unescape(text: str) -> str | None:
    """The topic name ``text`` is the escaped form of; None when it is no escaped form (a
    hashed name, or another prefix's stream)."""
    if not _ESCAPED.fullmatch(text):
        return None
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def _digest(name: str) -> str:
    return hashlib.blake2b(name.encode(), digest_size=_DIGEST_CHARS // 2).hexdigest()


def _token(topic: str, room: int) -> str:
    """The part of a topic's stream name and subject after the prefix, at most ``room``
    characters: the escaped name when it fits; else the escaped name's first characters that
    fit, ``__`` and a digest of the whole name (its real name is the stream's description)."""
    escaped = _escape(topic)
    if len(escaped) <= room:
        return escaped
    head: list[str] = []
    left = room - len(_HASHED) - _DIGEST_CHARS
    for c in topic:
        piece = _escape(c)
        left -= len(piece)
        if left < 0:
            break
        head.append(piece)
    return "".join(head) + _HASHED + _digest(topic)


def _key(name: str) -> str:
    """A KV key for any name: base64url (letters, digits, ``-``, ``_``, ``=``), or for a name
    whose base64 is longer than ``_MAX_KEY``, ``h.`` and a digest (see :func:`_wrap`)."""
    key = base64.urlsafe_b64encode(name.encode()).decode() or "="
    return key if len(key) <= _MAX_KEY else "h." + _digest(name)


def _hashed(key: str) -> bool:
    return "." in key  # never in base64url


def _unkey(key: str) -> str:
    return base64.urlsafe_b64decode(key.encode()).decode()


def _wrap(name: str, body: bytes) -> bytes:
    """What a KV entry of ``name`` holds: ``body`` (JSON); under a hashed key, an object with
    the name too, so listing the keys finds the names."""
    if not _hashed(_key(name)):
        return body
    return b'{"name":' + orjson.dumps(name) + b',"value":' + body + b"}"


def _unwrap(name: str, value: bytes) -> Any:
    """The JSON document in an entry written by :func:`_wrap`."""
    doc = orjson.loads(value)
    return doc["value"] if _hashed(_key(name)) else doc


class NatsStore(MeshStore):
    """The mesh store in NATS JetStream; see the module docstring for URL, layout and the
    exact guarantee. ``clock`` (unix seconds) stamps appends and judges retention by age."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.5,
    ) -> None:
        (
            self._servers,
            self.url,
            self.prefix,
            self.duplicate_window,
            self.reconnect_timeout,
            self.replicas,
        ) = _parse_url(url)
        self._clock = clock
        self._poll_interval = poll_interval
        self._changes = ChangeSignal()
        self._nc: Client | None = None
        #: Whether open() said it waits for the server (once: the client retries every 0.2 s).
        self._said_waiting = False
        self._js: JetStreamContext | None = None
        self._kv: dict[str, KeyValue] = {}
        self._streams: set[str] = set()  # streams known to exist
        self._publish_lock: asyncio.Lock | None = None  # made by open(), on its event loop
        #: The last positions this store saw per connector (what the next batch starts from).
        #: (position texts by partition, KV revision): the revision changes with every commit
        #: and reset, so a batch's message ids never match those of a different history.
        self._known: dict[str, tuple[dict[str, str], int]] = {}
        self._held: dict[str, tuple[str, int]] = {}
        self._tail = RecordTail()
        #: Per topic, (last sequence, end offset) as this store's appends left them.
        self._ends: dict[str, tuple[int, int]] = {}
        #: Per topic, where this store's last read ended: (next offset, its message's sequence).
        self._cursors: dict[str, tuple[int, int]] = {}
        #: Per topic, the last message decoded: (sequence, records), bounded in bytes for all
        #: topics together.
        self._decoded = DecodedSegments()
        self._appending = 0
        self._subject_prefix = f"mc.{self.prefix}"
        self._stream_prefix = f"MC_{self.prefix}_T_"
        #: Per topic, its stream's name and subject.
        self._names: dict[str, tuple[str, str]] = {}

    # -- names ---------------------------------------------------------------------------------

    def _stream(self, topic: str) -> str:
        return self._stream_and_subject(topic)[0]

    def _subject(self, topic: str) -> str:
        return self._stream_and_subject(topic)[1]

    def _stream_and_subject(self, topic: str) -> tuple[str, str]:
        """A topic's stream name and subject (*Layout*), from the topic and the prefix alone:
        every store of the prefix, now or after a restart, finds the same stream."""
        names = self._names.get(topic)
        if names is None:
            token = _token(topic, _MAX_STREAM_NAME - len(self._stream_prefix))
            names = self._names[topic] = (
                self._stream_prefix + token,
                f"{self._subject_prefix}.t.{token}",
            )
        return names

    def _topic_of(self, stream: str, description: str | None) -> str | None:
        """The topic whose stream is ``stream`` (the name unescaped, or for a hashed name the
        description it was created with); None for a stream that is no topic's of this
        prefix."""
        if not stream.startswith(self._stream_prefix):
            return None
        for topic in (_unescape(stream[len(self._stream_prefix) :]), description):
            if topic and self._stream(topic) == stream:
                return topic
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (waiting up to ``reconnect_timeout``), create the KV buckets if missing and
        subscribe to the change notifications."""
        if self._nc is not None:
            return
        try:
            import nats
        except ImportError:
            raise ConfigError(
                f"mesh store {self.url} needs the NATS client: pip install 'meshconnect[nats]'"
            ) from None

        try:  # the client tries again and again (also later, after a lost connection)
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=self._servers,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                ),
                timeout=max(self.reconnect_timeout, 0.1),
            )
        except TimeoutError:
            raise StoreError(
                f"mesh store {self.url}: connect: NATS unreachable for {self.reconnect_timeout:g} s"
            ) from None
        except Exception as exc:  # refused credentials, TLS, a bad server
            raise StoreError(f"mesh store {self.url}: connect: {exc!r}") from exc
        try:
            self._js = self._nc.jetstream(timeout=5)
            self._publish_lock = asyncio.Lock()
            for name in ("positions", "groups", "leases", "starts"):
                self._kv[name] = await self._call("open", functools.partial(self._bucket, name))
            await self._nc.subscribe(f"{self._subject_prefix}.changed", cb=self._on_change)
        except BaseException:
            await self.close()
            raise

    async def _bucket(self, name: str) -> KeyValue:
        from nats.js.errors import BucketNotFoundError

        js = self._jetstream()
        bucket = f"MC_{self.prefix}_{name}"
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            return await js.create_key_value(bucket=bucket, history=1, replicas=self.replicas)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        self._js = None
        self._kv = {}
        self._streams.clear()
        self._ends.clear()
        self._cursors.clear()
        self._decoded.clear()
        self._tail.clear()
        self._held.clear()
        self._known.clear()
        if nc is not None:
            try:
                await nc.close()
            except Exception:  # already broken: nothing to release
                pass

    async def _on_error(self, exc: Exception) -> None:
        if self._nc is None and not self._said_waiting:
            # The first connect is retried silently up to reconnect_timeout: say why nothing
            # happens yet, as the Redis store does (a wrong URL otherwise looked like a hang).
            self._said_waiting = True
            log.warning(
                "mesh store %s: connect: %r; waiting for NATS (up to %g s)",
                self.url,
                exc,
                self.reconnect_timeout,
            )
            return
        log.debug("mesh store %s: %s", self.url, exc)

    async def _on_disconnected(self) -> None:
        if self._nc is not None:
            log.warning("mesh store %s: disconnected; reconnecting", self.url)

    async def _on_change(self, msg: Any) -> None:
        self._changes.notify()

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise StoreError(f"mesh store {self.url} is not open")
        return self._js

    async def _call(
        self, what: str, operation: Callable[[], Awaitable[T]], *, opening: bool = False
    ) -> T:
        """Run ``operation``, retrying while the server is unreachable or JetStream is not
        ready, for up to ``reconnect_timeout`` seconds; NATS errors become StoreError."""
        import nats.errors as ne
        import nats.js.errors as je

        if not opening:
            self._jetstream()
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        warned = False
        while True:
            try:
                return await operation()
            except (
                TimeoutError,
                ne.TimeoutError,
                ne.NoRespondersError,
                ne.NoServersError,
                ne.ConnectionReconnectingError,
                ne.StaleConnectionError,
                ne.OutboundBufferLimitError,
                je.NoStreamResponseError,
                je.ServiceUnavailableError,
                je.ServerError,
                ConnectionError,
                OSError,
            ) as exc:
                if isinstance(exc, je.NoStreamResponseError) and not opening:
                    await self._check_not_lost(what)
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"mesh store {self.url}: {what}: NATS unreachable for "
                        f"{self.reconnect_timeout:g} s ({type(exc).__name__}: {exc})"
                    ) from exc
                if not warned:
                    log.warning("mesh store %s: %s: %r; waiting for NATS", self.url, what, exc)
                    warned = True
            except FencedError:
                raise
            except StoreError:
                raise
            except (ne.Error, je.Error) as exc:
                raise StoreError(f"mesh store {self.url}: {what}: {exc!r}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            if not opening:
                self._jetstream()  # closed meanwhile: stop

    async def _check_not_lost(self, what: str) -> None:
        """Raise :class:`StoreLostError` when JetStream answers that the positions bucket this
        store opened no longer exists: the server lost its storage (restarted on an empty
        ``-sd``, the streams deleted), and every message and KV write would wait for a stream
        that will not come back. Anything else (the server still away, JetStream not ready)
        says nothing: the caller waits on."""
        from nats.js.errors import NotFoundError

        nc, js = self._nc, self._js
        if nc is None or js is None or not nc.is_connected:
            return
        bucket = f"KV_MC_{self.prefix}_positions"
        try:
            await js.stream_info(bucket)
        except NotFoundError:
            raise StoreLostError(
                f"mesh store {self.url}: {what}: the mesh this worker opened is gone from NATS "
                f"(the stream {bucket} no longer exists): JetStream lost its storage or the "
                "mesh was deleted; stopping instead of waiting for it. A new run starts a new, "
                "empty mesh"
            ) from None
        except Exception:  # not answered: the server is still away or JetStream not ready
            return

    # -- append --------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """Publish each topic's share of the batch as one message (with a message id, see the
        module docstring), then set the positions. Fails before anything is published when a
        record or position cannot be encoded."""
        if any(r.topic is None for r in records):
            raise ValueError("cannot append a record whose topic is None (route it first)")
        position_rows = encode_positions(positions)
        if not records and not position_rows:
            return []
        now = repr(self._clock())
        groups: dict[str, list[Record]] = {}
        for r in records:
            groups.setdefault(str(r.topic), []).append(r)
        chunks = {
            name: self._chunks(records, group, encode_segment(group))
            for name, group in groups.items()
        }
        by_connector: dict[str, dict[str, str]] = {}
        for connector, partition, text in position_rows:
            by_connector.setdefault(connector, {})[partition] = text
        for connector in by_connector:
            if connector not in self._known:
                await self._load_positions(connector)
        # What the batch starts from: the positions committed before it, and their revision.
        # Without positions nothing identifies a re-sent batch: a random basis (at-least-once).
        basis = (
            uuid.uuid4().bytes
            if not by_connector
            else orjson.dumps(
                {
                    c: [self._known[c][1], {p: self._known[c][0].get(p) for p in sorted(parts)}]
                    for c, parts in by_connector.items()
                },
                option=orjson.OPT_SORT_KEYS,
            )
        )

        async def fence() -> None:
            for connector in by_connector:
                await self._fence(f"source {connector}")

        lock = self._publish_lock
        assert lock is not None
        self._appending += 1
        try:
            got: dict[str, list[int]] = {}
            async with lock:  # this store's appends take offsets one after the other
                for name, group in groups.items():
                    got[name] = await self._call(
                        "append",
                        functools.partial(
                            self._publish, name, group, chunks[name], basis, now, fence
                        ),
                    )
            for connector, parts in by_connector.items():
                await self._commit_positions(connector, parts)
            for name, group in groups.items():
                for r, offset in zip(group, got[name], strict=True):
                    r.offset = offset
            offsets = [r.offset for r in records]
            self._remember(groups, chunks)
        finally:
            self._appending -= 1
        if records:
            self._changes.notify()
            nc = self._nc
            if nc is not None:
                try:
                    await nc.publish(f"{self._subject_prefix}.changed", b"")
                except Exception:  # readers poll anyway
                    pass
        return offsets  # type: ignore[return-value]

    async def _publish(
        self,
        topic: str,
        group: list[Record],
        chunks: list[tuple[int, int, bytes]],
        basis: bytes,
        now: str,
        fence: Callable[[], Awaitable[None]],
    ) -> list[int]:
        """Publish ``group`` at the topic's end, a message per chunk ``(index of its first
        record, records, body)``; the offsets its records got.

        Each message is published after the stream's last sequence as this store knows it
        (``Nats-Expected-Last-Sequence``). When the store learns it anew from the stream (at
        first, after another process appended, after a duplicate), ``fence`` checks first that
        the source leases of the batch are still held: a worker that stalled past its lease
        (SIGSTOP) and woke inside this call would otherwise publish its old batch after the
        new owner's records, and a consumer replaying the topic would end on stale rows
        (FencedError; nothing of the rest is published).

        A message id is made of ``basis``, the topic and the index in ``group`` of the
        message's first record. When JetStream answers that the id is a duplicate, a copy was
        stored before (a crash between publish and position commit, or a lost reply): its
        records are read back and, when they are the same records (CloudEvent ``source`` and
        ``id``), keep their offsets, and the rest is published after them."""
        from nats.js.errors import APIError

        js = self._jetstream()
        await self._ensure_stream(topic)
        subject, stream = self._subject(topic), self._stream(topic)
        offsets: list[int] = []
        for start, size, body in chunks:
            salt = b""
            k, stop = start, start + size
            while k < stop:
                rest = group[k:stop]
                known = topic in self._ends
                last_seq, end = await self._end(topic)
                if not known:  # what another owner appended meanwhile is in what was read
                    await fence()
                digest = hashlib.blake2b(basis + salt, digest_size=16)
                digest.update(f"\0{topic}\0{k}".encode())
                headers = {
                    "Nats-Msg-Id": digest.hexdigest(),
                    "Nats-Expected-Last-Sequence": str(last_seq),
                    "Mc-First": str(end),
                    "Mc-N": str(len(rest)),
                    "Mc-At": now,
                }
                payload = body if k == start else encode_segment(rest)
                try:
                    ack = await js.publish(subject, payload, headers=headers)
                except APIError as exc:
                    if exc.err_code == 10071:  # another process appended: learn the new end
                        self._ends.pop(topic, None)
                        continue
                    raise
                if not ack.duplicate:
                    self._ends[topic] = (ack.seq, end + len(rest))
                    offsets += range(end, end + len(rest))
                    break
                self._ends.pop(topic, None)
                stored = await js.get_msg(stream, ack.seq)
                first, n = _first_n(stored.headers)
                old = decode_segment(stored.data or b"[]", topic, first)
                same = min(n, len(rest))
                if [(r.source, r.id) for r in old[:same]] == [
                    (r.source, r.id) for r in rest[:same]
                ]:
                    offsets += range(first, first + same)
                    k += same
                else:  # other records under the same id: store these too (at-least-once)
                    salt = uuid.uuid4().bytes
        return offsets

    def _chunks(
        self, records: Sequence[Record], group: list[Record], body: bytes
    ) -> list[tuple[int, int, bytes]]:
        """``group`` cut into messages the server takes (``max_payload``, 1 MB by default):
        ``(index of the first record, records, body)`` each. A record too big alone is a
        :class:`~meshconnect.mesh.codec.RecordEncodingError` (nothing was published)."""
        nc = self._nc
        limit = int((nc.max_payload if nc is not None else 1 << 20) * 0.95) - 1024
        if len(body) <= limit:
            return [(0, len(group), body)]
        out = []
        k = 0
        size = max(1, len(group) * limit // len(body))
        while k < len(group):
            size = min(size, len(group) - k)
            part = encode_segment(group[k : k + size])
            if len(part) > limit:
                if size == 1:
                    index = next(i for i, r in enumerate(records) if r is group[k])
                    raise RecordEncodingError(
                        index,
                        group[k],
                        f"{len(part)} bytes encoded, more than the NATS server takes in a "
                        f"message (max_payload {limit + 1024} bytes with headers)",
                    )
                size = max(1, size // 2)
                continue
            out.append((k, size, part))
            k += size
        return out

    async def _end(self, topic: str) -> tuple[int, int]:
        """``(last sequence, end offset)`` of a topic's stream, from this store's appends or
        from the stream's last message."""
        cached = self._ends.get(topic)
        if cached is not None:
            return cached
        found = await self._last(topic)
        self._ends[topic] = found
        return found

    async def _last(self, topic: str) -> tuple[int, int]:
        from nats.js.errors import NotFoundError

        js = self._jetstream()
        stream = self._stream(topic)
        info = await js.stream_info(stream)
        last_seq = info.state.last_seq or 0
        if not last_seq:
            return 0, 0
        try:
            msg = await js.get_msg(stream, last_seq)
        except NotFoundError:
            raise StoreError(
                f"mesh store {self.url}: the last message of {stream} is gone (purged by "
                "someone else?): its end offset is unknown"
            ) from None
        first, n = _first_n(msg.headers)
        return last_seq, first + n

    async def _ensure_stream(self, topic: str) -> None:
        name = self._stream(topic)
        if name in self._streams:
            return
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import NotFoundError

        js = self._jetstream()
        try:
            await js.stream_info(name)
        except NotFoundError:
            config = StreamConfig(
                name=name,
                subjects=[self._subject(topic)],
                storage=StorageType.FILE,
                duplicate_window=self.duplicate_window,
                num_replicas=self.replicas,
                description=topic,  # the real name, for topics() when the name is hashed
            )
            try:
                await js.add_stream(config)
            except Exception as exc:  # another worker made it meanwhile
                try:
                    await js.stream_info(name)
                except NotFoundError:
                    raise StoreError(
                        f"mesh store {self.url}: cannot create the stream of topic {topic!r}: {exc}"
                    ) from exc
        self._streams.add(name)

    def _remember(
        self,
        groups: Mapping[str, Sequence[Record]],
        chunks: Mapping[str, list[tuple[int, int, bytes]]],
    ) -> None:
        """Keep this process's appended records per topic (contiguous offsets only), each
        group counted at the stored bytes of its messages."""
        for name, group in groups.items():
            first = group[0].offset
            assert first is not None
            if [r.offset for r in group] != list(range(first, first + len(group))):
                self._tail.forget(name)  # partly stored before, elsewhere: read back
            else:
                self._tail.remember(name, group, sum(len(body) for _, _, body in chunks[name]))

    def consumed(self, group: str, topic: str, offset: int) -> None:
        """Drop the kept records of ``topic`` every in-process reader has delivered (see
        :meth:`MeshStore.consumed` and :meth:`RecordTail.consumed`)."""
        self._tail.consumed(group, topic, offset)

    # -- source positions ----------------------------------------------------------------------

    async def _load_positions(self, connector: str) -> tuple[dict[str, str], int]:
        """A connector's positions as JSON texts, and the KV revision (0: none)."""
        from nats.js.errors import NotFoundError

        kv = self._kv["positions"]

        async def get() -> tuple[dict[str, str], int]:
            try:
                entry = await kv.get(_key(connector))
            except NotFoundError as exc:  # never set (0), or reset: the deletion's revision
                return {}, getattr(getattr(exc, "entry", None), "revision", None) or 0
            if not entry.value:
                return {}, entry.revision or 0
            doc = _unwrap(connector, entry.value)
            return {p: orjson.dumps(v).decode() for p, v in doc.items()}, entry.revision or 0

        texts, revision = await self._call("positions", get)
        self._known[connector] = (texts, revision)
        return texts, revision

    async def _commit_positions(self, connector: str, parts: Mapping[str, str]) -> None:
        merged = {**self._known[connector][0], **parts}
        await self._fence(f"source {connector}")
        body = (
            b"{" + b",".join(orjson.dumps(p) + b":" + t.encode() for p, t in merged.items()) + b"}"
        )
        kv = self._kv["positions"]
        revision = await self._call(
            "positions", lambda: kv.put(_key(connector), _wrap(connector, body))
        )
        self._known[connector] = (merged, revision)

    async def positions(self, connector_id: str) -> dict[str, dict[str, Any]]:
        texts, _ = await self._load_positions(connector_id)
        return {p: decode_json(t) for p, t in texts.items()}

    async def source_ids(self) -> list[str]:
        return sorted(await self._keys("positions"))

    async def _keys(self, bucket: str) -> list[str]:
        """The names a bucket has entries for: a key's base64 decoded, or the name a hashed
        key's entry holds."""
        from nats.js.errors import NoKeysError, NotFoundError

        kv = self._kv[bucket]

        async def keys() -> list[str]:
            try:
                return list(await kv.keys())
            except NoKeysError:
                return []

        async def name(key: str) -> str | None:
            try:
                entry = await kv.get(key)
            except NotFoundError:  # deleted meanwhile
                return None
            return str(orjson.loads(entry.value)["name"]) if entry.value else None

        out = []
        for key in await self._call("keys", keys):
            if not _hashed(key):
                out.append(_unkey(key))
            elif (found := await self._call("keys", functools.partial(name, key))) is not None:
                out.append(found)
        return out

    async def set_positions(
        self, connector_id: str, positions: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        rows = encode_positions({(connector_id, p): v for p, v in (positions or {}).items()})
        kv = self._kv["positions"]
        self._known.pop(connector_id, None)
        if not rows:
            from nats.js.errors import KeyNotFoundError

            async def purge() -> None:
                try:
                    await kv.purge(_key(connector_id))
                except KeyNotFoundError:
                    pass

            await self._call("positions", purge)
            return
        body = b"{" + b",".join(orjson.dumps(p) + b":" + t.encode() for _, p, t in rows) + b"}"
        await self._call("positions", lambda: kv.put(_key(connector_id), _wrap(connector_id, body)))

    # -- reading -------------------------------------------------------------------------------

    async def read(self, topic: str, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records from ``offset`` on: a message (one batch) per request, from
        where this store's last read of the topic ended, or found by a binary search."""
        if limit <= 0:
            return []
        self._jetstream()
        kept = self._tail.read(topic, offset, limit, self._appending > 0)
        if kept is not None:
            return kept
        return await self._call("read", functools.partial(self._read, topic, offset, limit))

    async def _read(self, topic: str, offset: int, limit: int) -> list[Record]:
        cursor = self._cursors.get(topic)
        if cursor is not None and cursor[0] == offset:
            seq = cursor[1]
        else:
            located = await self._locate(topic, offset)
            if located is None:
                return []
            seq, offset = located
        out: list[Record] = []
        while len(out) < limit:
            records = await self._message(topic, seq)
            if records is None:  # past the end, or removed by retention meanwhile
                if not out and cursor is not None and await self._below_start(topic, seq):
                    self._cursors.pop(topic, None)
                    return await self._read(topic, offset, limit)
                break
            if not records:
                seq += 1
                continue
            first = records[0].offset
            assert first is not None
            begin = max(offset - first, 0)
            taken = records[begin : begin + limit - len(out)]
            out.extend(taken)
            offset = first + begin + len(taken)
            if offset >= first + len(records):
                seq += 1
        self._cursors[topic] = (offset, seq)
        return out

    async def _message(self, topic: str, seq: int) -> list[Record] | None:
        """The records of message ``seq`` (offsets set); None when there is no such message."""
        from nats.js.errors import NotFoundError

        decoded = self._decoded.get(topic)
        if decoded is not None and decoded[0] == seq:
            return decoded[1]
        try:
            msg = await self._jetstream().get_msg(self._stream(topic), seq)
        except NotFoundError:
            return None
        first, _ = _first_n(msg.headers)
        records = decode_segment(msg.data or b"[]", topic, first)
        self._decoded.put(topic, seq, records, len(msg.data or b""))
        return records

    async def _below_start(self, topic: str, seq: int) -> bool:
        info = await self._info(topic)
        return info is not None and seq < (info.state.first_seq or 0)

    async def _info(self, topic: str) -> Any:
        from nats.js.errors import NotFoundError

        try:
            return await self._jetstream().stream_info(self._stream(topic))
        except NotFoundError:
            return None

    async def _header(self, topic: str, seq: int) -> tuple[int, int, float]:
        """``(first offset, count, appended at)`` of message ``seq``."""
        msg = await self._jetstream().get_msg(self._stream(topic), seq)
        first, n = _first_n(msg.headers)
        return first, n, float((msg.headers or {}).get("Mc-At", 0))

    async def _locate(self, topic: str, offset: int) -> tuple[int, int] | None:
        """``(sequence of the message holding offset, offset)``, the offset raised to the
        topic's start; None for a topic without records from there."""
        bounds = await self._bounds(topic)
        if bounds is None:
            return None
        start, end, first_seq, last_seq = bounds
        offset = max(offset, start)
        if offset == end:  # the next message to come: a reader waiting at the end
            return last_seq + 1, offset
        if offset > end:
            return None
        low, high = first_seq, last_seq  # the last message whose first offset <= offset
        while low < high:
            middle = (low + high + 1) // 2
            first, _, _ = await self._header(topic, middle)
            if first <= offset:
                low = middle
            else:
                high = middle - 1
        return low, offset

    async def _bounds(self, topic: str) -> tuple[int, int, int, int] | None:
        """``(start, end, first sequence, last sequence)``; None for a topic without a stream
        or messages."""
        info = await self._info(topic)
        if info is None or not info.state.last_seq:
            return None
        first_seq, last_seq = info.state.first_seq, info.state.last_seq
        last_first, last_n, _ = await self._header(topic, last_seq)
        first, _, _ = await self._header(topic, first_seq)
        marker = await self._start_marker(topic)
        end = last_first + last_n
        return min(max(first, marker), end), end, first_seq, last_seq

    async def _start_marker(self, topic: str) -> int:
        """Where retention moved the topic's start (inside its oldest kept message); 0."""
        from nats.js.errors import NotFoundError

        try:
            entry = await self._kv["starts"].get(_key(topic))
        except NotFoundError:
            return 0
        return int(entry.value or b"0")

    async def topics(self) -> list[TopicInfo]:
        js = self._jetstream()

        async def listing() -> list[str]:
            found = []
            offset = 0
            while True:
                page = await js.streams_info(offset)
                for info in page:
                    topic = self._topic_of(info.config.name or "", info.config.description)
                    if topic is not None:
                        found.append(topic)
                if len(page) < 256:
                    return sorted(found)
                offset += len(page)

        out = []
        for topic in await self._call("topics", listing):
            bounds = await self._call("topics", functools.partial(self._bounds, topic))
            if bounds is not None:
                out.append(TopicInfo(topic, bounds[0], bounds[1]))
        return out

    async def end_offsets(self, topics: Sequence[str]) -> dict[str, int]:
        out = {}
        for name in topics:
            bounds = await self._call("end offsets", functools.partial(self._bounds, name))
            out[name] = 0 if bounds is None else bounds[1]
        return out

    # -- consumer groups -----------------------------------------------------------------------

    async def _load_group(self, group: str) -> tuple[dict[str, Any], int]:
        from nats.js.errors import NotFoundError

        kv = self._kv["groups"]

        async def get() -> tuple[dict[str, Any], int]:
            try:
                entry = await kv.get(_key(group))
            except NotFoundError:  # never committed, or deleted
                return {}, 0
            return (_unwrap(group, entry.value) if entry.value else {}), entry.revision or 0

        return await self._call("group", get)

    async def group(self, group: str) -> GroupInfo:
        doc, _ = await self._load_group(group)
        state = doc.get("s")
        return GroupInfo(
            group, dict(doc.get("o", {})), None if state is None else decode_json(state)
        )

    async def groups(self) -> list[GroupInfo]:
        return [await self.group(name) for name in sorted(await self._keys("groups"))]

    async def _change_group(
        self, group: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> None:
        """Read, change and write a group's entry by compare-and-set (another process may
        reset it meanwhile); ``None`` from ``change`` deletes it."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = self._kv["groups"]
        key = _key(group)
        while True:
            doc, revision = await self._load_group(group)
            new = change(doc)

            async def write(new: dict[str, Any] | None = new, revision: int = revision) -> bool:
                try:
                    if new is None:
                        if revision:
                            await kv.purge(key)
                    elif revision:
                        await kv.update(key, _wrap(group, orjson.dumps(new)), last=revision)
                    else:
                        await kv.create(key, _wrap(group, orjson.dumps(new)))
                except (KeyWrongLastSequenceError, KeyNotFoundError):
                    return False
                return True

            if await self._call("commit", write):
                return

    async def commit(
        self, group: str, offsets: Mapping[str, int], state: Mapping[str, Any] | None = None
    ) -> None:
        """Merge the offsets and replace the state in one KV write (compare-and-set)."""
        checked = check_offsets(offsets)
        text = encode_state(group, state)
        await self._fence(f"group {group}")

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            return {"o": {**doc.get("o", {}), **checked}, "s": text}

        await self._change_group(group, change)

    async def reset_group(self, group: str, offsets: Mapping[str, int] | None) -> None:
        checked = check_offsets(offsets or {})

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            if not checked and doc.get("s") is None:
                return None
            return {"o": checked, "s": doc.get("s")}

        await self._change_group(group, change)

    # -- retention -----------------------------------------------------------------------------

    async def apply_retention(self, topic: str, retention: Retention) -> int:
        """Purge the oldest messages (whole batches) and move the topic's start: beyond
        ``max_records``, appended before ``max_age_s`` (a binary search on the ``Mc-At``
        header), and the oldest records while the stream holds more than about ``max_bytes``
        (by its average record size). The newest message always stays: it says where the
        topic ends."""
        self._tail.forget(topic)
        self._cursors.pop(topic, None)
        self._decoded.forget(topic)
        js = self._jetstream()
        bounds = await self._call("retention", functools.partial(self._bounds, topic))
        if bounds is None:
            return 0
        start, end, first_seq, last_seq = bounds
        cut = start
        if retention.max_records is not None:
            cut = max(cut, end - max(retention.max_records, 0))
        if retention.max_bytes is not None and end > start:
            info = await self._call("retention", functools.partial(self._info, topic))
            size = (info.state.bytes or 0) / max(end - start, 1)
            cut = max(cut, end - max(1, int(retention.max_bytes // max(size, 1))))
        if retention.max_age_s is not None and cut < end:
            oldest_kept = self._clock() - retention.max_age_s
            low, high = first_seq, last_seq + 1  # the first message appended at or after it
            while low < high:
                middle = (low + high) // 2
                _, _, at = await self._call(
                    "retention", functools.partial(self._header, topic, middle)
                )
                if at < oldest_kept:
                    low = middle + 1
                else:
                    high = middle
            if low > last_seq:
                cut = end
            else:
                first, _, _ = await self._call(
                    "retention", functools.partial(self._header, topic, low)
                )
                cut = max(cut, first)
        cut = min(cut, end)
        if cut <= start:
            return 0
        keep_from = last_seq
        if cut < end:
            located = await self._call("retention", functools.partial(self._locate, topic, cut))
            if located is not None:
                keep_from = located[0]
        kv = self._kv["starts"]
        await self._call("retention", lambda: kv.put(_key(topic), str(cut).encode()))
        if keep_from > first_seq:
            name = self._stream(topic)
            await self._call("retention", lambda: js.purge_stream(name, seq=keep_from))
        return cut - start

    # -- leases --------------------------------------------------------------------------------

    async def _change_leases(
        self, change: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, T]]
    ) -> T:
        """Read the leases document, change it and write it back by compare-and-set, again
        until no other writer came in between; ``change`` returns (new document or None to
        leave it, result)."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = self._kv["leases"]

        async def attempt() -> tuple[bool, T]:
            try:
                entry = await kv.get(_LEASES_KEY)
                doc, revision = orjson.loads(entry.value or b"{}"), entry.revision or 0
            except KeyNotFoundError:
                doc, revision = {}, 0
            doc.setdefault("leases", {})
            doc.setdefault("epochs", {})
            new, result = change(doc)
            if new is None:
                return True, result
            try:
                if revision:
                    await kv.update(_LEASES_KEY, orjson.dumps(new), last=revision)
                else:
                    await kv.create(_LEASES_KEY, orjson.dumps(new))
            except KeyWrongLastSequenceError:
                return False, result
            return True, result

        while True:
            done, result = await self._call("leases", attempt)
            if done:
                return result

    async def acquire_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, now: float
    ) -> list[Lease]:
        """See :meth:`MeshStore.acquire_leases`: one compare-and-set of the leases document."""
        if not names:
            return []

        def change(
            doc: dict[str, Any],
        ) -> tuple[dict[str, Any] | None, tuple[list[Lease], dict[str, int]]]:
            leases, epochs = doc["leases"], doc["epochs"]
            conflicts = [
                Lease(name, held[0], held[1], held[2])
                for name in names
                if (held := leases.get(name)) is not None and held[0] != owner and held[1] > now
            ]
            if conflicts:
                return None, (conflicts, {})
            taken = {}
            for name in names:
                held = leases.get(name)
                if held is not None and held[0] == owner:
                    epoch = held[2]
                else:
                    epoch = epochs[name] = int(epochs.get(name, 0)) + 1
                leases[name] = [owner, now + ttl, epoch]
                taken[name] = epoch
            return doc, ([], taken)

        conflicts, taken = await self._change_leases(change)
        for name, epoch in taken.items():
            self._held[name] = (owner, epoch)
        return conflicts

    async def break_leases(self, leases: Sequence[Lease]) -> None:
        def change(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            held = doc["leases"]
            gone = [
                lease.name
                for lease in leases
                if (h := held.get(lease.name)) and h[0] == lease.owner
            ]
            for name in gone:
                del held[name]
            return (doc if gone else None), None

        await self._change_leases(change)

    async def release_leases(self, owner: str) -> None:
        def change(doc: dict[str, Any]) -> tuple[dict[str, Any] | None, None]:
            held = doc["leases"]
            gone = [name for name, h in held.items() if h[0] == owner]
            for name in gone:
                del held[name]
            return (doc if gone else None), None

        await self._change_leases(change)
        self._held = {n: h for n, h in self._held.items() if h[0] != owner}

    async def leases(self) -> list[Lease]:
        def change(doc: dict[str, Any]) -> tuple[None, list[Lease]]:
            return None, [Lease(n, h[0], h[1], h[2]) for n, h in sorted(doc["leases"].items())]

        return await self._change_leases(change)

    def lease_epochs(self) -> dict[str, int]:
        """The fencing epoch of each lease this store holds (for status and tests)."""
        return {name: epoch for name, (_, epoch) in self._held.items()}

    async def _fence(self, name: str) -> None:
        """FencedError unless lease ``name``, if this store holds it, still has the owner and
        epoch it was taken with."""
        held = self._held.get(name)
        if held is None:
            return

        def check(doc: dict[str, Any]) -> tuple[None, Any]:
            return None, doc["leases"].get(name)

        current = await self._change_leases(check)
        if current is None:  # no lease at all: taken and released, or the whole mesh gone
            await self._check_not_lost(f"lease {name}")
        if current is None or current[0] != held[0] or current[2] != held[1]:
            raise FencedError(f"mesh store {self.url}: lease {name} is no longer held by {held[0]}")

    # -- notifications -------------------------------------------------------------------------

    def data_changed(self) -> Awaitable[None]:
        """Completes when records were appended (by this store, or by any store on the same
        server and prefix: a core NATS message), or after ``poll_interval`` seconds."""
        return self._changes.wait(self._poll_interval)

    def __repr__(self) -> str:
        return f"<NatsStore {self.url!r}>"


def _first_n(headers: Mapping[str, str] | None) -> tuple[int, int]:
    """``(first offset, count)`` of a batch message, from its headers."""
    headers = headers or {}
    return int(headers.get("Mc-First", 0)), int(headers.get("Mc-N", 0))


def _parse_url(url: str) -> tuple[list[str], str, str, float, float, int]:
    """``(servers, URL to show, prefix, duplicate window, reconnect timeout, replicas)``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:  # a bad port or IPv6 literal: a ConfigError, not a traceback
        raise ConfigError(f"invalid nats store URL {shown_url(url)!r}: {exc}") from None
    if parts.scheme != "nats" or not parts.hostname or parts.path.strip("/"):
        raise ConfigError(
            f"invalid nats store URL {shown_url(url)!r}: use nats://HOST:PORT (options: "
            "?prefix=NAME&duplicate_window=SECONDS&reconnect_timeout=SECONDS&replicas=N)"
        )
    prefix, window, reconnect, replicas = "meshconnect", 600.0, 60.0, 1
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if key == "prefix" and re.fullmatch(rf"[A-Za-z0-9_-]{{1,{_MAX_PREFIX}}}", value):
                prefix = value
            elif key == "duplicate_window" and float(value) > 0:
                window = float(value)
            elif key == "reconnect_timeout" and float(value) >= 0:
                reconnect = float(value)
            elif key == "replicas" and value.isdigit() and 1 <= int(value) <= 5:
                replicas = int(value)
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"invalid nats store URL {shown_url(url)!r}: bad option {key}={value!r} (known: "
                f"prefix=LETTERS_DIGITS-_ (at most {_MAX_PREFIX}), duplicate_window=SECONDS, "
                "reconnect_timeout=SECONDS, replicas=1..5)"
            ) from None
    server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    return [server], shown_url(url), prefix, window, reconnect, replicas
