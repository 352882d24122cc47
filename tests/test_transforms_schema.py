"""validate: JSON Schemas from a schema directory next to the pipeline file."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from test_transforms import build, chain, fails_unchanged

from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import ConfigError, DataError, ValidationErrors
from meshconnect.plugins import load_registry
from meshconnect.records import Record
from meshconnect.transforms import BuildContext, Transform, building

ORDER = {
    "type": "object",
    "required": ["id", "items"],
    "properties": {
        "id": {"type": "integer"},
        "customer": {"$ref": "customer.json"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
            },
        },
    },
}
CUSTOMER = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
REFUND_YAML = """
$schema: https://json-schema.org/draft/2020-12/schema
type: object
required: [order_id]
"""


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    directory = tmp_path / "schemas"
    (directory / "cdc").mkdir(parents=True)
    (directory / "order.json").write_text(json.dumps(ORDER))
    (directory / "customer.json").write_text(json.dumps(CUSTOMER))
    (directory / "cdc" / "refund.yaml").write_text(REFUND_YAML)
    (directory / "README.txt").write_text("not a schema")
    return tmp_path


def make(base: Path, **options: object) -> Transform:
    with building(BuildContext(base)):
        return build("validate", directory="schemas", **options)


def good_order() -> Record:
    return Record({"id": 1, "items": [{"sku": "a", "qty": 2}], "customer": {"email": "a@b.c"}})


def test_validate_passes_a_record_that_matches(schemas: Path) -> None:
    kept, failures = chain(make(schemas, schema="order.json")).process([good_order()])

    assert (len(kept), failures) == (1, [])


def test_validate_names_the_failing_value_and_the_schema(schemas: Path) -> None:
    record = Record({"id": 1, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}]})

    fails_unchanged(
        make(schemas, schema="order.json"),
        record,
        r"validate: data.items\[1\].qty: 0 is less than the minimum of 1 "
        r"\(schema order.json, at properties/items/items/properties/qty/minimum\)",
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"items": []}, "validate: data: 'id' is a required property"),
        ({"id": "1", "items": []}, "validate: data.id: '1' is not of type 'integer'"),
        ("text", "validate: data: 'text' is not of type 'object'"),
    ],
)
def test_validate_missing_fields_and_wrong_types_are_data_errors(
    schemas: Path, data: object, message: str
) -> None:
    fails_unchanged(make(schemas, schema="order.json"), Record(data), message)


def test_validate_passes_a_tombstone(schemas: Path) -> None:
    record = Record(None)

    assert make(schemas, schema="order.json").apply(record) is record
    assert record.data is None


def test_validate_follows_refs_between_schemas_of_the_directory(schemas: Path) -> None:
    record = good_order()
    record.data["customer"]["email"] = 5

    fails_unchanged(
        make(schemas, schema="order.json"), record, "data.customer.email: 5 is not of type"
    )


def test_validate_checks_formats_only_when_asked(schemas: Path) -> None:
    record = good_order()
    record.data["customer"]["email"] = "not-an-email"

    kept, _ = chain(make(schemas, schema="order.json")).process([record])
    fails_unchanged(make(schemas, schema="order.json", formats=True), record, "is not a 'email'")

    assert len(kept) == 1


def test_validate_picks_the_schema_by_template(schemas: Path) -> None:
    transform = make(schemas, schema="{type}")
    records = [
        Record({"order_id": 1}, type="cdc/refund.yaml"),
        Record({}, type="cdc/refund.yaml"),
        Record({}, type="nope.json"),
    ]

    kept, failures = chain(transform).process(records)

    assert (len(kept), [str(f.error) for f in failures]) == (
        1,
        [
            "validate: data: 'order_id' is a required property (schema cdc/refund.yaml, "
            "at required)",
            f"validate: no schema 'nope.json' in {schemas / 'schemas'} (it has: cdc/refund.yaml, "
            "customer.json, order.json)",
        ],
    )


def test_validate_a_nested_field(schemas: Path) -> None:
    transform = make(schemas, schema="customer.json", field="data.customer")

    fails_unchanged(transform, Record({"customer": {"email": 1}}), "data.customer.email: 1")


def test_validate_with_when(schemas: Path) -> None:
    records = [Record({"k": 1}), Record({"k": 2})]

    kept, failures = chain(make(schemas, schema="order.json"), when=["data.k == 2"]).process(
        records
    )

    assert ([r.data for r in kept], [f.record.data for f in failures]) == ([{"k": 1}], [{"k": 2}])


@pytest.mark.parametrize(
    ("setup", "options", "message"),
    [
        (lambda d: None, {"directory": "nowhere"}, "nowhere is not a directory"),
        (lambda d: (d / "x.json").write_text("{"), {}, "x.json: cannot be read"),
        (lambda d: (d / "x.json").write_text('{"type": 5}'), {}, "not a valid schema at type"),
        (lambda d: (d / "x.json").write_text("[1]"), {}, "a JSON Schema is an object"),
        (lambda d: None, {"schema": "missing.json"}, "schema: no 'missing.json'"),
    ],
)
def test_validate_bad_schema_directories_fail_at_load(
    schemas: Path, setup: object, options: dict[str, str], message: str
) -> None:
    setup(schemas / "schemas")  # type: ignore[operator]
    options = {"directory": "schemas", "schema": "order.json", **options}

    with building(BuildContext(schemas)), pytest.raises(ConfigError, match=message):
        build("validate", **options)


def test_validate_resolves_the_directory_next_to_the_pipeline_file(
    schemas: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (schemas / "p.yaml").write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                transforms:
                  - {type: validate, directory: schemas, schema: order.json}
            """
        )
    )
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    loaded = load_pipeline_files([schemas / "p.yaml"], load_registry(), env={})
    _, failures = loaded.pipelines[0].chain.process([Record({"id": "x", "items": []})])

    assert [f.stage for f in failures] == ["transforms[0] (validate)"]


