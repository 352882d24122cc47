"""Loading and validating pipeline files: every problem as ``FILE:LINE:COL: message``.

The registry here holds small test plugins (a ``file`` source and sink, a ``db`` sink, a
``canal`` source whose extra is missing, and ``filter``/``mask`` transforms), so these tests
check the loader alone, whatever the built-in plugins do.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from meshconnect import ConnectorConfig, ConnectorSpec, Transform, TransformSpec, hookimpl
from meshconnect.config.interpolate import interpolate
from meshconnect.config.loader import LoadedConfig, load_pipeline_files, redacted_config
from meshconnect.config.model import Duration
from meshconnect.config.yamlpos import Pos, parse_yaml
from meshconnect.errors import ValidationErrors
from meshconnect.expr import Compiler
from meshconnect.plugins import Registry
from meshconnect.records import Record

# -- test plugins ------------------------------------------------------------------------------


class FileConfig(ConnectorConfig):
    path: str
    format: Literal["json", "text"] = "json"
    poll_interval: Duration = 1.0


class DbConfig(ConnectorConfig):
    url: str
    table: str
    port: int = 5432
    password: SecretStr | None = None


class FilterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    where: str


class MaskOptions(BaseModel):  # sets no `extra`: the loader still rejects unknown options
    fields: list[str]
    mode: Literal["full", "partial"] = "full"


class Filter(Transform):
    def __init__(self, options: FilterOptions, compiler: Compiler) -> None:
        self.keep = compiler.predicate(options.where, field="where")

    def apply(self, record: Record) -> Record | None:
        return record if self.keep(record) else None


class Mask(Transform):
    def __init__(self, options: MaskOptions, compiler: Compiler) -> None:
        self.fields = options.fields

    def apply(self, record: Record) -> Record:
        return record


class Plugin:
    @hookimpl
    def meshconnect_connectors(self) -> list[ConnectorSpec]:
        return [
            ConnectorSpec("file", "source", FileConfig, "tests:NotImported"),
            ConnectorSpec("file", "sink", FileConfig, "tests:NotImported"),
            ConnectorSpec("db", "sink", DbConfig, "tests:NotImported"),
            ConnectorSpec(
                "canal",
                "source",
                FileConfig,
                "tests:NotImported",
                requires=("meshconnect_tests_no_such_module",),
                extra="mysql",
            ),
        ]

    @hookimpl
    def meshconnect_transforms(self) -> list[TransformSpec]:
        return [
            TransformSpec("filter", FilterOptions, Filter),
            TransformSpec("mask", MaskOptions, Mask),
        ]


@pytest.fixture
def registry() -> Registry:
    from meshconnect.mesh import plugin as stores

    registry = Registry()
    registry.register(Plugin(), "test-plugin")
    registry.register(stores, "stores")
    return registry


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own directory, so messages name ``p.yaml`` as given."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = "p.yaml") -> str:
    Path(name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return name


def problems(registry: Registry, *files: str, env: dict[str, str] | None = None) -> list[str]:
    """``str()`` of every problem that loading ``files`` reports."""
    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files(list(files or ["p.yaml"]), registry, env=env or {})
    return [str(problem) for problem in caught.value.problems]


def load(registry: Registry, *files: str, env: dict[str, str] | None = None) -> LoadedConfig:
    return load_pipeline_files(list(files or ["p.yaml"]), registry, env=env or {})


# -- a valid file ------------------------------------------------------------------------------


def test_a_valid_file_loads_into_pipelines_ready_to_run(registry: Registry) -> None:
    write("""
        store: sqlite:///.meshconnect/mesh.db
        pipelines:
          - name: orders
            source:
              connector: file
              config: {path: ./orders.jsonl}
            transforms:
              - type: filter
                where: "data.total >= 10"
              - type: mask
                fields: [data.email]
                when: "data.country == 'DE'"
            sinks:
              - name: archive
                connector: file
                config: {path: ./out.jsonl, poll_interval: 200ms}
              - connector: db
                topics: ["orders*"]
                batch_size: 10
                config: {url: "sqlite:///out.db", table: orders}
                transforms:
                  - type: mask
                    fields: [data.id]
    """)

    loaded = load(registry)

    assert loaded.store == "sqlite:///.meshconnect/mesh.db"
    (orders,) = loaded.pipelines
    assert (orders.name, orders.file, orders.base_dir) == ("orders", "p.yaml", str(Path.cwd()))
    assert orders.source is not None and orders.source.config == FileConfig(path="./orders.jsonl")
    assert orders.chain.stages == ["transforms[0] (filter)", "transforms[1] (mask)"]
    assert orders.chain.whens[0] is None and orders.chain.whens[1] is not None
    assert orders.topic.is_literal and orders.topic.literal == "orders"  # the name by default
    archive, db = orders.sinks
    assert (archive.name, archive.config.poll_interval, archive.topics) == ("archive", 0.2, None)
    assert (db.name, db.topics, db.batch_size) == ("db", ["orders*"], 10)
    assert db.chain.stages == ["sinks[1].transforms[0] (mask)"]


def test_a_pipeline_may_have_only_sinks(registry: Registry) -> None:
    write("""
        pipelines:
          - name: reader
            sinks: [{connector: file, topics: [orders], config: {path: out.jsonl}}]
    """)

    assert load(registry).pipelines[0].source is None


# -- each kind of problem ----------------------------------------------------------------------


def test_a_yaml_syntax_error_points_at_the_offending_character(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: file
    """)

    assert problems(registry) == [
        "p.yaml:4:1: invalid YAML: while parsing a flow mapping at line 3: "
        "did not find expected ',' or '}'"
    ]


