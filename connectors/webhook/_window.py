"""What the webhook source keeps of its idempotency window in its position, so that a crash
between the commit of a batch and the 2xx reaching the sender does not store the sender's
retry a second time.

Each digest (the 16 bytes of :func:`~connectors.webhook.source._event_key`, or of a timestamped
signature) is kept with the wall-clock time its batch was taken for the store; the position
holds them packed, newest last, as::

    {"count": 3, "from": "2026-11-30T21:53:01.120Z", "to": "2026-11-30T21:53:02.004Z",
     "digests": "<base64: per digest its 16 bytes, then 4 bytes (big-endian) of milliseconds
                 before `to`>"}

A position keeps at most :func:`limit` digests of each kind (at least the whole last two
batches, since a batch takes at most :func:`batch_events` events), and none older than the
window they belong to.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["BATCH_EVENTS", "Kept", "batch_events", "limit", "pack", "unpack"]

DIGEST = 16
ENTRY = DIGEST + 4
#: Events a batch takes from the queue (a single request of more, ``max_batch`` above it, is
#: a batch of its own).
BATCH_EVENTS = 1000
_AGE = struct.Struct(">I")
_FIELDS = {"count", "from", "to", "digests"}

#: (digest, wall-clock seconds), oldest first.
Kept = deque[tuple[bytes, float]]


def batch_events(max_batch: int) -> int:
    """The most events of a batch: :data:`BATCH_EVENTS`, or one request's ``max_batch``."""
    return max(BATCH_EVENTS, max_batch)


def limit(max_batch: int) -> int:
    """The most digests of one kind a position keeps: two whole batches."""
    return 2 * batch_events(max_batch)


def trim(kept: Kept, now: float, seconds: float, most: int) -> None:
    """Forget the digests older than ``seconds`` before ``now``, and the oldest beyond
    ``most``."""
    while kept and (len(kept) > most or now - kept[0][1] > seconds):
        kept.popleft()


def _stamp(ms: int) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC text, to the millisecond."""
    when = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return when.isoformat(timespec="milliseconds")[:-6] + "Z"


def _seconds(text: Any, name: str) -> float:
    if not isinstance(text, str):
        raise ValueError(f"{name!r} is not a time (an ISO 8601 text such as {_stamp(0)!r})")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name!r} is not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise ValueError(f"{name!r} has no UTC offset: {text!r}")
    return when.timestamp()


def pack(kept: Iterable[tuple[bytes, float]]) -> dict[str, Any] | None:
    """The position form of ``kept`` (module docstring); ``None`` when it is empty."""
    entries = list(kept)
    if not entries:
        return None
    newest = round(max(t for _, t in entries) * 1000)  # milliseconds
    ages = [min(0xFFFFFFFF, max(0, newest - round(at * 1000))) for _, at in entries]
    blob = b"".join(digest + _AGE.pack(age) for (digest, _), age in zip(entries, ages, strict=True))
    return {
        "count": len(entries),
        "from": _stamp(newest - max(ages)),
        "to": _stamp(newest),
        "digests": base64.b64encode(blob).decode("ascii"),
    }


def unpack(value: Any, most: int | None = None) -> list[tuple[bytes, float]]:
    """The digests and their times of a position's packed form (``None``: none);
    ``ValueError`` saying what is wrong when it is not one. ``most`` refuses more digests."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise ValueError('not an object {"count", "from", "to", "digests"}')
    unknown = sorted(set(value) - _FIELDS)
    missing = sorted(_FIELDS - set(value))
    if unknown or missing:
        raise ValueError(
            "fields "
            + ", ".join(
                part
                for part in (
                    f"unknown: {', '.join(unknown)}" if unknown else "",
                    f"missing: {', '.join(missing)}" if missing else "",
                )
                if part
            )
        )
    count = value["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"'count' is not a number of digests: {count!r}")
    if most is not None and count > most:
        raise ValueError(f"{count} digests, more than the {most} a position keeps")
    newest = _seconds(value["to"], "to")
    _seconds(value["from"], "from")
    text = value["digests"]
    if not isinstance(text, str):
        raise ValueError("'digests' is not a base64 text")
    try:
        blob = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("'digests' is not base64") from None
    if len(blob) != count * ENTRY:
        raise ValueError(
            f"'digests' holds {len(blob)} bytes, not {count} digests of {ENTRY} bytes each"
        )
    out: list[tuple[bytes, float]] = []
    for start in range(0, len(blob), ENTRY):
        (age,) = _AGE.unpack_from(blob, start + DIGEST)
        out.append((blob[start : start + DIGEST], newest - age / 1000))
    return out
