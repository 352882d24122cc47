"""The built-in transforms: ``filter``, ``mask`` and ``insert_field``.

They register through the ``meshconnect`` entry point ``transforms`` with the
``meshconnect_transforms`` hook, the same door a third-party transform uses. Each declares an
options model (every key of its YAML step besides ``type`` and ``when``, which the chain
handles) and a factory ``factory(options, compiler) -> Transform``.

Every ``apply`` changes the record in place and returns it (or ``None`` to drop it). It checks
everything that can fail before it changes anything, so a record that raises
:class:`~meshconnect.errors.DataError` goes to the dead-letter topic as it came in.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..api import TransformSpec
from ..errors import ConfigError
from ..hookspecs import hookimpl
from . import Transform
from .paths import FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler, Predicate, Template
    from ..records import Record

__all__ = [
    "Filter",
    "FilterOptions",
    "InsertField",
    "InsertFieldOptions",
    "Mask",
    "MaskOptions",
    "meshconnect_transforms",
]


def _check_path(text: str) -> str:
    """Validate a field path in an options model (pydantic reports ValueErrors by location)."""
    try:
        path = parse_path(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if not path.writable:
        raise ValueError(f"{path} cannot be changed")
    return text


#: A field path option, checked when the pipeline is validated.
PathOption = Annotated[str, AfterValidator(_check_path)]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- filter ---------------------------------------------------------------------------------------


class FilterOptions(_Options):
    where: str = Field(
        description="Keep the records for which this expression is true; drop the others."
    )


class Filter(Transform):
    """Keeps the records for which ``predicate`` is true."""

    def __init__(self, predicate: Predicate) -> None:
        self.type_name = "filter"
        self.predicate = predicate

    def apply(self, record: Record) -> Record | None:
        return record if self.predicate(record) else None


def _make_filter(options: FilterOptions, compiler: Compiler) -> Filter:
    return Filter(compiler.predicate(options.where, field="where"))


# -- mask -----------------------------------------------------------------------------------------

#: Turns a value into its masked form (never called with ``None``).
Masker = Callable[[Any], Any]


class MaskOptions(_Options):
    fields: list[PathOption] = Field(
        min_length=1, description="Paths of the values to mask, e.g. data.email."
    )
    # Issue 3 adds "encrypt": a mode is a Literal member plus a builder in _MASKERS.
    mode: Literal["redact", "hash"] = Field(
        "redact",
        description="redact: replace the value with `replacement`; hash: replace it with the "
        "hex SHA-256 of salt + value (the same value always gives the same hash).",
    )
    replacement: str = Field("****", description="What a redacted value becomes (mode redact).")
    salt: SecretStr | None = Field(
        None,
        description="Secret prefix hashed with each value (mode hash), e.g. ${env:MASK_SALT}. "
        "Without it, hashes of guessable values (emails, phone numbers) can be reversed.",
    )

    @model_validator(mode="after")
    def _check_mode_options(self) -> MaskOptions:
        if self.mode != "redact" and "replacement" in self.model_fields_set:
            raise ValueError(f"replacement only applies to mode redact, not {self.mode}")
        if self.mode != "hash" and "salt" in self.model_fields_set:
            raise ValueError(f"salt only applies to mode hash, not {self.mode}")
        return self


def _as_bytes(value: Any) -> bytes:
    """What is hashed: a string's UTF-8, bytes as they are, anything else as sorted JSON."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _redactor(options: MaskOptions) -> Masker:
    replacement = options.replacement
    return lambda value: replacement


def _hasher(options: MaskOptions) -> Masker:
    salt = options.salt.get_secret_value().encode("utf-8") if options.salt else b""
    sha256 = hashlib.sha256

    def mask(value: Any) -> str:
        return sha256(salt + _as_bytes(value)).hexdigest()

    return mask


_MASKERS: dict[str, Callable[[MaskOptions], Masker]] = {
    "redact": _redactor,
    "hash": _hasher,
}


class Mask(Transform):
    """Replaces the values at ``paths`` by ``masker(value)``.

    A path that is missing (or holds ``null``) is left alone. A path through a value of the
    wrong shape (``data.a.b`` where ``data.a`` is a string) is a DataError, raised before the
    record is changed: every value is read and masked first, then all are written, deepest
    first, so one written path never breaks another.
    """

    def __init__(self, paths: list[FieldPath], masker: Masker) -> None:
        self.type_name = "mask"
        self.paths = sorted(paths, key=lambda p: len(p.segments), reverse=True)
        self.masker = masker
        self._single = self.paths[0] if len(self.paths) == 1 else None

    def apply(self, record: Record) -> Record:
        masker = self.masker
        single = self._single
        if single is not None:
            single.update(record, masker)
            return record
        updates = []
        for path in self.paths:
            found, value = path.get(record)
            if found and value is not None:
                updates.append((path, masker(value)))
        for path, masked in updates:
            path.set(record, masked, create=False)
        return record


