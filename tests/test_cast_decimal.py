"""``cast`` of JSON numbers as meshconnect.jsonvalue reads them (int of any size, Decimal with
the exact text): the decimal branch keeps digits and scale, the other types accept them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from test_transforms import build

from meshconnect import jsonvalue
from meshconnect.errors import DataError
from meshconnect.records import Record


def cast(kind: str, json_number: str) -> Any:
    record = Record(jsonvalue.loads(f'{{"v":{json_number}}}'))
    build("cast", fields={"data.v": kind}).apply(record)
    return record.data["v"]


@pytest.mark.parametrize(
    ("json_number", "expected"),
    [
        ("1.10", "1.10"),
        ("169299987.35345112", "169299987.35345112"),
        ("123456789012345678901234567890", "123456789012345678901234567890"),
        ("-123456789012345678901234567890.50", "-123456789012345678901234567890.50"),
        ("1e3", "1000"),
        ("1.50E+2", "150"),
        ("1E-7", "0.0000001"),
        ("-0.0", "-0.0"),
        ("0.000", "0.000"),
        ("2.50e-3", "0.00250"),
        ("1e400", "1" + "0" * 400),
    ],
)
def test_cast_decimal_keeps_the_digits_and_scale_given(json_number: str, expected: str) -> None:
    assert cast("decimal", json_number) == expected


@pytest.mark.parametrize(
    ("kind", "json_number", "expected"),
    [
        ("int", "3.9", 3),
        ("int", "-3.9", -3),
        ("int", "1e30", 10**30),
        ("int", "123456789012345678901234567890.9", 123456789012345678901234567890),
        ("float", "1.10", 1.1),
        ("float", "169299987.35345112", 169299987.35345112),
        ("bool", "0.0", False),
        ("bool", "0.5", True),
        ("string", "1.10", "1.10"),
        ("string", "1e400", "1E+400"),
        ("string", "123456789012345678901234567890", "123456789012345678901234567890"),
    ],
)
def test_other_casts_take_decimals(kind: str, json_number: str, expected: Any) -> None:
    got = cast(kind, json_number)
    assert (got, type(got)) == (expected, type(expected))


@pytest.mark.parametrize(
    ("kind", "json_number", "message"),
    [
        ("decimal", "1e5000", "would have 5001 digits in plain notation"),
        ("decimal", "1e-5000", "would have 5001 digits in plain notation"),
        ("int", "1e5000", "too large for an integer \\(at most 4300 digits\\)"),
        ("float", "1e400", "not a finite float"),
    ],
)
def test_numbers_beyond_reach_are_data_errors(kind: str, json_number: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        cast(kind, json_number)


def test_a_decimal_nan_made_by_code_is_refused() -> None:
    record = Record({"v": Decimal("NaN")})
    with pytest.raises(DataError, match="not a finite number"):
        build("cast", fields={"data.v": "decimal"}).apply(record)
