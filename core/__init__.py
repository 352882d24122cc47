"""meshconnect: a connector framework and plugin runtime.

The names a connector or transform author may use are re-exported here; everything else is
internal. ``tests/test_exported_members.py`` asserts ``__all__`` exactly.
"""

from __future__ import annotations

from .api import (
    ConnectorConfig,
    ConnectorContext,
    ConnectorSpec,
    Position,
    Sink,
    Source,
    SourceBatch,
    TransformSpec,
)
from .errors import ConfigError, DataError, MeshconnectError, PluginError, RetriableError
from .hookspecs import hookimpl
from .records import Record
from .transforms import Transform

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorSpec",
    "DataError",
    "MeshconnectError",
    "PluginError",
    "Position",
    "Record",
    "RetriableError",
    "Sink",
    "Source",
    "SourceBatch",
    "Transform",
    "TransformSpec",
    "__version__",
    "hookimpl",
]
