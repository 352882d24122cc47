"""The ``s3`` sink: records into partitioned, rotated objects, exactly once.

Each record goes to the open object of its *partition*: its topic and the key prefix its
``key_template`` renders. An object is closed (rotated) when it reaches ``rotate_records``,
before it would pass ``rotate_bytes``, ``rotate_interval`` after its first record (checked by
:meth:`S3Sink.tick` too, so an idle partition closes without traffic), when a CSV or Parquet
record does not fit its columns, and at the end of a run. A closed object is uploaded in the
background (one PUT, or a multipart upload above ``multipart_threshold``).

**Exactly once.** An object's key is ``prefix + topic + "+" + first offset + extension``
(:func:`~.keys.object_name`), so the same records written again land on the same key. The sink
commits only what is in uploaded objects: ``flush`` returns
:class:`~meshconnect.Flushed` whose ``pending`` counts back to the oldest record still in an
open object, and the worker commits each topic's offset up to there. With several partitions
some uploaded objects hold records after that offset; the state committed with it says, per
partition, the offset below which its records are uploaded (``done``), and after a restart
the sink skips re-delivered records below it. An object uploaded after the last commit (a
crash between upload and commit) holds only records that are delivered again: before its first
upload to a partition in a run, the sink deletes that partition's objects whose first offset is
at or past both the first re-delivered offset and the partition's ``done`` mark, then writes
them again. Unfinished multipart uploads under the template's literal prefix are aborted at
start. This follows the Confluent S3 sink's deterministic naming (``topic+partition+
startOffset``), with the cleanup making rotation by time and wall-clock partitions safe too
(except a ``{now:...}`` prefix that changes between the runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from meshconnect import (
    BatchError,
    DataError,
    Flushed,
    MeshconnectError,
    Record,
    Sink,
)

from .client import classify_s3_error, error_code, explaining, make_client
from .config import MAX_PARTS, S3SinkConfig
from .formats import (
    ObjectBody,
    check_parquet_row,
    content_type,
    encode_payload,
    extension,
    schema_signature,
    signatures_fit,
)
from .keys import MAX_KEY_BYTES, object_name, parse_object_name

__all__ = ["S3Sink"]


def part_step(size: int, part_size: int) -> int:
    """The part size of a multipart upload of ``size`` bytes: ``part_size``, or larger when
    that would make more than S3's 10,000 parts (S3 refuses part 10,001: the object could
    never be uploaded, failing every retry)."""
    return max(part_size, -(-size // MAX_PARTS))


class _Object:
    """One object of a partition: open (taking records), then sealed, then uploaded."""

    __slots__ = (
        "body",
        "count",
        "data",
        "first_offset",
        "first_seq",
        "floor",
        "key",
        "last_offset",
        "opened",
        "prefix",
        "signature",
        "size",
        "topic",
    )

    def __init__(self, sink: S3Sink, topic: str, prefix: str, offset: int, seq: int) -> None:
        self.topic = topic
        self.prefix = prefix
        self.first_offset = offset
        self.last_offset = offset
        self.first_seq = seq
        #: per topic, the offset of its first record at ``first_seq`` or after in the write
        #: call that opened this object (set when that call ends)
        self.floor: dict[str, int] = {}
        self.count = 0
        self.size = 0
        self.opened = time.monotonic()
        self.key = prefix + object_name(topic, offset, sink.extension)
        self.body = ObjectBody(sink.config.format, sink.config.compression)
        self.signature: Any = None
        self.data: bytes | None = None  # the built bytes, kept for a retried upload


class S3Sink(Sink[S3SinkConfig]):
    """Writes records to objects in ``bucket`` under ``key_template`` (see the module)."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): an object's key holds its
        topic partition (``orders#2+…``), so each writes and cleans up objects of its own."""
        return None

    def __init__(self, config: S3SinkConfig, context: Any) -> None:
        super().__init__(config, context)
        self.template = config.template
        self.extension = extension(config.format, config.compression)
        if config.rotate_interval is not None:
            self.tick_interval = max(0.05, min(config.rotate_interval / 4, 5.0))
        self.client: Any = None
        self.open_objects: dict[tuple[str, str], _Object] = {}
        self.sealed: list[_Object] = []
        self.inflight: dict[asyncio.Task[None], _Object] = {}
        self.seq = 0  # records given to write (each accepted call), over the whole run
        #: per accepted write call: (first seq, records, {topic: its first offset in the
        #: call}), oldest first. Per call, not per record: an object that stays open for long
        #: (a rare key of key_template) keeps every call since its first record here.
        self.written: deque[tuple[int, int, dict[str, int]]] = deque()
        self.last_offset: dict[str, int] = {}
        self.skip_below: dict[str, dict[str, int]] = {}  # the committed ``done`` marks
        self.done: dict[str, dict[str, int]] = {}  # marks of what is uploaded (for the state)
        self.first_seen: dict[str, int] = {}
        self.cleaned: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.semaphore = asyncio.Semaphore(config.upload_concurrency)
        metrics = context.metrics
        self.m_objects = metrics.counter("s3_objects_written", "Objects uploaded")
        self.m_bytes = metrics.counter("s3_bytes_written", "Bytes uploaded (after compression)")
        self.m_records = metrics.counter("s3_records_written", "Records in uploaded objects")
        self.m_deleted = metrics.counter(
            "s3_orphans_deleted", "Objects of a crashed run deleted before being written again"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def _explaining(self) -> contextlib.AbstractContextManager[None]:
        """A configuration error of S3 (a missing bucket, refused credentials, another region)
        raised as a ``ConfigError`` naming the key to check."""
        return explaining(self.config, f"s3 sink {self.context.name}")

    async def open(self, state: Mapping[str, Any] | None) -> None:
        with self._explaining():
            await self._open(state)

    async def _open(self, state: Mapping[str, Any] | None) -> None:
        self.client = make_client(self.config)
        done = dict((state or {}).get("done") or {})
        self.skip_below = {t: dict(marks) for t, marks in done.items()}
        self.done = {t: dict(marks) for t, marks in done.items()}
        await asyncio.to_thread(self._check_bucket)
        if self.config.abort_orphan_uploads:
            aborted = await asyncio.to_thread(self._abort_orphan_uploads)
            if aborted:
                self.context.logger.info(
                    "aborted %d unfinished multipart upload(s) of an earlier run", aborted
                )

    def _check_bucket(self) -> None:
        """The bucket is there and the credentials reach it; else the ``ConfigError`` naming
        the key to check (:func:`~.client.config_problem`). HEAD answers carry no body (a
        bare ``403`` for an unknown key id, a bad signature and a missing permission alike),
        so a refused HEAD is asked again as a listing of one key, whose answer says which."""
        try:
            self.client.head_bucket(Bucket=self.config.bucket)
        except Exception as exc:
            if error_code(exc) not in ("404", "403", "NoSuchBucket", "AccessDenied"):
                raise
            # raises the error that names the key to check; a listing that works means the
            # bucket is there and reachable (a HEAD denied by a policy: the uploads will tell)
            self.client.list_objects_v2(Bucket=self.config.bucket, MaxKeys=1)

    def _abort_orphan_uploads(self) -> int:
        """Abort the unfinished multipart uploads (a crash mid-upload left them) whose keys
        this sink could have made (:meth:`~.keys.KeyTemplate.owns_key`: the template's shape
        and a deterministic object name); another sink's uploads in the bucket stay."""
        aborted = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(
            Bucket=self.config.bucket, Prefix=self.template.literal_prefix
        ):
            for upload in page.get("Uploads", []) or []:
                key = upload["Key"]
                if not self.template.owns_key(key, self.extension):
                    continue
                self.client.abort_multipart_upload(
                    Bucket=self.config.bucket, Key=key, UploadId=upload["UploadId"]
                )
                aborted += 1
        return aborted

    async def close(self) -> None:
        tasks = list(self.inflight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.inflight.clear()
        self.client = None

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_s3_error(exc)

    # -- writing -----------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        # An upload that failed raises here, before anything of this batch is taken, so the
        # worker's retry of the batch writes it once.
        backlog = len(self.inflight) + len(self.sealed)
        await self._reap(block=backlog > 2 * self.config.upload_concurrency)
        failed = BatchError()
        seq = self.seq
        # First every record's prefix and payload, the steps that can fail, with nothing
        # taken yet: an error escaping here leaves the open objects as they were, so the
        # worker's retry of the batch (or of its halves) cannot add a record twice.
        prepared = [self._prepare(record, seq + index) for index, record in enumerate(records)]
        taken: list[tuple[str, int]] = []
        opened: list[_Object] = []
        interval = self.config.rotate_interval
        now = time.monotonic()
        for index, (topic, offset, ready) in enumerate(prepared):
            taken.append((topic, offset))
            self.last_offset[topic] = offset
            if topic not in self.first_seen:
                self.first_seen[topic] = offset
            if isinstance(ready, DataError):
                failed.failed(index, ready)
                continue
            prefix, payload, size, signature = ready
            marks = self.skip_below.get(topic)
            if marks is not None and offset < marks.get(prefix, -1):
                continue  # in an object uploaded before the restart
            part = (topic, prefix)
            obj = self.open_objects.get(part)
            if obj is not None and self._must_rotate(obj, size, signature, now, interval):
                self._seal(obj)
                obj = None
            if obj is None:
                obj = _Object(self, topic, prefix, offset, seq + index)
                self.open_objects[part] = obj
                opened.append(obj)
                if signature is not None:
                    obj.signature = (
                        list(signature) if self.config.format == "parquet" else signature
                    )
            obj.body.parts.append(payload)
            obj.count += 1
            obj.size += size
            obj.last_offset = offset
            if self.config.rotate_records is not None and obj.count >= self.config.rotate_records:
                self._seal(obj)
        self.seq = seq + len(records)
        self.written.append((seq, len(taken), self._floors(seq, taken, opened)))
        self._start_uploads()
        if failed.failures:
            raise failed

    @staticmethod
    def _floors(seq: int, taken: list[tuple[str, int]], opened: list[_Object]) -> dict[str, int]:
        """Set each object ``opened`` in the write call whose records (``(topic, offset)``,
        from ``seq`` on) are ``taken`` its ``floor``; return the call's own (its first offset
        of each topic). One pass from the end: per topic, the first offset at or after it."""
        after: dict[str, int] = {}
        index = len(opened) - 1
        for i in range(len(taken) - 1, -1, -1):
            topic, offset = taken[i]
            after[topic] = offset
            while index >= 0 and opened[index].first_seq == seq + i:
                opened[index].floor = dict(after)
                index -= 1
        return after

    def _prepare(self, record: Record, seq: int) -> tuple[str, int, Any]:
        """``(topic, offset, (prefix, payload, size, signature))`` of a record, or with its
        ``DataError`` in place of the tuple. Any error of a value (a ``ValueError``,
        ``TypeError`` or ``ArithmeticError`` of a conversion: a time whose UTC is past year
        9999) is that record's data error, never one of the batch."""
        topic = record.topic if record.topic is not None else ""
        offset = record.offset if record.offset is not None else seq
        fmt = self.config.format
        try:
            prefix = self.template.render(record)
            if len(prefix.encode()) + len(object_name(topic, 0, self.extension)) > MAX_KEY_BYTES:
                raise DataError(
                    f"key_template: the key under {prefix[:100]!r}... would be longer than "
                    f"S3's {MAX_KEY_BYTES} bytes"
                )
            payload, size = encode_payload(fmt, record)
            signature = schema_signature(fmt, record.data) if fmt in ("csv", "parquet") else None
            if fmt == "parquet":
                check_parquet_row(record.data)
        except DataError as exc:
            return topic, offset, exc
        except (ValueError, TypeError, ArithmeticError) as exc:
            return topic, offset, DataError(f"{type(exc).__name__}: {exc}")
        return topic, offset, (prefix, payload, size, signature)

    def _must_rotate(
        self, obj: _Object, size: int, signature: Any, now: float, interval: float | None
    ) -> bool:
        limit = self.config.rotate_bytes
        if limit is not None and obj.size + size > limit:
            return True
        if interval is not None and now - obj.opened >= interval:
            return True
        if signature is not None:
            if self.config.format == "csv":
                return bool(signature != obj.signature)
            return not signatures_fit(obj.signature, signature)
        return False

    def _seal(self, obj: _Object) -> None:
        del self.open_objects[(obj.topic, obj.prefix)]
        self.sealed.append(obj)

    async def tick(self, final: bool = False) -> None:
        """Close the objects open for ``rotate_interval`` or longer (all of them when
        ``final``) and start their uploads; the flush that follows waits for them."""
        interval = self.config.rotate_interval
        now = time.monotonic()
        for obj in list(self.open_objects.values()):
            if final or (interval is not None and now - obj.opened >= interval):
                self._seal(obj)
        self._start_uploads()

    # -- uploads -----------------------------------------------------------------------------

    def _start_uploads(self) -> None:
        while self.sealed:
            obj = self.sealed.pop(0)
            task = asyncio.ensure_future(self._upload(obj))
            self.inflight[task] = obj

    async def _reap(self, block: bool) -> None:
        """Collect finished uploads (all of them, waiting, when ``block``); a failed one goes
        back to be uploaded again and its error is raised (the first, when several)."""
        if not self.inflight:
            return
        if block:
            await asyncio.wait(list(self.inflight))
        error: BaseException | None = None
        for task in [t for t in self.inflight if t.done()]:
            obj = self.inflight.pop(task)
            exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
            if exc is not None:
                self.sealed.append(obj)
                error = error or exc
        if error is not None:
            self.sealed.sort(key=lambda o: o.first_seq)
            with self._explaining():
                raise error

    async def _upload(self, obj: _Object) -> None:
        async with self.semaphore:
            await self._clean_partition(obj.topic, obj.prefix)
            size = await asyncio.to_thread(self._put, obj)
        marks = self.done.setdefault(obj.topic, {})
        marks[obj.prefix] = max(marks.get(obj.prefix, 0), obj.last_offset + 1)
        self.m_objects.inc()
        self.m_bytes.inc(size)
        self.m_records.inc(obj.count)
        obj.body.parts = []  # the memory goes; the key and offsets stay for the state

    def _put(self, obj: _Object) -> int:
        if obj.data is None:
            obj.data = obj.body.build()
        data = obj.data
        bucket = self.config.bucket
        if len(data) <= self.config.multipart_threshold:
            self.client.put_object(
                Bucket=bucket, Key=obj.key, Body=data, ContentType=content_type(self.config.format)
            )
            return len(data)
        upload = self.client.create_multipart_upload(
            Bucket=bucket, Key=obj.key, ContentType=content_type(self.config.format)
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            step = part_step(len(data), self.config.part_size)
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), step), start=1):
                answer = self.client.upload_part(
                    Bucket=bucket,
                    Key=obj.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(view[start : start + step]),
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=obj.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=obj.key, UploadId=upload_id)
            except Exception:  # the endpoint is gone: the next start aborts it
                pass
            raise
        return len(data)

    async def _clean_partition(self, topic: str, prefix: str) -> None:
        """Before the first upload to a partition in this run: delete its objects that an
        earlier run uploaded after its last commit (see the module docstring)."""
        part = (topic, prefix)
        pending = self.cleaned.get(part)
        if pending is None:
            pending = asyncio.ensure_future(
                asyncio.to_thread(self._delete_uncommitted, topic, prefix)
            )
            self.cleaned[part] = pending
        try:
            await asyncio.shield(pending)
        except BaseException:
            if self.cleaned.get(part) is pending and pending.done():
                del self.cleaned[part]  # try again with the next upload
            raise

    def _delete_uncommitted(self, topic: str, prefix: str) -> None:
        threshold = max(
            self.first_seen.get(topic, 0), self.skip_below.get(topic, {}).get(prefix, 0)
        )
        start = prefix + object_name(topic, threshold, "")
        lead = start[:-20]  # prefix + topic + "+"
        quoted = lead[len(prefix) : -1]
        paginator = self.client.get_paginator("list_objects_v2")
        doomed: list[str] = []
        for page in paginator.paginate(Bucket=self.config.bucket, Prefix=lead, StartAfter=start):
            for item in page.get("Contents", []) or []:
                parsed = parse_object_name(item["Key"][len(prefix) :])
                # only names this sink makes: its topic and its extension (a sink of another
                # format under the same prefix keeps its objects)
                if (
                    parsed is not None
                    and parsed[0] == quoted
                    and parsed[1] >= threshold
                    and parsed[2] == self.extension
                ):
                    doomed.append(item["Key"])
        for i in range(0, len(doomed), 1000):
            chunk = doomed[i : i + 1000]
            self.client.delete_objects(
                Bucket=self.config.bucket,
                Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
            )
        if doomed:
            self.m_deleted.inc(len(doomed))
            self.context.logger.info(
                "deleted %d object(s) under %r uploaded after the last commit of an earlier "
                "run (their records are being written again)",
                len(doomed),
                prefix,
            )

    # -- flushing ----------------------------------------------------------------------------

    async def flush(self) -> Flushed:
        """Wait for every closed object's upload; return the state (the ``done`` marks) and
        how many of the newest records are still in open objects."""
        self._start_uploads()
        await self._reap(block=True)
        first = min(self.open_objects.values(), key=lambda o: o.first_seq, default=None)
        oldest = self.seq if first is None else first.first_seq
        pending = self.seq - oldest
        while self.written and self.written[0][0] + self.written[0][1] <= oldest:
            self.written.popleft()
        # Per topic, the offset of its first record from ``oldest`` on: where the worker
        # delivers it again from after a restart (the ``pending`` records are not committed).
        committed: dict[str, int] = {} if first is None else dict(first.floor)
        for start, _, firsts in self.written:
            if len(committed) == len(self.last_offset):
                break
            if start > oldest:  # the call holding ``oldest`` itself is in the floor
                for topic, offset in firsts.items():
                    committed.setdefault(topic, offset)
        for topic, last in self.last_offset.items():
            committed.setdefault(topic, last + 1)
        state: dict[str, Any] = {}
        for topic, marks in self.done.items():
            floor = committed.get(topic)
            kept = {p: n for p, n in marks.items() if floor is None or n > floor}
            if kept:
                state[topic] = kept
            self.done[topic] = kept
        return Flushed({"done": state}, pending)
