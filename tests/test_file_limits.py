"""File connector limits found by hunting as a new user: a sink path whose `{...}` is not
`{partition}` (a typo, a template the file sink does not render), and lines longer than
`max_line_bytes` (memory stays bounded; the line is dead-lettered with its size)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_support import mc

from meshconnect.api import ConnectorContext, Position
from meshconnect.connectors.file.config import FileSinkConfig, FileSourceConfig, sink_path
from meshconnect.connectors.file.source import FileSource

# -- sink path placeholders --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("out/o-{partiton}.jsonl", "did you mean '{partition}'?"),
        ("out/{topic}.jsonl", "'{topic}' in path is not a placeholder"),
        ("out/{time:%Y}/o.jsonl", "'{time:%Y}' in path is not a placeholder"),
        ("out/o-{.jsonl", "a lone '{' in path"),
    ],
)
def test_a_sink_path_with_an_unknown_placeholder_is_refused(path: str, message: str) -> None:
    """It used to be taken literally: `{partiton}` (or a `{topic}` template, which the file
    sink does not render) silently wrote one file named `o-{partiton}.jsonl`."""
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("?", r"\?")):
        FileSinkConfig(path=path)


def test_doubled_braces_are_literal_and_partition_is_replaced() -> None:
    assert sink_path("o-{{x}}-{partition}.jsonl", 3) == "o-{x}-3.jsonl"
    assert sink_path("o-{{partition}}.jsonl", 3) == "o-{partition}.jsonl"


def test_validate_names_the_line_of_a_sink_path_typo(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(
        textwrap.dedent(
            """\
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                sinks:
                  - connector: file
                    config: {path: "out/o-{partiton}.jsonl"}
            """
        )
    )

    result = mc(tmp_path, "validate", str(p))

    assert result.returncode == 1
    assert "p.yaml:6:" in result.stdout + result.stderr
    assert "pipelines[0].sinks[0].config.path" in result.stdout + result.stderr


# -- lines over max_line_bytes -----------------------------------------------------------------

LIMIT = 128 * 1024


def _source(tmp_path: Path, **config: Any) -> FileSource:
    config.setdefault("poll_interval", 0.01)
    config.setdefault("max_line_bytes", LIMIT)
    context = ConnectorContext(
        pipeline="p", name="file", logger=logging.getLogger("test"), base_dir=str(tmp_path)
    )
    return FileSource(FileSourceConfig(**config), context)


async def _read_all(source: FileSource) -> tuple[list[Any], list[Any], dict[str, Position]]:
    records: list[Any] = []
    failures: list[Any] = []
    positions: dict[str, Position] = {}
    while (batch := await source.poll()) is not None:
        records += [r.data for r in batch.records]
        failures += batch.failures
        positions.update(batch.positions)
        for tail in source._tails.values():  # never more than the limit (and a chunk) held
            assert sum(map(len, tail.partial)) <= LIMIT + (1 << 17)
    await source.stop()
    return records, failures, positions


@pytest.mark.parametrize("fmt", ["json", "text", "csv"])
async def test_a_line_over_max_line_bytes_is_a_failure_with_its_size_and_head(
    tmp_path: Path, fmt: str
) -> None:
    """A 100 MB line was read whole into memory (about five times its size at peak) and
    stored: a file without newlines could exhaust the worker. Now it is skipped up to its
    newline without being held, and the lines around it are read."""
    header = b"v\n" if fmt == "csv" else b""
    long = b'"' + b"x" * (3 * LIMIT) + b'"'
    good = [b'"a"', b'"b"']
    (tmp_path / "in").write_bytes(header + good[0] + b"\n" + long + b"\n" + good[1] + b"\n")
    source = _source(tmp_path, path="in", format=fmt)
    await source.start({})

    records, failures, positions = await _read_all(source)

    assert len(records) == 2
    ((record, error),) = failures
    line = 3 if fmt == "csv" else 2
    assert f"in:{line}: a line of {len(long):,} bytes is longer than max_line_bytes" in str(error)
    assert record.data == long[:1024].decode()
    assert record.id.endswith(f"-{len(header) + len(good[0]) + 1}")
    (position,) = positions.values()
    assert position["offset"] == (tmp_path / "in").stat().st_size


async def test_a_line_of_exactly_max_line_bytes_is_read(tmp_path: Path) -> None:
    line = b'"' + b"y" * (LIMIT - 2) + b'"'
    (tmp_path / "in").write_bytes(b"1\n" + line + b"\n" + line + b"x\n2\n")
    source = _source(tmp_path, path="in", format="text")
    await source.start({})

    records, failures, _ = await _read_all(source)

    assert records == ["1", line.decode(), "2"]
    assert "a line of 131,073 bytes" in str(failures[0][1])


async def test_a_long_line_written_while_followed_is_one_failure(tmp_path: Path) -> None:
    path = tmp_path / "in"
    path.write_bytes(b'{"n":1}\n{"s":"')
    source = _source(tmp_path, path="in", follow=True)
    await source.start({})
    failures: list[Any] = []
    records: list[Any] = []
    for piece in [b"z" * LIMIT] * 4 + [b'"}\n{"n":2}\n']:
        with path.open("ab") as f:
            f.write(piece)
        for _ in range(3):
            batch = await source.poll()
            assert batch is not None
            records += [r.data for r in batch.records]
            failures += batch.failures
        (tail,) = source._tails.values()
        assert sum(map(len, tail.partial)) <= LIMIT + (1 << 17)
    await source.stop()

    assert records == [{"n": 1}, {"n": 2}]
    assert len(failures) == 1
    assert f"a line of {4 * LIMIT + 8:,} bytes" in str(failures[0][1])


async def test_an_unterminated_long_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    (tmp_path / "in").write_bytes(b'{"n":1}\n{"s":"' + b"z" * (2 * LIMIT))
    source = _source(tmp_path, path="in")
    await source.start({})

    records, failures, positions = await _read_all(source)

    assert records == [{"n": 1}]
    assert failures == []
    assert next(iter(positions.values()))["offset"] == 8


def test_max_line_bytes_takes_the_size_syntax_and_has_a_floor() -> None:
    assert FileSourceConfig(path="x", max_line_bytes="1MiB").max_line_bytes == 1 << 20
    assert FileSourceConfig(path="x").max_line_bytes == 16 << 20
    with pytest.raises(ValueError, match="max_line_bytes"):
        FileSourceConfig(path="x", max_line_bytes="100KiB")


async def test_a_long_last_line_ending_a_chunk_leaves_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "in").write_bytes(b"x" * (3 * (1 << 17) - 1) + b"\n")  # the newline ends a chunk
    source = _source(tmp_path, path="in", format="text")
    await source.start({})

    records, failures, positions = await _read_all(source)

    assert (records, len(failures)) == ([], 1)
    assert next(iter(positions.values()))["offset"] == 3 * (1 << 17)
    assert "without a newline" not in caplog.text


# -- hand-written positions --------------------------------------------------------------------


def _csv_pipeline(tmp_path: Path) -> Path:
    (tmp_path / "c.csv").write_text('id,name\n1,"multi\nline"\n2,b\n')
    p = tmp_path / "p.yaml"
    p.write_text(
        "pipelines:\n  - name: c\n    source: {connector: file, config: {path: c.csv, "
        "format: csv}}\n    sinks: [{connector: file, config: {path: out.jsonl}}]\n"
    )
    return p


@pytest.mark.parametrize(
    ("position", "message"),
    [
        ('{"c.csv": {"offset": 8}}', "did you mean '{abs}'? (partitions are absolute paths)"),
        ('{"{abs}": {"offset": -5}}', "offset must be a whole number of at least 0, not -5"),
        ('{"{abs}": {"offset": "8"}}', 'offset must be a whole number of at least 0, not "8"'),
        ('{"{abs}": {"ofset": 8}}', "unknown field 'ofset' (did you mean 'offset'?)"),
        ('{"{abs}": {"offset": 8, "inode": 1.5}}', "inode must be a whole number"),
    ],
)
def test_offsets_reset_refuses_a_position_the_file_source_cannot_use(
    tmp_path: Path, position: str, message: str
) -> None:
    """`reset done` used to store any JSON: a relative path was silently ignored (the next run
    read nothing again), a typo'd field read the file from its beginning, and a negative or
    text offset failed every run with `OSError: Invalid argument` or `ValueError`."""
    p = _csv_pipeline(tmp_path)
    absolute = str(tmp_path / "c.csv")

    reset = mc(
        tmp_path,
        "offsets",
        "reset",
        str(p),
        "c",
        "--yes",
        "--to",
        position.replace("{abs}", absolute),
    )
    show = mc(tmp_path, "offsets", "show", str(p))

    assert reset.returncode == 1
    assert message.replace("{abs}", absolute) in reset.stderr
    assert "no committed position" in show.stdout


def test_a_valid_hand_written_position_resumes_there(tmp_path: Path) -> None:
    p = _csv_pipeline(tmp_path)
    to = '{"%s": {"offset": 23}}' % (tmp_path / "c.csv")

    reset = mc(tmp_path, "offsets", "reset", str(p), "c", "--yes", "--to", to)
    run = mc(tmp_path, "run", str(p))

    assert (reset.returncode, run.returncode) == (0, 0), reset.stderr + run.stderr
    assert (tmp_path / "out.jsonl").read_text() == '{"id":"2","name":"b"}\n'


async def test_a_stored_position_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    """Set through another door (an older version, the store edited): named, never retried."""
    from meshconnect.errors import ConfigError

    (tmp_path / "in").write_bytes(b"{}\n")
    source = _source(tmp_path, path="in")

    with pytest.raises(ConfigError, match=r"stored position of .*in is not usable: offset"):
        await source.start({str(tmp_path / "in"): {"offset": "x"}})


# -- a directory as the path -------------------------------------------------------------------


@pytest.mark.parametrize("follow", [False, True])
async def test_a_directory_as_the_path_is_a_config_error_naming_a_glob(
    tmp_path: Path, follow: bool
) -> None:
    """`path: logs` (the folder of the files): a bounded source said "no file matches
    .../logs", and a following one waited for files forever, logging once that none matched."""
    from meshconnect.errors import ConfigError

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.jsonl").write_text("{}\n")
    source = _source(tmp_path, path="logs", follow=follow)

    with pytest.raises(ConfigError, match=r"is a directory, not a file or glob: .*logs/\*"):
        await source.start({})


