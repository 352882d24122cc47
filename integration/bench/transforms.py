"""Benchmark: what each built-in transform costs per record, and what a simple filter and a
6-transform chain cost a real pipeline, against the same pipeline without transforms, all
measured in this run.

    python integration/bench/transforms.py                 # 1,000,000 records per pipeline run
    python integration/bench/transforms.py --records 200000 --repeat 5
    python integration/bench/transforms.py --smoke         # tiny N, for CI

Two parts:

1. **Per transform**: each transform alone, as ``TransformChain.process`` over batches of 1,000
   records made the way the file source makes them (``orjson.loads`` of a JSON line into
   ``Record.fast``), with the garbage-collector settings ``meshconnect run`` uses. Record
   creation is outside the timing; the figure is the transform's own cost in µs per record
   (median of ``--repeat`` runs), plus the chain's loop.
2. **Pipeline**: ``meshconnect run`` in a fresh process, the real worker path
   (file source → pipeline transforms → SQLite mesh store → file sink), with no transforms,
   with a simple comparison ``filter``, and with a chain of 6 transforms. The filter keeps every
   record (``data.total >= 0``), so all three runs store and write the same number of records
   and the difference is the transforms' cost. Runs are interleaved; medians are shown, with the
   throughput relative to the run without transforms and the extra µs per record.

Targets (issue 3): a simple comparison filter costs ≤ 2 µs/record; the 6-transform chain keeps
≥ 60 % of the no-transform throughput.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

#: One configuration of every built-in transform (part 1), in YAML-like dicts.
PER_TRANSFORM: list[tuple[str, dict[str, Any]]] = [
    ("filter", {"where": "data.total >= 10"}),
    ("insert_field", {"field": "data.region", "value": "eu"}),
    ("insert_field", {"field": "data.label", "template": "{data.country}-{data.id}"}),
    ("replace_field", {"exclude": ["data.items"], "rename": {"data.total": "data.amount"}}),
    ("drop_fields", {"fields": ["data.items"]}),
    ("mask", {"fields": ["data.email"]}),
    ("mask", {"fields": ["data.email"], "mode": "hash", "salt": "pepper"}),
    ("mask", {"fields": ["data.email"], "mode": "encrypt", "key": "A" * 43 + "="}),
    ("cast", {"fields": {"data.total": "decimal"}}),
    ("cast", {"fields": {"data.id": "string"}}),
    ("flatten", {}),
    ("unflatten", {}),
    ("extract_field", {"field": "data.customer"}),
    ("hoist_field", {"field": "data.order"}),
    ("set_key", {"fields": ["data.customer.id"]}),
    ("set_attributes", {"attributes": {"subject": "orders/{data.id}"}}),
    ("timestamp_convert", {"fields": ["data.created"], "from": "epoch_ms", "to": "iso"}),
    ("route", {"topic": "orders.{data.country}"}),
    (
        "route",
        {
            "rules": [
                {"when": "data.total >= 200", "topic": "large"},
                {"when": "data.country == 'DE'", "topic": "de"},
            ],
            "default": "other",
        },
    ),
    ("template", {"template": {"order": "{data.id}", "who": "{data.customer.email}"}}),
    ("validate", {"directory": "schemas", "schema": "order.json"}),
]

ORDER_SCHEMA = {
    "type": "object",
    "required": ["id", "total", "customer"],
    "properties": {
        "id": {"type": "integer"},
        "total": {"type": "number", "minimum": 0},
        "customer": {"type": "object", "required": ["id"]},
    },
}

#: The chain of part 2: six transforms a real pipeline might have.
CHAIN = """
      - type: filter
        where: "data.total >= 0"
      - type: mask
        fields: [data.email]
      - type: insert_field
        field: data.region
        value: eu
        when: "data.country == 'DE'"
      - type: cast
        fields: {data.total: decimal}
      - type: set_key
        fields: [data.customer.id]
      - type: drop_fields
        fields: [data.items]"""

FILTER = """
      - type: filter
        where: "data.total >= 0\""""

PIPELINE = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {{path: in.jsonl, format: json, follow: false}}
    transforms: {transforms}
    topic: orders
    sinks:
      - name: out
        connector: file
        config: {{path: out.jsonl, format: json}}
