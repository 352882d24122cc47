"""The ``slack`` sink: one message per record through slack-sdk's ``AsyncWebClient``.

Messages go out one at a time, in the order of the records. Slack's answers map onto the
taxonomy (:func:`slack_error_kind`):

* ``429`` (``ratelimited``): the sink waits the ``Retry-After`` seconds and sends the same
  message again, so nothing is lost or reordered; each Web API method has its own pause
  (Slack's rate limits are per method: ``chat.postMessage`` and ``chat.update`` are in
  different tiers). slack-sdk's own retry handlers are switched off, the sink does this itself
  so that a message is never sent twice by a hidden retry after an ambiguous connection error.
* a record Slack rejects (``channel_not_found``, ``msg_too_long``, ``invalid_blocks``, ...) is
  a :class:`DataError` naming Slack's error code: that record goes to the dead-letter topic,
  the others are sent.
* bad credentials (``invalid_auth``, ``not_authed``, ``token_revoked``, ...) are a
  :class:`ConfigError`: the connector stops with a message saying to check ``config.token``;
  so are answers that are not the Web API's (``unknown_method``, an HTTP 404 or a proxy's
  401/403/407 without Slack's ``error``): check ``config.base_url``. A ``200`` whose body is
  not Slack's JSON (a proxy's page) is retriable, as a ``5xx`` is.
* ``5xx``, connection errors and timeouts are retriable: the sink sends the message again
  itself for up to ``outage_wait`` (the later ones wait, not charged any attempt). Past it, or
  past ``max_rate_limit_wait`` of 429s, that record alone is handed back (a
  :class:`BatchError`) to the worker's ``errors.retry``, with one attempt (no waiting) per
  later write, and the later records get one attempt each: only records actually sent are
  charged attempts and dead-lettered. Nothing reaches a write in progress when the worker
  stops (``tick(final=True)`` comes after it), so a stop waits at most one
  ``max_rate_limit_wait`` (or ``outage_wait``) for a message.

Delivery is at least once by default: a message sent after the last commit is sent again after
a crash (Slack has no idempotency key for ``chat.postMessage``); writes are of
:attr:`SlackSink.batch_size_hint` (20) records when the file sets no ``batch_size``, so that is
about the most a crash re-posts. With ``exactly_once`` each message carries its record's mesh
position in Slack's message ``metadata`` (``event_type: meshconnect_record``, payload
``{"record": "<topic>:<offset>"}``), the state holds the newest committed ``ts`` per channel, and
the sink reads history (``conversations.history``) before posting what may be there already:

* at ``open``, each channel of the state after its committed ``ts``;
* a channel the state does not name (nothing committed for it yet: a crash during the first
  batch), once, newest first, back to a message of an earlier record of the same topic or at
  most :attr:`SlackSink.history_scan_limit` messages;
* a thread (``thread_key``, ``thread_ts``) not started since ``open``, once, before the first
  reply to it: the replies
  after the channel's committed ``ts`` (``conversations.replies``; the channel's history
  holds top-level messages only);
* after a ``chat.postMessage`` that got no answer (``timeout``, a lost connection: Slack may
  have posted it), before sending that record again (in its thread, for a reply).

Records found there are not posted again. Per-key thread and message ``ts``es (``thread_key``,
``update_key``) are in the state too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from meshconnect import (
    BatchError,
    ConfigError,
    ConnectorContext,
    DataError,
    MeshconnectError,
    Record,
    RetriableError,
    Sink,
    jsonvalue,
)
from meshconnect.secrets import shown_url

from .blocks import block_kit_errors
from .config import SlackSinkConfig, compile_template

__all__ = ["SlackCallError", "SlackSink", "slack_error_kind"]

#: Slack error codes that mean the token cannot be used: the connector stops.
AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
#: Answers that are not the Slack Web API's (``unknown_method``; an HTTP 404, a proxy's 401,
#: 403 or 407 without Slack's ``error``): ``base_url`` points elsewhere, the connector stops.
ENDPOINT_ERRORS = frozenset(
    {"unknown_method", "http_401", "http_403", "http_404", "http_405", "http_407", "http_410"}
)
#: The ``metadata.event_type`` of the messages this sink posts with ``exactly_once``.
METADATA_TYPE = "meshconnect_record"
#: Slack's answers when a key's remembered message is gone: the sink posts a new one.
GONE = frozenset(
    {"message_not_found", "thread_not_found", "cant_update_message", "edit_window_closed"}
)
#: A rate limit: ``429`` ``ratelimited`` (with ``Retry-After``), and chat.postMessage's
#: ``rate_limited`` ("Application has posted too many messages", an ``ok: false`` answer).
RATE_LIMITED = frozenset({"ratelimited", "rate_limited"})
#: Slack error codes worth sending again later.
TRANSIENT_ERRORS = frozenset(
    {
        *RATE_LIMITED,
        "service_unavailable",
        "fatal_error",
        "internal_error",
        "request_timeout",
        "timeout",
        "connection_error",
        # a 200 whose body is not Slack's JSON (a proxy's or captive portal's page), a 408
        "unexpected_response",
        "http_408",
        # the workspace is migrating into an Enterprise Grid org: calls fail for a while
        "team_added_to_org",
    }
)


class SlackCallError(Exception):
    """A Web API call answered ``ok: false`` or an HTTP error: ``code`` is Slack's error code
    (``channel_not_found``) or ``http_<status>``; ``status`` the HTTP status."""

    def __init__(
        self,
        method: str,
        code: str,
        status: int | None,
        detail: str = "",
        unanswered: bool = False,
    ) -> None:
        self.method = method
        self.code = code
        self.status = status
        #: No answer came (a timeout or a lost connection): Slack may have done the call.
        self.unanswered = unanswered
        super().__init__(f"slack {method}: {code}" + (f" ({detail})" if detail else ""))


def slack_error_kind(exc: BaseException) -> type[MeshconnectError] | None:
    """The taxonomy class of a Slack call's failure (see the module docstring)."""
    if isinstance(exc, SlackCallError):
        if exc.code in AUTH_ERRORS or exc.code in ENDPOINT_ERRORS:
            return ConfigError
        if exc.code in TRANSIENT_ERRORS or (exc.status is not None and exc.status >= 500):
            return RetriableError
        return DataError
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - slack-sdk needs aiohttp
        return None
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError):
        return RetriableError
    return None


