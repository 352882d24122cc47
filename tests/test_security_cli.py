"""Untrusted records and configs against the real command line (issue 19 items 1-5, 7-9).

Every ``meshconnect`` here is a subprocess under a hard timeout and an address-space limit set
in the test itself (``preexec_fn``): a payload that hangs or exhausts the worker fails the test
instead of the machine. Each test states its input, runs, and checks the exact outcome.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Hard limits of every meshconnect process started here.
TIMEOUT = 90
MEMORY = 2 * 1024**3  # address space: Python, RE2, SQLite and the threads fit well below

SECRET = "Hunter2-Zebra-8812"


def _limits(umask: int | None = None) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
        if umask is not None:
            os.umask(umask)

    return apply


def mc(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    umask: int | None = None,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``meshconnect --state tmp/state ARGS`` under the limits; its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        preexec_fn=_limits(umask),
        check=False,
    )


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_worker_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way must not leave its worker running (it would go on polling
    its files and holding its state for the rest of the session)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def start(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshconnect", "--state", str(tmp_path / "state"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        preexec_fn=_limits(),
    )
    _STARTED.append(proc)
    return proc


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def lines(tmp_path: Path, name: str, rows: list[Any]) -> None:
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def pipeline(where: str, *, extra: str = "", dlq: bool = True) -> str:
    errors = "errors: {tolerance: all, dead_letter_topic: dlq}" if dlq else ""
    return f"""
        {extra}
        pipelines:
          - name: p
            source:
              connector: file
              config: {{path: in.jsonl}}
              {errors}
            transforms:
              - {{type: filter, where: "{where}"}}
            sinks:
              - {{connector: file, config: {{path: out.jsonl}}}}
        """


def out(tmp_path: Path) -> list[Any]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    tail = mc(tmp_path, "topics", "tail", "dlq", "--from-beginning")
    assert tail.returncode == 0, tail.stderr
    return [json.loads(line) for line in tail.stdout.splitlines()]


# -- item 1 -------------------------------------------------------------------------------------


def test_a_catastrophic_regex_filters_at_once(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"s": "a" * 34 + "!"}, {"s": "a" * 34}, {"s": "a" * 100_000}])
    path = write(tmp_path, "p.yaml", pipeline("matches(data.s, '(a+)+$')", dlq=False))

    run = mc(tmp_path, "run", str(path), timeout=60)

    assert run.returncode == 0, run.stderr
    assert out(tmp_path) == [{"s": "a" * 34}, {"s": "a" * 100_000}]


def test_a_pattern_from_the_record_needs_the_files_permission(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"s": "a" * 34 + "!", "p": "(a+)+$"}, {"s": "ab", "p": "b$"}])
    refused = write(tmp_path, "p.yaml", pipeline("matches(data.s, data.p)"))
    allowed = write(
        tmp_path,
        "q.yaml",
        pipeline("matches(data.s, data.p)", extra="expressions: {record_patterns: true}"),
    )

    validate = mc(tmp_path, "validate", str(refused))
    run = mc(tmp_path, "run", str(allowed), timeout=60)

    assert validate.returncode == 1
    assert validate.stderr.splitlines()[0] == (
        f"{refused}:10:48: pipelines[0].transforms[0].where: matches(): the regular expression "
        "must be a constant string; a pattern taken from the record needs 'expressions: "
        "{record_patterns: true}' at the top of the pipeline file (see docs/security.md)"
    )
    assert run.returncode == 0, run.stderr
    assert out(tmp_path) == [{"s": "ab", "p": "b$"}]


# -- items 2 and 3 ------------------------------------------------------------------------------


def test_unbounded_arithmetic_and_sizes_are_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    lines(
        tmp_path,
        "in.jsonl",
        [
            {"x": 2.5, "n": -1_000_000_000, "k": 1},
            {"x": 2.5, "n": 0, "k": 2000},
            {"x": 2.5, "n": 0, "k": 1},
        ],
    )
    where = "round(data.x, data.n) >= 0 and len(join(['x' * 100000] * data.k)) > 0"
    path = write(tmp_path, "p.yaml", pipeline(where))

    run = mc(tmp_path, "run", str(path), timeout=60)

    assert run.returncode == 0, run.stderr
    assert out(tmp_path) == [{"x": 2.5, "n": 0, "k": 1}]
    messages = [d["errormessage"] for d in dead_letters(tmp_path)]
    assert messages == [
        f"where: condition {where!r} failed: round() digits must be between -1,000 and 1,000, "
        "not -1,000,000,000",
        f"where: condition {where!r} failed: '*' would build a value larger than the expression "
        "budget of 1,000,000 (200,004,000)",
    ]


# -- item 4 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [6, 9])
def test_a_yaml_alias_bomb_is_refused_at_once_with_its_location(
    tmp_path: Path, levels: int
) -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for previous, name in zip("abcdefghij", "bcdefghij"[:levels], strict=False):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    rows.append("pipelines: []")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(rows) + "\n")

    # Expanded, 9 levels are 9**10 nodes: the bound is for that hang, not a timing check.
    validate = mc(tmp_path, "validate", str(path), timeout=60)

    assert validate.returncode == 1
    first = validate.stderr.splitlines()[0]
    assert first.startswith(f"{path}:6:4: invalid YAML: the file expands to ")
    assert first.endswith(
        "values through aliases, more than the 100,000 allowed (an alias bomb?); this "
        "collection repeats its aliases"
    )


@pytest.mark.parametrize(
    ("text", "first"),
    [
        (
            "pipelines: []\nx: " + "9" * 200_000 + "\n",
            "2:4: invalid YAML: this value cannot be read as an integer: it has more than "
            "4,300 digits",
        ),
        (
            "pipelines: []\nx: " + ":".join(["59"] * 2500) + "\n",  # YAML 1.1 base 60
            "2:4: invalid YAML: this value cannot be read as an integer: it has more than "
            "4,300 digits",
        ),
        (
            "pipelines: []\nx: 2001-02-30\n",
            "2:4: invalid YAML: this value cannot be read as a timestamp: day is out of range "
            "for month",
        ),
        (
            "pipelines: []\n2001-02-30: x\n",
            "2:1: invalid YAML: this value cannot be read as a timestamp: day is out of range "
            "for month",
        ),
        (
            "pipelines: []\nx: !!timestamp 9999999-12-14\n",
            "2:4: invalid YAML: this value cannot be read as a timestamp: it is not written as one",
        ),
        (
            "pipelines: []\n" + "".join(f"k{i}: {i}\n" for i in range(60_000)),
            "1:1: invalid YAML: the file holds 120,003 values, more than the 100,000 allowed in "
            "one pipeline file",
        ),
    ],
    ids=["huge-int", "base-60-int", "bad-date", "bad-date-key", "bad-timestamp-tag", "many-values"],
)
def test_a_yaml_value_that_cannot_be_built_is_a_located_problem(
    tmp_path: Path, text: str, first: str
) -> None:
    """Siblings of the alias bomb: values PyYAML fails to build gave a traceback (exit 1,
    no location); a file of many plain values was called an alias bomb."""
    path = tmp_path / "p.yaml"
    path.write_text(text)

    validate = mc(tmp_path, "validate", str(path), timeout=60)

    assert validate.returncode == 1
    assert validate.stderr.splitlines()[0] == f"{path}:{first}"
    assert "Traceback" not in validate.stderr


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"n": 1}])
    path = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source:
              connector: file
              config: {path: in.jsonl}
              errors: &errors {tolerance: all, dead_letter_topic: dlq}
            sinks: [{connector: file, config: {path: out.jsonl}, errors: *errors}]
        """,
    )

    run = mc(tmp_path, "run", str(path))

    assert run.returncode == 0, run.stderr
    assert out(tmp_path) == [{"n": 1}]


