"""Registers the ``redis`` source and sink (through the same entry-point door as any plugin)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``redis`` source and sink; their classes (and redis-py) load on first use."""
    return [
        ConnectorSpec(
            name="redis",
            kind="source",
            config_model="meshconnect.connectors.redis.config:RedisSourceConfig",
            factory="meshconnect.connectors.redis.source:RedisSource",
            description=(
                "Redis streams through a consumer group (XACK once stored in the mesh, dead "
                "consumers' entries claimed), or pub/sub channels (at most once)."
            ),
            requires=("redis",),
            extra="redis",
        ),
        ConnectorSpec(
            name="redis",
            kind="sink",
            config_model="meshconnect.connectors.redis.config:RedisSinkConfig",
            factory="meshconnect.connectors.redis.sink:RedisSink",
            description=(
                "SET or HSET by key template (TTL; DEL on deletes and tombstones; canal change "
                "records applied by primary key), XADD with MAXLEN ~, or PUBLISH; one pipeline "
                "per batch."
            ),
            requires=("redis",),
            extra="redis",
        ),
    ]
