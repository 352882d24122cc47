"""Transforms that reshape the payload: ``flatten``, ``unflatten``, ``extract_field``,
``hoist_field`` and ``template``.

Each builds the new value first and assigns it last, so a record that raises
:class:`~meshconnect.errors.DataError` is left as it came in. None of them changes the objects
of the old payload in place.

A record whose ``data`` is ``null`` (a tombstone) passes through all of them unchanged (a
``template`` into an attribute or extension still sets it): a delete stays a delete. ``null``
is never missing: ``flatten``/``unflatten`` of a ``null`` object leave it ``null``, and
``extract_field`` of a ``null`` field (or of a field below a ``null``) makes ``data`` null.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from .. import jsonvalue
from ..api import TransformSpec
from ..errors import ConfigError, DataError
from ..expr import sole_placeholder
from . import Transform
from ._common import (
    DataPathOption,
    JsonOption,
    Options,
    PathOption,
    constant_copier,
    fresh_copy,
    kind_of,
    nested,
    own,
)
from .paths import MISSING, FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler
    from ..records import Record

__all__ = [
    "SPECS",
    "ExtractField",
    "ExtractFieldOptions",
    "Flatten",
    "FlattenOptions",
    "HoistField",
    "HoistFieldOptions",
    "TemplateOptions",
    "TemplateTransform",
    "Unflatten",
    "UnflattenOptions",
]


def _object_at(path: FieldPath, record: Record, name: str) -> dict[str, Any] | None:
    """The object at ``path``; None when it is ``null`` (or below one); DataError when it is
    missing or not an object."""
    value = path.find(record)
    if value.__class__ is dict:
        return value
    if value is None:
        return None
    if value is MISSING:
        raise DataError(f"{name}: {path} is missing")
    raise DataError(f"{name}: {path} is {kind_of(value)}, not an object")


# -- flatten / unflatten --------------------------------------------------------------------------


class FlattenOptions(Options):
    field: PathOption = Field(
        "data", description="The object to flatten (data itself, or a data path inside it)."
    )
    separator: str = Field(".", min_length=1, description="Joins the keys of nested objects.")


class Flatten(Transform):
    """Turns nested objects into one object whose keys join the path with ``separator``.

    ``{"a": {"b": 1, "c": {"d": 2}}, "e": [1]}`` becomes ``{"a.b": 1, "a.c.d": 2, "e": [1]}``.
    Arrays and empty objects are kept as values. Two paths giving the same key is a DataError.
    """

    copies_nested_objects = True

    def __init__(self, path: FieldPath, separator: str) -> None:
        self.type_name = "flatten"
        self.path = path
        self.separator = separator
        self._nested = nested([path])

    def apply(self, record: Record) -> Record:
        source = _object_at(self.path, record, "flatten")
        if source is None:  # null stays null
            return record
        out: dict[str, Any] = {}
        self._walk(source, "", out)
        own(record, self._nested)
        self.path.set(record, out, create=False)
        return record

    def _walk(self, node: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
        sep = self.separator
        for key, value in node.items():
            name = f"{prefix}{sep}{key}" if prefix else key
            if value.__class__ is dict and value:
                self._walk(value, name, out)
            elif name in out:
                raise DataError(f"flatten: two fields flatten to the key {name!r}")
            else:
                out[name] = value


class UnflattenOptions(Options):
    field: PathOption = Field(
        "data", description="The object to unflatten (data itself, or a data path inside it)."
    )
    separator: str = Field(".", min_length=1, description="Splits keys into nested objects.")


class Unflatten(Transform):
    """The inverse of ``flatten``: ``{"a.b": 1, "a.c": 2}`` becomes ``{"a": {"b": 1, "c": 2}}``.

    A key that is both a value and an object (``{"a": 1, "a.b": 2}``) is a DataError. So is
    a payload that would nest deeper than :data:`jsonvalue.MAX_DEPTH`: a key of a thousand
    separators would otherwise make an object that no JSON reader, copy or check downstream
    can take (every value a source reads is at most that deep).
    """

    copies_nested_objects = True

    def __init__(self, path: FieldPath, separator: str) -> None:
        self.type_name = "unflatten"
        self.path = path
        self.separator = separator
        self._nested = nested([path])
        # How deep the unflattened object may be: the payload's limit less the levels above it.
        self._max_depth = jsonvalue.MAX_DEPTH - len(path.segments)

    def apply(self, record: Record) -> Record:
        source = _object_at(self.path, record, "unflatten")
        if source is None:  # null stays null
            return record
        sep = self.separator
        out: dict[str, Any] = {}
        made: set[int] = set()  # the objects this made (only those may take more keys)
        deepest, deepest_key = 1, ""
        for key, value in source.items():
            parts = key.split(sep) if sep in key else [key]
            if len(parts) > deepest:
                deepest, deepest_key = len(parts), key
                if deepest > self._max_depth:  # before making a thousand levels
                    self._too_deep(deepest_key)
            node: Any = out
            for depth, part in enumerate(parts[:-1]):
                child = node.get(part)
                if child is None and part not in node:
                    child = node[part] = {}
                    made.add(id(child))
                elif id(child) not in made:
                    where = sep.join(parts[: depth + 1])
                    raise DataError(f"unflatten: {where!r} is both a value and an object")
                node = child
            last = parts[-1]
            if last in node:
                raise DataError(f"unflatten: {key!r} is both a value and an object")
            node[last] = value
        limit = self._max_depth
        if deepest > 1 and jsonvalue.depth(out, limit) > limit:  # nested values count too
            self._too_deep(deepest_key)
        own(record, self._nested)
        self.path.set(record, out, create=False)
        return record

    def _too_deep(self, key: str) -> None:
        shown = key if len(key) <= 60 else f"{key[:60]}…"
        raise DataError(
            f"unflatten: {self.path}: the key {shown!r} would nest objects more than "
            f"{jsonvalue.MAX_DEPTH} levels deep in data"
        )


def _make_flatten(options: FlattenOptions, compiler: Compiler) -> Flatten:
    return Flatten(_object_path(options.field), options.separator)


def _make_unflatten(options: UnflattenOptions, compiler: Compiler) -> Unflatten:
    return Unflatten(_object_path(options.field), options.separator)


def _object_path(text: str) -> FieldPath:
    path = parse_path(text)
    if path.kind != "data":
        raise ConfigError(f"field: {path} is an attribute; only data holds objects")
    return path


# -- extract_field / hoist_field ------------------------------------------------------------------


class ExtractFieldOptions(Options):
    field: DataPathOption = Field(
        description="The field whose value becomes the whole of data, e.g. data.after."
    )


class ExtractField(Transform):
    """Replaces ``data`` by the value at ``path`` (a missing value is a DataError; ``null``,
    also below a ``null`` object, makes ``data`` null; a tombstone stays one)."""

    copies_nested_objects = True

    def __init__(self, path: FieldPath) -> None:
        self.type_name = "extract_field"
        self.path = path

    def apply(self, record: Record) -> Record:
        value = self.path.find(record)
        if value is MISSING:
            raise DataError(f"extract_field: {self.path} is missing")
        if value is None and record.data is None:  # a tombstone stays as it came
            return record
        record.data = value
        record.null_data = value is None  # an extracted null is a null payload
        return record


def _make_extract_field(options: ExtractFieldOptions, compiler: Compiler) -> ExtractField:
    return ExtractField(parse_path(options.field))


class HoistFieldOptions(Options):
    field: DataPathOption = Field(
        description="Where the old data goes in the new object, e.g. data.payload gives "
        "{payload: <old data>}; data.a.b gives {a: {b: <old data>}}."
    )


class HoistField(Transform):
    """Wraps ``data`` in a new object: ``data`` becomes ``{key: {…: old data}}``."""

    copies_nested_objects = True

    def __init__(self, path: FieldPath) -> None:
        self.type_name = "hoist_field"
        self.keys = [str(seg) for seg in path.segments]

    def apply(self, record: Record) -> Record:
        value = record.data
        if value is None:  # a tombstone stays one (a delete must not become an object)
            return record
        for key in reversed(self.keys):
            value = {key: value}
        record.data = value
        return record


def _make_hoist_field(options: HoistFieldOptions, compiler: Compiler) -> HoistField:
    path = parse_path(options.field)
    if any(isinstance(seg, int) for seg in path.segments):
        raise ConfigError(f"field: {path}: hoisting makes objects, not arrays")
    return HoistField(path)


# -- template -------------------------------------------------------------------------------------

Builder = Callable[["Record"], Any]


class TemplateOptions(Options):
    template: JsonOption = Field(
        description="The new value: any JSON value. Each string in it is a template; a string "
        "that is exactly one {expression}, or a path written $.data.x, keeps the value's type "
        "(number, object, …)."
    )
    field: PathOption = Field("data", description="Where the result goes (data itself by default).")


class TemplateTransform(Transform):
    """Builds a new value from a template object and puts it at ``path``."""

    copies_nested_objects = True

    def __init__(self, path: FieldPath, build: Builder) -> None:
        self.type_name = "template"
        self.path = path
        self.build = build
        self._nested = nested([path])
        self._into_data = path.kind == "data"

    def apply(self, record: Record) -> Record:
        if record.data is None and self._into_data:  # a tombstone stays one
            return record
        value = self.build(record)
        own(record, self._nested)
        self.path.set(record, value)
        return record


def _compile_tree(node: Any, compiler: Compiler, where: str) -> tuple[Builder | None, Any]:
    """``(builder, None)`` for a node that depends on the record, ``(None, value)`` for a
    constant one."""
    if isinstance(node, str):
        stripped = node.strip()
        if stripped.startswith("$.") and len(stripped) > 2:  # EventMesh's JSONPath: $.data.x
            return compiler.expression(stripped[2:], field=where), None
        if (expression := sole_placeholder(stripped)) is not None:
            return compiler.expression(expression, field=where), None
        template = compiler.template(node, field=where)
        if template.is_literal:
            return None, template.literal
        return template.render, None
    if isinstance(node, dict):
        parts = [
            (key, *_compile_tree(value, compiler, f"{where}.{key}")) for key, value in node.items()
        ]
        if all(build is None for _, build, _ in parts):
            return None, {key: const for key, _, const in parts}
        steps = [(key, build, const) for key, build, const in parts]
        mutable = [isinstance(const, dict | list) for _, _, const in steps]

        def build_object(record: Record) -> dict[str, Any]:
            return {
                key: build(record) if build is not None else fresh_copy(const) if m else const
                for (key, build, const), m in zip(steps, mutable, strict=True)
            }

        return build_object, None
    if isinstance(node, list):
        items = [_compile_tree(value, compiler, f"{where}[{i}]") for i, value in enumerate(node)]
        if all(build is None for build, _ in items):
            return None, [const for _, const in items]

        def build_array(record: Record) -> list[Any]:
            return [
                build(record) if build is not None else fresh_copy(const) for build, const in items
            ]

        return build_array, None
    return None, node


def _make_template(options: TemplateOptions, compiler: Compiler) -> TemplateTransform:
    build, const = _compile_tree(options.template, compiler, "template")
    if build is None:
        copy_constant = constant_copier(const)

        def build_constant(record: Record) -> Any:
            return copy_constant()

        build = build_constant
    return TemplateTransform(parse_path(options.field), build)


# -- registration ---------------------------------------------------------------------------------

SPECS = [
    TransformSpec(
        name="flatten",
        options_model=FlattenOptions,
        factory=_make_flatten,
        description="Turn nested objects into one flat object with joined keys (a.b.c).",
        examples=["- type: flatten\n  separator: _"],
    ),
    TransformSpec(
        name="unflatten",
        options_model=UnflattenOptions,
        factory=_make_unflatten,
        description="Turn joined keys (a.b.c) back into nested objects.",
        examples=["- type: unflatten\n  field: data.row\n  separator: __"],
    ),
    TransformSpec(
        name="extract_field",
        options_model=ExtractFieldOptions,
        factory=_make_extract_field,
        description="Replace data by one of its fields (e.g. the `after` image of a CDC row).",
        examples=["- type: extract_field\n  field: data.after"],
    ),
    TransformSpec(
        name="hoist_field",
        options_model=HoistFieldOptions,
        factory=_make_hoist_field,
        description="Wrap data in a new object under a key.",
        examples=["- type: hoist_field\n  field: data.payload"],
    ),
    TransformSpec(
        name="template",
        options_model=TemplateOptions,
        factory=_make_template,
        description="Build new data from a template whose strings are expressions or templates "
        "(like EventMesh's transformer).",
        examples=[
            "- type: template\n  template:\n    user: '{data.name}'\n    n: '{data.num}'\n"
            "    label: 'order {data.id} from {source}'\n    tags: ['{data.kind}', fixed]"
        ],
    ),
]
