"""The built-in transforms filter, mask (redact, hash) and insert_field, the chain and field
paths; the registration of every built-in. The other transforms have their own
``test_transforms_*.py``."""

from __future__ import annotations

import base64
import copy
import hashlib
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from meshconnect.api import TransformSpec
from meshconnect.config.loader import load_pipeline_files
from meshconnect.errors import ConfigError, DataError, ValidationErrors
from meshconnect.expr import Compiler
from meshconnect.plugins import load_registry
from meshconnect.records import Record
from meshconnect.transforms import Transform, TransformChain
from meshconnect.transforms.builtin import meshconnect_transforms
from meshconnect.transforms.paths import parse_path

SPECS: dict[str, TransformSpec] = {spec.name: spec for spec in meshconnect_transforms()}

#: Every built-in transform (issue 3, item 1).
BUILTIN = [
    "cast",
    "drop_fields",
    "extract_field",
    "filter",
    "flatten",
    "hoist_field",
    "insert_field",
    "mask",
    "replace_field",
    "route",
    "set_attributes",
    "set_key",
    "template",
    "timestamp_convert",
    "unflatten",
    "validate",
]


def build(name: str, **options: Any) -> Transform:
    """A transform built the way the loader builds it: validated options, then the factory."""
    spec = SPECS[name]
    transform: Transform = spec.factory(spec.options_model(**options), Compiler())
    return transform


def chain(*steps: Transform, when: list[str | None] | None = None) -> TransformChain:
    compiler = Compiler()
    whens = [compiler.predicate(w, field="when") if w else None for w in when or []]
    return TransformChain(list(steps), whens or None)


def order(**data: Any) -> Record:
    return Record({"id": 7, "total": 12, "email": "ann@example.com", **data})


def snapshot(record: Record) -> Any:
    """Everything about a record, deeply copied (to see that a failure changed nothing)."""
    return copy.deepcopy((record.to_dict(), record.topic))


def fails_unchanged(transform: Transform, record: Record, match: str) -> None:
    """``transform`` raises a DataError matching ``match`` on ``record`` and leaves it as it
    was (so the dead-letter topic gets the record as it came in)."""
    before = snapshot(record)
    with pytest.raises(DataError, match=match):
        transform.apply(record)
    assert snapshot(record) == before


# -- registration ---------------------------------------------------------------------------------


def test_the_hook_provides_the_builtin_transforms() -> None:
    assert sorted(SPECS) == BUILTIN


def test_the_transforms_load_through_the_entry_point() -> None:
    import importlib.metadata

    from meshconnect.plugins import load_registry

    entry_points = [
        ep
        for ep in importlib.metadata.entry_points(group="meshconnect")
        if ep.value == "meshconnect.transforms.builtin"
    ]

    registry = load_registry(entry_points=entry_points, strict=True)

    assert sorted(registry.transforms) == BUILTIN


@pytest.mark.parametrize("name", BUILTIN)
def test_options_leave_type_and_when_to_the_chain(name: str) -> None:
    fields = SPECS[name].options_model.model_fields

    assert not {"type", "when"} & set(fields)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("filter", {"where": "true", "extra": 1}),
        ("mask", {"fields": ["data.x"], "extra": 1}),
        ("insert_field", {"field": "data.x", "value": 1, "extra": 1}),
    ],
)
def test_unknown_options_are_rejected(name: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="extra"):
        SPECS[name].options_model(**options)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("filter", {"where": "true"}),
        ("mask", {"fields": ["data.x"]}),
        ("insert_field", {"field": "data.x", "value": 1}),
    ],
)
def test_transforms_know_their_type_name(name: str, options: dict[str, Any]) -> None:
    assert build(name, **options).type_name == name


# -- filter ---------------------------------------------------------------------------------------


def test_filter_keeps_records_for_which_where_is_true() -> None:
    records = [order(total=5), order(total=10), order(total=50)]

    kept, _ = chain(build("filter", where="data.total >= 10")).process(records)

    assert [r.data["total"] for r in kept] == [10, 50]


