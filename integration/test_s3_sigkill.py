"""SIGKILL the worker while the s3 sink uploads, again and again, then let a last run finish:
every record is in exactly one object, and no unfinished multipart upload is left."""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

from s3_support import SECRET_KEY, MotoServer, body, connection, keys, moto

from conftest import meshconnect, start_worker

__all__ = ["moto"]

TOTAL = 150_000

PIPELINE = """
pipelines:
  - name: events
    source:
      connector: file
      config: {path: in/events.jsonl, format: json, follow: false, batch_size: 2000}
    topic: events
    sinks:
      - name: small
        connector: s3
        commit_interval: 0.05
        batch_size: 500
        errors: {retry: {max_attempts: 10, initial_backoff: 100ms, max_backoff: 1s}}
        config: %(small)s
      - name: big
        connector: s3
        commit_interval: 0.05
        batch_size: 2000
        errors: {retry: {max_attempts: 10, initial_backoff: 100ms, max_backoff: 1s}}
        config: %(big)s
"""


def numbers(server: MotoServer, bucket: str, prefix: str) -> list[int]:
    out = []
    for key in keys(server, bucket, prefix):
        data = body(server, bucket, key)
        if key.endswith(".gz"):
            data = gzip.decompress(data)
        out.extend(json.loads(line)["n"] for line in data.splitlines())
    return out


def test_sigkill_during_uploads_leaves_every_record_in_exactly_one_object(
    moto: MotoServer, tmp_path: Path
) -> None:
    bucket = moto.bucket()
    (tmp_path / "in").mkdir()
    with (tmp_path / "in" / "events.jsonl").open("w") as f:
        for n in range(TOTAL):
            f.write(json.dumps({"n": n, "k": n % 3, "pad": "z" * (100 + n % 50)}) + "\n")
    # small: three partitions (k), gzip, many small objects: the done marks and the
    # cleanup of objects uploaded after the last commit; big: objects in two parts.
    small = {
        **connection(moto, bucket),
        "key_template": "small/{topic}/k={data.k}/",
        "compression": "gzip",
        "rotate_records": 700,
    }
    big = {
        **connection(moto, bucket),
        "key_template": "big/",
        "rotate_bytes": "6MiB",
        "multipart_threshold": "5MiB",
        "part_size": "5MiB",
    }
    config = tmp_path / "pipeline.yaml"
    config.write_text(PIPELINE % {"small": json.dumps(small), "big": json.dumps(big)})
    state = tmp_path / "state"
    log_path = tmp_path / "worker.log"
    rng = random.Random(3)
    at_kill: list[int] = []
    for _ in range(15):
        if len(at_kill) >= 6:
            break
        before = len(keys(moto, bucket))
        proc = start_worker(meshconnect(state, "run", str(config)), log_path)
        deadline = time.monotonic() + 60  # kill once this run has uploaded something
        while time.monotonic() < deadline and proc.poll() is None:
            if len(keys(moto, bucket)) > before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break  # it finished before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill.append(len(keys(moto, bucket)))
    # A crash in the middle of a multipart upload, for certain: the next start aborts it.
    moto.client().create_multipart_upload(
        Bucket=bucket, Key="big/events+00000000000000000000.jsonl"
    )
    before_final = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("a") as log:
        final = subprocess.run(
            meshconnect(state, "run", str(config)), stdout=log, stderr=log, timeout=300
        )
    worker_log = log_path.read_text()
    assert final.returncode == 0, worker_log[-3000:]
    assert len(at_kill) >= 5, at_kill
    assert at_kill[0] > 0
    small_numbers = numbers(moto, bucket, "small/")
    big_numbers = numbers(moto, bucket, "big/")
    assert sorted(small_numbers) == list(range(TOTAL)), "small: lost or duplicated records"
    assert sorted(big_numbers) == list(range(TOTAL)), "big: lost or duplicated records"
    assert not moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads")
    # The upload made above, and one more if the last kill fell inside an upload.
    last_run = log_path.read_bytes()[before_final:].decode()
    aborted = re.search(r"aborted (\d+) unfinished multipart upload", last_run)
    assert aborted and int(aborted.group(1)) >= 1, last_run[-3000:]
    assert SECRET_KEY not in worker_log
