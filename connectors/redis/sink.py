"""The ``redis`` sink: SET, HSET, XADD or PUBLISH each record, one pipeline per batch.

* ``set``/``hset`` write by key (a template); a change record of the ``canal`` source (any
  format, :mod:`.changes`) is applied by its primary key: an insert, update or snapshot read
  writes the row, a delete deletes the key, an update that changed the key deletes the old
  key too; a tombstone (a record without data) deletes its key. Idempotent: after a crash
  the re-delivered records write the same values again.
* ``xadd`` appends an entry to a stream, ``MAXLEN ~`` trimmed; each entry carries the record's
  id (``id_field``), and each stream's entries written since the last commit are read back
  (in ``open(state)``, or before the first record a stream template names it for) so that
  re-delivered records are not appended twice.
* ``publish`` sends a message to a channel: at least once (a re-delivery publishes again).

Each batch is one round trip (a pipeline, by default inside MULTI/EXEC). A record Redis
refuses (``WRONGTYPE``: the key holds another type) or that cannot be written (its key
template has no value, ``hset`` of a non-object) is reported alone in a
:class:`~meshconnect.BatchError`; the rest of the batch is written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from redis.exceptions import ResponseError

from meshconnect import BatchError, DataError, MeshconnectError, Record, Sink
from meshconnect.jsonvalue import dumps

from .changes import change_of, is_change, tombstone
from .client import classify_redis, connect
from .config import RedisSinkConfig
from .template import Template, text_of

__all__ = ["RedisSink", "flatten", "row_fields"]

#: Entries read back from a stream's end to find re-delivered records when no state says
#: where the last commit ended (a crash before the first commit, a stream first written after
#: it).
DEDUPE_WINDOW = 10_000
#: Redis's default largest argument (``proto-max-bulk-len``), when ``CONFIG GET`` is refused.
DEFAULT_MAX_ARGUMENT = 512 * 1024 * 1024
#: How far before the last commit's time (the server's clock) a stream the state does not
#: name is read back: entries written since that commit are newer, unless the server's clock
#: went back (a failover to a server whose clock is behind) by more than this.
CLOCK_MARGIN_MS = 60 * 1000


def _scalar(value: Any) -> str | bytes:
    kind = type(value)
    if kind is str or kind is bytes:
        return value
    if kind is int or kind is Decimal:
        return str(value)  # what meshconnect.jsonvalue.dumps writes for them
    if value is True:
        return "true"
    if value is False:
        return "false"
    return dumps(value).decode()


def flatten(
    data: Mapping[str, Any],
    prefix: str = "",
    out: dict[str, Any] | None = None,
    nulls: list[str] | None = None,
) -> dict[str, Any]:
    """Hash fields of a data object: nested objects as dotted names (``a.b``), lists as JSON,
    strings as they are, numbers as exact JSON text, booleans ``true``/``false``; null
    fields are left out (their names added to ``nulls``). ``DataError`` when two fields get one
    name (``{"a": {"b": 1}, "a.b": 2}``): one value would silently replace the other."""
    if out is None:
        out = {}
    for name, value in data.items():
        field = prefix + name
        if field in out or (nulls is not None and field in nulls):
            raise DataError(f"hset: two fields of the data both flatten to {field!r}")
        if value is None:
            if nulls is not None:
                nulls.append(field)
            continue
        if isinstance(value, dict):
            flatten(value, f"{field}.", out, nulls)
        elif isinstance(value, list):
            out[field] = dumps(value).decode()
        else:
            out[field] = _scalar(value)
    return out


def row_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """Hash fields of a row: each column as text (JSON values as JSON); SQL NULL left out."""
    return {
        name: (dumps(value).decode() if isinstance(value, dict | list) else _scalar(value))
        for name, value in row.items()
        if value is not None
    }


def _field(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping):
            return None
        data = data.get(part)
    return data


class RedisSink(Sink[RedisSinkConfig]):
    """Writes records to Redis (module docstring). State in ``xadd`` mode:
    ``{"streams": {key: last id}, "at": MS}``, the streams written since the previous commit
    with their last entries, and the commit's time by the server's clock; else none."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): each writes keys by record,
        and in ``xadd`` mode finds its own re-delivered records by their ids."""
        return None

    async def open(self, state: Mapping[str, Any] | None) -> None:
        c = self.config
        # The blocking client, called through asyncio.to_thread: it packs with hiredis.
        self.client: Any = connect(c, sync=True)
        self.key = Template(c.key, "key") if c.key else None
        self.cdc_key = self.key or Template("{subject}:{partitionkey}", "key")
        self.plain_key = self.key or Template("{partitionkey}", "key")
        self.stream = Template(c.stream, "stream") if c.stream else None
        self.channel = Template(c.channel, "channel") if c.channel else None
        # Every argument is text or bytes (numbers too): _check_commands takes their lengths.
        self.ttl_ms = str(int(c.ttl * 1000)) if c.ttl else None
        self.maxlen = str(c.maxlen) if c.maxlen else None
        self.max_argument = await asyncio.to_thread(self._limits)
        #: stream key -> id of the last entry this sink wrote there since the last commit
        #: (the next commit's state).
        self.last_ids: dict[str, str] = {}
        #: stream key -> {record id: entry id} of records already there, written after the
        #: last commit.
        self.seen: dict[str, dict[str, str]] = {}
        self.rescan = False
        #: Streams whose entries since the last commit are in ``seen``: each stream is read
        #: back once, before the first record for it is appended (a template names new ones).
        self.scanned: set[str] = set()
        #: Entries written since the last commit have at least this id (see _scan).
        self.since: str | None = None
        if c.mode == "xadd" and c.id_field:
            if state and isinstance(state.get("streams"), dict):
                self.last_ids = {str(k): str(v) for k, v in state["streams"].items()}
            at = state.get("at") if state else None
            if isinstance(at, int) and not isinstance(at, bool):
                self.since = f"{max(0, at - CLOCK_MARGIN_MS)}-0"
            elif self.last_ids:  # a state of an older version: every stream written, no time
                # not past now: a stream given explicit ids in the future says nothing of when
                ms = min(max(_entry_order(e)[0] for e in self.last_ids.values()), _now_ms())
                self.since = f"{max(0, ms - 10 * CLOCK_MARGIN_MS)}-0"
            names = set(self.last_ids)
            if self.stream is not None and self.stream.literal is not None:
                names.add(self.stream.literal)
            for name in names:
                await self._scan(name)

    def _limits(self) -> int:
        """The server's largest argument. A larger one is a protocol error: the server drops
        the connection, and the whole batch would fail and be retried as if Redis were
        down. Checked per record instead (:meth:`_check_commands`)."""
        try:
            reply = self.client.config_get("proto-max-bulk-len")
            value = int(next(iter(reply.values())))
        except Exception:  # CONFIG refused (an ACL, a managed Redis): Redis's default
            return DEFAULT_MAX_ARGUMENT
        return value if value > 0 else DEFAULT_MAX_ARGUMENT

    async def _scan(self, stream: str) -> None:
        """Collect the record ids of the entries written since the last commit: after
        ``last_ids[stream]`` when the state names the stream, else from :attr:`since` (the
        last commit's time less :data:`CLOCK_MARGIN_MS`), else (no commit yet) the stream's
        last :data:`DEDUPE_WINDOW` entries."""
        field = self.config.id_field
        assert field is not None
        self.scanned.add(stream)
        last = self.last_ids.get(stream)
        try:
            entries = await asyncio.to_thread(self._entries_since, stream, last)
        except ResponseError as exc:
            if not str(exc).startswith("WRONGTYPE"):
                raise
            return  # not a stream: its records fail alone (WRONGTYPE) when appended
        ids = self.seen.setdefault(stream, {})
        key = field.encode()
        for entry, fields in entries:
            value = fields.get(key)
            if value is not None:
                ids[value.decode("utf-8", "surrogateescape")] = _text(entry)

    def _entries_since(self, stream: str, last: str | None) -> list[Any]:
        if last is None and self.since is None:
            return self.client.xrevrange(stream, "+", "-", count=DEDUPE_WINDOW)
        entries: list[Any] = []
        start = "(" + last if last is not None else self.since
        while True:
            page = self.client.xrange(stream, start, "+", count=1000)
            entries.extend(page)
            if len(page) < 1000:
                return entries
            start = "(" + _text(page[-1][0])

    # -- commands of one record ------------------------------------------------------------

    def _commands(self, record: Record) -> list[tuple[Any, ...]]:
        mode = self.config.mode
        if mode == "xadd":
            return self._xadd(record)
        if mode == "publish":
            assert self.channel is not None
            return [("PUBLISH", self.channel.render(record), self._json(record.data))]
        if self.config.cdc and is_change(record):
            return self._change(record)
        key = self.plain_key.render(record)
        if tombstone(record) and not record.null_data:
            return [("DEL", key)]
        if mode == "set":
            return [self._set(key, self._value(record))]
        data = record.data
        if not isinstance(data, dict):
            raise DataError(f"hset: the data of record {record.id} is not an object")
        nulls: list[str] = []
        return self._hset(key, flatten(data, nulls=nulls), nulls)

    def _change(self, record: Record) -> list[tuple[Any, ...]]:
        change = change_of(record)
        if change.op == "skip":
            return []
        key = self.cdc_key.render(record, change.row)
        if change.op == "delete":
            return [("DEL", key)]
        assert change.row is not None
        commands: list[tuple[Any, ...]] = []
        if change.old_row is not None or change.old_key is not None:
            old_record = record
            if change.old_key is not None:
                old_record = record.copy()
                old_record.extensions["partitionkey"] = change.old_key
            try:
                old = self.cdc_key.render(old_record, change.old_row or change.row)
            except DataError:
                old = key
            if old != key:
                commands.append(("DEL", old))
        if self.config.mode == "set":
            commands.append(self._set(key, dumps(change.row)))
        else:
            nulls = [name for name, value in change.row.items() if value is None]
            commands.extend(self._hset(key, row_fields(change.row), nulls))
        return commands

    def _set(self, key: str, value: Any) -> tuple[Any, ...]:
        if self.ttl_ms:
            return ("SET", key, value, "PX", self.ttl_ms)
        return ("SET", key, value)

    def _hset(
        self, key: str, fields: dict[str, Any], nulls: Sequence[str] = ()
    ) -> list[tuple[Any, ...]]:
        """HSET of ``fields``; with ``replace: false`` the ``nulls`` (fields that are null
        now) are removed from the hash (HDEL), so a column set to NULL disappears."""
        commands: list[tuple[Any, ...]] = []
        if self.config.replace:
            commands.append(("DEL", key))  # no field left: no hash
        elif nulls:
            commands.append(("HDEL", key, *nulls))  # a merge removes only the null fields
        if fields:
            flat: list[Any] = ["HSET", key]
            for name, value in fields.items():
                flat.append(name)
                flat.append(value)
            commands.append(tuple(flat))
        if self.ttl_ms and (fields or (nulls and not self.config.replace)):
            commands.append(("PEXPIRE", key, self.ttl_ms))
        return commands

    def _value(self, record: Record) -> Any:
        path = self.config.value_field
        if path is None:
            return self._json(record.data)
        value = _field(record.data, path)
        if value is None:
            raise DataError(f"set: value_field {path!r} has no value in record {record.id}")
        return value if isinstance(value, str | bytes) else dumps(value)

    @staticmethod
    def _json(data: Any) -> Any:
        return data if isinstance(data, bytes | str) else dumps(data)

    def _xadd(self, record: Record) -> list[tuple[Any, ...]]:
        assert self.stream is not None
        stream = self.stream.render(record)
        field = self.config.id_field
        if field:
            seen = self.seen.get(stream)
            entry = seen.pop(record.id, None) if seen else None
            if entry is not None:  # already appended before a crash or a lost reply
                # The stream is known up to that entry: the state committed next says so, even
                # when a whole batch was skipped (it said nothing, and the next start looked
                # for re-deliveries only in the stream's last DEDUPE_WINDOW entries).
                last = self.last_ids.get(stream)
                if last is None or _entry_order(entry) > _entry_order(last):
                    self.last_ids[stream] = entry
                return []
        data = record.data
        if isinstance(data, dict):
            fields: dict[str, Any] = flatten(data)
        elif data is None:
            fields = {}
        else:
            fields = {"data": text_of(data) if not isinstance(data, bytes) else data}
        if field:
            fields[field] = record.id
        if not fields:
            raise DataError(f"xadd: record {record.id} has no field to append")
        command: list[Any] = ["XADD", stream]
        if self.maxlen:
            command += ["MAXLEN", "~", self.maxlen]
        command.append("*")
        for name, value in fields.items():
            command.append(name)
            command.append(value)
        return [tuple(command)]

    # -- the batch ---------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        """One round trip per batch (``atomic``: one MULTI/EXEC). A plain pipeline goes in
        chunks, each prepared while the previous one is on the wire (they run one after
        the other, so a key written twice in a batch ends with the later record)."""
        failed = BatchError()
        if self.rescan:  # a batch whose reply was lost may be in any stream read back so far
            for name in self.scanned | set(self.last_ids):
                await self._scan(name)
            self.rescan = False
        if self.config.mode == "xadd" and self.config.id_field:
            await self._scan_new_streams(records)
        size = len(records) if self.config.atomic else max(128, (len(records) + 3) // 4)
        running: asyncio.Future[Any] | None = None
        previous: list[tuple[int, int, str | None]] = []
        for start in range(0, len(records), size):
            pipe, plan = self._prepare(records, start, start + size, failed)
            if running is not None:
                self._results(previous, await running, failed)
            running = asyncio.ensure_future(self._execute(pipe, plan))
            previous = plan
        if running is not None:
            self._results(previous, await running, failed)
        if failed.failures:
            raise failed

    async def _scan_new_streams(self, records: Sequence[Record]) -> None:
        """Read back each stream a record of the batch names for the first time (a stream
        template): its records re-delivered after a crash are found there, not appended
        twice. A record whose stream has no value fails later, alone."""
        assert self.stream is not None
        if self.stream.literal is not None:
            return
        names: set[str] = set()
        for record in records:
            try:
                names.add(self.stream.render(record))
            except (DataError, ValueError, TypeError):
                continue
        names = {name for name in names if _encodable(name)}  # others fail alone later
        for name in names - self.scanned:
            await self._scan(name)

    def _prepare(
        self, records: Sequence[Record], start: int, end: int, failed: BatchError
    ) -> tuple[Any, list[tuple[int, int, str | None]]]:
        pipe = self.client.pipeline(transaction=self.config.atomic)
        plan: list[tuple[int, int, str | None]] = []
        xadd = self.config.mode == "xadd"
        for i in range(start, min(end, len(records))):
            try:
                commands = self._commands(records[i])
                self._check_commands(records[i], commands)
            except (DataError, ValueError, TypeError) as exc:
                failed.failed(i, exc if isinstance(exc, DataError) else DataError(str(exc)))
                continue
            for command in commands:
                pipe.execute_command(*command)
            plan.append((i, len(commands), commands[0][1] if xadd and commands else None))
        return pipe, plan

    def _check_commands(self, record: Record, commands: list[tuple[Any, ...]]) -> None:
        """``DataError`` for a record with a value larger than the server takes in one
        argument (sent, it would break the connection and fail the whole batch), or a key,
        stream or channel name that is not text (a template's value from binary data: it
        could not be sent, and the whole batch would fail)."""
        quarter = self.max_argument // 4  # UTF-8 takes up to 4 bytes a character
        for command in commands:
            name = command[1]
            if not name.isascii() and not _encodable(name):
                raise DataError(
                    f"{command[0]} of record {record.id}: the name "
                    f"{name.encode('utf-8', 'surrogateescape')!r} is not UTF-8 "
                    "text (a template's placeholder holds binary data)"
                )
            if max(map(len, command)) > quarter:
                for arg in command:
                    self._check_argument(record, command[0], arg)

    def _check_argument(self, record: Record, name: str, arg: str | bytes) -> None:
        limit = self.max_argument
        n = len(arg.encode("utf-8", "surrogatepass") if isinstance(arg, str) else arg)
        if n > limit:
            raise DataError(
                f"{name} of record {record.id}: a value of {n} bytes is more than the server "
                f"takes in one argument (proto-max-bulk-len {limit})"
            )

    async def _execute(self, pipe: Any, plan: list[tuple[int, int, str | None]]) -> list[Any]:
        if not any(n for _, n, _ in plan):
            return []
        try:
            return await asyncio.to_thread(pipe.execute, raise_on_error=False)
        except Exception:
            self.rescan = self.config.mode == "xadd"
            raise

    def _results(
        self, plan: list[tuple[int, int, str | None]], results: list[Any], failed: BatchError
    ) -> None:
        at = 0
        for i, n, stream in plan:
            for result in results[at : at + n]:
                if isinstance(result, Exception):
                    failed.failed(i, result)
                    break
            else:
                if stream is not None and n:
                    self.last_ids[stream] = _text(results[at])
            at += n

    async def flush(self) -> dict[str, Any] | None:
        """In ``xadd`` mode: the streams written since the last commit, each at its last
        entry, and the time (the server's clock): after a crash, entries written since are
        read back from there. Only those streams: with a stream template the state would
        otherwise grow by every stream ever written, and be written whole at each commit."""
        if self.config.mode == "xadd" and self.config.id_field:
            at = await asyncio.to_thread(self._server_ms)
            state = {"streams": dict(self.last_ids), "at": at}
            self.last_ids = {}
            self.since = f"{max(0, at - CLOCK_MARGIN_MS)}-0"
            return state
        return None

    def _server_ms(self) -> int:
        try:
            seconds, micros = self.client.time()
        except ResponseError:  # TIME refused (an ACL): this machine's clock
            return _now_ms()
        return int(seconds) * 1000 + int(micros) // 1000

    def classify_error(self, exc: BaseException) -> type[MeshconnectError] | None:
        return classify_redis(exc)

    async def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            await asyncio.to_thread(client.close)


def _encodable(name: str) -> bool:
    """Whether ``name`` is UTF-8 text (not undecodable bytes of binary data, ``\\udcff``)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_order(entry: str) -> tuple[int, int]:
    """A stream entry id (``"1700000000000-3"``) as numbers, in the stream's order."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)
