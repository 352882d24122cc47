"""Located problems: what is wrong in a pipeline file, where, and never with a secret in it.

A :class:`FileReporter` turns every finding about one pipeline file (a pydantic
:class:`~pydantic.ValidationError`, an unknown key, an expression that does not compile, a
message of the loader's own) into a :class:`~meshconnect.errors.Problem` that prints as
``FILE:LINE:COL: message``. Each message starts with the config path
(``pipelines[0].sinks[1].config.table: missing required field 'table'``); an unknown key is
pointed at the key and gets a did-you-mean hint or the list of known keys. :func:`sort_problems`
orders them by file in the order given, then line, then column.

Secrets: a value that came from interpolation, and a ``SecretStr`` field, never appears in a
message. Pydantic's ``input`` is never printed; messages that could echo a value (a validator's
own text) have it replaced by "the value"; finally every text taken from the environment or a
file is masked in every message (anywhere when three characters or longer, else as a whole word in
messages about its own value).
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core.core_schema import ErrorType

from ..errors import Location, Problem
from .interpolate import MASK, Interpolated, escaped_forms
from .yamlpos import Document, YamlPath, render_path

if TYPE_CHECKING:
    from ..expr import ExpressionError

__all__ = ["MASK", "FileReporter", "has_entry", "sort_problems"]

M = TypeVar("M", bound=BaseModel)


class FileReporter:
    """How to report problems in one pipeline file: located, path first, secrets masked."""

    def __init__(self, doc: Document, interp: Interpolated) -> None:
        self.doc = doc
        self.interp = interp
        self.problems: list[Problem] = []
        failed = {path for path, _ in interp.errors}
        self.failed = failed
        fragments = {
            form
            for frags in interp.secrets.values()
            for frag in frags
            for form in escaped_forms(frag)
        }
        fragments |= {form for secret in interp.literal for form in escaped_forms(secret)}
        self.fragments = sorted(fragments, key=len, reverse=True)

    def report(
        self,
        path: YamlPath,
        detail: str,
        *,
        location: Location | None = None,
        key: bool = False,
        always: bool = False,
    ) -> None:
        """Record a problem about ``path``; at ``location``, else at the path's value or key.

        Problems under a path whose interpolation failed are dropped (they only echo that
        failure), unless ``always``.
        """
        if not always and any(path[: len(f)] == f for f in self.failed):
            return
        detail = self.scrub(path, detail)
        message = f"{render_path(path)}: {detail}" if path else detail
        self.problems.append(Problem(location or self.doc.location(path, key=key), message))

    def replace(self, path: YamlPath, detail: str) -> None:
        """Report ``detail`` about ``path`` in place of what was reported about exactly that
        path so far (pydantic's generic message for a value a check of ours explains
        better): one mistake, one problem."""
        prefix = f"{render_path(path)}: "
        location = self.doc.location(path)
        self.problems = [
            p
            for p in self.problems
            if not (p.location == location and p.message.startswith(prefix))
        ]
        self.report(path, detail)

    def scrub(self, path: YamlPath, detail: str) -> str:
        for fragment in self.fragments:
            detail = detail.replace(fragment, MASK)
        for secret_path, fragments in self.interp.secrets.items():
            if path[: len(secret_path)] != secret_path:
                continue
            for fragment in fragments:
                if fragment.strip():
                    detail = re.sub(rf"(?<!\w){re.escape(fragment)}(?!\w)", MASK, detail)
            detail = _mask_pieces(detail, fragments[1:])
        return detail

    def validate(
        self,
        model: type[M],
        data: Any,
        prefix: YamlPath,
        *,
        also_known: Sequence[str] = (),
    ) -> M | None:
        """``model`` validated from ``data`` (found at ``prefix``); None after reporting problems.

        A model that does not set ``extra`` itself is held to ``extra="forbid"`` here, so a
        misspelt option is reported even when a plugin author forgot to forbid extras.
        """
        if isinstance(data, dict) and model.model_config.get("extra") is None:
            accepted = set(_accepted_keys(model)) | set(also_known)
            unknown = [k for k in data if k not in accepted]
            for key in unknown:
                self.unknown_key((*prefix, key), key, [*_accepted_keys(model), *also_known])
            data = {k: v for k, v in data.items() if k not in unknown}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.report_validation(exc, model, data, prefix, also_known)
        except Exception as exc:  # a plugin's validator that raised something else
            self.report(prefix, f"could not be validated: {type(exc).__name__}: {exc}")
        return None

    def report_validation(
        self,
        exc: ValidationError,
        model: type[BaseModel],
        data: Any,
        prefix: YamlPath,
        also_known: Sequence[str] = (),
    ) -> None:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            kind = error["type"]
            path, rest = _data_path(data, loc)
            full = (*prefix, *path)
            if kind == "missing" and rest:
                name = rest[-1]
                self.report(
                    (*full, name),
                    f"missing required field {name!r}",
                    location=self.doc.location(full, key=True),
                )
            elif kind == "extra_forbidden" and loc:
                key = loc[-1]
                owner = _model_at(model, loc[:-1])
                known = [*_accepted_keys(owner), *also_known] if owner is not None else []
                self.unknown_key(full, key, known)
            else:
                self.report(full, _safe_message(error))

    def unknown_key(self, path: YamlPath, key: Any, known: Sequence[str]) -> None:
        names = sorted(set(known))
        hint = difflib.get_close_matches(str(key), names, n=1) if names else []
        if hint:
            detail = f"unknown key {key!r} (did you mean {hint[0]!r}?)"
        elif names:
            detail = f"unknown key {key!r} (known keys: {', '.join(names)})"
        else:
            detail = f"unknown key {key!r}"
        self.report(path, detail, key=True)

    def report_expression(
        self, exc: ExpressionError, owner: YamlPath, field_name: str | None
    ) -> None:
        """Report ``exc`` at its option (``exc.field``) inside ``owner``, at its column if known."""
        name = exc.field or field_name
        path = (*owner, name) if name else owner
        detail = exc.message
        info = self.doc.scalars.get(path)
        if info is not None and info.exact and path not in self.interp.rewritten:
            location = self.doc.inner_location(path, exc.column)
        else:
            location = self.doc.location(path)
            if exc.column is not None:
                detail += f" (at offset {exc.column} of the expression)"
        self.report(path, detail, location=location)


def sort_problems(problems: Iterable[Problem], files: Sequence[str]) -> list[Problem]:
    """``problems`` without repeats, by file (in the order of ``files``), line and column.

    Problems without a location come first.
    """
    order = {name: i for i, name in enumerate(files)}
    unique = list(dict.fromkeys(problems))

    def key(problem: Problem) -> tuple[int, int, int]:
        loc = problem.location
        if loc is None:
            return (-1, 0, 0)
        return (order.get(loc.file, len(order)), loc.line, loc.column)

    return sorted(unique, key=key)


def has_entry(container: Any, part: Any) -> bool:
    """Whether ``container[part]`` is an entry of a dict or an index of a list."""
    if isinstance(container, dict):
        return part in container
    if isinstance(container, list):
        return isinstance(part, int) and 0 <= part < len(container)
    return False


# -- from pydantic's error locations to config paths -----------------------------------------


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[YamlPath, YamlPath]:
    """Split a pydantic ``loc`` into the part that exists in ``data`` and the rest.

    The rest holds a missing field's name and pydantic's own tags (union members such as
    ``int``, ``function-after[…]``, ``[key]``), which are not part of the config path.
    """
    path: list[Any] = []
    rest: list[Any] = []
    current = data
    for part in loc:
        if not rest and has_entry(current, part):
            path.append(part)
            current = current[part]
        else:
            rest.append(part)
    return tuple(path), tuple(rest)


def _accepted_keys(model: type[BaseModel]) -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        keys.append(alias or name)
    return keys


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` inside ``model``, if found."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
    found = _models_in(current)
    return found[0] if found else None


def _step(tp: Any, part: Any) -> Any:
    for candidate in _members(tp):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            for name, info in candidate.model_fields.items():
                if part in (name, info.alias, info.validation_alias):
                    return info.annotation
        elif isinstance(part, int) and origin in (list, tuple, set, frozenset, Sequence):
            args = typing.get_args(candidate)
            return args[0] if args else Any
        elif origin in (dict, Mapping):
            args = typing.get_args(candidate)
            return args[1] if len(args) == 2 else Any
    return tp  # a pydantic tag (union member, validator): stay where we are


def _members(tp: Any) -> list[Any]:
    """``tp`` with Annotated and unions unwrapped into their members."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _models_in(tp: Any) -> list[type[BaseModel]]:
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]