def test_filter_drops_records_where_the_field_is_missing() -> None:
    record = Record({"other": 1})

    kept, _ = chain(build("filter", where="data.total >= 10")).process([record])

    assert kept == []


def test_filter_on_nested_paths_and_attributes() -> None:
    records = [
        Record({"customer": {"address": {"country": "DE"}}}, type="order.created"),
        Record({"customer": {"address": {"country": "DE"}}}, type="order.deleted"),
        Record({"customer": {"address": {"country": "FR"}}}, type="order.created"),
    ]
    where = "data.customer.address.country == 'DE' and endsWith(type, '.created')"

    kept, _ = chain(build("filter", where=where)).process(records)

    assert kept == [records[0]]


def test_filter_with_a_bad_expression_fails_at_build_time() -> None:
    with pytest.raises(ConfigError, match="where: names starting with '_'"):
        build("filter", where="data.__class__")


def test_filter_wrong_type_is_a_failure_not_a_crash() -> None:
    records = [order(total="ten"), order(total=20)]

    kept, failures = chain(build("filter", where="data.total >= 10")).process(records)

    assert ([r.data["total"] for r in kept], [f.record.data["total"] for f in failures]) == (
        [20],
        ["ten"],
    )


def test_filter_failure_is_a_data_error_naming_the_stage() -> None:
    _, failures = chain(build("filter", where="data.total >= 10")).process([order(total="x")])

    assert (type(failures[0].error), failures[0].stage) == (DataError, "transforms[0] (filter)")


# -- mask: redact ---------------------------------------------------------------------------------


def test_mask_redacts_a_field() -> None:
    record = order()

    build("mask", fields=["data.email"]).apply(record)

    assert record.data["email"] == "****"


def test_mask_redacts_with_a_custom_replacement() -> None:
    record = order()

    build("mask", fields=["data.email"], replacement="[hidden]").apply(record)

    assert record.data["email"] == "[hidden]"


def test_mask_redacts_nested_fields_and_array_elements() -> None:
    record = Record({"card": {"number": "4111", "cvc": "123"}, "phones": ["+49 1", "+49 2"]})

    build("mask", fields=["data.card.number", "data.phones[1]"]).apply(record)

    assert record.data == {"card": {"number": "****", "cvc": "123"}, "phones": ["+49 1", "****"]}


def test_mask_redacts_a_whole_object() -> None:
    record = Record({"card": {"number": "4111"}, "id": 1})

    build("mask", fields=["data.card"]).apply(record)

    assert record.data == {"card": "****", "id": 1}


def test_mask_leaves_a_missing_field_alone() -> None:
    record = Record({"name": "Ann"})

    build("mask", fields=["data.email", "data.card.number", "data.items[3]"]).apply(record)

    assert record.data == {"name": "Ann"}


def test_mask_leaves_null_alone() -> None:
    record = Record({"email": None})

    build("mask", fields=["data.email"]).apply(record)

    assert record.data == {"email": None}


def test_mask_leaves_a_record_without_data_alone() -> None:
    record = Record(None)

    build("mask", fields=["data.email"]).apply(record)

    assert record.data is None


def test_mask_masks_attributes_and_extensions() -> None:
    record = Record({}, subject="ann@example.com", extensions={"userid": "u-1"})

    build("mask", fields=["subject", "userid"]).apply(record)

    assert (record.subject, record.extensions) == ("****", {"userid": "****"})


def test_mask_inside_a_string_is_a_data_error() -> None:
    record = Record({"a": "just text"})

    with pytest.raises(DataError, match=r"data\.a is a string, not an object"):
        build("mask", fields=["data.a.b"]).apply(record)


def test_mask_inside_non_object_data_is_a_data_error() -> None:
    record = Record("plain text payload")

    with pytest.raises(DataError, match="data is a string, not an object"):
        build("mask", fields=["data.email"]).apply(record)


