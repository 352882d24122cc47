"""route, set_key and set_attributes (filter is in test_transforms.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from test_transforms import SPECS, build, chain, fails_unchanged

from meshconnect.errors import ConfigError
from meshconnect.records import Record
from meshconnect.transforms import BuildContext, building

# -- route ----------------------------------------------------------------------------------------


def test_route_sets_the_topic_from_a_template() -> None:
    record = Record({"country": "DE", "shop": {"id": 3}})

    build("route", topic="orders.{lower(data.country)}.{data.shop.id}").apply(record)

    assert record.topic == "orders.de.3"


def test_route_with_a_literal_topic() -> None:
    record = Record({})

    build("route", topic="all-orders").apply(record)

    assert record.topic == "all-orders"


RULES = [
    {"when": "data.total >= 1000", "topic": "large"},
    {"when": "data.customer.vip", "topic": "vip.{data.customer.id}"},
]


def test_route_rules_first_match_wins() -> None:
    records = [
        Record({"total": 5000, "customer": {"vip": True, "id": 1}}),
        Record({"total": 5, "customer": {"vip": True, "id": 2}}),
        Record({"total": 5, "customer": {"vip": False}}),
    ]

    out, _ = chain(build("route", rules=RULES)).process(records)

    assert [r.topic for r in out] == ["large", "vip.2", None]


def test_route_rules_default_topic() -> None:
    out, _ = chain(build("route", rules=RULES, default="other")).process([Record({"total": 1})])

    assert [r.topic for r in out] == ["other"]


def test_route_fanout_copies_the_record_to_every_matching_topic() -> None:
    record = Record({"total": 5000, "customer": {"vip": True, "id": 1}}, id="e1")

    out, _ = chain(build("route", rules=RULES, fanout=True)).process([record])

    assert [(r.topic, r.id, r.data) for r in out] == [
        ("large", "e1", record.data),
        ("vip.1", "e1", record.data),
    ]


def test_route_fanout_copies_share_nothing() -> None:
    record = Record({"total": 5000, "customer": {"vip": True, "id": 1}}, extensions={"k": "v"})
    first, second = chain(build("route", rules=RULES, fanout=True)).process([record])[0]

    second.data["customer"]["id"] = 2
    second.extensions["k"] = "changed"

    assert (first.data["customer"]["id"], first.extensions) == (1, {"k": "v"})


def test_route_fanout_without_a_match_uses_the_default() -> None:
    out, _ = chain(build("route", rules=RULES, fanout=True, default="d")).process(
        [Record({"total": 1})]
    )

    assert [r.topic for r in out] == ["d"]


def test_route_with_when() -> None:
    records = [Record({"k": 1}), Record({"k": 2})]

    out, _ = chain(build("route", topic="t{data.k}"), when=["data.k == 2"]).process(records)

    assert [r.topic for r in out] == [None, "t2"]


def test_route_to_an_empty_topic_is_a_data_error() -> None:
    fails_unchanged(
        build("route", topic="{data.region}"), Record({}), "the topic template .* rendered ''"
    )


def test_route_rule_that_fails_is_a_data_error_and_changes_nothing() -> None:
    fails_unchanged(
        build("route", rules=RULES, fanout=True),
        Record({"total": "lots", "customer": {"vip": True, "id": 1}}),
        "rules\\[0\\].when: condition 'data.total >= 1000' failed",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of topic or rules"),
        ({"topic": "a", "rules": RULES}, "exactly one of topic or rules"),
        ({"rules": []}, "at least one rule"),
        ({"topic": "a", "fanout": True}, "only apply to rules"),
        ({"rules": [{"when": "true"}]}, "topic"),
    ],
)
def test_route_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["route"].options_model(**options)


def test_route_is_refused_in_a_sink_chain() -> None:
    with (
        building(BuildContext(Path.cwd(), sink=True)),
        pytest.raises(ConfigError, match="route only works in a pipeline's transforms"),
    ):
        build("route", topic="x")


# -- set_key --------------------------------------------------------------------------------------


def test_set_key_from_one_field() -> None:
    record = Record({"customer": {"id": 42}})

    build("set_key", fields=["data.customer.id"]).apply(record)

    assert record.extensions == {"partitionkey": "42"}


def test_set_key_from_several_fields_and_an_attribute() -> None:
    record = Record({"tenant": "acme", "order": {"id": 7}}, subject="s")

    build("set_key", fields=["data.tenant", "data.order.id", "subject"]).apply(record)

    assert record.extensions["partitionkey"] == '["acme",7,"s"]'


def test_set_key_into_another_extension() -> None:
    record = Record({"id": 1})

    build("set_key", fields=["data.id"], extension="key").apply(record)

    assert record.extensions == {"key": "1"}


def test_set_key_with_when() -> None:
    records = [Record({"id": 1}), Record({"id": 2})]

    out, _ = chain(build("set_key", fields=["data.id"]), when=["data.id == 2"]).process(records)

    assert [r.extensions for r in out] == [{}, {"partitionkey": "2"}]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tenant": "a"}, "set_key: data.id is missing"),
        ({"tenant": "a", "id": None}, "set_key: data.id is null"),
        ({"tenant": "a", "id": {"x": {1, 2}}}, "set_key: Type is not JSON serializable: set"),
    ],
)
def test_set_key_of_a_missing_or_bad_field_is_a_data_error(data: object, message: str) -> None:
    fails_unchanged(build("set_key", fields=["data.tenant", "data.id"]), Record(data), message)


def test_set_key_through_a_wrong_type_is_a_data_error() -> None:
    fails_unchanged(
        build("set_key", fields=["data.customer.id"]),
        Record({"customer": "ann"}),
        "data.customer is a string",
    )


def test_set_key_refuses_a_bad_extension_name() -> None:
    with pytest.raises(ValidationError, match="lower-case letters"):
        SPECS["set_key"].options_model(fields=["data.id"], extension="Key")


# -- set_attributes -------------------------------------------------------------------------------


def test_set_attributes_from_templates() -> None:
    record = Record({"id": 7, "status": "paid", "tenant": "acme"}, subject="old")

    build(
        "set_attributes",
        attributes={"type": "shop.order.{data.status}", "subject": "orders/{data.id}"},
        extensions={"tenant": "{data.tenant}", "version": 2, "flag": True},
    ).apply(record)

    assert (record.type, record.subject, record.extensions) == (
        "shop.order.paid",
        "orders/7",
        {"tenant": "acme", "version": 2, "flag": True},
    )


def test_set_attributes_null_removes_optional_ones() -> None:
    record = Record({}, subject="s", time="2026-01-01T00:00:00Z", extensions={"old": "x"})

    build(
        "set_attributes", attributes={"subject": None, "time": None}, extensions={"old": None}
    ).apply(record)

    assert (record.subject, record.time, record.extensions) == (None, None, {})


def test_set_attributes_from_nested_data() -> None:
    record = Record({"meta": {"src": {"system": "erp"}}})

    build("set_attributes", attributes={"source": "urn:{data.meta.src.system}"}).apply(record)

    assert record.source == "urn:erp"


def test_set_attributes_with_when() -> None:
    records = [Record({"k": 1}, type="a"), Record({"k": 2}, type="a")]

    out, _ = chain(build("set_attributes", attributes={"type": "b"}), when=["data.k == 2"]).process(
        records
    )

    assert [r.type for r in out] == ["a", "b"]


def test_set_attributes_that_render_empty_for_a_required_attribute_is_a_data_error() -> None:
    fails_unchanged(
        build(
            "set_attributes",
            attributes={"subject": "new", "type": "{data.kind}"},
            extensions={"x": "1"},
        ),
        Record({}),
        "set_attributes: type template '{data.kind}' rendered ''",
    )


def test_set_attributes_template_failure_changes_nothing() -> None:
    fails_unchanged(
        build("set_attributes", attributes={"subject": "new", "type": "{data.n + 1}"}),
        Record({"n": "x"}),
        "type: template",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "at least one attribute or extension"),
        ({"attributes": {"type": None}}, "type cannot be null"),
        ({"attributes": {"id": "x"}}, "id"),
        ({"extensions": {"Bad": "x"}}, "lower-case letters"),
        ({"extensions": {"subject": "x"}}, "subject is not an extension name"),
    ],
)
def test_set_attributes_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["set_attributes"].options_model(**options)


def test_fanout_copies_go_through_the_rest_of_the_chain_each_on_its_own() -> None:
    """Copies are independent records for the later steps; a failure names the step."""
    rules = [{"when": "true", "topic": "a"}, {"when": "true", "topic": "b"}]
    steps = chain(
        build("route", rules=rules, fanout=True),
        build("set_key", fields=["data.id"]),
        build("cast", fields={"data.id": "int"}),
    )

    out, failures = steps.process([Record({"id": "x1"}), Record({"id": "7"})])

    assert (
        [(r.topic, r.data, r.extensions) for r in out],
        [(f.stage, f.record.topic) for f in failures],
    ) == (
        [("a", {"id": 7}, {"partitionkey": "7"}), ("b", {"id": 7}, {"partitionkey": "7"})],
        [("transforms[2] (cast)", "a"), ("transforms[2] (cast)", "b")],
    )


ROUTED = """
pipelines:
  - name: orders
    source:
      connector: file
      config: {path: in.jsonl, format: json, follow: false}
    transforms:
      - type: route
        fanout: true
        rules:
          - {when: "data.total >= 100", topic: audit}
          - {when: "data.country == 'DE'", topic: "orders.{lower(data.country)}"}
      - type: set_key
        fields: [data.id]
    topic: orders.other
    sinks:
      - {name: audit, connector: file, topics: [audit], config: {path: audit.jsonl}}
      - {name: de, connector: file, topics: [orders.de], config: {path: de.jsonl}}
      - {name: other, connector: file, topics: [orders.other], config: {path: other.jsonl}}
