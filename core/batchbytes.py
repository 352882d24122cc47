"""How much data a source's batch may take, and a cheap measure of it.

Sources bound each poll by rows or events (``batch_size``) *and* by bytes: a count alone lets
rows of 8 MB BLOBs make a batch of gigabytes. The file, redis, jdbc and canal sources stop a
batch once its data reach :data:`BATCH_BYTES`, keeping the item that crosses it (so a poll
always makes progress, and one huge item alone is a batch), as Kafka Connect bounds a fetch
by ``fetch.max.bytes`` besides ``max.poll.records``.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterable
from typing import Any

__all__ = ["BATCH_BYTES", "values_bytes"]

#: The data one source batch takes at most (the item that crosses it included).
BATCH_BYTES = 16 * 1024 * 1024

#: The size counted for a value that is not text or bytes (a number, a date, a UUID …).
SMALL_VALUE = 8

_SIZED = frozenset({str, bytes, bytearray, memoryview})
_SMALL = frozenset(
    {
        int,
        float,
        bool,
        type(None),
        decimal.Decimal,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
    }
)


def values_bytes(values: Iterable[Any]) -> int:
    """The data of one row's ``values``, cheaply: the length of each text or bytes value
    (subclasses too), :data:`SMALL_VALUE` for any other (a JSON document or an array counts as
    one value). About 0.2 µs a row of five columns: it runs on every row a source reads."""
    n = 0
    for v in values:
        kind = type(v)
        if kind in _SIZED:
            n += len(v)
        elif kind in _SMALL or not isinstance(v, str | bytes | bytearray | memoryview):
            n += SMALL_VALUE
        else:
            n += len(v)
    return n
