"""JSON Schema of pipeline files, with every installed connector's and transform's options.

``meshconnect schema`` prints it; point an editor's YAML language server at it for completion.
"""

from __future__ import annotations

import logging
from typing import Any

from .config.model import PipelineFile
from .errors import PluginError
from .plugins import Registry

log = logging.getLogger("meshconnect.schema")

__all__ = ["connector_schema", "pipeline_file_schema"]


def connector_schema(registry: Registry, name: str, kind: str | None = None) -> dict[str, Any]:
    """The JSON Schema of one connector's ``config:``.

    ``kind`` (``source``/``sink``) may be left out when the name has one kind only; KeyError
    when the name is both (asking for the kind) or unknown (naming the installed ones)."""
    found = [
        (ckind, entry)
        for (cname, ckind), entry in sorted(registry.connectors.items())
        if cname == name and (kind is None or ckind == kind) and entry.spec is not None
    ]
    if len(found) > 1:
        kinds = " and a ".join(k for k, _ in found)
        raise KeyError(
            f"connector {name!r} is both a {kinds}: add --kind "
            + " or --kind ".join(k for k, _ in found)
        )
    if found:
        ckind, entry = found[0]
        assert entry.spec is not None
        if entry.status == "failed":
            raise KeyError(f"{ckind} connector {name!r} failed to load: {entry.reason}")
        try:
            model = entry.spec.model()
        except PluginError as exc:
            raise KeyError(f"{ckind} {exc}") from exc
        schema: dict[str, Any] = model.model_json_schema()
        schema.setdefault("title", f"{name} {ckind} config")
        return schema
    if kind is None:
        sources = registry.unknown_message(name, "source")
        sinks = registry.unknown_message(name, "sink")
        raise KeyError(f"{sources}; {sinks}")
    raise KeyError(registry.unknown_message(name, kind))


def _variants(registry: Registry, kind: str) -> list[dict[str, Any]]:
    """One ``if``/``then`` per connector of ``kind`` whose config model loads (also those
    disabled or missing an extra: an editor may complete them); a failed one is left out
    with a warning, so one broken plugin does not cost every other its completion."""
    out = []
    for (name, ckind), entry in sorted(registry.connectors.items()):
        if ckind != kind or entry.spec is None or entry.status == "failed":
            continue
        try:
            model = entry.spec.model()
        except PluginError as exc:
            log.warning("schema: %s %s: left out", kind, exc)
            continue
        out.append(
            {
                "if": {"properties": {"connector": {"const": name}}},
                "then": {"properties": {"config": model.model_json_schema()}},
            }
        )
    return out


def _transform_variants(registry: Registry) -> list[dict[str, Any]]:
    out = []
    for name, entry in sorted(registry.transforms.items()):
        if entry.spec is None or entry.status == "failed":  # its options_model may be anything
            continue
        options = entry.spec.options_model.model_json_schema()
        props = dict(options.get("properties", {}))
        props["type"] = {"const": name}
        props["when"] = {"type": "string", "description": "Apply only when this is true."}
        out.append(
            {
                "if": {"properties": {"type": {"const": name}}},
                "then": {
                    "properties": props,
                    "required": ["type", *options.get("required", [])],
                    "additionalProperties": False,
                    **({"$defs": options["$defs"]} if "$defs" in options else {}),
                },
            }
        )
    return out


def pipeline_file_schema(registry: Registry) -> dict[str, Any]:
    """The pipeline file schema with per-connector ``config`` and per-transform options."""
    schema = PipelineFile.model_json_schema()
    defs = schema.setdefault("$defs", {})
    defs.setdefault("SourceConfig", {})["allOf"] = _variants(registry, "source")
    defs.setdefault("SinkConfig", {})["allOf"] = _variants(registry, "sink")
    defs.setdefault("TransformConfig", {})["allOf"] = _transform_variants(registry)
    defs["TransformConfig"]["properties"]["type"]["enum"] = sorted(registry.transforms)
    schema["title"] = "meshconnect pipeline file"
    return schema
