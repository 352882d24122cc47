"""meshconnect: a connector framework and plugin runtime.

The names a connector or transform author may use are re-exported here; everything else is
internal. ``tests/test_exported_members.py`` asserts ``__all__`` exactly.
"""

from __future__ import annotations

from .api import (
    Ack,
    ConnectorConfig,
    ConnectorContext,
    ConnectorSpec,
    Flushed,
    Position,
    Sink,
    Source,
    SourceBatch,
    TransformSpec,
)
from .config.model import ByteSize, Duration
from .errors import (
    BatchError,
    Classifier,
    ConfigError,
    DataError,
    MeshconnectError,
    PluginError,
    RestartError,
    RetriableError,
    classify,
)
from .hookspecs import hookimpl
from .records import Record
from .transforms import Transform

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "BatchError",
    "ByteSize",
    "Classifier",
    "ConfigError",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorSpec",
    "DataError",
    "Duration",
    "Flushed",
    "MeshconnectError",
    "PluginError",
    "Position",
    "Record",
    "RestartError",
    "RetriableError",
    "Sink",
    "Source",
    "SourceBatch",
    "Transform",
    "TransformSpec",
    "__version__",
    "classify",
    "hookimpl",
]
