"""Issue 3's error-handling acceptance, with the real ``meshconnect run`` in a subprocess.

A file source feeds a sink that rejects records whose ``data.bad`` is true (the ``memory`` test
sink, loaded as a local plugin through ``plugins.toml`` and keeping its output in a JSON-lines
file). With ``tolerance: all`` every good record arrives and every bad one is in the DLQ with its
context; with ``tolerance: none`` the sink is FAILED with the reason and, once fixed, resumes
from its committed offset losing nothing; a sink failing transiently for 3 s gets everything
through, and the logs show the backoff.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from conftest import meshconnect, run_cli
from meshconnect.testing import PLUGIN_SOURCE

TOTAL = 300


def is_bad(n: int) -> bool:
    """Every seventh record from offset 101 on."""
    return n % 7 == 3 and n > 100


def setup(tmp_path: Path, sink: str, errors: str) -> Path:
    """A pipeline file ``p.yaml`` reading ``in.jsonl`` into topic ``things``, with the memory
    sink given; the plugin policy that loads the memory connector."""
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"n": n, "bad": is_bad(n)}) + "\n" for n in range(TOTAL))
    )
    (tmp_path / "memory_plugin.py").write_text(PLUGIN_SOURCE)
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["memory_plugin.py"]\n')
    path = tmp_path / "p.yaml"
    write_pipeline(path, sink, errors)
    return path


def write_pipeline(path: Path, sink: str, errors: str) -> None:
    path.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source:
                  connector: file
                  config: {path: in.jsonl, format: json, follow: false, batch_size: 40}
                topic: things
                sinks:
                  - name: out
                    connector: memory
                    batch_size: 25
                    commit_interval: 0
                    config: {name: out, path: out.jsonl, %s}
                    errors: %s
            """
        )
        % (sink, errors)
    )


def cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(
        tmp_path / "state",
        "--plugins",
        str(tmp_path / "plugins.toml"),
        *args,
        timeout=timeout,
        cwd=tmp_path,
    )


def delivered(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["data"] for line in path.read_text().splitlines()]


def dead_letters(tmp_path: Path, topic: str = "dlq.things") -> list[dict[str, Any]]:
    result = cli(tmp_path, "topics", "tail", topic, "--from-beginning")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_tolerance_all_delivers_the_good_and_dead_letters_the_bad_with_context(
    tmp_path: Path,
) -> None:
    config = setup(tmp_path, "reject_when: bad", "{tolerance: all, dead_letter_topic: dlq.things}")
    result = cli(tmp_path, "run", str(config))
    assert result.returncode == 0, result.stderr
    assert delivered(tmp_path) == [{"n": n, "bad": False} for n in range(TOTAL) if not is_bad(n)]
    dead = dead_letters(tmp_path)
    assert [d["data"] for d in dead] == [{"n": n, "bad": True} for n in range(TOTAL) if is_bad(n)]
    # Each dead letter names where it came from: its offset in `things` is its line number.
    assert [(d["errortopic"], d["erroroffset"]) for d in dead] == [
        ("things", n) for n in range(TOTAL) if is_bad(n)
    ]
    first = dead[0]
    assert first["errorstage"] == "sink"
    assert first["errorpipeline"] == "p"
    assert first["errorconnector"] == "out"
    assert first["errortype"] == "DataError"
    assert first["errormessage"] == "memory sink rejects records with 'bad'"
    assert first["errorattempts"] == 1
    assert first["errortime"]
    # The record itself is kept: id, source and type as the file source made them.
    assert first["source"].startswith("file://") and first["id"]
    # Nothing more: a re-run delivers and dead-letters nothing again.
    again = cli(tmp_path, "run", str(config))
    assert again.returncode == 0, again.stderr
    assert len(delivered(tmp_path)) + len(dead_letters(tmp_path)) == TOTAL


def test_tolerance_none_fails_the_sink_with_the_reason_and_a_fixed_one_resumes(
    tmp_path: Path,
) -> None:
    config = setup(tmp_path, "reject_when: bad", "{tolerance: none}")
    worker = subprocess.Popen(
        meshconnect(
            tmp_path / "state", "--plugins", str(tmp_path / "plugins.toml"), "run", str(config)
        ),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    failed = ""
    for line in worker.stderr:
        if "sink p/out FAILED" in line:
            failed = line
            break
    # The operator sees the failure, stops the worker ...
    worker.send_signal(signal.SIGTERM)
    rest = worker.communicate(timeout=60)[1]
    assert "memory sink rejects records with 'bad'" in failed, failed + rest
    assert "topic 'things' offset 101" in failed  # the first bad record
    assert "errors.tolerance: all" in failed  # and what to do about it
    # What was committed before the failure: the batches of 25 before the one with 101.
    assert delivered(tmp_path) == [{"n": n, "bad": False} for n in range(100)]
    # ... fixes the sink and runs again: it resumes from its committed offset.
    write_pipeline(config, "reject_when: nothing", "{tolerance: none}")
    result = cli(tmp_path, "run", str(config))
    assert result.returncode == 0, result.stderr
    assert delivered(tmp_path) == [{"n": n, "bad": is_bad(n)} for n in range(TOTAL)]
    assert "sink p/out started at {'things': 100}" in result.stderr


def test_a_sink_failing_for_3_seconds_gets_everything_through_with_backoff(
    tmp_path: Path,
) -> None:
    config = setup(
        tmp_path,
        "fail_for: 3.0",
        "{retry: {max_attempts: 40, initial_backoff: 50ms, max_backoff: 1s}}",
    )
    result = cli(tmp_path, "run", str(config))
    assert result.returncode == 0, result.stderr
    assert delivered(tmp_path) == [{"n": n, "bad": is_bad(n)} for n in range(TOTAL)]
    retries = re.findall(
        r"sink p/out write failed \(attempt (\d+) of 40\): RetriableError: "
        r"memory sink: simulated transient failure; retrying in (\d+\.\d+)s",
        result.stderr,
    )
    attempts = [int(a) for a, _ in retries]
    assert attempts[:3] == [1, 2, 3], result.stderr
    assert attempts == list(range(1, len(attempts) + 1))
    # Exponential backoff with equal jitter: wait k lies in [c/2, c], c = min(1s, 50ms * 2^(k-1)).
    for k, (_, delay) in enumerate(retries, start=1):
        ceiling = min(1.0, 0.05 * 2 ** (k - 1))
        assert ceiling / 2 - 0.001 <= float(delay) <= ceiling + 0.001
    assert "FAILED" not in result.stderr
