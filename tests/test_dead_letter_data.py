"""A dead letter's data is always valid JSON the store can keep: never a Python repr."""

from __future__ import annotations

from decimal import Decimal

from meshconnect import jsonvalue
from meshconnect.errorpolicy import storable


def test_values_without_a_json_form_become_the_nearest_json_value() -> None:
    class Thing:
        pass

    data = {"nan": float("nan"), "dnan": Decimal("NaN"), "thing": Thing(), "ok": Decimal("1.10")}
    assert storable(data) == {
        "nan": None,
        "dnan": "NaN",
        "thing": "<Thing: not JSON>",
        "ok": Decimal("1.10"),
    }
    assert jsonvalue.dumps(storable(data)) == (
        b'{"nan":null,"dnan":"NaN","thing":"<Thing: not JSON>","ok":1.10}'
    )


def test_data_nested_deeper_than_the_limit_is_cut_with_a_marker() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    kept = storable({"deep": deep})
    assert jsonvalue.depth(kept) == jsonvalue.MAX_DEPTH
    assert b"<nested deeper: not kept>" in jsonvalue.dumps(kept)


def test_unpaired_surrogates_become_their_escape_text() -> None:
    """A string holding an unpaired surrogate (a record built from ``"\\ud800"`` JSON by a
    lenient parser) cannot be written as UTF-8: the dead letter keeps its ``\\ud800`` text, in
    values and keys, instead of being dropped as unstorable."""
    data = {"s": "a\ud800b", "\udc00": ["ok", "\udfff", 2**70], "n": Decimal("1.5")}
    kept = storable(data)
    assert kept == {"s": "a\\ud800b", "\\udc00": ["ok", "\\udfff", 2**70], "n": Decimal("1.5")}
    assert jsonvalue.loads(jsonvalue.dumps(kept)) == kept