# -- item 5 -------------------------------------------------------------------------------------


def _secret_pipeline(tmp_path: Path, name: str, out: str) -> Path:
    where = "int(data.s) == 1 or data.x == '${env:SECRET}' or int(data.s) == int('${env:SECRET}')"
    return write(
        tmp_path,
        name,
        f"""
        pipelines:
          - name: p
            source:
              connector: file
              config: {{path: in.jsonl}}
              errors: {{tolerance: all, dead_letter_topic: dlq}}
            transforms:
              - {{type: filter, where: "{where}"}}
            sinks:
              - connector: file
                config: {{path: "{out}"}}
        """,
    )


def test_a_secret_shows_nowhere_in_outputs_logs_or_the_store(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"s": "abc", "x": 1}, {"s": "1", "x": 2}])
    path = _secret_pipeline(tmp_path, "p.yaml", "out.jsonl")
    env = {"SECRET": SECRET}

    results = [
        mc(tmp_path, "validate", str(path), env=env),
        mc(tmp_path, "--log-level", "debug", "run", str(path), env=env),
        mc(tmp_path, "topics", "tail", "dlq", "--from-beginning", env=env),
        mc(tmp_path, "topics", "list", env=env),
        mc(tmp_path, "offsets", "show", str(path), env=env),
    ]

    assert [r.returncode for r in results] == [0, 0, 0, 0, 0], [r.stderr for r in results]
    dead = json.loads(results[2].stdout.splitlines()[0])
    assert dead["errormessage"] == (
        "where: condition \"int(data.s) == 1 or data.x == '**********' or int(data.s) == "
        "int('**********')\" failed: 'abc' is not a number (digits 0-9 with an optional sign, "
        "decimal point and exponent, e.g. -12.5e3)"
    )
    assert out(tmp_path) == [{"s": "1", "x": 2}]
    for result in results:
        assert SECRET not in result.stdout + result.stderr
    for file in (tmp_path / "state").rglob("*"):
        assert SECRET.encode() not in file.read_bytes(), file


