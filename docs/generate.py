"""Regenerate the parts of docs/ that come from code; ``--check`` fails on drift (CI runs it).

Generated regions sit between ``<!-- BEGIN GENERATED: NAME -->`` and ``<!-- END GENERATED -->``
markers in hand-written pages, so prose and generated reference live in one file:

* ``cli.md``: the ``--help`` of every command.
* ``connectors/<name>.md``: the ``config`` reference of each built-in connector (source, sink),
  from its pydantic model.
* ``transforms.md``: the index of the built-in transforms; ``transforms/<name>.md``: the options
  and examples of each (every built-in transform must have its page).
* ``yaml.md``: the pipeline file's own keys, from :mod:`meshconnect.config.model`.

    python docs/generate.py          # rewrite
    python docs/generate.py --check  # exit 1 if anything is out of date
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from pydantic import BaseModel

DOCS = Path(__file__).resolve().parent
MARKER = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[\w./-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED -->)",
    re.S,
)


def _type_of(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        ref = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(ref, {})
        if "enum" in target:
            return " \\| ".join(f"`{v}`" for v in target["enum"])
        return ref
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        parts = [_type_of(p, defs) for p in prop["anyOf"]]
        return " \\| ".join(p for p in parts if p != "null") + (
            " (optional)" if "null" in parts else ""
        )
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type_of(prop.get('items', {}), defs)}"
    if kind == "object":
        return "mapping"
    if prop.get("format") == "json-value":
        return "JSON value"
    if prop.get("format") == "password":
        return "secret string"
    return str(kind or "any")


def fields_table(model: type[BaseModel]) -> str:
    """A Markdown table of a model's fields: name, type, default, description."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    rows = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
    for name, prop in schema.get("properties", {}).items():
        if name in required:
            default = "**required**"
        elif "default" in prop:
            default = f"`{prop['default']!r}`" if prop["default"] is not None else "—"
        else:
            default = "—"
        description = " ".join(prop.get("description", "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {_type_of(prop, defs)} | {default} | {description} |")
    return "\n".join(rows) + "\n"


def cli_reference() -> str:
    from meshconnect.cli import cli

    runner = CliRunner()
    out: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        result = runner.invoke(cli, [*path, "--help"], prog_name="meshconnect")
        title = " ".join(["meshconnect", *path])
        out.append(f"### `{title}`\n\n```text\n{result.output.rstrip()}\n```\n")
        for name in sorted(getattr(command, "commands", {})):
            walk(command.commands[name], [*path, name])

    walk(cli, [])
    return "\n".join(out)


def connector_reference(name: str) -> str:
    from meshconnect.plugins import load_registry

    registry = load_registry()
    parts = []
    for kind in ("source", "sink"):
        entry = registry.connectors.get((name, kind))
        if entry is None or entry.spec is None:
            continue
        spec = entry.spec
        parts.append(f"### {kind.capitalize()} `config`\n\n")
        if spec.description:
            parts.append(spec.description.strip() + "\n\n")
        parts.append(fields_table(spec.model()) + "\n")
    return "".join(parts)


def models_reference(module: str, names: list[str]) -> str:
    """Field tables of a connector's nested config models (``hmac:``, ``rate_limit:``...)."""
    import importlib

    loaded = importlib.import_module(module)
    parts = []
    for name in names:
        cls = getattr(loaded, name)
        doc = " ".join((cls.__doc__ or "").split())
        parts.append(f"### `{name}`\n\n{doc}\n\n{fields_table(cls)}\n")
    return "".join(parts)


@functools.cache
def builtin_transforms() -> dict[str, Any]:
    """The built-in transforms' specs by name (plugins' transforms are documented by them)."""
    from meshconnect.plugins import load_registry

    registry = load_registry()
    return {
        name: entry.spec
        for name, entry in sorted(registry.transforms.items())
        if entry.distribution == "meshconnect" and entry.spec is not None
    }


def transforms_index() -> str:
    """The table of built-in transforms on ``transforms.md``, linking each one's page."""
    rows = ["| transform | what it does |", "| --- | --- |"]
    for name, spec in builtin_transforms().items():
        description = " ".join(spec.description.split()).replace("|", "\\|")
        rows.append(f"| [`{name}`](transforms/{name}.md) | {description} |")
    return "\n".join(rows) + "\n"


def transform_reference(name: str) -> str:
    """The options table and the examples of one built-in transform, for its own page."""
    spec = builtin_transforms()[name]
    parts = [f"{spec.description.strip()}\n\n"]
    parts.append(
        "Every transform also takes `when: EXPR` ([the chain](../transforms.md#when)).\n\n"
    )
    parts.append(fields_table(spec.options_model) + "\n")
    for example in spec.examples:
        parts.append(f"```yaml\n{example.strip()}\n```\n\n")
    return "".join(parts).rstrip("\n") + "\n"


def yaml_reference() -> str:
    from meshconnect.config import model

    parts = []
    for title, cls in [
        ("Top level", model.PipelineFile),
        ("`pipelines[]`", model.PipelineConfig),
        ("`source`", model.SourceConfig),
        ("`sinks[]`", model.SinkConfig),
        ("`errors`", model.ErrorPolicy),
        ("`errors.retry`", model.RetryPolicy),
        ("`retention`", model.RetentionConfig),
        ("`cluster`", model.ClusterConfig),
    ]:
        parts.append(f"### {title}\n\n{fields_table(cls)}\n")
    return "".join(parts)


def generators() -> dict[str, Any]:
    return {
        "cli": cli_reference,
        "transforms": transforms_index,
        **{
            f"transform/{name}": (lambda name=name: transform_reference(name))
            for name in builtin_transforms()
        },
        "yaml": yaml_reference,
        "connector/file": lambda: connector_reference("file"),
        "connector/canal": lambda: connector_reference("canal"),
        "connector/webhook": lambda: connector_reference("webhook"),
        "connector/http": lambda: connector_reference("http"),
        "connector/webhook-parts": lambda: models_reference(
            "meshconnect.connectors.webhook.config", ["BearerToken", "HmacConfig", "RateLimit"]
        ),
        "connector/http-parts": lambda: models_reference(
            "meshconnect.connectors.webhook.config", ["OAuth2Config"]
        ),
        "connector/slack": lambda: connector_reference("slack"),
        "connector/chatgpt": lambda: connector_reference("chatgpt"),
        "connector/redis": lambda: connector_reference("redis"),
        "connector/mongodb": lambda: connector_reference("mongodb"),
        "connector/s3": lambda: connector_reference("s3"),
        "connector/jdbc": lambda: connector_reference("jdbc"),
        "jdbc/types": jdbc_type_mapping,
        "admin/rest": admin_reference,
    }


def admin_reference() -> str:
    """The admin API's REST reference, from the OpenAPI document it serves."""
    from meshconnect.admin.openapi import reference_markdown

    return reference_markdown()


def jdbc_type_mapping() -> str:
    """The jdbc sink's MySQL → target column types (auto_create, auto_evolve, ddl: apply)."""
    from meshconnect.connectors.jdbc.typemap import MYSQL_TYPES, mapped

    rows = [
        "| MySQL `mysqlType` | PostgreSQL | MySQL/MariaDB | SQLite |",
        "| --- | --- | --- | --- |",
    ]
    for t in MYSQL_TYPES:
        cells = [mapped(t, d).replace("|", "\\|") for d in ("postgresql", "mysql", "sqlite")]
        rows.append(f"| `{t}` | " + " | ".join(f"`{c}`" for c in cells) + " |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    gens = generators()
    cache: dict[str, str] = {}
    stale: list[str] = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")

        def replace(match: re.Match[str], page: Path = page) -> str:
            name = match.group("name")
            if name not in gens:
                raise SystemExit(f"{page}: unknown generated region {name!r}")
            if name not in cache:
                cache[name] = gens[name]()
            return match.group(1) + cache[name] + match.group(4)

        new = MARKER.sub(replace, text)
        if new != text:
            stale.append(str(page.relative_to(DOCS.parent)))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    missing = []
    for name in builtin_transforms():
        page = DOCS / "transforms" / f"{name}.md"
        marker = f"<!-- BEGIN GENERATED: transform/{name} -->"
        if not page.exists() or marker not in page.read_text(encoding="utf-8"):
            missing.append(str(page.relative_to(DOCS.parent)))
    if missing:
        print(
            "transform pages without their generated region:", ", ".join(missing), file=sys.stderr
        )
        return 1
    if args.check and stale:
        print("out of date (run python docs/generate.py):", ", ".join(stale), file=sys.stderr)
        return 1
    print(("checked" if args.check else "generated") + f": {len(stale)} page(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
