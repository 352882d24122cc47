"""Transforms that set, remove, keep and rename fields: ``insert_field``, ``replace_field``,
``drop_fields``.

Every ``apply`` checks everything that can fail before it changes the record (or works on a
:func:`~._common.detach`-ed copy of ``data`` and assigns it at the end), so a record that raises
:class:`~meshconnect.errors.DataError` goes to the dead-letter topic as it came in.

A record whose ``data`` is ``null`` (a tombstone) keeps it: ``insert_field`` into or from
``data`` and ``replace_field`` pass it through unchanged (as Kafka Connect's ``InsertField``
and ``ReplaceField`` do); what they do to attributes and extensions, and ``drop_fields``, they
do to a tombstone too.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..api import TransformSpec
from ..errors import ConfigError, DataError
from . import Transform
from ._common import (
    DataPathOption,
    JsonOption,
    Options,
    PathOption,
    ReadPathOption,
    constant_copier,
    detach,
    fresh_copy,
    kind_of,
    nested,
    own,
)
from .paths import MISSING, FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler, Template
    from ..records import Record

__all__ = [
    "SPECS",
    "DropFields",
    "DropFieldsOptions",
    "InsertField",
    "InsertFieldOptions",
    "ReplaceField",
    "ReplaceFieldOptions",
]


class Scratch:
    """A stand-in record holding only ``data``: field paths work on a payload through it."""

    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def scratch(data: Any) -> Record:
    return cast("Record", Scratch(data))


# -- insert_field ---------------------------------------------------------------------------------


class InsertFieldOptions(Options):
    field: PathOption = Field(description="Where to put the value, e.g. data.region.")
    value: JsonOption = Field(
        None, description="A fixed value (any JSON value). Give one of value, template or from."
    )
    template: str | None = Field(
        None, description="A template rendered per record, e.g. '{data.city}, {data.country}'."
    )
    from_: ReadPathOption | None = Field(
        None,
        alias="from",
        description="Copy the value at this path: a CloudEvent attribute (subject, time, id, "
        "source, type, …), an extension (partitionkey), topic (the topic the record is routed "
        "to) or a data path. A missing value is a data error; null is copied.",
    )

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: JsonOption, info: ValidationInfo) -> JsonOption:
        if "field" in info.data:  # the path was valid
            _check_fits(parse_path(info.data["field"]), value)
        return value

    @model_validator(mode="after")
    def _check_one_source(self) -> InsertFieldOptions:
        if len({"value", "template", "from_"} & self.model_fields_set) != 1:
            raise ValueError("give exactly one of value, template or from")
        return self


def _check_fits(path: FieldPath, value: Any) -> None:
    """A fixed value must suit the attribute it goes to (it would fail on every record)."""
    if path.kind == "attribute":
        if value is None and not path.removable:
            raise ValueError(f"{path} cannot be null")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path} takes a string value")
    elif path.kind == "extension" and isinstance(value, float | Decimal | list | dict):
        raise ValueError(f"extension {path} takes a string, integer or boolean value")


class InsertField(Transform):
    """Sets the value at ``path``, making missing objects on the way.

    The value is ``value`` (a fixed JSON value, copied per record when it is an object or an
    array so records never share it), the rendered ``template``, or a copy of the value at
    ``source``.
    """

    copies_nested_objects = True

    def __init__(
        self,
        path: FieldPath,
        value: Any = None,
        template: Template | None = None,
        source: FieldPath | None = None,
    ) -> None:
        self.type_name = "insert_field"
        self.path = path
        self.value = value
        self.template = template
        self.source = source
        mutable = isinstance(value, dict | list)
        self._copy = constant_copier(value) if mutable else None
        self._nested = nested([path])
        fixed = template is None and source is None and not mutable
        top = path.kind == "data" and len(path.segments) == 1
        self._key = (
            path.segments[0] if fixed and top and isinstance(path.segments[0], str) else None
        )
        #: Whether it writes into or copies from data (then a tombstone is left alone).
        self._uses_data = path.kind == "data" or (source is not None and source.kind == "data")

    def apply(self, record: Record) -> Record:
        key = self._key
        if key is not None and record.data.__class__ is dict:  # a fixed scalar, top level
            record.data[key] = self.value
            return record
        if record.data is None and self._uses_data:  # a tombstone stays one
            return record
        if self._nested:
            own(record, self._nested)
        template = self.template
        if template is not None:
            self.path.set(record, template.render(record))
        elif self.source is not None:
            value = self.source.find(record)
            if value is MISSING:
                raise DataError(f"insert_field: {self.source} is missing")
            self.path.set(record, fresh_copy(value))
        elif self._copy is not None:
            self.path.set(record, self._copy())
        else:
            self.path.set(record, self.value)
        return record


def _make_insert_field(options: InsertFieldOptions, compiler: Compiler) -> InsertField:
    path = parse_path(options.field)
    if options.from_ is not None:
        return InsertField(path, source=parse_path(options.from_))
    if "template" in options.model_fields_set and options.template is not None:
        template = compiler.template(options.template, field="template")
        if not template.is_literal:
            return InsertField(path, template=template)
        return InsertField(path, template.literal)
    return InsertField(path, options.value)


# -- replace_field --------------------------------------------------------------------------------


class ReplaceFieldOptions(Options):
    include: list[DataPathOption] | None = Field(
        None,
        description="Keep only these fields of data (nested paths keep the objects on the way); "
        "the rest is dropped. Missing ones are skipped.",
    )
    exclude: list[DataPathOption] = Field(
        default_factory=list, description="Drop these fields of data (after include)."
    )
    rename: dict[DataPathOption, DataPathOption] = Field(
        default_factory=dict,
        description="Move fields to new paths (after include and exclude), all at once as one "
        "mapping, so {data.a: data.b, data.b: data.a} swaps them; e.g. {data.cust_id: "
        "data.customer.id}. A missing field is skipped; a target that exists is replaced.",
    )

    @model_validator(mode="after")
    def _check_something(self) -> ReplaceFieldOptions:
        if self.include is None and not self.exclude and not self.rename:
            raise ValueError("give at least one of include, exclude or rename")
        return self


class ReplaceField(Transform):
    """Keeps (``include``), drops (``exclude``) and renames fields of an object payload."""

    copies_nested_objects = True

    def __init__(
        self,
        include: list[FieldPath] | None,
        exclude: list[FieldPath],
        rename: list[tuple[FieldPath, FieldPath]],
    ) -> None:
        self.type_name = "replace_field"
        if include is not None:
            # An included path inside another included one adds nothing.
            include = [p for p in include if not any(q != p and q.contains(p) for q in include)]
        self.include = include
        self.exclude = exclude
        self.rename = rename
        self._rename_paths = [path for pair in rename for path in pair]
        self._sources_deepest_first = sorted(
            ((i, source, target) for i, (source, target) in enumerate(rename)),
            key=lambda item: -len(item[1].segments),
        )

    def apply(self, record: Record) -> Record:
        data = record.data
        if data.__class__ is not dict:
            if data is None:  # a tombstone: nothing to keep, drop or rename
                return record
            raise DataError(f"replace_field: data is {kind_of(data)}, not an object")
        work = scratch(data)
        if self.include is not None:
            kept: dict[str, Any] = {}
            for path in self.include:
                found, value = path.get(work)
                if found:
                    path.set(scratch(kept), value)
            work.data = kept
        if self.exclude:
            work.data = detach(work.data, self.exclude)
            for path in self.exclude:
                path.delete(work)
        if self.rename:
            # One simultaneous mapping, as Kafka's ReplaceField renames: every source is taken
            # out (the deepest first, so an object moves without the fields moved out of it)
            # before any target is set, so {a: b, b: a} swaps.
            work.data = detach(work.data, self._rename_paths)
            moves: list[tuple[int, FieldPath, Any]] = []
            for order, source, target in self._sources_deepest_first:
                found, value = source.get(work)
                if found:
                    source.delete(work)
                    moves.append((order, target, value))
            moves.sort(key=lambda move: move[0])
            for _, target, value in moves:
                target.set(work, value)
        record.data = work.data
        return record


def _make_replace_field(options: ReplaceFieldOptions, compiler: Compiler) -> ReplaceField:
    include = None
    if options.include is not None:
        include = [parse_path(text) for text in options.include]
        for path in include:
            if any(isinstance(seg, int) for seg in path.segments):
                raise ConfigError(f"include: {path}: array indexes cannot be included")
    exclude = [parse_path(text) for text in options.exclude]
    rename = [(parse_path(a), parse_path(b)) for a, b in options.rename.items()]
    for source, target in rename:
        if source.contains(target) or target.contains(source):
            raise ConfigError(f"rename: {source} and {target} are inside one another")
    targets = [target for _, target in rename]
    for i, target in enumerate(targets):
        for other in targets[i + 1 :]:
            if target.contains(other) or other.contains(target):
                which = "the same target" if target == other else "targets inside one another"
                raise ConfigError(f"rename: {target} and {other} are {which}")
    return ReplaceField(include, exclude, rename)


# -- drop_fields ----------------------------------------------------------------------------------


class DropFieldsOptions(Options):
    fields: list[PathOption] = Field(
        min_length=1,
        description="Paths to remove: data fields, extensions (partitionkey) or optional "
        "attributes (subject, time, …). A missing one is skipped.",
    )


class DropFields(Transform):
    """Removes the values at ``paths`` (data fields, extensions, optional attributes)."""

    copies_nested_objects = True

    def __init__(self, paths: list[FieldPath]) -> None:
        self.type_name = "drop_fields"
        self.data_paths = [p for p in paths if p.kind == "data"]
        self.other_paths = [p for p in paths if p.kind != "data"]
        # Top-level keys of an object payload: a plain pop, nothing can fail.
        shallow = all(len(p.segments) == 1 and isinstance(p.segments[0], str) for p in paths)
        self._keys: list[str] | None = (
            [cast(str, p.segments[0]) for p in paths] if shallow and not self.other_paths else None
        )
        if self._keys is not None and len(self._keys) == 1:
            self.apply = self._drop_one(self._keys[0])  # type: ignore[method-assign,assignment]

    def _drop_one(self, key: str) -> Callable[[Record], Record]:
        general = self.apply

        def apply(record: Record) -> Record:
            data = record.data
            if data.__class__ is dict:
                data.pop(key, None)
                return record
            return general(record)

        return apply

    def apply(self, record: Record) -> Record:
        data = record.data
        keys = self._keys
        if keys is not None and data.__class__ is dict:
            for key in keys:
                data.pop(key, None)
            return record
        if self.data_paths:
            work = scratch(detach(data, self.data_paths))
            for path in self.data_paths:
                path.delete(work)
            data = work.data
        for path in self.other_paths:
            path.delete(record)  # optional attributes and extensions: cannot fail
        record.data = data
        return record


def _make_drop_fields(options: DropFieldsOptions, compiler: Compiler) -> DropFields:
    paths = [parse_path(text) for text in options.fields]
    for path in paths:
        if not path.removable:
            raise ConfigError(f"fields: {path} cannot be removed: every record has one")
        if path.kind == "data" and not path.segments:
            raise ConfigError("fields: data itself cannot be dropped (drop the fields inside it)")
    return DropFields(paths)


# -- registration ---------------------------------------------------------------------------------

SPECS = [
    TransformSpec(
        name="insert_field",
        options_model=InsertFieldOptions,
        factory=_make_insert_field,
        description="Set a field to a fixed value, a template, or a copy of a CloudEvent "
        "attribute or another field, creating missing objects.",
        examples=[
            "- type: insert_field\n  field: data.region\n  value: eu\n"
            "  when: \"data.country == 'DE'\"",
            "- type: insert_field\n  field: partitionkey\n  template: '{data.customer.id}'",
            "- type: insert_field\n  field: data.received_at\n  from: time",
        ],
    ),
    TransformSpec(
        name="replace_field",
        options_model=ReplaceFieldOptions,
        factory=_make_replace_field,
        description="Keep only some fields, drop some, and rename (move) others, at any depth.",
        examples=[
            "- type: replace_field\n  include: [data.id, data.customer.id, data.total]",
            "- type: replace_field\n  exclude: [data.internal]\n"
            "  rename: {data.cust_id: data.customer.id, data.amt: data.total}",
        ],
    ),
    TransformSpec(
        name="drop_fields",
        options_model=DropFieldsOptions,
        factory=_make_drop_fields,
        description="Remove fields, extensions or optional attributes (missing ones are skipped).",
        examples=[
            "- type: drop_fields\n  fields: [data.password, data.customer.ssn, partitionkey]"
        ],
    ),
]
