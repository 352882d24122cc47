"""Issue 9 items 1 and 2 through ``meshconnect run``: exact numbers from a JSON file through
transforms, the SQLite store and a JSON sink; deeply nested lines dead-lettered with their raw
text while the lines around them are delivered."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_support import mc


def meshconnect(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return mc(tmp_path, *args, timeout=300)


def tail(tmp_path: Path, topic: str) -> list[dict[str, Any]]:
    """The topic's records as ``topics tail`` prints them (another process: read from disk)."""
    done = meshconnect(tmp_path, "topics", "tail", topic, "--from-beginning", "-n", "1000")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def tail_lines(tmp_path: Path, topic: str) -> list[str]:
    done = meshconnect(tmp_path, "topics", "tail", topic, "--from-beginning", "-n", "1000")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# -- item 1: exact numbers --------------------------------------------------------------------

NUMBERS = [
    '{"v":123456789012345678901234567890}',
    '{"v":-123456789012345678901234567890}',
    '{"v":169299987.35345112}',
    '{"v":1.10}',
    '{"v":1e400}',
    '{"v":-0.0}',
    '{"v":1E-7}',
    '{"v":0.00000001}',
    '{"v":1.5E+300}',
    '{"v":18446744073709551616}',
    '{"v":[1.5,[2e-3,{"k":18446744073709551616,"d":0.10}]]}',
    '{"v":"169299987.35345112","w":9007199254740993}',
]
#: What the JSON sink writes: plain notation byte for byte; exponent forms (and plain numbers
#: below 1e-6) in Python's canonical decimal text, with the same digits and exponent.
WRITTEN = [
    *NUMBERS[:4],
    '{"v":1E+400}',
    '{"v":-0.0}',
    '{"v":1E-7}',
    '{"v":1E-8}',
    '{"v":1.5E+300}',
    '{"v":18446744073709551616}',
    '{"v":[1.5,[0.002,{"k":18446744073709551616,"d":0.10}]]}',
    NUMBERS[11],
]

PIPELINE = """
pipelines:
  - name: same
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false}
    sinks:
      - connector: file
        config: {path: same.jsonl, format: json}
  - name: exprs
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false}
      errors: {tolerance: all, dead_letter_topic: exprs.dlq}  # a list or text > 1e399
    transforms:
      - type: filter
        where: "data.v == 169299987.35345112 or data.v == 1.1 or data.v > 1e399"
      - type: insert_field
        field: data.plus
        template: "{data.v + 0.5}"
    sinks:
      - connector: file
        config: {path: exprs.jsonl, format: json}
  - name: cast
    source:
      connector: file
      config: {path: cast.jsonl, format: json, follow: false}
    transforms:
      - type: cast
        fields: {data.v: decimal}
    sinks:
      - connector: file
        config: {path: cast.jsonl.out, format: json}
  - name: keys
    source:
      connector: file
      config: {path: keys.jsonl, format: json, follow: false}
    transforms:
      - type: set_key
        fields: [data.id]
"""


def test_numbers_keep_every_digit_from_a_json_file_to_a_json_file(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("\n".join(NUMBERS) + "\n")
    (tmp_path / "cast.jsonl").write_text(
        '{"v":1.10}\n{"v":169299987.35345112}\n{"v":1e3}\n{"v":-0.0}\n{"v":1E-7}\n{"v":42}\n'
    )
    (tmp_path / "keys.jsonl").write_text(
        '{"id":123456789012345678901234567890}\n{"id":1.10}\n{"id":-0.0}\n'
    )
    (tmp_path / "p.yaml").write_text(PIPELINE)

    done = meshconnect(tmp_path, "run", "p.yaml")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "same.jsonl").read_text().splitlines() == WRITTEN
    assert (tmp_path / "exprs.jsonl").read_text().splitlines() == [
        '{"v":169299987.35345112,"plus":"169299987.85345112"}',
        '{"v":1.10,"plus":"1.60"}',
        '{"v":1E+400,"plus":"1' + "0" * 399 + '0.5"}',
    ]
    assert (tmp_path / "cast.jsonl.out").read_text().splitlines() == [
        '{"v":"1.10"}',
        '{"v":"169299987.35345112"}',
        '{"v":"1000"}',
        '{"v":"-0.0"}',
        '{"v":"0.0000001"}',
        '{"v":"42"}',
    ]
    # topics tail runs in another process: it reads the store's file, not a cache.
    assert [line.split('"data":')[1] for line in tail_lines(tmp_path, "same")] == [
        n + "}" for n in WRITTEN
    ]
    assert [r["partitionkey"] for r in tail(tmp_path, "keys")] == [
        "123456789012345678901234567890",
        "1.10",
        "-0.0",
    ]


# -- item 2: deep nesting ----------------------------------------------------------------------

TOLERANT = """
pipelines:
  - name: deep
    source:
      connector: file
      config: {{path: in.jsonl, format: {format}, follow: false}}
      errors: {{tolerance: all, dead_letter_topic: dlq}}
    transforms:
      - type: filter
        where: "data.a != 0"
    sinks:
      - connector: file
        config: {{path: out.jsonl, format: json}}
"""


def nested(levels: int, kind: str) -> str:
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize("levels", [129, 300, 1_000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_a_deeply_nested_line_is_dead_lettered_raw_and_the_others_delivered(
    tmp_path: Path, levels: int, kind: str
) -> None:
    bad = nested(levels, kind)
    (tmp_path / "in.jsonl").write_text(f'{{"a":1}}\n{bad}\n{{"a":2.50}}\n')
    (tmp_path / "p.yaml").write_text(TOLERANT.format(format="json"))

    done = meshconnect(tmp_path, "run", "p.yaml")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.jsonl").read_text() == '{"a":1}\n{"a":2.50}\n'
    (dead,) = tail(tmp_path, "dlq")
    assert dead["data"] == bad  # the raw line: valid JSON text, replayable once fixed
    assert dead["datacontenttype"] == "text/plain"
    assert dead["errorstage"] == "source"
    assert "nested deeper than 128 levels" in dead["errormessage"]
    assert "RecursionError" not in done.stderr


def test_nesting_up_to_the_limit_is_delivered(tmp_path: Path) -> None:
    ok = nested(127, "object")  # 127 objects inside the record's own: 128 levels
    (tmp_path / "in.jsonl").write_text(f'{{"a":{ok}}}\n')
    (tmp_path / "p.yaml").write_text(TOLERANT.format(format="json"))

    done = meshconnect(tmp_path, "run", "p.yaml")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.jsonl").read_text() == f'{{"a":{ok}}}\n'
    no_dead = meshconnect(tmp_path, "topics", "tail", "dlq", "--from-beginning")
    assert no_dead.returncode != 0 and "'dlq'" in no_dead.stderr  # nothing was dead-lettered


def test_a_deeply_nested_cloudevent_is_dead_lettered_raw(tmp_path: Path) -> None:
    good = '{"specversion":"1.0","id":"%s","source":"s","type":"t","data":{"a":%s}}'
    bad = good % ("2", nested(1_000, "array"))
    lines = [good % ("1", "1.10"), bad, good % ("3", "123456789012345678901234567890")]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "p.yaml").write_text(TOLERANT.format(format="cloudevents"))

    done = meshconnect(tmp_path, "run", "p.yaml")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.jsonl").read_text() == (
        '{"a":1.10}\n{"a":123456789012345678901234567890}\n'
    )
    (dead,) = tail(tmp_path, "dlq")
    assert dead["data"] == bad
