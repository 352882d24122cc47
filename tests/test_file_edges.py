"""File source edge cases (issue 9 items 5 and 7, issue 18 item 7): byte order marks, CRLF in
quoted CSV fields, half-written last lines, copytruncate and rewrites (content fingerprints),
duplicate CSV header names, `source` URIs, unique ids and ingestion `time`."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_support import mc

from meshconnect.api import ConnectorContext, Position, SourceBatch
from meshconnect.connectors.file.config import FileSourceConfig
from meshconnect.connectors.file.source import FileSource
from meshconnect.errors import ConfigError
from meshconnect.eventrules import attribute_problem
from meshconnect.records import Record

BOM = b"\xef\xbb\xbf"


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


async def read_to_end(source: FileSource) -> tuple[list[Record], list[Any], dict[str, Position]]:
    records: list[Record] = []
    failures: list[Any] = []
    positions: dict[str, Position] = {}
    while (batch := await source.poll()) is not None:
        records += batch.records
        failures += batch.failures
        positions.update(batch.positions)
    await source.stop()
    return records, failures, positions


async def poll_until_idle(source: FileSource) -> list[SourceBatch]:
    batches = []
    while True:
        batch = await source.poll()
        assert batch is not None
        batches.append(batch)
        if not batch.records and not batch.failures and not batch.positions:
            return batches


def pipeline(tmp_path: Path, source: str, extra: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            pipelines:
              - name: p
                source:
                  connector: file
                  config: {source}
                  {extra}
                sinks:
                  - {{connector: file, config: {{path: out.jsonl, format: json}}}}
            """
        )
    )
    return path


# -- byte order marks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content", "expected"),
    [
        ("json", BOM + b'{"a":1}\n{"a":2}\n', [{"a": 1}, {"a": 2}]),
        ("csv", BOM + b"id,name\n1,x\n", [{"id": "1", "name": "x"}]),
        ("text", BOM + b"first\nsecond\n", ["first", "second"]),
        ("json", BOM + b"\n", []),
    ],
)
async def test_a_byte_order_mark_is_not_data(
    tmp_path: Path, fmt: str, content: bytes, expected: list[Any]
) -> None:
    (tmp_path / "in").write_bytes(content)

    records, failures, _ = await read_to_end(await started(tmp_path, path="in", format=fmt))

    assert ([r.data for r in records], failures) == (expected, [])


