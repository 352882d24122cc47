"""The ``validate`` transform: records must match a JSON Schema from a schema directory.

The directory is the pipeline's schema registry: every ``*.json``, ``*.yaml`` and ``*.yml``
file under it (subdirectories included) is one schema, known by its path relative to the
directory (``order.json``, ``cdc/customer.yaml``) and, when it has one, by its ``$id``. A
relative directory is resolved against the directory of the pipeline file. All schemas are
read, checked against their dialect (``$schema``; Draft 2020-12 when absent) and compiled when
the pipeline is loaded; ``$ref`` between them works by file name or ``$id``.

``schema:`` names the schema a record must match, as a template: ``order.json`` for every
record, or ``{type}.json`` to pick one by the record's type. A record that does not match
raises :class:`~meshconnect.errors.DataError` naming the failing value's path (``data.items[0]
.qty``), the reason and the schema location; the record is not changed. A record whose
``data`` is ``null`` (a tombstone, a delete) is not validated when ``field`` is a data path:
it passes unchanged (drop tombstones with ``filter`` ``where: data != null`` if they must not
pass).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field

from ..api import TransformSpec
from ..errors import ConfigError, DataError
from . import Transform, build_context
from ._common import Options, ReadPathOption
from .paths import FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler, Template
    from ..records import Record

__all__ = ["SPECS", "Validate", "ValidateOptions", "load_schemas"]

_SUFFIXES = (".json", ".yaml", ".yml")
_MESSAGE_LIMIT = 300


class ValidateOptions(Options):
    directory: str = Field(
        description="The schema registry: a directory of JSON Schema files (.json, .yaml), "
        "relative to the pipeline file."
    )
    schema_: str = Field(
        alias="schema",
        description="The schema each record must match: a file name in the directory, or a "
        "template such as '{type}.json'.",
    )
    field: ReadPathOption = Field("data", description="The value to validate (data by default).")
    formats: bool = Field(
        False, description="Also check `format` keywords (date-time, email, uri, …)."
    )


def load_schemas(directory: Path) -> dict[str, Any]:
    """Every schema under ``directory`` by its relative path; ConfigError naming a bad file."""
    if not directory.is_dir():
        raise ConfigError(f"directory: {directory} is not a directory")
    schemas: dict[str, Any] = {}
    for file in sorted(directory.rglob("*")):
        if file.suffix not in _SUFFIXES or not file.is_file():
            continue
        name = file.relative_to(directory).as_posix()
        try:
            text = file.read_text(encoding="utf-8")
            schema = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"schema {file}: cannot be read: {exc}") from None
        if not isinstance(schema, dict | bool):
            raise ConfigError(f"schema {file}: a JSON Schema is an object (or a boolean)")
        schemas[name] = schema
    if not schemas:
        raise ConfigError(f"directory: {directory} holds no .json or .yaml schema files")
    return schemas


def _compile(schemas: dict[str, Any], directory: Path, formats: bool) -> dict[str, Any]:
    """A validator for each schema, with every schema of the directory as a ``$ref`` target."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources = []
    for name, schema in schemas.items():
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        resources.append((name, resource))
        if isinstance(schema, dict) and isinstance(schema.get("$id"), str):
            resources.append((schema["$id"], resource))
    registry: Registry[Any] = Registry().with_resources(resources)
    checker = jsonschema.FormatChecker() if formats else None
    validators = {}
    for name, schema in schemas.items():
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise ConfigError(
                f"schema {directory / name}: not a valid schema at {where}: {exc.message}"
            ) from None
        validators[name] = cls(schema, registry=registry, format_checker=checker)
    return validators


def _render_path(base: FieldPath, parts: Any) -> str:
    text = base.text
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


class Validate(Transform):
    """Checks the value at ``path`` against the schema ``schema`` names."""

    copies_nested_objects = True

    def __init__(
        self, path: FieldPath, validators: dict[str, Any], schema: Template, directory: Path
    ) -> None:
        self.type_name = "validate"
        self.path = path
        self.validators = validators
        self.schema = schema
        self.directory = directory
        self._of_data = path.kind == "data"
        self._only = validators.get(schema.literal) if schema.literal is not None else None
        from jsonschema.exceptions import best_match

        self._best_match = best_match

    def apply(self, record: Record) -> Record:
        validator = self._only
        name = self.schema.literal
        if validator is None:
            name = self.schema.render(record)
            validator = self.validators.get(name)
            if validator is None:
                known = ", ".join(sorted(self.validators))
                raise DataError(
                    f"validate: no schema {name!r} in {self.directory} (it has: {known})"
                )
        if record.data is None and self._of_data:  # a tombstone has nothing to validate
            return record
        _, value = self.path.get(record)  # a missing value is validated as null
        error = self._best_match(validator.iter_errors(value))
        if error is None:
            return record
        message = error.message
        if len(message) > _MESSAGE_LIMIT:
            message = message[: _MESSAGE_LIMIT - 3] + "..."
        at = "/".join(str(p) for p in error.absolute_schema_path)
        raise DataError(
            f"validate: {_render_path(self.path, error.absolute_path)}: {message} "
            f"(schema {name}, at {at or 'the top level'})"
        )


def _make_validate(options: ValidateOptions, compiler: Compiler) -> Validate:
    directory = build_context().base_dir / options.directory
    schemas = load_schemas(directory)
    validators = _compile(schemas, directory, options.formats)
    template = compiler.template(options.schema_, field="schema")
    if template.literal is not None and template.literal not in validators:
        known = ", ".join(sorted(validators))
        raise ConfigError(f"schema: no {template.literal!r} in {directory} (it has: {known})")
    return Validate(parse_path(options.field), validators, template, directory)


SPECS = [
    TransformSpec(
        name="validate",
        options_model=ValidateOptions,
        factory=_make_validate,
        description="Check records against JSON Schemas from a schema directory; a record that "
        "does not match is a data error (dead-lettered with `tolerance: all`).",
        examples=[
            "- type: validate\n  directory: schemas\n  schema: order.json",
            "- type: validate\n  directory: ./schemas\n  schema: '{type}.yaml'\n  formats: true",
        ],
    ),
]
