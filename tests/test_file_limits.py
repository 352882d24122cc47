"""File connector limits found by hunting as a new user: a sink path whose `{...}` is not
`{partition}` (a typo, a template the file sink does not render), and lines longer than
`max_line_bytes` (memory stays bounded; the line is dead-lettered with its size)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from cli_support import mc

from meshconnect.connectors.file.config import FileSinkConfig, sink_path

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
