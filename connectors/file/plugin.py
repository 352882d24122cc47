"""Registers the ``file`` source and sink (through the same entry-point door as any plugin)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``file`` source and sink; their classes are imported when a pipeline uses them."""
    return [
        ConnectorSpec(
            name="file",
            kind="source",
            config_model="meshconnect.connectors.file.config:FileSourceConfig",
            factory="meshconnect.connectors.file.source:FileSource",
            description=(
                "Read or tail local files (globs, rotation, truncation): JSON lines, text, "
                "CSV or CloudEvents."
            ),
        ),
        ConnectorSpec(
            name="file",
            kind="sink",
            config_model="meshconnect.connectors.file.config:FileSinkConfig",
            factory="meshconnect.connectors.file.sink:FileSink",
            description=(
                "Append records as lines, rotated by size, exactly once by truncating to the "
                "last checkpoint."
            ),
        ),
    ]
