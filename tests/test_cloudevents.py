"""Records are valid CloudEvents (issue 18): strict on input, lossless through the mesh, never
a hung worker.

Events go through a ``file`` source with ``format: cloudevents``, the SQLite mesh store and a
``file`` sink writing ``format: cloudevents``; dead letters go to a second file sink. Every line
the product writes is checked by two oracles meshconnect did not write: the CloudEvents spec's
own JSON schema (vendored in ``tests/fixtures/cloudevents/``, with its format checks on) and the
``cloudevents`` SDK's JSON parser.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cloudevents.http import from_json

from meshconnect.errorpolicy import dead_letter_record
from meshconnect.eventrules import InvalidEventError, loads_event
from meshconnect.mesh.codec import decode_rows, decode_segment, encode_row, encode_segment
from meshconnect.records import Record
from meshconnect.testing import run_pipelines

SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "cloudevents" / "cloudevents.json").read_text()
)
ORACLE = jsonschema.Draft7Validator(
    SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
)

BASE = {"specversion": "1.0", "id": "e1", "source": "/s", "type": "t"}


def check_written(line: str) -> dict[str, Any]:
    """One line meshconnect wrote, after both oracles accepted it."""
    event = json.loads(line)
    errors = [e.message for e in ORACLE.iter_errors(event)]
    assert errors == [], f"{line}: {errors}"
    parsed = from_json(line)
    assert parsed["id"] == event["id"] and parsed["source"] == event["source"]
    return event  # type: ignore[no-any-return]


def test_the_schema_oracle_checks_formats() -> None:
    """The oracle is live: without the format checkers it would let these through."""
    assert [e.message for e in ORACLE.iter_errors({**BASE, "time": "nope"})] == [
        "'nope' is not a 'date-time'"
    ]
    assert [e.message for e in ORACLE.iter_errors({**BASE, "source": "a b"})] == [
        "'a b' is not a 'uri-reference'"
    ]
    assert [e.message for e in ORACLE.iter_errors({**BASE, "dataschema": "rel"})] == [
        "'rel' is not a 'uri'"
    ]


# -- the pipeline ---------------------------------------------------------------------------------

PIPELINE = """
pipelines:
  - name: ce
    source:
      connector: file
      config: {path: in/events.jsonl, format: cloudevents, follow: FOLLOW}
      errors: {tolerance: all, dead_letter_topic: dlq}
    topic: events
    sinks:
      - {name: out, connector: file, config: {path: out/events.jsonl, format: cloudevents}}
  - name: dead
    topic: dlq
    sinks:
      - {name: dlqout, connector: file, config: {path: out/dlq.jsonl, format: cloudevents}}
