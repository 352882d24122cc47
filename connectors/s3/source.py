"""The ``s3`` source: the objects under a prefix, in key order, resumable mid-object.

One partition, named ``s3://BUCKET/PREFIX``. Its position is
``{"after": K, "key": C, "index": I, "dirs": {D: L, ...}}``: per *directory* ``D`` (a key up
to and including its last ``/``) every object with a key up to ``L`` is read; ``K`` is the
last object read, and object ``C`` (being read, when still there) is read up to item ``I`` (a
line number for JSON lines, a row number for CSV and Parquet). A batch never spans two
objects. Each listing lists the whole prefix (in key order) and reads the objects not read
yet, so a new object in a new directory (``c=AT/`` after ``c=DE/``) is read; within one
directory keys must arrive in order, as time-stamped or sequence-numbered names (and the
``s3`` sink's names) do: a new key sorting before that directory's ``L`` is never read. A
directory with no object left in a listing is dropped from ``dirs`` (its next object is new).
A position from before ``dirs`` existed (``{"after": K, ...}`` only) counts every key up to
``K`` as read.

A record's ``data`` is the item's value; its ``id`` is ``s3://BUCKET/KEY#INDEX`` (a replay
gives the same ids), ``subject`` the key (in both, a key holding a tab, a newline or another
character a CloudEvents String may not hold is spelled with ``\\uXXXX``, backslashes doubled
first), ``time`` the object's last-modified time. A line or row that does not decode becomes
a failure with its raw text, and a damaged gzip object one failure with its raw bytes (up to
1 MiB; nothing of a damaged deflate stream can be trusted); failures follow the ``errors:``
policy and the other objects are read.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from typing import Any

from meshconnect import (
    DataError,
    MeshconnectError,
    Position,
    Record,
    Source,
    SourceBatch,
    eventrules,
)
from meshconnect.expr import compile_re2
from meshconnect.positioncheck import (
    Check,
    check_stored,
    fields_problem,
    list_of,
    nullable,
    partition_problem,
    text,
    whole,
)

from .client import classify_s3_error, error_code, explaining, make_client
from .config import S3SourceConfig
from .formats import RAW_LIMIT, Block, TooLarge, decode_blocks, format_of_key, unpack

__all__ = ["S3Source"]


#: GetObject's (and CopyObject's) answers for an object that is there but archived (Glacier,
#: Deep Archive, the archive tiers of Intelligent-Tiering): unreadable until restored,
#: whatever the retries.
_ARCHIVED = ("InvalidObjectState", "ObjectNotInActiveTierError")


def _directory(key: str) -> str:
    """The "directory" of a key: up to and including its last ``/`` (``""`` for none)."""
    return key[: key.rfind("/") + 1]


def _re2_search(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (linear time whatever the key)."""
    return compile_re2(pattern)


class _Reading:
    """The object being read: its key, its blocks of items and how far they are read."""

    __slots__ = ("blocks", "index", "key", "pending", "size", "start", "time")

    def __init__(self, key: str, size: int, when: str, blocks: Iterator[Block], index: int) -> None:
        self.key = key
        self.size = size
        self.time = when
        self.blocks = blocks
        self.pending: Block | None = None  # a block a batch took part of
        self.start = 0  # where the rest of ``pending`` starts
        self.index = index  # items before this index were read before a restart


_NO_BLOCKS: tuple[Block, ...] = ()


