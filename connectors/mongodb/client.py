"""The pymongo client, BSON ↔ JSON, and pymongo's exceptions in the taxonomy.

BSON and JSON (docs/connectors/mongodb.md#bson-and-json)
    ``json_mode: relaxed`` (default) maps a document to JSON as MongoDB Extended JSON v2's
    relaxed mode does (``{"$oid": …}``, ``{"$date": "2026-11-29T10:00:00.123Z"}``,
    ``{"$binary": {"base64": …, "subType": "00"}}``, ``{"$timestamp": …}``, regular
    expressions, keys…; a double NaN or infinity ``{"$numberDouble": "NaN"}``, a date outside
    years 1-9999 ``{"$date": {"$numberLong": …}}``), except that a Decimal128 is a JSON
    number with its exact digits (a :class:`decimal.Decimal`, as :mod:`meshconnect.jsonvalue`
    reads numbers) and int32,
    int64 and double are plain numbers. ``canonical`` is Extended JSON canonical mode, every
    type kept (``{"$numberLong": "5"}``, ``{"$numberDouble": "1.5"}``, ``{"$numberDecimal":
    "1.10"}``). Writing, the sink reads either form back (``json_util.object_hook``), a
    Decimal as a Decimal128 (34 significant digits at most, else a data error), an integer
    beyond 64 bits as a Decimal128. So ``canonical`` round-trips every type; ``relaxed``
    every value, with a double coming back as a Decimal128 after it passed the mesh (where a
    number with a fraction is an exact decimal).

The client class is :data:`CLIENT_CLASS` (pymongo's ``MongoClient``); the tests put
mongomock's, which has the same interface, there.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pymongo
from bson import json_util
from bson.codec_options import DatetimeConversion
from bson.decimal128 import Decimal128
from bson.errors import InvalidDocument
from bson.json_util import CANONICAL_JSON_OPTIONS, RELAXED_JSON_OPTIONS
from pymongo import errors as px

from meshconnect import ConfigError, DataError, MeshconnectError, RetriableError
from meshconnect.jsonvalue import loads

from .config import MongoConnection

__all__ = [
    "CLIENT_CLASS",
    "READ_JSON",
    "classify_mongo",
    "connect",
    "connect_options",
    "from_json",
    "to_json",
]

#: The client class (tests substitute mongomock's, which has the same interface).
CLIENT_CLASS: Any = pymongo.MongoClient

_INT64 = (-(2**63), 2**63 - 1)
#: How Extended JSON is read back: dates as aware UTC datetimes; a date a datetime cannot
#: hold (before year 1, after 9999) as the milliseconds BSON holds (``DatetimeMS``).
READ_JSON = RELAXED_JSON_OPTIONS.with_options(
    tz_aware=True, tzinfo=dt.UTC, datetime_conversion=DatetimeConversion.DATETIME_AUTO
)


def connect(config: MongoConnection) -> Any:
    return CLIENT_CLASS(config.uri, **connect_options(config))


def connect_options(config: MongoConnection) -> dict[str, Any]:
    """The client's keyword options: timeouts, credentials, how BSON is decoded."""
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": int(config.timeout * 1000),
        "connectTimeoutMS": int(config.timeout * 1000),
        "tz_aware": True,
        # A BSON date outside datetime's years 1-9999 is decoded as DatetimeMS (and written
        # as {"$date": {"$numberLong": …}}) instead of failing the whole read.
        "datetime_conversion": "DATETIME_AUTO",
    }
    if config.username is not None:
        options["username"] = config.username
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.auth_source is not None:
        options["authSource"] = config.auth_source
    return options


# -- BSON -> JSON ---------------------------------------------------------------------------


def to_json(value: Any, mode: str = "relaxed") -> Any:
    """A BSON value (a document as pymongo decodes it) as a JSON value (module docstring)."""
    if mode == "canonical":
        return loads(json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS))
    return _relaxed(value)