"""


def write_input(tmp_path: Path, lines: list[str], *, follow: bool = False) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "events.jsonl").write_text("".join(line + "\n" for line in lines))
    config = tmp_path / "p.yaml"
    config.write_text(PIPELINE.replace("FOLLOW", "true" if follow else "false"))
    return config


def written(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [check_written(line) for line in path.read_text().splitlines()]


async def run_lines(
    tmp_path: Path, lines: list[str]
) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """Run ``lines`` through the pipeline: the events written, and per line number (1-based)
    of each dead-lettered line the error after ``<file>:<line>: ``."""
    config = write_input(tmp_path, lines)
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert await run_pipelines([config], f"sqlite:///{tmp_path / 'mesh.db'}") == 0
    finally:
        os.chdir(old)
    key = str(tmp_path / "in" / "events.jsonl")
    dead: dict[int, str] = {}
    for letter in written(tmp_path / "out" / "dlq.jsonl"):
        where, _, message = letter["errormessage"].partition(": ")
        path, _, lineno = where.rpartition(":")
        assert path == key
        assert letter["data"] == lines[int(lineno) - 1]  # the line, as it came
        assert letter["datacontenttype"] == "text/plain"
        dead[int(lineno)] = message
    return written(tmp_path / "out" / "events.jsonl"), dead


def event(**changes: Any) -> str:
    return json.dumps({**BASE, **changes})


def without(*names: str, **changes: Any) -> str:
    return json.dumps({k: v for k, v in {**BASE, **changes}.items() if k not in names})


#: (input line, the error of its dead letter). Items 1-5 and 8 of issue 18.
INVALID = [
    # 1. attributes of the wrong type (these hung the worker)
    (event(time=1700000000), "attribute 'time' must be a string, not a number"),
    (event(subject=5), "attribute 'subject' must be a string, not a number"),
    (event(datacontenttype=5), "attribute 'datacontenttype' must be a string, not a number"),
    (event(dataschema=5), "attribute 'dataschema' must be a string, not a number"),
    (event(time=True), "attribute 'time' must be a string, not a boolean"),
    (event(subject={"a": 1}), "attribute 'subject' must be a string, not an object"),
    (event(time=[]), "attribute 'time' must be a string, not an array"),
    # 2. no silent coercion
    (event(id=42), "attribute 'id' must be a string, not a number"),
    (event(type=7), "attribute 'type' must be a string, not a number"),
    (event(source=1), "attribute 'source' must be a string, not a number"),
    (event(id=None), "missing required attribute 'id'"),
    (
        event(id=1.5),
        "attribute 'id' must be a string, not a number with a fraction or exponent (1.5)",
    ),
    (event(type=False), "attribute 'type' must be a string, not a boolean"),
    # 3. specversion
    (without("specversion"), "missing required attribute 'specversion' (the string \"1.0\")"),
    (event(specversion=None), "missing required attribute 'specversion' (the string \"1.0\")"),
    (event(specversion=1), "attribute 'specversion' must be the string \"1.0\", not a number"),
    (
        event(specversion=1.0),
        "attribute 'specversion' must be the string \"1.0\", not a number with a fraction or "
        "exponent (1.0)",
    ),
    (
        event(specversion="0.3"),
        "attribute 'specversion' must be \"1.0\" (the only version supported), not '0.3'",
    ),
    (
        event(specversion="1.0.2"),
        "attribute 'specversion' must be \"1.0\" (the only version supported), not '1.0.2'",
    ),
    # 4. the spec's MUSTs: extension names
    (event(MyExt="x"), "extension name 'MyExt' must be one or more of a-z and 0-9"),
    (event(**{"my-ext": "x"}), "extension name 'my-ext' must be one or more of a-z and 0-9"),
    (event(**{"": "x"}), "extension name '' must be one or more of a-z and 0-9"),
    (event(**{"my_ext": "x"}), "extension name 'my_ext' must be one or more of a-z and 0-9"),
    (event(**{"é": "x"}), "extension name 'é' must be one or more of a-z and 0-9"),
    # extension values
    (
        event(ext={"a": 1}),
        "extension 'ext' must be a string, a boolean or an integer, not an object",
    ),
    (event(ext=[1]), "extension 'ext' must be a string, a boolean or an integer, not an array"),
    (
        event(ext=1.5),
        "extension 'ext' must be a string, a boolean or an integer, not a number with a "
        "fraction or exponent (1.5)",
    ),
    (
        event(ext=2**31),
        "extension 'ext' must be a 32-bit integer (-2147483648..2147483647), not 2147483648",
    ),
    (
        event(ext=-(2**31) - 1),
        "extension 'ext' must be a 32-bit integer (-2147483648..2147483647), not -2147483649",
    ),
    (
        event(ext="a\tb"),
        "extension 'ext' must not contain U+0009 (a control character, noncharacter or "
        "unpaired surrogate)",
    ),
    # empty required and optional strings
    (event(id=""), "attribute 'id' must be a non-empty string"),
    (event(source=""), "attribute 'source' must be a non-empty string"),
    (event(type=""), "attribute 'type' must be a non-empty string"),
    (event(subject=""), "attribute 'subject' must be a non-empty string"),
    # Strings may not hold control characters, noncharacters or unpaired surrogates
    (
        event(type="a\nb"),
        "attribute 'type' must not contain U+000A (a control character, noncharacter or "
        "unpaired surrogate)",
    ),
    (
        event(id="\u0085"),
        "attribute 'id' must not contain U+0085 (a control character, noncharacter or "
        "unpaired surrogate)",
    ),
    (
        event(subject="\ufffe"),
        "attribute 'subject' must not contain U+FFFE (a control character, noncharacter or "
        "unpaired surrogate)",
    ),
    (
        # an unpaired surrogate anywhere is refused when the JSON text is read, naming where
        '{"specversion":"1.0","id":"\\ud800","source":"/s","type":"t"}',
        "invalid JSON: id: the string holds U+D800, an unpaired UTF-16 surrogate (JSON text "
        "that has no UTF-8 form: not accepted, RFC 7493 section 2.1)",
    ),
    # the conformance suite's yaml/v1.yaml extension (a YAML block scalar, so it ends in a
    # newline, which the spec's String type does not allow)
    (
        event(comexampleextension2='{"othervalue": 5}\n'),
        "extension 'comexampleextension2' must not contain U+000A (a control character, "
        "noncharacter or unpaired surrogate)",
    ),
    # time: RFC 3339
    (
        event(time="2018-04-05"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'2018-04-05'",
    ),
    (
        event(time="2018-04-05T17:31:00"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'2018-04-05T17:31:00'",
    ),
    (
        event(time="2018-04-05 17:31:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'2018-04-05 17:31:00Z'",
    ),
    (
        event(time="2018-04-05T17:31Z"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'2018-04-05T17:31Z'",
    ),
    (
        event(time="1700000000"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'1700000000'",
    ),
    (
        event(time="2018-04-05T17:31:00+0100"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'2018-04-05T17:31:00+0100'",
    ),
    (
        event(time="2018-02-29T00:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: day 29 in '2018-02-29T00:00:00Z'",
    ),
    (
        event(time="1900-02-29T00:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: day 29 in '1900-02-29T00:00:00Z'",
    ),
    (
        event(time="2018-13-01T00:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: month 13 in '2018-13-01T00:00:00Z'",
    ),
    (
        event(time="2018-04-31T00:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: day 31 in '2018-04-31T00:00:00Z'",
    ),
    (
        event(time="2018-04-05T24:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: time of day in '2018-04-05T24:00:00Z'",
    ),
    (
        event(time="2016-12-31T23:59:60Z"),
        "attribute 'time' must be an RFC 3339 timestamp: time of day in "
        "'2016-12-31T23:59:60Z' (leap seconds are not accepted)",
    ),
    (
        event(time="2018-04-05T17:31:00+24:00"),
        "attribute 'time' must be an RFC 3339 timestamp: offset in '2018-04-05T17:31:00+24:00'",
    ),
    (
        event(time="0000-01-01T00:00:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp: year 0000 in '0000-01-01T00:00:00Z' "
        "is not accepted",
    ),
    (
        event(time="\uff12\uff1018-04-05T17:31:00Z"),
        "attribute 'time' must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, not "
        "'\uff12\uff1018-04-05T17:31:00Z'",
    ),
    # dataschema: a non-empty absolute URI
    (event(dataschema=""), "attribute 'dataschema' must be a non-empty string"),
    (
        event(dataschema="/schemas/order"),
        "attribute 'dataschema' must be an absolute URI (RFC 3986), not '/schemas/order'",
    ),
    (
        event(dataschema="https://x.example/s.json#/a"),
        "attribute 'dataschema' must be an absolute URI (RFC 3986), not "
        "'https://x.example/s.json#/a'",
    ),
    (
        event(dataschema="https://x.example/a b"),
        "attribute 'dataschema' must be an absolute URI (RFC 3986), not 'https://x.example/a b'",
    ),
    # source: a non-empty URI-reference
    (
        event(source="file:///d/with space.jsonl"),
        "attribute 'source' must be a URI-reference (RFC 3986), not 'file:///d/with space.jsonl'",
    ),
    (
        event(source="/a#b#c"),
        "attribute 'source' must be a URI-reference (RFC 3986), not '/a#b#c'",
    ),
    (
        event(source="/a%zz"),
        "attribute 'source' must be a URI-reference (RFC 3986), not '/a%zz'",
    ),
    (
        event(source="http://[1:2:3]/x"),
        "attribute 'source' must be a URI-reference (RFC 3986): [1:2:3] is not an IPv6 address",
    ),
    (
        event(source="a:b:c d"),
        "attribute 'source' must be a URI-reference (RFC 3986), not 'a:b:c d'",
    ),
    # datacontenttype: an RFC 2046 media type
    (
        event(datacontenttype="json"),
        "attribute 'datacontenttype' must be an RFC 2046 media type such as application/json, "
        "not 'json'",
    ),
    (
        event(datacontenttype="application/json; charset"),
        "attribute 'datacontenttype' must be an RFC 2046 media type such as application/json, "
        "not 'application/json; charset'",
    ),
    # 5. data and data_base64 both present
    (event(data={"a": 1}, data_base64="AQ=="), "'data' and 'data_base64' must not both be present"),
    (event(data=None, data_base64="AQ=="), "'data' and 'data_base64' must not both be present"),
    # 8. data_base64 of the wrong type or not base64
    (event(data_base64=12345), "attribute 'data_base64' must be a base64 string, not a number"),
    (event(data_base64={"a": 1}), "attribute 'data_base64' must be a base64 string, not an object"),
    (
        event(data_base64="AQ"),
        "attribute 'data_base64' is not valid base64 (RFC 4648): Incorrect padding",
    ),
    (
        event(data_base64="a-_b"),
        "attribute 'data_base64' is not valid base64 (RFC 4648): Only base64 data is allowed",
    ),
    # 8. a key twice in one object, at the top or nested in data
    (
        '{"specversion":"1.0","id":"a","id":"b","source":"/s","type":"t"}',
        "invalid JSON: duplicate key 'id' in a JSON object",
    ),
    (
        '{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"k":1,"k":1}}',
        "invalid JSON: duplicate key 'k' in a JSON object",
    ),
    # not an object, not JSON
    ("[1, 2]", "a CloudEvent must be a JSON object, not an array"),
    ('"text"', "a CloudEvent must be a JSON object, not a string"),
    (
        event(data="x")[:-1].replace('"data": "x"', '"data": ' + "[" * 5000 + "]" * 5000) + "}",
        "invalid JSON: nested too deeply (arrays and objects within each other)",
    ),
    (
        '{"specversion":"1.0","id":"a","source":"/s","type":"t","data":NaN}',
        "invalid JSON: NaN is not a JSON number",
    ),
]


def expected_message(message: str) -> str:
    return message if message.startswith("invalid JSON") else f"invalid CloudEvent: {message}"


async def test_each_invalid_event_is_dead_lettered_with_its_rule_and_the_rest_stored(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    expected_dead: dict[int, str] = {}
    for i, (line, message) in enumerate(INVALID):
        lines.append(event(id=f"good{i}"))
        lines.append(line)
        expected_dead[len(lines)] = expected_message(message)
    lines.append(event(id="last"))
    stored, dead = await run_lines(tmp_path, lines)
    assert dead == expected_dead
    assert stored == [{**BASE, "id": f"good{i}"} for i in range(len(INVALID))] + [
        {**BASE, "id": "last"}
    ]


#: Valid events: each is stored and written exactly as it came.
VALID = [
    {**BASE, "data": None},  # 6. an explicit null payload
    {**BASE, "data": {"a": [1, 2.5, None, True, "x"]}},
    {**BASE, "data": "text", "datacontenttype": "text/plain"},
    {**BASE, "data": 0},
    {**BASE, "data": False},
    {**BASE, "data": ""},
    {**BASE, "data": []},
    {**BASE, "data_base64": "Zm9vYg=="},
    {**BASE, "data_base64": ""},
    {**BASE, "datacontenttype": "application/octet-stream", "data_base64": "AAEC/w=="},
    {**BASE, "ext": -(2**31), "big": 2**31 - 1, "zero": 0, "flag": True, "off": False},
    {**BASE, "empty": ""},  # an extension String may be empty (id, source, type, subject not)
    {**BASE, "a1": "x", "thisisalongername1234567890": "longer than 20 is a SHOULD NOT"},
    {**BASE, "binary": "AAEC", "uri": "https://x.example/a", "ts": "2018-04-05T17:31:00Z"},
    {**BASE, "time": "2018-04-05T17:31:00Z"},
    {**BASE, "time": "2018-04-05t17:31:00.123456789z"},
    {**BASE, "time": "2016-02-29T23:59:59.5-07:30"},
    {**BASE, "time": "2000-02-29T00:00:00+00:00"},
    {**BASE, "subject": "mynewfile.jpg", "datacontenttype": "application/json; charset=utf-8"},
    {**BASE, "datacontenttype": 'multipart/form-data; boundary="a b;c"'},
    {**BASE, "datacontenttype": "application/cloudevents+json"},
    {**BASE, "dataschema": "https://x.example/schemas/order.json?v=2"},
    {**BASE, "dataschema": "urn:example:schema:1"},
    {**BASE, "source": "https://github.com/cloudevents"},
    {**BASE, "source": "mailto:cncf-wg-serverless@lists.cncf.io"},
    {**BASE, "source": "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"},
    {**BASE, "source": "cloudevents/spec/pull/123"},
    {**BASE, "source": "1-555-123-4567"},
    {**BASE, "source": "file:///d/with%20space.jsonl#frag"},
    {**BASE, "source": "http://[2001:db8::1]:8080/x?q=1"},
    {**BASE, "source": "//host.example/path"},
    {**BASE, "id": "ünïcode 😀 id", "type": "com.example.über", "subject": "😀"},
    {**BASE, "source": "/s", "type": "t", "id": "x" * 5000},
    # the conformance suite's v1.0 minimum events (cloudevents/conformance yaml/v1.0), as JSON
    *(
        {
            "specversion": "1.0",
            "type": "io.cloudevents.minimum",
            "id": f"conformance-000{i}",
            "source": "//github.com/cloudevents/cloudeventsconformance/yaml/v1.yaml",
            "datacontenttype": content_type,
            "data": data,
        }
        for i, (content_type, data) in enumerate(
            [
                ("text/plain; charset=us-ascii", "Hello, World!\n"),
                ("text/plain; charset=utf-8", "Hello, \U0001f30e!\n"),
                ("application/json; charset=utf-8", "Hello, \U0001f30e!"),
                ("application/json; charset=utf-8", {"msg": "Hello, \U0001f30e!"}),
                ("application/json; charset=utf-8", ["Hello", "\U0001f30e!"]),
                ("application/xml; charset=utf-8", "<msg>Hello, \U0001f30e!</msg>\n"),
            ],
            start=1,
        )
    ),
    {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "time": "2018-04-05T03:56:24Z",
        "id": "4321-4321-4321",
        "source": "/mycontext/subcontext",
        "comexampleextension1": "value",
        "data": {"world": "hello"},
    },
]


async def test_valid_events_are_stored_and_written_exactly(tmp_path: Path) -> None:
    lines = [json.dumps(e, ensure_ascii=False) for e in VALID]
    stored, dead = await run_lines(tmp_path, lines)
    assert dead == {}
    assert stored == VALID


async def test_null_means_unset_for_optional_attributes_and_extensions(tmp_path: Path) -> None:
    """JSON format section 2.2: a null attribute MUST be treated as unset."""
    lines = [
        event(subject=None, time=None, datacontenttype=None, dataschema=None, ext=None),
        event(data_base64=None),
        without("data"),
    ]
    stored, dead = await run_lines(tmp_path, lines)
    assert dead == {}
    assert stored == [BASE, BASE, BASE]


async def test_explicit_null_data_and_absent_data_stay_apart(tmp_path: Path) -> None:
    lines = [event(id="null", data=None), event(id="absent"), event(id="one", data=1)]
    stored, _ = await run_lines(tmp_path, lines)
    assert stored == [
        {**BASE, "id": "null", "data": None},
        {**BASE, "id": "absent"},
        {**BASE, "id": "one", "data": 1},
    ]
    assert "data" not in stored[1]


# -- the store keeps explicit null data -----------------------------------------------------------


def null_batch() -> list[Record]:
    return [
        Record.from_dict({**BASE, "id": "n", "data": None}),
        Record.from_dict({**BASE, "id": "a"}),
        Record.from_dict({**BASE, "id": "v", "data": {"x": 1}}),
    ]


def test_the_segment_codec_keeps_explicit_null_data() -> None:
    records = null_batch()
    for r in records:
        r.topic = "t"
    back = decode_segment(encode_segment(records), "t", 0)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    assert [r.null_data for r in back] == [True, False, False]


def test_the_rows_segment_layout_keeps_explicit_null_data() -> None:
    records = [*null_batch(), Record.from_dict({**BASE, "id": "b", "data_base64": "AQ=="})]
    encoded = encode_segment(records)
    assert encoded.startswith(b"[")  # bytes data: the rows layout
    back = decode_segment(encoded, "t", 0)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    assert [(r.data, r.null_data) for r in back] == [
        (None, True),
        (None, False),
        ({"x": 1}, False),
        (b"\x01", False),
    ]


def test_the_memory_store_rows_keep_explicit_null_data() -> None:
    records = null_batch()
    rows = [(i, *encode_row(i, r, None, 0.0)[2:]) for i, r in enumerate(records)]
    back = decode_rows(rows, "t")
    assert [(r.data, r.null_data) for r in back] == [(None, True), (None, False), ({"x": 1}, False)]


def test_equality_tells_null_data_from_absent_data() -> None:
    null, absent, _ = null_batch()
    absent.id = "n"
    assert null != absent
    assert null.copy() == null and null.copy().null_data


# -- the SDK and the constructor -----------------------------------------------------------------


def test_from_cloudevent_checks_the_same_rules() -> None:
    from cloudevents.http import CloudEvent

    good = CloudEvent({**BASE, "time": "2018-04-05T17:31:00Z", "ext": 5}, {"a": 1})
    assert Record.from_cloudevent(good).to_dict() == {
        **BASE,
        "time": "2018-04-05T17:31:00Z",
        "ext": 5,
        "data": {"a": 1},
    }
    bad = CloudEvent({**BASE, "my-ext": "x"}, None)
    with pytest.raises(InvalidEventError, match="extension name 'my-ext' must be"):
        Record.from_cloudevent(bad)
    with pytest.raises(InvalidEventError, match="attribute 'time' must be an RFC 3339"):
        Record.from_cloudevent(CloudEvent({**BASE, "time": "nope"}, None))


def test_records_round_trip_through_the_sdk() -> None:
    """(The SDK gives an event without ``time`` the current time, so this one has one.)"""
    record = Record.from_dict(
        {**BASE, "subject": "s", "time": "2018-04-05T17:31:00Z", "ext": 7, "data": {"a": [1]}}
    )
    assert Record.from_cloudevent(record.to_cloudevent()) == record


def test_loads_event_reads_exact_integers() -> None:
    assert loads_event(b'{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }
    with pytest.raises(ValueError, match="extra data"):
        loads_event(b'{"a": 1} {"b": 2}')


# -- dead letters are always storable and valid ---------------------------------------------------


def test_a_dead_letter_of_a_record_with_bad_attributes_is_a_valid_cloudevent() -> None:
    from meshconnect.config.model import ErrorPolicy

    record = Record({"n": 1}, id="k", time=1700000000, subject=5)  # type: ignore[arg-type]
    record.extensions.update({"MyExt": "x", "ok": "y", "big": 2**40, "obj": {"a": 1}})
    record.topic, record.offset = "t", 3_000_000_000
    dead = dead_letter_record(
        record,
        InvalidEventError("time", "bad\x00message"),
        stage="store",
        pipeline="p",
        connector="c",
        policy=ErrorPolicy(tolerance="all", dead_letter_topic="dlq"),
    )
    assert dead is not None
    out = dead.to_dict()
    assert json.loads(out["errorattributes"]) == {
        "MyExt": "x",
        "big": 2**40,
        "obj": {"a": 1},
        "subject": 5,
        "time": 1700000000,
    }
    assert out["errormessage"] == "bad\\u0000message"
    assert out["erroroffset"] == "3000000000"  # beyond a CloudEvents Integer: as text
    assert out["ok"] == "y" and out["id"] == "k"
    check_written(json.dumps(out))
    encode_segment([dead])  # the store takes it


# -- a worker given bad attributes stops on SIGTERM -----------------------------------------------

#: A transform plugin that sets attributes the store cannot keep, past ``Record.from_dict``:
#: ``data.spoil`` names the attribute, ``data.value`` its value.
SPOIL_PLUGIN = """
from pydantic import BaseModel
from meshconnect import Transform, TransformSpec, hookimpl


