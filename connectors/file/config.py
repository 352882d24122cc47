"""Config models of the ``file`` source and sink (the docs are generated from these fields)."""

from __future__ import annotations

import codecs
import difflib
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshconnect import ByteSize, ConnectorConfig, Duration

__all__ = ["FileSinkConfig", "FileSourceConfig", "sink_path"]

#: ``{{`` and ``}}`` (literal braces), a ``{placeholder}``, or a brace left alone.
_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def sink_path(path: str, partition: int | None) -> str:
    """The sink's ``path`` with ``{partition}`` replaced by ``partition`` (``None``: left as
    it is) and ``{{``/``}}`` by literal braces; anything else in braces is a ``ValueError``."""

    def one(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if name == "partition":
            return token if partition is None else str(partition)
        if name is None:
            raise ValueError(
                f"a lone {token!r} in path: write {token * 2!r} for a literal brace "
                "(only {partition} is replaced)"
            )
        hint = difflib.get_close_matches(name, ["partition"], n=1)
        raise ValueError(
            f"{token!r} in path is not a placeholder the file sink knows"
            + (" (did you mean '{partition}'?)" if hint else "")
            + ": the path names one file (one per partition), so only {partition} is replaced "
            "and templates such as {topic} or {time:%Y} are not; write {{ and }} for literal "
            "braces"
        )

    return _BRACES.sub(one, path)


def _check_encoding(value: str, *, writing: bool) -> str:
    """A codec that exists and keeps the newline the byte ``\\n``: files are split into lines
    (and lines joined) on that byte. UTF-16, UTF-32 and EBCDIC code pages write it otherwise;
    ``utf-8-sig`` reads fine (a BOM is skipped) but would write a BOM before every line."""
    try:
        codecs.lookup(value)
    except LookupError:
        raise ValueError(f"unknown text encoding {value!r}") from None
    if writing:
        newline = "\n".encode(value)  # the sink encodes each line on its own
    else:
        encoder = codecs.getincrementalencoder(value)()
        encoder.encode("a")  # past a byte order mark
        newline = encoder.encode("\n")
    if newline != b"\n":
        raise ValueError(
            f"text encoding {value!r} writes a newline as {newline!r}, not the byte \\n the file "
            f"{'sink joins' if writing else 'source splits'} lines on (UTF-16, UTF-32 and EBCDIC "
            "code pages are not supported); convert the files to UTF-8, e.g. with iconv"
            if not writing or value.replace("_", "-").lower() != "utf-8-sig"
            else "text encoding 'utf-8-sig' would write a byte order mark before every line; "
            "use 'utf-8'"
        )
    return value


class FileSourceConfig(ConnectorConfig):
    """Read lines from local files: JSON lines, plain text, CSV or structured CloudEvents."""

    path: str | list[str] = Field(
        description=(
            "A file path or glob (`logs/*.jsonl`, `data/**/*.csv`), or a list of them. Relative "
            "paths resolve against the directory of the pipeline file. Every matching regular "
            "file is one source partition, keyed by its absolute path."
        ),
        min_length=1,
    )
    format: Literal["json", "text", "csv", "cloudevents"] = Field(
        default="json",
        description=(
            "How a line becomes a record. `json`: JSON lines, each line's JSON value is the "
            "record's data. `text`: the line (without its newline) as a string. `csv`: each "
            "row as an object keyed by the header row (values stay strings). `cloudevents`: "
            "each line is a CloudEvent in structured JSON form and is kept as it is. Blank "
            "lines are skipped, except in `text`."
        ),
    )
    follow: bool = Field(
        default=False,
        description=(
            "false: bounded; read every matching file to its end, then the source is done (a "
            "last line without newline is read only when certainly whole: see 'A last line "
            "without newline'). true: tail the files forever like `tail -F`: "
            "pick up new files matching the glob, follow rotation (rename and re-create) and "
            "truncation (copytruncate)."
        ),
    )
    wait_for_files: Duration = Field(
        default=0,
        ge=0,
        description=(
            "Bounded reads only: how long to wait at start for every pattern of `path` to "
            "match a file (e.g. `30s`). A pattern that still matches nothing fails the source "
            "(the run exits 1 naming it). `follow: true` always waits."
        ),
    )
    poll_interval: Duration = Field(
        default=0.25,
        gt=0,
        le=1,
        description=(
            "Seconds an idle `follow` source waits before it looks for new lines and new files "
            "again (each idle poll returns an empty batch after this wait; at most 1 so the "
            "worker can always stop the source promptly)."
        ),
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        description="The most lines read into one batch (one transaction in the mesh store). "
        "Batches of 1,000 keep the records in flight (memory) small; larger ones were "
        "not faster when measured (docs/benchmarks.md). A batch also ends once it holds "
        "16 MiB of input (the line that crosses it included), so long lines make shorter "
        "batches.",
    )
    max_line_bytes: ByteSize = Field(
        default=16 * 1024 * 1024,
        ge=128 * 1024,
        description=(
            "The longest line read (its bytes, without the newline; `16MiB`, at least "
            "`128KiB`). A longer line is never held in memory: it is skipped up to its "
            "newline and becomes a failure (dead-lettered with `tolerance: all`) holding its "
            "first 1,024 bytes and naming its size, so a file without newlines or a runaway "
            "line cannot exhaust the worker's memory."
        ),
    )
    encoding: str = Field(
        default="utf-8",
        description=(
            "Text encoding of the files (a Python codec name that writes a newline as the "
            "byte \\n: not UTF-16, UTF-32 or EBCDIC). A line that does not decode "
            "goes to the failures with its raw bytes (data_base64)."
        ),
    )
    start_at: Literal["beginning", "end"] = Field(
        default="beginning",
        description=(
            "Where to start in a file found at start-up without a stored position: at its "
            "`beginning`, or at its `end` (only lines appended later are read). Files that "
            "appear while the source runs, and new files after a rotation, are always read "
            "from their beginning."
        ),
    )
    type: str = Field(
        default="meshconnect.file.line",
        min_length=1,
        description="CloudEvent `type` of the records (not used by `format: cloudevents`).",
    )
    delimiter: str = Field(
        default=",",
        min_length=1,
        max_length=1,
        description="CSV only: the field delimiter (one character, e.g. `;` or a tab).",
    )
    header: bool = Field(
        default=True,
        description=(
            "CSV only: the first row of each file is the header naming the fields. With "
            "`false`, `fieldnames` names them and every row is data."
        ),
    )
    fieldnames: list[str] | None = Field(
        default=None,
        description=(
            "CSV only: the field names. Required when `header` is false; with `header: true` "
            "they replace the names in the header row."
        ),
    )

    @field_validator("encoding")
    @classmethod
    def _encoding_exists(cls, value: str) -> str:
        return _check_encoding(value, writing=False)

    @field_validator("path")
    @classmethod
    def _paths_not_blank(cls, value: str | list[str]) -> str | list[str]:
        for item in [value] if isinstance(value, str) else value:
            if not item.strip():
                raise ValueError("a path may not be blank")
        return value

    @model_validator(mode="after")
    def _csv_needs_names(self) -> FileSourceConfig:
        if self.format == "csv" and not self.header and not self.fieldnames:
            raise ValueError("format csv with header: false needs fieldnames")
        return self

    @field_validator("fieldnames")
    @classmethod
    def _names_unique(cls, value: list[str] | None) -> list[str] | None:
        for i, name in enumerate(value or []):
            if name in (value or [])[:i]:
                raise ValueError(f"the field name {name!r} is given twice")
        return value

    @property
    def patterns(self) -> list[str]:
        """``path`` as a list of patterns."""
        return [self.path] if isinstance(self.path, str) else list(self.path)


class FileSinkConfig(ConnectorConfig):
    """Append records to a local file, one line each, exactly once across restarts."""

    path: str = Field(
        description=(
            "The file to write (its directory is created). Relative paths resolve against the "
            "directory of the pipeline file. With `rotate_bytes`, files are named "
            "`<stem>-<seq>.<suffix>`, e.g. `out-00001.jsonl`. `{partition}` in it becomes the "
            "partition number of the sink's consumer in a pipeline with `partitions:` (a "
            "file per partition; required there), `0` without. It is the only placeholder: "
            "any other `{...}` (a typo, a template such as `{topic}`) is refused; write `{{` "
            "and `}}` for literal braces."
        ),
        min_length=1,
    )
    format: Literal["json", "text", "cloudevents"] = Field(
        default="json",
        description=(
            "What a line holds. `json`: the record's data as JSON. `text`: string data as it "
            "is (a string holding newlines spans several lines; other data is written as "
            "JSON). `cloudevents`: the whole record as a structured-mode CloudEvent "
            "(attributes, extensions and data)."
        ),
    )
    rotate_bytes: ByteSize | None = Field(
        default=None,
        gt=0,
        description=(
            "Start a new file when the current one would grow past this size (`10MB`, `1GiB` "
            "or a number of bytes; between records: a record larger than this gets a file of "
            "its own). Unset: one file."
        ),
    )
    if_exists: Literal["fail", "append", "replace"] = Field(
        default="fail",
        description=(
            "What to do when the sink has no committed state (its first run, or its `path` "
            "changed) and finds a non-empty file at `path` (with `rotate_bytes`: any "
            "`<stem>-<seq>.<suffix>` file) that it has no record of writing. `fail`: refuse "
            "to start, naming the file; nothing is touched. `append`: keep the file and append "
            "after its content. `replace`: discard its content and start a fresh file. Once "
            "the sink has committed, it owns the file and this setting no longer applies, "
            "unless another file was put at the path (its bytes before the committed size "
            "differ from those committed)."
        ),
    )
    fsync: bool = Field(
        default=False,
        description=(
            "fsync the file on every flush (commit). Without it a crashed or killed worker "
            "loses nothing (the data is in the OS page cache), but a power loss or kernel "
            "crash may lose the last committed lines."
        ),
    )
    encoding: str = Field(
        default="utf-8",
        description=(
            "Text encoding of the written lines (a Python codec name that writes a newline as "
            "the byte \\n: not UTF-16, UTF-32, EBCDIC or utf-8-sig)."
        ),
    )

    @field_validator("encoding")
    @classmethod
    def _encoding_exists(cls, value: str) -> str:
        return _check_encoding(value, writing=True)

    @field_validator("path")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        sink_path(value, None)
        return value
