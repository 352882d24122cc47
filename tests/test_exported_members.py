"""The public surface is exactly what meshconnect.__all__ says: nothing leaks in or out."""

from __future__ import annotations

import ast
from pathlib import Path

import meshconnect

CONNECTORS = Path(__file__).resolve().parent.parent / "connectors"
#: Public modules a connector may import besides ``meshconnect`` itself: the one number
#: representation every connector shares (``jsonvalue``) and the CloudEvents rules
#: (``eventrules``: a duplicate-key-strict JSON reader, attribute checks).
#: ``expr`` compiles the templates a connector's config holds (slack's ``channel``, ``text``);
#: ``transforms`` gives a transform factory its ``build_context()`` (docs/plugins.md);
#: ``httpbody`` reads an HTTP source's request body whole, within a limit.
PUBLIC_MODULES = {
    "meshconnect",
    "meshconnect.jsonvalue",
    "meshconnect.eventrules",
    "meshconnect.expr",
    "meshconnect.transforms",
    "meshconnect.httpbody",
    "meshconnect.httplisten",  # the shared listener connectors reach through context.http
    "meshconnect.positioncheck",  # a source's checks of hand-written positions
    "meshconnect.secrets",  # shown_url: a URL in a message, its password masked
    "meshconnect.batchbytes",  # BATCH_BYTES and values_bytes: a source batch bounded in bytes
}


def test_all_is_exactly_the_public_names() -> None:
    # ``annotations`` is the ``from __future__`` feature flag, not an export.
    public = {n for n in dir(meshconnect) if not n.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(meshconnect, name)).__name__ == "module"}
    assert set(meshconnect.__all__) - {"__version__"} == public - modules


def test_the_connector_author_api() -> None:
    assert sorted(meshconnect.__all__) == [
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


def test_connectors_import_only_what_meshconnect_exports() -> None:
    """Built-ins use the door a third party uses: ``from meshconnect import ...`` (names in
    ``__all__``), never ``meshconnect.api`` or ``meshconnect.config.model`` directly."""
    reached: list[str] = []
    for path in sorted(CONNECTORS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules: list[tuple[str, list[str]]] = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.append((node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                modules.extend((a.name, []) for a in node.names)
            for module, names in modules:
                if not module.startswith("meshconnect") or module.startswith(
                    "meshconnect.connectors"
                ):
                    continue
                where = f"{path.relative_to(CONNECTORS)}:{node.lineno}"
                if module not in PUBLIC_MODULES:
                    reached.append(f"{where}: {module}")
                elif module == "meshconnect":
                    reached.extend(
                        f"{where}: meshconnect.{n}"
                        for n in names
                        if n not in meshconnect.__all__ and f"meshconnect.{n}" not in PUBLIC_MODULES
                    )
    assert reached == []
