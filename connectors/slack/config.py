"""Config models of the ``slack`` sink and source (the docs are generated from these fields).

Templates (``channel``, ``text``, ``thread_ts``, ``thread_key``, ``update_key`` and the strings
of ``blocks``) are meshconnect templates (docs/expressions.md): ``{data.table}``,
``{time:%H:%M}``; they are compiled when the config is validated, so a bad one is reported at
its line.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from meshconnect import ByteSize, ConnectorConfig, Duration
from meshconnect.expr import Compiler, ExpressionError
from meshconnect.httplisten import check_http_url, check_listen, check_path, check_secret

__all__ = ["SlackSinkConfig", "SlackSourceConfig", "compile_template", "slack_escape"]


def slack_escape(value: Any) -> Any:
    """``value`` as text Slack shows as written: ``&``, ``<`` and ``>`` become ``&amp;``,
    ``&lt;`` and ``&gt;`` (Slack's documented escaping,
    https://api.slack.com/reference/surfaces/formatting#escaping), so ``<!channel>``,
    ``<@U…>`` or ``<http://x|y>`` in a record are not mentions or links. ``null`` stays
    ``null``; numbers and booleans are returned as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if not isinstance(value, str):
        from meshconnect import jsonvalue

        value = jsonvalue.dumps(value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#: Slack templates know one function more than the others: ``slack_escape``.
_COMPILER = Compiler({"slack_escape": slack_escape})


def compile_template(text: str, field: str) -> Any:
    """The compiled template, or a ValueError with the expression error's reason."""
    try:
        return _COMPILER.template(text, field=field)
    except ExpressionError as exc:
        raise ValueError(str(exc)) from None


def _strings(value: Any, path: str) -> None:
    """Compile every string inside a ``blocks`` structure (each one is a template)."""
    if isinstance(value, str):
        compile_template(value, path)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _strings(item, f"{path}[{i}]")


class SlackSinkConfig(ConnectorConfig):
    """Post one Slack message per record (``chat.postMessage``), or update a key's previous
    message (``chat.update``)."""

    token: SecretStr = Field(
        description="Bot token (`xoxb-…`) with the `chat:write` scope, e.g. "
        "`${env:SLACK_BOT_TOKEN}`. Never logged."
    )
    channel: str = Field(
        description="Channel ID (`C0123…`) or name, as a template: fixed (`C0123ABCD`) or "
        "from the record (`{data.channel}`)."
    )
    text: str | None = Field(
        default=None,
        description="Message text (Slack mrkdwn) as a template. With `blocks` it is the "
        "notification fallback. At least one of `text` and `blocks` is required. Record "
        "values are mrkdwn too (`<!channel>` notifies everyone): wrap untrusted ones in "
        "`slack_escape(...)`, `{slack_escape(data.msg)}`.",
    )
    blocks: str | list[dict[str, Any]] | None = Field(
        default=None,
        description="Block Kit blocks: a YAML list of blocks whose strings are templates "
        "(rendered one by one, so record values need no escaping), or one template whose "
        "rendering is a JSON array. The result is checked against Block Kit's rules before "
        "sending; a record whose blocks are invalid goes to the dead-letter topic.",
    )
    thread_ts: str | None = Field(
        default=None,
        description="Reply in this thread: a template giving the parent message's `ts` "
        "(`{data.slack_ts}`). An empty rendering posts to the channel.",
    )
    thread_key: str | None = Field(
        default=None,
        description="Per-key threads: a template (`{partitionkey}`); the first message of a "
        "key starts a thread, the later ones reply in it. The parent `ts` of each key is kept "
        "in the sink state (committed with the offsets).",
    )
    update_key: str | None = Field(
        default=None,
        description="Update instead of post: a template (`{data.order_id}`); the first "
        "message of a key is posted, the later ones replace it with `chat.update`. The `ts` "
        "of each key is kept in the sink state.",
    )
    remember: int = Field(
        default=10_000,
        ge=1,
        description="How many keys of `thread_key`/`update_key` the sink state keeps "
        "(the least recently used are forgotten first).",
    )
    exactly_once: bool = Field(
        default=False,
        description="Tag each message with its mesh position (Slack message `metadata`) and "
        "read back what may be posted already (`conversations.history`, and "
        "`conversations.replies` for replies in threads, which need the "
        "`channels:history` / `groups:history` scope): after a crash, what came after the "
        "last commit (or, for a channel nothing was committed for, its newest messages), "
        "and in each thread before the first reply to it; after a post that got no answer, "
        "that record. So no message is posted twice. "
        "Off: at least once.",
    )
    base_url: str = Field(
        default="https://slack.com/api/",
        description="The Web API's base URL (a proxy, or a local server in tests); no user "
        "info (`user:password@`): the token authenticates.",
    )
    timeout: Duration = Field(
        default=30.0, gt=0, description="Timeout of one Web API call (`30s`)."
    )
    max_rate_limit_wait: Duration = Field(
        default=600.0,
        gt=0,
        description="Longest total wait on `429` answers for one message. Within it the "
        "sink waits each `Retry-After` and sends the message again, keeping the order; past "
        "it the message alone goes to the sink's `errors.retry` (one attempt per retry, no "
        "more waiting) and the later ones are sent. A stop waits for this at most once.",
    )

    outage_wait: Duration = Field(
        default=60.0,
        ge=0,
        description="Longest time one message is sent again inside the sink after a `5xx`, "
        "a timeout or a cut connection (backoff from 0.1 s, doubling to 5 s), the later "
        "messages waiting behind it without being charged an attempt. Past it the message "
        "alone is handed to the sink's `errors.retry` (one attempt per retry) and the later "
        "ones are sent, one attempt each.",
    )

    @field_validator("channel", "text", "thread_ts", "thread_key", "update_key")
    @classmethod
    def _template(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            compile_template(value, info.field_name)
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty: give a channel ID (C0123…) or a template")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return check_secret(value)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        check_http_url(value)
        return value

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, value: Any) -> Any:
        if value is not None:
            _strings(value, "blocks")
        return value

    @model_validator(mode="after")
    def _something_to_send(self) -> SlackSinkConfig:
        if not self.text and not self.blocks:
            raise ValueError("set text, blocks or both: the message would be empty")
        if self.thread_key is not None and self.update_key is not None:
            raise ValueError("thread_key and update_key exclude each other")
        return self


class SlackSourceConfig(ConnectorConfig):
    """Receive the Slack Events API (the app's Request URL) on the worker's shared listener."""

    listen: str = Field(
        default="0.0.0.0:3000", description="`HOST:PORT` of the shared HTTP listener."
    )
    path: str = Field(
        default="/slack/events",
        description=(
            "The Request URL's path. Letters, digits and "
            "`-._~!$&'()*+,;=:@/` (no query, `%`-escapes or braces)."
        ),
    )
    signing_secret: SecretStr = Field(
        description="The app's signing secret (Basic Information page), e.g. "
        "`${env:SLACK_SIGNING_SECRET}`. Every request's `X-Slack-Signature` is checked "
        "with it. Never logged."
    )
    max_age: Duration = Field(
        default=300.0,
        gt=0,
        description="Requests whose `X-Slack-Request-Timestamp` is further than this from "
        "now are refused (Slack's documented 5 minutes: a replayed request is stale).",
    )
    event_types: list[str] = Field(
        default_factory=list,
        description="Keep only these `event.type`s (`message`, `app_mention`); empty: all. "
        "Others are answered 200 and dropped.",
    )
    dedup_window: int = Field(
        default=1000,
        ge=1,
        description="How many recent `event_id`s are remembered, in the source position, "
        "to drop Slack's retries (`X-Slack-Retry-Num`) of events already stored, across "
        "restarts.",
    )
    ack_timeout: Duration = Field(
        default=2.5,
        gt=0,
        description="Longest wait for the durable append before answering `503` (Slack "
        "allows 3 seconds, then retries; the retry is de-duplicated).",
    )
    max_body_bytes: ByteSize = Field(
        default=1_048_576, gt=0, description="Larger requests are refused with `413`."
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return check_listen(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("signing_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        return check_secret(value)
