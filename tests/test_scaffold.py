"""``meshconnect new connector``: the files it writes are valid Python and TOML, name the
entry point and classes after the connector, and refuse bad names and non-empty directories.
(Installing the package and running its own tests: integration/test_plugin_distribution.py.)"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshconnect.cli import cli
from meshconnect.errors import ConfigError
from meshconnect.scaffold import files_for


def test_the_package_files_parse_and_name_the_connector() -> None:
    files = files_for("acme_crm", "0.1.0")
    for path, text in files.items():
        if path.endswith(".py"):
            ast.parse(text, path)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["name"] == "meshconnect-acme-crm"
    assert project["entry-points"]["meshconnect"] == {"acme_crm": "meshconnect_acme_crm.plugin"}
    assert project["dependencies"] == ["meshconnect>=0.1.0"]
    # both set, or every run of the package's tests warns (PytestDeprecationWarning)
    assert tomllib.loads(files["pyproject.toml"])["tool"]["pytest"]["ini_options"] == {
        "asyncio_mode": "auto",
        "asyncio_default_fixture_loop_scope": "function",
    }
    plugin = files["src/meshconnect_acme_crm/plugin.py"]
    assert '"meshconnect_acme_crm.source:AcmeCrmSource"' in plugin
    assert '"meshconnect_acme_crm.sink:AcmeCrmSink"' in plugin
    assert "class TestAcmeCrmSource(SourceConformance)" in files["tests/test_conformance.py"]


@pytest.mark.parametrize("name", ["Acme", "acme-crm", "1acme", "", "a" * 41, "acme/../x"])
def test_a_bad_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="lower case letters"):
        files_for(name, "0.1.0")


def test_the_command_writes_the_package_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "pkg"
    first = runner.invoke(cli, ["new", "connector", "acme", "--dir", str(target)])
    assert first.exit_code == 0, first.output
    assert (target / "src" / "meshconnect_acme" / "sink.py").exists()
    assert "plugins install" in first.output
    second = runner.invoke(cli, ["new", "connector", "acme", "--dir", str(target)])
    assert second.exit_code != 0
    assert "not empty" in second.output


def test_the_source_refuses_a_position_it_never_writes(tmp_path: Path) -> None:
    """The template shows a third party how to answer ``offsets reset --to``; run as it is."""
    import importlib.util
    import logging
    import sys

    root = tmp_path / "pkg"
    for path, text in files_for("acme_crm", "0.1.0").items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    sys.path.insert(0, str(root / "src"))
    try:
        from meshconnect import ConnectorContext

        config = importlib.import_module("meshconnect_acme_crm.config")
        source = importlib.import_module("meshconnect_acme_crm.source")
        made = source.AcmeCrmSource(
            config.AcmeCrmSourceConfig(), ConnectorContext("p", "s", logging.getLogger("t"))
        )
        assert made.position_problem("counter", {"next": 3}) is None
        assert "unknown field 'nxt'" in made.position_problem("counter", {"nxt": 3})
        assert "next must be a whole number" in made.position_problem("counter", {"next": -1})
        assert "did you mean 'counter'" in made.position_problem("countr", {"next": 3})
    finally:
        sys.path.remove(str(root / "src"))
        for name in [m for m in sys.modules if m.startswith("meshconnect_acme_crm")]:
            del sys.modules[name]


@pytest.mark.parametrize(
    ("name", "user"), [("file", "the source connector of meshconnect"), ("stores", "entry point")]
)
def test_a_name_an_installed_plugin_uses_is_refused(tmp_path: Path, name: str, user: str) -> None:
    """`new connector file` wrote a package whose entry point and connectors clash with the
    built-in file connector: installed, it failed to load (or was silently skipped)."""
    target = tmp_path / "pkg"
    result = CliRunner().invoke(cli, ["new", "connector", name, "--dir", str(target)])
    assert result.exit_code == 1
    assert f"connector name {name!r} is taken: " in result.output
    assert user in result.output and "choose another name" in result.output
    assert not target.exists()
