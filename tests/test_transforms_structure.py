"""flatten, unflatten, extract_field, hoist_field and template."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from test_transforms import SPECS, build, chain, fails_unchanged

from meshconnect.errors import ConfigError
from meshconnect.records import Record

NESTED = {"id": 1, "a": {"b": 1, "c": {"d": 2}}, "e": [1, {"f": 3}], "g": {}}

# -- flatten / unflatten --------------------------------------------------------------------------


def test_flatten_joins_nested_keys() -> None:
    record = Record(NESTED)

    build("flatten").apply(record)

    assert record.data == {"id": 1, "a.b": 1, "a.c.d": 2, "e": [1, {"f": 3}], "g": {}}


def test_flatten_with_a_separator_and_a_nested_field() -> None:
    record = Record({"row": {"x": {"y": 1}}, "other": {"z": 2}})

    build("flatten", field="data.row", separator="__").apply(record)

    assert record.data == {"row": {"x__y": 1}, "other": {"z": 2}}


def test_unflatten_is_the_inverse_of_flatten() -> None:
    record = Record(NESTED)

    build("flatten").apply(record)
    build("unflatten").apply(record)

    assert record.data == NESTED


def test_unflatten_with_a_separator() -> None:
    record = Record({"a_b": 1, "a_c": 2, "d": 3})

    build("unflatten", separator="_").apply(record)

    assert record.data == {"a": {"b": 1, "c": 2}, "d": 3}


def test_flatten_and_unflatten_with_when() -> None:
    records = [Record({"k": 1, "a": {"b": 1}}), Record({"k": 2, "a": {"b": 2}})]

    kept, _ = chain(build("flatten"), when=["data.k == 2"]).process(records)

    assert [r.data for r in kept] == [{"k": 1, "a": {"b": 1}}, {"k": 2, "a.b": 2}]


def test_flatten_collision_is_a_data_error() -> None:
    fails_unchanged(
        build("flatten"), Record({"a.b": 1, "a": {"b": 2}}), "two fields flatten to the key 'a.b'"
    )


def test_unflatten_conflict_is_a_data_error() -> None:
    fails_unchanged(build("unflatten"), Record({"a": 1, "a.b": 2}), "'a' is both a value")


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return value


def test_unflatten_stays_within_the_depth_a_payload_may_have() -> None:
    # A key of thousands of separators made an object thousands of levels deep, on which the
    # next flatten, filter, set_key, mask or copy failed with RecursionError or "nested too
    # deep to write", and `meshconnect test` crashed printing it: at most 128 levels, as read.
    deepest = Record({".".join(["a"] * 128): 1})
    build("unflatten").apply(deepest)
    assert deepest.data == _nest(128)
    # a nested value counts too, and so do the levels above the field
    with_value = Record({"a.a": _nest(126)})
    build("unflatten").apply(with_value)
    assert with_value.data == _nest(128)

    for record, field in [
        (Record({"id": 1, ".".join(["a"] * 129): 1}), "data"),
        (Record({"id": 1, ".".join(["a"] * 20000): 1}), "data"),
        (Record({"a.a": _nest(127)}), "data"),
        (Record({"row": {".".join(["a"] * 128): 1}}), "data.row"),
    ]:
        fails_unchanged(
            build("unflatten", field=field),
            record,
            rf"unflatten: {field}: the key 'a\.a[.a]*…?' would nest objects more than 128 levels",
        )


@pytest.mark.parametrize("name", ["flatten", "unflatten"])
@pytest.mark.parametrize(
    ("data", "message"),
    [("text", "data is a string, not an object"), ({"x": 1}, "data.row is missing")],
)
def test_flatten_of_a_wrong_or_missing_value_is_a_data_error(
    name: str, data: Any, message: str
) -> None:
    field = "data" if isinstance(data, str) else "data.row"
    fails_unchanged(build(name, field=field), Record(data), message)


def test_flatten_of_an_attribute_is_refused() -> None:
    with pytest.raises(ConfigError, match="only data holds objects"):
        build("flatten", field="subject")


# -- extract_field --------------------------------------------------------------------------------


def test_extract_field_replaces_data_by_a_field() -> None:
    record = Record({"op": "u", "after": {"id": 1, "name": "a"}})

    build("extract_field", field="data.after").apply(record)

    assert record.data == {"id": 1, "name": "a"}


def test_extract_field_from_a_nested_path_and_array() -> None:
    record = Record({"payload": {"rows": [{"id": 1}, {"id": 2}]}})

    build("extract_field", field="data.payload.rows[-1]").apply(record)

    assert record.data == {"id": 2}


def test_extract_field_with_when() -> None:
    records = [Record({"after": 1, "k": 1}), Record({"after": 2, "k": 2})]

    kept, _ = chain(build("extract_field", field="data.after"), when=["data.k == 2"]).process(
        records
    )

    assert [r.data for r in kept] == [{"after": 1, "k": 1}, 2]


def test_extract_field_of_a_missing_field_is_a_data_error() -> None:
    fails_unchanged(
        build("extract_field", field="data.after"),
        Record({"before": {}}),
        "extract_field: data.after is missing",
    )


def test_extract_field_through_a_wrong_type_is_a_data_error() -> None:
    fails_unchanged(
        build("extract_field", field="data.after.id"),
        Record({"after": [1]}),
        "data.after is an array, not an object",
    )


def test_extract_field_keeps_an_explicit_null() -> None:
    record = Record({"after": None})

    build("extract_field", field="data.after").apply(record)

    assert record.data is None


# -- hoist_field ----------------------------------------------------------------------------------


def test_hoist_field_wraps_data() -> None:
    record = Record({"id": 1})

    build("hoist_field", field="data.payload").apply(record)

    assert record.data == {"payload": {"id": 1}}


def test_hoist_field_with_a_nested_path() -> None:
    record = Record("text")

    build("hoist_field", field="data.a.b").apply(record)

    assert record.data == {"a": {"b": "text"}}


def test_hoist_field_with_when() -> None:
    records = [Record(1), Record(2)]

    kept, _ = chain(build("hoist_field", field="data.v"), when=["data == 2"]).process(records)

    assert [r.data for r in kept] == [1, {"v": 2}]


def test_hoist_field_leaves_a_tombstone_one() -> None:
    record = Record(None)

    build("hoist_field", field="data.v").apply(record)

    assert record.data is None


@pytest.mark.parametrize(("field", "message"), [("data.a[0]", "not arrays"), ("subject", "inside")])
def test_hoist_field_refuses_paths_it_cannot_make(field: str, message: str) -> None:
    with pytest.raises((ConfigError, ValidationError), match=message):
        build("hoist_field", field=field)


# -- template -------------------------------------------------------------------------------------


def test_template_builds_new_data_keeping_types_of_single_placeholders() -> None:
    record = Record({"name": "Ann", "num": 3, "tags": ["a"], "nested": {"x": 1}}, type="t.created")
    template = {
        "user": "{data.name}",
        "n": "{data.num}",
        "tags": "{data.tags}",
        "label": "{data.name} ({type})",
        "fixed": [1, "two", {"three": True}],
        "deep": {"x": "{data.nested.x + 1}", "missing": "{data.nope}"},
    }

    build("template", template=template).apply(record)

    assert record.data == {
        "user": "Ann",
        "n": 3,
        "tags": ["a"],
        "label": "Ann (t.created)",
        "fixed": [1, "two", {"three": True}],
        "deep": {"x": 2, "missing": None},
    }


def test_template_into_a_field_and_arrays_of_expressions() -> None:
    record = Record({"a": 1, "b": 2})

    build("template", template=["{data.a}", "{data.b}", "{{literal}}"], field="data.pair").apply(
        record
    )

    assert record.data == {"a": 1, "b": 2, "pair": [1, 2, "{literal}"]}


def test_template_does_not_share_values_between_records() -> None:
    transform = build("template", template={"list": [1], "v": "{data.v}"})
    first, second = Record({"v": 1}), Record({"v": 2})
    transform.apply(first)
    transform.apply(second)

    first.data["list"].append(2)

    assert second.data == {"list": [1], "v": 2}


def test_template_with_when() -> None:
    records = [Record({"k": 1}), Record({"k": 2})]

    kept, _ = chain(build("template", template={"key": "{data.k}"}), when=["data.k == 2"]).process(
        records
    )

    assert [r.data for r in kept] == [{"k": 1}, {"key": 2}]


def test_template_failure_is_a_data_error_and_changes_nothing() -> None:
    fails_unchanged(
        build("template", template={"n": "{data.num + 1}"}),
        Record({"num": "three"}),
        "template.n: expression 'data.num \\+ 1' failed",
    )


def test_template_with_a_bad_expression_fails_at_build_time() -> None:
    with pytest.raises(ConfigError, match=r"template\.a\.b"):
        build("template", template={"a": {"b": "{data.__class__}"}})


def test_template_into_an_attribute_needs_a_string() -> None:
    fails_unchanged(
        build("template", template="{data.n}", field="subject"),
        Record({"n": 1}),
        "subject: it must be a string",
    )


def test_template_options_need_a_template() -> None:
    with pytest.raises(ValidationError, match="template"):
        SPECS["template"].options_model()


def test_unflatten_with_when() -> None:
    records = [Record({"k": 1, "a.b": 1}), Record({"k": 2, "a.b": 2})]

    kept, _ = chain(build("unflatten"), when=["data.k == 2"]).process(records)

    assert [r.data for r in kept] == [{"k": 1, "a.b": 1}, {"k": 2, "a": {"b": 2}}]


def test_template_single_placeholder_with_quotes_and_escapes_keeps_its_type() -> None:
    record = Record({"a": 1})

    build("template", template={"x": "{ {'it\\'s': data.a} }", "y": "{'}' + str(data.a)}"}).apply(
        record
    )

    assert record.data == {"x": {"it's": 1}, "y": "}1"}


def test_template_reads_eventmesh_style_json_paths() -> None:
    record = Record({"name": "Ann", "items": [{"sku": "a"}]}, subject="s1")

    build(
        "template", template={"user": "$.data.name", "sku": "$.data.items[0].sku", "s": "$.subject"}
    ).apply(record)

    assert record.data == {"user": "Ann", "sku": "a", "s": "s1"}


def test_template_json_path_with_a_bad_path_fails_at_build_time() -> None:
    with pytest.raises(ConfigError, match=r"template\.user"):
        build("template", template={"user": "$.data..name"})
