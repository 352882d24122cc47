"""A third-party plugin distribution, built from tests/fixtures/example-plugin with its own
pyproject.toml and installed with pip into a fresh virtualenv next to a plugin that raises on
import: the good one is listed and runs in a pipeline, the broken one is listed as failed and the
worker runs regardless (and refuses to under --strict)."""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import pytest

from conftest import REPO

PIPELINE = """
pipelines:
  - name: counted
    source:
      connector: counter
      config: {count: 250, field: n}
    transforms:
      - type: insert_field
        field: data.word
        template: "item {data.n}"
      - type: shout
        field: word
    sinks:
      - connector: file
        config: {path: out.jsonl, format: json}
"""


FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """meshconnect and the broken plugin installed with pip; the example plugin installed
    with ``meshconnect plugins install`` (which records it in plugins.toml)."""
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            str(REPO),  # a regular (non-editable) install of meshconnect itself
            str(FIXTURES / "broken-plugin"),
        ],
        check=True,
        timeout=600,
    )
    policy = root / "plugins.toml"
    installed = subprocess.run(
        [
            str(root / "bin" / "meshconnect"),
            "--plugins",
            str(policy),
            "plugins",
            "install",
            "--yes",
            str(FIXTURES / "example-plugin"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    assert str(FIXTURES / "example-plugin") in policy.read_text()
    return root


def mc(venv_root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_root / "bin" / "meshconnect"), "--state", str(cwd / "state"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_plugins_list_shows_the_third_party_plugin_and_the_broken_one(
    fresh_venv: Path, tmp_path: Path
) -> None:
    result = mc(fresh_venv, tmp_path, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["name"], r["kind"]): r for r in json.loads(result.stdout)}
    counter = rows[("counter", "source")]
    assert (counter["status"], counter["distribution"], counter["version"]) == (
        "loaded",
        "meshconnect-example",
        "1.2.3",
    )
    assert rows[("shout", "transform")]["status"] == "loaded"
    broken = rows[("broken", "plugin")]
    assert broken["status"] == "failed"
    assert "broken on purpose" in broken["reason"]
    assert rows[("file", "sink")]["distribution"] == "meshconnect"


def test_the_third_party_connector_and_transform_run_in_a_pipeline(
    fresh_venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    result = mc(fresh_venv, tmp_path, "run", "p.yaml")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == [{"n": i, "word": f"ITEM {i}"} for i in range(250)]


def test_strict_mode_refuses_to_start_with_a_broken_plugin(
    fresh_venv: Path, tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(PIPELINE)
    result = mc(fresh_venv, tmp_path, "--strict", "run", "p.yaml")
    assert result.returncode != 0
    assert "broken on purpose" in result.stderr


def test_a_scaffolded_connector_installs_passes_the_suites_and_runs(
    fresh_venv: Path, tmp_path: Path
) -> None:
    """``meshconnect new connector acme`` → ``meshconnect plugins install ./acme`` in a fresh
    virtualenv → the package's own tests (the conformance suites and a pipeline run) pass and
    its example pipeline runs. Last in this module: it installs into the shared venv."""
    made = mc(fresh_venv, tmp_path, "new", "connector", "acme")
    assert made.returncode == 0, made.stderr
    package = tmp_path / "acme"
    assert (package / "src" / "meshconnect_acme" / "plugin.py").exists()
    installed = mc(fresh_venv, tmp_path, "plugins", "install", "--yes", f"{package}[test]")
    assert installed.returncode == 0, installed.stderr
    listed = mc(fresh_venv, tmp_path, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "meshconnect-acme" in listed.stdout
    tests = subprocess.run(
        [str(fresh_venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=package,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    run = mc(fresh_venv, package, "run", "example.yaml")
    assert run.returncode == 0, run.stderr
    lines = (package / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"n": i} for i in range(10)]
