"""One model call through the ``openai`` SDK's ``AsyncOpenAI``, shared by the ``chatgpt`` source
and the ``llm`` transform: the request (Chat Completions or Responses API, structured output by
JSON Schema), the answer's checks, and the mapping of the SDK's exceptions onto the taxonomy.

The SDK is imported on the first call. It retries ``408``/``409``/``429``/``5xx`` answers and cut
connections itself, ``max_retries`` times, waiting the server's ``Retry-After``
(``retry-after-ms``) when it gives one of at most 60 seconds, else an exponential backoff; what
still fails is mapped by :func:`openai_error_kind`:

=================================================  =====================================
``AuthenticationError`` (401), ``PermissionDenied``  ``ConfigError``: check ``api_key``
(403), ``NotFoundError`` (404: no such model),       and ``base_url`` (the key itself is
405, 407 (a proxy), 410                              never shown)
``RateLimitError``, ``InternalServerError``,         ``RetriableError``
``APIConnectionError``, ``APITimeoutError``, 408,
409, an unreadable answer
(``APIResponseValidationError``, a body that is
not JSON)
``BadRequestError`` (400), ``UnprocessableEntity``   ``DataError``: the prompt is refused
(422), other ``4xx``
=================================================  =====================================

An answer is checked before anyone uses it: finished (not cut off at the token limit,
``finish_reason: length`` or a Responses API ``status: incomplete``, nor withheld by a content
filter); at most ``max_answer_bytes``; with a schema, JSON
(read exactly: :mod:`meshconnect.jsonvalue`) that validates against it. A failed check is an
:class:`InvalidAnswer` (a ``DataError``) that lists every problem.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from meshconnect import ConfigError, DataError, MeshconnectError, RetriableError, jsonvalue

from .config import ModelSettings

__all__ = [
    "Answer",
    "InvalidAnswer",
    "ModelClient",
    "openai_error_kind",
    "plain_json",
    "schema_errors",
]


class InvalidAnswer(DataError):
    """The model's answer failed its checks; ``errors`` lists each problem (``path: reason``)
    and ``text`` holds the answer (cut to 2,000 characters)."""

    def __init__(self, message: str, errors: list[str], text: str) -> None:
        super().__init__(message + ": " + "; ".join(errors[:10]))
        self.errors = errors
        self.text = text[:2000]


@dataclass(slots=True)
class Answer:
    """A checked answer: ``text`` as the model gave it, ``value`` the parsed JSON with a schema
    (else the text), ``model`` the model that answered, ``usage`` its token counts
    (``prompt_tokens``, ``completion_tokens``, ``total_tokens``), ``id`` the completion's id."""

    text: str
    value: Any
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    id: str = ""


def plain_json(value: Any) -> Any:
    """``value`` with the exact numbers of a pipeline file (``Decimal``) as plain JSON numbers,
    for a client library that serialises with the standard ``json`` module."""
    return json.loads(jsonvalue.dumps(value))


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way ``value`` fails ``schema`` (JSON Schema 2020-12), as ``path: message``."""
    from jsonschema import Draft202012Validator

    errors = []
    for error in sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: e.path):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        errors.append(f"{'answer' + path}: {error.message}")
    return errors


#: Statuses that say the endpoint is not the API (a proxy's 407, a 405 or 410 for a path the
#: server does not serve): a config error like 401/403/404, never the record's fault.
_ENDPOINT_STATUSES = frozenset({405, 407, 410})


def openai_error_kind(exc: BaseException) -> type[MeshconnectError] | None:
    """The taxonomy class of an ``openai`` exception (table in the module docstring)."""
    try:
        import openai
    except ImportError:  # pragma: no cover - the connector needs openai
        return None
    if isinstance(
        exc, openai.AuthenticationError | openai.PermissionDeniedError | openai.NotFoundError
    ):
        return ConfigError
    if isinstance(
        exc,
        openai.RateLimitError
        | openai.InternalServerError
        | openai.APIConnectionError
        | openai.APIResponseValidationError,
    ):
        return RetriableError
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in _ENDPOINT_STATUSES:  # not the API: a wrong base_url, a proxy
            return ConfigError
        if exc.status_code >= 500 or exc.status_code in (408, 409):  # what the SDK retries
            return RetriableError
        return DataError
    if isinstance(exc, json.JSONDecodeError):  # a 200 whose body is not JSON (an HTML page)
        return RetriableError
    return None


#: What looks like an API key in a server's error text (OpenAI's "Incorrect API key provided:
#: sk-abc***wxyz", a proxy echoing the whole key): never repeated.
_KEYLIKE = re.compile(r"\b(?:sk|pk|rk|key)[-_][A-Za-z0-9_\-*.]{3,}", re.IGNORECASE)


_UNREADABLE = "an unreadable answer: the server's 200 body is not JSON (a proxy's page?)"


def _describe(exc: BaseException, secret: str | None = None) -> str:
    """A message for an openai exception without the request (headers hold the key) and
    without anything of the key the server may have echoed (``secret``, or key-like text)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{_UNREADABLE} (JSONDecodeError at character {exc.pos})"
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    detail = ""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            detail = str(error.get("code") or error.get("type") or "")
            message = error.get("message")
            if isinstance(message, str):
                detail = f"{detail}: {message[:300]}" if detail else message[:300]
    if secret:
        detail = detail.replace(secret, "***")
    detail = _KEYLIKE.sub("***", detail)
    kind = type(exc).__name__
    return f"{kind}" + (f" (HTTP {status})" if status else "") + (f": {detail}" if detail else "")