def test_mask_wrong_type_is_a_failure_from_the_chain() -> None:
    records = [Record({"a": "text"}), Record({"a": {"b": "secret"}})]

    kept, failures = chain(build("mask", fields=["data.a.b"])).process(records)

    assert ([r.data for r in kept], [f.record.data for f in failures]) == (
        [{"a": {"b": "****"}}],
        [{"a": "text"}],
    )


def test_mask_changes_nothing_in_a_record_it_fails_on() -> None:
    record = Record({"email": "ann@example.com", "a": "text"})

    with pytest.raises(DataError):
        build("mask", fields=["data.email", "data.a.b"]).apply(record)

    assert record.data == {"email": "ann@example.com", "a": "text"}


def test_mask_of_overlapping_paths_masks_the_outer_one() -> None:
    record = Record({"items": [{"sku": "a"}]})

    build("mask", fields=["data.items[-1]", "data.items[0].sku"]).apply(record)

    assert record.data == {"items": ["****"]}


def test_mask_needs_at_least_one_field() -> None:
    with pytest.raises(ValidationError, match="at least 1 item"):
        SPECS["mask"].options_model(fields=[])


def test_mask_rejects_an_invalid_path_by_its_position() -> None:
    with pytest.raises(ValidationError, match=r"fields\.1\n.*names starting with '_'"):
        SPECS["mask"].options_model(fields=["data.email", "data._secret"])


# -- mask: hash -----------------------------------------------------------------------------------


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_mask_hash_is_the_sha256_of_salt_and_value() -> None:
    record = order()

    build("mask", fields=["data.email"], mode="hash", salt="pepper").apply(record)

    assert record.data["email"] == sha256("pepper" + "ann@example.com")


def test_mask_hash_without_salt_hashes_the_value() -> None:
    record = order()

    build("mask", fields=["data.email"], mode="hash").apply(record)

    assert record.data["email"] == sha256("ann@example.com")


def test_mask_hash_of_a_number_hashes_its_json() -> None:
    record = Record({"account": 12345})

    build("mask", fields=["data.account"], mode="hash", salt="s").apply(record)

    assert record.data["account"] == sha256("s12345")


def test_mask_hash_of_an_object_hashes_its_sorted_json() -> None:
    record = Record({"card": {"y": 2, "x": 1}})

    build("mask", fields=["data.card"], mode="hash").apply(record)

    assert record.data["card"] == sha256('{"x":1,"y":2}')


def test_mask_hash_of_nested_field() -> None:
    record = Record({"customer": {"email": "ann@example.com"}})

    build("mask", fields=["data.customer.email"], mode="hash", salt="pepper").apply(record)

    assert record.data["customer"]["email"] == sha256("pepperann@example.com")


def test_mask_salt_is_never_shown() -> None:
    options = SPECS["mask"].options_model(fields=["data.email"], mode="hash", salt="pepper")

    shown = repr(options) + str(options) + options.model_dump_json()

    assert "pepper" not in shown


def test_mask_replacement_does_not_apply_to_hash() -> None:
    with pytest.raises(ValidationError, match="replacement only applies to modes redact and typed"):
        SPECS["mask"].options_model(fields=["data.email"], mode="hash", replacement="x")


def test_mask_salt_does_not_apply_to_redact() -> None:
    with pytest.raises(ValidationError, match="salt only applies to mode hash"):
        SPECS["mask"].options_model(fields=["data.email"], salt="pepper")


# -- insert_field ---------------------------------------------------------------------------------


def test_insert_field_sets_a_value() -> None:
    record = order()

    build("insert_field", field="data.region", value="eu").apply(record)

    assert record.data["region"] == "eu"


def test_insert_field_overwrites_an_existing_value() -> None:
    record = order()

    build("insert_field", field="data.total", value=0).apply(record)

    assert record.data["total"] == 0


