"""Registers the ``s3`` source and sink (through the same entry-point door as any plugin)."""

from __future__ import annotations

from meshconnect import ConnectorSpec, hookimpl

__all__ = ["meshconnect_connectors"]


@hookimpl
def meshconnect_connectors() -> list[ConnectorSpec]:
    """The ``s3`` source and sink; their classes (and boto3) are imported when a pipeline
    uses them."""
    return [
        ConnectorSpec(
            name="s3",
            kind="source",
            config_model="meshconnect.connectors.s3.config:S3SourceConfig",
            factory="meshconnect.connectors.s3.source:S3Source",
            description=(
                "Read the objects under a prefix in key order (JSON lines, CSV, Parquet, gzip), "
                "resuming mid-object; follow new objects or stop at the end."
            ),
            requires=["boto3"],
            extra="s3",
        ),
        ConnectorSpec(
            name="s3",
            kind="sink",
            config_model="meshconnect.connectors.s3.config:S3SinkConfig",
            factory="meshconnect.connectors.s3.sink:S3Sink",
            description=(
                "Write partitioned, rotated objects (JSON lines, CSV, Parquet, gzip), exactly "
                "once by deterministic object names."
            ),
            requires=["boto3"],
            extra="s3",
        ),
    ]