def test_a_secret_in_a_sink_path_is_masked_in_its_warnings(tmp_path: Path) -> None:
    """The file sink keeps the path it writes in its committed state (the file's own name
    holds the secret there too); every message that names the path masks it."""
    lines(tmp_path, "in.jsonl", [{"s": "1", "x": 2}])
    first = _secret_pipeline(tmp_path, "p.yaml", "out-${env:SECRET}.jsonl")
    # The same sink at another path: the worker warns, naming both paths.
    second = _secret_pipeline(tmp_path, "q.yaml", "out2-${env:SECRET}.jsonl")
    env = {"SECRET": SECRET}

    results = [
        mc(tmp_path, "validate", str(first), env=env),
        mc(tmp_path, "run", str(first), env=env),
        mc(tmp_path, "--log-format", "json", "--log-level", "debug", "run", str(second), env=env),
        mc(tmp_path, "offsets", "show", "--json", str(second), env=env),
    ]

    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr for r in results]
    for result in results:
        assert SECRET not in result.stdout + result.stderr
    warning = next(line for line in results[2].stderr.splitlines() if "last commit" in line)
    assert json.loads(warning)["message"] == (
        f"file sink {tmp_path}/out2-**********.jsonl: the last commit was for "
        f"{tmp_path}/out-**********.jsonl, which is kept as it is; the new path has no "
        "committed state"
    )