def _relaxed(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        # JSON has no NaN or infinity: Extended JSON's relaxed form keeps them wrapped.
        text = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return {"$numberDouble": text}
    if isinstance(value, Mapping):
        return {str(k): _relaxed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relaxed(v) for v in value]
    if isinstance(value, Decimal128):
        exact = value.to_decimal()
        if exact.is_finite():
            return exact
        return {"$numberDecimal": str(value)}
    if isinstance(value, int):  # Int64, bool handled above
        return int(value)
    if isinstance(value, dt.datetime):
        when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        text = when.astimezone(dt.UTC).isoformat(timespec="milliseconds")
        return {"$date": text.replace("+00:00", "Z")}
    return loads(json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS))


# -- JSON -> BSON ---------------------------------------------------------------------------


def from_json(value: Any) -> Any:
    """A JSON value of a record as BSON: Extended JSON wrappers (``{"$oid": …}``) become
    their types, Decimal a Decimal128, an integer beyond 64 bits a Decimal128. Raises
    :class:`~meshconnect.DataError` for what BSON cannot hold."""
    kind = type(value)
    if kind is str or kind is bool or value is None or kind is float:
        return value
    if kind is int:
        if _INT64[0] <= value <= _INT64[1]:
            return value
        return _decimal128(Decimal(value))
    if isinstance(value, Decimal):
        return _decimal128(value)
    if isinstance(value, dict):
        if (
            len(value) <= 2
            and value
            and all(isinstance(k, str) and k.startswith("$") for k in value)
        ):
            try:
                converted = json_util.object_hook(
                    {k: v if isinstance(v, str) else from_json(v) for k, v in value.items()},
                    READ_JSON,
                )
            except (TypeError, ValueError, KeyError) as exc:
                raise DataError(f"bad Extended JSON {value!r}: {exc}") from None
            if converted is not value and not isinstance(converted, dict):
                return converted
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, bytes):
        return value
    raise DataError(f"a {type(value).__name__} has no BSON type")


def _decimal128(value: Decimal) -> Decimal128:
    if len(value.as_tuple().digits) > 34:
        raise DataError(
            f"{value} has more than the 34 significant digits of a Decimal128: write it as a "
            "string (a cast transform)"
        )
    try:
        return Decimal128(value)
    except Exception as exc:  # exponent out of range
        raise DataError(f"{value} does not fit a Decimal128: {exc}") from None


# -- errors ---------------------------------------------------------------------------------

#: Server error codes of transient conditions (a primary stepping down, a shutdown, a
#: network hiccup inside the cluster), as the drivers' retryable-writes spec lists them.
RETRIABLE_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 46, 112, 251}
)


def classify_mongo(exc: BaseException) -> type[MeshconnectError] | None:
    """pymongo's exceptions in the taxonomy (tests/test_mongodb_unit.py checks each):

    * connection failures, timeouts, no primary (``AutoReconnect``, ``NetworkTimeout``,
      ``ServerSelectionTimeoutError``, ``ExecutionTimeout``), the retryable server codes,
      write-concern errors: ``RetriableError``;
    * authentication failures, unauthorized (13), invalid URI or options:
      ``ConfigError``;
    * a duplicate key (11000), document validation (121), other write errors, documents
      BSON cannot encode: ``DataError`` (that record only).
    """
    if isinstance(exc, px.OperationFailure) and exc.code in (18, 13, 8000):
        return ConfigError
    if isinstance(exc, px.ConfigurationError | px.InvalidURI):
        return ConfigError
    if isinstance(
        exc,
        px.AutoReconnect
        | px.NetworkTimeout
        | px.ServerSelectionTimeoutError
        | px.ExecutionTimeout
        | px.WTimeoutError
        | px.WriteConcernError,
    ):
        return RetriableError
    if isinstance(exc, px.OperationFailure):
        if exc.code in RETRIABLE_CODES or exc.has_error_label("RetryableWriteError"):
            return RetriableError
        return DataError
    if isinstance(exc, px.DocumentTooLarge | InvalidDocument):
        return DataError
    if isinstance(exc, px.PyMongoError):
        return RetriableError if isinstance(exc, px.ConnectionFailure) else None
    return None
