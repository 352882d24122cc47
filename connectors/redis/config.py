"""Config models of the ``redis`` source and sink (the docs are generated from these fields)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from meshconnect import ConnectorConfig, Duration, eventrules

__all__ = ["RedisConnection", "RedisSinkConfig", "RedisSourceConfig"]


class RedisConnection(ConnectorConfig):
    """Where the Redis server is: a URL, credentials apart from it, or Sentinel."""

    url: str = Field(
        "redis://localhost:6379/0",
        description=(
            "`redis://HOST:PORT/DB`, `rediss://…` for TLS, or `unix:///path/redis.sock`. "
            "Credentials go in `username`/`password`, not in the URL. With `sentinels`, only "
            "the scheme (TLS or not) and the database number are taken from it."
        ),
    )
    username: str | None = Field(None, description="ACL user name (Redis 6+).")
    password: SecretStr | None = Field(
        None, description="Password (of `username`, or the `requirepass` one); `${env:…}`."
    )
    sentinels: list[str] = Field(
        default_factory=list,
        description=(
            "Redis Sentinel addresses (`HOST:PORT`): the master of `sentinel_service` is "
            "asked of them, and found again after a failover."
        ),
    )
    sentinel_service: str = Field("mymaster", description="The master's name in Sentinel.")
    sentinel_password: SecretStr | None = Field(
        None, description="Password of the Sentinels themselves, when they have one."
    )
    tls_ca_file: str | None = Field(
        None, description="CA bundle to verify a `rediss://` server with (default: system's)."
    )
    tls_verify: bool = Field(True, description="Verify the server's certificate (rediss://).")
    timeout: Duration = Field(10.0, gt=0, description="Connect and socket timeout.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"the scheme must be redis://, rediss:// or unix://, not {parts.scheme!r}"
            )
        query = {k.lower() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if parts.password or query & {"password", "sentinel_password", "username"}:
            raise ValueError(
                "credentials in the URL (user info or a password/username query parameter) "
                "would show in messages and in every record's source: put them in `username` "
                "and `password` (e.g. password: ${env:REDIS_PASSWORD})"
            )
        if "cluster" in (parts.query or ""):
            raise ValueError("Redis Cluster is not supported (docs/connectors/redis.md)")
        _check_address(parts)
        return value

    @model_validator(mode="after")
    def _host(self) -> RedisConnection:
        parts = urlsplit(self.url)
        if parts.scheme != "unix" and not parts.hostname and not self.sentinels:
            # redis-py would connect to localhost:6379 (`redis:/host` has no host either)
            raise ValueError("url names no host: redis://HOST:PORT/DB")
        return self

    @field_validator("sentinels")
    @classmethod
    def _sentinels(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"a Sentinel address is HOST:PORT, not {item!r}")
        return value


#: Redis refuses an expiry past the largest 64-bit millisecond time (less now, with room).
MAX_TTL_MS = 2**63 - 1 - 10**13

#: Keys that mean something in some modes only: set in another, they would be ignored
#: silently (a `ttl` on `xadd` expires nothing), so they are refused at their line.
_SINK_MODE_KEYS: dict[str, tuple[str, ...]] = {
    "key": ("set", "hset"),
    "value_field": ("set",),
    "ttl": ("set", "hset"),
    "replace": ("hset",),
    "stream": ("xadd",),
    "maxlen": ("xadd",),
    "id_field": ("xadd",),
    "channel": ("publish",),
    "cdc": ("set", "hset"),
}
_SOURCE_MODE_KEYS: dict[str, tuple[str, ...]] = {
    "stream": ("stream",),
    "streams": ("stream",),
    "group": ("stream",),
    "consumer": ("stream",),
    "group_start": ("stream",),
    "claim_idle": ("stream",),
    "claim_interval": ("stream",),
    "until_end": ("stream",),
    "channels": ("pubsub",),
    "format": ("pubsub",),
}


def _check_mode(info: ValidationInfo, modes_of: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a key set for a mode it means nothing in (``mode`` is validated first: it is
    declared before these keys; when it is itself wrong, nothing is said here)."""
    mode = info.data.get("mode")
    name = str(info.field_name)
    modes = modes_of[name]
    if mode is not None and mode not in modes:
        where = " and ".join(modes)
        raise ValueError(f"{name} applies to mode {where} only, and mode is {mode}: remove it")


#: Query parameters of a URL that redis-py takes (others fail at the first connection with a
#: TypeError). ``protocol`` is left out: RESP3 replies have other shapes than the connector
#: reads.
_URL_OPTIONS = frozenset(
    {
        "db",
        "health_check_interval",
        "max_connections",
        "retry_on_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_read_size",
        "socket_timeout",
        "ssl_check_hostname",
        "timeout",
    }
)


