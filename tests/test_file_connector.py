"""The ``file`` connector, driven directly (no worker): formats, positions, rotation, sinks."""

from __future__ import annotations

import hashlib
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from meshconnect.api import ConnectorContext, Position, SourceBatch
from meshconnect.connectors.file import plugin
from meshconnect.connectors.file.config import FileSinkConfig, FileSourceConfig
from meshconnect.connectors.file.sink import FileSink, _fingerprint
from meshconnect.connectors.file.source import FileSource
from meshconnect.errors import ConfigError, DataError
from meshconnect.records import Record
from meshconnect.testing import SinkConformance, SourceConformance

# -- helpers -----------------------------------------------------------------------------------


def context(tmp_path: Path) -> ConnectorContext:
    return ConnectorContext(
        pipeline="p", name="file", logger=logging.getLogger("test"), base_dir=str(tmp_path)
    )


async def started(
    tmp_path: Path, positions: dict[str, Position] | None = None, **config: Any
) -> FileSource:
    config.setdefault("poll_interval", 0.01)
    source = FileSource(FileSourceConfig(**config), context(tmp_path))
    await source.start(positions or {})
    return source


class Reading:
    """Everything a source produced, with its positions merged like the worker commits them."""

    def __init__(self) -> None:
        self.batches: list[SourceBatch] = []
        self.positions: dict[str, Position] = {}

    def add(self, batch: SourceBatch) -> None:
        self.batches.append(batch)
        self.positions.update(batch.positions)

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b.records]

    @property
    def data(self) -> list[Any]:
        return [r.data for r in self.records]

    @property
    def failures(self) -> list[tuple[Record, BaseException]]:
        return [f for b in self.batches for f in b.failures]


async def read_to_end(source: FileSource) -> Reading:
    """Poll a bounded source until it says it is done."""
    reading = Reading()
    while (batch := await source.poll()) is not None:
        reading.add(batch)
    await source.stop()
    return reading


async def read_until_idle(source: FileSource, reading: Reading | None = None) -> Reading:
    """Poll a following source until a poll brings nothing new."""
    reading = reading or Reading()
    while True:
        batch = await source.poll()
        assert batch is not None
        reading.add(batch)
        if not batch.records and not batch.failures and not batch.positions:
            return reading


def json_lines(*values: Any) -> bytes:
    return b"".join(orjson.dumps(v) + b"\n" for v in values)