@pytest.mark.parametrize(
    "secret", ["Hun'ter2-Zebra-8812", "Hunter2\\Zebra-8812", "Hünter2\tZebra-8812"]
)
def test_a_secret_that_messages_escape_is_masked_in_its_escaped_forms(
    tmp_path: Path, secret: str
) -> None:
    """A message shows a condition by ``repr`` and a dead letter or ``--json`` by JSON: a
    secret holding a quote, a backslash, a tab or a non-ASCII letter reaches them escaped
    (``Hun\\'ter2``), and a parser that quotes where it stopped shows a piece of it
    (``found '-Zebra-8812'``); every such form is masked too."""
    lines(tmp_path, "in.jsonl", [{"s": "abc", "x": 1}, {"s": "1", "x": 2}])
    path = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source:
              connector: file
              config: {path: in.jsonl}
              errors: {tolerance: all, dead_letter_topic: dlq}
            transforms:
              - {type: filter, where: 'int(data.s) == 1 or data.x == "${env:SECRET}"'}
            sinks:
              - {connector: file, config: {path: 'out-${env:SECRET}.jsonl'}}
        """,
    )
    bad = write(
        tmp_path,
        "bad.yaml",
        """
        pipelines:
          - name: q
            source: {connector: file, config: {path: in.jsonl}}
            transforms:
              - {type: insert_field, field: 'x${env:SECRET}', value: 1}
        """,
    )
    env = {"SECRET": secret}

    results = [
        mc(tmp_path, "validate", str(path), env=env),
        mc(tmp_path, "validate", str(bad), env=env),
        mc(tmp_path, "--log-level", "debug", "run", str(path), env=env),
        mc(tmp_path, "topics", "tail", "dlq", "--from-beginning", env=env),
        mc(tmp_path, "offsets", "show", str(path), env=env),
        mc(tmp_path, "offsets", "show", "--json", str(path), env=env),
    ]

    assert [r.returncode for r in results] == [0, 1, 0, 0, 0, 0], [r.stderr for r in results]
    assert results[1].stderr.splitlines()[0][-18:] in ("found '**********'", 'found "**********"')
    dead = json.loads(results[3].stdout)
    assert dead["errormessage"].startswith(
        "where: condition 'int(data.s) == 1 or data.x == \"**********\"' failed: 'abc' is not"
    )
    forms = {
        secret,
        repr(secret)[1:-1],
        repr(secret + "'\"")[1:-4],
        json.dumps(secret)[1:-1],
        "Zebra-8812",
    }
    for result in results:
        for form in forms:
            assert form not in result.stdout + result.stderr, (form, result.args)
    # The store keeps the sink's path in its committed state (a file named with the secret:
    # the pipeline's choice); the dead letter it holds is what topics tail printed above.


# -- item 6 -------------------------------------------------------------------------------------


def test_a_file_sink_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    """An existing, unrelated file at a file sink's path with no committed state: the run
    refuses to start the sink, naming the file and the way to allow it; the file is intact.
    The same after a commit, when another file was put where the sink's own was."""
    lines(tmp_path, "in.jsonl", [{"n": 1}])
    (tmp_path / "out.jsonl").write_text("precious, not the sink's\n")
    path = write(tmp_path, "p.yaml", pipeline("data.n > 0", dlq=False))

    refused = mc(tmp_path, "run", str(path))

    assert refused.returncode == 1
    assert (
        f"sink p/file FAILED: ConfigError: file sink: {tmp_path / 'out.jsonl'} (25 bytes) "
        "exists and this sink has no committed state, so it did not write it; refusing to "
        "touch it. Move it away, point 'path' at another file, or set 'if_exists: append' "
        "(keep it and append after it) or 'if_exists: replace' (discard its content)"
    ) in refused.stderr
    assert (tmp_path / "out.jsonl").read_text() == "precious, not the sink's\n"

    (tmp_path / "out.jsonl").rename(tmp_path / "kept.jsonl")
    assert mc(tmp_path, "run", str(path)).returncode == 0  # the sink's own file now
    (tmp_path / "out.jsonl").rename(tmp_path / "moved.jsonl")
    (tmp_path / "out.jsonl").write_text("another precious file, longer than the sink's\n")
    lines(tmp_path, "in.jsonl", [{"n": 1}, {"n": 2}])

    replaced = mc(tmp_path, "run", str(path))

    assert replaced.returncode == 1
    assert "is not the file this sink committed" in replaced.stderr
    assert (tmp_path / "out.jsonl").read_text() == (
        "another precious file, longer than the sink's\n"
    )


# -- item 7 -------------------------------------------------------------------------------------

HOSTILE_NAME = "t\u001b]0;pwned\u0007\u202e\u009b2J"


def test_cli_tables_and_tail_escape_non_printable_characters(tmp_path: Path) -> None:
    """The topic-name rule keeps control characters out of routed names; a store written by
    anything else, and record contents, must still never reach the terminal raw."""
    import asyncio

    from meshconnect.mesh.sqlite import SqliteStore
    from meshconnect.records import Record

    async def seed() -> None:
        store = SqliteStore(f"sqlite:///{tmp_path / 'state' / 'mesh.db'}")
        await store.open()
        record = Record({"esc": HOSTILE_NAME})
        record.topic = HOSTILE_NAME
        await store.append([record])
        await store.close()

    asyncio.run(seed())

    listed = mc(tmp_path, "topics", "list")
    tail = mc(tmp_path, "topics", "tail", HOSTILE_NAME, "--from-beginning")

    assert listed.returncode == 0 and tail.returncode == 0, listed.stderr + tail.stderr
    assert listed.stdout.splitlines()[1].split()[0] == "t\\x1b]0;pwned\\x07\\u202e\\x9b2J"
    assert tail.stdout.isprintable() is False  # only the line's newline
    assert tail.stdout.rstrip("\n").isprintable()
    assert json.loads(tail.stdout)["data"] == {"esc": HOSTILE_NAME}  # still exact JSON