async def test_the_csv_header_is_read_without_its_bom_when_resuming(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(BOM + b"id,name\n1,x\n2,y\n")
    key = str(tmp_path / "in.csv")

    records, _, _ = await read_to_end(
        await started(
            tmp_path, {key: {"path": key, "inode": None, "offset": 15}}, path="in.csv", format="csv"
        )
    )

    assert [r.data for r in records] == [{"id": "2", "name": "y"}]


# -- CSV ---------------------------------------------------------------------------------------


async def test_crlf_inside_a_quoted_csv_field_is_kept(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(
        b'id,note\r\n1,"multi\r\nline"\r\n2,"lf\nonly"\r\n3,plain\r\n'
    )

    records, failures, _ = await read_to_end(await started(tmp_path, path="in.csv", format="csv"))

    assert failures == []
    assert [r.data for r in records] == [
        {"id": "1", "note": "multi\r\nline"},
        {"id": "2", "note": "lf\nonly"},
        {"id": "3", "note": "plain"},
    ]


async def test_duplicate_csv_header_names_are_an_error_per_row(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_bytes(b"a,a,b\n1,2,3\n")

    records, failures, _ = await read_to_end(await started(tmp_path, path="in.csv", format="csv"))

    message = (
        "the header names the field 'a' twice (columns 1 and 2); rename one, or name the "
        "fields with 'fieldnames'"
    )
    assert records == []
    assert [(r.data, str(e)) for r, e in failures] == [
        ("a,a,b", f"{tmp_path / 'in.csv'}:1: {message}"),
        ("1,2,3", f"{tmp_path / 'in.csv'}:2: {message}"),
    ]


def test_a_quoted_field_over_the_csv_field_limit_is_a_bad_row_not_a_failed_source(
    tmp_path: Path,
) -> None:
    """Issue 9 item 2's kind, no input makes a tolerant source fail: a quoted CSV field over
    Python's csv.field_size_limit() (131,072 characters) raised out of the source, so the run
    exited 1 having delivered nothing; now the row is dead-lettered raw and the others go."""
    big = '2,"' + "x" * 200_000 + '"'
    (tmp_path / "in.csv").write_text(f"id,note\n1,ok\n{big}\n3,fine\n")
    p = pipeline(
        tmp_path, "{path: in.csv, format: csv}", "errors: {tolerance: all, dead_letter_topic: dlq}"
    )

    run = mc(tmp_path, "run", str(p))
    dead = mc(tmp_path, "topics", "tail", "dlq", "--from-beginning")

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [
        '{"id":"1","note":"ok"}',
        '{"id":"3","note":"fine"}',
    ]
    (letter,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert letter["data"] == big
    assert letter["errormessage"].endswith(
        ":3: not a CSV row: field larger than field limit (131072)"
    )


async def test_a_header_over_the_csv_field_limit_fails_the_rows_not_the_source(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.csv").write_text('"' + "h" * 200_000 + '",b\n1,2\n')

    records, failures, _ = await read_to_end(await started(tmp_path, path="in.csv", format="csv"))

    assert records == []
    assert len(failures) == 2
    assert [str(e).split(":", 2)[2] for _, e in failures] == [
        " not a CSV row: field larger than field limit (131072)",
        " the header row is not usable: not a CSV row: field larger than field limit (131072)",
    ]


@pytest.mark.parametrize("header", [b'"' + b"h" * 200_000 + b'",b', b"id,n\xe9"])
async def test_a_failed_header_row_never_makes_the_next_row_the_header(
    tmp_path: Path, header: bytes
) -> None:
    """The row after a header that failed (too long, not UTF-8) was taken for the header, so
    its values silently became field names and every row after it was keyed by them."""
    (tmp_path / "in.csv").write_bytes(header + b"\n1,2\n3,4\n")

    records, failures, _ = await read_to_end(await started(tmp_path, path="in.csv", format="csv"))

    assert records == []
    assert [r.data for r, _ in failures][1:] == ["1,2", "3,4"]
    assert all("the header row is not usable" in str(e) for _, e in failures[1:])


def test_duplicate_fieldnames_are_a_config_error() -> None:
    with pytest.raises(ValueError, match="the field name 'a' is given twice"):
        FileSourceConfig(path="x", format="csv", fieldnames=["a", "b", "a"])


# -- half-written last lines -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "first", "rest", "expected"),
    [
        ("json", b'{"a":1}\n{"a":2,"b"', b":3}\n", [{"a": 1}, {"a": 2, "b": 3}]),
        ("json", b"1\n23", b"4\n", [1, 234]),  # a number may go on
        ("cloudevents", b'{"specversion":"1.0","id":"x","source":"/s","ty', b'pe":"t"}\n', ["x"]),
        ("text", b"one\ntw", b"o\n", ["one", "two"]),
        ("csv", b"k,v\n1,a\n2,", b"b\n", [{"k": "1", "v": "a"}, {"k": "2", "v": "b"}]),
        ("csv", b'k,v\n1,"multi\nli', b'ne"\n', [{"k": "1", "v": "multi\nline"}]),
    ],
)
async def test_a_half_written_last_line_is_read_whole_on_the_next_run(
    tmp_path: Path, fmt: str, first: bytes, rest: bytes, expected: list[Any]
) -> None:
    """The rule for a last line without newline in a bounded run, per format: json and
    cloudevents take it when it parses (and does not end in a digit), text and csv never;
    what is left is read whole on a later run."""
    (tmp_path / "in").write_bytes(first)
    records, failures, positions = await read_to_end(await started(tmp_path, path="in", format=fmt))
    with (tmp_path / "in").open("ab") as f:
        f.write(rest)
    more, more_failures, _ = await read_to_end(
        await started(tmp_path, positions, path="in", format=fmt)
    )

    got = [r.id if fmt == "cloudevents" else r.data for r in records + more]
    assert (got, failures + more_failures) == (expected, [])


async def test_a_complete_last_line_without_newline_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b'{"a":1}\n{"a":2}')
    records, _, positions = await read_to_end(await started(tmp_path, path="in"))
    again, _, _ = await read_to_end(await started(tmp_path, positions, path="in"))

    assert ([r.data for r in records], again) == ([{"a": 1}, {"a": 2}], [])


def test_a_half_written_line_through_meshconnect_run(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"a":1}\n{"a":2,"b"')
    p = pipeline(tmp_path, "{path: in.jsonl}")

    first = mc(tmp_path, "run", str(p))
    after_first = (tmp_path / "out.jsonl").read_text()
    with (tmp_path / "in.jsonl").open("ab") as f:
        f.write(b":3}\n")
    second = mc(tmp_path, "run", str(p))

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert after_first == '{"a":1}\n'
    assert (tmp_path / "out.jsonl").read_text() == '{"a":1}\n{"a":2,"b":3}\n'
    assert "are not a complete json record yet" in first.stderr


@pytest.mark.parametrize("fmt", ["json", "cloudevents"])
def test_a_number_no_decimal_can_hold_is_a_bad_line(tmp_path: Path, fmt: str) -> None:
    """Issue 9 item 2's kind: `1e99999999999999999999` raised decimal.InvalidOperation out of
    the CloudEvents line reader, so a tolerant source failed and the run exited 1."""
    event = '{"specversion":"1.0","id":"%s","source":"s","type":"t","data":%s}'
    lines = [event % ("1", "1.10"), event % ("2", "1e99999999999999999999"), event % ("3", "2")]
    if fmt == "json":
        lines = ['{"a":1.10}', '{"a":1e99999999999999999999}', '{"a":2}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    p = pipeline(
        tmp_path,
        f"{{path: in.jsonl, format: {fmt}}}",
        "errors: {tolerance: all, dead_letter_topic: dlq}",
    )

    run = mc(tmp_path, "run", str(p))
    dead = mc(tmp_path, "topics", "tail", "dlq", "--from-beginning")

    assert run.returncode == 0, run.stderr
    expected = ['{"a":1.10}', '{"a":2}'] if fmt == "json" else ["1.10", "2"]
    assert (tmp_path / "out.jsonl").read_text().splitlines() == expected
    (letter,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert letter["data"] == lines[1]
    assert letter["errormessage"].endswith("a number out of range")


# -- lines that do not decode ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content", "bad", "good"),
    [
        (
            "json",
            b'{"a":1}\n\xff\xfe{"a":2}\n{"a":3}\n',
            b'\xff\xfe{"a":2}',
            ['{"a":1}', '{"a":3}'],
        ),
        ("text", b"one\ntw\xc3o\nthree\n", b"tw\xc3o", ['"one"', '"three"']),
        ("csv", b"k,v\n1,\xe9\n2,b\n", b"1,\xe9", ['{"k":"2","v":"b"}']),
    ],
)
def test_a_line_that_does_not_decode_is_dead_lettered_with_its_bytes(
    tmp_path: Path, fmt: str, content: bytes, bad: bytes, good: list[str]
) -> None:
    """Issue 9 item 2's kind: a dead letter keeps the raw line, replayable. Bytes that are not
    text in `encoding` are kept as bytes (data_base64), not replaced by U+FFFD."""
    import base64

    (tmp_path / "in").write_bytes(content)
    p = pipeline(
        tmp_path,
        f"{{path: in, format: {fmt}}}",
        "errors: {tolerance: all, dead_letter_topic: dlq}",
    )

    run = mc(tmp_path, "run", str(p))
    dead = mc(tmp_path, "topics", "tail", "dlq", "--from-beginning")

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.jsonl").read_text().splitlines() == good
    (letter,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert letter["datacontenttype"] == "application/octet-stream"
    assert base64.b64decode(letter["data_base64"]) == bad
    assert "data" not in letter


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "cp037"])
def test_an_encoding_that_does_not_write_newline_as_the_byte_is_refused(encoding: str) -> None:
    """Lines are split and joined on the byte \\n: a codec that writes it otherwise cannot read
    a file line by line (UTF-16 read half a line and failed the rest) nor write one (a byte
    order mark before every line); both configs say so instead."""
    from meshconnect.connectors.file.config import FileSinkConfig

    for config in (FileSourceConfig, FileSinkConfig):
        with pytest.raises(ValueError, match=f"text encoding '{encoding}' writes a newline as"):
            config(path="x", encoding=encoding)


def test_utf_8_sig_reads_but_does_not_write() -> None:
    from meshconnect.connectors.file.config import FileSinkConfig

    assert FileSourceConfig(path="x", encoding="utf-8-sig").encoding == "utf-8-sig"
    with pytest.raises(ValueError, match="would write a byte order mark before every line"):
        FileSinkConfig(path="x", encoding="utf-8-sig")


# -- copytruncate and rewrites -----------------------------------------------------------------


@pytest.mark.parametrize(
    "new_lines",
    [
        b'{"n":"new-1"}\n{"n":"new-2"}\n',  # shorter than what was read
        b'{"n":"new-1 with a much longer text"}\n{"n":"new-2 also longer than before"}\n',
    ],
)
def test_copytruncate_while_stopped_loses_no_line(tmp_path: Path, new_lines: bytes) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":"old-1"}\n{"n":"old-2"}\n')
    p = pipeline(tmp_path, "{path: app.log}")
    first = mc(tmp_path, "run", str(p))
    shutil.copy(log, tmp_path / "app.log.1")  # cp app.log app.log.1
    os.truncate(log, 0)  # truncate -s 0 app.log
    with log.open("ab") as f:
        f.write(new_lines)

    second = mc(tmp_path, "run", str(p))

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    expected = [b'{"n":"old-1"}', b'{"n":"old-2"}', *new_lines.splitlines()]
    assert (tmp_path / "out.jsonl").read_bytes().splitlines() == expected


def test_a_copy_matching_the_glob_goes_on_where_the_old_content_was_left(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":"old-1"}\n')
    p = pipeline(tmp_path, '{path: "app.log*"}')
    first = mc(tmp_path, "run", str(p))
    with log.open("ab") as f:
        f.write(b'{"n":"old-2, written after the first run"}\n')
    shutil.copy(log, tmp_path / "app.log.1")
    os.truncate(log, 0)
    log.write_bytes(b'{"n":"new-1"}\n')

    second = mc(tmp_path, "run", str(p))

    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert sorted((tmp_path / "out.jsonl").read_text().splitlines()) == [
        '{"n":"new-1"}',
        '{"n":"old-1"}',
        '{"n":"old-2, written after the first run"}',
    ]


async def test_truncate_and_rewrite_longer_while_following(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":"old-1"}\n{"n":"old-2"}\n')
    source = await started(tmp_path, path="app.log", follow=True)
    before = [r for b in await poll_until_idle(source) for r in b.records]

    with log.open("r+b") as f:  # within one poll: truncate, then write more than was read
        f.truncate(0)
        f.write(b'{"n":"new-1, longer than the old lines"}\n{"n":"new-2"}\n')
    after = [r for b in await poll_until_idle(source) for r in b.records]
    await source.stop()

    ino = os.stat(log).st_ino
    assert [(r.id, r.data) for r in before] == [
        (f"{ino}-0", {"n": "old-1"}),
        (f"{ino}-14", {"n": "old-2"}),
    ]
    # new ids: source + id stay unique per event after the rewrite (issue 18 item 7)
    assert [(r.id, r.data) for r in after] == [
        (f"{ino}.1-0", {"n": "new-1, longer than the old lines"}),
        (f"{ino}.1-41", {"n": "new-2"}),
    ]


async def test_a_rewrite_while_stopped_gives_new_ids(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":1}\n')
    records, _, positions = await read_to_end(await started(tmp_path, path="app.log"))
    log.write_bytes(b'{"n":2}\n{"n":3}\n')  # same inode, new content

    again, _, positions = await read_to_end(await started(tmp_path, positions, path="app.log"))

    ino = os.stat(log).st_ino
    assert [r.id for r in records] == [f"{ino}-0"]
    assert [(r.id, r.data) for r in again] == [(f"{ino}.1-0", {"n": 2}), (f"{ino}.1-8", {"n": 3})]
    assert positions[str(log)]["generation"] == 1


# -- attributes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "uri_name"),
    [
        ("with space.jsonl", "with%20space.jsonl"),
        ("a#b%.jsonl", "a%23b%25.jsonl"),
        ("ünï€.jsonl", "%C3%BCn%C3%AF%E2%82%AC.jsonl"),
        ("q?x.jsonl", "q%3Fx.jsonl"),
    ],
)
async def test_source_is_a_percent_encoded_uri(tmp_path: Path, name: str, uri_name: str) -> None:
    (tmp_path / name).write_bytes(b"{}\n")

    records, _, _ = await read_to_end(await started(tmp_path, path=name))

    folder = str(tmp_path).replace("%", "%25")
    assert [(r.source, r.subject) for r in records] == [(f"file://{folder}/{uri_name}", name)]
    assert re.fullmatch(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+", records[0].source)
    # and the CloudEvents rules of the records module accept every attribute it made
    for attribute in ("source", "id", "time", "subject"):
        assert attribute_problem(attribute, getattr(records[0], attribute)) is None


@pytest.mark.parametrize("fmt", ["json", "text", "csv"])
async def test_every_record_has_an_ingestion_time(tmp_path: Path, fmt: str) -> None:
    (tmp_path / "in").write_bytes(b"a\n1\n")

    records, _, _ = await read_to_end(await started(tmp_path, path="in", format=fmt))

    assert records
    for record in records:
        assert record.time is not None
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", record.time)


def test_the_insert_timestamp_idiom_works_on_file_records(tmp_path: Path) -> None:
    """Issue 9 item 7: `insert_field` of `{time}` no longer fails on file records."""
    (tmp_path / "in.jsonl").write_bytes(b'{"a":1}\n')
    p = tmp_path / "p.yaml"
    p.write_text(
        textwrap.dedent(
            """\
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                transforms:
                  - {type: insert_field, field: data.ingested, from: time}
                sinks:
                  - {connector: file, config: {path: out.jsonl}}
            """
        )
    )

    run = mc(tmp_path, "run", str(p))

    assert run.returncode == 0, run.stderr
    (line,) = (tmp_path / "out.jsonl").read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", json.loads(line)["ingested"])


# -- a path that matches nothing ----------------------------------------------------------------


def test_a_bounded_source_whose_path_matches_nothing_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "there.jsonl").write_bytes(b"{}\n")
    p = pipeline(tmp_path, '{path: ["there.jsonl", "missing/*.jsonl"]}')

    run = mc(tmp_path, "run", str(p))

    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].endswith(
        "run failed: source p/file: ConfigError: file source: no file matches "
        f"{tmp_path / 'missing' / '*.jsonl'}; check the path, or set 'wait_for_files' to wait "
        "for files in a bounded run, or 'follow: true' to tail files as they come"
    )


def test_wait_for_files_waits_for_a_file_to_appear(tmp_path: Path) -> None:
    import threading
    import time

    p = pipeline(tmp_path, "{path: late.jsonl, wait_for_files: 60s}")

    def create() -> None:
        time.sleep(1.5)
        (tmp_path / "late.jsonl").write_bytes(b'{"late":true}\n')

    threading.Thread(target=create).start()
    run = mc(tmp_path, "run", str(p))

    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out.jsonl").read_text() == '{"late":true}\n'


async def test_wait_for_files_gives_up_after_its_time(tmp_path: Path) -> None:
    source = FileSource(
        FileSourceConfig(path="never.jsonl", wait_for_files="300ms"), context(tmp_path)
    )

    with pytest.raises(ConfigError) as caught:
        await source.start({})

    assert str(caught.value).startswith(
        f"file source: no file matches {tmp_path / 'never.jsonl'} (waited 0.3s); "
    )


def test_truncate_and_rewrite_longer_while_following_through_meshconnect_run(
    tmp_path: Path,
) -> None:
    import signal
    import time

    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":"old-1"}\n{"n":"old-2"}\n')
    p = pipeline(tmp_path, "{path: app.log, follow: true, poll_interval: 1s}")
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), "run"]
    worker = subprocess.Popen([*command, str(p)], cwd=tmp_path, stderr=subprocess.PIPE)

    def wait_for(lines: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and len(out.read_bytes().splitlines()) >= lines:
                return
            time.sleep(0.05)

    wait_for(2)
    with log.open("r+b") as f:  # truncate and write more than was read, between two polls
        f.truncate(0)
        f.write(b'{"n":"new-1, longer than both old lines"}\n{"n":"new-2"}\n')
    wait_for(4)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=60)

    assert worker.returncode == 0, err.decode()
    assert out.read_bytes().splitlines() == [
        b'{"n":"old-1"}',
        b'{"n":"old-2"}',
        b'{"n":"new-1, longer than both old lines"}',
        b'{"n":"new-2"}',
    ]
    assert b"was rewritten while it was read" in err or b"was truncated while it was read" in err


async def test_a_rotated_file_keeps_its_generation_in_the_ids(tmp_path: Path) -> None:
    """Rewritten (generation 1), then rotated: the lines read from the rotated name go on
    with generation 1, never reusing the ids of the content before the rewrite."""
    log = tmp_path / "app.log"
    log.write_bytes(b'{"n":"old"}\n')
    source = await started(tmp_path, path="app.log*", follow=True)
    await poll_until_idle(source)
    with log.open("r+b") as f:
        f.truncate(0)
        f.write(b'{"n":"new-1, longer"}\n')
    await poll_until_idle(source)
    ino = os.stat(log).st_ino
    log.rename(tmp_path / "app.log.1")
    log.write_bytes(b'{"n":"fresh"}\n')
    records = [r for b in await poll_until_idle(source) for r in b.records]
    records += [r for b in await poll_until_idle(source) for r in b.records]
    # app.log.1 is now its own partition, handed over at the rotation: a late line in it
    with (tmp_path / "app.log.1").open("ab") as f:
        f.write(b'{"n":"new-2"}\n')
    records += [r for b in await poll_until_idle(source) for r in b.records]
    records += [r for b in await poll_until_idle(source) for r in b.records]
    await source.stop()

    fresh = os.stat(log).st_ino
    assert sorted((r.id, r.data["n"]) for r in records) == sorted(
        [(f"{ino}.1-22", "new-2"), (f"{fresh}-0", "fresh")]
    )