def _make_mask(options: MaskOptions, compiler: Compiler) -> Mask:
    paths = [parse_path(text) for text in options.fields]
    return Mask(paths, _MASKERS[options.mode](options))


# -- insert_field ---------------------------------------------------------------------------------


class InsertFieldOptions(_Options):
    field: PathOption = Field(description="Where to put the value, e.g. data.region.")
    value: JsonValue = Field(
        None, description="A fixed value (any JSON value). Give this or template."
    )
    template: str | None = Field(
        None, description="A template rendered per record, e.g. '{data.city}, {data.country}'."
    )

    @field_validator("value")
    @classmethod
    def _check_value(cls, value: JsonValue, info: ValidationInfo) -> JsonValue:
        if "field" in info.data:  # the path was valid
            _check_fits(parse_path(info.data["field"]), value)
        return value

    @model_validator(mode="after")
    def _check_one_source(self) -> InsertFieldOptions:
        if len({"value", "template"} & self.model_fields_set) != 1:
            raise ValueError("give exactly one of value or template")
        return self


def _check_fits(path: FieldPath, value: Any) -> None:
    """A fixed value must suit the attribute it goes to (it would fail on every record)."""
    if path.kind == "attribute":
        if value is None and not path.removable:
            raise ValueError(f"{path} cannot be null")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{path} takes a string value")
    elif path.kind == "extension" and isinstance(value, float | list | dict):
        raise ValueError(f"extension {path} takes a string, integer or boolean value")


class InsertField(Transform):
    """Sets the value at ``path``, making missing objects on the way.

    The value is ``value`` (a fixed JSON value, copied per record when it is an object or an
    array so records never share it) or, when ``template`` is given, the rendered template.
    """

    def __init__(
        self, path: FieldPath, value: Any = None, template: Template | None = None
    ) -> None:
        self.type_name = "insert_field"
        self.path = path
        self.value = value
        self.template = template
        # An object or array is copied for each record: from JSON serialised once (fast), or
        # with deepcopy when orjson cannot round-trip it.
        mutable = isinstance(value, dict | list)
        self._blob = _serialised(value) if mutable else None
        self._deepcopy = mutable and self._blob is None

    def apply(self, record: Record) -> Record:
        template = self.template
        if template is not None:
            self.path.set(record, template.render(record))
        elif self._blob is not None:
            self.path.set(record, orjson.loads(self._blob))
        elif self._deepcopy:
            self.path.set(record, copy.deepcopy(self.value))
        else:
            self.path.set(record, self.value)
        return record


def _serialised(value: Any) -> bytes | None:
    try:
        blob = orjson.dumps(value)
    except TypeError:  # e.g. an integer beyond 64 bits
        return None
    return blob if orjson.loads(blob) == value else None


def _make_insert_field(options: InsertFieldOptions, compiler: Compiler) -> InsertField:
    path = parse_path(options.field)
    if "template" in options.model_fields_set and options.template is not None:
        template = compiler.template(options.template, field="template")
        if not template.is_literal:
            return InsertField(path, template=template)
        return InsertField(path, template.literal)
    return InsertField(path, options.value)


# -- registration ---------------------------------------------------------------------------------


@hookimpl
def meshconnect_transforms() -> list[TransformSpec]:
    """The built-in transforms."""
    return [
        TransformSpec(
            name="filter",
            options_model=FilterOptions,
            factory=_make_filter,
            description="Keep only the records for which an expression is true.",
            examples=['- type: filter\n  where: "data.total >= 10"'],
        ),
        TransformSpec(
            name="mask",
            options_model=MaskOptions,
            factory=_make_mask,
            description="Redact or hash sensitive values (missing ones are left alone).",
            examples=[
                "- type: mask\n  fields: [data.email, data.card.number]",
                "- type: mask\n  fields: [data.email]\n  mode: hash\n  salt: ${env:MASK_SALT}",
            ],
        ),
        TransformSpec(
            name="insert_field",
            options_model=InsertFieldOptions,
            factory=_make_insert_field,
            description="Set a field to a fixed value or a template, creating missing objects.",
            examples=[
                "- type: insert_field\n  field: data.region\n  value: eu\n"
                "  when: \"data.country == 'DE'\"",
                "- type: insert_field\n  field: partitionkey\n  template: '{data.customer.id}'",
            ],
        ),
    ]
