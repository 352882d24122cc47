"""The pipeline file's models (ARCHITECTURE.md §1.3).

These check the *shape* of a pipeline file. A connector's ``config:`` mapping and a transform's
options are checked in a second pass against the model that plugin declares
(:mod:`meshconnect.config.loader`), so problems are reported with the full path
(``pipelines[0].sinks[1].config.table``) and the file position.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

__all__ = [
    "ByteSize",
    "ClusterConfig",
    "Duration",
    "ErrorPolicy",
    "PipelineConfig",
    "PipelineFile",
    "RetentionConfig",
    "RetryPolicy",
    "SinkConfig",
    "SourceConfig",
    "TransformConfig",
    "parse_duration",
    "parse_size",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def parse_duration(value: Any) -> float:
    """Seconds from ``200ms``, ``30s``, ``5m``, ``2h``, ``7d`` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 200ms, 30s, 5m, 2h or 7d")
    if isinstance(value, int | float | Decimal):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"{_as_yaml(value)} is not a duration such as 200ms, 30s, 5m, 2h or 7d")


def _as_yaml(value: Any) -> str:
    """A value as the YAML file has it, for messages: ``null``, ``true``, ``'text'``, ``a
    list``; not Python's ``None``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value) if isinstance(value, str) else str(value)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: Any) -> int:
    """Bytes from ``512MB``, ``2GiB``, ``100kB`` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, Decimal) and value >= 0 and value == value.to_integral_value():
        return int(value)  # `1e6` in YAML
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()])
    raise ValueError("a size such as 512MB, 2GiB or a number of bytes")


#: Bytes, written in YAML as ``512MB``, ``2GiB`` or a number.
ByteSize = Annotated[int, BeforeValidator(parse_size)]

#: Seconds, written in YAML as ``200ms``, ``30s``, ``5m``, ``2h``, ``7d`` or a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetryPolicy(_Model):
    """Retries of retriable errors, with exponential backoff and equal jitter (the wait after
    attempt n is drawn between half and all of ``min(max_backoff, initial_backoff * 2**(n-1))``;
    :func:`meshconnect.errorpolicy.backoff`)."""

    max_attempts: int = Field(5, ge=1, description="Attempts in all, the first included.")
    initial_backoff: Duration = Field(0.2, description="Wait before the second attempt.")
    max_backoff: Duration = Field(30.0, description="Upper bound of any single wait.")


class ErrorPolicy(_Model):
    """What happens when a record fails (the ``errors:`` block of a source or a sink)."""

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    tolerance: Literal["none", "all"] = Field(
        "none",
        description="none: a failing record fails the connector; all: it goes to the "
        "dead-letter topic (when set, else it is logged and skipped) and processing goes on.",
    )
    dead_letter_topic: str | None = Field(
        None, description="Topic that receives failed records with their error context."
    )


class TransformConfig(BaseModel):
    """One step of a transform chain: ``type``, an optional ``when`` and the type's options."""

    model_config = ConfigDict(extra="allow")

    type: str
    when: str | None = None

    def options(self) -> dict[str, Any]:
        """The options besides ``type`` and ``when``."""
        return dict(self.model_extra or {})


class SourceConfig(_Model):
    connector: str
    name: str | None = Field(None, description="Defaults to the connector name.")
    config: dict[str, Any] = Field(default_factory=dict)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)


class SinkConfig(_Model):
    connector: str
    name: str | None = Field(None, description="Defaults to the connector name.")
    topics: list[str] | None = Field(
        None, description="Topic names or globs; default: the topics this pipeline writes."
    )
    config: dict[str, Any] = Field(default_factory=dict)
    transforms: list[TransformConfig] = Field(default_factory=list)
    errors: ErrorPolicy = Field(default_factory=ErrorPolicy)
    batch_size: int = Field(2000, ge=1, description="Records handed to the sink per write.")
    commit_interval: Duration = Field(
        1.0, description="Longest time between flush-and-commit while records flow."
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and "#" in value:
            # <pipeline>/<sink>#<k> names the consumer groups of a partitioned pipeline
            raise ValueError("a sink name may not contain '#' (it marks partition consumers)")
        return value


class PipelineConfig(_Model):
    name: str
    source: SourceConfig | None = None
    transforms: list[TransformConfig] = Field(default_factory=list)
    topic: str | None = Field(
        None, description="Topic name or template; defaults to the pipeline name."
    )
    partitions: int = Field(
        1,
        ge=1,
        le=64,
        description="Split the topics this pipeline writes into this many partitions by the "
        "records' partitionkey, and run each of its sinks as this many consumers, one per "
        "partition, which a cluster spreads over its members (docs/scaleout.md#partitions).",
    )
    sinks: list[SinkConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use letters, digits, '_', '-' and '.', starting with a letter or digit"
            )
        return value


class RetentionConfig(_Model):
    max_age: Duration | None = Field(None, description="Delete records older than this.")
    max_records: int | None = Field(None, ge=1, description="Keep at most this many per topic.")
    max_bytes: ByteSize | None = Field(
        None,
        description="Keep about this much stored data per topic (e.g. 512MB, 2GiB); the "
        "oldest batches go first.",
    )


class ExpressionsConfig(_Model):
    record_patterns: bool = Field(
        False,
        description="Let matches() and replace_regex() take their regular expression from the "
        "record (an expression) instead of a constant string. Patterns run on RE2, in linear "
        "time, but a pattern from outside is one more input an attacker controls: off unless "
        "set (docs/security.md).",
    )


class ClusterConfig(_Model):
    """Clustered workers (docs/scaleout.md): ``cluster: NAME`` is short for ``{name: NAME}``."""

    name: str = Field(description="Workers with the same cluster name share the pipelines.")
    failover_timeout: Duration = Field(
        10.0,
        description="Longest time a dead worker's sources and sinks stay without an owner "
        "(its leases last half of it and are renewed every tenth); 1s to 1h.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use letters, digits, '_', '-' and '.', starting with a letter or digit"
            )
        return value

    @field_validator("failover_timeout")
    @classmethod
    def _check_timeout(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("at least 1s")
        if value > 3600.0:  # a member waits a tenth of it before taking anything
            raise ValueError("at most 1h")
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class PipelineFile(_Model):
    store: str | None = Field(None, description="Mesh store URL; default: sqlite under state.")
    cluster: ClusterConfig | None = Field(
        None,
        description="Run as a member of this worker cluster (a redis:// or nats:// store; "
        "docs/scaleout.md): a name, or {name, failover_timeout}.",
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    expressions: ExpressionsConfig = Field(
        default_factory=ExpressionsConfig,
        description="How the expressions of this file's pipelines may be written.",
    )
    pipelines: list[PipelineConfig] = Field(default_factory=list)


#: The kinds of thing a config problem can be about (for messages).
Kind = Literal["source", "sink", "transform"]
