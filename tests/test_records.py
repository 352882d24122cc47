"""Records are CloudEvents 1.0: lossless both ways through the JSON form and the SDK."""

from __future__ import annotations

import pytest
from cloudevents.conversion import from_json, to_json, to_structured
from cloudevents.http import CloudEvent, from_http

from meshconnect.records import Record


def full_record() -> Record:
    return Record(
        {"id": 7, "name": "Zoë", "tags": ["a", "b"], "price": 12.5, "none": None},
        id="evt-1",
        source="file:///data/orders.jsonl",
        type="com.example.order.created",
        subject="orders.jsonl",
        time="2026-11-24T10:00:00.123456Z",
        datacontenttype="application/json",
        dataschema="https://example.com/order.json",
        extensions={"partitionkey": "7", "sequence": 3, "replayed": True},
    )


def test_the_json_form_round_trips() -> None:
    record = full_record()
    assert Record.from_dict(record.to_dict()) == record


def test_bytes_data_travels_as_data_base64() -> None:
    record = Record(b"\x00\xffbinary", id="b", source="s", type="t", datacontenttype=None)
    event = record.to_dict()
    assert "data" not in event and event["data_base64"] == "AP9iaW5hcnk="
    assert Record.from_dict(event).data == b"\x00\xffbinary"


def test_the_sdk_event_round_trips() -> None:
    record = full_record()
    assert Record.from_cloudevent(record.to_cloudevent()) == record


def test_through_structured_http_and_back() -> None:
    record = full_record()
    headers, body = to_structured(record.to_cloudevent())
    again = Record.from_cloudevent(from_http(headers, body))
    assert again == record


def test_through_the_sdks_json_and_back() -> None:
    record = full_record()
    again = Record.from_cloudevent(from_json(CloudEvent, to_json(record.to_cloudevent())))
    assert again == record


def test_missing_required_attributes_are_rejected() -> None:
    with pytest.raises(ValueError, match="missing required attribute 'source'"):
        Record.from_dict({"specversion": "1.0", "id": "x", "type": "t"})


def test_other_specversions_are_rejected() -> None:
    with pytest.raises(ValueError, match="specversion"):
        Record.from_dict({"specversion": "0.3", "id": "x", "source": "s", "type": "t"})


def test_fast_builds_the_same_record_as_the_constructor() -> None:
    made = Record.fast({"a": 1}, "i", "s", "t", "subj", "application/json")
    assert made == Record({"a": 1}, id="i", source="s", type="t", subject="subj")


def test_copy_is_independent_and_drops_the_encoded_data_cache() -> None:
    record = full_record()
    record.encoded_data = b"{}"
    twin = record.copy()
    twin.data["name"] = "changed"
    twin.extensions["sequence"] = 4
    assert (record.data["name"], record.extensions["sequence"]) == ("Zoë", 3)
    assert twin.encoded_data is None
