"""The redis-py client a source or sink talks through, and its exceptions in the taxonomy.

Imported only when a pipeline uses the connector (redis-py, with hiredis's parser when
installed: ``pip install 'meshconnect[redis]'`` brings both).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as rx

from meshconnect import ConfigError, DataError, MeshconnectError, RestartError, RetriableError

from .config import RedisConnection

__all__ = ["classify_redis", "connect", "describe"]


def describe(config: RedisConnection) -> str:
    """Where the server is, for messages and record sources (never a credential)."""
    if config.sentinels:
        return f"redis-sentinel://{','.join(config.sentinels)}/{config.sentinel_service}"
    parts = urlsplit(config.url)  # no user info, no query: nothing a credential could hide in
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def connect(config: RedisConnection, *, sync: bool = False, **options: Any) -> Any:
    """A client for ``config`` (connections are made on first use): asyncio's, or with
    ``sync`` redis-py's blocking one (for calls through ``asyncio.to_thread``: it packs
    commands with hiredis, ~3x faster than the asyncio client's Python packer on big
    pipelines)."""
    common: dict[str, Any] = {
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "socket_timeout": config.timeout if options.pop("timeouts", True) else None,
        "socket_connect_timeout": config.timeout,
        "health_check_interval": 30,
        **options,
    }
    tls = config.url.startswith("rediss://")
    if tls:
        common["ssl_ca_certs"] = config.tls_ca_file
        common["ssl_cert_reqs"] = "required" if config.tls_verify else "none"
        if not config.tls_verify:
            common["ssl_check_hostname"] = False
    if config.sentinels:
        from urllib.parse import urlsplit

        if sync:
            from redis.sentinel import Sentinel
        else:
            from redis.asyncio.sentinel import Sentinel  # type: ignore[assignment]

        path = urlsplit(config.url).path.strip("/")
        db = int(path) if path.isdigit() else 0
        hosts = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in config.sentinels)]
        sentinel_kwargs: dict[str, Any] = {"socket_timeout": config.timeout}
        if config.sentinel_password:
            sentinel_kwargs["password"] = config.sentinel_password.get_secret_value()
        if tls:
            common["ssl"] = True
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, db=db, **common)
        return sentinel.master_for(config.sentinel_service)
    if not tls:
        common.pop("ssl_ca_certs", None)
    if sync:
        import redis

        return redis.Redis.from_url(config.url, **common)
    return aioredis.Redis.from_url(config.url, **common)


def classify_redis(exc: BaseException) -> type[MeshconnectError] | None:
    """redis-py's exceptions in the taxonomy (tests/test_redis_unit.py checks each):

    * a lost or refused connection, a timeout, a server still loading its data after a
      restart (``LOADING``), a replica that is read-only after a failover, ``TRYAGAIN``,
      ``MASTERDOWN``, ``BUSY``, ``OOM`` (memory may be freed): ``RetriableError``;
    * authentication or ACL refusals: ``ConfigError`` (fix `username`/`password`);
    * ``NOGROUP``, ``UNBLOCKED`` (the group or the stream was deleted under a running
      source): ``RestartError``, the source starts again and creates it;
    * a database number the server does not have: ``ConfigError``;
    * ``WRONGTYPE`` and other command errors on a record's key: ``DataError``.
    """
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
        return ConfigError
    if isinstance(
        exc,
        rx.ConnectionError
        | rx.TimeoutError
        | rx.BusyLoadingError
        | rx.ReadOnlyError
        | rx.TryAgainError
        | rx.OutOfMemoryError
        | rx.MasterDownError,
    ):
        return RetriableError
    if isinstance(exc, rx.ResponseError):
        text = str(exc)
        if text.startswith(("NOGROUP", "UNBLOCKED")):  # the stream was deleted under a read
            return RestartError
        if "DB index is out of range" in text:  # the URL's database: the server has fewer
            return ConfigError
        if text.startswith(("BUSY", "LOADING", "MASTERDOWN", "READONLY", "TRYAGAIN")):
            return RetriableError
        if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
            return ConfigError
        return DataError
    if isinstance(exc, rx.RedisError):
        return RetriableError
    return None
