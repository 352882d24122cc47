"""The built-in mesh store backends, registered through the ``meshconnect`` entry-point group
(``stores = "meshconnect.mesh.plugin"``) like any third-party backend.

Each spec's ``factory(url)`` builds an unopened store; the worker calls ``open()``. The
backend modules are imported only when a store is built.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from .store import MeshStore, StoreSpec

__all__ = ["meshconnect_stores"]


def _sqlite(url: str) -> MeshStore:
    from .sqlite import SqliteStore

    return SqliteStore(url)


def _memory(url: str) -> MeshStore:
    from .memory import MemoryStore

    return MemoryStore(url)


def _redis(url: str) -> MeshStore:
    from .redis_store import RedisStore

    return RedisStore(url)


def _nats(url: str) -> MeshStore:
    from .nats_store import NatsStore

    return NatsStore(url)


@hookimpl
def meshconnect_stores() -> list[StoreSpec]:
    """The ``sqlite`` (embedded default, WAL), ``memory`` (tests), ``redis`` (Redis Streams)
    and ``nats`` (JetStream) backends."""
    return [
        StoreSpec(
            "sqlite",
            _sqlite,
            "one SQLite file in WAL mode: sqlite:///relative/path.db or sqlite:////abs/path.db",
        ),
        StoreSpec(
            "memory",
            _memory,
            "in this process's memory, for tests: memory:// (private) or memory://NAME (shared)",
        ),
        StoreSpec(
            "redis",
            _redis,
            "Redis Streams (extra [redis]): redis://HOST:PORT/DB?prefix=NAME",
        ),
        StoreSpec("rediss", _redis, "Redis Streams over TLS: rediss://HOST:PORT/DB?prefix=NAME"),
        StoreSpec("nats", _nats, "NATS JetStream (extra [nats]): nats://HOST:PORT?prefix=NAME"),
    ]