def test_insert_field_creates_missing_objects() -> None:
    record = Record({"id": 1})

    build("insert_field", field="data.meta.origin.region", value="eu").apply(record)

    assert record.data == {"id": 1, "meta": {"origin": {"region": "eu"}}}


def test_insert_field_leaves_a_tombstone_alone_but_sets_its_attributes() -> None:
    record = Record(None)

    build("insert_field", field="data.region", value="eu").apply(record)
    build("insert_field", field="data.region", template="{source}").apply(record)
    build("insert_field", field="subject", from_="data.id").apply(record)
    build("insert_field", field="tenant", value="t1").apply(record)

    assert (record.data, record.subject, record.extensions) == (None, None, {"tenant": "t1"})


def test_insert_field_sets_inside_an_array_element() -> None:
    record = Record({"items": [{"sku": "a"}]})

    build("insert_field", field="data.items[0].qty", value=1).apply(record)

    assert record.data == {"items": [{"sku": "a", "qty": 1}]}


def test_insert_field_can_set_null() -> None:
    record = order()

    build("insert_field", field="data.email", value=None).apply(record)

    assert record.data["email"] is None


def test_insert_field_gives_each_record_its_own_copy_of_an_object() -> None:
    transform = build("insert_field", field="data.tags", value={"list": [1]})
    first, second = Record({}), Record({})
    transform.apply(first)
    transform.apply(second)

    first.data["tags"]["list"].append(2)

    assert second.data["tags"] == {"list": [1]}


def test_insert_field_sets_an_extension() -> None:
    record = order()

    build("insert_field", field="partitionkey", value="p-1").apply(record)

    assert record.extensions == {"partitionkey": "p-1"}


def test_insert_field_sets_an_attribute() -> None:
    record = order()

    build("insert_field", field="subject", value="orders").apply(record)

    assert record.subject == "orders"


def test_insert_field_renders_a_template() -> None:
    record = Record({"customer": {"id": 42}, "country": "DE"})

    build("insert_field", field="partitionkey", template="{data.country}-{data.customer.id}").apply(
        record
    )

    assert record.extensions["partitionkey"] == "DE-42"


def test_insert_field_template_into_a_nested_field() -> None:
    record = Record({"first": "Ann", "last": "Lee"})

    build("insert_field", field="data.name.full", template="{data.first} {data.last}").apply(record)

    assert record.data["name"] == {"full": "Ann Lee"}


def test_insert_field_literal_template_is_a_value() -> None:
    record = Record({})

    build("insert_field", field="data.note", template="{{not a placeholder}}").apply(record)

    assert record.data == {"note": "{not a placeholder}"}


def test_insert_field_with_a_bad_template_fails_at_build_time() -> None:
    with pytest.raises(ConfigError, match="template: "):
        build("insert_field", field="data.x", template="{data._secret}")


def test_insert_field_template_failure_leaves_the_record_unchanged() -> None:
    record = Record({"a": 1, "zero": 0})
    transform = build("insert_field", field="data.ratio", template="{data.a / data.zero}")

    with pytest.raises(DataError, match="division by zero"):
        transform.apply(record)

    assert record.data == {"a": 1, "zero": 0}


