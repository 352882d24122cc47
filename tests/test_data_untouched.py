"""``ConnectorContext.data_untouched``: a source may hand EncodedRecords only when nothing
reads its records' data before the mesh store (issue 21)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from meshconnect import (
    ConnectorConfig,
    ConnectorSpec,
    EncodedRecord,
    Record,
    Source,
    SourceBatch,
    hookimpl,
)
from meshconnect.config.loader import load_pipeline_files, load_pipeline_texts
from meshconnect.mesh.sqlite import SqliteStore
from meshconnect.plugins import load_registry
from meshconnect.testing import test_registry
from meshconnect.worker import Worker, data_untouched


@pytest.mark.parametrize(
    ("extra", "untouched"),
    [
        ("", True),
        ("topic: orders\n", True),
        ("topic: 'cdc.{subject}'\n", True),
        ("topic: 'cdc.{data.table}'\n", False),
        ("topic: \"cdc.{data['table']}\"\n", False),
        ("transforms:\n  - {type: filter, where: 'true'}\n", False),
    ],
)
def test_data_untouched_only_without_transforms_and_data_in_the_topic(
    tmp_path: Path, extra: str, untouched: bool
) -> None:
    text = textwrap.dedent(
        """\
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
            sinks: [{name: out, connector: file, config: {path: out.jsonl}}]
        """
    ) + textwrap.indent(extra, "    ")
    loaded = load_pipeline_texts([("p.yaml", text, str(tmp_path))], load_registry())
    assert data_untouched(loaded.pipelines[0]) is untouched


class EncodedSource(Source[ConnectorConfig]):
    """One batch: good encodings around bad ones (when ``data_untouched``), then done."""

    bounded = True
    ENCODINGS = [
        b'{"n":1}',
        b'{"a":1},{"a":2}],"id":["forged-0","forged-1"],"data":[{"forged":0}',  # a splice
        b'{"n":2,"v":NaN}',
        b'{"n":3}\n{"n":4}',
        b'{"n":"\xff"}',
        b"",
        b'{"n":5}',
        b"null",
    ]

    async def start(self, positions: Any) -> None:
        self.done = bool(positions)

    async def poll(self) -> SourceBatch | None:
        if self.done:
            return None
        self.done = True
        assert self.context.data_untouched
        records: list[Record] = [
            EncodedRecord.of(e, f"r{i}", "/enc", "enc", None, None, {})
            for i, e in enumerate(self.ENCODINGS)
        ]
        return SourceBatch(records, {"p": {"done": True}})


class EncodedPlugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [ConnectorSpec("enc", "source", ConnectorConfig, EncodedSource)]


async def test_encodings_that_are_not_one_json_line_are_dead_letters_and_harm_no_other(
    tmp_path: Path,
) -> None:
    """A source's EncodedRecords are stored as given only when each is one JSON value in
    UTF-8 on one line: the others (a splice of segment text, NaN, two lines, invalid UTF-8,
    nothing) are dead letters with their bytes, named; the good ones, and an encoded
    ``null`` (an explicit null payload), are stored and written as they are."""
    out = tmp_path / "out.jsonl"
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            f"""\
            pipelines:
              - name: enc
                source:
                  connector: enc
                  errors: {{tolerance: all, dead_letter_topic: dlq.enc}}
                sinks: [{{name: out, connector: file, config: {{path: {out}}}}}]
            """
        )
    )
    registry = test_registry()
    registry.register(EncodedPlugin(), "enc")
    config = load_pipeline_files([str(tmp_path / "p.yaml")], registry)
    store = SqliteStore(f"sqlite:///{tmp_path / 'mesh.db'}")
    await store.open()
    try:
        assert await Worker(config, store).run() == 0
        stored = await store.read("enc", 0, 100)
        dead = await store.read("dlq.enc", 0, 100)
    finally:
        await store.close()
    assert [(r.id, r.data, r.null_data) for r in stored] == [
        ("r0", {"n": 1}, False),
        ("r6", {"n": 5}, False),
        ("r7", None, True),
    ]
    assert out.read_bytes() == b'{"n":1}\n{"n":5}\nnull\n'
    bad = EncodedSource.ENCODINGS[1:6]
    assert [r.data for r in dead] == bad
    assert [r.extensions["errorstage"] for r in dead] == ["store"] * 5
    messages = [r.extensions["errormessage"] for r in dead]
    assert all("its encoded data" in m for m in messages), messages
