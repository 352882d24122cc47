"""The mesh store on Redis Streams, for workers spread over several machines.

URL: ``redis://[USER:PASSWORD@]HOST:PORT/DB`` (``rediss://`` for TLS), with options
``?prefix=NAME`` (default ``meshconnect``: the namespace of every key, so several meshes share
one database), ``reconnect_timeout=SECONDS`` (default 60: how long an operation waits for a
lost server to come back before it fails with a retriable ``StoreError``) and
``socket_timeout=SECONDS`` (default 30) and ``cluster=yes`` (Redis Cluster: the host is any
node). Needs the ``redis`` extra
(``pip install 'meshconnect[redis]'``) and Redis 6.2 or later.

**Layout.** Every key starts with the hash tag ``{PREFIX}``, so all keys of one mesh live in
one hash slot: every Lua script below touches one slot, as Redis Cluster requires, and stays
atomic there too (a mesh then lives on one shard; give meshes different prefixes to spread
them)::

    {p}:end            hash   topic -> next offset
    {p}:start          hash   topic -> first retained offset (absent: 0)
    {p}:s:TOPIC        stream one entry per appended batch: ID 0-(first offset + 1),
                              fields n (records), at (unix seconds), b (the batch, encoded by
                              meshconnect.mesh.codec.encode_segment)
    {p}:i:TOPIC        stream the same IDs with n, at and z (the batch's size): what
                              retention reads, without the bodies
    {p}:p:CONNECTOR    hash   partition -> source position (JSON)
    {p}:sources        set    connectors with positions
    {p}:g:GROUP        hash   topic -> the group's next offset
    {p}:gstate         hash   group -> sink state (JSON)
    {p}:groups         set    groups
    {p}:leases         hash   lease name -> "epoch|expires|owner"
    {p}:epochs         hash   lease name -> fencing epoch (grows with each new owner)
    {p}:tok:TOKEN      string an append's result, kept an hour (see below)
    {p}:changed        channel a message per append, so sinks wake at once
    {p}:mesh           string a random id set when the first store opened the mesh

**Offsets** are dense per topic: the append script reads the topic's end, adds each batch as
one stream entry whose ID is ``0-(first offset + 1)``, and moves the end. A read by offset is
exact: ``XREVRANGE`` finds the entry holding the offset, ``XRANGE`` the ones after it.

**Atomicity.** One Lua script appends the batch to every topic **and** sets the source
positions, so records and positions are committed together or not at all (Redis runs a script
alone, and its AOF/replication stream holds it as one unit). Group commits (offsets and sink
state), position resets, retention and leases are one script each too.

**A lost connection.** Every operation is retried while the server is unreachable or loading
its data, for up to ``reconnect_timeout`` seconds, so a restarted Redis is waited out. An
append whose reply was lost may have been applied: each append carries a random token that
the script records with its result, and a retry with the same token returns that result
instead of appending again. When the store itself gives up (the timeout) and the worker
retries the same batch (the same list of records), the token is reused as well.

**Durability** is Redis's: with ``appendonly yes`` and ``appendfsync always`` a SIGKILL or power
loss of Redis loses nothing it acknowledged. With the default ``appendfsync everysec`` a crash
of Redis (not of the worker) may lose about the last second of appends and commits: records
and their source positions vanish together (the sources read them again), but a sink whose
commit survived may have committed offsets past the new end, and would skip the records
stored again under those offsets. Run Redis with ``appendfsync always`` for the mesh
(docs/stores.md).

**A lost mesh.** :meth:`open` sets ``{p}:mesh`` to a random id unless it exists, and every
script first checks that it still holds the id this store read then
(:data:`~meshconnect.mesh.redis_scripts.MESH_CHECK`). A server that lost its data (restarted
without persistence, flushed) fails every script with
:class:`~meshconnect.errors.StoreLostError`, a fatal error, instead of appending from offset 0
again and renewing leases under the same epochs.

**Leases and fencing.** :meth:`acquire_leases` takes all named leases or none in one script
(judging expiry by the caller's ``now``, as every backend does); a lease that changes owner
gets a new *epoch*. The store remembers the epoch of each lease it holds, and the append and
commit scripts check it: an append that sets the positions of source ``C`` while this store
holds ``source C``, or a commit of group ``G`` while it holds ``group G``, fails with
:class:`~meshconnect.mesh.store.FencedError` unless that lease still has the owner and epoch
this store took it with. A worker that stalled past its lease and was replaced cannot commit.

**Notifications.** Every append publishes on ``{p}:changed``; :meth:`data_changed` listens
(one subscription per store, made on first use), and also completes after ``poll_interval``.
Records appended by this process are kept in memory for a while
(:class:`~meshconnect.mesh.tail.RecordTail`), so sinks in the same worker read them without a
round trip.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import ConfigError, StoreError, StoreLostError
from ..records import Record
from ..secrets import shown_url
from . import redis_scripts
from .codec import (
    ChangeSignal,
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
    import redis.asyncio

__all__ = ["RedisStore"]

log = logging.getLogger("meshconnect.mesh.redis")

T = TypeVar("T")
_TOPIC = operator.attrgetter("topic")


class RedisStore(MeshStore):
    """The mesh store in Redis; see the module docstring for URL, layout and guarantees.
    ``clock`` (unix seconds) stamps appends and judges retention by age; tests inject one.
    ``poll_interval`` bounds how long :meth:`data_changed` waits."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.5,
    ) -> None:
        (
            self._connect_url,
            self.url,
            self.prefix,
            self.reconnect_timeout,
            self.socket_timeout,
            self.cluster,
        ) = _parse_url(url)
        self._clock = clock
        self._poll_interval = poll_interval
        self._changes = ChangeSignal()
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._listener: asyncio.Task[None] | None = None
        #: The leases this store holds: name -> (owner, epoch), checked by appends and commits.
        self._held: dict[str, tuple[str, str]] = {}
        #: Appends that failed with an unknown outcome: (records, token), newest last.
        self._unsettled: list[tuple[Sequence[Record], str]] = []
        self._tail = RecordTail()
        #: Per topic, the last segment read in slices (bounded in bytes for all topics).
        self._decoded = DecodedSegments()
        self._appending = 0
        tag = "{" + self.prefix + "}"
        self._k_end = f"{tag}:end"
        self._k_start = f"{tag}:start"
        self._k_sources = f"{tag}:sources"
        self._k_gstate = f"{tag}:gstate"
        self._k_groups = f"{tag}:groups"
        self._k_leases = f"{tag}:leases"
        self._k_epochs = f"{tag}:epochs"
        self._channel = f"{tag}:changed"
        self._k_mesh = f"{tag}:mesh"
        #: The id in ``{p}:mesh`` when this store opened; every script checks it is still there.
        self._mesh_id = ""
        self._tag = tag

    # -- keys ----------------------------------------------------------------------------------

    def _k_data(self, topic: str) -> str:
        return f"{self._tag}:s:{topic}"

    def _k_index(self, topic: str) -> str:
        return f"{self._tag}:i:{topic}"

    def _k_positions(self, connector: str) -> str:
        return f"{self._tag}:p:{connector}"

    def _k_group(self, group: str) -> str:
        return f"{self._tag}:g:{group}"

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (waiting up to ``reconnect_timeout`` for the server) and load the scripts."""
        if self._client is not None:
            return
        try:
            import redis.asyncio
        except ImportError:
            raise ConfigError(
                f"mesh store {self.url} needs the redis client: pip install 'meshconnect[redis]'"
            ) from None
        factory: Any = redis.asyncio.Redis
        if self.cluster:  # every key in one hash slot: the scripts go to the node serving it
            from redis.asyncio.cluster import RedisCluster

            factory = RedisCluster
        client = factory.from_url(
            self._connect_url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=min(self.socket_timeout, 10.0),
        )
        self._scripts = {
            name: client.register_script(
                redis_scripts.MESH_CHECK + getattr(redis_scripts, name.upper())
            )
            for name in (
                "append",
                "read",
                "commit",
                "reset_group",
                "set_positions",
                "trim",
                "acquire",
                "break",
                "release",
            )
        }
        self._client = client
        try:
            await self._call("connect", client.ping)
            mesh_id = uuid.uuid4().hex
            await self._call("connect", lambda: client.set(self._k_mesh, mesh_id, nx=True))
            found = await self._call("connect", lambda: client.get(self._k_mesh))
            self._mesh_id = mesh_id if found is None else _text(found)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        listener, self._listener = self._listener, None
        self._tail.clear()
        self._decoded.clear()
        self._held.clear()
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # a connection already broken: nothing to release
                pass

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise StoreError(f"mesh store {self.url} is not open")
        return self._client

    async def _call(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation``, waiting out a lost or loading server for up to
        ``reconnect_timeout`` seconds; Redis errors become StoreError (FencedError for a
        fenced commit)."""
        import redis.exceptions as rx

        self._redis()
        deadline = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        warned = False
        while True:
            try:
                return await operation()
            except (rx.AuthenticationError, rx.AuthorizationError) as exc:
                raise StoreError(f"mesh store {self.url}: {what}: {exc}") from exc
            except (rx.ConnectionError, rx.TimeoutError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"mesh store {self.url}: {what}: Redis unreachable for "
                        f"{self.reconnect_timeout:g} s ({type(exc).__name__}: {exc})"
                    ) from exc
                if not warned:
                    log.warning("mesh store %s: %s: %s; waiting for Redis", self.url, what, exc)
                    warned = True
            except rx.ResponseError as exc:
                text = str(exc)
                if text.startswith("FENCED"):
                    raise FencedError(f"mesh store {self.url}: {what}: {text[7:]}") from exc
                if text.startswith("LOST"):
                    raise StoreLostError(
                        f"mesh store {self.url}: {what}: the mesh this worker opened is gone "
                        f"from Redis ({text[5:]}): the server restarted without persistence "
                        "or was flushed; stopping instead of storing records again from offset "
                        "0. Run Redis with appendonly yes (docs/stores.md); a new run starts "
                        "a new, empty mesh"
                    ) from exc
                if text.startswith(("LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN")):
                    if time.monotonic() + delay > deadline:
                        raise StoreError(f"mesh store {self.url}: {what}: {text}") from exc
                else:
                    raise StoreError(f"mesh store {self.url}: {what}: {text}") from exc
            except rx.RedisError as exc:
                raise StoreError(f"mesh store {self.url}: {what}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            self._redis()  # closed meanwhile: stop

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        keys = [*keys, self._k_mesh]  # redis_scripts.MESH_CHECK
        args = [*args, self._mesh_id]
        return await self._call(name, lambda: script(keys=keys, args=args))

    def _checks(self, names: Sequence[str]) -> list[Any]:
        """``[n, (lease, owner, epoch) * n]`` for the leases in ``names`` this store holds."""
        out: list[Any] = [0]
        for name in names:
            held = self._held.get(name)
            if held is not None:
                out += (name, held[0], held[1])
                out[0] += 1
        return out

    # -- append --------------------------------------------------------------------------------

    async def append(
        self,
        records: Sequence[Record],
        positions: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> list[int]:
        """See :meth:`MeshStore.append`: one script appends and sets the positions. Fails
        before anything is written when a record or position cannot be encoded."""
        names = set(map(_TOPIC, records))
        if None in names:
            raise ValueError("cannot append a record whose topic is None (route it first)")
        position_rows = encode_positions(positions)
        if not records and not position_rows:
            return []
        groups: dict[str, list[Record]]
        if len(names) == 1:
            groups = {str(records[0].topic): list(records)}
        else:
            groups = {}
            for r in records:
                groups.setdefault(str(r.topic), []).append(r)
        bodies = [(name, len(group), encode_segment(group)) for name, group in groups.items()]
        by_connector: dict[str, list[tuple[str, str]]] = {}
        for connector, partition, text in position_rows:
            by_connector.setdefault(connector, []).append((partition, text))
        token = self._token_for(records)
        keys = [self._k_end, self._k_start, self._k_sources, self._k_leases]
        keys.append(f"{self._tag}:tok:{token}")
        args: list[Any] = [token, repr(self._clock()), self._channel, len(bodies)]
        for name, count, body in bodies:
            keys += (self._k_data(name), self._k_index(name))
            args += (name, count, body)
        args.append(len(by_connector))
        for connector, parts in by_connector.items():
            keys.append(self._k_positions(connector))
            args += (connector, len(parts))
            for partition, text in parts:
                args += (partition, text)
        args += self._checks([f"source {connector}" for connector in by_connector])
        self._appending += 1
        try:
            try:
                starts = await self._script("append", keys, args)
            except StoreError as exc:
                if not isinstance(exc, FencedError):
                    self._unsettled = [*self._unsettled[-15:], (records, token)]
                raise
            self._settled(records)
            for group, first in zip(groups.values(), starts, strict=True):
                for i, r in enumerate(group, int(first)):
                    r.offset = i
            offsets = [r.offset for r in records]
            for (name, group), (_, _, body) in zip(groups.items(), bodies, strict=True):
                self._tail.remember(name, group, len(body))  # contiguous: the script's offsets
        finally:
            self._appending -= 1
        if records:
            self._changes.notify()
        return offsets  # type: ignore[return-value]

    def _token_for(self, records: Sequence[Record]) -> str:
        """The token of an append: that of an earlier attempt with the very same list of
        records whose outcome is unknown, else a new one."""
        for earlier, token in self._unsettled:
            if earlier is records:
                return token
        return uuid.uuid4().hex

    def _settled(self, records: Sequence[Record]) -> None:
        if self._unsettled:
            self._unsettled = [(r, t) for r, t in self._unsettled if r is not records]

    def consumed(self, group: str, topic: str, offset: int) -> None:
        """Drop the kept records of ``topic`` every in-process reader has delivered (see
        :meth:`MeshStore.consumed` and :meth:`RecordTail.consumed`)."""
        self._tail.consumed(group, topic, offset)

    # -- reading -------------------------------------------------------------------------------

    async def read(self, topic: str, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of ``topic`` from ``offset`` on (one script call, or none
        when this process appended them)."""
        if limit <= 0:
            return []
        self._redis()
        kept = self._tail.read(topic, offset, limit, self._appending > 0)
        if kept is not None:
            return kept
        decoded = self._decoded.get(topic)
        known = "" if decoded is None else str(decoded[0])
        reply = await self._script(
            "read",
            [self._k_start, self._k_end, self._k_data(topic)],
            [topic, max(offset, 0), limit, known],
        )
        start = int(reply[0])
        offset = max(offset, start)
        out: list[Record] = []
        for i in range(2, len(reply), 3):
            first, count, body = int(reply[i]), int(reply[i + 1]), reply[i + 2]
            if decoded is not None and first == decoded[0] and not body:
                records = decoded[1]
            else:
                records = decode_segment(body, topic, first)
                if count > limit:  # read in slices: keep it for the next read
                    decoded = (first, records)
                    self._decoded.put(topic, first, records, len(body))
            begin = max(offset - first, 0)
            out.extend(records[begin : begin + limit - len(out)])
            if len(out) >= limit:
                break
        return out

    async def topics(self) -> list[TopicInfo]:
        client = self._redis()

        async def work() -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
            async with client.pipeline(transaction=not self.cluster) as pipe:
                pipe.hgetall(self._k_end)
                pipe.hgetall(self._k_start)
                ends, starts = await pipe.execute()
            return ends, starts

        ends, starts = await self._call("topics", work)
        return [
            TopicInfo(name.decode(), int(starts.get(name, 0)), int(end))
            for name, end in sorted(ends.items())
        ]

    async def end_offsets(self, topics: Sequence[str]) -> dict[str, int]:
        if not topics:
            return {}
        client = self._redis()
        values = await self._call("end offsets", lambda: client.hmget(self._k_end, list(topics)))
        return {name: int(v or 0) for name, v in zip(topics, values, strict=True)}

    # -- source positions ----------------------------------------------------------------------

    async def positions(self, connector_id: str) -> dict[str, dict[str, Any]]:
        client = self._redis()
        rows = await self._call(
            "positions", lambda: client.hgetall(self._k_positions(connector_id))
        )
        return {_text(k): decode_json(v) for k, v in rows.items()}

    async def source_ids(self) -> list[str]:
        client = self._redis()
        members = await self._call("source ids", lambda: client.smembers(self._k_sources))
        return sorted(map(_text, members))

    async def set_positions(
        self, connector_id: str, positions: Mapping[str, Mapping[str, Any]] | None
    ) -> None:
        rows = encode_positions({(connector_id, p): v for p, v in (positions or {}).items()})
        args: list[Any] = [connector_id]
        for _, partition, text in rows:
            args += (partition, text)
        await self._script(
            "set_positions", [self._k_positions(connector_id), self._k_sources], args
        )

    # -- consumer groups -----------------------------------------------------------------------

    async def group(self, group: str) -> GroupInfo:
        (info,) = await self._groups([group])
        return info

    async def _groups(self, names: Sequence[str]) -> list[GroupInfo]:
        client = self._redis()

        async def work() -> list[Any]:
            async with client.pipeline(transaction=not self.cluster) as pipe:
                for name in names:
                    pipe.hgetall(self._k_group(name))
                    pipe.hget(self._k_gstate, name)
                return list(await pipe.execute())

        replies = await self._call("groups", work) if names else []
        return [
            GroupInfo(
                name,
                {t.decode(): int(o) for t, o in replies[2 * i].items()},
                decode_json(replies[2 * i + 1]),
            )
            for i, name in enumerate(names)
        ]

    async def groups(self) -> list[GroupInfo]:
        client = self._redis()
        members = await self._call("groups", lambda: client.smembers(self._k_groups))
        return await self._groups(sorted(map(_text, members)))

    async def commit(
        self, group: str, offsets: Mapping[str, int], state: Mapping[str, Any] | None = None
    ) -> None:
        """Set the group's offsets and state in one script, fenced by its lease if held."""
        checked = check_offsets(offsets)
        text = encode_state(group, state)
        args: list[Any] = [group, "0" if text is None else "1", text or ""]
        args += self._checks([f"group {group}"])
        for topic, offset in checked.items():
            args += (topic, offset)
        await self._script(
            "commit",
            [self._k_group(group), self._k_gstate, self._k_groups, self._k_leases],
            args,
        )

    async def reset_group(self, group: str, offsets: Mapping[str, int] | None) -> None:
        args: list[Any] = [group]
        for topic, offset in check_offsets(offsets or {}).items():
            args += (topic, offset)
        await self._script(
            "reset_group", [self._k_group(group), self._k_gstate, self._k_groups], args
        )

    # -- retention -----------------------------------------------------------------------------

    async def apply_retention(self, topic: str, retention: Retention) -> int:
        """Like the SQLite store, but a batch that the count limit cuts through stays stored
        whole: the topic's start moves into it and reads skip what is below."""
        self._tail.forget(topic)
        self._decoded.forget(topic)
        client = self._redis()
        now = self._clock()

        async def work() -> tuple[Any, Any, list[Any]]:
            async with client.pipeline(transaction=not self.cluster) as pipe:
                pipe.hget(self._k_start, topic)
                pipe.hget(self._k_end, topic)
                pipe.xrange(self._k_index(topic))
                start, end, rows = await pipe.execute()
            return start, end, rows

        raw_start, raw_end, entries = await self._call("retention", work)
        if raw_end is None:
            return 0
        start, end = int(raw_start or 0), int(raw_end)
        rows = []
        for entry_id, fields in entries:
            first = int(entry_id.split(b"-")[1]) - 1
            rows.append((first, int(fields[b"n"]), float(fields[b"at"]), int(fields[b"z"])))
        cut = start
        if retention.max_records is not None:
            cut = max(cut, end - max(retention.max_records, 0))
        excess = (
            -1 if retention.max_bytes is None else sum(r[3] for r in rows) - retention.max_bytes
        )
        oldest_kept = None if retention.max_age_s is None else now - retention.max_age_s
        drop_to = start
        keep_from = end  # first offset of the first entry kept
        for index, (first, count, appended_at, size) in enumerate(rows):
            too_big = excess > 0 and index < len(rows) - 1
            if too_big or (oldest_kept is not None and appended_at < oldest_kept):
                drop_to = max(drop_to, first + count)
                excess -= size
                continue
            if first + count <= cut:
                drop_to = max(drop_to, first + count)
                continue
            if first < cut:
                drop_to = cut
            keep_from = first
            break
        if drop_to <= start:
            return 0
        done = await self._script(
            "trim",
            [self._k_start, self._k_data(topic), self._k_index(topic)],
            [topic, str(start), str(drop_to), f"0-{keep_from + 1}"],
        )
        return drop_to - start if int(done) else 0

    # -- leases --------------------------------------------------------------------------------

    async def acquire_leases(
        self, names: Sequence[str], owner: str, ttl: float, *, now: float
    ) -> list[Lease]:
        """See :meth:`MeshStore.acquire_leases` (one script); remembers each lease's epoch,
        which appends and commits then check."""
        if not names:
            return []
        reply = await self._script(
            "acquire",
            [self._k_leases, self._k_epochs],
            [owner, repr(float(now)), repr(float(now + ttl)), *names],
        )
        pairs = [(reply[i].decode(), reply[i + 1]) for i in range(1, len(reply), 2)]
        if int(reply[0]) == 1:
            return [_lease(name, value) for name, value in pairs]
        for name, epoch in pairs:
            self._held[name] = (owner, epoch.decode())
        return []

    async def break_leases(self, leases: Sequence[Lease]) -> None:
        args: list[str] = []
        for lease in leases:
            args += (lease.name, lease.owner)
        if args:
            await self._script("break", [self._k_leases], args)

    async def release_leases(self, owner: str) -> None:
        await self._script("release", [self._k_leases], [owner])
        self._held = {n: held for n, held in self._held.items() if held[0] != owner}

    async def leases(self) -> list[Lease]:
        client = self._redis()
        held = await self._call("leases", lambda: client.hgetall(self._k_leases))
        return sorted((_lease(_text(k), v) for k, v in held.items()), key=lambda x: x.name)

    def lease_epochs(self) -> dict[str, int]:
        """The fencing epoch of each lease this store holds (for status and tests)."""
        return {name: int(epoch) for name, (_, epoch) in self._held.items()}

    # -- notifications -------------------------------------------------------------------------

    def data_changed(self) -> Awaitable[None]:
        """Completes when records were appended (by this store, or by any store on the same
        Redis and prefix: a pub/sub message), or after ``poll_interval`` seconds."""
        if self._listener is None and self._client is not None:
            self._listener = asyncio.ensure_future(self._listen())
        return self._changes.wait(self._poll_interval)

    async def _listen(self) -> None:
        """Subscribe to the change channel and wake readers on each message; resubscribe after
        a lost connection."""
        while self._client is not None:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None:
                        self._changes.notify()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the server went away: readers poll meanwhile
                log.debug("mesh store %s: change subscription lost: %s", self.url, exc)
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def __repr__(self) -> str:
        return f"<RedisStore {self.url!r}>"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _lease(name: str, value: bytes | str) -> Lease:
    epoch, expires, owner = _text(value).split("|", 2)
    return Lease(name, owner, float(expires), int(epoch))


def _parse_url(url: str) -> tuple[str, str, str, float, float, bool]:
    """``(URL to connect to, URL to show, prefix, reconnect_timeout, socket_timeout,
    cluster)``."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:  # a bad port or IPv6 literal: a ConfigError, not a traceback
        raise ConfigError(f"invalid redis store URL {shown_url(url)!r}: {exc}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(
            f"invalid redis store URL {shown_url(url)!r}: use redis://HOST:PORT/DB "
            "(options: ?prefix=NAME&reconnect_timeout=SECONDS&socket_timeout=SECONDS)"
        )
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(
            f"invalid redis store URL {shown_url(url)!r}: the database must be a number"
        )
    prefix, reconnect, socket_timeout, cluster = "meshconnect", 60.0, 30.0, False
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        try:
            if key == "prefix" and value and not set(value) & set("{}"):
                prefix = value
            elif key == "reconnect_timeout" and float(value) >= 0:
                reconnect = float(value)
            elif key == "socket_timeout" and float(value) > 0:
                socket_timeout = float(value)
            elif key == "cluster" and value in ("yes", "no"):
                cluster = value == "yes"
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"invalid redis store URL {shown_url(url)!r}: bad option {key}={value!r} (known: "
                "prefix=NAME without braces, reconnect_timeout=SECONDS, socket_timeout=SECONDS, "
                "cluster=yes|no)"
            ) from None
    connect = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    if cluster and db not in ("", "0"):
        raise ConfigError(
            f"invalid redis store URL {shown_url(url)!r}: a cluster has database 0 only"
        )
    return connect, shown_url(url), prefix, reconnect, socket_timeout, cluster