@pytest.mark.parametrize(
    "options",
    [
        {"field": "data.x"},
        {"field": "data.x", "value": 1, "template": "{data.y}"},
    ],
)
def test_insert_field_needs_exactly_one_of_value_or_template(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of value, template or from"):
        SPECS["insert_field"].options_model(**options)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("subject", 5, "subject takes a string value"),
        ("id", None, "id cannot be null"),
        ("partitionkey", {"a": 1}, "extension partitionkey takes a string"),
        ("specversion", "2.0", "specversion cannot be changed"),
        ("data._x", 1, "names starting with '_'"),
        ("data.", 1, "invalid field path"),
    ],
)
def test_insert_field_checks_field_and_value_at_build_time(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["insert_field"].options_model(field=field, value=value)


def test_insert_field_value_must_be_json() -> None:
    import datetime

    with pytest.raises(ValidationError):
        SPECS["insert_field"].options_model(field="data.day", value=datetime.date(2024, 5, 1))


def test_insert_field_inside_a_string_is_a_failure_from_the_chain() -> None:
    records = [Record({"a": "text"}), Record({"a": {}})]

    kept, failures = chain(build("insert_field", field="data.a.b", value=1)).process(records)

    assert ([r.data for r in kept], [f.record.data for f in failures]) == (
        [{"a": {"b": 1}}],
        [{"a": "text"}],
    )


def test_insert_field_cannot_make_arrays() -> None:
    record = Record({})

    with pytest.raises(DataError, match="arrays are not made"):
        build("insert_field", field="data.items[0].sku", value="a").apply(record)


def test_insert_field_out_of_range_is_a_data_error() -> None:
    record = Record({"items": []})

    with pytest.raises(DataError, match="out of range"):
        build("insert_field", field="data.items[0]", value="a").apply(record)


# -- when -----------------------------------------------------------------------------------------


def test_when_limits_a_transform_to_matching_records() -> None:
    records = [order(country="DE"), order(country="FR")]
    region = build("insert_field", field="data.region", value="eu")

    kept, _ = chain(region, when=["data.country == 'DE'"]).process(records)

    assert [r.data.get("region") for r in kept] == ["eu", None]


def test_when_limits_mask() -> None:
    records = [order(vip=True), order(vip=False)]

    kept, _ = chain(build("mask", fields=["data.email"]), when=["data.vip"]).process(records)

    assert [r.data["email"] for r in kept] == ["****", "ann@example.com"]


def test_when_limits_filter() -> None:
    records = [order(kind="test", total=1), order(kind="real", total=1)]
    only_big = build("filter", where="data.total >= 10")

    kept, _ = chain(only_big, when=["data.kind == 'real'"]).process(records)

    assert [r.data["kind"] for r in kept] == ["test"]


def test_a_failing_when_is_a_failure_from_the_chain() -> None:
    records = [order(total="x"), order(total=20)]
    region = build("insert_field", field="data.region", value="eu")

    kept, failures = chain(region, when=["data.total > 10"]).process(records)

    assert (len(kept), len(failures)) == (1, 1)


# -- a chain of all three -------------------------------------------------------------------------


def test_filter_mask_and_insert_field_in_one_chain() -> None:
    records = [
        Record({"total": 5, "email": "a@x.de", "country": "DE"}),
        Record({"total": 15, "email": "b@x.de", "country": "DE"}),
        Record({"total": 25, "email": "c@x.fr", "country": "FR"}),
        Record({"total": "n/a", "email": "d@x.de", "country": "DE"}),
    ]
    steps = chain(
        build("filter", where="data.total >= 10"),
        build("mask", fields=["data.email"]),
        build("insert_field", field="data.region", value="eu"),
        build("insert_field", field="partitionkey", template="{lower(data.country)}"),
        when=[None, None, "data.country == 'DE'", None],
    )

    kept, failures = steps.process(records)

    assert [(r.data, r.extensions) for r in kept] == [
        ({"total": 15, "email": "****", "country": "DE", "region": "eu"}, {"partitionkey": "de"}),
        ({"total": 25, "email": "****", "country": "FR"}, {"partitionkey": "fr"}),
    ]
    assert [(f.stage, f.record.data["email"]) for f in failures] == [
        ("transforms[0] (filter)", "d@x.de")
    ]


# -- field paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "segments"),
    [
        ("data", "data", ()),
        ("data.email", "data", ("email",)),
        ("data.customer.address.zip", "data", ("customer", "address", "zip")),
        ("data.items[0].sku", "data", ("items", 0, "sku")),
        ("data.items[-1]", "data", ("items", -1)),
        ("data['weird key']", "data", ("weird key",)),
        ('data["it\\"s"]', "data", ('it"s',)),
        ("data.first-name", "data", ("first-name",)),
        ("subject", "attribute", ()),
        ("partitionkey", "extension", ()),
    ],
)
def test_paths_parse(text: str, kind: str, segments: tuple[Any, ...]) -> None:
    path = parse_path(text)

    assert (path.kind, path.segments) == (kind, segments)