class Options(BaseModel):
    pass


class Spoil(Transform):
    def apply(self, record):
        spoil = record.data.get("spoil") if isinstance(record.data, dict) else None
        if spoil in ("id", "time", "subject", "datacontenttype", "dataschema"):
            setattr(record, spoil, record.data["value"])
        elif spoil:
            record.extensions[spoil] = record.data["value"]
        return record


@hookimpl
def meshconnect_transforms():
    return [TransformSpec("spoil", Options, lambda options, compiler: Spoil())]
"""

#: (line, its dead letter's errormessage after ``<file>:2: `` or the store's record number,
#: the attributes the dead letter keeps aside in ``errorattributes``).
ITEM_1_LINES = [
    (event(id="bad-time", time=1700000000), "attribute 'time' must be a string, not a number"),
    (event(id="bad-subject", subject=5), "attribute 'subject' must be a string, not a number"),
    (
        event(id="bad-ct", datacontenttype=5),
        "attribute 'datacontenttype' must be a string, not a number",
    ),
    (
        event(id="bad-schema", dataschema=5),
        "attribute 'dataschema' must be a string, not a number",
    ),
]
SPOILED = [
    ("time", 1700000000, "attribute 'time' must be a string or None"),
    ("subject", 5, "attribute 'subject' must be a string or None"),
    ("datacontenttype", 5, "attribute 'datacontenttype' must be a string or None"),
    ("dataschema", 5, "attribute 'dataschema' must be a string or None"),
    ("id", None, "attribute 'id' must be a string"),
    ("ext", {"a": 1}, "extension 'ext' must be a string, a boolean or an integer, not an object"),
    (
        "ext",
        2**31,
        "extension 'ext' must be a 32-bit integer (-2147483648..2147483647), not 2147483648",
    ),
    ("My-Ext", "x", "extension name 'My-Ext' must be one or more of a-z and 0-9"),
]
CASES = [(line, f"invalid CloudEvent: {message}", None) for line, message in ITEM_1_LINES] + [
    (
        event(id=f"spoil-{i}", data={"spoil": name, "value": value}),
        f"record 1 of the batch (id {value if name == 'id' else f'spoil-{i}'!r}, topic "
        f"'events') cannot be stored: {message}",
        {name: value},
    )
    for i, (name, value, message) in enumerate(SPOILED)
]


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.mark.parametrize(
    ("bad", "message", "kept"), CASES, ids=[json.loads(line)["id"] for line, _, _ in CASES]
)
def test_a_worker_given_bad_attributes_stores_the_rest_and_stops_on_sigterm(
    tmp_path: Path, bad: str, message: str, kept: dict[str, Any] | None
) -> None:
    """The first four lines hung the worker (spinning, deaf to SIGTERM): the store could not
    encode them, nor their dead letters. The others get bad attributes from a transform, past
    the input checks, and are refused by the store itself."""
    config = write_input(tmp_path, [event(id="before"), bad, event(id="after")], follow=True)
    text = config.read_text().replace(
        "    topic: events\n", "    topic: events\n    transforms: [{type: spoil}]\n", 1
    )
    config.write_text(text)
    (tmp_path / "spoil_plugin.py").write_text(SPOIL_PLUGIN)
    (tmp_path / "plugins.toml").write_text('[plugins]\npaths = ["spoil_plugin.py"]\n')
    command = ["--state", "state", "--plugins", "plugins.toml", "run", "p.yaml"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshconnect", *command],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            out = read_lines(tmp_path / "out" / "events.jsonl")
            dead = read_lines(tmp_path / "out" / "dlq.jsonl")
            if len(out) == 2 and len(dead) == 1:
                break
            time.sleep(0.2)
        assert [e["id"] for e in out] == ["before", "after"]
        assert len(dead) == 1
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)  # a bound for a hang, not a timing check
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    (letter,) = [check_written(line) for line in (tmp_path / "out" / "dlq.jsonl").open()]
    if kept is None:  # refused on input: the line itself is the dead letter
        assert letter["errorstage"] == "source"
        assert letter["errormessage"] == f"{tmp_path / 'in' / 'events.jsonl'}:2: {message}"
        assert letter["data"] == bad
        assert "errorattributes" not in letter
    else:
        assert letter["errorstage"] == "store"
        assert letter["errormessage"] == message
        assert json.loads(letter["errorattributes"]) == kept
        assert letter["data"] == json.loads(bad)["data"]


def test_a_test_file_may_give_time_as_an_unquoted_yaml_timestamp() -> None:
    from datetime import UTC, datetime

    from meshconnect.pipetest import input_record

    record = input_record({"data": 1, "time": datetime(2024, 5, 1, 12, tzinfo=UTC)}, 0)
    assert record.time == "2024-05-01T12:00:00Z"
    with pytest.raises(InvalidEventError, match="attribute 'time' must be an RFC 3339"):
        input_record({"data": 1, "time": datetime(2024, 5, 1, 12)}, 0)  # no offset


# -- transforms set only valid attributes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "time",
            "yesterday",
            "cannot set time: it must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, "
            "not 'yesterday'",
        ),
        (
            "source",
            "a b",
            "cannot set source: it must be a URI-reference (RFC 3986), not 'a b'",
        ),
        (
            "dataschema",
            "/x",
            "cannot set dataschema: it must be an absolute URI (RFC 3986), not '/x'",
        ),
        ("subject", "", "cannot set subject: it must be a non-empty string"),
        ("type", "", "cannot set type: it must be a non-empty string"),
        (
            "count",
            2**31,
            "cannot set extension count: it must be a 32-bit integer "
            "(-2147483648..2147483647), not 2147483648",
        ),
        (
            "note",
            "a\x00b",
            "cannot set extension note: it must not contain U+0000 (a control character, "
            "noncharacter or unpaired surrogate)",
        ),
    ],
)
def test_a_transform_cannot_set_an_attribute_that_breaks_a_rule(
    path: str, value: Any, message: str
) -> None:
    from meshconnect.errors import DataError
    from meshconnect.transforms.paths import parse_path

    record = Record.from_dict(BASE)
    with pytest.raises(DataError) as caught:
        parse_path(path).set(record, value)
    assert str(caught.value) == message
    assert record.to_dict() == BASE  # untouched


async def test_set_attributes_rendering_a_bad_time_dead_letters_the_record(tmp_path: Path) -> None:
    from meshconnect.testing import MemorySink

    MemorySink.outputs.clear()
    config = tmp_path / "p.yaml"
    config.write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source:
                  connector: memory
                  config: {records: [{when: "2018-04-05T17:31:00Z"}, {when: "yesterday"}]}
                  errors: {tolerance: all, dead_letter_topic: dlq}
                transforms:
                  - {type: set_attributes, attributes: {time: "{data.when}"}}
                sinks: [{connector: memory, config: {name: out}}]
              - name: dead
                topic: dlq
                sinks: [{connector: memory, config: {name: dead}}]
            """
        )
    )
    assert await run_pipelines([config], f"sqlite:///{tmp_path / 'mesh.db'}") == 0
    assert [r.time for r in MemorySink.outputs["out"]] == ["2018-04-05T17:31:00Z"]
    (dead,) = MemorySink.outputs["dead"]
    assert dead.data == {"when": "yesterday"} and dead.time is None
    assert dead.extensions["errorstage"] == "transforms[0] (set_attributes)"
    assert dead.extensions["errormessage"] == (
        "cannot set time: it must be an RFC 3339 timestamp such as 2018-04-05T17:31:00Z, "
        "not 'yesterday'"
    )