class S3Source(Source[S3SourceConfig]):
    """Reads the objects under ``prefix`` (see the module)."""

    empty_position = "reads every object under the prefix, from the first key"

    def __init__(self, config: S3SourceConfig, context: Any) -> None:
        super().__init__(config, context)
        self.bounded = not config.follow
        self.partition = f"s3://{config.bucket}/{config.prefix}"
        self.source_uri = f"s3://{config.bucket}"
        # RE2: keys are chosen by whoever may write to the bucket, and a backtracking
        # engine could stall the worker on one (issue 19).
        self.pattern = _re2_search(config.pattern) if config.pattern else None
        self.client: Any = None
        self.after = ""
        self.dirs: dict[str, str] = {}  # per directory, the greatest key read
        self.floor = ""  # every key up to it is read (a position from before ``dirs``)
        self.queued: set[str] = set()  # keys listed and not yet read to their end
        self.resume_key: str | None = None
        self.resume_index = 0
        self.queue: list[tuple[str, int, str]] = []  # listed, not yet read: (key, size, time)
        self.reading: _Reading | None = None
        self.next_listing = 0.0
        self.listed_once = False
        self.progress: Any = None
        self.fetching: dict[str, asyncio.Future[Any]] = {}
        #: objects read to their end whose delete or move is not known done (after_read):
        #: in the position, so a start after a crash or a failed delete finishes them all
        self.unfinished: list[str] = []
        self.failed_finish: set[str] = set()  # of those, committed and failed: retried
        metrics = context.metrics
        self.m_objects = metrics.counter("s3_objects_read", "Objects read to their end")
        self.m_bytes = metrics.counter("s3_bytes_read", "Bytes downloaded")
        self.m_records = metrics.counter("s3_records_read", "Records read")

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_s3_error(exc)

    def position_problem(self, partition: str, position: Position) -> str | None:
        """Partition ``s3://BUCKET/PREFIX``; keys under the prefix; ``dirs`` maps each
        directory to a key in it (module docstring)."""
        prefix = self.config.prefix

        def under(key: str) -> bool:
            return key == "" or key.startswith(prefix)

        def dirs_ok(value: object) -> bool:
            return isinstance(value, dict) and all(
                isinstance(k, str) and under(k) and _directory(k) == d for d, k in value.items()
            )

        key = text(f"a key under the prefix {prefix!r}", under)
        fields = {
            "after": key,
            "key": nullable(key),
            "index": whole(),
            "dirs": Check(
                f'an object {{"DIRECTORY/": "DIRECTORY/LAST-KEY-READ"}} of keys under {prefix!r}',
                dirs_ok,
            ),
            "floor": key,
            "unfinished": list_of(
                key, f"a list of keys under {prefix!r} (deletes or moves to finish)"
            ),
        }
        return partition_problem(
            partition, [self.partition], "s3://BUCKET/PREFIX of config.bucket and config.prefix"
        ) or fields_problem(position, fields)

    def _explaining(self) -> contextlib.AbstractContextManager[None]:
        """A configuration error of S3 (a missing bucket, refused credentials, another region)
        raised as a ``ConfigError`` naming the key to check."""
        return explaining(self.config, f"s3 source {self.context.name}")

    async def start(self, positions: Mapping[str, Position]) -> None:
        with self._explaining():
            await self._start(positions)

    async def _start(self, positions: Mapping[str, Position]) -> None:
        check_stored(self, positions, [self.partition], f"s3 source {self.context.name}")
        self.client = make_client(self.config)
        position = positions.get(self.partition) or {}
        self.after = str(position.get("after") or "")
        if "dirs" in position:
            self.dirs = {str(d): str(k) for d, k in (position.get("dirs") or {}).items()}
            self.floor = str(position.get("floor") or "")
        else:
            self.floor = self.after
        self.resume_key = position.get("key")
        self.resume_index = int(position.get("index") or 0)
        self.unfinished = [str(k) for k in position.get("unfinished") or []]
        if self.config.after_read != "keep":
            # objects committed without their delete or move: the worker stopped between the
            # commit and the ack, or the delete failed (the last one read: older positions)
            for key in [*self.unfinished, *([self.after] if self.after else [])]:
                await asyncio.to_thread(self._finish_object, key, True)
                if key in self.unfinished:
                    self.unfinished.remove(key)
        return None

    async def stop(self) -> None:
        # the client stays: acks of the last batches (delete or move) may come after stop
        for task in self.fetching.values():
            task.cancel()
        self.fetching.clear()
        if self.progress is not None:
            self.progress.close()

    async def end_positions(self) -> dict[str, Position]:
        self.client = make_client(self.config)
        with self._explaining():
            keys = await asyncio.to_thread(self._list)
        dirs: dict[str, str] = {}
        for key, _, _ in keys:
            dirs[_directory(key)] = key  # keys come in order: the last one wins
        last = keys[-1][0] if keys else ""
        return {self.partition: {"after": last, "key": None, "index": 0, "dirs": dirs}}

    def _position(self, key: str | None, index: int) -> Position:
        position: dict[str, Any] = {
            "after": self.after,
            "key": key,
            "index": index,
            "dirs": dict(self.dirs),
        }
        if self.floor:
            position["floor"] = self.floor
        if self.unfinished:
            position["unfinished"] = list(self.unfinished)
        return position

    def _is_read(self, key: str) -> bool:
        return key <= self.dirs.get(_directory(key), "") or (bool(self.floor) and key <= self.floor)

    # -- listing -----------------------------------------------------------------------------

    def _list(self, present: set[str] | None = None) -> list[tuple[str, int, str]]:
        """The keys under the prefix, in key order, with size and time (the directories of
        all keys listed, the skipped ones too, go into ``present``)."""
        prefix = self.config.prefix
        found: list[tuple[str, int, str]] = []
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.config.bucket, "Prefix": prefix}
        for page in paginator.paginate(**kwargs):
            for item in page.get("Contents", []) or []:
                key = item["Key"]
                if present is not None:
                    present.add(_directory(key))
                if key.endswith("/") and item.get("Size", 0) == 0:
                    continue  # a "folder" marker
                if self.pattern is not None and not self.pattern.search(key[len(prefix) :]):
                    continue
                when = item["LastModified"].isoformat().replace("+00:00", "Z")
                found.append((key, int(item.get("Size", 0)), when))
        return found

    async def _retry_finish(self) -> None:
        """Try again the deletes or moves that failed (of committed objects only)."""
        for key in sorted(self.failed_finish):
            try:
                await asyncio.to_thread(self._finish_object, key, False)
            except Exception:
                continue  # warned when it failed first; the next listing tries again
            self.failed_finish.discard(key)
            if key in self.unfinished:
                self.unfinished.remove(key)

    def _warn_empty(self) -> None:
        """The first listing found no object at all under the prefix: say so, with the
        likely mistake (a leading ``/``, which S3 keys seldom start with), instead of a
        silent run that reads nothing."""
        prefix = self.config.prefix
        hint = ""
        if prefix.startswith("/"):
            hint = f" (S3 keys rarely start with '/': did you mean {prefix.lstrip('/')!r}?)"
        self.context.logger.warning(
            "no object under s3://%s/ with prefix %r (config.prefix)%s",
            self.config.bucket,
            prefix,
            hint,
        )

    async def _refill(self) -> bool:
        """List the prefix; queue the objects not read yet; True when some came."""
        if self.failed_finish:
            await self._retry_finish()
        present: set[str] = set()
        listed = await asyncio.to_thread(self._list, present)
        if not present and not self.listed_once:
            self._warn_empty()
        found = [i for i in listed if i[0] not in self.queued and not self._is_read(i[0])]
        for gone in [d for d in self.dirs if d not in present]:
            del self.dirs[gone]  # no object left there: its next object is a new one
        self.queue.extend(found)
        self.queued.update(key for key, _, _ in found)
        if self.bounded:
            if self.progress is None:
                self.progress = self.context.progress(
                    f"s3://{self.config.bucket}/{self.config.prefix}",
                    total=len(found),
                    unit="objects",
                )
            elif found:
                self.progress.update(total=(self.progress.total or 0) + len(found))
        return bool(found)

    # -- reading -----------------------------------------------------------------------------

    def _fetch(self, key: str, fmt: str, gz: bool) -> tuple[bytes, bytes | None] | str | None:
        """(the object's bytes, decompressed or None when the gzip is damaged), None when the
        key vanished, or why the object cannot be read at all (archived: Glacier, Deep
        Archive, an Intelligent-Tiering archive tier; no retry reads it before a restore).
        Runs in a worker thread (the download and zlib release the GIL)."""
        try:
            answer = self.client.get_object(Bucket=self.config.bucket, Key=key)
            body = bytes(answer["Body"].read())
        except Exception as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404"):
                return None
            if code in _ARCHIVED:
                storage = exc.response.get("Error", {}).get("StorageClass")  # type: ignore[attr-defined]
                where = f" (storage class {storage})" if storage else ""
                return (
                    f"the object is archived{where} and cannot be read until it is restored "
                    f"(S3 answered {code})"
                )
            raise
        limit = self.config.max_object_bytes
        if len(body) > limit:  # grew past the limit between the listing and the download
            return self._too_large(len(body))
        try:
            return body, unpack(body, fmt, gz, limit)
        except TooLarge as exc:
            return f"it {exc}: not read (max_object_bytes; the whole object is held in memory)"

    def _too_large(self, size: int) -> str:
        return (
            f"the object is {size} bytes, over max_object_bytes ({self.config.max_object_bytes}): "
            "not read (the whole object is held in memory; raise max_object_bytes to read it)"
        )

    def _prefetch(
        self, key: str, fmt: str, gz: bool
    ) -> asyncio.Future[tuple[bytes, bytes | None] | str | None]:
        """The download of ``key``, started now: the next object comes down while the
        current one is parsed."""
        task = self.fetching.get(key)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._fetch, key, fmt, gz))
            self.fetching[key] = task
        return task

    async def _open_next(self) -> _Reading:
        """Download and open the first object of the queue (an empty reading when it vanished
        or has no known format)."""
        key, size, when = self.queue[0]
        kind = format_of_key(key, self.config.format, self.config.compression)
        if kind is None:
            self.context.logger.warning(
                "skipping %s: no known extension (.jsonl, .json, .ndjson, .csv, .parquet, "
                "optionally .gz); set config.format to read it",
                key,
            )
            return _Reading(key, size, when, iter(_NO_BLOCKS), 0)
        fmt, gz = kind
        if size > self.config.max_object_bytes:  # not downloaded: one failure
            problem: Block = ([0], [""], [self._too_large(size)])
            return _Reading(key, size, when, iter([problem]), self._resume_index(key))
        task = self._prefetch(key, fmt, gz)
        try:
            got = await task
        finally:
            if task.done():
                self.fetching.pop(key, None)  # consumed, or failed: a retry fetches again
        if len(self.queue) > 1:
            upcoming = self.queue[1][0]
            known = format_of_key(upcoming, self.config.format, self.config.compression)
            if known is not None and self.queue[1][1] <= self.config.max_object_bytes:
                self._prefetch(upcoming, *known)
        if got is None:
            self.context.logger.warning("%s vanished between its listing and its download", key)
            return _Reading(key, size, when, iter(_NO_BLOCKS), 0)
        if isinstance(got, str):  # archived or too large: one failure, the others are read
            unreadable: Block = ([0], [""], [got])
            return _Reading(key, size, when, iter([unreadable]), self._resume_index(key))
        raw, plain = got
        self.m_bytes.inc(len(raw))
        if plain is None:  # a damaged gzip: the whole object is one failure, its raw bytes
            data = raw if len(raw) <= RAW_LIMIT else raw[:RAW_LIMIT]
            bad: Block = ([0], [data], [f"bad gzip data ({len(raw)} bytes)"])
            return _Reading(key, size, when, iter([bad]), self._resume_index(key))
        blocks = decode_blocks(plain, fmt, self.config.delimiter)
        return _Reading(key, size, when, blocks, self._resume_index(key))

    def _resume_index(self, key: str) -> int:
        return self.resume_index if key == self.resume_key else 0

    async def poll(self) -> SourceBatch | None:
        with self._explaining():
            return await self._poll()

    async def _poll(self) -> SourceBatch | None:
        if self.reading is None:
            if not self.queue:
                now = time.monotonic()
                if self.listed_once and not self.bounded and now < self.next_listing:
                    await asyncio.sleep(min(1.0, self.next_listing - now))
                    return SourceBatch([])
                came = await self._refill()
                self.listed_once = True
                self.next_listing = time.monotonic() + self.config.poll_interval
                if not came:
                    if self.bounded:
                        if self.progress is not None:
                            self.progress.close()
                        return None
                    return SourceBatch([])
            self.reading = await self._open_next()
            self.queue.pop(0)
        return self._batch(self.reading)

    def _batch(self, reading: _Reading) -> SourceBatch:
        # Pause the cyclic GC while the batch is built (as the file source does): its records,
        # all alive, would otherwise be rescanned by collection after collection.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._build(reading)
        finally:
            if paused:
                gc.enable()

    def _build(self, reading: _Reading) -> SourceBatch:
        config = self.config
        uri = self.source_uri
        # subject and id: the key as a CloudEvents String (a tab as \u0009, backslashes
        # doubled then: eventrules.spelled_string), so no record is refused for its name
        key = eventrules.spelled_string(reading.key)
        # positions, what is read and the after-read step: the key itself, as listed
        name = reading.key
        base = f"{uri}/{key}#"
        kind = config.type
        when = reading.time
        taken, exhausted = self._take(reading, config.batch_size)
        fast = Record.fast
        records: list[Record] = []
        failures: list[tuple[Record, BaseException]] = []
        for indexes, values, problems in taken:
            if config.format == "cloudevents":
                for index, value, problem in zip(
                    indexes, values, problems or [None] * len(values), strict=True
                ):
                    if problem is None:
                        try:
                            records.append(Record.from_dict(value))
                            continue
                        except (ValueError, TypeError, DataError) as exc:
                            problem, value = f"item {index}: not a CloudEvent: {exc}", repr(value)
                    failures.append(self._failure(base, key, index, value, problem, when))
            elif problems is None:
                records += [
                    fast(value, base + str(index), uri, kind, key, "application/json", when)
                    for index, value in zip(indexes, values, strict=True)
                ]
            else:
                for index, value, problem in zip(indexes, values, problems, strict=True):
                    if problem is None:
                        records.append(
                            fast(value, base + str(index), uri, kind, key, "application/json", when)
                        )
                    else:
                        failures.append(self._failure(base, key, index, value, problem, when))
        self.m_records.inc(len(records))
        if not exhausted:
            return SourceBatch(
                records,
                {self.partition: self._position(name, taken[-1][0][-1] + 1)},
                failures,
            )
        # the object is read to its end
        self.m_objects.inc()
        if self.progress is not None:
            self.progress.advance(1)
        self.after = name
        directory = _directory(name)
        self.dirs[directory] = max(self.dirs.get(directory, ""), name)
        self.queued.discard(name)
        self.reading = None
        self.resume_key = None
        ack = None
        if config.after_read != "keep":
            if name not in self.unfinished:
                self.unfinished.append(name)
            ack = self._after_read(name)
        return SourceBatch(records, {self.partition: self._position(None, 0)}, failures, ack)

    @staticmethod
    def _take(reading: _Reading, limit: int) -> tuple[list[Block], bool]:
        """Up to ``limit`` items of ``reading`` (in blocks), and whether its items ran out
        before ``limit`` (the object is read to its end). A block a batch takes part of stays
        whole in ``reading.pending`` with where its rest starts: each batch copies only its
        own part (a small ``batch_size`` on a block of many short lines stays linear)."""
        taken: list[Block] = []
        count = 0
        while count < limit:
            block = reading.pending
            start = reading.start
            if block is None:
                block = next(reading.blocks, None)
                if block is None:
                    return taken, True
                start = 0
                if reading.index:  # resuming mid-object: pass over what was read before
                    start = bisect.bisect_left(block[0], reading.index)
                    if start == len(block[0]):
                        continue
                    reading.index = 0
            indexes, values, problems = block
            end = start + limit - count
            if start or end < len(values):
                indexes, values = indexes[start:end], values[start:end]
                problems = problems[start:end] if problems is not None else None
            if end < len(block[1]):
                reading.pending, reading.start = block, end
            else:
                reading.pending = None
            taken.append((indexes, values, problems))
            count += len(values)
        return taken, False

    def _failure(
        self, base: str, key: str, index: int, value: Any, problem: str, when: str
    ) -> tuple[Record, BaseException]:
        """A failure: the item's raw text (or bytes) as data, and why."""
        record = Record(
            value,
            id=base + str(index),
            source=self.source_uri,
            type=self.config.type,
            subject=key,
            time=when,
            datacontenttype="text/plain" if isinstance(value, str) else "application/octet-stream",
        )
        return record, DataError(f"{key}: {problem}")

    # -- after read --------------------------------------------------------------------------

    def _after_read(self, key: str) -> Any:
        async def ack(error: BaseException | None) -> None:
            if error is None:
                try:
                    await asyncio.to_thread(self._finish_object, key, False)
                    if key in self.unfinished:
                        self.unfinished.remove(key)
                except Exception as exc:  # it stays; the next listing and start try again
                    self.failed_finish.add(key)
                    self.context.logger.warning(
                        "could not %s %s after reading it: %s: %s",
                        self.config.after_read,
                        key,
                        type(exc).__name__,
                        exc,
                    )

        return ack

    def _finish_object(self, key: str, at_start: bool) -> None:
        """Delete ``key`` or move it under ``move_to`` (a missing key is fine: done already)."""
        client = self.client
        bucket = self.config.bucket
        if self.config.after_read == "move":
            target = (self.config.move_to or "") + key[len(self.config.prefix) :]
            try:
                client.copy_object(
                    Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key}
                )
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    return
                if error_code(exc) in _ARCHIVED:  # no copy before a restore: it stays
                    self.context.logger.warning(
                        "%s is archived and cannot be moved until it is restored: left in place",
                        key,
                    )
                    return
                raise
        client.delete_object(Bucket=bucket, Key=key)
