"""The ``meshconnect test`` files of the repository pass, every case of them.

``tests/pipelines/*_test.yaml`` hold value-by-value expectations of the built-in transforms
(Kafka Connect's SMT tests translated, and issue 20's cases); each runs through the real CLI,
as a user runs it, and every case in the file must be run and pass.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshconnect.cli import cli

PIPELINES = Path(__file__).resolve().parent / "pipelines"
TEST_FILES = sorted(PIPELINES.glob("*_test.yaml"))


def test_the_test_files_are_found() -> None:
    assert len(TEST_FILES) >= 4, TEST_FILES


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_every_case_of_the_file_passes(path: Path) -> None:
    cases = len(yaml.safe_load(path.read_text(encoding="utf-8"))["tests"])

    result = CliRunner().invoke(cli, ["test", str(path)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"{cases} passed, 0 failed", result.output
