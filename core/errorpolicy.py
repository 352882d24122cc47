"""Applying an ``errors:`` policy: retries with backoff, tolerance and the dead-letter topic.

Retriable errors (see :mod:`meshconnect.errors`) are retried up to ``retry.max_attempts`` with
exponential backoff and jitter. What still fails, and every data error, is then either fatal
(``tolerance: none``: the connector fails and resumes from its committed offsets when restarted)
or dead-lettered (``tolerance: all``): the record goes to ``dead_letter_topic`` with its error
context in CloudEvent extensions, and processing goes on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

from .config.model import ErrorPolicy, RetryPolicy
from .errors import DataError, RetriableError, StoreError, classify
from .records import Record, now_iso

__all__ = ["ERROR_EXTENSIONS", "backoff_delay", "dead_letter_record", "retrying"]

T = TypeVar("T")

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


def backoff_delay(policy: RetryPolicy, attempt: int) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): exponential, equal jitter."""
    ceiling = min(policy.max_backoff, policy.initial_backoff * (2 ** (attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


def is_retriable(exc: BaseException) -> bool:
    return classify(exc) in (RetriableError, StoreError)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    log: logging.Logger,
    what: str,
) -> tuple[T, int]:
    """Run ``operation``, retrying retriable errors; returns (result, attempts used).

    The last exception is re-raised with an ``attempts`` attribute once attempts run out or for a
    non-retriable error.
    """
    attempt = 1
    while True:
        try:
            return await operation(), attempt
        except Exception as exc:
            if not is_retriable(exc) or attempt >= policy.max_attempts:
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
    dead = record.copy()
    try:
        orjson.dumps(dead.data)
    except TypeError:  # data the store cannot keep (a set, an object): keep its text
        if not isinstance(dead.data, bytes | bytearray):
            dead.data = repr(dead.data)
            dead.datacontenttype = "text/plain"
    ext = dead.extensions
    ext["errorstage"] = stage
    ext["errorpipeline"] = pipeline
    ext["errorconnector"] = connector
    ext["errortype"] = type(error).__name__
    cause = error.__cause__
    message = str(error)
    if cause is not None and not isinstance(error, DataError | RetriableError):
        message = f"{message} ({type(cause).__name__}: {cause})"
    ext["errormessage"] = message[:2000]
    if record.topic is not None:
        ext["errortopic"] = record.topic
    if record.offset is not None:
        ext["erroroffset"] = record.offset
    ext["errorattempts"] = int(getattr(error, "attempts", 1))
    ext["errortime"] = now_iso()
    dead.topic = policy.dead_letter_topic
    dead.offset = None
    return dead