def test_a_missing_schema_directory_is_a_located_validation_problem(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                transforms:
                  - {type: validate, directory: schemas, schema: order.json}
            """
        )
    )

    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files([tmp_path / "p.yaml"], load_registry(), env={})

    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'p.yaml'}:6:9: pipelines[0].transforms[0]: directory: "
        f"{tmp_path / 'schemas'} is not a directory"
    ]


# -- patterns run on RE2 ---------------------------------------------------------------------------

REDOS = {
    "type": "object",
    "properties": {"p": {"type": "string", "pattern": "^(a+)+$"}},
    "patternProperties": {"^(b+)+$": {"type": "integer"}},
    "additionalProperties": {"type": "string"},
}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"p": "a" * 25 + "!"}, r"does not match '\^\(a\+\)\+\$'"),
        ({"b" * 25 + "!": 1}, "1 is not of type 'string'"),  # not a patternProperties key
    ],
)
def test_a_schema_pattern_cannot_stall_the_worker(
    tmp_path: Path, data: object, message: str
) -> None:
    """jsonschema searches with Python's backtracking `re`: `^(a+)+$` took seconds for 25
    `a` and a `!` in a record, doubling with each further `a` (hours for 40). On RE2 it is
    linear, like `matches` in expressions."""
    import time

    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "s.json").write_text(json.dumps(REDOS))
    transform = make(tmp_path, schema="s.json")

    started = time.monotonic()
    with pytest.raises(DataError, match=message):
        transform.apply(Record(data))

    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"pattern": "(?<=a)b"}, "the pattern at pattern"),
        ({"properties": {"x": {"pattern": "(a)\\1"}}}, "the pattern at properties/x/pattern"),
        ({"items": {"patternProperties": {"(?=x)": {}}}}, "at items/patternProperties/(?=x)"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_at_load(
    tmp_path: Path, schema: dict[str, object], where: str
) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "s.json").write_text(json.dumps(schema))

    with building(BuildContext(tmp_path)), pytest.raises(ConfigError, match=re.escape(where)):
        build("validate", directory="schemas", schema="s.json")


def test_patterns_in_data_keywords_are_not_taken_for_regular_expressions(tmp_path: Path) -> None:
    schema = {"const": {"pattern": "(?<=a)b"}, "properties": {"pattern": {"type": "string"}}}
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "s.json").write_text(json.dumps(schema))

    transform = make(tmp_path, schema="s.json")

    with pytest.raises(DataError, match="was expected"):
        transform.apply(Record({"pattern": "x"}))
