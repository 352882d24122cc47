"""The examples of docs/plugins.md ("The doors of the connector API" and the conformance
suites) run as they stand: each ```python block whose first line names a file
(``# webhook_source.py: ...``) is written to a directory and imported from there, the YAML
block ``# demo.yaml`` is run by a worker, and the conformance example is run by pytest."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshconnect.config.loader import load_pipeline_files
from meshconnect.mesh.memory import MemoryStore
from meshconnect.testing import test_registry
from meshconnect.worker import Worker

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
BLOCK = re.compile(r"```(python|yaml)\n# ([\w.]+\.(?:py|yaml))\b.*?\n(.*?)```", re.S)
EXAMPLES = {
    "webhook_source.py",
    "post_sink.py",
    "batch_file_sink.py",
    "lookup_transform.py",
    "bulk_source.py",
    "plugin.py",
    "demo.yaml",
    "test_demo_conformance.py",
}


def doc_files() -> dict[str, str]:
    found: dict[str, str] = {}
    for match in BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        name = match.group(2)
        found[name] = match.group(0).split("\n", 1)[1].rsplit("```", 1)[0]
    return found


@pytest.fixture
def examples(tmp_path: Path) -> Iterator[Path]:
    """The examples written to a directory that is on sys.path while the test runs."""
    folder = tmp_path / "examples"
    folder.mkdir()
    for name, text in doc_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in list(sys.modules):
            if (folder / f"{name}.py").exists():
                del sys.modules[name]


def test_every_door_has_its_example_in_the_docs() -> None:
    assert set(doc_files()) == EXAMPLES


async def post(url: str, body: Any) -> int:
    for _ in range(100):
        try:
            async with aiohttp.ClientSession() as session, session.post(url, json=body) as r:
                return r.status
        except aiohttp.ClientConnectorError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens at {url}")


async def test_the_demo_plugin_runs_every_door(examples: Path) -> None:
    import plugin
    import post_sink

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = examples / "demo.yaml"
    demo.write_text(demo.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    registry = test_registry()
    registry.register(plugin, "demo")
    store = MemoryStore("memory://")
    await store.open()
    worker = Worker(load_pipeline_files([str(demo)], registry), store)
    run = asyncio.create_task(worker.run())
    try:
        url = f"http://127.0.0.1:{port}/people"
        assert await post(url, {"name": "ada", "to": "x"}) == 200
        stored = [r.data for r in await store.read("people", 0, 10)]
        assert stored == [{"name": "ada", "to": "x", "country": "GB"}]  # async lookup ran
        assert await post(url, {"name": "grace"}) == 200  # stored; the sink will reject it
        for _ in range(200):
            dead = await store.read("dlq.people", 0, 10)
            if dead and post_sink.Outbox.sent:
                break
            await asyncio.sleep(0.05)
        assert post_sink.Outbox.sent == [(await store.read("people", 0, 1))[0].id]
        assert [(r.data["name"], r.extensions["errortype"]) for r in dead] == [
            ("grace", "Rejected")
        ]
        assert dead[0].data["country"] == "US"
        files = sorted((examples / "out" / "bulk").glob("*.jsonl"))
        for _ in range(100):
            if len(files) == 6:
                break
            await asyncio.sleep(0.05)
            files = sorted((examples / "out" / "bulk").glob("*.jsonl"))
        rows = [json.loads(line)["row"] for f in files for line in f.read_text().splitlines()]
        assert rows == list(range(600))
        assert worker.metrics.value("bulk_rows", pipeline="bulk", connector="bulk-demo").value == (  # type: ignore[union-attr]
            600
        )
    finally:
        worker.stop()
        assert await run == 0
        await store.close()


def test_the_conformance_example_passes_under_pytest(examples: Path) -> None:
    (examples / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_demo_conformance.py",
        ],
        cwd=examples,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "12 passed, 2 skipped" in result.stdout
    )  # poison and outage: it rejects nothing, no outage
