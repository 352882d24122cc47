"""Config models of the ``webhook`` source and the ``http`` sink (the docs are generated from
these fields). Key names follow ARCHITECTURE.md section 1.5; secrets are ``SecretStr``."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from meshconnect import ByteSize, ConnectorConfig, Duration
from meshconnect.httplisten import check_listen, check_path, check_tokens

from ._templates import Template

__all__ = [
    "BearerToken",
    "HmacConfig",
    "HttpSinkConfig",
    "OAuth2Config",
    "RateLimit",
    "WebhookConfig",
]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(
    value: str | None, names: Callable[[str], bool] | None = None, hint: str = ""
) -> str | None:
    """``value`` as a template: ``ValueError`` with the position of a bad placeholder, or
    naming one that ``names`` does not know (it would have no value for any request or
    record, so each would be refused at run time)."""
    if value is not None:
        template = Template(value)
        for name in template.names():
            if names is not None and not names(name):
                raise ValueError(f"{{{name}}} is not a placeholder here; use {hint}")
    return value


def _webhook_name(name: str) -> bool:
    kind, dot, rest = name.partition(".")
    if dot:
        return kind in ("header", "query", "data") and bool(rest)
    return name in ("path", "method", "remote")


_WEBHOOK_NAMES = "{header.NAME}, {query.NAME}, {data.PATH}, {path}, {method} or {remote}"
_RECORD_ATTRIBUTES = (
    "id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema",
)  # fmt: skip
_EXTENSION = re.compile(r"[a-z0-9]+\Z")


def _record_name(name: str) -> bool:
    if name.startswith(("data.", "time:")):
        return len(name) > 5
    return name in (*_RECORD_ATTRIBUTES, "topic", "offset") or bool(_EXTENSION.match(name))


_RECORD_NAMES = (
    "an attribute ({id}, {type}, {time}...), an extension by its name (a-z, 0-9), {data.PATH}, "
    "{time:STRFTIME}, {topic} or {offset}"
)
#: A header name (RFC 9110 section 5.1: a token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: What a header value may not hold (RFC 9110 section 5.5): CR, LF, NUL and other controls.
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _header_name(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~)")
    return value


def _header_template(value: str) -> str:
    if HEADER_CONTROL.search(value):
        raise ValueError("a header value may not hold a line break or another control character")
    _check_template(value, _record_name, _RECORD_NAMES)
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderTemplate = Annotated[str, AfterValidator(_header_template)]


class HmacConfig(_Part):
    """An HMAC signature of the request body (verified by the webhook, written by the http
    sink). GitHub: `header: X-Hub-Signature-256`, `prefix: "sha256="`. Stripe:
    `scheme: timestamped`, `header: Stripe-Signature`."""

    secret: SecretStr | list[SecretStr] = Field(
        description=(
            "The shared secret, or a list of them (rotation: the webhook accepts a signature "
            "made with any of them; the sink signs with the first)."
        )
    )
    header: HeaderName = Field(
        "X-Signature-256", description="The header that carries the signature."
    )
    algorithm: Literal["sha256", "sha1", "sha512"] = Field("sha256", description="The hash.")
    prefix: str = Field("", description='Text before the digest in the header, e.g. "sha256=".')
    encoding: Literal["hex", "base64"] = Field("hex", description="How the digest is written.")
    scheme: Literal["plain", "timestamped"] = Field(
        "plain",
        description=(
            "`plain`: the digest of the body. `timestamped` (Stripe's): the header is "
            "`t=UNIX_SECONDS,v1=DIGEST[,v1=...]` and the digest is of `t` + `.` + body; a "
            "timestamp further than `tolerance` from now is refused (replay protection)."
        ),
    )
    tolerance: Duration = Field(
        300.0, gt=0, description="`timestamped`: how far the signed time may be from now."
    )

    def secrets(self) -> list[bytes]:
        """The secrets as bytes, the signing one first."""
        values = self.secret if isinstance(self.secret, list) else [self.secret]
        return [s.get_secret_value().encode("utf-8") for s in values]

    @field_validator("secret")
    @classmethod
    def _not_empty(cls, value: SecretStr | list[SecretStr]) -> SecretStr | list[SecretStr]:
        values = value if isinstance(value, list) else [value]
        if not values or any(not s.get_secret_value() for s in values):
            raise ValueError("an HMAC secret may not be empty")
        return value


class BearerToken(_Part):
    """A bearer token limited to some CloudEvent types (the publish ACL)."""

    token: SecretStr = Field(description="The token (`Authorization: Bearer TOKEN`).")
    types: list[str] = Field(
        default_factory=lambda: ["*"],
        description=(
            "Glob patterns (`com.example.*`) of the CloudEvent `type`s this token may publish; "
            "an event of another type is refused with 403 and nothing of the request is stored."
        ),
    )


class RateLimit(_Part):
    """Requests per client address: a token bucket of `burst` requests refilled at
    `requests_per_second`."""

    requests_per_second: float = Field(gt=0, description="Sustained requests a second.")
    burst: int = Field(0, ge=0, description="Bucket size (0: the rate rounded up, at least 1).")


class WebhookConfig(ConnectorConfig):
    """Receive CloudEvents, or plain bodies wrapped into CloudEvents, over HTTP."""

    listen: str = Field(
        description=(
            "`HOST:PORT` to serve on (the worker's shared listener: pipelines naming the same "
            "address share one server, each on its own path)."
        )
    )
    path: str = Field(
        "/events",
        description=(
            "The URL path this pipeline receives on. Letters, digits and "
            "`-._~!$&'()*+,;=:@/` (no query, `%`-escapes or braces)."
        ),
    )
    bearer_tokens: list[SecretStr | BearerToken] = Field(
        default_factory=list,
        description=(
            "Accepted bearer tokens (several, for rotation), each a string or "
            "`{token, types}` to limit the CloudEvent types it may publish. Empty: no token "
            "needed (use `hmac` or `allow_ips` then, on a public address)."
        ),
    )
    hmac: HmacConfig | None = Field(None, description="Require an HMAC signature of the body.")
    allow_ips: list[str] = Field(
        default_factory=list,
        description="Client addresses or networks (`10.0.0.0/8`) allowed; empty: any.",
    )
    trust_forwarded: bool | int = Field(
        False,
        description=(
            "Behind reverse proxies: how many (`true`: one) append the address they got the "
            "request from to `X-Forwarded-For`; the client address for `allow_ips` and "
            "`rate_limit` is then that many entries from the right, the one the outermost "
            "trusted proxy wrote (entries further left are the client's own word). A header "
            "with fewer entries leaves the connection's address."
        ),
        ge=0,
        le=16,
    )
    tls_cert: str | None = Field(None, description="PEM certificate file: serve HTTPS.")
    tls_key: str | None = Field(None, description="PEM private key file of `tls_cert`.")
    max_body_bytes: ByteSize = Field(
        1024 * 1024, gt=0, description="Largest request body; a larger one gets 413."
    )
    max_batch: int = Field(
        1000, ge=1, description="Most events in one batch-mode request; more gets 413."
    )
    rate_limit: RateLimit | None = Field(
        None,
        description=(
            "Requests per client address; off unless set. `{requests_per_second, burst}`, or "
            "a shorthand: a number (requests a second), `100/s`, `600/min`, `10000/h`."
        ),
    )
    header_timeout: Duration = Field(
        10.0,
        gt=0,
        description=(
            "Time a connection has to send a request's complete headers (after it opens, or "
            "after the previous answer); slower ones are closed. The address's setting: every "
            "pipeline on one `listen` must give the same."
        ),
    )
    max_connections: int = Field(
        512,
        ge=1,
        description=(
            "Open connections to the address; one more is answered 503 and closed at once "
            "(keep it below the process's file limit, `ulimit -n`). Per address, as "
            "`header_timeout`."
        ),
    )
    read_timeout: Duration = Field(
        10.0, gt=0, description="Time to receive the whole body (slow clients get 408)."
    )
    ack_timeout: Duration = Field(
        30.0,
        gt=0,
        description="Time to wait for the durable append before answering 503.",
    )
    synchronous: bool = Field(
        False,
        description=(
            "Hold the answer until every sink of this worker that reads the events' topic has "
            "written and committed them (200, `delivered: true`), for request/reply callers; "
            "after `sync_timeout` the answer is 202 with `delivered: false` (the events are "
            "stored and will be delivered)."
        ),
    )
    sync_timeout: Duration = Field(
        10.0, gt=0, description="With `synchronous`: the longest wait for delivery."
    )
    max_pending: int = Field(
        10000,
        ge=1,
        description=(
            "Events received and not yet stored; beyond it requests get 503 with Retry-After "
            "(the pipeline is not keeping up or is paused)."
        ),
    )
    max_pending_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        gt=0,
        description=(
            "Bytes of request bodies whose events are received and not yet stored (the "
            "events take a few times that in memory); beyond it requests get 503 with "
            "Retry-After, refused by their `Content-Length` before the body is read. A request "
            "is taken whatever its size when nothing waits."
        ),
    )
    retry_after: Duration = Field(
        1.0, gt=0, description="The Retry-After of a 503 (seconds, rounded up)."
    )
    idempotency_window: Duration = Field(
        300.0,
        ge=0,
        description=(
            "A CloudEvent whose `source`+`id` was stored less than this ago is answered 2xx "
            "and not stored again (0: off). Kept in memory; the digests of the last batches' "
            "events (at least two batches) are kept in the source position too, so a restart "
            "or crash keeps those."
        ),
    )
    type: str = Field(
        "com.example.webhook",
        description=(
            "Plain bodies: the CloudEvent `type` (template: `{header.X-GitHub-Event}`, "
            "`{query.kind}`, `{data.action}`, `{path}`, `{method}`)."
        ),
    )
    source: str = Field(
        "{path}", description="Plain bodies: the CloudEvent `source` (template, a URI-reference)."
    )
    subject: str | None = Field(None, description="Plain bodies: the `subject` (template).")
    id: str | None = Field(
        None,
        description=(
            "Plain bodies: the CloudEvent `id` (template, e.g. `{header.X-GitHub-Delivery}`, "
            "which makes re-deliveries idempotent); default a fresh UUID."
        ),
    )

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate_shorthand(cls, value: object) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"requests_per_second": value}
        if isinstance(value, str):
            count, _, unit = value.strip().partition("/")
            seconds = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                       "h": 3600, "hour": 3600}.get(unit.strip().lower())  # fmt: skip
            try:
                number = float(count)
            except ValueError:
                number = -1.0
            if seconds is None or number <= 0:
                raise ValueError(f"{value!r}: expected a number, or N/s, N/min or N/h")
            return {"requests_per_second": number / seconds}
        return value

    @field_validator("type", "source", "subject", "id")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return _check_template(value, _webhook_name, _WEBHOOK_NAMES)

    @field_validator("bearer_tokens")
    @classmethod
    def _tokens(cls, value: list[SecretStr | BearerToken]) -> list[SecretStr | BearerToken]:
        check_tokens([item.token if isinstance(item, BearerToken) else item for item in value])
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        """``HOST:PORT`` with a port of 0-65535 (``[::1]:8080`` for IPv6), as the shared
        listener reads it; refused here so ``validate`` names the line."""
        return check_listen(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("allow_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> WebhookConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class OAuth2Config(_Part):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4): a token fetched from `token_url`,
    sent as `Authorization: Bearer`, refreshed before it expires and after a 401."""

    token_url: str = Field(description="The token endpoint.")
    client_id: str = Field(description="The client id.")
    client_secret: SecretStr = Field(description="The client secret.")
    scope: str | None = Field(None, description="Scopes, space-separated.")
    audience: str | None = Field(None, description="`audience` parameter, for IdPs that take one.")