def test_a_quoted_key_may_start_with_one_underscore() -> None:
    path = parse_path("data['_id']")
    record = Record({"_id": "a1"})

    assert path.get(record) == (True, "a1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty"),
        ("data.", "expected"),
        ("data..a", "expected"),
        ("data[0", "expected"),
        ("data._secret", "names starting with '_'"),
        ("data['__secret__']", "names starting with '_'"),
        ("_private", "names starting with '_'"),
        ("subject.x", "subject has no fields"),
        ("partitionKey", "lower-case letters and digits"),
        ("9lives", "must start with"),
    ],
)
def test_invalid_paths_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_path(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.email", (True, "ann@example.com")),
        ("data.missing", (False, None)),
        ("data.nested.missing", (False, None)),
        ("data.items[1]", (True, 2)),
        ("data.items[9]", (False, None)),
        ("data.nothing", (True, None)),
        ("data.nothing.below", (False, None)),
        ("subject", (False, None)),
        ("type", (True, "meshconnect.record")),
        ("partitionkey", (True, "p")),
        ("data['__deleted']", (True, "true")),  # Debezium's unwrap adds __deleted
    ],
)
def test_path_get(text: str, expected: tuple[bool, Any]) -> None:
    record = Record(
        {
            "email": "ann@example.com",
            "nested": {},
            "items": [1, 2],
            "nothing": None,
            "__deleted": "true",
        },
        extensions={"partitionkey": "p"},
    )

    assert parse_path(text).get(record) == expected


def test_path_get_through_a_string_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"cannot read data\.email\.domain"):
        parse_path("data.email.domain").get(Record({"email": "x"}))


def test_path_set_replaces_a_null_on_the_way() -> None:
    record = Record({"meta": None})

    parse_path("data.meta.region").set(record, "eu")

    assert record.data == {"meta": {"region": "eu"}}


def test_path_set_without_create_refuses_missing_objects() -> None:
    with pytest.raises(DataError, match=r"data\.meta is missing"):
        parse_path("data.meta.region").set(Record({}), "eu", create=False)


def test_path_set_of_an_extension_to_null_removes_it() -> None:
    record = Record({}, extensions={"partitionkey": "p"})

    parse_path("partitionkey").set(record, None)

    assert record.extensions == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.a.b", {"a": {}, "items": [1, 2]}),
        ("data.items[0]", {"a": {"b": 1}, "items": [2]}),
        ("data.missing", {"a": {"b": 1}, "items": [1, 2]}),
    ],
)
def test_path_delete(text: str, expected: Any) -> None:
    record = Record({"a": {"b": 1}, "items": [1, 2]})

    parse_path(text).delete(record)

    assert record.data == expected


def test_path_delete_of_a_required_attribute_is_a_data_error() -> None:
    with pytest.raises(DataError, match="every record has one"):
        parse_path("id").delete(Record({}))


def test_path_contains_paths_inside_it() -> None:
    outer, inner, other = (parse_path(p) for p in ("data.a", "data.a.b[0]", "data.ab"))

    assert (outer.contains(inner), inner.contains(outer), outer.contains(other)) == (
        True,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.a.b", {"a": {"b": "B"}, "n": None, "items": ["x"]}),
        ("data.items[0]", {"a": {"b": "b"}, "n": None, "items": ["X"]}),
        ("data.n", {"a": {"b": "b"}, "n": None, "items": ["x"]}),
        ("data.missing.deeper", {"a": {"b": "b"}, "n": None, "items": ["x"]}),
    ],
)
def test_path_update_changes_present_values_only(text: str, expected: Any) -> None:
    record = Record({"a": {"b": "b"}, "n": None, "items": ["x"]})

    parse_path(text).update(record, str.upper)

    assert record.data == expected


