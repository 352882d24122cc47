"""The curl examples of docs/connectors/webhook.md, run as they stand against the pipeline
file shown on the page (on a free port): each request is answered 202 and stored."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest
from webhook_support import FlakyStore, free_port, request, worker_for

PAGE = Path(__file__).resolve().parent.parent / "docs" / "connectors" / "webhook.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(lang: str) -> list[str]:
    return [m.group(2) for m in FENCE.finditer(PAGE.read_text()) if m.group(1) == lang]


async def test_the_curl_examples_are_answered_202_and_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tool in ("curl", "openssl"):
        if shutil.which(tool) is None:  # a skip only outside CI
            if os.environ.get("MESHCONNECT_REQUIRE_SERVERS"):
                pytest.fail(f"{tool} is required in CI (the examples use it)")
            pytest.skip(f"needs {tool}")
    env = {"WEBHOOK_TOKEN": "docs-token", "GITHUB_SECRET": "docs-secret"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    port = free_port()
    pipeline = blocks("yaml")[0].replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    store = FlakyStore("memory://")
    await store.open()
    worker = worker_for(tmp_path, pipeline, store)
    run = asyncio.create_task(worker.run())
    examples = [b for b in blocks("sh") if "curl" in b]
    assert len(examples) >= 6
    try:
        await request("GET", f"http://127.0.0.1:{port}/orders")  # listening
        for example in examples:
            script = "curl() { command curl -w '\\nstatus=%{http_code}\\n' \"$@\"; }\n" + example
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", script.replace("127.0.0.1:8080", f"127.0.0.1:{port}"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            statuses = re.findall(r"status=(\d+)", out.decode())
            assert statuses and set(statuses) == {"202"}, (example, out, err)
        orders = await store.read("orders", 0, 100)
        github = await store.read("github", 0, 100)
    finally:
        worker.stop()
        assert await run == 0
        await store.close()
    assert [r.type for r in orders] == [
        "com.example.order.created",
        "com.example.order.note",
        "com.example.order.note",
        "com.example.order.created",
        "com.example.order.created",
        "com.example.order.created",
        "com.example.order.paid",
    ]
    assert [(r.type, r.id, r.data) for r in github] == [
        (
            "com.github.issues",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            {"action": "opened", "number": 1},
        )
    ]
