"""Registers the ``canal`` source (through the same entry-point door as any plugin)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``canal`` source; its class (and pymysql) is imported when a pipeline uses it."""
    return [
        ConnectorSpec(
            name="canal",
            kind="source",
            config_model="meshconnect.connectors.canal.config:CanalSourceConfig",
            factory="meshconnect.connectors.canal.source:CanalSource",
            description=(
                "MySQL/MariaDB change data capture from the binlog: a consistent, chunked, "
                "resumable snapshot, then one record per row change and DDL, as a Canal "
                "FlatMessage, a Debezium envelope or a typed row; exact resume."
            ),
            requires=("pymysql", "pymysqlreplication"),
            extra="mysql",
        )
    ]