def test_an_unknown_key_points_at_the_key_with_a_did_you_mean(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: file
                topcs: [orders]
                config: {path: out.jsonl}
    """)

    assert problems(registry) == [
        "p.yaml:5:9: pipelines[0].sinks[0].topcs: unknown key 'topcs' (did you mean 'topics'?)"
    ]


def test_an_unknown_connector_config_key_gets_a_did_you_mean_from_the_connector_model(
    registry: Registry,
) -> None:
    write("""
        pipelines:
          - name: orders
            source:
              connector: file
              config:
                pth: in.jsonl
    """)

    assert problems(registry) == [
        "p.yaml:5:7: pipelines[0].source.config.path: missing required field 'path'",
        "p.yaml:6:9: pipelines[0].source.config.pth: unknown key 'pth' (did you mean 'path'?)",
    ]


def test_a_missing_connector_field_is_reported_by_its_path_at_the_config_key(
    registry: Registry,
) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: file
                config: {path: out.jsonl}
              - connector: db
                config:
                  url: sqlite:///out.db
    """)

    assert problems(registry) == [
        "p.yaml:7:9: pipelines[0].sinks[1].config.table: missing required field 'table'"
    ]


def test_an_ill_typed_value_points_at_the_value(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: db
                batch_size: lots
                config: {url: "sqlite:///out.db", table: orders, port: [5432]}
    """)

    assert problems(registry) == [
        "p.yaml:5:21: pipelines[0].sinks[0].batch_size: "
        "Input should be a valid integer, unable to parse string as an integer",
        "p.yaml:6:64: pipelines[0].sinks[0].config.port: Input should be a valid integer",
    ]


def test_an_unknown_connector_lists_the_installed_ones(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source:
              connector: fiel
    """)

    assert problems(registry) == [
        "p.yaml:4:18: pipelines[0].source.connector: "
        "unknown source connector 'fiel' (did you mean 'file'? installed: canal, file)"
    ]


def test_a_connector_whose_extra_is_missing_says_what_to_install(registry: Registry) -> None:
    write("""
        pipelines:
          - name: cdc
            source: {connector: canal, config: {path: x}}
    """)

    assert problems(registry) == [
        "p.yaml:3:25: pipelines[0].source.connector: source connector 'canal' is installed "
        "without its extra: needs meshconnect_tests_no_such_module: "
        "pip install 'meshconnect[mysql]'"
    ]


