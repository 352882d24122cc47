"""Tombstones, the end of 9999 and the record's topic through a real ``meshconnect run``
(issue 20): under the default ``tolerance: none`` one tombstone used to stop the connector."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PIPELINE = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false}
    transforms:
      - {type: cast, fields: {data.qty: int}}
      - {type: timestamp_convert, fields: [data.ts], from: epoch_ms, to: iso_ms}
      - {type: replace_field, rename: {data.a: data.b, data.b: data.a}}
      - {type: set_key, fields: [data.id]}
      - {type: route, topic: "orders.eu"}
    topic: orders.other
    sinks:
      - name: out
        connector: file
        topics: ["orders.*"]
        config: {path: out.jsonl}
        transforms:
          - {type: insert_field, field: data.topic, from: topic}
"""


def test_a_tombstone_passes_a_run_with_the_default_tolerance(tmp_path: Path) -> None:
    lines = [
        '{"id": 1, "ts": 1700000000123, "qty": "3", "a": 1, "b": 2}',
        "null",
        '{"id": 2, "ts": 253402300799999, "qty": "+4"}',
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "p.yaml").write_text(PIPELINE)

    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", "state", "run", "p.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (done.returncode, written) == (
        0,
        [
            {
                "id": 1,
                "ts": "2023-11-14T22:13:20.123Z",
                "qty": 3,
                "a": 2,
                "b": 1,
                "topic": "orders.eu",
            },
            None,
            {"id": 2, "ts": "9999-12-31T23:59:59.999Z", "qty": 4, "topic": "orders.eu"},
        ],
    ), done.stderr
