"""What the built-in transforms share: option types, value copies and safe multi-path changes.

* :class:`Options` is the base of every options model (unknown keys refused, frozen).
* :data:`PathOption` is a field path a transform changes, checked when the pipeline is
  validated; :data:`ReadPathOption` one it only reads (``topic`` too); :data:`DataPathOption`
  one that must lie inside ``data`` (keys and indexes below it).
* :func:`detach` gives a copy of a payload in which every object and array on the way to the
  given paths is a fresh (shallow) copy: a transform that changes several paths works on it and
  assigns it to ``record.data`` only when every change succeeded, so a record that raises
  :class:`~meshconnect.errors.DataError` halfway is left as it came in.
* :func:`own` copies the objects on the way down nested paths in place, before a transform
  changes a value inside them: sinks share the objects inside stored records.
* :func:`fresh_copy` copies a JSON value deeply (fast through orjson).
* :func:`set_all` sets several values, attributes and extensions first, so that one that breaks
  a CloudEvents rule leaves the record as it came in.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

from ..errors import ConfigError, DataError
from ..records import kind_of
from .paths import FieldPath, parse_path

if TYPE_CHECKING:
    from ..records import Record
    from .paths import Segment

__all__ = [
    "DataPathOption",
    "JsonOption",
    "Options",
    "PathOption",
    "ReadPathOption",
    "constant_copier",
    "detach",
    "fresh_copy",
    "kind_of",
    "nested",
    "own",
    "set_all",
]


class Options(BaseModel):
    # Built on first use, not at import: a pipeline uses a few of the built-in transforms.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)


def _check_readable(text: str) -> str:
    """Validate a field path in an options model (pydantic reports ValueErrors by location)."""
    try:
        parse_path(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return text


def _check_path(text: str) -> str:
    path = parse_path(_check_readable(text))
    if not path.writable:
        raise ValueError(f"{path} cannot be changed")
    return text


def _check_data_path(text: str) -> str:
    path = parse_path(_check_path(text))
    if path.kind != "data" or not path.segments:
        raise ValueError(f"{path} is not a field inside data (write e.g. data.{path.name})")
    return text


#: A field path option, checked when the pipeline is validated.
PathOption = Annotated[str, AfterValidator(_check_path)]
#: A field path that is only read (it may be ``topic`` or ``specversion``).
ReadPathOption = Annotated[str, AfterValidator(_check_readable)]
#: A field path inside ``data`` (``data.a.b``, ``data.items[0]``), not ``data`` itself.
DataPathOption = Annotated[str, AfterValidator(_check_data_path)]


def _json_option(value: Any) -> Any:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise ValueError("not a JSON value: object keys must be strings")
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif (isinstance(v, float) and not math.isfinite(v)) or (
            isinstance(v, Decimal) and not v.is_finite()
        ):
            raise ValueError("not a JSON value: JSON has no NaN or infinity")
        elif v is not None and not isinstance(v, str | int | float | Decimal):
            raise ValueError(f"not a JSON value: {type(v).__name__}")
    return value


#: Any JSON value given in the YAML, numbers as ``meshconnect.jsonvalue`` has them (a number
#: with a fraction or an exponent is the exact ``Decimal`` of its text: ``1.10`` keeps its
#: scale), where pydantic's ``JsonValue`` would refuse a ``Decimal``.
JsonOption = Annotated[Any, AfterValidator(_json_option), WithJsonSchema({"format": "json-value"})]


def constant_copier(value: Any) -> Callable[[], Any]:
    """A function giving a fresh deep copy of the constant ``value`` on each call, so records
    never share it: a scalar as it is; an object or array from its JSON serialised once
    (fast), or by ``copy.deepcopy`` when orjson cannot round-trip it (a ``Decimal``, an
    integer beyond 64 bits)."""
    if not isinstance(value, dict | list):
        return lambda: value
    try:
        blob = orjson.dumps(value)
    except TypeError:
        blob = None
    if blob is None or orjson.loads(blob) != value:
        return lambda: copy.deepcopy(value)
    return lambda: orjson.loads(blob)


def fresh_copy(value: Any) -> Any:
    """A deep copy of a JSON value (objects and arrays); other values as they are."""
    if not isinstance(value, dict | list):
        return value
    try:
        blob = orjson.dumps(value)
    except TypeError:
        return copy.deepcopy(value)
    result = orjson.loads(blob)
    return result if result == value else copy.deepcopy(value)


def nested(paths: Iterable[FieldPath]) -> list[FieldPath]:
    """The data paths below a nested object or array (``data.a.b``, not ``data.a``): those
    whose change would touch an object other than the payload itself."""
    return [p for p in paths if p.kind == "data" and len(p.segments) > 1]


def own(record: Record, paths: list[FieldPath]) -> None:
    """Make every object or array on the way down ``paths`` (below the payload itself) a
    fresh copy, in place, before a transform changes values there.

    Records a sink reads from the store are shared by every sink of the topic; the sink loop
    gives each its own copy of the record and of its payload object, but not of the objects
    inside it. Changing ``data.card.number`` in place would change it for the other sinks
    too. The copies hold the same values, so this changes nothing a reader can see.
    """
    data = record.data
    if paths and isinstance(data, dict | list):
        detach(data, paths, copy_root=False)


def detach(data: Any, paths: Iterable[FieldPath], *, copy_root: bool = True) -> Any:
    """A copy of ``data`` sharing nothing that a change at one of ``paths`` would touch.

    The root (unless ``copy_root`` is false: then ``data`` itself is changed, its containers
    on the way replaced by copies) and every object or array on the way down each data path
    are copied shallowly; everything else is shared. Changing the result through those paths
    leaves the objects ``data`` held alone.
    """
    if not isinstance(data, dict | list):
        return data
    root = data.copy() if copy_root else data
    copied = {id(root)}
    for path in paths:
        if path.kind != "data":
            continue
        node: Any = root
        segments: tuple[Segment, ...] = path.segments
        for seg in segments[:-1]:
            if isinstance(node, dict) and isinstance(seg, str):
                child = node.get(seg)
            elif isinstance(node, list) and isinstance(seg, int) and -len(node) <= seg < len(node):
                child = node[seg]
            else:
                break
            if not isinstance(child, dict | list):
                break
            if id(child) not in copied:
                child = child.copy()
                copied.add(id(child))
                node[seg] = child
            node = child
    return root


def set_all(record: Record, updates: list[tuple[FieldPath, Any]]) -> None:
    """Set each ``(path, value)``; a value that an attribute or extension refuses (an empty
    ``subject``, a ``time`` that is not RFC 3339, an extension beyond 32 bits) raises
    DataError with the record as it came in. Attributes and extensions are set first and put
    back on failure; data paths (which must exist: values found by ``get``) are set last."""
    context = [(path, value) for path, value in updates if path.kind != "data"]
    if context:
        attributes = [
            (p.name, getattr(record, p.name)) for p, _ in context if p.kind == "attribute"
        ]
        extensions = dict(record.extensions)
        try:
            for path, value in context:
                path.set(record, value, create=False)
        except DataError:
            for name, old in attributes:
                setattr(record, name, old)
            record.extensions.clear()
            record.extensions.update(extensions)
            raise
    for path, value in updates:
        if path.kind == "data":
            path.set(record, value, create=False)