@pytest.mark.parametrize("if_exists", ["fail", "replace"])
def test_a_directory_as_the_sink_path_is_named_as_one(tmp_path: Path, if_exists: str) -> None:
    """It was taken for a 4,096-byte file the sink did not write, with advice to set
    `if_exists: append` or `replace`."""
    (tmp_path / "in.jsonl").write_text("{}\n")
    (tmp_path / "out").mkdir()
    p = tmp_path / "p.yaml"
    p.write_text(
        "pipelines:\n  - name: p\n    source: {connector: file, config: {path: in.jsonl}}\n"
        f"    sinks: [{{connector: file, config: {{path: out, if_exists: {if_exists}}}}}]\n"
    )

    run = mc(tmp_path, "run", str(p))

    assert run.returncode == 1
    assert f"path {tmp_path / 'out'} is a directory, not the file to write" in run.stderr
    assert "if_exists" not in run.stderr


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_a_batch_of_long_lines_is_bounded_in_bytes_not_only_lines(
    tmp_path: Path, fmt: str
) -> None:
    # batch_size counts lines, and a line may be up to max_line_bytes (16 MiB): 1,000 lines
    # of 4 MB were one 4 GB batch, several times that as records.
    from meshconnect.connectors.file.source import BATCH_BYTES

    line = 2 * 1024 * 1024
    with open(tmp_path / "big.jsonl", "w") as f:
        for i in range(30):
            f.write(f'{{"n":{i},"pad":"{"x" * line}"}}\n')
        for i in range(30, 2030):
            f.write(f'{{"n":{i}}}\n')
    context = ConnectorContext(
        pipeline="p", name="f", logger=logging.getLogger("t"), base_dir=str(tmp_path)
    )
    source = FileSource(
        FileSourceConfig(path="big.jsonl", format=fmt, follow=False, batch_size=1000), context
    )
    await source.start({})
    seen: list[Any] = []
    sizes: list[int] = []
    while (batch := await source.poll()) is not None:
        if not batch.records:
            continue
        held = sum(len(str(r.data)) for r in batch.records)
        assert held <= BATCH_BYTES + line + 64, (len(batch.records), held)
        sizes.append(len(batch.records))
        seen.extend(batch.records)
    await source.stop()
    assert len(seen) == 2030
    assert max(sizes) == 1000  # short lines fill batches again