def test_a_routed_topic_with_escape_bytes_is_dead_lettered_and_never_created(
    tmp_path: Path,
) -> None:
    lines(tmp_path, "in.jsonl", [{"esc": "\u001b]0;pwned\u0007"}, {"esc": "ok"}])
    path = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source:
              connector: file
              config: {path: in.jsonl}
              errors: {tolerance: all, dead_letter_topic: dlq}
            transforms:
              - {type: route, topic: "t{data.esc}"}
        """,
    )

    run = mc(tmp_path, "run", str(path))
    listed = mc(tmp_path, "topics", "list")

    assert run.returncode == 0, run.stderr
    assert [row.split()[0] for row in listed.stdout.splitlines()[1:]] == ["dlq", "tok"]
    assert listed.stdout.isascii() and "\x1b" not in listed.stdout
    (dead,) = dead_letters(tmp_path)
    assert dead["errormessage"].startswith(
        "topic 't\\x1b]0;pwned\\x07' (set by a transform): a topic name may not contain the "
        "control or space character U+001B"
    )


def test_validate_escapes_what_it_echoes_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        'pipelines:\n  - name: p\n    "x\\e]0;pwned\\a": 1\n'
        "    source: {connector: file, config: {path: in.jsonl}}\n"
    )

    validate = mc(tmp_path, "validate", str(path))

    assert validate.returncode == 1
    assert "\x1b" not in validate.stderr and "\x07" not in validate.stderr
    assert "'x\\x1b]0;pwned\\x07'" in validate.stderr


# -- item 8 -------------------------------------------------------------------------------------


def test_the_state_dir_and_store_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"n": i} for i in range(3)])
    path = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source: {connector: file, config: {path: in.jsonl, follow: true}}
            sinks: [{connector: file, config: {path: out.jsonl}}]
        """,
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "meshconnect", "--state", "state", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limits(umask=0),
    )
    try:
        modes = _wait_for(
            lambda: (
                _modes(tmp_path / "state")
                if (tmp_path / "out.jsonl").exists()
                and len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
                else None
            )
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=TIMEOUT)

    assert modes == {"": 0o700, "mesh.db": 0o600, "mesh.db-wal": 0o600, "mesh.db-shm": 0o600}
    assert worker.returncode == 0


def _modes(state: Path) -> dict[str, int]:
    found = {"": stat.S_IMODE(state.stat().st_mode)}
    found.update({p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()})
    return found


def test_an_existing_store_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sqlite3.connect(state / "mesh.db").close()
    os.chmod(state / "mesh.db", 0o666)

    listed = mc(tmp_path, "topics", "list")

    assert listed.returncode == 0, listed.stderr
    assert stat.S_IMODE((state / "mesh.db").stat().st_mode) == 0o600


# -- item 9 -------------------------------------------------------------------------------------


def _wait_for(probe: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


FOLLOWING = """
    pipelines:
      - name: p
        source: {connector: file, config: {path: in.jsonl, follow: true}}
        sinks: [{connector: file, config: {path: out.jsonl}}]
    """


def test_a_second_worker_on_the_same_pipeline_and_store_refuses(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"n": i} for i in range(5)])
    path = write(tmp_path, "p.yaml", FOLLOWING)
    first = start(tmp_path, "run", str(path))
    try:
        _wait_for(
            lambda: (
                (tmp_path / "out.jsonl").exists()
                and len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
            )
        )
        second = mc(tmp_path, "run", str(path))
        reset = mc(tmp_path, "offsets", "reset", str(path), "p", "--yes")
        with (tmp_path / "in.jsonl").open("a") as f:
            f.write(json.dumps({"n": 5}) + "\n")
        _wait_for(lambda: len((tmp_path / "out.jsonl").read_text().splitlines()) == 6)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=TIMEOUT)

    pid = first.pid
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1].startswith(
        "error: another worker is running these pipelines on the store "
        f"sqlite:///{tmp_path / 'state' / 'mesh.db'}: group p/file, source p/file owned by "
        f"worker pid {pid} on host "
    )
    assert reset.returncode == 1
    assert reset.stderr.splitlines()[-1].startswith(
        f"Error: pipeline 'p' is running (worker pid {pid} on host "
    )
    assert reset.stderr.splitlines()[-1].endswith(
        "owns group p/file, source p/file); stop it before resetting offsets"
    )
    assert first.returncode == 0
    assert out(tmp_path) == [{"n": i} for i in range(6)]  # each record once