async def test_data_nested_deeper_than_the_store_holds_is_dead_lettered_whole(
    tmp_path: Path,
) -> None:
    """600 levels: more than meshconnect.jsonvalue reads (128), so the line is not an event;
    the dead letter is the raw line (never a repr), and the worker goes on."""
    deep = "[" * 600 + "]" * 600
    line = json.dumps({**BASE, "id": "deep"})[:-1] + ', "data": ' + deep + "}"
    config = write_input(tmp_path, [event(id="before"), line, event(id="after")])
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert await run_pipelines([config], f"sqlite:///{tmp_path / 'mesh.db'}") == 0
    finally:
        os.chdir(old)
    assert [e["id"] for e in written(tmp_path / "out" / "events.jsonl")] == ["before", "after"]
    (letter,) = written(tmp_path / "out" / "dlq.jsonl")
    assert letter["errorstage"] == "source"
    assert "nested deeper than 128 levels" in letter["errormessage"]
    assert letter["datacontenttype"] == "text/plain"
    assert letter["data"] == line  # the raw line, replayable once fixed


async def test_lone_surrogates_anywhere_are_dead_lettered_with_their_path(tmp_path: Path) -> None:
    """A \\ud800 escape without its pair (in data, a nested key, an extension) has no UTF-8
    form: the line is dead-lettered naming where it is, the others are stored, nothing fails.
    A proper pair (an emoji) is kept."""
    lines = [
        event(id="before"),
        event(id="sur", data="x\ud800y"),
        event(id="key", data={"a": [{"\udc00": 1}]}),
        event(id="ext", tenant="\udfff"),
        event(id="pair", data="\ud83d\ude00"),
    ]
    out, dead = await run_lines(tmp_path, lines)
    assert [e["id"] for e in out] == ["before", "pair"]
    assert out[1]["data"] == "\U0001f600"
    assert set(dead) == {2, 3, 4}
    assert dead[2].startswith("invalid JSON: data: the string holds U+D800, an unpaired UTF-16")
    assert dead[3].startswith("invalid JSON: a key of data.a[0]: the string holds U+DC00")
    assert dead[4].startswith("invalid JSON: tenant: the string holds U+DFFF")