def test_path_update_leaves_the_record_alone_when_the_change_fails() -> None:
    record = Record({"a": {"b": "b"}})

    def boom(value: Any) -> Any:
        raise ValueError("no")

    with pytest.raises(ValueError):
        parse_path("data.a.b").update(record, boom)

    assert record.data == {"a": {"b": "b"}}


# -- through the loader ---------------------------------------------------------------------------

EXAMPLE_ENV = {"MASK_SALT": "pepper", "MASK_KEY": base64.b64encode(bytes(32)).decode()}


def pipeline_file(directory: Path, transforms: str, sink_transforms: str = "[]") -> Path:
    path = directory / "p.yaml"
    path.write_text(
        "pipelines:\n"
        "  - name: p\n"
        "    source: {connector: file, config: {path: in.jsonl}}\n"
        f"    transforms:\n{textwrap.indent(transforms, '      ')}\n"
        "    sinks:\n"
        "      - connector: file\n"
        "        config: {path: out.jsonl}\n"
        f"        transforms: {sink_transforms}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("name", "example"),
    [(spec.name, example) for spec in SPECS.values() for example in spec.examples],
)
def test_every_documented_example_loads(name: str, example: str, tmp_path: Path) -> None:
    """The examples in the docs are real: each loads through the pipeline loader."""
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order.json").write_text('{"type": "object"}')
    path = pipeline_file(tmp_path, example)

    loaded = load_pipeline_files([path], load_registry(), env=EXAMPLE_ENV)

    assert [t.type_name for t in loaded.pipelines[0].chain.transforms] == [name]


def test_route_in_a_sink_chain_is_a_validation_problem(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "[]", sink_transforms="[{type: route, topic: x}]")

    with pytest.raises(ValidationErrors, match="route only works in a pipeline's transforms"):
        load_pipeline_files([path], load_registry(), env={})


def test_one_transform_twice_in_a_chain_reports_the_step_that_failed() -> None:
    positive = build("filter", where="data.n > 0")
    steps = [positive, build("insert_field", field="data.n", value="x"), positive]

    _, failures = TransformChain(steps).process([Record({"n": 1})])

    assert [f.stage for f in failures] == ["transforms[2] (filter)"]


# -- sinks share stored records -------------------------------------------------------------------


def shared_record() -> Record:
    return Record(
        {
            "top": 1,
            "a": {"b": {"c": "x", "n": "1", "t": 0, "row": {"k.j": 1}}, "list": [{"v": 1}]},
        },
        extensions={"e": "1"},
    )


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mask", {"fields": ["data.a.b.c"]}),
        ("mask", {"fields": ["data.a.b.c", "data.a.list[0].v"], "mode": "hash"}),
        ("mask", {"fields": ["data.a.b.c"], "mode": "encrypt", "key": EXAMPLE_ENV["MASK_KEY"]}),
        ("insert_field", {"field": "data.a.b.new", "value": 1}),
        ("insert_field", {"field": "data.a.b.new", "template": "{data.top}"}),
        ("cast", {"fields": {"data.a.b.n": "int"}}),
        ("cast", {"fields": {"data.a.b.n": "int", "data.a.list[0].v": "string"}}),
        ("timestamp_convert", {"fields": ["data.a.b.t"], "from": "epoch_s"}),
        ("flatten", {"field": "data.a.b"}),
        ("unflatten", {"field": "data.a.b.row"}),
        ("template", {"template": "{data.top}", "field": "data.a.b.x"}),
        ("replace_field", {"exclude": ["data.a.b.c"], "rename": {"data.a.b.n": "data.a.m"}}),
        ("drop_fields", {"fields": ["data.a.b.c", "data.a.list[0]"]}),
        ("set_key", {"fields": ["data.a.b.c"]}),
        ("set_attributes", {"extensions": {"e": "2"}}),
    ],
)
def test_a_sink_copy_changes_nothing_the_other_sinks_see(
    name: str, options: dict[str, Any]
) -> None:
    """A sink's transforms work on ``record.copy()`` (the sink loop's shallow copy) of a
    record every sink of the topic shares: nested changes must not reach the original."""
    stored = shared_record()
    before = snapshot(stored)
    mine = stored.copy()

    build(name, **options).apply(mine)

    assert (snapshot(stored) == before, snapshot(mine) != before) == (True, True)


