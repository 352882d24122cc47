"""Transforms that decide where a record goes and what it is called: ``filter``, ``route``,
``set_key`` and ``set_attributes``.

``route`` sets ``record.topic``; the worker's router gives the pipeline's ``topic:`` only to
records that have none, so a routed record keeps its topic. With ``fanout`` a record matching
several rules becomes several records (the first is the record itself, the others deep copies
with the same CloudEvent ``id``), one per topic. ``route`` is refused in a sink's
``transforms:``: those records are already stored in their topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from .. import jsonvalue
from ..api import TransformSpec
from ..errors import ConfigError, DataError
from ..expr import render_value
from . import Transform, build_context
from ._common import Options, ReadPathOption, fresh_copy, set_all
from .paths import MISSING, FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler, Predicate, Template
    from ..records import Record

__all__ = [
    "SPECS",
    "Filter",
    "FilterOptions",
    "Route",
    "RouteOptions",
    "RouteRule",
    "SetAttributes",
    "SetAttributesOptions",
    "SetKey",
    "SetKeyOptions",
]


# -- filter ---------------------------------------------------------------------------------------


class FilterOptions(Options):
    where: str = Field(
        description="Keep the records for which this expression is true; drop the others."
    )


class Filter(Transform):
    """Keeps the records for which ``predicate`` is true."""

    copies_nested_objects = True

    def __init__(self, predicate: Predicate) -> None:
        self.type_name = "filter"
        self.predicate = predicate

        def apply(record: Record) -> Record | None:  # a closure: no attribute lookups
            return record if predicate(record) else None

        # A compiled condition makes the step itself: one call per record, not two.
        as_filter = getattr(predicate, "as_filter", None)
        self.apply = as_filter() if as_filter is not None else apply  # type: ignore[method-assign]

    def apply(self, record: Record) -> Record | None:
        return record if self.predicate(record) else None


def _make_filter(options: FilterOptions, compiler: Compiler) -> Filter:
    return Filter(compiler.predicate(options.where, field="where"))


# -- route ----------------------------------------------------------------------------------------


class RouteRule(Options):
    when: str = Field(description="The condition for this rule.")
    topic: str = Field(description="The topic (a template) of the records it matches.")


class RouteOptions(Options):
    topic: str | None = Field(
        None, description="The topic, a template such as 'orders.{data.country}'."
    )
    rules: list[RouteRule] | None = Field(
        None,
        description="Ordered rules [{when: EXPR, topic: TEMPLATE}]: the first that matches "
        "sets the topic (every one that matches, with fanout).",
    )
    default: str | None = Field(
        None,
        description="The topic (a template) when no rule matches. Without it such records keep "
        "the pipeline's topic.",
    )
    fanout: bool = Field(
        False, description="Send a copy of the record to the topic of every rule that matches."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> RouteOptions:
        if (self.topic is None) == (self.rules is None):
            raise ValueError("give exactly one of topic or rules")
        if self.rules is not None and not self.rules:
            raise ValueError("rules: give at least one rule")
        if self.topic is not None and ("default" in self.model_fields_set or self.fanout):
            raise ValueError("default and fanout only apply to rules")
        return self


def _topic(template: Template, record: Record) -> str:
    topic = template.render(record)
    if not topic:
        raise DataError(f"route: the topic template {template.text!r} rendered ''")
    return topic


class Route(Transform):
    """Sets ``record.topic`` from a template or from the first matching rule (or every
    matching rule, with ``fanout``)."""

    copies_nested_objects = True

    def __init__(
        self,
        rules: list[tuple[Predicate | None, Template]],
        default: Template | None = None,
        fanout: bool = False,
    ) -> None:
        self.type_name = "route"
        self.rules = rules
        self.default = default
        self.fanout = fanout
        only = rules[0] if len(rules) == 1 and rules[0][0] is None else None
        self._only: Template | None = only[1] if only is not None else None

    def apply(self, record: Record) -> Record | list[Record]:
        only = self._only
        if only is not None:
            if only.literal is not None:
                record.topic = only.literal
            else:
                record.topic = _topic(only, record)
            return record
        if not self.fanout:
            for when, template in self.rules:
                if when is None or when(record):
                    record.topic = _topic(template, record)
                    return record
            if self.default is not None:
                record.topic = _topic(self.default, record)
            return record
        topics = [_topic(t, record) for when, t in self.rules if when is None or when(record)]
        if not topics:
            if self.default is not None:
                record.topic = _topic(self.default, record)
            return record
        topics = list(dict.fromkeys(topics))  # two rules naming one topic: one copy
        copies = [_clone(record) for _ in topics[1:]]
        record.topic = topics[0]
        for copy, topic in zip(copies, topics[1:], strict=True):
            copy.topic = topic
        return [record, *copies]


def _clone(record: Record) -> Record:
    copy = record.copy()
    copy.data = fresh_copy(record.data)
    return copy


def _make_route(options: RouteOptions, compiler: Compiler) -> Route:
    if build_context().sink:
        raise ConfigError(
            "route only works in a pipeline's transforms: a sink's records are already stored "
            "in their topic (route them in the pipeline that writes them, or give the sink "
            "`topics:`)"
        )
    if options.topic is not None:
        return Route([(None, compiler.template(options.topic, field="topic"))])
    assert options.rules is not None
    rules: list[tuple[Predicate | None, Template]] = [
        (
            compiler.predicate(rule.when, field=f"rules[{i}].when"),
            compiler.template(rule.topic, field=f"rules[{i}].topic"),
        )
        for i, rule in enumerate(options.rules)
    ]
    default = (
        compiler.template(options.default, field="default") if options.default is not None else None
    )
    return Route(rules, default, options.fanout)


# -- set_key --------------------------------------------------------------------------------------


def _check_extension(name: str) -> str:
    try:
        path = parse_path(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if path.kind != "extension":
        raise ValueError(f"{name} is not an extension name")
    return name


class SetKeyOptions(Options):
    fields: list[ReadPathOption] = Field(
        min_length=1,
        description="The fields the key is made of. One field: its value as text; several: "
        "the compact JSON array of their values.",
    )
    extension: str = Field(
        "partitionkey", description="The extension attribute that holds the key."
    )

    _check_name = field_validator("extension")(_check_extension)


class SetKey(Transform):
    """Sets the ``partitionkey`` extension (the record's key) from fields.

    A field that is ``null`` (or below a ``null``) or missing is a DataError; a tombstone
    (``null`` data) keeps the key it came with when the key is made of data fields.
    """

    copies_nested_objects = True

    def __init__(self, paths: list[FieldPath], extension: str) -> None:
        self.type_name = "set_key"
        self.paths = paths
        self.extension = extension
        self._from_data = any(path.kind == "data" for path in paths)
        segments = paths[0].segments if len(paths) == 1 and paths[0].kind == "data" else ()
        keys = tuple(seg for seg in segments if isinstance(seg, str))
        if keys and len(keys) == len(segments):
            self.apply = self._from_keys(keys)  # type: ignore[method-assign,assignment]

    def _from_keys(self, keys: tuple[str, ...]) -> Callable[[Record], Record]:
        """``apply`` for one ``data.a.b`` path: nested dict lookups, the general path only
        for payloads that are not nested objects all the way."""
        general = self.apply
        name = self.extension

        def apply(record: Record) -> Record:
            node = record.data
            for key in keys:
                if node.__class__ is not dict:
                    return general(record)  # null on the way, or a wrong shape
                node = node.get(key)
            if node is None:
                return general(record)  # missing or null: its DataError
            record.extensions[name] = node if node.__class__ is str else render_value(node)
            return record

        return apply

    def _value(self, record: Record, path: FieldPath) -> Any:
        value = path.find(record)
        if value is None or value is MISSING:
            raise DataError(f"set_key: {path} is {'null' if value is None else 'missing'}")
        return value

    def apply(self, record: Record) -> Record:
        if record.data is None and self._from_data:  # a tombstone keeps the key it has
            return record
        paths = self.paths
        if len(paths) == 1:
            key = self._value(record, paths[0])
            key = key if key.__class__ is str else render_value(key)
        else:
            values = [self._value(record, path) for path in paths]
            try:
                key = jsonvalue.dumps(values, strict=True).decode()
            except TypeError as exc:
                raise DataError(f"set_key: {exc}") from None
        record.extensions[self.extension] = key
        return record


def _make_set_key(options: SetKeyOptions, compiler: Compiler) -> SetKey:
    return SetKey([parse_path(text) for text in options.fields], options.extension)


# -- set_attributes -------------------------------------------------------------------------------


class AttributeValues(Options):
    type: str | None = Field(None, description="The new type (a template).")
    source: str | None = Field(None, description="The new source (a template).")
    subject: str | None = Field(None, description="The new subject (a template); null removes it.")
    time: str | None = Field(None, description="The new time (a template); null removes it.")
    dataschema: str | None = Field(
        None, description="The new dataschema URI (a template); null removes it."
    )

    @model_validator(mode="after")
    def _check_required(self) -> AttributeValues:
        for name in ("type", "source"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null: every record has one")
        return self


class SetAttributesOptions(Options):
    attributes: AttributeValues = Field(
        default_factory=AttributeValues,
        description="Context attributes to set: type, source, subject, time, dataschema; each "
        "value is a template; null removes an optional one.",
    )
    extensions: dict[str, str | int | bool | None] = Field(
        default_factory=dict,
        description="Extension attributes to set: strings are templates, integers and booleans "
        "are set as they are, null removes the extension.",
    )

    @field_validator("extensions")
    @classmethod
    def _check_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            _check_extension(name)
        return value

    @model_validator(mode="after")
    def _check_something(self) -> SetAttributesOptions:
        if not self.attributes.model_fields_set and not self.extensions:
            raise ValueError("give at least one attribute or extension to set")
        return self


class SetAttributes(Transform):
    """Sets CloudEvent attributes and extensions from templates or fixed values."""

    copies_nested_objects = True

    def __init__(self, steps: list[tuple[FieldPath, Template | None, Any]]) -> None:
        self.type_name = "set_attributes"
        self.steps = steps

    def apply(self, record: Record) -> Record:
        values = []
        for path, template, value in self.steps:
            if template is not None:
                value = template.render(record)
                if not value and not path.removable:
                    raise DataError(
                        f"set_attributes: {path} template {template.text!r} rendered ''"
                    )
            values.append((path, value))
        set_all(record, values)  # one value breaking a CloudEvents rule changes nothing
        return record


def _make_set_attributes(options: SetAttributesOptions, compiler: Compiler) -> SetAttributes:
    steps: list[tuple[FieldPath, Template | None, Any]] = []
    attributes = options.attributes
    given = {name: getattr(attributes, name) for name in attributes.model_fields_set}
    for name, value in [*sorted(given.items()), *options.extensions.items()]:
        path = parse_path(name)
        if isinstance(value, str):
            template = compiler.template(value, field=name)
            if template.literal is not None:
                steps.append((path, None, template.literal))
            else:
                steps.append((path, template, None))
        else:
            steps.append((path, None, value))
    return SetAttributes(steps)


SPECS = [
    TransformSpec(
        name="filter",
        options_model=FilterOptions,
        factory=_make_filter,
        description="Keep only the records for which an expression is true.",
        examples=['- type: filter\n  where: "data.total >= 10"'],
    ),
    TransformSpec(
        name="route",
        options_model=RouteOptions,
        factory=_make_route,
        description="Choose each record's topic from a template or from ordered rules, with "
        "optional fan-out to several topics (pipeline transforms only).",
        examples=[
            "- type: route\n  topic: 'orders.{lower(data.country)}'",
            "- type: route\n  rules:\n    - {when: 'data.total >= 1000', topic: orders.large}\n"
            "    - {when: \"data.status == 'refunded'\", topic: orders.refunds}\n"
            "  default: orders.other",
            "- type: route\n  fanout: true\n  rules:\n"
            "    - {when: 'data.total >= 1000', topic: audit}\n"
            "    - {when: 'true', topic: orders}",
        ],
    ),
    TransformSpec(
        name="set_key",
        options_model=SetKeyOptions,
        factory=_make_set_key,
        description="Set the record's key (the partitionkey extension) from fields.",
        examples=[
            "- type: set_key\n  fields: [data.customer.id]",
            "- type: set_key\n  fields: [data.tenant, data.order_id]",
        ],
    ),
    TransformSpec(
        name="set_attributes",
        options_model=SetAttributesOptions,
        factory=_make_set_attributes,
        description="Set CloudEvent attributes (type, source, subject, time, dataschema) and "
        "extensions from templates.",
        examples=[
            "- type: set_attributes\n  attributes:\n    type: 'shop.order.{data.status}'\n"
            "    subject: 'orders/{data.id}'\n  extensions: {tenant: '{data.tenant}', version: 2}",
        ],
    ),
]