def test_loads_event_refuses_lone_surrogates_naming_the_path() -> None:
    from meshconnect.eventrules import InvalidEventError, loads_event

    for text, path in [
        ('"\\ud800"', "the document"),
        ('{"a": {"b": ["ok", "\\uDBFF"]}}', "a.b[1]"),
        ('{"\\udc00": 1}', "'\\udc00'"),
        ('{"x y": "\\ud800"}', "'x y'"),
    ]:
        with pytest.raises(InvalidEventError) as refused:
            loads_event(text)
        assert refused.value.attribute == path, text
    with pytest.raises(InvalidEventError):  # a raw surrogate in a str given as it is
        loads_event('"\ud800"')
    assert loads_event('["\\ud83d\\ude00", "\\u00e9"]') == ["\U0001f600", "\u00e9"]


# -- the spec's own examples ----------------------------------------------------------------------

#: The structured-mode examples of cloudevents/formats/json-format.md (spec commit c2845a49),
#: one per line. The first keeps the spec's placeholder for base64 text.
SPEC_COMMON = (
    '"specversion":"1.0","type":"com.example.someevent","source":"/mycontext",'
    '"time":"2018-04-05T17:31:00Z","comexampleextension1":"value","comexampleothervalue":5'
)
SPEC_EXAMPLES = [
    "{" + SPEC_COMMON + ',"id":"A234-1234-1234","datacontenttype":'
    '"application/vnd.apache.thrift.binary","data_base64":"... base64 encoded string ..."}',
    "{" + SPEC_COMMON + ',"id":"B234-1234-1234","unsetextension":null,'
    '"datacontenttype":"application/xml","data":"<much wow=\\"xml\\"/>"}',
    "{" + SPEC_COMMON + ',"subject":null,"id":"C234-1234-1234","datacontenttype":'
    '"application/json","data":{"appinfoA":"abc","appinfoB":123,"appinfoC":true}}',
    "{" + SPEC_COMMON + ',"subject":null,"id":"C234-1234-1234","datacontenttype":'
    '"application/json","data":1.5}',
    "{" + SPEC_COMMON + ',"subject":null,"id":"D234-1234-1234","data":"I\'m just a string"}',
    '{"specversion":"1.0","type":"com.example.someevent","source":"/mycontext",'
    '"id":"D234-1234-1234","data_base64":"eyAieHl6IjogMTIzIH0="}',
]