class HttpSinkConfig(ConnectorConfig):
    """POST (or PUT) each record to a URL as a CloudEvent or as its data."""

    url: str = Field(
        description=(
            "Where to send (template: `https://hooks.example.com/{type}`, `{data.tenant}`, "
            "`{partitionkey}`, `{time:%Y-%m-%d}`). Placeholders stand in the path, query or "
            "fragment only (never the scheme, host or port); each value is percent-encoded "
            "as one path segment or query value (`/`, `?`, `#`, `&` included)."
        )
    )
    method: Literal["POST", "PUT"] = Field("POST", description="The HTTP method.")
    mode: Literal["binary", "structured", "batch", "data"] = Field(
        "binary",
        description=(
            "`binary`: the data as the body, attributes in `ce-` headers. `structured`: the "
            "whole event as `application/cloudevents+json`. `batch`: up to `batch_max` "
            "events a request as `application/cloudevents-batch+json` (the request's answer "
            "is each one's result). `data`: the data as JSON (or as it is, for bytes and "
            "text), no CloudEvent headers."
        ),
    )
    batch_max: int = Field(100, ge=1, description="`mode: batch`: most events in one request.")
    headers: dict[HeaderName, HeaderTemplate] = Field(
        default_factory=dict, description="Extra request headers: name -> template."
    )
    timeout: Duration = Field(10.0, gt=0, description="Per request, connecting included.")
    max_concurrency: int = Field(
        8,
        ge=1,
        description=(
            "Requests in flight at once. Records with the same `partitionkey` are sent one "
            "after the other, in order."
        ),
    )
    hmac: HmacConfig | None = Field(None, description="Sign the body (as the webhook checks it).")
    oauth2: OAuth2Config | None = Field(None, description="OAuth2 client-credentials tokens.")
    max_retry_after: Duration = Field(
        60.0, gt=0, description="Cap on a server's Retry-After (seconds)."
    )
    success_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list,
        description="Statuses counted as delivered besides 2xx (e.g. 409 for a duplicate).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        Template(value).check_url()  # ValueError: a bad placeholder, or one in the host part
        _check_template(value, _record_name, _RECORD_NAMES)
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpSinkConfig:
        # aiohttp sends user info as Basic auth, and refuses every request that also has an
        # Authorization header ("Cannot combine AUTHORIZATION header with ... credentials
        # encoded in URL"): each record failed at run time. The URL is never echoed.
        netloc = urlsplit(self.url).netloc
        if "@" not in netloc:
            return self
        if self.oauth2 is not None:
            other = "oauth2"
        elif any(name.lower() == "authorization" for name in self.headers):
            other = "an Authorization header"
        else:
            return self
        raise ValueError(
            f"url: credentials in the URL (user info before '@', sent as Basic auth) and "
            f"{other} cannot both authenticate a request; keep one"
        )
