"""schemathesis against the admin API's own /openapi.json, served by a live worker: no server
error, and every answer (status code, content type, body) as the document says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from admin_support import TOKEN, AdminWorker, flowing, write_pipeline

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)


def _schemathesis(w: AdminWorker, config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is in the dev extra"
    return subprocess.run(
        [
            st,
            "--config-file",
            str(config),
            "run",
            f"{w.url}/openapi.json",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--checks",
            CHECKS,
            "--max-examples",
            "20",
            "--seed",
            "1",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )


def _all_passed(out: str) -> None:
    """Every generated case passed every check (warnings about 404s for names are fine)."""
    found = re.search(r"(\d+) generated, (\d+) passed", out)
    assert found and found.group(1) == found.group(2) and int(found.group(1)) > 100, out[-4000:]
    assert "failure" not in out.lower().split("summary")[-1], out[-4000:]
    print(f"schemathesis: {found.group(0)}")


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(50)))
    files = [write_pipeline(tmp_path / "p.yaml", [flowing("orders", "./in.jsonl", "./o.jsonl")])]
    with AdminWorker(tmp_path, files) as w:
        # Random names (404s, 400s for random pipeline bodies), then every operation on the
        # running pipeline "orders" (pause, stop, restart, offsets reset: with random bodies).
        anything = tmp_path / "any.toml"
        anything.write_text("")
        result = _schemathesis(w, anything, tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        _all_passed(result.stdout)
        orders = tmp_path / "orders.toml"
        orders.write_text('[parameters]\n"path.name" = "orders"\n')
        result = _schemathesis(w, orders, tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        _all_passed(result.stdout)
        # The worker lived through it and stops cleanly.
        assert w.call("GET", "/health").json == {"status": "UP"}
        assert w.stop() == 0


def test_schemathesis_on_a_cluster_member(tmp_path: Path, redis_server: Any) -> None:
    """The same on a member of a cluster (run --cluster --admin, on a private Redis): the
    /cluster view, statuses with the owners of the units, and the 409s of what cannot act on
    the whole cluster are as the document says."""
    (tmp_path / "in.jsonl").write_text("".join(f'{{"id": {i}}}\n' for i in range(50)))
    config = tmp_path / "p.yaml"
    pipeline = flowing("orders", str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl"))
    url = f"{redis_server.url}?prefix=stcluster{time.monotonic_ns()}"
    config.write_text(json.dumps({"store": url, "cluster": "st", "pipelines": [pipeline]}))
    with AdminWorker(tmp_path, [str(config)]) as w:
        w.wait_for(lambda: w.call("GET", "/cluster").json["pipelines"][0]["units"][0]["local"],
                   "the member to take the source")  # fmt: skip
        anything = tmp_path / "any.toml"
        anything.write_text("")
        result = _schemathesis(w, anything, tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        _all_passed(result.stdout)
        orders = tmp_path / "orders.toml"
        orders.write_text('[parameters]\n"path.name" = "orders"\n')
        result = _schemathesis(w, orders, tmp_path)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        _all_passed(result.stdout)
        assert w.call("GET", "/cluster").json["member"]["joined"] is True
        assert w.stop() == 0