def write(path: Path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as f:
        f.write(data)


# -- source: formats ---------------------------------------------------------------------------


async def test_json_lines_become_record_data(tmp_path: Path) -> None:
    write(tmp_path / "orders.jsonl", json_lines({"id": 1}, [1, 2], "three", None))

    reading = await read_to_end(await started(tmp_path, path="orders.jsonl"))

    assert reading.data == [{"id": 1}, [1, 2], "three", None]
    first = reading.records[0]
    assert first.source == "file://" + str(tmp_path / "orders.jsonl")
    assert first.subject == "orders.jsonl"
    assert first.type == "meshconnect.file.line"
    assert first.datacontenttype == "application/json"


async def test_text_lines_are_strings_without_their_newline(tmp_path: Path) -> None:
    write(tmp_path / "app.log", "first\r\n\nthird ünïcode\nlast without newline".encode())

    reading = await read_to_end(await started(tmp_path, path="app.log", format="text"))

    # A text line without newline may be half-written: it waits for its newline (see the
    # rule per format in test_a_half_written_last_line_*).
    assert reading.data == ["first", "", "third ünïcode"]
    assert reading.records[0].datacontenttype == "text/plain"


async def test_csv_rows_are_objects_keyed_by_the_header(tmp_path: Path) -> None:
    write(tmp_path / "users.csv", b'id,name,note\n1,ann,"likes, commas"\n2,bob,"two\nlines"\n')

    reading = await read_to_end(await started(tmp_path, path="users.csv", format="csv"))

    assert reading.data == [
        {"id": "1", "name": "ann", "note": "likes, commas"},
        {"id": "2", "name": "bob", "note": "two\nlines"},
    ]


async def test_csv_without_header_uses_fieldnames(tmp_path: Path) -> None:
    write(tmp_path / "users.csv", b"1,ann\n2,bob\n")

    source = await started(
        tmp_path, path="users.csv", format="csv", header=False, fieldnames=["id", "name"]
    )
    reading = await read_to_end(source)

    assert reading.data == [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]


async def test_csv_delimiter_option(tmp_path: Path) -> None:
    write(tmp_path / "users.csv", b"1;ann\n2;bob\n")

    source = await started(
        tmp_path,
        path="users.csv",
        format="csv",
        header=False,
        fieldnames=["id", "name"],
        delimiter=";",
    )
    reading = await read_to_end(source)

    assert reading.data == [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]


async def test_cloudevents_lines_keep_their_attributes(tmp_path: Path) -> None:
    event = Record({"x": 1}, id="e1", source="/orders", type="order.created", subject="42")
    write(tmp_path / "events.jsonl", orjson.dumps(event.to_dict()) + b"\n")

    reading = await read_to_end(await started(tmp_path, path="events.jsonl", format="cloudevents"))

    assert reading.records == [event]


async def test_csv_header_is_found_again_when_resuming_mid_file(tmp_path: Path) -> None:
    write(tmp_path / "users.csv", b"id,name\n1,ann\n2,bob\n3,cy\n")
    first = await read_to_end(await started(tmp_path, path="users.csv", format="csv", batch_size=2))
    after_first_batch = first.batches[0].positions

    rest = await read_to_end(
        await started(tmp_path, after_first_batch, path="users.csv", format="csv")
    )

    assert rest.data == [{"id": "2", "name": "bob"}, {"id": "3", "name": "cy"}]


# -- source: files, positions, bounded reads ---------------------------------------------------


async def test_a_glob_reads_every_matching_file(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "a.jsonl", json_lines("a1", "a2"))
    write(tmp_path / "in" / "b.jsonl", json_lines("b1"))
    write(tmp_path / "in" / "skip.txt", json_lines("no"))

    reading = await read_to_end(await started(tmp_path, path="in/*.jsonl"))

    assert sorted(reading.data) == ["a1", "a2", "b1"]
    assert set(reading.positions) == {str(tmp_path / "in" / n) for n in ("a.jsonl", "b.jsonl")}


async def test_a_list_of_globs_reads_every_matching_file(tmp_path: Path) -> None:
    write(tmp_path / "a.jsonl", json_lines("a"))
    write(tmp_path / "b.json", json_lines("b"))

    reading = await read_to_end(await started(tmp_path, path=["*.jsonl", str(tmp_path / "*.json")]))

    assert sorted(reading.data) == ["a", "b"]


async def test_a_bounded_source_ends_with_none(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", json_lines(1, 2) + b"3")
    source = await started(tmp_path, path="in.jsonl")

    batch = await source.poll()
    assert batch is not None and [r.data for r in batch.records] == [1, 2]

    assert await source.poll() is None
    assert batch.positions == {
        str(tmp_path / "in.jsonl"): {
            "path": str(tmp_path / "in.jsonl"),
            "inode": os.stat(tmp_path / "in.jsonl").st_ino,
            "offset": 4,
            "fingerprint": "4:" + hashlib.blake2b(b"1\n2\n", digest_size=8).hexdigest(),
            "generation": 0,
        }
    }


async def test_resuming_from_a_middle_batch_yields_exactly_the_rest(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", json_lines(*range(10)))
    everything = await read_to_end(await started(tmp_path, path="in.jsonl", batch_size=3))
    after_two_batches = Reading()
    for batch in everything.batches[:2]:
        after_two_batches.add(batch)

    rest = await read_to_end(await started(tmp_path, after_two_batches.positions, path="in.jsonl"))

    assert [len(b.records) for b in everything.batches] == [3, 3, 3, 1]
    assert [(r.id, r.data) for r in rest.records] == [
        (r.id, r.data) for r in everything.records[6:]
    ]


async def test_ids_are_deterministic_inode_and_offset(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", json_lines("a", "b"))
    inode = os.stat(tmp_path / "in.jsonl").st_ino

    first = await read_to_end(await started(tmp_path, path="in.jsonl"))
    again = await read_to_end(await started(tmp_path, path="in.jsonl"))

    assert [r.id for r in first.records] == [f"{inode}-0", f"{inode}-4"]
    assert [r.id for r in again.records] == [r.id for r in first.records]


async def test_bad_lines_go_to_failures_and_the_position_moves_past_them(tmp_path: Path) -> None:
    content = b'{"ok": 1}\n{not json\n\n{"ok": 2}\n'
    write(tmp_path / "in.jsonl", content)

    reading = await read_to_end(await started(tmp_path, path="in.jsonl"))

    assert reading.data == [{"ok": 1}, {"ok": 2}]
    [(record, error)] = reading.failures
    assert record.data == "{not json"
    assert record.id == f"{os.stat(tmp_path / 'in.jsonl').st_ino}-10"
    assert isinstance(error, DataError)
    assert str(error).startswith(f"{tmp_path / 'in.jsonl'}:2: invalid JSON")
    assert reading.positions[str(tmp_path / "in.jsonl")]["offset"] == len(content)


@pytest.mark.parametrize(
    "bad",
    [b"{not json", b"", b"[" * 200 + b"]" * 200],
    ids=["invalid", "blank", "too-deep"],
)
async def test_a_batch_with_a_bad_line_gives_what_a_clean_batch_gives_for_the_good_ones(
    tmp_path: Path, bad: bytes
) -> None:
    """A batch whose lines all parse is decoded in bulk; one bad line (invalid, blank, nested
    too deep) sends the batch line by line. Both give the good lines the same records: data,
    ids (inode and byte offset) and the position after the batch."""
    good = [{"n": i, "x": 1.25} for i in range(5)]
    clean = json_lines(*good)
    mixed = json_lines(*good[:2]) + bad + b"\n" + json_lines(*good[2:])
    write(tmp_path / "clean.jsonl", clean)
    write(tmp_path / "mixed.jsonl", mixed)

    a = await read_to_end(await started(tmp_path, path="clean.jsonl"))
    b = await read_to_end(await started(tmp_path, path="mixed.jsonl"))

    assert a.data == b.data == good
    shift = len(bad) + 1  # the bad line's bytes before the last three records
    offsets_a = [int(r.id.split("-")[1]) for r in a.records]
    offsets_b = [int(r.id.split("-")[1]) for r in b.records]
    assert offsets_b == offsets_a[:2] + [o + shift for o in offsets_a[2:]]
    assert a.positions[str(tmp_path / "clean.jsonl")]["offset"] == len(clean)
    assert b.positions[str(tmp_path / "mixed.jsonl")]["offset"] == len(mixed)
    assert len(b.failures) == (0 if bad == b"" else 1)


@pytest.mark.parametrize(
    ("fmt", "content", "problem"),
    [
        ("cloudevents", b'{"id": "1", "type": "t"}\n', "invalid CloudEvent"),
        ("cloudevents", b"[1, 2]\n", "invalid CloudEvent"),
        ("csv", b"a,b\n1,2,3\n", "expected 2 fields, got 3"),
        ("text", b"caf\xe9\n", "can't decode byte 0xe9"),
        ("json", b'"caf\xe9"\n', "invalid JSON"),
    ],
)
async def test_each_format_reports_undecodable_lines(
    tmp_path: Path, fmt: str, content: bytes, problem: str
) -> None:
    write(tmp_path / "in.txt", content)

    reading = await read_to_end(await started(tmp_path, path="in.txt", format=fmt))

    [(record, error)] = reading.failures
    raw = content.splitlines()[-1]  # the failed line as it is: text, or bytes not text
    assert record.data == (raw if b"\xe9" in raw else raw.decode())
    assert problem in str(error)
    assert reading.positions[str(tmp_path / "in.txt")]["offset"] == len(content)


async def test_a_line_number_is_unknown_after_resuming_so_errors_give_the_byte_offset(
    tmp_path: Path,
) -> None:
    write(tmp_path / "in.jsonl", b"1\n2\nbad\n")
    first = await read_to_end(await started(tmp_path, path="in.jsonl", batch_size=1))

    rest = await read_to_end(await started(tmp_path, first.batches[0].positions, path="in.jsonl"))

    [(_, error)] = rest.failures
    assert str(error).startswith(f"{tmp_path / 'in.jsonl'}:byte 4: invalid JSON")


class TestFileSourceConformance(SourceConformance):
    """The shared contract: resuming from every batch boundary, replays with the same ids."""

    def make_source(self, tmp_path: Path) -> FileSource:
        if not (tmp_path / "a.jsonl").exists():
            write(tmp_path / "a.jsonl", json_lines(*range(5)) + b"bad\n" + json_lines(5, 6))
            write(tmp_path / "b.jsonl", json_lines(*range(10, 17)) + b"17")
        return FileSource(FileSourceConfig(path="*.jsonl", batch_size=3), context(tmp_path))

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``<inode>-<byte offset>`` of every line that is JSON (not ``bad``), the files in
        name order; b.jsonl's last line (``17``, no newline) is not complete yet."""
        ids = []
        for name in ("a.jsonl", "b.jsonl"):
            path = tmp_path / name
            offset = 0
            for line in path.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n") and line != b"bad\n":
                    ids.append(f"{path.stat().st_ino}-{offset}")
                offset += len(line)
        return ids


class TestFileSinkConformance(SinkConformance):
    """The shared sink contract: truncate-to-checkpoint redelivery, a poison record alone."""

    def make_sink(self, tmp_path: Path) -> FileSink:
        return FileSink(FileSinkConfig(path="out/sink.jsonl"), context(tmp_path))

    def durable(self, tmp_path: Path) -> list[Any]:
        path = tmp_path / "out" / "sink.jsonl"
        return [orjson.loads(line)["n"] for line in path.read_bytes().splitlines()]

    def poison_record(self, i: int) -> Record:
        return Record({"n": i, "when": object()}, id="poison")  # no JSON for an object


class TestRotatingFileSinkConformance(TestFileSinkConformance):
    def make_sink(self, tmp_path: Path) -> FileSink:
        config = FileSinkConfig(path="out/sink.jsonl", rotate_bytes=64)
        return FileSink(config, context(tmp_path))

    def durable(self, tmp_path: Path) -> list[Any]:
        files = sorted((tmp_path / "out").glob("sink*.jsonl"), key=lambda p: (len(p.name), p))
        return [orjson.loads(line)["n"] for f in files for line in f.read_bytes().splitlines()]


# -- source: following files -------------------------------------------------------------------


async def test_an_unterminated_line_waits_for_its_newline_when_following(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    write(log, json_lines("first") + b'"sec')
    source = await started(tmp_path, path="app.jsonl", follow=True)

    before = await read_until_idle(source)
    write(log, b'ond"\n')
    after = await read_until_idle(source)
    await source.stop()

    assert before.data == ["first"]
    assert before.positions[str(log)]["offset"] == len(b'"first"\n')
    assert after.data == ["second"]


async def test_following_picks_up_appended_lines_and_new_files(tmp_path: Path) -> None:
    write(tmp_path / "a.log", b"a1\n")
    source = await started(tmp_path, path="*.log", format="text", follow=True)
    reading = await read_until_idle(source)

    write(tmp_path / "a.log", b"a2\n")
    write(tmp_path / "b.log", b"b1\n")
    await read_until_idle(source, reading)
    await source.stop()

    assert sorted(reading.data) == ["a1", "a2", "b1"]  # in order within a file, not across


async def test_start_at_end_reads_only_lines_appended_later(tmp_path: Path) -> None:
    write(tmp_path / "app.log", b"old\nhalf")
    source = await started(tmp_path, path="app.log", format="text", follow=True, start_at="end")
    reading = await read_until_idle(source)

    write(tmp_path / "app.log", b" done\nnew\n")
    await read_until_idle(source, reading)
    await source.stop()

    assert reading.data == ["half done", "new"]


async def test_start_at_end_is_fixed_at_the_first_start(tmp_path: Path) -> None:
    """The start returns the end it started at, for the worker to commit before anything
    arrives: a restart after lines were appended reads them (not a later end)."""
    write(tmp_path / "app.log", b"old\nhalf")
    config: dict[str, Any] = {"path": "app.log", "format": "text", "follow": True}
    first = FileSource(FileSourceConfig(start_at="end", **config), context(tmp_path))
    begun = await first.start({})
    await first.stop()
    key = str(tmp_path / "app.log")
    assert begun == {
        key: {
            "path": key,
            "inode": os.stat(tmp_path / "app.log").st_ino,
            "offset": 4,
            "fingerprint": "4:" + hashlib.blake2b(b"old\n", digest_size=8).hexdigest(),
            "generation": 0,
        }
    }
    write(tmp_path / "app.log", b" done\nnew\n")
    again = await started(tmp_path, dict(begun), start_at="end", **config)
    reading = await read_until_idle(again)
    await again.stop()
    assert reading.data == ["half done", "new"]


async def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, b"1\n2\n")
    source = await started(tmp_path, path="app.log*", format="text", follow=True)
    reading = await read_until_idle(source)

    write(log, b"3\n")  # written after the last poll, before the rename
    log.rename(tmp_path / "app.log.1")
    write(log, b"4\n")
    await read_until_idle(source, reading)
    await source.stop()

    assert reading.data == ["1", "2", "3", "4"]
    rotated = reading.positions[str(tmp_path / "app.log.1")]
    assert rotated["offset"] == 6 and rotated["inode"] == os.stat(tmp_path / "app.log.1").st_ino
    restarted = await started(tmp_path, reading.positions, path="app.log*", follow=True)
    assert (await read_until_idle(restarted)).records == []


async def test_truncation_starts_the_file_again_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "app.log"
    write(log, b"one\ntwo\n")
    source = await started(tmp_path, path="app.log", format="text", follow=True)
    reading = await read_until_idle(source)

    write(log, b"new\n", mode="wb")  # copytruncate: same inode, shorter
    await read_until_idle(source, reading)
    await source.stop()

    assert reading.data == ["one", "two", "new"]
    assert "truncated" in caplog.text


async def test_resume_after_a_rotation_while_stopped(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, b"1\n2\n3\n")
    first = await read_to_end(await started(tmp_path, path="app.log*", format="text", batch_size=2))
    stopped_at = first.batches[0].positions  # "1" and "2" committed

    write(log, b"4\n")
    log.rename(tmp_path / "app.log.1")
    write(log, b"5\n")
    rest = await read_to_end(await started(tmp_path, stopped_at, path="app.log*", format="text"))

    assert rest.data == ["3", "4", "5"]
    again = await read_to_end(await started(tmp_path, rest.positions, path="app.log*"))
    assert again.records == []


async def test_a_stored_file_that_shrank_is_read_again_from_zero(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "app.log"
    write(log, b"one\ntwo\n")
    first = await read_to_end(await started(tmp_path, path="app.log", format="text"))

    write(log, b"x\n", mode="wb")
    rest = await read_to_end(
        await started(tmp_path, first.positions, path="app.log", format="text")
    )

    assert rest.data == ["x"]
    assert "truncated" in caplog.text


async def test_the_encoding_option_decodes_lines(tmp_path: Path) -> None:
    write(tmp_path / "in.txt", "café\n".encode("latin-1") + '{"a": "é"}\n'.encode("latin-1"))

    text = await read_to_end(
        await started(tmp_path, path="in.txt", format="text", encoding="latin-1")
    )

    assert text.data == ["café", '{"a": "é"}']


async def test_a_quoted_csv_field_waits_for_its_closing_quote_when_following(
    tmp_path: Path,
) -> None:
    write(tmp_path / "in.csv", b'id,note\n1,"first line\n')
    source = await started(tmp_path, path="in.csv", format="csv", follow=True)
    before = await read_until_idle(source)

    write(tmp_path / "in.csv", b'second line"\n')
    after = await read_until_idle(source)
    await source.stop()

    assert before.data == []
    assert after.data == [{"id": "1", "note": "first line\nsecond line"}]


async def test_a_rotated_file_gives_up_its_unterminated_last_line(tmp_path: Path) -> None:
    """Nothing will complete the last line of a file rotated away: it is the file's last line."""
    log = tmp_path / "app.log"
    write(log, b"1\n")
    source = await started(tmp_path, path="app.log", format="text", follow=True)
    reading = await read_until_idle(source)

    write(log, b"2 cut short")
    log.rename(tmp_path / "app.log.old")
    write(log, b"3\n")
    await read_until_idle(source, reading)
    await source.stop()

    assert reading.data == ["1", "2 cut short", "3"]


async def test_a_deleted_and_recreated_file_is_read_from_its_beginning(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, b"old 1\nold 2\n")
    source = await started(tmp_path, path="app.log", format="text", follow=True)
    reading = await read_until_idle(source)

    log.unlink()
    await read_until_idle(source, reading)
    write(log, b"new\n")
    await read_until_idle(source, reading)
    await source.stop()

    assert reading.data == ["old 1", "old 2", "new"]


async def test_stop_without_start_is_harmless(tmp_path: Path) -> None:
    source = FileSource(FileSourceConfig(path="*.jsonl"), context(tmp_path))

    await source.stop()


# -- sink --------------------------------------------------------------------------------------


async def opened(tmp_path: Path, state: dict[str, Any] | None = None, **config: Any) -> FileSink:
    sink = FileSink(FileSinkConfig(**config), context(tmp_path))
    await sink.open(state)
    return sink


def records(*values: Any) -> list[Record]:
    return [Record(v, id=f"r{i}", source="/test", type="t") for i, v in enumerate(values)]


async def test_sink_json_writes_the_data_of_each_record(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out/orders.jsonl")

    await sink.write(records({"id": 1}, [2], "three"))
    state = await sink.flush()
    await sink.close()

    content = (tmp_path / "out" / "orders.jsonl").read_bytes()
    assert content == b'{"id":1}\n[2]\n"three"\n'
    assert state == {
        "file": str(tmp_path / "out" / "orders.jsonl"),
        "size": len(content),
        "tail": _fingerprint(content),
    }


async def test_sink_json_writes_the_stores_encoding_and_encodes_the_rest(tmp_path: Path) -> None:
    """Records read from the mesh carry their data's JSON (``encoded_data``): a batch where
    every record has it is written as one join of those bytes; a batch where one lacks it
    is encoded record by record. Both give the same lines."""
    from meshconnect.mesh.codec import encode_segment

    values = ({"n": Decimal("1.10"), "s": "a\nb"}, [2**70], None, "three")
    stored = records(*values)
    for r in stored:
        r.topic = "t"
    encode_segment(stored)  # sets encoded_data as the store does
    assert all(r.encoded_data is not None for r in stored)
    mixed = records(*values)
    mixed[0].encoded_data = stored[0].encoded_data
    expected = b'{"n":1.10,"s":"a\\nb"}\n[1180591620717411303424]\nnull\n"three"\n'
    for name, batch in (("stored", stored), ("mixed", mixed)):
        sink = await opened(tmp_path, path=f"{name}.jsonl")
        await sink.write(batch)
        await sink.write(batch[:1])
        await sink.close()
        content = (tmp_path / f"{name}.jsonl").read_bytes()
        assert content == expected + expected.split(b"\n")[0] + b"\n", name


async def test_sink_text_writes_strings_as_they_are(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out.log", format="text")

    await sink.write(records("plain line", {"not": "a string"}, 7))
    await sink.close()

    assert (tmp_path / "out.log").read_text() == 'plain line\n{"not":"a string"}\n7\n'


async def test_sink_cloudevents_round_trips_records(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="events.jsonl", format="cloudevents")
    sent = records({"id": 1}, b"\x00bytes")
    sent[0].extensions["partitionkey"] = "k"

    await sink.write(sent)
    await sink.close()

    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert [Record.from_dict(orjson.loads(line)) for line in lines] == sent


async def test_open_truncates_to_the_committed_size(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out.jsonl")
    await sink.write(records("committed"))
    committed = await sink.flush()
    await sink.write(records("written after the commit"))
    await sink.flush()  # flushed, but the worker crashed before committing this state
    await sink.close()

    sink = await opened(tmp_path, committed, path="out.jsonl")
    await sink.write(records("redelivered"))
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"committed"\n"redelivered"\n'


async def test_no_state_and_an_existing_file_refuses_to_start(tmp_path: Path) -> None:
    """Issue 19 item 6: a file the sink has no record of writing is never destroyed."""
    write(tmp_path / "out.jsonl", b'"not written by this sink"\n')

    with pytest.raises(ConfigError) as caught:
        await opened(tmp_path, None, path="out.jsonl")

    assert str(caught.value) == (
        f"file sink: {tmp_path / 'out.jsonl'} (27 bytes) exists and this sink has no committed "
        "state, so it did not write it; refusing to touch it. Move it away, point 'path' at "
        "another file, or set 'if_exists: append' (keep it and append after it) or "
        "'if_exists: replace' (discard its content)"
    )
    assert (tmp_path / "out.jsonl").read_bytes() == b'"not written by this sink"\n'


async def test_an_unrelated_file_put_where_the_committed_one_was_is_refused(
    tmp_path: Path,
) -> None:
    """Issue 19 item 6, with state: the sink's file was moved away and another, longer file
    put at its path. Truncating it to the committed size destroyed its content; the state's
    fingerprint of the committed bytes shows it is not the sink's file."""
    sink = await opened(tmp_path, path="out.jsonl")
    await sink.write(records("mine"))
    state = await sink.flush()
    await sink.close()
    (tmp_path / "out.jsonl").rename(tmp_path / "moved.jsonl")
    write(tmp_path / "out.jsonl", b"UNRELATED precious content\nline 2\n")

    with pytest.raises(ConfigError, match=r"out\.jsonl \(34 bytes\) exists and this sink has no"):
        await opened(tmp_path, state, path="out.jsonl")
    assert (tmp_path / "out.jsonl").read_bytes() == b"UNRELATED precious content\nline 2\n"

    sink = await opened(tmp_path, state, path="out.jsonl", if_exists="append")
    await sink.write(records("next"))
    await sink.close()
    assert (tmp_path / "out.jsonl").read_bytes() == (
        b'UNRELATED precious content\nline 2\n"next"\n'
    )


async def test_the_sinks_own_file_longer_than_committed_is_still_truncated(tmp_path: Path) -> None:
    """The fingerprint covers only the committed bytes: lines written after the checkpoint
    (a crash before the commit) are cut as before."""
    sink = await opened(tmp_path, path="out.jsonl")
    await sink.write(records("a" * 100))
    state = await sink.flush()
    await sink.write(records("after"))
    await sink.flush()
    await sink.close()

    sink = await opened(tmp_path, state, path="out.jsonl")
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"' + b"a" * 100 + b'"\n'


async def test_no_state_and_rotated_files_refuses_to_start(tmp_path: Path) -> None:
    write(tmp_path / "out-00002.jsonl", b'"old"\n')

    with pytest.raises(ConfigError, match=r"out-00002.jsonl \(6 bytes\) exists"):
        await opened(tmp_path, None, path="out.jsonl", rotate_bytes=100)

    assert (tmp_path / "out-00002.jsonl").read_bytes() == b'"old"\n'


async def test_an_empty_existing_file_is_taken_over(tmp_path: Path) -> None:
    write(tmp_path / "out.jsonl", b"")

    sink = await opened(tmp_path, None, path="out.jsonl")
    await sink.write(records("new"))
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"new"\n'


async def test_if_exists_append_keeps_the_file_and_appends(tmp_path: Path) -> None:
    write(tmp_path / "out.jsonl", b'"kept"\n')

    sink = await opened(tmp_path, None, path="out.jsonl", if_exists="append")
    await sink.write(records("new"))
    state = await sink.flush()
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"kept"\n"new"\n'
    assert state == {
        "file": str(tmp_path / "out.jsonl"),
        "size": 13,
        "tail": _fingerprint(b'"kept"\n"new"\n'),
    }


async def test_if_exists_append_ends_an_unterminated_last_line_first(tmp_path: Path) -> None:
    write(tmp_path / "out.jsonl", b'"no newline"')

    sink = await opened(tmp_path, None, path="out.jsonl", if_exists="append")
    await sink.write(records("new"))
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"no newline"\n"new"\n'


async def test_if_exists_append_with_rotation_goes_on_in_the_last_file(tmp_path: Path) -> None:
    write(tmp_path / "out-00001.jsonl", b'"a"\n')
    write(tmp_path / "out-00002.jsonl", b'"b"\n')

    sink = await opened(tmp_path, None, path="out.jsonl", rotate_bytes=100, if_exists="append")
    await sink.write(records("c"))
    await sink.close()

    assert (tmp_path / "out-00001.jsonl").read_bytes() == b'"a"\n'
    assert (tmp_path / "out-00002.jsonl").read_bytes() == b'"b"\n"c"\n'


async def test_if_exists_replace_discards_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "out.jsonl", b'"old"\n')

    sink = await opened(tmp_path, None, path="out.jsonl", if_exists="replace")
    await sink.write(records("new"))
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'"new"\n'
    assert "if_exists: replace: discarding" in caplog.text


async def test_a_changed_path_keeps_the_old_file_and_checks_the_new_one(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="a.jsonl")
    await sink.write(records("in a"))
    state = await sink.flush()
    await sink.close()
    write(tmp_path / "b.jsonl", b'"unrelated"\n')

    with pytest.raises(ConfigError, match=r"b\.jsonl"):
        await opened(tmp_path, state, path="b.jsonl")

    assert (tmp_path / "a.jsonl").read_bytes() == b'"in a"\n'
    assert (tmp_path / "b.jsonl").read_bytes() == b'"unrelated"\n'


def test_rotate_bytes_takes_the_size_syntax_of_max_bytes() -> None:
    assert FileSinkConfig(path="x", rotate_bytes="10MB").rotate_bytes == 10_000_000
    assert FileSinkConfig(path="x", rotate_bytes="1GiB").rotate_bytes == 2**30
    assert FileSinkConfig(path="x", rotate_bytes=4096).rotate_bytes == 4096


async def test_rotation_names_files_by_sequence_and_respects_the_size(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out.jsonl", rotate_bytes=10)

    await sink.write(records("aaa", "bbb", "a long record"))  # each line is 6 bytes or more
    state = await sink.flush()
    await sink.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out-00001.jsonl",
        "out-00002.jsonl",
        "out-00003.jsonl",
    ]
    assert (tmp_path / "out-00001.jsonl").read_bytes() == b'"aaa"\n'
    assert (tmp_path / "out-00003.jsonl").read_bytes() == b'"a long record"\n'
    assert state == {
        "file": str(tmp_path / "out-00003.jsonl"),
        "seq": 3,
        "size": 16,
        "tail": _fingerprint(b'"a long record"\n'),
    }


async def test_open_with_rotation_deletes_files_written_after_the_commit(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out.jsonl", rotate_bytes=12)  # two lines per file
    await sink.write(records("aaa"))
    committed = await sink.flush()
    await sink.write(records("bbb", "ccc", "ddd"))
    await sink.close()
    assert (tmp_path / "out-00002.jsonl").read_bytes() == b'"ccc"\n"ddd"\n'

    sink = await opened(tmp_path, committed, path="out.jsonl", rotate_bytes=12)
    await sink.write(records("eee"))
    await sink.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-00001.jsonl"]
    assert (tmp_path / "out-00001.jsonl").read_bytes() == b'"aaa"\n"eee"\n'


async def test_sink_json_writes_decimals_as_numbers_and_rejects_other_objects(
    tmp_path: Path,
) -> None:
    sink = await opened(tmp_path, path="out.jsonl")

    await sink.write(records({"price": Decimal("9.95")}))
    with pytest.raises(DataError, match="record r0"):
        await sink.write(records({"oops": object()}))
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == b'{"price":9.95}\n'


async def test_sink_encoding_and_fsync_options(tmp_path: Path) -> None:
    sink = await opened(tmp_path, path="out.log", format="text", encoding="latin-1", fsync=True)

    await sink.write(records("café", {"a": "é"}))
    state = await sink.flush()
    await sink.close()

    expected = 'café\n{"a":"é"}\n'.encode("latin-1")
    assert (tmp_path / "out.log").read_bytes() == expected
    assert state is not None and state["size"] == len(expected)


async def test_sink_round_trip_through_the_source(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", json_lines(*({"n": i} for i in range(1000))))
    reading = await read_to_end(await started(tmp_path, path="in.jsonl", batch_size=128))

    sink = await opened(tmp_path, path="out.jsonl")
    for batch in reading.batches:
        await sink.write(batch.records)
    await sink.close()

    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "in.jsonl").read_bytes()


# -- plugin and config -------------------------------------------------------------------------


def test_the_plugin_declares_a_file_source_and_sink() -> None:
    specs = plugin.meshconnect_connectors()

    assert [(s.name, s.kind, s.load()) for s in specs] == [
        ("file", "source", FileSource),
        ("file", "sink", FileSink),
    ]


@pytest.mark.parametrize("model", [FileSourceConfig, FileSinkConfig])
def test_every_config_field_is_documented(model: type[Any]) -> None:
    undocumented = [name for name, f in model.model_fields.items() if not f.description]

    assert undocumented == []


def test_csv_without_header_needs_fieldnames() -> None:
    with pytest.raises(ValidationError, match="needs fieldnames"):
        FileSourceConfig(path="x.csv", format="csv", header=False)


@pytest.mark.parametrize("fmt", ["json", "text", "csv"])
async def test_the_records_of_one_poll_share_one_ingestion_time(tmp_path: Path, fmt: str) -> None:
    # A batch spans several reads (128 KiB each) and files; one `time` for all of it lets the
    # mesh store keep the column once per segment instead of once per record.
    lines = [
        f'{{"n":{i},"pad":"{"x" * 200}"}}' if fmt == "json" else f"{i},{'x' * 200}"
        for i in range(3000)
    ]
    header = "n,pad\n" if fmt == "csv" else ""
    (tmp_path / "a.log").write_text(header + "\n".join(lines) + "\n")
    (tmp_path / "b.log").write_text(header + "\n".join(lines[:10]) + "\n")
    source = await started(tmp_path, path="*.log", format=fmt, batch_size=5000, follow=False)
    batch = await source.poll()
    assert batch is not None
    assert len(batch.records) == 3010
    assert len({r.time for r in batch.records}) == 1
    await source.stop()


async def test_a_line_with_a_lone_surrogate_escape_says_so(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"n":1}\n{"s":"\\ud800"}\n{"n":2}\n')
    source = await started(tmp_path, path="in.jsonl", follow=False)
    batch = await source.poll()
    assert batch is not None
    assert [r.data for r in batch.records] == [{"n": 1}, {"n": 2}]
    [(record, error)] = batch.failures
    assert "lone UTF-16 surrogate escape" in str(error), error
    assert record.data == '{"s":"\\ud800"}'
    await source.stop()