class _Step(Transform):
    """A test transform: ``what(n)`` for the record's ``data["n"]`` says what it does."""

    def __init__(self, name: str, what: Any) -> None:
        self.type_name = name
        self.what = what

    def apply(self, record: Record) -> Any:
        action = self.what(record.data["n"])
        record.data.setdefault("seen", []).append(self.type_name)
        if action == "drop":
            return None
        if action == "fail":
            raise ValueError(f"{self.type_name} refuses {record.data['n']}")
        if action == "fan":
            return [Record({"n": record.data["n"] * 10 + i, "seen": []}) for i in (1, 2)]
        return record


@pytest.mark.parametrize("fan_at", [0, 1, 3])
def test_a_chain_runs_each_record_through_every_step_in_order(fan_at: int) -> None:
    """The chain's unrolled loop: drops, failures (named by their step, the record as it
    entered it), fan-outs at any step (the copies go on through the rest, in place)."""

    def step(i: int) -> _Step:
        def what(n: int) -> str:
            if n == 3 and i == 1:
                return "fail"
            if n == 4 and i == 2:
                return "drop"
            if n in (5, 6) and i == fan_at:
                return "fan"
            if n == 62 and i == 2:
                return "fail"
            return "keep"

        return _Step(f"s{i}", what)

    chain = TransformChain([step(i) for i in range(4)])
    out, failures = chain.process([Record({"n": n}) for n in range(1, 8)])
    after = {0: ["s1", "s2", "s3"], 1: ["s2", "s3"], 3: []}[fan_at]
    fanned = [
        (n * 10 + i, after) for n in (5, 6) for i in (1, 2) if not (n * 10 + i == 62 and fan_at < 2)
    ]
    kept = (
        [(n, ["s0", "s1", "s2", "s3"]) for n in (1, 2)] + fanned + [(7, ["s0", "s1", "s2", "s3"])]
    )
    assert [(r.data["n"], r.data["seen"]) for r in out] == kept
    expected = [("transforms[1] (s1)", 3, ["s0", "s1"])]
    if fan_at < 2:
        expected.append(("transforms[2] (s2)", 62, after[: after.index("s2") + 1]))
    assert [(f.stage, f.record.data["n"], f.record.data["seen"]) for f in failures] == expected


# -- a value an attribute refuses leaves the record as it came -----------------------------------


def test_mask_refused_by_a_later_attribute_changes_nothing() -> None:
    # The typed mask of partitionkey ('') was set before subject refused its '': the dead
    # letter went out with partitionkey '' and data.a 0.
    record = Record({"a": 5}, subject="s", extensions={"partitionkey": "pk"})
    mask = build("mask", mode="typed", fields=["partitionkey", "data.a", "subject"])

    fails_unchanged(mask, record, "cannot set subject")


def test_set_attributes_refused_by_a_later_attribute_changes_nothing() -> None:
    # subject (set first, in name order) was already 'new' when time refused 'yesterday'.
    record = Record({"a": "new", "t": "yesterday"}, subject="orig", extensions={"k": "v"})
    step = build(
        "set_attributes",
        attributes={"subject": "{data.a}", "time": "{data.t}"},
        extensions={"k": "changed", "n": 7},
    )

    fails_unchanged(step, record, "cannot set time: it must be an RFC 3339")
