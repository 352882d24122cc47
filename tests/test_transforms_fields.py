"""insert_field (from an attribute), replace_field and drop_fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from test_transforms import SPECS, build, chain, fails_unchanged

from meshconnect.errors import ConfigError
from meshconnect.records import Record

# -- insert_field from ----------------------------------------------------------------------------


def test_insert_field_copies_a_cloudevent_attribute() -> None:
    record = Record({"id": 1}, subject="orders/1", time="2026-11-24T10:00:00Z")

    build("insert_field", field="data.meta.at", **{"from": "time"}).apply(record)

    assert record.data == {"id": 1, "meta": {"at": "2026-11-24T10:00:00Z"}}


def test_insert_field_copies_an_extension_into_data() -> None:
    record = Record({"id": 1}, extensions={"tenant": "acme"})

    build("insert_field", field="data.tenant", **{"from": "tenant"}).apply(record)

    assert record.data["tenant"] == "acme"


def test_insert_field_copies_a_nested_field_deeply() -> None:
    record = Record({"a": {"b": {"c": [1]}}})

    build("insert_field", field="data.copy", **{"from": "data.a.b"}).apply(record)
    record.data["copy"]["c"].append(2)

    assert record.data["a"]["b"] == {"c": [1]}


def test_insert_field_from_a_missing_attribute_is_a_data_error() -> None:
    fails_unchanged(
        build("insert_field", field="data.s", **{"from": "subject"}),
        Record({"id": 1}),
        "insert_field: subject is missing",
    )


def test_insert_field_from_a_number_into_an_attribute_is_a_data_error() -> None:
    fails_unchanged(
        build("insert_field", field="subject", **{"from": "data.id"}),
        Record({"id": 1}),
        "subject: it must be a string, not a number",
    )


def test_insert_field_from_with_when() -> None:
    records = [Record({"k": 1}, subject="s1"), Record({"k": 2}, subject="s2")]

    kept, _ = chain(
        build("insert_field", field="data.s", **{"from": "subject"}), when=["data.k == 2"]
    ).process(records)

    assert [r.data for r in kept] == [{"k": 1}, {"k": 2, "s": "s2"}]


def test_insert_field_takes_one_of_value_template_or_from() -> None:
    with pytest.raises(ValidationError, match="exactly one of value, template or from"):
        SPECS["insert_field"].options_model(field="data.x", value=1, **{"from": "subject"})


# -- replace_field --------------------------------------------------------------------------------


def customer() -> Record:
    return Record(
        {
            "id": 1,
            "name": "Ann",
            "secret": "x",
            "address": {"city": "Berlin", "zip": "10115", "geo": {"lat": 52.5}},
        }
    )


def test_replace_field_include_keeps_only_the_given_fields() -> None:
    record = customer()

    build("replace_field", include=["data.id", "data.address.city"]).apply(record)

    assert record.data == {"id": 1, "address": {"city": "Berlin"}}


def test_replace_field_include_skips_missing_fields() -> None:
    record = customer()

    build("replace_field", include=["data.id", "data.nope.deeper"]).apply(record)

    assert record.data == {"id": 1}


def test_replace_field_exclude_drops_nested_fields() -> None:
    record = customer()

    build("replace_field", exclude=["data.secret", "data.address.geo"]).apply(record)

    assert record.data == {"id": 1, "name": "Ann", "address": {"city": "Berlin", "zip": "10115"}}


def test_replace_field_renames_across_levels_in_order() -> None:
    record = customer()

    build(
        "replace_field",
        rename={"data.name": "data.person.name", "data.address.zip": "data.postcode"},
    ).apply(record)

    assert record.data == {
        "id": 1,
        "secret": "x",
        "address": {"city": "Berlin", "geo": {"lat": 52.5}},
        "person": {"name": "Ann"},
        "postcode": "10115",
    }


def test_replace_field_include_exclude_and_rename_together() -> None:
    record = customer()

    build(
        "replace_field",
        include=["data.id", "data.address"],
        exclude=["data.address.geo"],
        rename={"data.address.city": "data.city"},
    ).apply(record)

    assert record.data == {"id": 1, "address": {"zip": "10115"}, "city": "Berlin"}


def test_replace_field_does_not_change_the_objects_it_came_with() -> None:
    record = customer()
    address = record.data["address"]

    build("replace_field", exclude=["data.address.geo"]).apply(record)

    assert "geo" in address


def test_replace_field_rename_of_a_missing_field_does_nothing() -> None:
    record = customer()

    build("replace_field", rename={"data.nope": "data.other"}).apply(record)

    assert record.data == customer().data


def test_replace_field_with_when() -> None:
    records = [customer(), Record({"id": 2, "secret": "y"})]

    kept, _ = chain(build("replace_field", exclude=["data.secret"]), when=["data.id == 2"]).process(
        records
    )

    assert [("secret" in r.data) for r in kept] == [True, False]


def test_replace_field_on_data_that_is_not_an_object_is_a_data_error() -> None:
    fails_unchanged(
        build("replace_field", exclude=["data.x"]),
        Record("text"),
        "replace_field: data is a string, not an object",
    )


def test_replace_field_passes_a_tombstone_through_unchanged() -> None:
    record = Record(None, extensions={"partitionkey": "7"})

    out = build("replace_field", include=["data.x"], rename={"data.x": "data.y"}).apply(record)

    assert (out.data, out.extensions) == (None, {"partitionkey": "7"})  # type: ignore[union-attr]


def test_replace_field_renames_are_one_simultaneous_mapping() -> None:
    record = Record({"abc": 1, "xyz": 2, "o": {"p": 3}})

    build(
        "replace_field",
        rename={
            "data.abc": "data.xyz",
            "data.xyz": "data.abc",
            "data.o.p": "data.r",
            "data.o": "data.q",
        },
    ).apply(record)

    assert record.data == {"xyz": 1, "abc": 2, "r": 3, "q": {}}


@pytest.mark.parametrize(
    ("rename", "message"),
    [
        ({"data.a": "data.x", "data.b": "data.x"}, "data.x and data.x are the same target"),
        ({"data.a": "data.x", "data.b": "data.x.y"}, "are targets inside one another"),
    ],
)
def test_replace_field_renames_to_one_place_are_refused(
    rename: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build("replace_field", rename=rename)


def test_replace_field_rename_into_a_string_is_a_data_error_and_changes_nothing() -> None:
    record = Record({"a": 1, "b": "text", "c": 2})

    fails_unchanged(
        build("replace_field", rename={"data.c": "data.z", "data.a": "data.b.inner"}),
        record,
        "data.b is a string, not an object",
    )


def test_replace_field_exclude_through_a_string_is_a_data_error() -> None:
    fails_unchanged(
        build("replace_field", exclude=["data.id", "data.name.first"]),
        customer(),
        "data.name is a string",
    )


def test_replace_field_needs_something_to_do() -> None:
    with pytest.raises(ValidationError, match="at least one of include, exclude or rename"):
        SPECS["replace_field"].options_model()


def test_replace_field_paths_must_be_inside_data() -> None:
    with pytest.raises(ValidationError, match="subject is not a field inside data"):
        SPECS["replace_field"].options_model(exclude=["subject"])


def test_replace_field_rename_into_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match="inside one another"):
        build("replace_field", rename={"data.a": "data.a.b"})


# -- drop_fields ----------------------------------------------------------------------------------


def test_drop_fields_removes_top_level_fields() -> None:
    record = Record({"id": 1, "password": "p", "token": "t"})

    build("drop_fields", fields=["data.password", "data.token"]).apply(record)

    assert record.data == {"id": 1}


def test_drop_fields_removes_nested_fields_and_array_elements() -> None:
    record = Record({"user": {"ssn": "1", "name": "a"}, "items": [{"sku": "x", "cost": 3}]})

    build("drop_fields", fields=["data.user.ssn", "data.items[0].cost"]).apply(record)

    assert record.data == {"user": {"name": "a"}, "items": [{"sku": "x"}]}


def test_drop_fields_removes_extensions_and_optional_attributes() -> None:
    record = Record({"id": 1}, subject="s", extensions={"partitionkey": "k", "keep": "me"})

    build("drop_fields", fields=["partitionkey", "subject"]).apply(record)

    assert (record.subject, record.extensions) == (None, {"keep": "me"})


def test_drop_fields_skips_missing_fields() -> None:
    record = Record({"id": 1})

    build("drop_fields", fields=["data.nope", "data.a.b", "subject"]).apply(record)

    assert record.data == {"id": 1}


def test_drop_fields_with_when() -> None:
    records = [Record({"k": 1, "x": 1}), Record({"k": 2, "x": 2})]

    kept, _ = chain(build("drop_fields", fields=["data.x"]), when=["data.k == 1"]).process(records)

    assert [r.data for r in kept] == [{"k": 1}, {"k": 2, "x": 2}]


def test_drop_fields_through_a_string_is_a_data_error_and_changes_nothing() -> None:
    fails_unchanged(
        build("drop_fields", fields=["data.a.b", "data.c.d", "subject"]),
        Record({"a": {"b": 1}, "c": "text"}, subject="s"),
        "data.c is a string, not an object",
    )


def test_drop_fields_of_non_object_data_is_a_data_error() -> None:
    fails_unchanged(build("drop_fields", fields=["data.x"]), Record([1, 2]), "data is an array")


@pytest.mark.parametrize(("path", "message"), [("type", "cannot be removed"), ("data", "itself")])
def test_drop_fields_refuses_what_cannot_be_dropped(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build("drop_fields", fields=[path])


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("insert_field", {"field": "topic", "value": "x"}),
        ("cast", {"fields": {"topic": "string"}}),
        ("drop_fields", {"fields": ["topic"]}),
        ("mask", {"fields": ["topic"]}),
    ],
)
def test_topic_can_be_read_not_changed(name: str, options: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="topic cannot be changed"):
        SPECS[name].options_model(**options)


def test_insert_field_copies_the_topic_the_record_is_routed_to() -> None:
    record = Record({"id": 1})
    record.topic = "orders.eu"

    build("insert_field", field="data.topic", from_="topic").apply(record)
    build("insert_field", field="data.label", template="{topic}/{data.id}").apply(record)

    assert record.data == {"id": 1, "topic": "orders.eu", "label": "orders.eu/1"}
