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

Numbers
    Record data holds exact numbers (``int`` and ``Decimal``, see :mod:`meshconnect.jsonvalue`),
    and so do the schemas: a ``.json`` schema is read with the same reader, and a YAML schema's
    numbers with a fraction are Decimals of their text too (``minimum: 0.1`` is the decimal
    ``0.1``, so the data ``0.1`` meets it). A Decimal with no fraction (``5.0``) is an
    ``integer`` where the dialect says so (draft 6 on, as for floats); ``multipleOf`` is
    decided exactly (``1.10`` is a multiple of ``0.01``; a binary float division would say
    no). Messages show numbers as JSON writes them (``0.09``, not ``Decimal('0.09')``).

Patterns
    ``pattern`` and ``patternProperties`` (and the ``additionalProperties`` and
    ``unevaluatedProperties`` they affect) run on RE2, in time linear in the text, as the
    expressions' ``matches`` does: jsonschema runs them with Python's backtracking ``re``,
    where ``"pattern": "^(a+)+$"`` against 40 ``a`` and a ``b`` in a record ran for hours and
    stalled the worker. A schema whose pattern RE2 cannot run (lookaround, backreferences) is
    refused when the pipeline is loaded, naming the schema and where the pattern is.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field

from .. import jsonvalue
from ..api import TransformSpec
from ..config.yamlpos import exact_float
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
_DECIMAL_REPR = re.compile(r"Decimal\('([-+0-9.eE]+)'\)")


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
            if file.suffix == ".json":
                schema = jsonvalue.loads(text, max_depth=None)
            else:
                schema = yaml.load(text, Loader=_ExactLoader)  # a SafeLoader
        except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"schema {file}: cannot be read: {exc}") from None
        if not isinstance(schema, dict | bool):
            raise ConfigError(f"schema {file}: a JSON Schema is an object (or a boolean)")
        schemas[name] = schema
    if not schemas:
        raise ConfigError(f"directory: {directory} holds no .json or .yaml schema files")
    return schemas


class _ExactLoader(yaml.SafeLoader):
    """YAML's safe loader with floats as Decimals of their text (``.inf``/``.nan`` as floats)."""


_ExactLoader.add_constructor("tag:yaml.org,2002:float", exact_float)


def _as_exact(value: Any) -> Decimal | None:
    """A JSON number as an exact Decimal (a float as its shortest text); None if not finite."""
    if isinstance(value, float):
        value = Decimal(repr(value))
    number = value if isinstance(value, Decimal) else Decimal(value)
    return number if number.is_finite() else None


def is_multiple(instance: Any, divisor: Any) -> bool:
    """Whether ``instance`` is an integer multiple of ``divisor`` (numbers, ``divisor`` > 0),
    exactly and in bounded time, whatever the exponents (``1e400`` of ``0.01`` included)."""
    a, b = _as_exact(instance), _as_exact(divisor)
    if a is None or b is None or not b:
        return False
    _, a_digits, a_exp = a.as_tuple()
    _, b_digits, b_exp = b.as_tuple()
    assert isinstance(a_exp, int) and isinstance(b_exp, int)
    a_coef = int(Decimal((0, a_digits, 0)))
    b_coef = int(Decimal((0, b_digits, 0)))
    if a_coef == 0:
        return True
    shift = a_exp - b_exp
    if shift >= 0:
        # b_coef divides a_coef * 10**shift iff it divides a_coef * 10**min(shift, m), m being
        # at least b_coef's multiplicity of 2 and of 5: bounded by its bit length.
        return a_coef * 10 ** min(shift, b_coef.bit_length()) % b_coef == 0
    if -shift >= len(a_digits):  # b_coef * 10**-shift > a_coef > 0
        return False
    return a_coef % (b_coef * 10**-shift) == 0


