"""Applying an ``errors:`` policy: retries with backoff, tolerance and the dead-letter topic.

Retriable errors (see :mod:`meshconnect.errors`) are retried up to ``retry.max_attempts`` with
exponential backoff and jitter. What still fails, and every data error, is then either fatal
(``tolerance: none``: the connector fails and resumes from its committed offsets when restarted)
or dead-lettered (``tolerance: all``): the record goes to ``dead_letter_topic`` with its error
context in CloudEvent extensions (:data:`ERROR_EXTENSIONS`), and processing goes on.

:mod:`meshconnect.replay` (``meshconnect topics replay``) publishes dead letters again once the
cause is fixed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from . import jsonvalue
from .config.interpolate import redact
from .config.model import ErrorPolicy, RetryPolicy
from .errors import Classifier, DataError, RetriableError, StoreError, classify
from .eventrules import attribute_problems, valid_string
from .records import Record, new_id, now_iso

if TYPE_CHECKING:
    from .runstate import ConnectorStatus
    from .transforms import Failure, TransformChain

__all__ = [
    "ERROR_EXTENSIONS",
    "backoff",
    "backoff_delay",
    "dead_letter_record",
    "dead_letters",
    "retry_transforms",
    "retrying",
]

T = TypeVar("T")
_log = logging.getLogger("meshconnect.worker")

#: The extensions a dead-lettered record carries.
ERROR_EXTENSIONS = (
    "errorstage",
    "errorpipeline",
    "errorconnector",
    "errortype",
    "errormessage",
    "errortopic",
    "erroroffset",
    "errorattempts",
    "errortime",
)
#: Carried besides those when the record broke CloudEvents rules: the JSON text of the
#: attributes taken out of it (see :func:`dead_letter_record`).
ERROR_ATTRIBUTES = "errorattributes"


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """The wait in seconds after failed attempt number ``attempt`` (1-based), for retries in
    place and for the supervisor's restarts alike: drawn at random between half and all of
    ``min(maximum, initial * 2**(attempt-1))`` ("equal jitter", as docs/errors.md#retries
    says), so connectors failing together do not retry in lockstep, and never less than
    half the exponential step."""
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    return random.uniform(ceiling / 2, ceiling)


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """:func:`backoff` with the ``initial_backoff`` and ``max_backoff`` of ``policy``."""
    return backoff(attempt, policy.initial_backoff, policy.max_backoff)


def is_retriable(exc: BaseException, classifier: Classifier | None = None) -> bool:
    """Whether ``exc`` is worth retrying in place (``classifier``: the connector's mapping)."""
    return classify(exc, classifier) in (RetriableError, StoreError)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    log: logging.Logger,
    what: str,
    classifier: Classifier | None = None,
) -> tuple[T, int]:
    """Run ``operation``, retrying retriable errors; returns (result, attempts used).

    ``classifier`` is the connector's ``classify_error``, asked before the built-in mapping.
    The last exception is re-raised with an ``attempts`` attribute once attempts run out or for a
    non-retriable error.
    """
    attempt = 1
    while True:
        try:
            return await operation(), attempt
        except Exception as exc:
            if not is_retriable(exc, classifier) or attempt >= policy.max_attempts:
                exc.attempts = attempt  # type: ignore[attr-defined]
                raise
            delay = backoff_delay(policy, attempt)
            log.warning(
                "%s failed (attempt %d of %d): %s: %s; retrying in %.3fs",
                what,
                attempt,
                policy.max_attempts,
                type(exc).__name__,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
            attempt += 1


def _retriable_failure(failure: Failure) -> bool:
    """A transform failure caused by a retriable error (the chain wraps every error of a
    transform in a DataError whose cause is what the transform raised)."""
    return is_retriable(failure.error.__cause__ or failure.error)


def _rest_of(chain: TransformChain, stage: str) -> TransformChain:
    """The part of ``chain`` from the transform of ``stage`` on, naming stages as ``chain``."""
    from .transforms import TransformChain

    start = chain.stages.index(stage)
    rest = TransformChain(chain.transforms[start:], chain.whens[start:])
    rest.stages = chain.stages[start:]
    return rest


async def retry_transforms(
    chain: TransformChain,
    out: list[Record],
    failures: list[Failure],
    policy: RetryPolicy,
    log: logging.Logger,
    what: str,
) -> tuple[list[Record], list[Failure]]:
    """Retry the records of ``failures`` whose transform raised a retriable error (one that
    looks something up, say): after a backoff, the chain runs again on them from the failing
    transform on, up to ``policy.max_attempts`` in all. ``out`` and ``failures`` are what
    ``chain`` made of a batch; returns the same with what the retries made: each record that
    got through in its place among ``out`` (:attr:`~meshconnect.transforms.Failure.at`),
    whatever attempt it took, so the batch keeps its order (records of one key stay in
    order), and what failed for good, in the batch's order, each error carrying
    ``attempts``. Built-in transforms never raise retriable errors; this is for plugins."""
    from .transforms import Failure

    pending = [f for f in failures if _retriable_failure(f)]
    if not pending:
        return out, failures
    #: By ``id`` of a failure that was retried: what the retry made of its record.
    instead: dict[int, list[Record | Failure]] = {}
    attempt = 1
    while pending:
        if attempt >= policy.max_attempts:
            for failure in pending:
                failure.error.attempts = attempt  # type: ignore[attr-defined]
            break
        delay = backoff_delay(policy, attempt)
        cause = pending[0].error.__cause__ or pending[0].error
        log.warning(
            "%s %s failed for %d record(s) (attempt %d of %d): %s: %s; retrying in %.3fs",
            what,
            pending[0].stage,
            len(pending),
            attempt,
            policy.max_attempts,
            type(cause).__name__,
            cause,
            delay,
        )
        await asyncio.sleep(delay)
        attempt += 1
        by_stage: dict[str, list[Failure]] = {}
        for failure in pending:
            by_stage.setdefault(failure.stage, []).append(failure)
        pending = []
        for stage, retried in by_stage.items():
            outcomes = await _rest_of(chain, stage).aprocess_each([f.record for f in retried])
            for failure, outcome in zip(retried, outcomes, strict=True):
                instead[id(failure)] = outcome
                for item in outcome:
                    if isinstance(item, Failure):
                        if _retriable_failure(item):
                            pending.append(item)
                        else:
                            item.error.attempts = attempt  # type: ignore[attr-defined]
    return _in_place(out, failures, instead)


def _in_place(
    out: list[Record], failures: list[Failure], instead: dict[int, list[Record | Failure]]
) -> tuple[list[Record], list[Failure]]:
    """``out`` with each of ``failures`` at its place, and in place of each retried one
    what its retry made (``instead``; retried again in turn): the records and the failures
    left, both in the batch's order."""
    from .transforms import Failure

    records: list[Record] = []
    left: list[Failure] = []
    done = 0
    stack: list[Record | Failure] = []
    for failure in failures:
        records.extend(out[done : failure.at])
        done = failure.at
        stack.append(failure)
        while stack:
            item = stack.pop()
            if not isinstance(item, Failure):
                records.append(item)
            elif id(item) in instead:
                stack.extend(reversed(instead[id(item)]))
            else:
                item.at = len(records)
                left.append(item)
    records.extend(out[done:])
    return records, left


def dead_letter_record(
    record: Record,
    error: BaseException,
    *,
    stage: str,
    pipeline: str,
    connector: str,
    policy: ErrorPolicy,
) -> Record | None:
    """The record to append to the dead-letter topic, or ``None`` when there is none set."""
    if policy.dead_letter_topic is None:
        return None
    dead = _storable_copy(record)
    ext = dead.extensions
    ext["errorstage"] = stage
    ext["errorpipeline"] = pipeline
    ext["errorconnector"] = connector
    ext["errortype"] = type(error).__name__
    cause = error.__cause__
    message = str(error)
    if cause is not None and not isinstance(error, DataError | RetriableError):
        message = f"{message} ({type(cause).__name__}: {cause})"
    # A connector's message may hold a secret of the run's pipeline files: masked.
    ext["errormessage"] = valid_string(redact(message)[:2000] or type(error).__name__)
    if record.topic is not None:
        ext["errortopic"] = valid_string(str(record.topic))
    if record.offset is not None:  # a CloudEvents Integer is 32-bit: larger ones as text
        offset = record.offset
        ext["erroroffset"] = offset if offset <= 2**31 - 1 else str(offset)
    ext["errorattempts"] = int(getattr(error, "attempts", 1))
    ext["errortime"] = now_iso()
    dead.topic = policy.dead_letter_topic
    dead.offset = None
    return dead


def dead_letters(
    pipeline: str,
    connector: str,
    policy: ErrorPolicy,
    problems: list[tuple[Record, BaseException, str]],
    status: ConnectorStatus,
) -> list[Record]:
    """Apply ``policy``'s tolerance to ``problems`` ((record, error, stage) of connector
    ``connector`` of ``pipeline``): under ``none`` raise a DataError naming the first; under
    ``all`` return their dead-letter records (none without a dead-letter topic: logged and
    skipped). Counts them in ``status``."""
    status.failed += len(problems)
    if policy.tolerance == "none":
        record, error, stage = problems[0]
        raise DataError(
            f"{stage}: {error} (record id {record.id!r}"
            + (f", topic {record.topic!r} offset {record.offset}" if record.topic else "")
            + "); set errors.tolerance: all to dead-letter such records"
        ) from error
    out: list[Record] = []
    for record, error, stage in problems:
        dead = dead_letter_record(
            record, error, stage=stage, pipeline=pipeline, connector=connector, policy=policy
        )
        if dead is None:
            _log.warning(
                "%s/%s: skipped a failed record (%s): %s", pipeline, connector, stage, error
            )
        else:
            out.append(dead)
    status.dead_lettered += len(out)
    return out


def _lenient(value: Any) -> Any:
    """orjson ``default`` for :func:`storable`: the nearest JSON value of a non-JSON one."""
    if isinstance(value, Decimal):
        return jsonvalue.default(value) if value.is_finite() else str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    return f"<{type(value).__name__}: not JSON>"


def storable(data: Any) -> Any:
    """The nearest JSON value to ``data`` that the store can keep, for a dead letter whose
    data is not JSON (a transform made NaN or an object): sets become arrays, bytes base64
    text, NaN and infinities ``null`` (a ``Decimal`` one its name as text), keys text, other
    objects ``"<Type: not JSON>"``; data nested deeper than the store keeps is cut at
    :data:`~meshconnect.jsonvalue.MAX_DEPTH` levels (``"<nested deeper: not kept>"``). Never a
    Python repr: the dead letter stays valid JSON that can be replayed."""
    if jsonvalue.depth(data, jsonvalue.MAX_DEPTH) > jsonvalue.MAX_DEPTH:
        data = _cut(data, jsonvalue.MAX_DEPTH)
    try:
        blob = orjson.dumps(data, _lenient, orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        if "surrogates" in str(exc):  # a lone surrogate is no UTF-8: its \uXXXX text instead
            data = _unsurrogated(data)
        try:
            blob = orjson.dumps(data, _lenient, orjson.OPT_NON_STR_KEYS)
        except TypeError:  # integers beyond 64 bits, which orjson writes only as fragments
            blob = orjson.dumps(_big_ints(data), _lenient, orjson.OPT_NON_STR_KEYS)
    return jsonvalue.loads(blob, max_depth=None)


def _unsurrogated(value: Any) -> Any:
    """``value`` (at most MAX_DEPTH deep) with each unpaired surrogate in a string or key as
    the text ``\\udXXX`` (a string holding one cannot be written as UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_unsurrogated(k): _unsurrogated(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_unsurrogated(v) for v in value]
    return value


def _big_ints(value: Any) -> Any:
    """``value`` (at most MAX_DEPTH deep) with integers beyond 64 bits as orjson fragments."""
    if value.__class__ is int and not -(2**63) <= value < 2**64:
        return orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: _big_ints(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_big_ints(v) for v in value]
    return value


def _cut(value: Any, levels: int) -> Any:
    """``value`` with what lies deeper than ``levels`` replaced by a marker (no recursion)."""
    marker = "<nested deeper: not kept>"
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 1)]
    while stack:
        item, parent, key, level = stack.pop()
        if isinstance(item, dict):
            if level > levels:
                parent[key] = marker
                continue
            copy: Any = {}
            for k, v in item.items():
                stack.append((v, copy, k, level + 1))
        elif isinstance(item, list | tuple | set | frozenset):
            if level > levels:
                parent[key] = marker
                continue
            items = list(item)
            copy = [None] * len(items)
            for i, v in enumerate(items):
                stack.append((v, copy, i, level + 1))
        else:
            copy = item
        parent[key] = copy
    return root[0]


def _storable_copy(record: Record) -> Record:
    """A copy of ``record`` that the store always accepts and that is a valid CloudEvent, so a
    dead letter can never fail to be stored (and be dead-lettered again, forever).

    Attributes and extensions that break a CloudEvents rule are taken out and kept, as the
    JSON text of ``{name: value}`` (values that are not JSON as their ``repr``), in the
    ``errorattributes`` extension; a required one (``id``, ``source``, ``type``) is replaced by
    a fresh id, ``meshconnect`` and ``meshconnect.record``. Data the store cannot keep (NaN, an
    object, nesting deeper than Python can write) becomes the nearest JSON value
    (:func:`storable`), never a Python repr."""
    extensions = record.extensions
    data = record.data
    dead = Record.fast(
        dict(data) if type(data) is dict else data,
        record.id,
        record.source,
        record.type,
        record.subject,
        record.datacontenttype,
        record.time,
        record.dataschema,
        dict(extensions) if isinstance(extensions, dict) else {},
        record.topic,
        record.offset,
        record.null_data is True,
    )
    problems = attribute_problems(dead)
    if not isinstance(extensions, dict):
        problems["extensions"] = "must be a dict"
    if problems:
        kept: dict[str, Any] = {}
        defaults = {"id": new_id(), "source": "meshconnect", "type": "meshconnect.record"}
        for name in problems:
            if name in defaults:
                kept[name] = getattr(dead, name)
                setattr(dead, name, defaults[name])
            elif name in ("subject", "time", "datacontenttype", "dataschema"):
                kept[name] = getattr(dead, name)
                setattr(dead, name, None)
            elif name == "extensions":
                kept[name] = extensions
        for name in list(dead.extensions):
            if (name if type(name) is str else repr(name)) in problems:
                kept[repr(name) if type(name) is not str else name] = dead.extensions.pop(name)
        try:
            text = json.dumps(kept, default=repr, sort_keys=True)
        except (TypeError, ValueError):  # keys that are not strings, a recursive value
            text = ascii(kept)
        dead.extensions[ERROR_ATTRIBUTES] = text
    data = dead.data
    if data is not None and not isinstance(data, str | bytes | bytearray):
        try:
            jsonvalue.dumps(data)
        except TypeError:  # data the store cannot keep (NaN, an object, deep nesting)
            dead.data = storable(data)
    return dead