"""


def test_routed_records_are_stored_in_their_topics_by_the_worker(tmp_path: Path) -> None:
    """Through meshconnect run: route's topics win over the pipeline's topic, fan-out copies
    are stored in every matching topic, unrouted records take the pipeline's topic."""
    orders = [
        {"id": 1, "country": "DE", "total": 500},
        {"id": 2, "country": "DE", "total": 5},
        {"id": 3, "country": "FR", "total": 500},
        {"id": 4, "country": "FR", "total": 5},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(o) + "\n" for o in orders))
    (tmp_path / "p.yaml").write_text(ROUTED)

    done = subprocess.run(
        [sys.executable, "-m", "meshconnect", "--state", "state", "run", "p.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    written = {
        name: [json.loads(line)["id"] for line in (tmp_path / f"{name}.jsonl").open()]
        for name in ("audit", "de", "other")
    }
    assert (done.returncode, written) == (0, {"audit": [1, 3], "de": [1, 2], "other": [4]}), (
        done.stderr
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"customer": {}}, "set_key: data.customer.id is missing"),
        ({"customer": {"id": None}}, "set_key: data.customer.id is null"),
        ({"customer": None}, "set_key: data.customer.id is null"),
        ([1], "data is an array, not an object"),
    ],
)
def test_set_key_from_one_nested_field_that_is_missing_or_wrong(data: object, message: str) -> None:
    fails_unchanged(build("set_key", fields=["data.customer.id"]), Record(data), message)


def test_set_key_leaves_a_tombstone_with_the_key_it_has() -> None:
    record = Record(None, extensions={"partitionkey": "42"})

    build("set_key", fields=["data.customer.id", "data.id"]).apply(record)

    assert (record.data, record.extensions) == (None, {"partitionkey": "42"})
