"""Commands that only read the mesh store (topics list, topics tail, topics replay, offsets
show) refuse a store that is not there, saying where they looked, instead of making a new,
empty one where they were run: `topics list` in the wrong directory created
./.meshconnect/mesh.db and listed nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import mc


@pytest.mark.parametrize(
    "args",
    [
        ("topics", "list"),
        ("topics", "tail", "events"),
        ("topics", "replay", "dead", "--to", "events"),
        ("offsets", "show"),
        ("--store", "sqlite:///elsewhere/mesh.db", "topics", "list"),
    ],
)
def test_a_read_command_refuses_a_store_that_is_not_there(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = mc(tmp_path, *args)
    assert done.returncode == 1, done
    assert "no mesh store at" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "elsewhere").exists()


def test_the_default_state_directory_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "topics", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "no mesh store at .meshconnect/mesh.db" in done.stderr
    assert not (tmp_path / ".meshconnect").exists()


def test_after_a_run_they_read_it(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"n": 1}\n')
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: file, config: {path: in.jsonl, format: json, follow: false}}\n"
        "    topic: events\n"
    )
    assert mc(tmp_path, "run", "p.yaml").returncode == 0
    listed = mc(tmp_path, "topics", "list")
    assert listed.returncode == 0 and "events" in listed.stdout, listed


def test_offsets_show_with_a_file_says_what_a_first_start_reads(tmp_path: Path) -> None:
    """With pipeline files, `offsets show` reports what each one's first start reads, also
    before any run made the store."""
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: file, config: {path: in.jsonl, format: json, follow: false}}\n"
        "    topic: events\n"
    )
    shown = mc(tmp_path, "offsets", "show", "p.yaml")
    assert shown.returncode == 0, shown
    assert "source p/file" in shown.stdout and "no committed position" in shown.stdout