async def test_the_specs_json_format_examples(tmp_path: Path) -> None:
    stored, dead = await run_lines(tmp_path, SPEC_EXAMPLES)
    assert dead == {
        1: "invalid CloudEvent: attribute 'data_base64' is not valid base64 (RFC 4648): "
        "Only base64 data is allowed"
    }
    common = json.loads("{" + SPEC_COMMON + "}")
    assert stored == [
        # null members are unset: "unsetextension" and "subject" are not written back
        {
            **common,
            "id": "B234-1234-1234",
            "datacontenttype": "application/xml",
            "data": '<much wow="xml"/>',
        },
        {
            **common,
            "id": "C234-1234-1234",
            "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
        },
        {**common, "id": "C234-1234-1234", "datacontenttype": "application/json", "data": 1.5},
        {**common, "id": "D234-1234-1234", "data": "I'm just a string"},
        json.loads(SPEC_EXAMPLES[5]),
    ]


# -- the format checks agree with the oracle's ----------------------------------------------------


def test_source_and_dataschema_checks_agree_with_the_schema_oracle_on_random_strings() -> None:
    """Strings of the characters that matter in RFC 3986, checked both ways. The one difference
    is by design: a dataschema is an *absolute* URI (spec: RFC 3986 section 4.3), which has no
    fragment, while the schema's ``uri`` format allows one."""
    import random

    from meshconnect.eventrules import attribute_problem

    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    rng = random.Random(1)
    alphabet = "a1:/?#[]@%2F!$&'()*+,;= -._~\u00e9Av"
    disagree = []
    for _ in range(6000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        ours = attribute_problem("source", text) is None
        if ours != checker.conforms(text, "uri-reference"):
            disagree.append(("source", text))
        ours = attribute_problem("dataschema", text) is None
        if ours != (checker.conforms(text, "uri") and "#" not in text):
            disagree.append(("dataschema", text))
    assert disagree == []


def test_the_time_check_agrees_with_the_schema_oracle_on_mutated_timestamps() -> None:
    import random

    from meshconnect.eventrules import attribute_problem

    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    rng = random.Random(2)
    bases = [
        "2018-04-05T17:31:00Z",
        "2016-02-29t23:59:59.123+05:30",
        "0001-01-01T00:00:00-00:00",
        "2000-12-31T23:59:60Z",
    ]
    alphabet = "0123456789-:T tZz+."
    disagree, valid = [], 0
    for _ in range(12000):
        chars = list(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            i, roll = rng.randrange(len(chars)), rng.random()
            if roll < 0.6:
                chars[i] = rng.choice(alphabet)
            elif roll < 0.8:
                del chars[i]
            else:
                chars.insert(i, rng.choice(alphabet))
        text = "".join(chars)
        ours = attribute_problem("time", text) is None
        valid += ours
        if text and ours != checker.conforms(text, "date-time"):
            disagree.append(text)
    assert disagree == []
    assert valid > 300  # the mutations make valid timestamps too, not only broken ones


def test_setting_data_to_null_is_a_null_payload_and_deleting_it_leaves_none() -> None:
    from meshconnect.transforms.paths import parse_path

    record = Record.from_dict({**BASE, "data": {"a": 1}})
    parse_path("data").set(record, None)
    assert record.to_dict() == {**BASE, "data": None}
    assert parse_path("data").delete(record) is True
    assert record.to_dict() == BASE
