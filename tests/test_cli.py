"""The command line end to end (in-process with click's runner, or as a subprocess where the
process boundary matters): exit codes, output formats, and that secrets never show."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from meshconnect.connectors.file.sink import _fingerprint

OUT_16 = b'{"n":0}\n{"n":1}\n'

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
    assert reset_source.stdout.splitlines()[1:] == [
        "output: records before the new positions are not read again; records after them are "
        "read (again) and appended to the pipeline's topics, which then hold a second copy of "
        "any record read before. What sinks wrote stays as it is.",
        "reset done",
    ]
    assert json.loads(listed.stdout)[0]["records"] == 10  # the source read the file again
    # the sink kept its output and appended the ten records again after it
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 15


def test_offsets_reset_of_a_sink_keeps_its_output_and_says_so(tmp_path: Path) -> None:
    """Issue 9 item 3: resetting a sink moves its offsets; its file is never emptied."""
    (tmp_path / "in.jsonl").write_text('{"n":0}\n{"n":1}\n{"n":2}\n')
    p = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: pipe
            source: {connector: file, config: {path: in.jsonl}}
            sinks:
              - {name: archive, connector: file, config: {path: out.jsonl}}
        """,
    )
    assert mc(tmp_path, "run", str(p)).returncode == 0
    out = str(tmp_path / "out.jsonl")

    to_end = mc(
        tmp_path, "offsets", "reset", str(p), "pipe", "--sink", "archive", "--to", "end", "--yes"
    )
    after_end = mc(tmp_path, "run", str(p))
    content_after_end = (tmp_path / "out.jsonl").read_text()
    rewind = mc(
        tmp_path, "offsets", "reset", str(p), "pipe", "--sink", "archive", "--to", "1", "--yes"
    )
    after_rewind = mc(tmp_path, "run", str(p))

    assert (to_end.returncode, after_end.returncode, rewind.returncode) == (0, 0, 0)
    tail = _fingerprint(b'{"n":0}\n{"n":1}\n{"n":2}\n')
    assert to_end.stdout == (
        'sink pipe/archive: offsets {"pipe": 3} -> {"pipe": 3}\n'
        f'output: kept. The sink resumes from its committed state {{"file": "{out}", '
        f'"size": 24, "tail": "{tail}"}} (a file sink appends after it); nothing it wrote is '
        "removed.\n"
        "  pipe: no record is delivered again or skipped\n"
        "reset done\n"
    )
    assert content_after_end == '{"n":0}\n{"n":1}\n{"n":2}\n'
    assert rewind.stdout == (
        'sink pipe/archive: offsets {"pipe": 3} -> {"pipe": 1}\n'
        f'output: kept. The sink resumes from its committed state {{"file": "{out}", '
        f'"size": 24, "tail": "{tail}"}} (a file sink appends after it); nothing it wrote is '
        "removed.\n"
        "  pipe: 2 record(s) at offsets 1..2 are delivered again, after the existing output\n"
        "reset done\n"
    )
    assert after_rewind.returncode == 0, after_rewind.stderr
    assert (tmp_path / "out.jsonl").read_text() == ('{"n":0}\n{"n":1}\n{"n":2}\n{"n":1}\n{"n":2}\n')


