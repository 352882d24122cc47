"""Checks for hand-written source positions, for :meth:`meshconnect.Source.position_problem`.

``meshconnect offsets reset --to '{JSON}'`` (and the admin API's ``PATCH .../offsets``) asks a
source about each position before storing any. A source describes the positions it writes as
fields, each with a :class:`Check` (what the value must be, and a test), and returns
:func:`fields_problem`'s answer: an unknown field (a typo, which the source would ignore and
read again from its beginning), a missing one, or a value of the wrong type or range, named
with the field and the value given. :func:`partition_problem` refuses a partition the source
never reads. :func:`check_stored` applies the same check to the positions ``start`` is given.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = [
    "Check",
    "boolean",
    "check_stored",
    "check_stored_fields",
    "fields_problem",
    "list_of",
    "no_position",
    "nullable",
    "partition_problem",
    "stored_error",
    "text",
    "whole",
]


@dataclass(frozen=True, slots=True)
class Check:
    """What a field's value must be (``must``, after "must be"), and the test of a value."""

    must: str
    ok: Callable[[Any], bool]


def whole(minimum: int = 0, maximum: int | None = None) -> Check:
    """A JSON whole number (not ``true``, not ``1.0``, not ``"1"``) in the range."""
    top = f" and at most {maximum}" if maximum is not None else ""
    return Check(
        f"a whole number of at least {minimum}{top}",
        lambda v: type(v) is int and v >= minimum and (maximum is None or v <= maximum),
    )


def text(must: str = "a string", test: Callable[[str], bool] | None = None) -> Check:
    """A JSON string (that ``test`` accepts)."""
    return Check(must, lambda v: isinstance(v, str) and (test is None or test(v)))


boolean = Check("true or false", lambda v: type(v) is bool)


def nullable(check: Check) -> Check:
    return Check(f"{check.must} or null", lambda v: v is None or check.ok(v))


def list_of(check: Check, must: str) -> Check:
    return Check(must, lambda v: isinstance(v, list) and all(check.ok(x) for x in v))


def _value(value: Any) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def fields_problem(
    position: Mapping[str, Any], fields: Mapping[str, Check], required: Iterable[str] = ()
) -> str | None:
    """Why ``position`` is not made of ``fields`` (each by its check, ``required`` present),
    or ``None``."""
    names = list(fields)
    for name in position:
        if name not in fields:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            return f"unknown field {name!r}{hint}; a position has {', '.join(names)}"
    for name in required:
        if name not in position:
            return f"missing field {name!r}"
    for name, check in fields.items():
        if name in position and not check.ok(position[name]):
            return f"{name} must be {check.must}, not {_value(position[name])}"
    return None


def partition_problem(partition: str, partitions: Iterable[str], what: str = "") -> str | None:
    """Why ``partition`` is not one of ``partitions`` (``what``: where they come from, e.g.
    "config.streams"), or ``None``."""
    known = list(partitions)
    if partition in known:
        return None
    close = difflib.get_close_matches(partition, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(repr(p) for p in known)
    where = f" ({what})" if what else ""
    return f"not a partition this source reads{hint}; its partitions{where}: {listed}"


def no_position(why: str) -> str:
    """The problem of any position of a source that keeps none (``why`` it keeps none)."""
    return f"this source keeps no position ({why}); there is nothing to set"


def check_stored(
    source: Any, positions: Mapping[str, Any], partitions: Iterable[str], what: str
) -> None:
    """Raise :class:`~meshconnect.errors.ConfigError` for the stored position of one of
    ``partitions`` (those the source reads now) that ``source.position_problem`` refuses: one
    stored by another version, or through another door than ``offsets reset``. Named and never
    retried, instead of failing every restart (``int("x")``) or being ignored (a re-read).
    ``what`` names the source in the message (``"webhook source hooks"``)."""
    for partition in partitions:
        if partition in positions:
            problem = source.position_problem(partition, positions[partition])
            if problem:
                raise stored_error(what, partition, problem)


def check_stored_fields(
    what: str, partition: str, position: Mapping[str, Any], fields: Mapping[str, Check]
) -> None:
    """:func:`check_stored` for the ``fields`` of a source's current mode only, those of
    ``position`` that it has: fields another mode wrote are left alone (a pipeline whose mode
    changed starts over, as it did before)."""
    mine = {k: v for k, v in position.items() if k in fields}
    if problem := fields_problem(mine, fields):
        raise stored_error(what, partition, problem)


def stored_error(
    what: str, partition: str, problem: str, pipeline: str | None = None
) -> ConfigError:
    """The error of a stored position the source cannot use (``what`` names the source; with
    ``pipeline``, the message also gives the reset that forgets it)."""
    forget = (
        f" (`meshconnect offsets reset FILE.yaml {pipeline} --to beginning` forgets it)"
        if pipeline is not None
        else ""
    )
    return ConfigError(
        f"{what}: the stored position of {partition!r} is not usable: {problem}; "
        f"set it again with `meshconnect offsets reset`{forget}"
    )