def test_two_workers_started_together_run_the_pipeline_once(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"n": i} for i in range(200)])
    path = write(tmp_path, "p.yaml", FOLLOWING)

    workers = [start(tmp_path, "run", str(path)) for _ in range(2)]
    loser = _wait_for(lambda: next((w for w in workers if w.poll() is not None), None))
    winner = next(w for w in workers if w is not loser)
    _wait_for(
        lambda: (
            (tmp_path / "out.jsonl").exists()  # the winner may not have made it yet
            and len((tmp_path / "out.jsonl").read_text().splitlines()) >= 200
        )
    )
    winner.send_signal(signal.SIGTERM)
    winner.communicate(timeout=TIMEOUT)
    _, loser_err = loser.communicate(timeout=TIMEOUT)

    assert (winner.returncode, loser.returncode) == (0, 1)
    assert "error: another worker is running these pipelines" in loser_err
    assert out(tmp_path) == [{"n": i} for i in range(200)]
    topics = json.loads(mc(tmp_path, "topics", "list", "--json").stdout)
    assert topics[0]["records"] == 200  # stored once


def test_a_killed_workers_lease_is_taken_over_at_once_on_the_same_host(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"n": i} for i in range(3)])
    path = write(tmp_path, "p.yaml", FOLLOWING)
    first = start(tmp_path, "run", str(path))
    _wait_for(
        lambda: (
            (tmp_path / "out.jsonl").exists()
            and len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
        )
    )
    first.kill()
    first.communicate(timeout=TIMEOUT)

    second = start(tmp_path, "run", str(path))
    try:
        with (tmp_path / "in.jsonl").open("a") as f:
            f.write(json.dumps({"n": 3}) + "\n")
        _wait_for(lambda: len((tmp_path / "out.jsonl").read_text().splitlines()) == 4, 30)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=TIMEOUT)

    assert second.returncode == 0, err
    assert f"taking over from worker pid {first.pid} on host" in err
    assert out(tmp_path) == [{"n": i} for i in range(4)]


# -- issue 20: RegexRouter-style routing ---------------------------------------------------------


def test_the_regex_router_example_passes_its_config_tests() -> None:
    from click.testing import CliRunner

    from meshconnect.cli import cli

    example = Path(__file__).resolve().parent.parent / "examples" / "regex_router_test.yaml"
    result = CliRunner().invoke(cli, ["test", str(example)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "3 passed, 0 failed"


def test_a_regex_routed_run_stores_each_record_in_its_topic(tmp_path: Path) -> None:
    lines(tmp_path, "in.jsonl", [{"t": "shop_orders"}, {"t": "billing_invoices"}, {"t": "x"}])
    path = write(
        tmp_path,
        "p.yaml",
        """
        pipelines:
          - name: p
            source: {connector: file, config: {path: in.jsonl}}
            transforms:
              - type: route
                topic: '{replace_regex(data.t, "^([a-z]+)_([a-z]+)$", "cdc.$1.$2")}'
        """,
    )

    run = mc(tmp_path, "run", str(path))
    listed = mc(tmp_path, "topics", "list", "--json")

    assert run.returncode == 0, run.stderr
    assert sorted((t["topic"], t["records"]) for t in json.loads(listed.stdout)) == [
        ("cdc.billing.invoices", 1),
        ("cdc.shop.orders", 1),
        ("x", 1),
    ]