"""


def make_lines(n: int) -> list[bytes]:
    rng = random.Random(1)
    countries = ["DE", "FR", "NL", "US", "GB", "IT"]
    # json, not orjson: orjson's bytes keep a large buffer each (GBs for a million lines).
    return [
        json.dumps(
            {
                "id": i,
                "customer": {"id": f"c{i % 1000}", "email": f"customer{i % 1000}@example.com"},
                "email": f"customer{i % 1000}@example.com",
                "country": countries[i % 6],
                "total": round(rng.uniform(1, 250), 2),
                "items": i % 7,
                "created": 1_700_000_000_000 + i * 1000,
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


# -- part 1: each transform alone -----------------------------------------------------------------


def per_transform(lines: list[bytes], repeat: int, work: Path) -> list[tuple[str, str, float]]:
    from meshconnect.expr import Compiler
    from meshconnect.records import Record
    from meshconnect.transforms import BuildContext, TransformChain, building
    from meshconnect.transforms.builtin import meshconnect_transforms

    specs = {spec.name: spec for spec in meshconnect_transforms()}
    compiler = Compiler()
    (work / "schemas").mkdir(exist_ok=True)
    (work / "schemas" / "order.json").write_bytes(orjson.dumps(ORDER_SCHEMA))
    loads, fast = orjson.loads, Record.fast

    def records() -> list[Any]:
        return [
            fast(loads(line), str(i), "bench", "order", None, "application/json")
            for i, line in enumerate(lines)
        ]

    def timed(chain: TransformChain) -> float:
        runs = []
        for _ in range(repeat):
            batch = records()
            batches = [batch[i : i + 1000] for i in range(0, len(batch), 1000)]
            started = time.perf_counter()
            for part in batches:
                chain.process(part)
            runs.append(time.perf_counter() - started)
        return statistics.median(runs) / len(lines) * 1e6

    # As ``meshconnect run`` does (core/cli.py): long-lived objects frozen, gen-0 collections
    # rare, so a transform that makes dicts is not charged for scanning every record in memory.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    results = [("(empty chain)", "", timed(TransformChain([])))]
    with building(BuildContext(work)):
        for name, options in PER_TRANSFORM:
            spec = specs[name]
            transform = spec.factory(spec.options_model(**options), compiler)
            transform.type_name = name
            chain = TransformChain([transform])
            _, failures = chain.process(records()[:100])
            if failures:
                raise SystemExit(f"{name} {options}: {failures[0].error}")
            shown = orjson.dumps(options).decode()
            results.append((name, shown if len(shown) <= 60 else shown[:57] + "...", timed(chain)))
    return results


# -- part 2: the pipeline -------------------------------------------------------------------------


def timed_child(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.chdir(cwd)
        os.execv(argv[0], argv)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(argv)}")
    return elapsed


def pipelines(lines: list[bytes], repeat: int, work: Path) -> dict[str, float]:
    (work / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    contenders = {
        "no transforms": "[]",
        "simple filter": FILTER,
        "6-transform chain": CHAIN,
    }
    for name, transforms in contenders.items():
        run_dir = work / name.replace(" ", "_")
        run_dir.mkdir()
        os.symlink(work / "in.jsonl", run_dir / "in.jsonl")
        (run_dir / "pipeline.yaml").write_text(PIPELINE.format(transforms=transforms))
    argv = [
        sys.executable,
        "-m",
        "meshconnect",
        "--log-level",
        "warning",
        "--state",
        "state",
        "run",
        "pipeline.yaml",
    ]
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):  # interleaved, so a noisy neighbour hits every contender
        for name in contenders:
            run_dir = work / name.replace(" ", "_")
            shutil.rmtree(run_dir / "state", ignore_errors=True)
            (run_dir / "out.jsonl").unlink(missing_ok=True)
            runs[name].append(timed_child(argv, run_dir))
            with (run_dir / "out.jsonl").open("rb") as out:
                written = sum(1 for _ in out)
            if written != len(lines):
                raise SystemExit(f"{name}: wrote {written} records, expected {len(lines)}")
    return {name: statistics.median(r) for name, r in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="per pipeline run")
    parser.add_argument("--per-transform-records", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians shown")
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = parser.parse_args()
    n = 3_000 if args.smoke else args.records
    n1 = 2_000 if args.smoke else args.per_transform_records
    repeat = 1 if args.smoke else args.repeat
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, median of {repeat} runs each")
    with tempfile.TemporaryDirectory(prefix="mc-bench-transforms-") as tmp:
        work = Path(tmp)
        costs = per_transform(make_lines(n1), repeat, work)
        print(f"\n1. each transform alone: TransformChain.process, {n1:,} records, batches of 1000")
        print(f"{'transform':18} {'options':60} {'µs/record':>10}")
        for name, options, micros in costs:
            print(f"{name:18} {options:60} {micros:10.2f}")

        seconds = pipelines(make_lines(n), repeat, work)
        base = seconds["no transforms"]
        print(
            f"\n2. pipeline: meshconnect run, file -> transforms -> SQLite store -> file sink, "
            f"{n:,} records (every record kept)"
        )
        print(
            f"{'contender':20} {'seconds':>8} {'records/s':>12} {'throughput vs none':>19} "
            f"{'extra µs/record':>16}"
        )
        for name, s in seconds.items():
            extra = (s - base) / n * 1e6
            print(f"{name:20} {s:8.2f} {n / s:12,.0f} {base / s:18.0%} {extra:16.2f}")

        filter_cost = next(m for name, _, m in costs if name == "filter")
        in_pipeline = (seconds["simple filter"] - base) / n * 1e6
        ratio = base / seconds["6-transform chain"]
        print(
            f"\ntargets: simple filter <= 2 µs/record: {filter_cost:.2f} µs alone, "
            f"{in_pipeline:.2f} µs in the pipeline "
            f"({'met' if max(filter_cost, in_pipeline) <= 2 else 'MISSED'}); "
            f"6-transform chain >= 60% of the no-transform throughput: {ratio:.0%} "
            f"({'met' if ratio >= 0.6 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