def test_offsets_reset_of_a_sink_forward_says_what_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"n":0}\n{"n":1}\n')
    p = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: pipe
            source: {connector: file, config: {path: in.jsonl}}
          - name: reader
            sinks:
              - {name: archive, connector: file, topics: [pipe], config: {path: out.jsonl}}
        """,
    )
    assert mc(tmp_path, "run", str(p)).returncode == 0  # the sink commits its state at start
    reset = mc(
        tmp_path, "offsets", "reset", str(p), "reader", "--sink", "archive", "--to", "0", "--yes"
    )
    forward = mc(
        tmp_path, "offsets", "reset", str(p), "reader", "--sink", "archive", "--to", "end", "--yes"
    )
    shown = mc(tmp_path, "offsets", "show", str(p))

    assert reset.returncode == forward.returncode == 0
    assert forward.stdout.splitlines()[0] == (
        'sink reader/archive: offsets {"pipe": 0} -> {"pipe": 2}'
    )
    assert forward.stdout.splitlines()[2] == (
        "  pipe: 2 record(s) at offsets 0..1 are skipped (never delivered to this sink)"
    )
    assert shown.stdout.splitlines()[-1] == (
        f'  state: {{"file": "{tmp_path / "out.jsonl"}", "size": 16, '
        f'"tail": "{_fingerprint(OUT_16)}"}}'
    )


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


def test_a_first_run_killed_before_its_first_commit_restarts_without_refusing(
    tmp_path: Path,
) -> None:
    """The sink's state is committed as soon as it opens: what a killed first run left in
    the file is the sink's own, truncated on the next start (not an unrelated file)."""
    import os
    import signal
    import time

    (tmp_path / "in.jsonl").write_text("")
    p = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: pipe
            source: {connector: file, config: {path: in.jsonl, follow: true}}
            sinks:
              - {connector: file, config: {path: out.jsonl}}
        """,
    )
    command = [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state")]
    first = subprocess.Popen([*command, "run", str(p)], cwd=tmp_path, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (tmp_path / "out.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    (tmp_path / "out.jsonl").write_text('"written but never committed"\n')
    (tmp_path / "in.jsonl").write_text('{"n":0}\n')
    second = subprocess.Popen([*command, "run", str(p)], cwd=tmp_path, stderr=subprocess.PIPE)
    while (tmp_path / "out.jsonl").read_text() != '{"n":0}\n' and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(second.pid, signal.SIGTERM)
    _, err = second.communicate(timeout=60)

    assert second.returncode == 0, err.decode()
    assert (tmp_path / "out.jsonl").read_text() == '{"n":0}\n'


def test_run_refuses_a_file_sink_over_an_unrelated_file_and_keeps_it(tmp_path: Path) -> None:
    """Issue 19 item 6, through `meshconnect run`."""
    (tmp_path / "in.jsonl").write_text('{"n":0}\n')
    (tmp_path / "out.jsonl").write_text("precious\n")
    p = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: pipe
            source: {connector: file, config: {path: in.jsonl}}
            sinks:
              - {connector: file, config: {path: out.jsonl}}
        """,
    )

    run = mc(tmp_path, "run", str(p))

    assert run.returncode == 1
    assert run.stderr.splitlines()[-1].endswith(
        f"run failed: sink pipe/file: ConfigError: file sink: {tmp_path / 'out.jsonl'} (9 bytes) "
        "exists and this sink has no committed state, so it did not write it; refusing to touch "
        "it. Move it away, point 'path' at another file, or set 'if_exists: append' (keep it and "
        "append after it) or 'if_exists: replace' (discard its content)"
    )
    assert (tmp_path / "out.jsonl").read_text() == "precious\n"


def test_topics_tail_of_a_missing_topic_is_an_error_naming_it(tmp_path: Path, quick: Path) -> None:
    assert mc(tmp_path, "run", str(quick), env={"SALT": "x"}).returncode == 0

    tail = mc(tmp_path, "topics", "tail", "NOSUCH")

    assert tail.returncode == 1
    assert tail.stdout == ""
    assert tail.stderr == (
        f"Error: no topic 'NOSUCH' in sqlite:///{tmp_path / 'state' / 'mesh.db'} (topics: quick)\n"
    )


def test_topics_tail_n_with_from_beginning_prints_the_first_n(tmp_path: Path, quick: Path) -> None:
    assert mc(tmp_path, "run", str(quick), env={"SALT": "x"}).returncode == 0

    first = mc(tmp_path, "topics", "tail", "quick", "-n", "1", "--from-beginning")
    two = mc(tmp_path, "topics", "tail", "quick", "--from-beginning", "-n", "2")
    everything = mc(tmp_path, "topics", "tail", "quick", "--from-beginning")
    last = mc(tmp_path, "topics", "tail", "quick", "-n", "1")

    offsets = [
        [json.loads(line)["id"].rsplit("-", 1)[1] for line in r.stdout.splitlines()]
        for r in (first, two, everything, last)
    ]
    assert offsets == [["0"], ["0", "9"], ["0", "9", "18", "27", "36"], ["36"]]


def test_schema_of_a_connector_that_is_source_and_sink_asks_for_the_kind(tmp_path: Path) -> None:
    both = mc(tmp_path, "schema", "--connector", "file")
    sink = mc(tmp_path, "schema", "--connector", "file", "--kind", "sink")

    assert both.returncode == 1
    assert both.stderr == (
        "Error: connector 'file' is both a sink and a source: add --kind sink or --kind source\n"
    )
    assert json.loads(sink.stdout)["title"] == "FileSinkConfig"