def _check_address(parts: SplitResult) -> None:
    """Refuse a URL redis-py would read otherwise than it looks (``redis:/host`` connects to
    localhost, ``/abc`` to database 0) or fail on at the first connection."""
    if parts.scheme == "unix":
        if not parts.path.strip("/"):
            raise ValueError(
                "a unix-socket URL needs the socket's absolute path after the scheme, such "
                "as /run/redis.sock"
            )
    else:
        try:
            parts.port  # noqa: B018 (a ValueError when out of range)
        except ValueError:
            raise ValueError("the URL's port is not a number from 1 to 65535") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError("the URL's path is the database number (redis://HOST:PORT/0)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    for name, _ in query:
        if name not in _URL_OPTIONS:
            raise ValueError(
                f"the URL's query parameter {name!r} is not one the connector takes "
                f"({', '.join(sorted(_URL_OPTIONS))}); TLS and timeouts have config keys"
            )
    if any(name == "db" for name, _ in query) and parts.scheme != "unix" and parts.path.strip("/"):
        raise ValueError("the URL names the database twice (its path and ?db=)")


class RedisSinkConfig(RedisConnection):
    """The `config:` of the redis sink."""

    mode: Literal["set", "hset", "xadd", "publish"] = Field(
        "set",
        description=(
            "`set`: the key holds the record's data as JSON (or `value_field`); `hset`: a hash "
            "of the data's fields; `xadd`: an entry appended to `stream`; `publish`: a message "
            "on `channel`."
        ),
    )
    key: str | None = Field(
        None,
        description=(
            "Key template (`set`, `hset`), e.g. `order:{data.id}`. Default: "
            "`{subject}:{partitionkey}` for change records of the `canal` source "
            "(`shop.orders:1001`), else `{partitionkey}`."
        ),
    )
    value_field: str | None = Field(
        None,
        description=(
            "`set`: write this field of data (a dotted path) instead of the whole data as "
            "JSON; a string is written as it is, other values as JSON."
        ),
    )
    ttl: Duration | None = Field(
        None, description="`set`/`hset`: expire each key written this long after its write."
    )
    replace: bool = Field(
        True,
        description=(
            "`hset`: the hash holds exactly the record's fields (DEL, then HSET); false "
            "merges the fields into what the hash holds."
        ),
    )
    stream: str | None = Field(None, description="`xadd`: the stream's key (template).")
    maxlen: int | None = Field(
        None, ge=1, description="`xadd`: trim the stream to about this many entries (MAXLEN ~)."
    )
    id_field: str | None = Field(
        "ce_id",
        description=(
            "`xadd`: the entry field holding the record's CloudEvent id, by which a crash's "
            "re-delivery is recognised and not appended twice; null: no such field "
            "(re-delivered records are appended again)."
        ),
    )
    channel: str | None = Field(None, description="`publish`: the channel (template).")
    cdc: bool = Field(
        True,
        description=(
            "Apply change records of the `canal` source (any format) as upserts and deletes "
            "keyed by their primary key (`set`/`hset`); false writes them as plain records."
        ),
    )
    atomic: bool = Field(
        True,
        description=(
            "Write each batch in one MULTI/EXEC transaction (readers never see half a batch); "
            "false: a plain pipeline."
        ),
    )

    @field_validator("key", "stream", "channel")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        from .template import Template  # the templates' syntax, checked by `validate` too

        if value is not None:
            name = str(info.field_name)
            if not value:
                raise ValueError(f"{name} is empty: give a name or a template")
            try:
                Template(value, name)
            except Exception as exc:  # its message without the field's name: the path says it
                raise ValueError(str(exc).removeprefix(f"{name}: ")) from None
        return value

    @field_validator("id_field")
    @classmethod
    def _id_field(cls, value: str | None) -> str | None:
        if value == "":
            raise ValueError("id_field is empty: a field name, or null for no such field")
        return value

    @field_validator("value_field")
    @classmethod
    def _value_field(cls, value: str | None) -> str | None:
        if value is not None and (not value or "" in value.split(".")):
            raise ValueError("value_field is a dotted path of data such as total or a.b")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: float | None) -> float | None:
        if value is not None and value < 0.001:
            raise ValueError(
                "ttl must be at least 1ms (Redis expires in whole milliseconds); leave it out "
                "for keys that never expire"
            )
        if value is not None and value * 1000 > MAX_TTL_MS:
            raise ValueError(
                "ttl is beyond what Redis can expire at (about 292 million years); leave it "
                "out for keys that never expire"
            )
        return value

    @field_validator(*_SINK_MODE_KEYS)
    @classmethod
    def _for_mode(cls, value: object, info: ValidationInfo) -> object:
        _check_mode(info, _SINK_MODE_KEYS)
        return value

    @model_validator(mode="after")
    def _mode_keys(self) -> RedisSinkConfig:
        if self.mode == "xadd" and not self.stream:
            raise ValueError("mode xadd needs `stream` (the stream's key or a template)")
        if self.mode == "publish" and not self.channel:
            raise ValueError("mode publish needs `channel`")
        return self


