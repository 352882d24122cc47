"""Registers the ``mongodb`` source and sink (through the same entry-point door as any plugin)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``mongodb`` source and sink; their classes (and pymongo) load on first use."""
    return [
        ConnectorSpec(
            name="mongodb",
            kind="source",
            config_model="meshconnect.connectors.mongodb.config:MongoSourceConfig",
            factory="meshconnect.connectors.mongodb.source:MongoSource",
            description=(
                "A collection's change stream with resume tokens as positions, after an "
                "initial copy; or polling on an increasing field (standalone servers)."
            ),
            requires=("pymongo",),
            extra="mongodb",
        ),
        ConnectorSpec(
            name="mongodb",
            kind="sink",
            config_model="meshconnect.connectors.mongodb.config:MongoSinkConfig",
            factory="meshconnect.connectors.mongodb.sink:MongoSink",
            description=(
                "Insert, upsert or replace documents by `_id` (from the key; composite keys a "
                "sub-document), delete on CDC deletes and tombstones; unordered bulk writes "
                "with per-document results."
            ),
            requires=("pymongo",),
            extra="mongodb",
        ),
    ]
