"""The ``slack`` source: the Slack Events API received on the worker's shared HTTP listener.

Follows https://api.slack.com/authentication/verifying-requests-from-slack and
https://api.slack.com/apis/events-api:

* every request must carry ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature``; the
  signature is ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{raw body}`` keyed with the
  signing secret, compared in constant time. A timestamp more than ``max_age`` (5 minutes)
  from now is refused, so a captured request cannot be replayed later. Failures answer ``401``
  and are counted (``slack_rejected``), never stored.
* ``url_verification`` is answered with its ``challenge``.
* an ``event_callback`` becomes one CloudEvent: ``id`` the ``event_id``, ``type``
  ``com.slack.<event.type>`` (characters a CloudEvents String may not hold escaped as
  ``\\uXXXX``), ``source`` ``slack://<team_id>/<api_app_id>`` (each part percent-encoded,
  RFC 3986; empty when absent or not a string), ``subject`` the event's channel, ``time`` the
  ``event_time`` (Unix seconds, integral or not; none when out of range), ``data`` the envelope
  without its deprecated verification ``token``. An event whose attributes would still not be
  valid (an ``event_id`` with a control character) is refused with ``400``. The request is
  answered ``200`` only once the record is durably in the mesh (the batch's ack), ``503`` if
  that takes longer than ``ack_timeout`` (Slack then retries) or fails.
* Slack retries (``X-Slack-Retry-Num``) an event it got no timely 2xx for. An ``event_id``
  already stored is answered ``200`` and dropped; one still on its way waits for the first
  copy's fate. The last ``dedup_window`` stored ids are the source position, committed with
  the records, so de-duplication holds across restarts and crashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from meshconnect import (
    ConfigError,
    ConnectorContext,
    Position,
    Record,
    Source,
    SourceBatch,
    jsonvalue,
)
from meshconnect.eventrules import attribute_problems, valid_string
from meshconnect.httpbody import read_body

from .config import SlackSourceConfig

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["SlackEventsSource", "signature", "verify_request"]

PARTITION = "events"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verify_request(
    secret: bytes,
    timestamp: str | None,
    given: str | None,
    body: bytes,
    *,
    now: float,
    max_age: float = 300.0,
) -> str | None:
    """Why a request fails Slack's signature check, or None when it passes."""
    if not timestamp or not given:
        return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
    # Slack sends Unix seconds in ASCII digits; int() would also take signs, spaces,
    # underscores and other scripts' digits, and a number past a float's range.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "X-Slack-Request-Timestamp is not a number"
    stamp = int(timestamp)
    if abs(now - stamp) > max_age:
        return f"stale request: timestamp {stamp} is {abs(now - stamp):.0f}s from now"
    # Bytes: compare_digest refuses str with characters beyond ASCII (a 500, not a 401).
    expected = signature(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, given.encode("utf-8", "surrogateescape")):
        return "signature mismatch"
    return None


