"""Registers the ``jdbc`` source and sink (SQLAlchemy is imported only when a pipeline uses
them)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``jdbc`` source and sink."""
    return [
        ConnectorSpec(
            name="jdbc",
            kind="source",
            config_model="meshconnect.connectors.jdbc.config:JdbcSourceConfig",
            factory="meshconnect.connectors.jdbc.source:JdbcSource",
            description=(
                "Polls SQL tables or a query (bulk, incrementing, timestamp with a delay, "
                "timestamp+incrementing) through SQLAlchemy: PostgreSQL, MySQL/MariaDB, SQLite."
            ),
            requires=("sqlalchemy",),
            extra="jdbc",
        ),
        ConnectorSpec(
            name="jdbc",
            kind="sink",
            config_model="meshconnect.connectors.jdbc.config:JdbcSinkConfig",
            factory="meshconnect.connectors.jdbc.sink:JdbcSink",
            description=(
                "Inserts, upserts, updates and deletes rows in SQL tables and applies `canal` "
                "CDC records (all formats), creating and evolving tables; exactly-once mode."
            ),
            requires=("sqlalchemy",),
            extra="jdbc",
        ),
    ]