class SlackSink(Sink[SlackSinkConfig]):
    """Posts (or updates) one message per record; see the module docstring."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): one message per record."""
        return None

    #: Records per write when the file sets no ``batch_size``: Slack allows about one
    #: ``chat.postMessage`` per second per channel, so a batch of 20 is ~20 s of sending and
    #: a crash re-posts at most that many messages (without ``exactly_once``).
    batch_size_hint: ClassVar[int | None] = 20
    #: How many of a channel's newest messages are read back, at most, when the sink state
    #: says nothing about that channel (``exactly_once``: nothing committed for it yet).
    history_scan_limit: ClassVar[int] = 1000

    def __init__(self, config: SlackSinkConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.client: Any = None
        self.channel = compile_template(config.channel, "channel")
        self.text = None if config.text is None else compile_template(config.text, "text")
        self.thread_ts = (
            None if config.thread_ts is None else compile_template(config.thread_ts, "thread_ts")
        )
        key = config.thread_key or config.update_key
        self.key = None if key is None else compile_template(key, "key")
        self.blocks: Any = None
        if isinstance(config.blocks, str):
            self.blocks = compile_template(config.blocks, "blocks")
        elif config.blocks is not None:
            self.blocks = _compile_tree(config.blocks, "blocks")
        #: key -> ts (of the thread's parent, or of the message to update), oldest first.
        self.keys: OrderedDict[str, str] = OrderedDict()
        self.paused_until: dict[str, float] = {}
        self.sent = context.metrics.counter("slack_messages", "Messages posted or updated")
        self.limited = context.metrics.counter(
            "slack_rate_limited", "429 answers waited out (Retry-After)"
        )

    async def open(self, state: Mapping[str, Any] | None) -> None:
        try:
            from slack_sdk.web.async_client import AsyncWebClient
        except ImportError:
            raise ConfigError(
                "the slack sink needs slack-sdk: pip install 'meshconnect[slack]'"
            ) from None
        base_url = (
            self.config.base_url
            if self.config.base_url.endswith("/")
            else self.config.base_url + "/"
        )
        self.client = AsyncWebClient(
            token=self.config.token.get_secret_value(),
            base_url=base_url,
            timeout=max(1, round(self.config.timeout)),
            retry_handlers=[],  # retries are the sink's own (module docstring)
        )
        self.keys = OrderedDict((state or {}).get("keys", {}))
        #: channel -> ts of the newest message posted there (committed at flush).
        self.last_ts: dict[str, str] = dict((state or {}).get("channels", {}))
        #: "topic:offset" -> ts of records already posted after the last commit (exactly_once):
        #: the ts is a key's message (update_key) or thread parent (thread_key) too.
        self.posted: dict[str, str] = {}
        #: Channels whose history was read back since open (exactly_once).
        self.scanned: set[str] = set()
        #: Threads (channel, parent ts) whose replies were read back since open (exactly_once).
        self.scanned_threads: set[tuple[str, str]] = set()
        #: "topic:offset" -> (channel, thread parent ts or None) of records whose
        #: chat.postMessage had no answer (a timeout or a lost connection): Slack may have
        #: posted them (exactly_once).
        self.uncertain: dict[str, tuple[str, str | None]] = {}
        #: "topic:offset" of records handed back after ``outage_wait`` (or a 429 wait past
        #: ``max_rate_limit_wait``): one attempt per later write, no more waiting here.
        self.exhausted: set[str] = set()
        if self.config.exactly_once:
            for channel, ts in self.last_ts.items():
                self.posted.update(await self._posted_since(channel, ts))
                self.scanned.add(channel)

    async def _posted_since(
        self,
        channel: str,
        oldest: str | None,
        before: Record | None = None,
        thread: str | None = None,
    ) -> dict[str, str]:
        """The records this sink posted to ``channel`` after ``oldest`` (its history, newest
        first), "topic:offset" -> the message's ``ts``. With no ``oldest`` the reading stops
        at a message of an earlier record of ``before``'s topic (records are posted in order),
        or after :attr:`history_scan_limit` messages. With ``thread`` (a parent's ``ts``),
        the replies in that thread (``conversations.replies``: the channel's history holds
        only top-level messages), oldest first."""
        found: dict[str, str] = {}
        cursor = None
        seen = 0
        method = "conversations.history" if thread is None else "conversations.replies"
        if thread is not None:
            before = None  # oldest first: an earlier record's message says nothing
        while True:
            args: dict[str, Any] = {
                "channel": channel,
                "include_all_metadata": "true",
                "limit": 200,
            }
            if thread is not None:
                args["ts"] = thread
            if oldest is not None:
                args["oldest"] = oldest
                args["inclusive"] = "false"
            if cursor:
                args["cursor"] = cursor
            response = await self._call(method, args, http_verb="GET")
            older = False
            for message in response.get("messages") or []:
                seen += 1
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") != METADATA_TYPE:
                    continue
                mark = (metadata.get("event_payload") or {}).get("record")
                if not isinstance(mark, str):
                    continue
                found[mark] = str(message.get("ts") or "")
                if before is not None and oldest is None:
                    topic, _, offset = mark.rpartition(":")
                    if (
                        topic == before.topic
                        and offset.isdigit()
                        and before.offset is not None
                        and int(offset) < before.offset
                    ):
                        older = True
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if older or not response.get("has_more") or not cursor:
                return found
            if oldest is None and seen >= self.history_scan_limit:
                return found

    async def _already_posted(
        self, record: Record, mark: str, channel: str, thread: str | None
    ) -> str | None:
        """exactly_once: the ``ts`` of ``record``'s message if Slack holds it already (posted
        before a crash that came before any commit naming the channel, or by a call that
        timed out), else None. Reads a channel's history once per open, the replies of a
        thread (``thread``: its parent's ``ts``) once per open before the first reply to it,
        and either again for each record whose post had no answer."""
        if mark in self.posted:
            return self.posted.pop(mark)
        if channel not in self.scanned and channel not in self.last_ts:
            found = await self._posted_since(channel, None, record)
            self.scanned.add(channel)  # only once read: a failed look is made again
            self.posted.update(found)
            if mark in self.posted:
                return self.posted.pop(mark)
        if thread is not None and (channel, thread) not in self.scanned_threads:
            # replies are not in the channel's history: read the thread (after the channel's
            # last committed ts, which replies move too)
            found = await self._posted_since(channel, self.last_ts.get(channel), thread=thread)
            self.scanned_threads.add((channel, thread))
            self.posted.update(found)
            if mark in self.posted:
                return self.posted.pop(mark)
        place = self.uncertain.get(mark)
        if place is not None:
            where, in_thread = place
            found = await self._posted_since(
                where, self.last_ts.get(where), record, thread=in_thread
            )
            del self.uncertain[mark]  # only once looked at: a failed look is made again
            if mark in found:
                return found[mark]
        return None

    async def write(self, records: Sequence[Record]) -> None:
        """Send ``records`` in order. A retriable failure (5xx, timeout, cut connection) is
        retried here, with backoff, up to ``outage_wait``; the later records wait uncharged.
        A record still failing is handed back alone (``BatchError``) and the later ones get
        one attempt each, so that only records actually sent count attempts against the
        sink's ``errors.retry``; a record handed back once gets one attempt per later write.
        Data errors: that record only. Config errors: that record and every later one."""
        failed = BatchError()
        outage = False  # a record of this write failed for good: one attempt for the others
        for i, record in enumerate(records):
            mark = f"{record.topic}:{record.offset}"
            try:
                method, args, key = self._message(record)
            except DataError as exc:
                failed.failed(i, exc)
                continue
            if self.config.exactly_once:
                args["metadata"] = {"event_type": METADATA_TYPE, "event_payload": {"record": mark}}
            once = outage or mark in self.exhausted
            started = time.monotonic()
            delay = 0.1
            while True:
                try:
                    await self._send(record, mark, method, args, key, once)
                    self.exhausted.discard(mark)
                    break
                except Exception as exc:
                    kind = self.classify_error(exc)
                    waited = time.monotonic() - started
                    if (
                        kind is RetriableError
                        and not once
                        and not (isinstance(exc, SlackCallError) and exc.code in RATE_LIMITED)
                        and waited + delay <= self.config.outage_wait
                    ):
                        self.context.logger.warning(
                            "slack: %s; sending record %s again in %.1fs (outage_wait %.0fs)",
                            exc,
                            mark,
                            delay,
                            self.config.outage_wait,
                        )
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    if kind is DataError:
                        failed.failed(i, exc)
                    elif kind is RetriableError:
                        failed.failed(i, exc)
                        self.exhausted.add(mark)
                        outage = True
                    else:  # the connector must stop: hand back this record and the later ones
                        for j in range(i, len(records)):
                            failed.failed(j, exc)
                        raise failed from None
                    break
        if failed.failures:
            raise failed

    async def _send(
        self,
        record: Record,
        mark: str,
        method: str,
        args: dict[str, Any],
        key: str | None,
        once: bool,
    ) -> None:
        """One attempt at ``record``'s message (after a look at the channel's history where
        exactly_once needs one); SlackCallError and the like when it fails."""
        if self.config.exactly_once and method == "chat.postMessage":
            # posted before a crash, or by a call whose answer was lost
            ts = await self._already_posted(record, mark, args["channel"], args.get("thread_ts"))
            if ts is not None:
                if ts:
                    self.last_ts[args["channel"]] = ts
                    if key is not None:
                        self._remember(key, ts)
                return
        max_wait = 0.0 if once else self.config.max_rate_limit_wait
        try:
            try:
                response = await self._call(method, args, max_wait=max_wait)
            except SlackCallError as exc:
                if key is None or key not in self.keys or exc.code not in GONE:
                    raise
                # The key's message (or thread parent) was deleted: start afresh.
                del self.keys[key]
                method = "chat.postMessage"
                args.pop("ts", None)
                args.pop("thread_ts", None)
                response = await self._call(method, args, max_wait=max_wait)
        except SlackCallError as exc:
            if self.config.exactly_once and method == "chat.postMessage" and exc.unanswered:
                self.uncertain[mark] = (args["channel"], args.get("thread_ts"))
            raise
        ts = response.get("ts")
        self.sent.inc()
        if isinstance(ts, str) and ts:
            if key is not None:
                self._remember(key, ts)
            channel = response.get("channel")
            if isinstance(channel, str) and method == "chat.postMessage":
                self.last_ts[channel] = ts
                # a thread started since open has no replies this sink does not know of
                self.scanned_threads.add((channel, ts))

    async def flush(self) -> dict[str, Any] | None:
        state: dict[str, Any] = {}
        if self.key is not None:
            state["keys"] = dict(self.keys)
        if self.config.exactly_once:
            state["channels"] = dict(self.last_ts)
        return state or None

    async def close(self) -> None:
        self.client = None  # AsyncWebClient opens a session per call: nothing to close

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return slack_error_kind(exc)

    # -- one message ------------------------------------------------------------------------

    def _message(self, record: Record) -> tuple[str, dict[str, Any], str | None]:
        """The Web API method and its arguments for ``record``; DataError when a template
        fails or the blocks are not valid Block Kit."""
        channel = self.channel.render(record)
        if not channel:
            raise DataError("slack: channel_not_found: the channel template rendered empty")
        args: dict[str, Any] = {"channel": channel}
        if self.text is not None:
            args["text"] = self.text.render(record)
        if self.blocks is not None:
            if isinstance(self.blocks, _Tree):
                blocks = self.blocks.render(record)
            else:
                rendered = self.blocks.render(record)
                try:
                    blocks = jsonvalue.loads(rendered)
                except ValueError as exc:
                    raise DataError(
                        "slack: invalid_blocks: the blocks template did not render JSON "
                        f"({_json_problem(exc, rendered)}); a record value with a quote, "
                        "backslash or newline breaks a hand-written JSON template: give blocks "
                        "as a YAML list instead (its strings are rendered one by one)"
                    ) from None
            problems = block_kit_errors(blocks)
            if problems:
                raise DataError("slack: invalid_blocks: " + "; ".join(problems[:10]))
            # Exact numbers (Decimal) as plain JSON numbers: slack-sdk uses the json module.
            args["blocks"] = json.loads(jsonvalue.dumps(blocks))
        if not args.get("text") and "blocks" not in args:
            raise DataError("slack: no_text: the text template rendered empty")
        key = None if self.key is None else self.key.render(record)
        method = "chat.postMessage"
        if key:
            known = self.keys.get(key)
            if known is not None:
                if self.config.update_key is not None:
                    method = "chat.update"
                    args["ts"] = known
                else:
                    args["thread_ts"] = known
        elif self.thread_ts is not None:
            parent = self.thread_ts.render(record)
            if parent:
                args["thread_ts"] = parent
        return method, args, key or None

    def _remember(self, key: str, ts: str) -> None:
        """Keep the first message's ``ts`` of ``key`` (a thread's parent, or the message that
        later ones update: ``chat.update`` keeps the ``ts``)."""
        self.keys.setdefault(key, ts)
        self.keys.move_to_end(key)
        while len(self.keys) > self.config.remember:
            self.keys.popitem(last=False)

    async def _call(
        self,
        method: str,
        args: dict[str, Any],
        http_verb: str = "POST",
        max_wait: float | None = None,
    ) -> dict[str, Any]:
        """Make one call, waiting out 429s up to ``max_wait`` seconds in all (default
        ``max_rate_limit_wait``); the response's data. SlackCallError otherwise."""
        limit = self.config.max_rate_limit_wait if max_wait is None else max_wait
        import aiohttp
        from slack_sdk.errors import SlackApiError

        waited = 0.0
        while True:
            pause = self.paused_until.get(method, 0.0) - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                if http_verb == "GET":
                    response = await self.client.api_call(method, http_verb="GET", params=args)
                else:
                    response = await self.client.api_call(method, json=args)
            except TimeoutError:
                raise SlackCallError(
                    method,
                    "timeout",
                    None,
                    f"no answer within {self.client.timeout}s (config.timeout)",
                    unanswered=True,
                ) from None
            except aiohttp.ClientError as exc:
                raise SlackCallError(
                    method,
                    "connection_error",
                    None,
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    unanswered=True,
                ) from None
            except SlackApiError as exc:
                status, code, retry_after = _failure(exc)
                if status == 429 or code in RATE_LIMITED:
                    if waited + retry_after > limit:
                        raise SlackCallError(
                            method, "ratelimited", status, f"waited {waited:.0f}s already"
                        ) from None
                    waited += retry_after
                    self.limited.inc()
                    self.paused_until[method] = time.monotonic() + retry_after
                    continue
                detail = f"channel {args['channel']!r}"
                if code in AUTH_ERRORS:
                    needed = getattr(exc.response, "data", None)
                    needed = needed.get("needed") if isinstance(needed, dict) else None
                    detail = "check config.token: a bot token (xoxb-) with the chat:write scope"
                    if needed:
                        detail += f"; the call needs {needed}"
                elif code in ENDPOINT_ERRORS:
                    detail = (
                        "check config.base_url: the answer is not the Slack Web API's "
                        f"(calling {shown_url(self.client.base_url)}{method}; Slack's is "
                        "https://slack.com/api/)"
                    )
                elif code == "unexpected_response":
                    detail = "the answer is not Slack's JSON (a proxy's page?)"
                raise SlackCallError(method, code, status, detail) from None
            data = response.data
            return data if isinstance(data, dict) else {}


def _json_problem(exc: ValueError, text: str) -> str:
    """What is wrong with ``text`` as JSON, in words (the parser's "Input data was truncated"
    says little)."""
    reason = str(exc)
    if "truncated" in reason.lower():
        return f"it ends early, after {len(text)} characters: an unclosed [, {{ or string"
    return reason


def _failure(exc: Any) -> tuple[int | None, str, float]:
    """(HTTP status, Slack error code, Retry-After seconds) of a SlackApiError."""
    response = exc.response
    status = getattr(response, "status_code", None) or getattr(response, "status", None)
    data = getattr(response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code:
        code = f"http_{status}" if status and status != 200 else "unexpected_response"
    headers = getattr(response, "headers", None) or {}
    try:
        retry_after = float(headers.get("Retry-After", 1))
    except (TypeError, ValueError):
        retry_after = 1.0
    return status, code, max(0.0, retry_after)


class _Tree:
    """A ``blocks`` structure whose strings are templates; ``render(record)`` gives the
    structure with each string rendered."""

    def __init__(self, build: Any) -> None:
        self.build = build

    def render(self, record: Record) -> Any:
        return self.build(record)


def _compile_tree(value: Any, path: str) -> _Tree:
    if isinstance(value, str):
        template = compile_template(value, path)
        if template.is_literal:
            literal = template.literal
            return _Tree(lambda record: literal)
        return _Tree(template.render)
    if isinstance(value, dict):
        items = [(key, _compile_tree(item, f"{path}.{key}")) for key, item in value.items()]
        return _Tree(lambda record: {key: tree.render(record) for key, tree in items})
    if isinstance(value, list):
        trees = [_compile_tree(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return _Tree(lambda record: [tree.render(record) for tree in trees])
    return _Tree(lambda record: value)