def _multiple_of(validator: Any, divisor: Any, instance: Any, schema: Any) -> Any:
    """``multipleOf``, exact for ints, floats and Decimals alike."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "number"):
        return
    if not is_multiple(instance, divisor):
        yield ValidationError(f"{instance!s} is not a multiple of {divisor!s}")


def _exact_numbers(cls: Any) -> Any:
    """``cls`` (a jsonschema validator class) taking Decimals as JSON numbers: integral ones as
    integers where the dialect counts ``1.0`` as one, ``multipleOf`` exact."""
    import jsonschema

    checker = cls.TYPE_CHECKER
    if checker.is_type(1.0, "integer"):
        plain = checker._type_checkers["integer"]

        def is_integer(checker: Any, instance: Any) -> bool:
            if isinstance(instance, Decimal):
                return instance.is_finite() and instance == instance.to_integral_value()
            return bool(plain(checker, instance))

        checker = checker.redefine("integer", is_integer)
    return jsonschema.validators.extend(
        cls, validators={"multipleOf": _multiple_of}, type_checker=checker
    )


#: Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = frozenset(
    [
        "items",
        "additionalItems",
        "contains",
        "not",
        "if",
        "then",
        "else",
        "additionalProperties",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
    ]
)
_SUBSCHEMAS = frozenset(["allOf", "anyOf", "oneOf", "prefixItems", "items"])
_NAMED_SUBSCHEMAS = frozenset(
    ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"]
)


def _patterns(schema: Any, at: str = "") -> list[tuple[str, str]]:
    """Every regular expression of ``schema`` (``pattern`` values, ``patternProperties``
    keys), with where it is; data keywords (``const``, ``enum``, ``default``) are not read."""
    if not isinstance(schema, dict):
        return []
    found: list[tuple[str, str]] = []
    if isinstance(schema.get("pattern"), str):
        found.append((schema["pattern"], f"{at}pattern"))
    for key, value in schema.items():
        if key == "patternProperties" and isinstance(value, dict):
            found += [(name, f"{at}patternProperties/{name}") for name in value]
        if key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
            for name, sub in value.items():
                found += _patterns(sub, f"{at}{key}/{name}/")
        elif key in _SUBSCHEMAS and isinstance(value, list):
            for i, sub in enumerate(value):
                found += _patterns(sub, f"{at}{key}/{i}/")
        elif key in _SUBSCHEMA:
            found += _patterns(value, f"{at}{key}/")
    return found


class _LinearRe:
    """Stands in for the ``re`` module in jsonschema's keyword modules, whose only call is
    ``re.search(pattern, text)``: the search runs on RE2 (linear time). A pattern RE2 cannot
    run, which the ``validate`` transform refuses at load, keeps Python's ``re`` for whoever
    else in the process uses jsonschema."""

    def search(self, pattern: str, string: str, flags: int = 0) -> Any:
        from ..expr._regex import compile_pattern

        try:
            compiled = compile_pattern(pattern)
        except ValueError:
            return re.search(pattern, string, flags)
        return compiled.search(string)

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)


def _linear_patterns() -> None:
    """Make jsonschema's pattern keywords search with RE2 (see :class:`_LinearRe`)."""
    import importlib

    for module_name in ("_keywords", "_legacy_keywords", "_utils"):
        try:
            module = importlib.import_module(f"jsonschema.{module_name}")
        except ImportError:
            continue
        if getattr(module, "re", None) is re:
            module.re = _LinearRe()  # type: ignore[attr-defined]


def _compile(schemas: dict[str, Any], directory: Path, formats: bool) -> dict[str, Any]:
    """A validator for each schema, with every schema of the directory as a ``$ref`` target."""
    import jsonschema

    from ..expr._regex import compile_pattern

    _linear_patterns()
    for name, schema in schemas.items():
        for pattern, at in _patterns(schema):
            try:
                compile_pattern(pattern)
            except ValueError as exc:
                raise ConfigError(
                    f"schema {directory / name}: the pattern at {at} cannot run in linear "
                    f"time on RE2 (no lookaround or backreferences): {exc}"
                ) from None
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
        exact = _exact_numbers(cls)
        validators[name] = exact(schema, registry=registry, format_checker=checker)
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
        message = _DECIMAL_REPR.sub(r"\1", error.message)  # jsonschema writes repr()s
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
