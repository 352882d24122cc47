"""The ``chatgpt`` source: text POSTed to an endpoint on the worker's shared HTTP listener is
sent to a model, and the result becomes a CloudEvent.

Request: ``POST {path}`` with the text as the body (``text/plain``), or a JSON object
``{"prompt": "...", "system": "..."}`` (``system`` optional, overriding the configured one;
``null``: none; other keys are a ``400``).

* ``mode: chat``: the event's ``data`` is ``{"prompt", "system", "answer", "model", "usage":
  {"prompt_tokens", "completion_tokens", "total_tokens"}}``.

Every event gets a new ``id`` (a UUID); the completion's id is the ``completionid`` extension.
OpenAI-compatible servers do not all give unique ids (Ollama's are ``chatcmpl-`` and a number
below 1,000), and two events with one ``source`` and ``id`` are one event to the consumers that
drop duplicates.
* ``mode: parse``: the model is asked for structured output (``response_format`` with a JSON
  Schema). With ``schema`` set, its answer is the event's ``data`` and must validate against
  that schema; without, it is a whole event ``{"type", "subject", "data"}`` checked against
  :data:`EVENT_SCHEMA`. Output that fails the checks (not JSON, a schema violation, too large)
  is answered ``422`` with ``{"errors": [...], "answer": ...}`` and nothing is stored.

Answers: ``200`` with the stored event (structured JSON) once it is durably in the mesh (the
batch's ack); ``400`` for an empty or unreadable prompt, ``413`` past ``max_body_bytes``,
``422`` as above, ``503`` when the model is unavailable after the SDK's retries or the append
did not happen within ``ack_timeout``, ``502`` when the model refused the request. A rejected
API key (401/403) or an unknown model (404) also stops the connector with a ConfigError at its
next poll, saying to check ``api_key`` and ``model``. Token usage goes to the worker's metrics
(``openai_prompt_tokens``, ``openai_completion_tokens``, ``openai_requests``).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from meshconnect import (
    ConfigError,
    ConnectorContext,
    DataError,
    Position,
    Record,
    RetriableError,
    Source,
    SourceBatch,
    jsonvalue,
)
from meshconnect.eventrules import attribute_problems
from meshconnect.httpbody import read_body
from meshconnect.positioncheck import no_position

from .client import InvalidAnswer, ModelClient
from .config import ChatGPTSourceConfig

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["EVENT_SCHEMA", "ChatGPTSource"]

#: What the model fills in ``parse`` mode without a ``schema``.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {
            "type": "string",
            "minLength": 1,
            "description": "Reverse-DNS event type, e.g. com.example.order.placed",
        },
        "subject": {"type": ["string", "null"], "description": "What the event is about"},
        "data": {"type": "object", "description": "The event's facts as an object"},
    },
    "required": ["type", "subject", "data"],
    "additionalProperties": False,
}
PARSE_SYSTEM = (
    "Extract one event from the user's text. Answer only with JSON matching the schema; "
    "use only facts stated in the text."
)


class ChatGPTSource(Source[ChatGPTSourceConfig]):
    """See the module docstring."""

    empty_position = "receives the prompts POSTed from the start of the run"

    def __init__(self, config: ChatGPTSourceConfig, context: ConnectorContext) -> None:
        super().__init__(config, context)
        self.model = ModelClient(config, f"chatgpt source {context.name}")
        metrics = context.metrics
        self.requests = metrics.counter("openai_requests", "Model calls answered")
        self.prompt_tokens = metrics.counter("openai_prompt_tokens", "Prompt tokens used")
        self.completion_tokens = metrics.counter(
            "openai_completion_tokens", "Completion tokens used"
        )
        self.invalid = metrics.counter("openai_invalid_answers", "Answers refused (422)")
        self.fatal: ConfigError | None = None
        #: Bounds the model calls at once (``concurrency``); made on the loop, in ``start``.
        self._calls: asyncio.Semaphore | None = None

    def position_problem(self, partition: str, position: Position) -> str | None:
        return no_position("it receives the prompts POSTed while it runs")

    async def start(self, positions: Mapping[str, Position]) -> None:
        self.inbox: asyncio.Queue[tuple[Record, asyncio.Future[None]]] = asyncio.Queue()
        self._calls = asyncio.Semaphore(self.config.concurrency)
        self.model.client()  # a missing key fails the start, not the first request
        await self.context.http.add_route(
            self.config.listen, "POST", self.config.path, self.on_request
        )

    async def on_request(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        if not self._authorized(request.headers.get("Authorization", "")):
            return web.Response(status=401, text="missing or invalid bearer token")
        body = await read_body(request, self.config.max_body_bytes)
        if body is None:
            return web.Response(status=413, text="request too large")
        try:
            system, prompt = self._prompt(request.content_type, body)
        except DataError as exc:
            return web.Response(status=400, text=str(exc))
        try:
            record = await self._ask(system, prompt)
        except InvalidAnswer as exc:
            self.invalid.inc()
            return _json(422, {"errors": exc.errors, "answer": exc.text})
        except ConfigError as exc:
            self.fatal = exc
            self.context.logger.error("%s", exc)
            return web.Response(status=502, text=str(exc))
        except RetriableError as exc:
            return web.Response(status=503, text=str(exc), headers={"Retry-After": "5"})
        except DataError as exc:
            return web.Response(status=502, text=str(exc))
        except Exception as exc:  # unforeseen: still the documented 503, never a traceback
            self.context.logger.warning(
                "chatgpt: the model call failed: %s: %s", type(exc).__name__, exc
            )
            return web.Response(
                status=503,
                text=f"model call failed: {type(exc).__name__}",
                headers={"Retry-After": "5"},
            )
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # The answer may have gone (timeout) before the ack: its error is read here, not
        # reported as "never retrieved".
        stored.add_done_callback(_settle)
        await self.inbox.put((record, stored))
        try:
            await asyncio.wait_for(asyncio.shield(stored), self.config.ack_timeout)
        except TimeoutError:
            return web.Response(status=503, text="not stored in time")
        except Exception as exc:
            return web.Response(status=503, text=f"not stored: {type(exc).__name__}")
        return _json(200, record.to_dict())

    def _authorized(self, header: str) -> bool:
        tokens = self.config.bearer_tokens
        if not tokens:
            return True
        scheme, _, given = header.partition(" ")
        presented = given.strip().encode("utf-8", "surrogateescape")
        ok = False
        for token in tokens:  # compare with all: the time does not tell which matched
            ok |= hmac.compare_digest(token.get_secret_value().encode(), presented)
        return ok and scheme.lower() == "bearer" and bool(presented)

    def _prompt(self, content_type: str, body: bytes) -> tuple[str | None, str]:
        system = self.config.system
        if content_type == "application/json":
            try:
                value = jsonvalue.loads(body)
            except ValueError as exc:
                raise DataError(f"the body is not JSON: {exc}") from None
            if not isinstance(value, dict) or not isinstance(value.get("prompt"), str):
                raise DataError('a JSON body is an object with a "prompt" string')
            unknown = sorted(set(value) - {"prompt", "system"})
            if unknown:  # a misspelt "system" would be a silent fallback to the configured one
                raise DataError(
                    f"unknown key(s) {', '.join(map(repr, unknown))}: a JSON body holds "
                    '"prompt" and, optionally, "system"'
                )
            if "system" in value:
                if value["system"] is not None and not isinstance(value["system"], str):
                    raise DataError('"system" is a string (or null: no system message)')
                system = value["system"]
            prompt = value["prompt"]
        else:
            try:
                prompt = body.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError("the body is not UTF-8 text") from None
        if not prompt.strip():
            raise DataError("the prompt is empty")
        if self.config.mode == "parse" and system is None:
            system = PARSE_SYSTEM
        return system, prompt

    async def _ask(self, system: str | None, prompt: str) -> Record:
        config = self.config
        schema = None
        if config.mode == "parse":
            schema = config.schema_ if config.schema_ is not None else EVENT_SCHEMA
        assert self._calls is not None
        async with self._calls:
            answer = await self.model.ask(system, prompt, schema=schema, schema_name="event")
        self.requests.inc()
        self.prompt_tokens.inc(answer.usage.get("prompt_tokens", 0))
        self.completion_tokens.inc(answer.usage.get("completion_tokens", 0))
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        common: dict[str, Any] = {"source": config.source, "time": now, "extensions": {}}
        if answer.id and _extension_problem(answer.id) is None:
            common["extensions"]["completionid"] = answer.id
        if config.mode == "chat":
            data = {
                "prompt": prompt,
                "system": system,
                "answer": answer.text,
                "model": answer.model,
                "usage": answer.usage,
            }
            return Record(data, type=config.type or "com.openai.chat.completion", **common)
        value = answer.value
        if config.schema_ is not None:
            return Record(value, type=config.type or "com.openai.parsed", **common)
        record = Record(
            value["data"],
            type=config.type or value["type"],
            subject=value["subject"] or None,
            **common,
        )
        problems = attribute_problems(record)
        if problems:  # the model's type or subject: control characters…
            errors = [f"answer.{name}: {problem}" for name, problem in sorted(problems.items())]
            raise InvalidAnswer("the event is not a valid CloudEvent", errors, answer.text)
        return record

    async def poll(self) -> SourceBatch:
        if self.fatal is not None:
            raise self.fatal
        try:
            first = await asyncio.wait_for(self.inbox.get(), 0.5)
        except TimeoutError:
            return SourceBatch([])
        items = [first]
        while not self.inbox.empty() and len(items) < 100:
            items.append(self.inbox.get_nowait())

        def ack(error: BaseException | None) -> None:
            for _, stored in items:
                if not stored.done():
                    stored.set_result(None) if error is None else stored.set_exception(error)

        return SourceBatch([record for record, _ in items], ack=ack)

    async def stop(self) -> None:
        inbox = getattr(self, "inbox", None)
        while inbox is not None and not inbox.empty():
            _, stored = inbox.get_nowait()
            if not stored.done():
                stored.set_exception(ConnectionAbortedError("the source stopped"))
        await self.model.close()


def _json(status: int, value: Any) -> web.Response:
    from aiohttp import web

    return web.Response(status=status, body=jsonvalue.dumps(value), content_type="application/json")


def _settle(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _extension_problem(value: str) -> str | None:
    """What keeps ``value`` from being an extension attribute's value (None: nothing)."""
    return attribute_problems(Record(None, extensions={"completionid": value})).get("completionid")