class RedisSourceConfig(RedisConnection):
    """The `config:` of the redis source."""

    mode: Literal["stream", "pubsub"] = Field(
        "stream",
        description=(
            "`stream`: read streams through a consumer group, acknowledged (XACK) once in "
            "the mesh; `pubsub`: subscribe to channels (at most once)."
        ),
    )
    stream: str | None = Field(None, description="`stream`: the stream's key.")
    streams: list[str] = Field(
        default_factory=list, description="`stream`: several streams' keys (each a partition)."
    )
    group: str = Field(
        "meshconnect",
        description="`stream`: the consumer group (created at `group_start` when missing).",
    )
    consumer: str | None = Field(
        None,
        description=(
            "`stream`: this reader's name in the group; default `meshconnect-PIPELINE`. "
            "Keep it stable: its pending entries are found by it after a restart."
        ),
    )
    group_start: str = Field(
        "0",
        description="`stream`: where the group starts when the mesh holds no position for the "
        "stream (a new group, a new state directory, a reset; an existing group is moved "
        "there too): `0` (every entry), `$` (new ones).",
    )
    claim_idle: Duration = Field(
        60.0,
        description=(
            "`stream`: entries pending this long with another consumer of the group (one "
            "that died) are claimed (XAUTOCLAIM) and read here."
        ),
    )
    claim_interval: Duration = Field(5.0, description="`stream`: how often to look for them.")
    batch_size: int = Field(500, ge=1, description="Entries or messages per batch at most.")
    block: Duration = Field(1.0, description="How long an idle read waits for news (at least 1ms).")
    until_end: bool = Field(
        False,
        description=("`stream`: bounded: end once nothing is left to read (for copies and tests)."),
    )
    channels: list[str] = Field(
        default_factory=list,
        description=("`pubsub`: channels; a name with `*`, `?` or `[` is a pattern (PSUBSCRIBE)."),
    )
    format: Literal["json", "text"] = Field(
        "json",
        description=(
            "`pubsub`: a message is JSON (data is its value) or text (data is the string). "
            "Stream entries are always an object of their fields."
        ),
    )
    type: str = Field("redis.message", description="The records' CloudEvent `type`.")

    @field_validator("group_start")
    @classmethod
    def _group_start(cls, value: str) -> str:
        if value != "$" and not re.fullmatch(r"\d{1,20}(-\d{1,20})?", value):
            raise ValueError(f"group_start is 0, $ or an entry id (1700000000000-0), not {value!r}")
        return value

    @field_validator(*_SOURCE_MODE_KEYS)
    @classmethod
    def _for_mode(cls, value: object, info: ValidationInfo) -> object:
        _check_mode(info, _SOURCE_MODE_KEYS)
        return value

    @field_validator("stream", "group", "consumer")
    @classmethod
    def _name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value == "":
            raise ValueError(f"{info.field_name} is empty: leave it out or give a name")
        return value

    @field_validator("streams", "channels")
    @classmethod
    def _names(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "" in value:
            raise ValueError(f"{info.field_name} holds an empty name")
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise ValueError(f"{info.field_name} names {', '.join(map(repr, twice))} twice")
        return value

    @field_validator("block")
    @classmethod
    def _block(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError(
                "block must be at least 1ms: it is how long an idle read waits (Redis's BLOCK "
                "0, wait forever, would keep the source from stopping; no wait spins a core)"
            )
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        problem = eventrules.attribute_problem("type", value)
        if problem is not None:  # every record would be an invalid CloudEvent
            raise ValueError(f"type is each record's CloudEvent type: it {problem}")
        return value

    @model_validator(mode="after")
    def _mode_keys(self) -> RedisSourceConfig:
        if self.mode == "stream":
            if self.stream and self.stream in self.streams:
                raise ValueError(f"stream {self.stream!r} is also in `streams`")
            if not self.stream and not self.streams:
                raise ValueError("mode stream needs `stream` or `streams`")
        elif not self.channels:
            raise ValueError("mode pubsub needs `channels`")
        return self

    @property
    def stream_names(self) -> list[str]:
        return ([self.stream] if self.stream else []) + list(self.streams)