# -- messages that never echo the value ------------------------------------------------------

#: Error types whose message is a validator's own text and so may echo the value.
_ECHOING = {"value_error", "assertion_error"}
_KNOWN_TYPES = set(typing.get_args(ErrorType))


#: A message about a value that holds a secret masks every piece of the secret at least this
#: long: a parser that quotes where it stopped ("found '-Zebra-8812'") shows part of the value.
_PIECE = 4


def _mask_pieces(detail: str, secrets: Sequence[str]) -> str:
    """``detail`` with each run of :data:`_PIECE` characters or more that is a piece of one of
    ``secrets`` (as written or escaped) masked."""
    forms = [form for secret in secrets for form in escaped_forms(secret) if len(form) >= _PIECE]
    if not forms:
        return detail
    out: list[str] = []
    i = 0
    while i < len(detail):
        longest = 0
        for form in forms:
            size = _PIECE
            if detail[i : i + size] not in form:
                continue
            while i + size < len(detail) and detail[i : i + size + 1] in form:
                size += 1
            longest = max(longest, size)
        if longest:
            out.append(MASK)
            i += longest
        else:
            out.append(detail[i])
            i += 1
    return "".join(out)


def _safe_message(error: Any) -> str:
    """Pydantic's message for ``error``, never containing the input value."""
    kind = error["type"]
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if kind == "union_tag_invalid":
        ctx = error.get("ctx") or {}
        return (
            f"unknown value for {ctx.get('discriminator', 'the tag')} "
            f"(expected one of: {ctx.get('expected_tags', '?')})"
        )
    if kind in _ECHOING or kind not in _KNOWN_TYPES:
        message = _unecho(message, error.get("input"))
    return message


def _unecho(message: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        return message
    tokens = sorted({repr(value), str(value)}, key=len, reverse=True)
    for token in tokens:
        if token.strip():
            message = re.sub(rf"(?<![\w.]){re.escape(token)}(?![\w.])", "the value", message)
    return message