class ModelClient:
    """Calls a model as ``settings`` say; ``what`` names the user in messages."""

    def __init__(self, settings: ModelSettings, what: str) -> None:
        self.settings = settings
        self.what = what
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            try:
                from openai import AsyncOpenAI
            except ImportError:
                raise ConfigError(
                    f"{self.what}: needs the openai SDK: pip install 'meshconnect[openai]'"
                ) from None
            key = self.settings.api_key.get_secret_value() or None
            try:
                self._client = AsyncOpenAI(
                    api_key=key,
                    base_url=self.settings.base_url,
                    timeout=self.settings.timeout,
                    max_retries=self.settings.max_retries,
                )
            except Exception as exc:  # no key anywhere: OpenAIError
                raise ConfigError(
                    f"{self.what}: {type(exc).__name__}: set api_key (e.g. ${{env:OPENAI_API_KEY}})"
                ) from None
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ask(
        self,
        system: str | None,
        prompt: str,
        *,
        schema: dict[str, Any] | None = None,
        api: str = "chat",
        schema_name: str = "answer",
    ) -> Answer:
        """Ask the model; the checked :class:`Answer`. Raises the taxonomy's classes: see the
        module docstring."""
        try:
            if api == "responses":
                text, model, usage, ident = await self._responses(
                    system, prompt, schema, schema_name
                )
            else:
                text, model, usage, ident = await self._chat(system, prompt, schema, schema_name)
        except MeshconnectError:
            raise
        except Exception as exc:
            kind = openai_error_kind(exc)
            if kind is None:
                raise
            hint = ""
            if kind is ConfigError:
                status = getattr(exc, "status_code", None)
                hint = (
                    ": check base_url (a proxy or a path that is not the API answered)"
                    if status in _ENDPOINT_STATUSES
                    else ": check api_key and model"
                )
            secret = self.settings.api_key.get_secret_value() or os.environ.get("OPENAI_API_KEY")
            raise kind(f"{self.what}: {_describe(exc, secret)}{hint}") from None
        return self.check(text, model, usage, ident, schema)

    def check(
        self,
        text: str,
        model: str,
        usage: dict[str, int],
        ident: str,
        schema: dict[str, Any] | None,
    ) -> Answer:
        """The answer once checked (size; JSON and schema when one is given)."""
        size = len(text.encode("utf-8"))
        if size > self.settings.max_answer_bytes:
            raise InvalidAnswer(
                f"{self.what}: answer too large",
                [f"answer: {size} bytes, at most {self.settings.max_answer_bytes}"],
                text,
            )
        if schema is None:
            return Answer(text, text, model, usage, ident)
        try:
            value = jsonvalue.loads(text)
        except ValueError as exc:
            raise InvalidAnswer(
                f"{self.what}: the structured output is not JSON", [f"answer: {exc}"], text
            ) from None
        errors = schema_errors(value, schema)
        if errors:
            raise InvalidAnswer(
                f"{self.what}: the structured output fails the schema", errors, text
            )
        return Answer(text, value, model, usage, ident)

    def _check_finished(self, finish: str | None, text: str) -> None:
        """An InvalidAnswer when the model did not finish its answer: cut at the token limit
        (``finish_reason: length``) or withheld by the server's filter (``content_filter``).
        Such text is no answer, even where it happens to be valid JSON."""
        if finish == "length":
            limit = self.settings.max_tokens
            raise InvalidAnswer(
                f"{self.what}: the answer was cut off",
                [
                    "answer: cut off at the token limit (finish_reason length"
                    + (f", max_tokens {limit}" if limit is not None else "")
                    + "): raise max_tokens or ask for a shorter answer"
                ],
                text,
            )
        if finish in ("content_filter", "incomplete"):
            raise InvalidAnswer(
                f"{self.what}: the answer is incomplete",
                [f"answer: withheld or cut off by the server (finish_reason {finish})"],
                text,
            )

    async def _chat(
        self, system: str | None, prompt: str, schema: dict[str, Any] | None, name: str
    ) -> tuple[str, str, dict[str, int], str]:
        messages: list[dict[str, str]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        extra: dict[str, Any] = {}
        if schema is not None:
            schema = plain_json(schema)
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": False},
            }
        if self.settings.max_tokens is not None:
            extra["max_completion_tokens"] = self.settings.max_tokens
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        completion = await self.client().chat.completions.create(
            model=self.settings.model, messages=messages, **extra
        )
        if isinstance(completion, str | bytes):  # the SDK's answer to a body that is not JSON
            raise RetriableError(f"{self.what}: {_UNREADABLE} (not labelled JSON)")
        choices = getattr(completion, "choices", None)
        if not choices:
            raise RetriableError(f"{self.what}: the server answered without choices")
        message = choices[0].message
        if getattr(message, "refusal", None):
            raise InvalidAnswer(f"{self.what}: the model refused", [str(message.refusal)], "")
        text = message.content
        finish = getattr(choices[0], "finish_reason", None)
        self._check_finished(finish, text if isinstance(text, str) else "")
        if not isinstance(text, str):
            why = "answer: null" + (f" (finish_reason {finish})" if finish else "")
            raise InvalidAnswer(f"{self.what}: the answer has no text", [why], "")
        usage = _usage(getattr(completion, "usage", None), "prompt_tokens", "completion_tokens")
        return text, str(completion.model or self.settings.model), usage, str(completion.id or "")

    async def _responses(
        self, system: str | None, prompt: str, schema: dict[str, Any] | None, name: str
    ) -> tuple[str, str, dict[str, int], str]:
        extra: dict[str, Any] = {}
        if system:
            extra["instructions"] = system
        if schema is not None:
            schema = plain_json(schema)
            extra["text"] = {
                "format": {"type": "json_schema", "name": name, "schema": schema, "strict": False}
            }
        if self.settings.max_tokens is not None:
            extra["max_output_tokens"] = self.settings.max_tokens
        if self.settings.temperature is not None:
            extra["temperature"] = self.settings.temperature
        response = await self.client().responses.create(
            model=self.settings.model, input=prompt, **extra
        )
        if isinstance(response, str | bytes):
            raise RetriableError(f"{self.what}: {_UNREADABLE} (not labelled JSON)")
        text = response.output_text
        if getattr(response, "status", None) == "incomplete":
            reason = getattr(getattr(response, "incomplete_details", None), "reason", None)
            self._check_finished(
                {"max_output_tokens": "length", "content_filter": "content_filter"}.get(
                    str(reason), "incomplete"
                ),
                text if isinstance(text, str) else "",
            )
        if not text:
            parts = [
                part
                for item in response.output or []
                if getattr(item, "type", None) == "message"
                for part in getattr(item, "content", None) or []
            ]
            refusals = [str(p.refusal) for p in parts if getattr(p, "type", None) == "refusal"]
            if refusals:
                raise InvalidAnswer(f"{self.what}: the model refused", refusals, "")
            if not parts:  # no message at all (tool calls only, reasoning only)
                raise InvalidAnswer(f"{self.what}: the answer has no text", ["answer: empty"], "")
        if not isinstance(text, str):
            raise InvalidAnswer(f"{self.what}: the answer has no text", ["answer: empty"], "")
        usage = _usage(getattr(response, "usage", None), "input_tokens", "output_tokens")
        return text, str(response.model or self.settings.model), usage, str(response.id or "")


def _usage(usage: Any, prompt: str, completion: str) -> dict[str, int]:
    """Token counts under the Chat Completions names, whichever API answered."""
    if usage is None:
        return {}
    p = getattr(usage, prompt, None) or 0
    c = getattr(usage, completion, None) or 0
    total = getattr(usage, "total_tokens", None) or p + c
    return {"prompt_tokens": int(p), "completion_tokens": int(c), "total_tokens": int(total)}
