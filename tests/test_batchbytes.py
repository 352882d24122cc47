"""values_bytes: what a row weighs for the sources' byte bound (meshconnect.batchbytes)."""

from __future__ import annotations

import datetime
from decimal import Decimal

from meshconnect.batchbytes import SMALL_VALUE, values_bytes


class Text(str):
    """A str subclass, as some drivers return for enums or citext."""


def test_text_and_bytes_count_their_length_and_scalars_a_small_fixed_size() -> None:
    row = ("abc", b"\x00" * 10, 7, 1.5, Decimal("1.25"), datetime.date(2024, 1, 1), None)
    assert values_bytes(row) == 3 + 10 + 5 * SMALL_VALUE
    assert values_bytes([Text("x" * 100), bytearray(20), memoryview(b"1234")]) == 124


def test_a_json_document_or_an_array_counts_what_it_holds() -> None:
    """A JSONB or JSON column comes as a dict, an ARRAY column as a list: counted as 8 bytes,
    1,000 rows of a 50 MB document each were one batch of 50 GB."""
    big = {"payload": "x" * 1_000_000, "items": [{"name": "y" * 1000}] * 100}
    assert values_bytes([big]) > 1_100_000
    assert values_bytes([["a" * 500, "b" * 500]]) >= 1000


def test_a_deeply_nested_document_costs_no_recursion() -> None:
    deep: list[object] = ["leaf"]
    for _ in range(100_000):
        deep = [deep]
    assert values_bytes([deep]) == 4 + 100_001 * SMALL_VALUE
