"""Config models of the ``chatgpt`` source and the ``llm`` transform (the docs are generated from
these fields)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from meshconnect import ByteSize, ConnectorConfig, Duration
from meshconnect.httplisten import check_http_url, check_listen, check_path, check_tokens

__all__ = ["ChatGPTSourceConfig", "LlmOptions", "ModelSettings"]


def _check_schema(value: Any) -> Any:
    if value is None:
        return value
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(value, dict):
        raise ValueError("a JSON Schema is an object (a mapping)")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return value


class ModelSettings(BaseModel):
    """The keys every model user shares: which model, where, with which key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="gpt-4o-mini", description="The model name.")
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="The API key, e.g. `${env:OPENAI_API_KEY}`. Never logged; empty: the "
        "`OPENAI_API_KEY` environment variable.",
    )
    base_url: str | None = Field(
        default=None,
        description="Base URL of any OpenAI-compatible server (`http://localhost:11434/v1`); "
        "default: OpenAI's. No user info (`user:password@`): `api_key` authenticates.",
    )
    timeout: Duration = Field(default=60.0, gt=0, description="Timeout of one model call.")
    max_retries: int = Field(
        default=5,
        ge=0,
        description="Retries of a call answered 429, 408, 409 or 5xx or cut off, after the "
        "server's `Retry-After` (else exponential backoff), by the openai SDK.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Upper bound of tokens in an answer (none: the model's). An answer cut "
        "off there (`finish_reason: length`) is refused as unfinished, never stored.",
    )
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature (none: the model's)."
    )
    max_answer_bytes: ByteSize = Field(
        default=1_048_576,
        gt=0,
        description="A longer answer is refused (a data error), never stored.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        return check_http_url(value)


class ChatGPTSourceConfig(ConnectorConfig, ModelSettings):
    """Prompts POSTed to an HTTP endpoint on the worker's shared listener become CloudEvents."""

    listen: str = Field(
        default="0.0.0.0:8080", description="`HOST:PORT` of the shared HTTP listener."
    )
    path: str = Field(
        default="/chatgpt",
        description=(
            "The endpoint's path. Letters, digits and "
            "`-._~!$&'()*+,;=:@/` (no query, `%`-escapes or braces)."
        ),
    )
    mode: Literal["chat", "parse"] = Field(
        default="chat",
        description="`chat`: the event's data holds the prompt, the answer, the model and the "
        "token usage. `parse`: the model turns the text into an event by structured output "
        "(`schema`), validated before it is stored; invalid output is answered `422`.",
    )
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="`parse` mode: the JSON Schema of the event's `data` (the model's answer "
        "must match it). Without it, the model fills a whole event: `type`, `subject` and an "
        "object `data`.",
    )
    system: str | None = Field(
        default=None,
        description="The system message (default for `parse`: an instruction to extract the "
        "event from the text).",
    )
    type: str | None = Field(
        default=None,
        description="The CloudEvent type (default: `com.openai.chat.completion` in `chat`, "
        "`com.openai.parsed` in `parse` with a `schema`).",
    )
    source: str = Field(
        default="chatgpt", description="The CloudEvent source attribute of the events."
    )
    bearer_tokens: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted `Authorization: Bearer` tokens (several, for rotation), e.g. "
        "`['${env:ASK_TOKEN}']`; a request without one of them is answered `401` and asks the "
        "model nothing. Empty: no check (listen on a private address then: every request "
        "is a model call on `api_key`).",
    )
    max_body_bytes: ByteSize = Field(
        default=65_536, gt=0, description="Larger requests are refused with `413`."
    )
    ack_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="Longest wait for the durable append before answering `503`.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Model calls at once, whatever the number of requests (as the `llm` "
        "transform's `concurrency`): a request beyond them waits for one to finish. Without "
        "a bound, a burst of requests (up to the listener's 512 connections) was as many "
        "parallel calls on `api_key`: the provider's rate limit, and its bill.",
    )

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        return _check_schema(value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_listen(value)

    @field_validator("bearer_tokens")
    @classmethod
    def _tokens(cls, value: list[SecretStr]) -> list[SecretStr]:
        check_tokens(value)
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)


class LlmOptions(ModelSettings):
    """The options of the ``llm`` transform (besides ``type`` and ``when``)."""

    prompt: str = Field(description="The user message, a template over the record.")
    system: str | None = Field(default=None, description="The system message, a template.")
    field: str = Field(
        description="Where the answer goes: a `data.` path (`data.summary`); objects on the "
        "way are created."
    )
    api: Literal["chat", "responses"] = Field(
        default="chat",
        description="`chat`: the Chat Completions API (`/chat/completions`), which every "
        "OpenAI-compatible server has; `responses`: the Responses API (`/responses`).",
    )
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="A JSON Schema: the model is asked for structured output of that shape "
        "and the answer, validated against it, is written as a JSON value. Without it the "
        "answer's text is written.",
    )
    concurrency: int = Field(
        default=8, ge=1, le=256, description="Records of a batch sent to the model at once."
    )
    cache: str | None = Field(
        default=None,
        description="A directory (relative to the pipeline file) keeping each answer by what "
        "decides it (model, API, system, prompt, schema, and `base_url`, `temperature` and "
        "`max_tokens` when set): a replay, a re-run or a test asks the model nothing twice. "
        "Off unless set.",
    )

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: Any) -> Any:
        return _check_schema(value)

    @field_validator("field")
    @classmethod
    def _data_path(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) < 2 or parts[0] != "data" or not all(parts[1:]):
            raise ValueError(f"{value!r}: give a path under data, such as data.summary")
        return value