def test_an_unknown_transform_and_an_unknown_option_are_reported(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
            transforms:
              - type: filtre
              - type: mask
                fields: [data.email]
                mdoe: full
    """)

    assert problems(registry) == [
        "p.yaml:5:15: pipelines[0].transforms[0].type: "
        "unknown transform 'filtre' (did you mean 'filter'? installed: filter, mask)",
        "p.yaml:8:9: pipelines[0].transforms[1].mdoe: unknown key 'mdoe' (did you mean 'mode'?)",
    ]


def test_an_undefined_environment_variable_is_reported_at_its_scalar(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: db
                config: {url: "${env:DB_URL}", table: orders}
    """)

    assert problems(registry) == [
        "p.yaml:5:23: pipelines[0].sinks[0].config.url: undefined environment variable DB_URL "
        "(set it, or write ${env:DB_URL:-default})"
    ]


def test_an_unsafe_expression_is_reported_at_its_column_in_the_file(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
            transforms:
              - type: filter
                where: "data.__class__"
    """)

    assert problems(registry) == [
        "p.yaml:6:22: pipelines[0].transforms[0].where: "  # at the `__class__`
        "names starting with '_' are not allowed: '__class__'"
    ]


def test_a_malformed_expression_is_reported_inside_a_plain_scalar(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
            transforms:
              - type: mask
                fields: [data.email]
                when: data.x >
    """)

    (problem,) = problems(registry)

    assert problem.startswith("p.yaml:7:23: pipelines[0].transforms[0].when: ")  # after `>`


def test_a_bad_topic_template_is_reported_at_the_topic(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
            topic: "cdc.{data.table"
    """)

    (problem,) = problems(registry)

    assert problem.startswith("p.yaml:4:17: pipelines[0].topic: ")  # at the `{`


def test_every_problem_in_a_file_is_reported_in_file_order(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source: {connector: fiel}
            transforms:
              - type: filter
                where: "data.x >"
            sinks:
              - connector: db
                batch_size: lots
                config: {url: "${env:NOPE}"}
    """)

    assert [p.split(": ")[0] for p in problems(registry)] == [
        "p.yaml:3:25",  # unknown connector
        "p.yaml:6:25",  # malformed expression, at its end
        "p.yaml:9:21",  # batch_size
        "p.yaml:10:9",  # missing table, at the `config:` key
        "p.yaml:10:23",  # undefined variable
    ]


def test_a_pipeline_with_neither_source_nor_sinks_is_a_problem(registry: Registry) -> None:
    write("""
        pipelines:
          - name: idle
    """)

    assert problems(registry) == [
        "p.yaml:2:5: pipelines[0]: a pipeline needs a source, sinks, or both"
    ]


def test_a_duplicate_yaml_key_is_reported_at_the_second(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            name: orders2
            source: {connector: file, config: {path: in.jsonl}}
    """)

    assert problems(registry) == ["p.yaml:3:5: duplicate key 'name' (the later value wins)"]


def test_duplicate_pipeline_names_across_files_are_reported_at_the_second(
    registry: Registry,
) -> None:
    write(
        """
        pipelines:
          - name: orders
            source: {connector: file, config: {path: a.jsonl}}
        """,
        "a.yaml",
    )
    write(
        """
        pipelines:
          - name: orders
            source: {connector: file, config: {path: b.jsonl}}
        """,
        "b.yaml",
    )

    assert problems(registry, "a.yaml", "b.yaml") == [
        "b.yaml:2:11: pipelines[0].name: duplicate pipeline name 'orders' (first at a.yaml:2:11)"
    ]


def test_sinks_need_distinct_names_within_a_pipeline(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - {connector: file, config: {path: a.jsonl}}
              - {connector: file, config: {path: b.jsonl}}
    """)

    assert problems(registry) == [
        "p.yaml:5:21: pipelines[0].sinks[1].connector: duplicate sink name 'file' "
        "(sinks[0] has it too; give each sink its own 'name:')"
    ]


def test_files_of_one_run_must_name_the_same_store(registry: Registry) -> None:
    write("store: sqlite:///a.db\npipelines: []\n", "a.yaml")
    write("store: sqlite:///b.db\npipelines: []\n", "b.yaml")

    assert problems(registry, "a.yaml", "b.yaml") == [
        "b.yaml:1:8: store: this file names a different store than a.yaml:1:8; "
        "the files of one run share one"
    ]


def test_an_unreadable_file_is_a_problem(registry: Registry) -> None:
    assert problems(registry, "missing.yaml") == [
        "missing.yaml:1:1: cannot read the pipeline file: No such file or directory"
    ]


