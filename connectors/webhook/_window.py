"""What the webhook source keeps of its idempotency window in its position, so that a crash
between the commit of a batch and the 2xx reaching the sender does not store the sender's
retry a second time.

Each digest (the 16 bytes of :func:`~connectors.webhook.source._event_key`, or of a timestamped
signature) is kept with the wall-clock time its batch was taken for the store; the position
holds them packed, newest last, as::

    {"count": 3, "from": "2026-11-30T21:53:01.120Z", "to": "2026-11-30T21:53:02.004Z",
     "digests": "<base64: the 16 bytes of each digest, then for each digest in the same
                 order 4 bytes (big-endian) of milliseconds before `to`>"}

Of the batches within the window they belong to, a position keeps the last two whole, and
older ones while the digests stay within :data:`FLOOR`: so at most :func:`limit` digests of each
kind (a batch takes at most :func:`batch_events` events), and a position in proportion to its
batch (a batch of one request, as under light load, commits a few digests, not thousands).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

__all__ = ["BATCH_EVENTS", "FLOOR", "Kept", "batch_events", "limit", "pack", "unpack"]

DIGEST = 16
ENTRY = DIGEST + 4
#: Events a batch takes from the queue (a single request of more, ``max_batch`` above it, is
#: a batch of its own).
BATCH_EVENTS = 1000
#: Digests kept beyond the last two batches when these are small.
FLOOR = 32
_FIELDS = {"count", "from", "to", "digests"}


class Kept:
    """The digests a position keeps, by batch: (wall-clock seconds, digests), oldest first."""

    def __init__(self, entries: Iterable[tuple[bytes, float]] = ()) -> None:
        self.batches: deque[tuple[float, list[bytes]]] = deque()
        for digest, at in entries:  # a batch's digests share its time
            if self.batches and self.batches[-1][0] == at:
                self.batches[-1][1].append(digest)
            else:
                self.batches.append((at, [digest]))

    def add(self, at: float, digests: Iterable[bytes]) -> None:
        """The digests of a batch taken at ``at`` (none: nothing)."""
        batch = list(digests)
        if batch:
            self.batches.append((at, batch))

    def not_after(self, now: float) -> None:
        """A time after ``now`` (a clock set back, a hand-written position) becomes ``now``."""
        self.batches = deque((min(at, now), batch) for at, batch in self.batches)

    def trim(self, now: float, seconds: float, floor: int = FLOOR) -> None:
        """Forget the batches older than ``seconds`` before ``now``; of the others keep the
        last two, and older ones while all the digests are at most ``floor``."""
        batches = self.batches
        while batches and now - batches[0][0] > seconds:
            batches.popleft()
        total = len(self)
        while len(batches) > 2 and total > floor:
            total -= len(batches.popleft()[1])

    def entries(self) -> list[tuple[bytes, float]]:
        """(digest, time) of each digest, oldest first."""
        return [(digest, at) for at, batch in self.batches for digest in batch]

    def __len__(self) -> int:
        return sum(len(batch) for _, batch in self.batches)


def batch_events(max_batch: int) -> int:
    """The most events of a batch: :data:`BATCH_EVENTS`, or one request's ``max_batch``."""
    return max(BATCH_EVENTS, max_batch)


def limit(max_batch: int) -> int:
    """The most digests of one kind a position keeps: two whole batches."""
    return 2 * batch_events(max_batch)


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


def pack(kept: Kept | Iterable[tuple[bytes, float]]) -> dict[str, Any] | None:
    """The position form of ``kept`` (module docstring), each digest once; ``None`` when it
    is empty."""
    batches = (kept if isinstance(kept, Kept) else Kept(kept)).batches
    if not batches:
        return None
    newest = round(max(at for at, _ in batches) * 1000)  # milliseconds
    digests: list[bytes] = []  # of each batch, newest first
    ages: list[bytes] = []
    oldest = count = 0
    done: set[bytes] = set()
    for at, batch in reversed(batches):  # a digest kept twice has its last time
        fresh = [digest for digest in batch if digest not in done]
        if not fresh:
            continue
        done.update(fresh)
        age = min(0xFFFFFFFF, max(0, newest - round(at * 1000)))  # one a batch: its time
        oldest = max(oldest, age)
        count += len(fresh)
        digests.append(b"".join(fresh))
        ages.append(age.to_bytes(4, "big") * len(fresh))
    blob = b"".join(reversed(digests)) + b"".join(reversed(ages))
    return {
        "count": count,
        "from": _stamp(newest - oldest),
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
    ages = struct.unpack_from(f">{count}I", blob, count * DIGEST)
    for n, age in enumerate(ages):
        out.append((blob[n * DIGEST : (n + 1) * DIGEST], newest - age / 1000))
    return out
