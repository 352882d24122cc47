"""The acceptance pipeline: file -> filter -> mask -> insert_field -> file sink, through the CLI
and the embedded SQLite store, over 100,000 records; a second run adds nothing."""

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
      config: {path: in/orders.jsonl, format: json, follow: false}
    transforms:
      - type: filter
        where: "data.total >= 10"
      - type: mask
        fields: [data.email]
      - type: insert_field
        field: data.region
        value: eu
        when: "data.country == 'DE'"
    topic: orders
    sinks:
      - name: archive
        connector: file
        config: {path: out/orders.jsonl, format: json}
"""

N = 100_000
COUNTRIES = ["DE", "FR", "NL", "US"]


def order(i: int) -> dict[str, object]:
    return {
        "id": i,
        "email": f"user{i}@example.com",
        "country": COUNTRIES[i % 4],
        "total": (i * 7919) % 250 / 2,
    }


def expected() -> list[dict[str, object]]:
    out = []
    for i in range(N):
        data = order(i)
        if not data["total"] >= 10:  # type: ignore[operator]
            continue
        data["email"] = "****"
        if data["country"] == "DE":
            data["region"] = "eu"
        out.append(data)
    return out


def run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "meshconnect",
            "--state",
            str(tmp_path / "state"),
            "run",
            str(tmp_path / "p.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_100k_records_through_three_transforms_then_a_rerun_adds_nothing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    with (tmp_path / "in" / "orders.jsonl").open("w") as f:
        for i in range(N):
            f.write(json.dumps(order(i)) + "\n")
    (tmp_path / "p.yaml").write_text(PIPELINE)
    out = tmp_path / "out" / "orders.jsonl"

    first = run(tmp_path)
    after_first = out.read_bytes()
    second = run(tmp_path)

    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    assert [json.loads(line) for line in after_first.splitlines()] == expected()
    assert out.read_bytes() == after_first
