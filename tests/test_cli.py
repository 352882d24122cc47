"""The command line end to end (in-process with click's runner, or as a subprocess where the
process boundary matters): exit codes, output formats, and that secrets never show."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SECRET = "s3cr3t-Zebra-9931"


def mc(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def quick(tmp_path: Path) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"n": i}) + "\n" for i in range(5)))
    return write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: quick
            source:
              connector: file
              config: {path: in.jsonl}
            transforms:
              - {type: mask, fields: [data.n], mode: hash, salt: "${env:SALT}"}
            sinks:
              - {connector: file, config: {path: out.jsonl}}
        """,
    )


def test_a_secret_never_shows_in_validate_run_or_offsets_output(
    tmp_path: Path, quick: Path
) -> None:
    bad = write(
        tmp_path,
        "bad.yaml",
        """
        pipelines:
          - name: bad
            source:
              connector: file
              config: {path: "${env:SALT}", follow: "${env:SALT}", batch_size: "${env:SALT}"}
            transforms:
              - {type: filter, where: "data.x == '${env:SALT}'", extra: "${env:SALT}"}
        """,
    )
    env = {"SALT": SECRET}
    outputs = [
        mc(tmp_path, "validate", str(bad), env=env),
        mc(tmp_path, "run", str(bad), env=env),
        mc(tmp_path, "--log-level", "debug", "run", str(quick), env=env),
        mc(tmp_path, "offsets", "show", str(quick), env=env),
        mc(tmp_path, "topics", "tail", "quick", "--from-beginning", env=env),
    ]
    assert [o.returncode for o in outputs] == [1, 1, 0, 0, 0]
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr


def test_a_bounded_run_exits_0_and_offsets_show_the_committed_positions(
    tmp_path: Path, quick: Path
) -> None:
    run = mc(tmp_path, "run", str(quick), env={"SALT": "x"})
    shown = mc(tmp_path, "offsets", "show", "--json", str(quick), env={"SALT": "x"})
    assert run.returncode == 0, run.stderr
    report = json.loads(shown.stdout)
    (source,) = report["sources"]
    (position,) = source["positions"].values()
    assert (source["id"], position["offset"]) == ("quick/file", 45)
    (sink,) = report["sinks"]
    assert sink["topics"] == [{"topic": "quick", "offset": 5, "end": 5, "lag": 0}]


def test_offsets_reset_to_the_beginning_redelivers_everything(tmp_path: Path, quick: Path) -> None:
    env = {"SALT": "x"}
    assert mc(tmp_path, "run", str(quick), env=env).returncode == 0
    reset_source = mc(tmp_path, "offsets", "reset", str(quick), "quick", "--yes", env=env)
    reset_sink = mc(
        tmp_path, "offsets", "reset", str(quick), "quick", "--sink", "file", "--yes", env=env
    )
    again = mc(tmp_path, "run", str(quick), env=env)
    listed = mc(tmp_path, "topics", "list", "--json")
    assert [reset_source.returncode, reset_sink.returncode, again.returncode] == [0, 0, 0]
    assert json.loads(listed.stdout)[0]["records"] == 10  # the source read the file again
    # the sink starts fresh (no committed state) and holds one copy of the re-read records
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 10


def test_topics_tail_prints_cloudevents_json_lines(tmp_path: Path, quick: Path) -> None:
    assert mc(tmp_path, "run", str(quick), env={"SALT": "x"}).returncode == 0
    tail = mc(tmp_path, "topics", "tail", "quick", "-n", "2")
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["specversion"] for e in events] == ["1.0", "1.0"]
    assert [e["subject"] for e in events] == ["in.jsonl", "in.jsonl"]


def test_schema_includes_each_connectors_config(tmp_path: Path) -> None:
    result = mc(tmp_path, "schema")
    schema = json.loads(result.stdout)
    variants = schema["$defs"]["SourceConfig"]["allOf"]
    file_variant = next(
        v for v in variants if v["if"]["properties"]["connector"]["const"] == "file"
    )
    assert "follow" in file_variant["then"]["properties"]["config"]["properties"]


def test_python_dash_m_and_the_script_are_the_same_cli(tmp_path: Path) -> None:
    result = mc(tmp_path, "--help")
    assert result.returncode == 0
    assert "validate" in result.stdout and "plugins" in result.stdout


def test_offsets_reset_of_a_source_to_the_end_skips_what_is_there(
    tmp_path: Path, quick: Path
) -> None:
    env = {"SALT": "x"}
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write('{"n": 5}\n{"n": 6, "unterminated"')  # a partial last line stays unread
    reset = mc(tmp_path, "offsets", "reset", str(quick), "quick", "--to", "end", "--yes", env=env)
    with (tmp_path / "in.jsonl").open("a") as f:
        f.write(': true}\n{"n": 7}\n')
    run = mc(tmp_path, "run", str(quick), env=env)
    tail = mc(tmp_path, "topics", "tail", "quick", "--from-beginning")
    assert (reset.returncode, run.returncode) == (0, 0), reset.stderr + run.stderr
    assert [json.loads(line)["data"]["unterminated"] for line in tail.stdout.splitlines()[:1]] == [
        True
    ]
    assert len(tail.stdout.splitlines()) == 2  # the completed line and {"n": 7}, nothing before
