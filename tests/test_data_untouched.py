"""``ConnectorContext.data_untouched``: a source may hand EncodedRecords only when nothing
reads its records' data before the mesh store (issue 21)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshconnect.config.loader import load_pipeline_texts
from meshconnect.plugins import load_registry
from meshconnect.worker import data_untouched


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