class SlackEventsSource(Source[SlackSourceConfig]):
    """Slack Events API receiver; see the module docstring."""

    empty_position = "receives the events Slack sends from the start of the run"

    def __init__(self, config: SlackSourceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.received = context.metrics.counter("slack_events", "Events received and stored")
        self.rejected = context.metrics.counter(
            "slack_rejected", "Requests refused: bad or stale signature"
        )
        self.app_rate_limited = context.metrics.counter(
            "slack_app_rate_limited", "app_rate_limited notices: Slack dropped events"
        )
        self.duplicates = context.metrics.counter(
            "slack_duplicates", "Retries of events already received, dropped"
        )

    def position_problem(self, partition: str, position: Position) -> str | None:
        if partition != PARTITION:
            return f"the slack source has one partition, {PARTITION!r}"
        unknown = sorted(set(position) - {"seen"})
        if unknown:
            return f"unknown field(s) {', '.join(unknown)} (seen)"
        seen = position.get("seen", [])
        if not isinstance(seen, list) or not all(isinstance(i, str) and i for i in seen):
            return "'seen' is not a list of event ids (non-empty strings)"
        return None

    async def start(self, positions: Mapping[str, Position]) -> None:
        window = self.config.dedup_window
        position = positions.get(PARTITION, {})
        problem = self.position_problem(PARTITION, position) if position else None
        if problem is not None:
            raise ConfigError(
                f"the committed position of the slack source is not one it wrote: {problem} "
                f"(meshconnect offsets reset FILE.yaml {self.context.pipeline} --to beginning "
                "forgets it)"
            )
        stored = [str(i) for i in position.get("seen", [])][-window:]
        #: ids in stored batches (newest last): the position.
        self.recent: deque[str] = deque(stored, maxlen=window)
        #: id -> None (stored) or the future of its batch's ack.
        self.seen: OrderedDict[str, asyncio.Future[None] | None] = OrderedDict(
            (event_id, None) for event_id in stored
        )
        self.inbox: asyncio.Queue[tuple[Record, asyncio.Future[None]]] = asyncio.Queue()
        self.secret = self.config.signing_secret.get_secret_value().encode("utf-8")
        self.types = set(self.config.event_types)
        await self.context.http.add_route(
            self.config.listen, "POST", self.config.path, self.on_request
        )

    async def on_request(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        body = await read_body(request, self.config.max_body_bytes)
        if body is None:
            return web.Response(status=413, text="request too large")
        why = verify_request(
            self.secret,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
            body,
            now=time.time(),
            max_age=self.config.max_age,
        )
        if why is not None:
            self.rejected.inc()
            self.context.logger.warning("slack events: refused a request: %s", why)
            return web.Response(status=401, text=why)
        try:
            envelope = jsonvalue.loads(body)
        except ValueError as exc:
            return web.Response(status=400, text=f"not JSON: {exc}")
        if not isinstance(envelope, dict):
            return web.Response(status=400, text="not a JSON object")
        kind = envelope.get("type")
        if kind == "url_verification":
            return web.json_response({"challenge": envelope.get("challenge")})
        if kind == "app_rate_limited":
            # Slack drops this app's events for a while (more than 30,000 an hour for a
            # workspace): they will never arrive, which nothing else would tell.
            self.app_rate_limited.inc()
            self.context.logger.warning(
                "slack events: Slack is dropping this app's events for team %s "
                "(app_rate_limited, minute %s): more than 30,000 events an hour; they are "
                "lost, narrow the app's event subscriptions",
                _text(envelope.get("team_id")),
                _text(envelope.get("minute_rate_limited")),
            )
            return web.Response(status=200, text="ignored: app_rate_limited")
        if kind != "event_callback":
            return web.Response(status=200, text=f"ignored: {_text(kind)}")
        event = envelope.get("event")
        event_id = envelope.get("event_id")
        if not isinstance(event, dict) or not isinstance(event_id, str) or not event_id:
            return web.Response(status=400, text="event_callback without event or event_id")
        if self.types and event.get("type") not in self.types:
            return web.Response(status=200, text="ignored: event type not configured")
        record = self._record(envelope, event, event_id)
        problems = attribute_problems(record)
        if problems:  # e.g. an event_id with a control character: refused, never stored
            return web.Response(
                status=400,
                text="; ".join(f"{name}: {why}" for name, why in sorted(problems.items())),
            )
        if event_id in self.seen:
            self.duplicates.inc()
            earlier = self.seen[event_id]
            if earlier is None:
                return web.Response(status=200, text="duplicate: already stored")
            return await self._answer(earlier)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The answer may have gone (timeout) before the ack: its error is read here, not
        # reported as "never retrieved".
        stored.add_done_callback(_settle)
        self.seen[event_id] = stored
        await self.inbox.put((record, stored))
        return await self._answer(stored)

    async def _answer(self, stored: asyncio.Future[None]) -> web.StreamResponse:
        from aiohttp import web

        try:
            await asyncio.wait_for(asyncio.shield(stored), self.config.ack_timeout)
        except TimeoutError:
            return web.Response(status=503, text="not stored yet: retry")
        except Exception as exc:
            return web.Response(status=503, text=f"not stored: {type(exc).__name__}")
        return web.Response(status=200, text="stored")

    def _record(self, envelope: dict[str, Any], event: dict[str, Any], event_id: str) -> Record:
        data = {key: value for key, value in envelope.items() if key != "token"}
        channel = event.get("channel")
        kind = event.get("type")
        return Record(
            data,
            id=event_id,
            source=f"slack://{_part(envelope.get('team_id'))}/{_part(envelope.get('api_app_id'))}",
            type="com.slack." + (valid_string(kind) if isinstance(kind, str) else "event"),
            subject=channel if isinstance(channel, str) else None,
            time=_event_time(envelope.get("event_time")),
        )

    async def poll(self) -> SourceBatch:
        try:
            first = await asyncio.wait_for(self.inbox.get(), 0.5)
        except TimeoutError:
            return SourceBatch([])
        items = [first]
        while not self.inbox.empty() and len(items) < 500:
            items.append(self.inbox.get_nowait())
        for record, _ in items:
            self.recent.append(record.id)
        position = {PARTITION: {"seen": list(self.recent)}}

        def ack(error: BaseException | None) -> None:
            for record, stored in items:
                if error is None:
                    self.seen[record.id] = None
                    self.seen.move_to_end(record.id)
                else:
                    self.seen.pop(record.id, None)  # Slack's retry may store it after all
                if not stored.done():
                    stored.set_result(None) if error is None else stored.set_exception(error)
            while len(self.seen) > self.config.dedup_window:
                oldest = next(iter(self.seen))
                if self.seen[oldest] is not None:
                    break  # still on its way
                del self.seen[oldest]

        self.received.inc(len(items))
        return SourceBatch([record for record, _ in items], position, ack=ack)

    async def stop(self) -> None:
        inbox = getattr(self, "inbox", None)
        while inbox is not None and not inbox.empty():
            _, stored = inbox.get_nowait()
            if not stored.done():
                stored.set_exception(ConnectionAbortedError("the source stopped"))


def _text(value: Any) -> str:
    """A value of the request for a log line or an answer: printable, short."""
    return valid_string(str(value))[:100]


def _part(value: Any) -> str:
    """A ``source`` URI's path segment: the text percent-encoded (RFC 3986), "" when absent."""
    return quote(value, safe="") if isinstance(value, str) else ""


def _event_time(stamp: Any) -> str | None:
    """``event_time`` (Unix seconds, integral or not) as RFC 3339; None when absent or out of
    the range a timestamp can have (years 1-9999)."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float | Decimal):
        return None
    try:
        when = datetime.fromtimestamp(float(stamp), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat().replace("+00:00", "Z")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