# -- interpolation -----------------------------------------------------------------------------


def test_env_defaults_file_secrets_and_escapes_are_interpolated(registry: Registry) -> None:
    Path("secrets").mkdir()
    Path("secrets/db_url").write_text("sqlite:///secret.db\n", encoding="utf-8")
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: db
                config:
                  url: ${file:secrets/db_url}
                  table: ${env:TABLE:-orders}
              - connector: file
                config: {path: "$${HOME}/${env:DIR}/out.jsonl"}
    """)

    db, file = load(registry, env={"DIR": "data"}).pipelines[0].sinks

    assert db.config.url == "sqlite:///secret.db"
    assert db.config.table == "orders"
    assert file.config.path == "${HOME}/data/out.jsonl"


def test_a_whole_scalar_reference_stays_a_string_that_pydantic_converts(
    registry: Registry,
) -> None:
    """``${env:PORT}`` gives the string "5432" (never re-read as YAML); an int field takes it."""
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: db
                config: {url: "sqlite://", table: "${env:TABLE}", port: "${env:PORT}"}
    """)

    (db,) = load(registry, env={"TABLE": "0123", "PORT": "5432"}).pipelines[0].sinks

    assert (db.config.table, db.config.port) == ("0123", 5432)


def test_an_unreadable_secret_file_is_a_problem(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks: [{connector: db, config: {url: "${file:nope.txt}", table: t}}]
    """)

    (problem,) = problems(registry)

    assert problem.startswith("p.yaml:3:43: pipelines[0].sinks[0].config.url: ")
    assert "cannot read secret file" in problem and "nope.txt" in problem


def test_interpolation_records_the_paths_of_secret_values() -> None:
    result = interpolate({"a": ["${env:X}", "$${x}", "plain"]}, env={"X": "v"})

    assert result.data == {"a": ["v", "${x}", "plain"]}
    assert set(result.secrets) == {("a", 0)}


# -- secrets -----------------------------------------------------------------------------------

SECRET = "Zebra s3cr3t 4471"  # not a valid expression either


def test_a_secret_value_never_appears_in_any_message(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            source:
              connector: ${env:SECRET}
            transforms:
              - type: filter
                where: "${env:SECRET}"
            sinks:
              - connector: db
                batch_size: ${env:SECRET}
                topics: "${env:SECRET}"
                config:
                  url: sqlite://
                  table: t
                  port: "${env:SECRET}"
              - connector: file
                config: {path: x, poll_interval: "${env:SECRET}", format: "${env:SECRET}"}
    """)

    found = problems(registry, env={"SECRET": SECRET})

    assert len(found) == 7
    assert not [p for p in found if SECRET in p or "Zebra" in p]


def test_redacted_config_masks_interpolated_values_and_secret_fields(registry: Registry) -> None:
    write("""
        pipelines:
          - name: orders
            sinks:
              - connector: db
                config: {url: "sqlite://${env:HOST}", table: t, password: hunter2}
    """)

    shown: dict[str, Any] = redacted_config(load(registry, env={"HOST": "db.internal"}))

    config = shown["pipelines"][0]["sinks"][0]["config"]
    assert (config["url"], config["password"], config["table"]) == ("**********",) * 2 + ("t",)


# -- positions ---------------------------------------------------------------------------------


def test_positions_are_recorded_for_keys_and_values() -> None:
    doc = parse_yaml("a:\n  - b: 'x y'\n", "f.yaml")

    assert doc.data == {"a": [{"b": "x y"}]}
    assert (doc.keys[("a", 0, "b")], doc.values[("a", 0, "b")]) == (Pos(2, 5), Pos(2, 8))
    assert str(doc.inner_location(("a", 0, "b"), 2)) == "f.yaml:2:11"


def test_a_store_url_for_no_installed_backend_is_reported_at_store(registry: Registry) -> None:
    write("""
        store: "kafka://localhost:9092"
        pipelines:
          - name: orders
            source: {connector: file, config: {path: in.jsonl}}
    """)

    assert problems(registry) == [
        "p.yaml:1:8: store: no mesh store backend for 'kafka':// "
        "(installed: memory, nats, redis, rediss, sqlite)"
    ]
