"""The public surface is exactly what meshconnect.__all__ says: nothing leaks in or out."""

from __future__ import annotations

import meshconnect


def test_all_is_exactly_the_public_names() -> None:
    # ``annotations`` is the ``from __future__`` feature flag, not an export.
    public = {n for n in dir(meshconnect) if not n.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(meshconnect, name)).__name__ == "module"}
    assert set(meshconnect.__all__) - {"__version__"} == public - modules


def test_the_connector_author_api() -> None:
    assert sorted(meshconnect.__all__) == [
        "Ack",
        "BatchError",
        "Classifier",
        "ConfigError",
        "ConnectorConfig",
        "ConnectorContext",
        "ConnectorSpec",
        "DataError",
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
        "hookimpl",
    ]
