"""Plugin discovery: isolation of broken plugins, the plugins.toml policy, missing extras."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshconnect.cli import cli
from meshconnect.errors import PluginError
from meshconnect.plugins import PluginPolicy, load_registry

PLUGIN_SOURCE = """
from meshconnect import ConnectorConfig, ConnectorSpec, Sink, hookimpl

class Cfg(ConnectorConfig):
    pass

@hookimpl
def meshconnect_connectors():
    return [
        ConnectorSpec("{name}", "sink", Cfg, "nowhere:Missing", requires={requires}, extra="x"),
    ]
"""


def make_module(tmp_path: Path, name: str, body: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("mcplug_")]:
        del sys.modules[name]


def eps(*pairs: tuple[str, str]) -> list[importlib.metadata.EntryPoint]:
    builtin = list(importlib.metadata.entry_points(group="meshconnect"))
    extra = [importlib.metadata.EntryPoint(n, v, "meshconnect") for n, v in pairs]
    return builtin + extra


def test_a_plugin_that_raises_on_import_is_listed_as_failed(plugin_dir: Path) -> None:
    make_module(plugin_dir, "mcplug_bad", "raise ImportError('no such library: frobnicate')")
    registry = load_registry(entry_points=eps(("bad", "mcplug_bad")), strict=False)
    failed = [e for e in registry.entries if e.status == "failed"]
    assert [(e.name, e.reason) for e in failed] == [
        ("bad", "ImportError: no such library: frobnicate")
    ]
    assert registry.connectors[("file", "source")].status == "loaded"


def test_strict_mode_makes_a_broken_plugin_fatal(plugin_dir: Path) -> None:
    make_module(plugin_dir, "mcplug_bad", "raise RuntimeError('boom')")
    with pytest.raises(PluginError, match=r"'bad'.*boom"):
        load_registry(entry_points=eps(("bad", "mcplug_bad")), strict=True)


def test_a_connector_whose_library_is_missing_shows_the_install_hint(plugin_dir: Path) -> None:
    make_module(
        plugin_dir, "mcplug_x", PLUGIN_SOURCE.format(name="xsink", requires="['no_such_lib_42']")
    )
    registry = load_registry(entry_points=eps(("x", "mcplug_x")))
    entry = registry.connectors[("xsink", "sink")]
    assert (entry.status, entry.reason) == (
        "missing-extra",
        "needs no_such_lib_42: pip install 'meshconnect[x]'",
    )
    with pytest.raises(PluginError, match="missing-extra"):
        registry.connector("xsink", "sink")


def test_policy_disables_plugins_by_name(plugin_dir: Path) -> None:
    make_module(plugin_dir, "mcplug_x", PLUGIN_SOURCE.format(name="xsink", requires="[]"))
    policy = PluginPolicy(disabled=["x"])
    registry = load_registry(policy, entry_points=eps(("x", "mcplug_x")))
    assert ("xsink", "sink") not in registry.connectors
    assert [e.status for e in registry.entries if e.name == "x"] == ["disabled"]


def test_policy_can_disable_a_single_connector(plugin_dir: Path) -> None:
    policy = PluginPolicy(disabled=["mask"])
    registry = load_registry(policy)
    assert registry.transforms["mask"].status == "disabled"
    with pytest.raises(PluginError, match="disabled"):
        registry.transform("mask")


def test_policy_listed_loads_only_the_enabled(plugin_dir: Path) -> None:
    policy = PluginPolicy(load="listed", enabled=["file", "stores"])
    registry = load_registry(policy)
    assert ("file", "sink") in registry.connectors
    assert "filter" not in registry.transforms


def test_local_plugin_modules_load_by_path(tmp_path: Path) -> None:
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["local_plugin.py"]\n')
    make_module(tmp_path, "local_plugin", PLUGIN_SOURCE.format(name="localsink", requires="[]"))
    registry = load_registry(PluginPolicy.read(tmp_path / "plugins.toml"))
    assert registry.connectors[("localsink", "sink")].plugin == "local:local_plugin.py"


def test_unknown_keys_in_plugins_toml_are_errors(tmp_path: Path) -> None:
    (tmp_path / "plugins.toml").write_text('[plugins]\ndisable = ["x"]\n')
    with pytest.raises(PluginError, match=r"unknown key.*disable"):
        PluginPolicy.read(tmp_path / "plugins.toml")


def test_a_name_clash_keeps_the_first_and_reports_the_second(plugin_dir: Path) -> None:
    make_module(plugin_dir, "mcplug_clash", PLUGIN_SOURCE.format(name="file", requires="[]"))
    registry = load_registry(entry_points=eps(("clash", "mcplug_clash")))
    clash = [e for e in registry.entries if e.plugin == "clash"]
    assert clash[0].status == "failed" and "already provided" in clash[0].reason
    assert registry.connectors[("file", "sink")].plugin == "file"


def test_plugins_list_json_shows_builtins_with_their_distribution() -> None:
    result = CliRunner().invoke(cli, ["plugins", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["name"], r["kind"]): r for r in json.loads(result.output)}
    assert rows[("file", "source")]["distribution"] == "meshconnect"
    assert rows[("filter", "transform")]["status"] == "loaded"


def test_plugins_install_records_the_spec_in_plugins_toml(tmp_path: Path) -> None:
    from meshconnect.cli import _record_install

    path = tmp_path / "plugins.toml"
    path.write_text('# policy\n[plugins]\nload = "all"\n')
    _record_install(path, "meshconnect-example==1.2.3")
    text = path.read_text()
    assert "# policy" in text
    assert PluginPolicy.read(path).installed == ["meshconnect-example==1.2.3"]


def test_help_imports_no_heavy_library() -> None:
    import subprocess

    code = (
        "import sys; from meshconnect.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('boto3', 'openai', 'sqlalchemy', 'pymysql', 'aiohttp',"
        " 'meshconnect.worker', 'meshconnect.config.loader') if m in sys.modules]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stderr.strip() == "[]"


def test_a_run_imports_the_config_models_of_the_connectors_it_uses_only(tmp_path: Path) -> None:
    """Built-in connectors give their config model as "module:Class": loading a pipeline of a
    file source and sink imports no other connector's model (~25 ms of start-up)."""
    import subprocess

    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source: {connector: file, config: {path: in.jsonl}}\n"
        "    topic: t\n    sinks:\n      - {name: out, connector: file, config: {path: o.jsonl}}\n"
    )
    code = (
        "import sys\n"
        "from meshconnect.config.loader import load_pipeline_files\n"
        "from meshconnect.plugins import load_registry\n"
        "load_pipeline_files([sys.argv[1]], load_registry())\n"
        "print(sorted(m for m in sys.modules if m.startswith('meshconnect.connectors.')"
        " and m.endswith('.config')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "p.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # chatgpt's config module holds the llm transform's options, which register eagerly.
    assert result.stdout.split() == [
        "['meshconnect.connectors.chatgpt.config',",
        "'meshconnect.connectors.file.config']",
    ]


def test_a_config_model_that_does_not_import_is_reported_at_the_connector(
    plugin_dir: Path,
) -> None:
    from meshconnect.config.loader import load_pipeline_texts
    from meshconnect.errors import ValidationErrors

    (plugin_dir / "mcplug_badmodel.py").write_text(
        "from meshconnect import ConnectorSpec, hookimpl\n"
        "@hookimpl\n"
        "def meshconnect_connectors():\n"
        "    return [ConnectorSpec(name='bad', kind='source',"
        " config_model='mcplug_nowhere:Config', factory='mcplug_nowhere:Source')]\n"
    )
    registry = load_registry(PluginPolicy(paths=[plugin_dir / "mcplug_badmodel.py"]))
    text = (
        "pipelines:\n  - name: p\n    source: {connector: bad, config: {}}\n    topic: t\n"
        "    sinks:\n      - {name: out, connector: file, config: {path: o.jsonl}}\n"
    )
    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_texts([("p.yaml", text, ".")], registry)
    (problem,) = caught.value.problems
    assert str(problem).startswith("p.yaml:3:")
    assert (
        "source connector 'bad': its config model 'mcplug_nowhere:Config' cannot be loaded "
        "(ModuleNotFoundError: No module named 'mcplug_nowhere') (a fault of plugin "
        "'local:" in str(problem)
    )


def test_a_connector_class_that_does_not_import_stops_run_with_one_line(tmp_path: Path) -> None:
    """``validate`` imports no connector class (it stays light); ``run`` said "the worker
    stopped on an unexpected error" with a traceback for a source, and restarted a sink over
    and over. Now a source's is the run's error line, a sink's fails it for good: exit 1."""
    import subprocess

    (tmp_path / "plug.py").write_text(
        "from meshconnect import ConnectorConfig, ConnectorSpec, hookimpl\n"
        "class C(ConnectorConfig):\n    pass\n"
        "@hookimpl\n"
        "def meshconnect_connectors():\n"
        "    return [ConnectorSpec(name='nosrc', kind='source', config_model=C,"
        " factory='mcplug_nowhere:Source'),\n"
        "            ConnectorSpec(name='nosink', kind='sink', config_model=C,"
        " factory='mcplug_nowhere:Sink')]\n"
    )
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["plug.py"]\n')
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    cases = {
        "nosrc": ("{connector: nosrc, config: {}}", "file, config: {path: o.jsonl}"),
        "nosink": ("{connector: file, config: {path: in.jsonl}}", "nosink, config: {}"),
    }
    for name, (source, sink) in cases.items():
        (tmp_path / f"{name}.yaml").write_text(
            f"pipelines:\n  - name: p\n    source: {source}\n    topic: t\n"
            f"    sinks:\n      - {{name: o, connector: {sink}}}\n"
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "meshconnect",
                "--plugins",
                "plugins.toml",
                "--state",
                f"state-{name}",
                "run",
                f"{name}.yaml",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert "restarting" not in done.stderr
        kind = "Source" if name == "nosrc" else "Sink"
        assert (
            f"connector {name!r}: its class 'mcplug_nowhere:{kind}' cannot be loaded "
            "(ModuleNotFoundError: No module named 'mcplug_nowhere')" in done.stderr
        )


BROKEN_MODELS = {
    "nocolon": "'mcplug_models.config'",
    "empty": "''",
    "dotted": "'mcplug_models.config.Config'",
    "number": "42",
}


def test_a_config_model_of_the_wrong_form_fails_its_plugin_at_once(plugin_dir: Path) -> None:
    """Found when the plugin registers, without importing anything: the connector is listed
    as failed with the reason, and --strict stops (a typo got past --strict to validate)."""
    specs = ",".join(
        f"ConnectorSpec(name={name!r}, kind='source', config_model={value}, factory='m:S')"
        for name, value in BROKEN_MODELS.items()
    )
    (plugin_dir / "mcplug_forms.py").write_text(
        "from meshconnect import ConnectorSpec, hookimpl\n"
        f"@hookimpl\ndef meshconnect_connectors():\n    return [{specs}]\n"
    )
    path = plugin_dir / "mcplug_forms.py"
    registry = load_registry(PluginPolicy(paths=[path]), strict=False)
    reasons = {
        e.name: e.reason for e in registry.entries if e.kind == "source" and e.status == "failed"
    }
    assert set(reasons) == set(BROKEN_MODELS)
    assert reasons["nocolon"] == (
        "connector 'nocolon': config_model 'mcplug_models.config' is not \"module:Class\" "
        '(a dotted module name, ":", a class name)'
    )
    assert 'must be a class or a "module:Class" string, not 42' in reasons["number"]
    with pytest.raises(PluginError, match='is not "module:Class"'):
        load_registry(PluginPolicy(paths=[path]), strict=True)


def test_a_local_plugin_names_modules_beside_it_and_schema_skips_a_broken_model(
    plugin_dir: Path, tmp_path: Path
) -> None:
    """A local plugin file's directory is importable (its strings name its neighbours);
    ``schema --connector`` of a model that does not import is an error line, and the full
    schema leaves that connector out instead of failing for every other."""
    (plugin_dir / "mcplug_nearby_config.py").write_text(
        "from meshconnect import ConnectorConfig\nclass Config(ConnectorConfig):\n    n: int = 1\n"
    )
    (plugin_dir / "mcplug_nearby.py").write_text(
        "from meshconnect import ConnectorSpec, hookimpl\n"
        "@hookimpl\ndef meshconnect_connectors():\n    return [\n"
        "        ConnectorSpec(name='nearby', kind='source',"
        " config_model='mcplug_nearby_config:Config', factory='mcplug_nearby_config:Config'),\n"
        "        ConnectorSpec(name='gone', kind='source',"
        " config_model='mcplug_gone_config:Config', factory='mcplug_gone_config:Config'),\n"
        "    ]\n"
    )
    toml = tmp_path / "plugins.toml"
    toml.write_text(f'[plugins]\npaths = ["{plugin_dir / "mcplug_nearby.py"}"]\n')
    runner = CliRunner()
    shown = runner.invoke(cli, ["--plugins", str(toml), "schema", "--connector", "nearby"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["properties"]["n"]["default"] == 1
    gone = runner.invoke(cli, ["--plugins", str(toml), "schema", "--connector", "gone"])
    assert gone.exit_code == 1
    assert "Traceback" not in gone.output
    assert (
        "Error: source connector 'gone': its config model 'mcplug_gone_config:Config' cannot be "
        "loaded (ModuleNotFoundError" in gone.output
    )
    full = runner.invoke(cli, ["--plugins", str(toml), "schema"])
    assert full.exit_code == 0, full.output
    text = full.stdout
    assert '"const": "nearby"' in text and '"const": "gone"' not in text


def test_a_missing_module_without_an_extra_gets_no_made_up_pip_command(plugin_dir: Path) -> None:
    (plugin_dir / "mcplug_needs.py").write_text(
        "from meshconnect import ConnectorSpec, hookimpl, ConnectorConfig\n"
        "class C(ConnectorConfig):\n    pass\n"
        "@hookimpl\ndef meshconnect_connectors():\n"
        "    return [ConnectorSpec(name='needs', kind='source', config_model=C, factory='x:Y',"
        " requires=['mcplug_no_such_client'])]\n"
    )
    registry = load_registry(PluginPolicy(paths=[plugin_dir / "mcplug_needs.py"]))
    entry = registry.connectors[("needs", "source")]
    assert entry.status == "missing-extra"
    assert entry.reason == (
        "needs mcplug_no_such_client (not installed; see the connector's description)"
    )


def _failed(registry: Any, plugin: str) -> list[str]:
    return [e.reason for e in registry.entries if e.plugin == plugin and e.status == "failed"]


def test_a_hook_returning_garbage_fails_its_plugin_and_nothing_else(plugin_dir: Path) -> None:
    """A transform or store hook that returns something else than specs crashed the whole
    loader with AttributeError (every command died); a lone spec gave a bare TypeError."""
    make_module(
        plugin_dir,
        "mcplug_garbage",
        """
        from meshconnect import ConnectorConfig, ConnectorSpec, hookimpl

        @hookimpl
        def meshconnect_transforms():
            return ["upper", None]

        @hookimpl
        def meshconnect_stores():
            return [("x", None)]
        """,
    )
    make_module(
        plugin_dir,
        "mcplug_lone",
        """
        from meshconnect import ConnectorConfig, ConnectorSpec, hookimpl

        class C(ConnectorConfig):
            pass

        @hookimpl
        def meshconnect_connectors():
            return ConnectorSpec("lone", "sink", C, "x:Y")
        """,
    )
    registry = load_registry(
        entry_points=eps(("garbage", "mcplug_garbage"), ("lone", "mcplug_lone")), strict=False
    )
    assert _failed(registry, "garbage") == [
        "not a TransformSpec: 'upper'",
        "not a TransformSpec: None",
        "not a StoreSpec: ('x', None)",
    ]
    [lone] = _failed(registry, "lone")
    assert "meshconnect_connectors returned ConnectorSpec(name='lone'" in lone
    assert lone.endswith("not a list")
    assert registry.connectors[("file", "sink")].status == "loaded"
    with pytest.raises(PluginError, match="not a TransformSpec"):
        load_registry(entry_points=eps(("garbage", "mcplug_garbage")), strict=True)


def test_a_hook_of_the_wrong_signature_or_a_module_named_twice_fails_only_that_plugin(
    plugin_dir: Path,
) -> None:
    """pluggy's own errors escaped register(): one bad plugin crashed the loader."""
    make_module(
        plugin_dir,
        "mcplug_args",
        """
        from meshconnect import hookimpl

        @hookimpl
        def meshconnect_transforms(registry):
            return []
        """,
    )
    make_module(plugin_dir, "mcplug_x", PLUGIN_SOURCE.format(name="xsink", requires="[]"))
    registry = load_registry(
        entry_points=eps(("args", "mcplug_args"), ("x", "mcplug_x"), ("x2", "mcplug_x")),
        strict=False,
    )
    [args] = _failed(registry, "args")
    assert args.startswith("PluginValidationError: Plugin 'args' for hook 'meshconnect_transforms'")
    assert "\n" not in args and "{'registry'}" in args
    assert _failed(registry, "x2") == [
        "module mcplug_x is already loaded as plugin 'x': two entry points name the same module"
    ]
    assert registry.connectors[("xsink", "sink")].status == "loaded"


def test_a_bad_expression_function_fails_its_plugin_not_every_pipeline(
    plugin_dir: Path, tmp_path: Path
) -> None:
    """A function that redefines a built-in, has a bad name, or is not callable was accepted
    at load, and then every pipeline's compilation failed with a message naming no plugin;
    a second plugin's function of the same name silently replaced the first's."""
    for name, functions in {
        "mcplug_builtin": "{'upper': str.upper}",
        "mcplug_badname": "{'bad name': len}",
        "mcplug_notcallable": "{'five': 5}",
        "mcplug_double": "{'double': lambda x: x * 2}",
        "mcplug_double2": "{'double': lambda x: x + x}",
    }.items():
        make_module(
            plugin_dir,
            name,
            f"from meshconnect import hookimpl\n\n"
            f"@hookimpl\ndef meshconnect_functions():\n    return {functions}\n",
        )
    names = ["builtin", "badname", "notcallable", "double", "double2"]
    registry = load_registry(entry_points=eps(*((n, f"mcplug_{n}") for n in names)))
    assert {n: _failed(registry, n) for n in names} == {
        "builtin": ["PluginError: expression function 'upper': redefines a built-in function"],
        "badname": ["PluginError: expression function 'bad name': not a valid function name"],
        "notcallable": ["PluginError: expression function 'five': 5 is not callable"],
        "double": [],
        "double2": [
            "PluginError: expression function 'double': name clash: already provided by 'double'"
        ],
    }
    assert registry.functions["double"](3) == 6
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "pipelines:\n  - name: p\n    source: {connector: file, config: {path: in.jsonl}}\n"
        "    transforms:\n      - {type: filter, where: 'double(data.n) > 2'}\n"
        "    sinks:\n      - {connector: file, config: {path: out.jsonl}}\n"
    )
    from meshconnect.config.loader import load_pipeline_files

    assert load_pipeline_files([pipeline], registry).pipelines[0].name == "p"


def test_an_entry_point_name_taken_by_another_distribution_is_reported(plugin_dir: Path) -> None:
    """A third-party entry point named like a built-in one (``file``) was silently skipped:
    its connectors never appeared, and plugins list said nothing."""
    make_module(plugin_dir, "mcplug_x", PLUGIN_SOURCE.format(name="xsink", requires="[]"))
    registry = load_registry(entry_points=eps(("file", "mcplug_x")), strict=False)
    assert ("xsink", "sink") not in registry.connectors
    assert [e.reason for e in registry.entries if e.status == "failed"] == [
        "entry point name clash: 'file' (mcplug_x) is already the entry point of meshconnect "
        f"{importlib.metadata.version('meshconnect')} (meshconnect.connectors.file.plugin): "
        "give the entry point another name"
    ]
    with pytest.raises(PluginError, match="entry point name clash"):
        load_registry(entry_points=eps(("file", "mcplug_x")), strict=True)


def test_a_hook_typo_or_an_entry_point_at_a_module_without_hooks_is_reported(
    plugin_dir: Path,
) -> None:
    """pluggy ignores an @hookimpl of no hook, and a module with undecorated hooks or none
    (the entry point names the package instead of its plugin module): the plugin loaded
    'fine', provided nothing, and plugins list did not mention it."""
    body = """
        from meshconnect import ConnectorConfig, ConnectorSpec, hookimpl

        class C(ConnectorConfig):
            pass

        {decorator}
        def {hook}():
            return [ConnectorSpec("quiet", "sink", C, "x:Y")]
        """
    make_module(
        plugin_dir, "mcplug_typo", body.format(decorator="@hookimpl", hook="meshconnect_connector")
    )
    make_module(plugin_dir, "mcplug_bare", body.format(decorator="", hook="meshconnect_connectors"))
    make_module(plugin_dir, "mcplug_empty", "VERSION = 1\n")
    registry = load_registry(
        entry_points=eps(
            ("typo", "mcplug_typo"), ("bare", "mcplug_bare"), ("empty", "mcplug_empty")
        )
    )
    assert {n: _failed(registry, n) for n in ("typo", "bare", "empty")} == {
        "typo": [
            "PluginError: @hookimpl 'meshconnect_connector' is not a meshconnect hook "
            "(did you mean 'meshconnect_connectors'?)"
        ],
        "bare": [
            "PluginError: module mcplug_bare provides nothing: meshconnect_connectors lacks the "
            "@meshconnect.hookimpl decorator"
        ],
        "empty": [
            "PluginError: module mcplug_empty provides nothing: it has no @meshconnect.hookimpl "
            "function (meshconnect_connectors, meshconnect_functions, meshconnect_stores, "
            "meshconnect_transforms); does the entry point name the module that holds the hooks?"
        ],
    }


def test_a_connector_of_no_kind_or_with_a_model_that_is_no_connector_config_fails(
    plugin_dir: Path,
) -> None:
    """kind="Sink" was loaded and then the connector was nowhere; a plain pydantic model as
    config_model was loaded and failed only when a pipeline used it."""
    make_module(
        plugin_dir,
        "mcplug_specs",
        """
        from pydantic import BaseModel, SecretStr
        from meshconnect import ConnectorConfig, ConnectorSpec, hookimpl

        class C(ConnectorConfig):
            pass

        class Plain(BaseModel):
            password: SecretStr

        @hookimpl
        def meshconnect_connectors():
            return [
                ConnectorSpec("kindy", "Sink", C, "x:Y"),
                ConnectorSpec("plain", "sink", Plain, "x:Y"),
            ]
        """,
    )
    registry = load_registry(entry_points=eps(("specs", "mcplug_specs")))
    assert [(e.name, e.status, e.reason) for e in registry.entries if e.plugin == "specs"] == [
        ("kindy", "failed", "connector 'kindy': kind must be \"source\" or \"sink\", not 'Sink'"),
        (
            "plain",
            "failed",
            "connector 'plain': config_model Plain is not a meshconnect.ConnectorConfig subclass",
        ),
    ]


def test_an_entry_point_in_a_mistyped_group_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distribution that declares [project.entry-points."meshconnect.plugins"] was never
    seen: its connectors were 'unknown' with no hint why."""
    info = tmp_path / "mcplug_group-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mcplug-group\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[meshconnect.plugins]\ngroup = mcplug_group.plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry(strict=False)
    assert [
        (e.name, e.distribution, e.reason) for e in registry.entries if e.status == "failed"
    ] == [
        (
            "group",
            "mcplug-group",
            "entry point group = 'mcplug_group.plugin' is in the group 'meshconnect.plugins', "
            "which meshconnect does not read: put it under [project.entry-points.meshconnect]",
        )
    ]
    with pytest.raises(PluginError, match="meshconnect does not read"):
        load_registry(strict=True)


def test_an_unknown_connector_names_the_plugins_that_did_not_load(plugin_dir: Path) -> None:
    """With its plugin failed (a pin, an import error) or disabled, a pipeline's connector
    was only 'unknown', as if the package were not installed."""
    make_module(plugin_dir, "mcplug_bad", "raise ImportError('no such library: frobnicate')")
    make_module(plugin_dir, "mcplug_x", PLUGIN_SOURCE.format(name="xsink", requires="[]"))
    policy = PluginPolicy(disabled=["x"])
    registry = load_registry(policy, entry_points=eps(("bad", "mcplug_bad"), ("x", "mcplug_x")))
    with pytest.raises(PluginError) as caught:
        registry.connector("xsink", "sink")
    assert str(caught.value).endswith(
        "; not loaded: plugin 'bad' (failed: ImportError: no such library: frobnicate); "
        "plugin 'x' (disabled: disabled in plugins.toml)"
    )


def test_a_factory_that_makes_the_wrong_kind_of_connector_stops_run_with_one_line(
    tmp_path: Path,
) -> None:
    """A sink class given as a source's factory (or a class that is no connector, or a
    function that returns something else) was loaded, and `run` ended on "the worker stopped
    on an unexpected error" with a traceback of a bare AssertionError."""
    import subprocess

    (tmp_path / "mcplug_kinds.py").write_text(
        "from meshconnect import ConnectorConfig, ConnectorSpec, Sink, hookimpl\n"
        "class C(ConnectorConfig):\n    pass\n"
        "class S(Sink[C]):\n    pass\n"
        "def made(config, context):\n    return object()\n"
        "@hookimpl\n"
        "def meshconnect_connectors():\n"
        "    return [ConnectorSpec('sinkclass', 'source', C, 'mcplug_kinds:S'),\n"
        "            ConnectorSpec('direct', 'source', C, S),\n"
        "            ConnectorSpec('fn', 'sink', C, 'mcplug_kinds:made')]\n"
    )
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["mcplug_kinds.py"]\n')
    registry = load_registry(PluginPolicy.read(tmp_path / "plugins.toml"))
    direct = registry.connectors[("direct", "source")]
    assert (direct.status, direct.reason) == (
        "failed",
        "source connector 'direct': factory S is a Sink, not a meshconnect.Source subclass",
    )
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n')
    cases = {
        "sinkclass": (
            "{connector: sinkclass, config: {}}",
            "file, config: {path: o.jsonl}",
            "source connector 'sinkclass': factory S is a Sink, not a meshconnect.Source subclass",
        ),
        "fn": (
            "{connector: file, config: {path: in.jsonl}}",
            "fn, config: {}",
            "sink connector 'fn': its factory made <object object at",
        ),
    }
    for name, (source, sink, message) in cases.items():
        (tmp_path / f"{name}.yaml").write_text(
            f"pipelines:\n  - name: p\n    source: {source}\n    topic: t\n"
            f"    sinks:\n      - {{name: o, connector: {sink}}}\n"
        )
        command = [sys.executable, "-m", "meshconnect", "--plugins", "plugins.toml"]
        command += ["--state", f"state-{name}", "run", f"{name}.yaml"]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        assert message in done.stderr, done.stderr


def test_a_transform_of_the_wrong_form_is_reported_not_a_traceback(tmp_path: Path) -> None:
    """A transform whose options_model is no pydantic model, or whose factory returns
    something that is no Transform, was loaded, and `validate` of a pipeline using it died
    with an AttributeError traceback."""
    (tmp_path / "mcplug_tr.py").write_text(
        "from pydantic import BaseModel\n"
        "from meshconnect import TransformSpec, hookimpl\n"
        "class O(BaseModel):\n    n: int = 1\n"
        "def make(options, compiler):\n    return 42\n"
        "@hookimpl\n"
        "def meshconnect_transforms():\n"
        "    return [TransformSpec('dictopts', dict, make), TransformSpec('nat', O, make)]\n"
    )
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["mcplug_tr.py"]\n')
    registry = load_registry(PluginPolicy.read(tmp_path / "plugins.toml"))
    entry = registry.transforms["dictopts"]
    assert (entry.status, entry.reason) == (
        "failed",
        "transform 'dictopts': options_model must be a pydantic BaseModel subclass, "
        "not <class 'dict'>",
    )
    (tmp_path / "p.yaml").write_text(
        "pipelines:\n  - name: p\n    source: {connector: file, config: {path: in.jsonl}}\n"
        "    transforms:\n      - {type: nat}\n"
        "    sinks:\n      - {connector: file, config: {path: out.jsonl}}\n"
    )
    result = CliRunner().invoke(
        cli, ["--plugins", str(tmp_path / "plugins.toml"), "validate", str(tmp_path / "p.yaml")]
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert (
        "p.yaml:5:16: pipelines[0].transforms[0].type: transform 'nat': its factory returned "
        "42, not a meshconnect.Transform"
    ) in result.output
    schema = CliRunner().invoke(cli, ["--plugins", str(tmp_path / "plugins.toml"), "schema"])
    assert schema.exit_code == 0, schema.output
    assert '"const": "nat"' in schema.output and '"const": "dictopts"' not in schema.output
