"""The ``webhook`` source: CloudEvents (and plain bodies) over HTTP into the mesh.

A request is answered **2xx only after its events are durably appended** (the batch's ack,
:class:`meshconnect.SourceBatch`), so a sender that got 2xx never loses the event, even if the
worker is killed right after. Everything else gets a status that says what to do:

====  ==========================================================================================
202   stored (body ``{"stored": n, "duplicates": d}``); a repeated ``source``+``id`` within
      ``idempotency_window`` counts as a duplicate and is stored once; so does a request
      repeating a timestamped signature already stored (a replay)
400   malformed JSON (unpaired surrogates included), data the store could not write, an
      invalid CloudEvent (``missing``/``invalid`` list the attributes), a
      plain-body template without a value
401   missing or wrong bearer token (``WWW-Authenticate: Bearer`` with ``bearer_tokens``;
      checked before the body is read),
      missing or wrong signature (hex in either case),
      a timestamped signature outside its tolerance
403   client address outside ``allow_ips``; an event type outside the token's ``types``
      (nothing of the request is stored)
408   the body did not arrive within ``read_timeout``
413   body over ``max_body_bytes``; batch longer than ``max_batch``
415   a content type that is neither JSON, form, text nor a CloudEvents mode; a
      ``Content-Encoding`` other than gzip or deflate (400 when the body does not decode)
429   over ``rate_limit`` for the client address (``Retry-After``)
503   the store did not take the events (the append failed, the source is stopping, more than
      ``max_pending`` events or ``max_pending_bytes`` of bodies wait, or no ack within
      ``ack_timeout``), with ``Retry-After``;
      nothing was stored, or it was and a retry is a duplicate the idempotency window absorbs
====  ==========================================================================================

Every 4xx and 503 has an RFC 7807 ``application/problem+json`` body. Secrets (tokens, HMAC
secrets, signatures) are never logged or echoed: a rejection is logged at INFO with the
client address, the status and the reason's kind only.

Positions: ``{"webhook": {"stored": n, "window": {...}, "replays": {...}}}``: the number of
requests stored so far (a sender's view of progress; HTTP cannot be replayed by the receiver,
the sender retries what got no 2xx), and what the idempotency window needs to survive a crash
(:mod:`._window`): the digests of the events (``window``) and of the timestamped signatures
(``replays``) of the last two batches (more when they are small), committed with the batch's
events. A worker killed after the commit and before the 2xx reached the sender seeds its
window from them when it starts again, so the sender's retry is answered as a duplicate
instead of being stored a second time.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import ipaddress
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from meshconnect import DataError, Position, Record, Source, SourceBatch, jsonvalue
from meshconnect.eventrules import InvalidEventError, parse_event
from meshconnect.positioncheck import Check, fields_problem, partition_problem, stored_error, whole

from . import _binding, _window
from ._binding import BATCH, STRUCTURED, BadRequest
from ._signing import verify
from ._templates import Template, data_path
from .config import BearerToken, WebhookConfig

__all__ = ["WebhookSource"]

PARTITION = "webhook"
_CE_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")


def _event_key(record: Record) -> bytes:
    """What identifies an event in the idempotency window: a 16-byte BLAKE2b digest of its
    ``source`` and ``id`` (CloudEvents: the pair is unique per event). A digest, not the two
    strings: the window holds up to a million events for ``idempotency_window``, and ids of a
    megabyte each (CloudEvents sets no length) would have held terabytes."""
    text = f"{len(record.source)}:{record.source}{record.id}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class _Request:
    """Events of one request waiting for the append, and the senders waiting for the answer:
    this request's and those of duplicates that came while it waited. Each sender waits on a
    future of its own, so a sender that goes away (its task cancelled) cancels only that."""

    records: list[Record]
    keys: list[bytes] = field(default_factory=list)
    #: The keys of its events that were stored (or on their way) already: kept in the
    #: position with its own, so a retry of the whole request is a duplicate after a crash.
    repeated: list[bytes] = field(default_factory=list)
    #: The request body's length, counted against ``max_pending_bytes`` while it waits.
    size: int = 0
    #: The digest of its timestamped signature (:meth:`WebhookSource._replay_key`), if any.
    replay: bytes | None = None
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    settled: bool = False
    error: BaseException | None = None

    @property
    def weight(self) -> int:
        """Its share of a batch: the events it stores and those it repeats (the digests the
        position keeps for it), at most ``max_batch``."""
        return len(self.records) + len(self.repeated)

    def settle(self, error: BaseException | None) -> None:
        """Answer every waiting sender: stored (``None``) or not (``error``)."""
        if self.settled:
            return
        self.settled, self.error = True, error
        for waiter in self.waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)


class Unavailable(Exception):
    """The events were not stored: the answer is 503 with Retry-After. The message is what the
    client reads; ``reason`` (the store's error, which may name internals) is only logged."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


#: The fields of the source's position; ``window`` and ``replays`` are checked whole by
#: ``_window.unpack`` (``WebhookSource._position_problem``).
_DIGESTS = Check("an object of idempotency digests (offsets show prints one)", lambda v: True)
_POSITION_FIELDS = {"stored": whole(), "window": _DIGESTS, "replays": _DIGESTS}


class WebhookSource(Source[WebhookConfig]):
    """Receives HTTP requests on the worker's shared listener (module docstring)."""

    empty_position = "counts stored requests from 0, with an empty idempotency window"
    #: Seconds an idle ``poll`` waits for a request before it returns an empty batch.
    idle_wait = 1.0

    async def start(self, positions: Mapping[str, Position]) -> None:
        config = self.config
        position = positions.get(PARTITION, {})
        # not bounded by `max_batch`: a smaller one than when it was written just keeps fewer
        problem = self._position_problem(PARTITION, position, None) if position else None
        if problem is not None:
            what = f"webhook source {self.context.name}"
            raise stored_error(what, PARTITION, problem, self.context.pipeline)
        self.stored = int(position.get("stored", 0))
        self.queue: deque[_Request] = deque()
        self.waiting = 0  # events queued, not yet acked
        self.waiting_bytes = 0  # their requests' body bytes
        self.wake = asyncio.Event()
        self.stopping = False
        self.accepted = 0  # requests queued for the append so far
        #: event key (:func:`_event_key`) -> monotonic time it was stored; oldest first
        self.seen: OrderedDict[bytes, float] = OrderedDict()
        self.inflight: dict[bytes, _Request] = {}
        #: signature digest -> monotonic time until which a repeat is a replay (timestamped)
        self.replays: OrderedDict[bytes, float] = OrderedDict()
        #: The digests the position keeps (oldest first, with the wall-clock time their batch
        #: was taken): of events, and of timestamped signatures.
        self.kept = _window.Kept(_window.unpack(position.get("window")))
        self.kept_replays = _window.Kept(_window.unpack(position.get("replays")))
        self._seed()
        self.buckets: OrderedDict[str, list[float]] = OrderedDict()
        self.tokens: list[tuple[bytes, list[str]]] = []
        for item in config.bearer_tokens:
            if isinstance(item, BearerToken):
                self.tokens.append((item.token.get_secret_value().encode(), list(item.types)))
            else:
                self.tokens.append((item.get_secret_value().encode(), ["*"]))
        self.networks = [ipaddress.ip_network(n, strict=False) for n in config.allow_ips]
        self.templates = {
            name: Template(text)
            for name, text in (
                ("type", config.type),
                ("source", config.source),
                ("subject", config.subject),
                ("id", config.id),
            )
            if text is not None
        }
        metrics = self.context.metrics
        self.requests = metrics.counter("webhook_requests", "HTTP requests received")
        self.rejected = metrics.counter("webhook_rejected", "Requests answered 4xx or 503")
        self.events = metrics.counter("webhook_events_stored", "Events stored")
        self.duplicates = metrics.counter("webhook_duplicates", "Repeated events not stored")
        tls = None
        if config.tls_cert is not None and config.tls_key is not None:
            base = self.context.base_dir
            tls = (_resolve(base, config.tls_cert), _resolve(base, config.tls_key))
        self.route = await self.context.http.add_route(
            config.listen,
            "POST",
            config.path,
            self.handle,
            tls=tls,
            header_timeout=config.header_timeout,
            max_connections=config.max_connections,
        )

    def _seed(self) -> None:
        """The idempotency window and the replayed signatures after a restart: what the
        committed position kept of them, each for the rest of its time."""
        config = self.config
        wall, now = time.time(), time.monotonic()
        # a time after now (a clock set back, a hand-written position) counts as now: it
        # would otherwise keep its digests past their window
        self.kept.not_after(wall)
        self.kept_replays.not_after(wall)
        self.kept.trim(wall, config.idempotency_window)
        for key, at in self.kept.entries():
            self.seen[key] = now - (wall - at)
        if config.hmac is None or config.hmac.scheme != "timestamped":
            self.kept_replays.batches.clear()
            return
        keep = 2 * config.hmac.tolerance
        self.kept_replays.trim(wall, keep)
        for key, at in self.kept_replays.entries():
            self.replays[key] = now - (wall - at) + keep

    def position_problem(self, partition: str, position: Position) -> str | None:
        """Partition ``webhook``, ``{"stored": n, "window": ..., "replays": ...}``: a count of
        requests (a whole number, 0 or more) and the idempotency digests (``_window``)."""
        return self._position_problem(partition, position, _window.limit(self.config.max_batch))

    def _position_problem(self, partition: str, position: Position, most: int | None) -> str | None:
        problem = partition_problem(partition, [PARTITION]) or fields_problem(
            position, _POSITION_FIELDS, required=["stored"]
        )
        if problem is not None:
            return problem
        for name in ("window", "replays"):
            try:
                _window.unpack(position.get(name), most)
            except ValueError as exc:
                return f"{name!r}: {exc}"
        return None

    async def stop(self) -> None:
        self.stopping = True
        queue = getattr(self, "queue", None)
        while queue:
            queue.popleft().settle(Unavailable("the source is stopping"))

    # -- the worker's side ----------------------------------------------------------------------

    async def poll(self) -> SourceBatch:
        if not self.queue:
            self.wake.clear()
            try:
                async with asyncio.timeout(self.idle_wait):  # no task per poll, unlike wait_for
                    await self.wake.wait()
            except TimeoutError:
                return SourceBatch([])
        taken: list[_Request] = []
        records: list[Record] = []
        most = _window.batch_events(self.config.max_batch)
        # at most `most` events, those already stored that the requests repeat counted (one
        # request of more alone): the position keeps the digests of two batches
        weight = 0
        while self.queue and (not taken or weight + self.queue[0].weight <= most):
            request = self.queue.popleft()
            taken.append(request)
            records.extend(request.records)
            weight += request.weight
        self.stored += len(taken)
        return SourceBatch(records, {PARTITION: self._position(taken)}, ack=self._acker(taken))

    def _position(self, taken: list[_Request]) -> dict[str, Any]:
        """The position committed with the batch of ``taken``: the requests stored, and the
        digests of the events and signatures of the last two batches (this one included),
        and of older ones up to :data:`._window.FLOOR` digests, that are within their windows.
        Batches are committed in the order they are polled, so the earlier ones are committed
        with it, or it is not committed either."""
        config = self.config
        now = time.time()
        position: dict[str, Any] = {"stored": self.stored}
        if config.idempotency_window > 0:
            self.kept.add(now, (k for r in taken for keys in (r.keys, r.repeated) for k in keys))
            self.kept.trim(now, config.idempotency_window)
            if self.kept.batches:
                position["window"] = _window.pack(self.kept)
        if config.hmac is not None and config.hmac.scheme == "timestamped":
            self.kept_replays.add(now, (r.replay for r in taken if r.replay is not None))
            self.kept_replays.trim(now, 2 * config.hmac.tolerance)
            if self.kept_replays.batches:
                position["replays"] = _window.pack(self.kept_replays)
        return position

    def _acker(self, taken: list[_Request]) -> Any:
        def ack(error: BaseException | None) -> None:
            now = time.monotonic()
            for request in taken:
                self.waiting -= len(request.records)
                self.waiting_bytes -= request.size
                for key in request.keys:
                    self.inflight.pop(key, None)
                    if error is None and self.config.idempotency_window > 0:
                        self.seen[key] = now
                        self.seen.move_to_end(key)
                request.settle(
                    None
                    if error is None
                    else Unavailable("the mesh store did not take the events", str(error))
                )
            if error is None:
                self.events.inc(sum(len(r.records) for r in taken))

        return ack

    # -- the sender's side ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request, answered as the module docstring says."""
        self.requests.inc()
        client = self._client(request)
        try:
            return await self._handle(request, client)
        except BadRequest as exc:
            self.rejected.inc()
            self.context.logger.info(
                "webhook %s: %d %s from %s", self.config.path, exc.status, exc.title, client
            )
            return _problem(exc.status, exc.title, exc.detail, exc.extra, bearer=bool(self.tokens))
        except Unavailable as exc:
            self.rejected.inc()
            self.context.logger.warning(
                "webhook %s: 503 to %s: not stored: %s",
                self.config.path,
                client,
                exc if exc.reason is None else f"{exc}: {exc.reason}",
            )
            return _problem(
                503,
                "Service Unavailable",
                f"not stored: {exc}; retry later",
                {},
                {"Retry-After": str(math.ceil(self.config.retry_after))},
            )

    def _client(self, request: web.Request) -> str:
        """The client address: the connection's, or behind ``trust_forwarded`` proxies the
        ``X-Forwarded-For`` entry the outermost of them appended, counted from the right
        (Werkzeug's ``ProxyFix(x_for=N)``, Express's ``trust proxy N``). Entries left of it
        are whatever the client sent: the first entry, taken before, let any client claim an
        allowed address through a proxy that appends (nginx, HAProxy, cloud load balancers)."""
        proxies = int(self.config.trust_forwarded)
        if proxies:
            # Every header line, in order: a client's own line comes before the proxy's.
            entries = [
                entry.strip()
                for line in request.headers.getall("X-Forwarded-For", ())
                for entry in line.split(",")
            ]
            if len(entries) >= proxies and entries[-proxies]:
                return entries[-proxies]
        return request.remote or ""

    async def _handle(self, request: web.Request, client: str) -> web.StreamResponse:
        config = self.config
        if self.stopping:
            raise Unavailable("the source is stopping")
        if self.networks and not self._allowed(client):
            raise BadRequest(403, "Forbidden", "client address not allowed")
        self._rate_limit(client)
        # the token before the body: a client without one is not read (nor decompressed)
        patterns = self._authenticate(request)
        self._check_pending_bytes(request.content_length or 0)
        body = await self._read_body(request)
        replay = None
        if config.hmac is not None:
            problem = verify(request.headers.get(config.hmac.header), body, config.hmac)
            if problem:
                raise BadRequest(401, "Unauthorized", problem)
            replay = self._replay_key(request.headers[config.hmac.header])
            if replay is not None and self.replays.get(replay, 0.0) > time.monotonic():
                self.duplicates.inc()
                return _json({"stored": 0, "duplicates": 1}, 202)
        records = self._events(request, body, client)
        _check_storable(records)
        denied = sorted({r.type for r in records if not _type_allowed(r.type, patterns)})
        if denied:
            raise BadRequest(
                403, "Forbidden", "this token may not publish these event types", types=denied
            )
        fresh, keys, repeated, waits, duplicates = self._deduplicate(records)
        for other in waits:  # the same event is being stored by another request
            await self._await(other)
        if fresh:
            if self.stopping:  # stop() failed the queue while this request was read
                raise Unavailable("the source is stopping")
            if self.waiting + len(fresh) > config.max_pending:
                raise Unavailable(f"more than {config.max_pending} events wait to be stored")
            self._check_pending_bytes(len(body))
            pending = _Request(fresh, keys, repeated, size=len(body), replay=replay)
            for key in pending.keys:
                self.inflight[key] = pending
            self.queue.append(pending)
            self.waiting += len(fresh)
            self.waiting_bytes += pending.size
            self.accepted += 1
            self.wake.set()
            await self._await(pending)
        if replay is not None:
            self._remember_replay(replay)
        if duplicates:
            self.duplicates.inc(duplicates)
        answer: dict[str, Any] = {"stored": len(fresh), "duplicates": duplicates}
        if config.synchronous and fresh:
            # The stored events carry their topic and offset now (the store set them).
            delivered = await self.context.deliveries.wait(fresh, config.sync_timeout)
            answer["delivered"] = delivered
            return _json(answer, 200 if delivered else 202)
        return _json(answer, 202)

    def _replay_key(self, header: str) -> bytes | None:
        """With ``scheme: timestamped``, a digest of a valid signature header: the same
        header again is the same request replayed (its time and body are signed), which
        ``tolerance`` alone lets through for as long as the time is near now."""
        if self.config.hmac is None or self.config.hmac.scheme != "timestamped":
            return None
        return hashlib.blake2b(header.strip().encode("utf-8", "replace"), digest_size=16).digest()

    def _remember_replay(self, key: bytes) -> None:
        """Keep a stored request's signature until its timestamp is out of ``tolerance``
        (at most twice the tolerance from now, whatever the sender's clock), a million at
        most, oldest forgotten first."""
        assert self.config.hmac is not None
        now = time.monotonic()
        replays = self.replays
        while replays:
            oldest, until = next(iter(replays.items()))
            if until > now and len(replays) < 1_000_000:
                break
            del replays[oldest]
        replays[key] = now + 2 * self.config.hmac.tolerance

    def _check_pending_bytes(self, size: int) -> None:
        """Refuse (503) a body of ``size`` bytes that would take the bodies waiting for the
        store past ``max_pending_bytes``; a request is taken whatever its size when none
        waits, so a ``max_body_bytes`` above the limit still lets requests through."""
        limit = self.config.max_pending_bytes
        if self.waiting_bytes and self.waiting_bytes + size > limit:
            raise Unavailable(f"more than {limit} bytes of events wait to be stored")

    async def _await(self, request: _Request) -> None:
        """Wait until ``request`` is stored; its error (an ``Unavailable``) when it was not."""
        if request.settled:
            if request.error is not None:
                raise request.error
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.config.ack_timeout):
                await waiter
        except TimeoutError:
            raise Unavailable(f"no durable append within {self.config.ack_timeout:g}s") from None
        finally:
            if not request.settled:  # timed out or cancelled: forget this sender
                request.waiters.remove(waiter)
                if not request.waiters:
                    self._withdraw(request)

    def _withdraw(self, request: _Request) -> None:
        """Take ``request`` out of the queue when no sender waits for it any more (each was
        answered 503, or went away) and the worker has not polled it yet (a paused pipeline, a
        slow store): its 503 said "not stored", and so it stays. Stored later, it was a second
        copy of every event its sender retried, under new ids for a plain body."""
        for index, queued in enumerate(self.queue):
            if queued is request:
                del self.queue[index]
                break
        else:
            return  # polled: the worker is appending it, its ack settles it
        self.waiting -= len(request.records)
        self.waiting_bytes -= request.size
        for key in request.keys:
            if self.inflight.get(key) is request:
                del self.inflight[key]
        request.settle(Unavailable("no sender waits for these events any more"))

    def _allowed(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def _rate_limit(self, client: str) -> None:
        limit = self.config.rate_limit
        if limit is None:
            return
        rate = limit.requests_per_second
        burst = float(limit.burst or max(1, math.ceil(rate)))
        now = time.monotonic()
        bucket = self.buckets.get(client)
        if bucket is None:
            bucket = self.buckets[client] = [burst, now]
            if len(self.buckets) > 100_000:  # forget the longest-idle clients
                self.buckets.popitem(last=False)
        self.buckets.move_to_end(client)
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1:
            bucket[0] = tokens
            wait = max(1, math.ceil((1 - tokens) / rate))
            raise BadRequest(
                429,
                "Too Many Requests",
                f"over {rate:g} requests a second from this address",
                retry_after=wait,
            )
        bucket[0] = tokens - 1

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, decoded from its ``Content-Encoding`` (``gzip``, ``deflate``; ``br`` and
        ``zstd`` when aiohttp has their libraries): 415 for a coding it cannot decode
        (RFC 9110 section 15.5.16), 400 for a body that does not decode, 413 past
        ``max_body_bytes`` (decoded), 408 past ``read_timeout``."""
        limit = self.config.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(413, "Content Too Large", f"body over {limit} bytes")
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if coding not in _CODINGS:
            raise BadRequest(
                415,
                "Unsupported Content-Encoding",
                "send the body as it is, or with Content-Encoding gzip or deflate",
            )
        stream = request.content
        length = request.content_length
        if not coding and length is not None and stream.total_bytes >= length:
            return stream.read_nowait(-1)  # all of it came with the headers: no waiting
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.read_timeout):
                while True:
                    chunk = await request.content.read(65536)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise BadRequest(413, "Content Too Large", f"body over {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(
                408, "Request Timeout", f"body not received in {self.config.read_timeout:g}s"
            ) from None
        except web.RequestPayloadError:  # a gzip/deflate body that does not decode
            raise BadRequest(
                400, "Bad body", f"the body does not decode as Content-Encoding {coding}"
            ) from None
        return b"".join(chunks)

    def _authenticate(self, request: web.Request) -> list[str]:
        """The type patterns the request's token may publish (``["*"]`` without tokens)."""
        if not self.tokens:
            return ["*"]
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise BadRequest(401, "Unauthorized", "missing bearer token")
        presented = given.strip().encode("utf-8", "replace")
        match = None
        for secret, patterns in self.tokens:  # compare with all: time does not tell which
            if hmac.compare_digest(secret, presented) and match is None:
                match = patterns
        if match is None:
            raise BadRequest(401, "Unauthorized", "invalid bearer token")
        return match

    def _events(self, request: web.Request, body: bytes, client: str) -> list[Record]:
        headers = request.headers
        mime, _ = _binding.media_type(headers.get("Content-Type"))
        if mime in (BATCH, STRUCTURED):
            _binding.check_json_charset(headers.get("Content-Type"))
        if mime == BATCH:
            return _binding.events_from_batch(body, self.config.max_batch)
        if mime == STRUCTURED:
            return [_binding.event_from_structured(body)]
        if mime.startswith("application/cloudevents"):
            raise BadRequest(
                415,
                "Unsupported Media Type",
                "the JSON event format is the only CloudEvents format supported",
            )
        if any(name in headers for name in _CE_REQUIRED):
            return [_binding.event_from_binary(headers, body)]
        return [self._wrap(request, body, mime, client)]

    def _wrap(self, request: web.Request, body: bytes, mime: str, client: str) -> Record:
        """A plain body as a CloudEvent made from the templates."""
        content_type = request.headers.get("Content-Type")
        if mime == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(
                    body.decode("utf-8"),
                    keep_blank_values=True,
                    strict_parsing=False,
                    encoding="utf-8",
                    errors="strict",  # a %XX escape that is not UTF-8: 400, as for text
                )
            except UnicodeDecodeError:
                raise BadRequest(
                    400, "Bad form", "form body or a percent-escape in it is not UTF-8"
                ) from None
            data: Any = {}
            for name, value in pairs:
                if name in data:
                    data[name] = (
                        [*data[name], value]
                        if isinstance(data[name], list)
                        else [data[name], value]
                    )
                else:
                    data[name] = value
            datacontenttype: str | None = "application/json"
        else:
            data = _binding.decode_data(body, content_type, binary_fallback=False)
            datacontenttype = (
                "application/json" if not mime or _binding.is_json_type(mime) else content_type
            )

        def lookup(name: str) -> Any:
            kind, _, rest = name.partition(".")
            if kind == "header" and rest:
                return request.headers.get(rest)
            if kind == "query" and rest:
                return request.query.get(rest)
            if kind == "data" and rest:
                value = data_path(data, rest)
                return None if isinstance(value, dict | list) else value
            if name == "path":
                return request.path
            if name == "method":
                return request.method
            if name == "remote":
                return client
            return None

        attributes: dict[str, Any] = {"specversion": "1.0"}
        for name, template in self.templates.items():
            try:
                attributes[name] = template.render(lookup)
            except KeyError as exc:
                raise BadRequest(
                    400,
                    "Missing value",
                    f"{name} template {template.text!r}: no value for {{{exc.args[0]}}}",
                ) from None
        attributes.setdefault("id", uuid.uuid4().hex)
        if "traceparent" not in attributes:  # the sender's trace, as the event's (module doc)
            attributes.update(_binding.trace_context(request.headers))
        attributes["time"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        attributes["datacontenttype"] = datacontenttype
        attributes["data"] = data
        try:
            return parse_event(attributes, Record)
        except InvalidEventError as exc:
            raise BadRequest(
                400,
                "Invalid CloudEvent",
                f"the event made from the templates is invalid: {exc}",
                invalid=[{"attribute": exc.attribute, "problem": str(exc)}],
            ) from None

    def _deduplicate(
        self, records: list[Record]
    ) -> tuple[list[Record], list[bytes], list[bytes], list[_Request], int]:
        """The records to store and their keys (:func:`_event_key`), the keys of the others
        that were stored or are on their way already (each once), the appends of the same
        events by other requests to wait for, and how many were duplicates."""
        window = self.config.idempotency_window
        if window <= 0:
            return records, [_event_key(r) for r in records], [], [], 0
        now = time.monotonic()
        seen = self.seen
        while seen:
            key, when = next(iter(seen.items()))
            if now - when <= window and len(seen) <= 1_000_000:
                break
            seen.popitem(last=False)
        fresh: list[Record] = []
        fresh_keys: list[bytes] = []
        repeated: list[bytes] = []
        waits: list[_Request] = []
        keys: set[bytes] = set()
        duplicates = 0
        for record in records:
            key = _event_key(record)
            if key in keys:
                duplicates += 1
                continue
            keys.add(key)
            if key in seen:
                duplicates += 1
                repeated.append(key)
            elif key in self.inflight:
                duplicates += 1
                repeated.append(key)
                waits.append(self.inflight[key])
            else:
                fresh.append(record)
                fresh_keys.append(key)
        return fresh, fresh_keys, repeated, waits, duplicates

    def classify_error(self, exc: BaseException) -> Any:
        return DataError if isinstance(exc, BadRequest) else None


def _codings() -> frozenset[str]:
    """The ``Content-Encoding`` values aiohttp decodes here ("" and identity: none)."""
    from aiohttp import http_parser

    codings = {"", "identity", "gzip", "deflate"}
    if getattr(http_parser, "HAS_BROTLI", False):
        codings.add("br")
    if getattr(http_parser, "HAS_ZSTD", False):
        codings.add("zstd")
    return frozenset(codings)


_CODINGS = _codings()


def _json(answer: dict[str, Any], status: int) -> web.Response:
    """``web.json_response`` without the stdlib encoder (a third of its cost, per request)."""
    return web.Response(body=orjson.dumps(answer), status=status, content_type="application/json")


def _check_storable(records: list[Record]) -> None:
    """:class:`BadRequest` (400) when the data of an event could not be written by the mesh
    store: a string with an unpaired surrogate (JSON bodies are refused earlier by
    ``loads_event``, naming the path; text in a charset such as UTF-7 can make one too), or
    any other value :func:`meshconnect.jsonvalue.dumps` refuses. Attributes and extensions
    are checked by ``parse_event``. Without this, the append would fail: a 503 the sender
    retries forever, and a failed source."""
    datas = [r.data for r in records if not isinstance(r.data, bytes | bytearray)]
    for data in datas:
        if isinstance(data, str) and _SURROGATE.search(data) is not None:
            raise BadRequest(
                400,
                "Unstorable data",
                "the data holds an unpaired UTF-16 surrogate, which has no UTF-8 form",
            )
    try:
        jsonvalue.dumps_each(datas)
    except TypeError as exc:
        raise BadRequest(400, "Unstorable data", f"the data cannot be stored: {exc}") from None


_SURROGATE = re.compile("[\ud800-\udfff]")


def _type_allowed(event_type: str, patterns: list[str]) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(event_type, p) for p in patterns)


def _resolve(base: str, path: str) -> str:
    import os

    return path if os.path.isabs(path) else os.path.join(base, path)


def _problem(
    status: int,
    title: str,
    detail: str,
    extra: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
    bearer: bool = False,
) -> web.Response:
    """An RFC 7807 problem response; a 401 names the Bearer scheme (RFC 6750 section 3) only
    where bearer tokens are configured (``bearer``): a signature-only route has no scheme a
    client could answer with."""
    out_headers = dict(headers or {})
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    for name, value in extra.items():
        if name == "retry_after":
            out_headers["Retry-After"] = str(value)
        elif value:
            body[name] = value
    if status == 401 and bearer:
        out_headers.setdefault("WWW-Authenticate", 'Bearer realm="meshconnect"')
    return web.Response(
        status=status,
        body=jsonvalue.dumps(body),
        content_type="application/problem+json",
        headers=out_headers,
    )
