"""meshconnect: a connector framework and plugin runtime.

The names a connector or transform author may use are re-exported here; everything else is
internal. ``tests/test_exported_members.py`` asserts ``__all__`` exactly.

The re-exports are resolved on first use (PEP 562 ``__getattr__``): ``import meshconnect``
alone, as ``meshconnect --help`` does, must not import pydantic and the connector API.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
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
    from .records import EncodedRecord, Record
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
    "EncodedRecord",
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

#: Where each re-exported name lives (a submodule of this package).
_HOME = {
    **dict.fromkeys(
        [
            "Ack",
            "ConnectorConfig",
            "ConnectorContext",
            "ConnectorSpec",
            "Flushed",
            "Position",
            "Sink",
            "Source",
            "SourceBatch",
            "TransformSpec",
        ],
        ".api",
    ),
    "ByteSize": ".config.model",
    "Duration": ".config.model",
    **dict.fromkeys(
        [
            "BatchError",
            "Classifier",
            "ConfigError",
            "DataError",
            "MeshconnectError",
            "PluginError",
            "RestartError",
            "RetriableError",
            "classify",
        ],
        ".errors",
    ),
    "hookimpl": ".hookspecs",
    "EncodedRecord": ".records",
    "Record": ".records",
    "Transform": ".transforms",
}


#: The public modules (tests/test_exported_members.py), which ``import meshconnect`` used to
#: import along with the names above: ``meshconnect.jsonvalue`` still works without importing
#: it first.
_MODULES = {"eventrules", "expr", "httpbody", "jsonvalue", "secrets", "transforms"}


def __getattr__(name: str) -> _typing.Any:
    if name in _MODULES:
        return _importlib.import_module(f".{name}", __name__)  # binds it on this package
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(home, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
