"""Numbers in expressions: int, float and Decimal (JSON data as meshconnect.jsonvalue reads it)
compared and computed together, exactly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meshconnect import jsonvalue
from meshconnect.errors import DataError
from meshconnect.expr import Compiler
from meshconnect.records import Record

DATA = jsonvalue.loads(
    '{"v":169299987.35345112,"price":1.10,"big":123456789012345678901234567890,'
    '"huge":1e400,"tiny":1E-7,"negzero":-0.0,"neg":-7.5,"n":7,"items":[{"p":0.1},{"p":0.2}],'
    '"wide":123456789012345678901234567890.123456789}'
)


def evaluate(text: str, data: Any = None) -> Any:
    return Compiler().expression(text)(Record(DATA if data is None else data))


def exact(value: Any) -> tuple[type, str]:
    """A value with its type and exact text (Decimal('1.10') is not Decimal('1.1') here)."""
    return type(value), jsonvalue.dumps(value).decode()


@pytest.mark.parametrize(
    "text",
    [
        "data.v == 169299987.35345112",
        "data.v != 169299987.35345113",
        "data.v > 169299987.35345111",
        "data.v < 169299987.35345113",
        "data.price == 1.1",
        "data.price == 1.10",
        "data.price >= 1.1 and data.price <= 1.10",
        "data.big == 123456789012345678901234567890",
        "data.big > 123456789012345678901234567889.9",
        "data.huge > 1e399",
        "data.huge == 1e400",
        "data.tiny == 0.0000001",
        "data.negzero == 0",
        "data.neg < -7.4999",
        "data.items[0].p + data.items[1].p == 0.3",
        "0.1 + 0.2 == 0.3",
        "float(data.price) == 1.1",
        "float(data.items[0].p) == data.items[0].p",
        "data.items[0].p == float('0.1')",
        "float('0.1') < data.items[1].p",
        "data.v in [169299987.35345112, 2]",
        "-data.neg == 7.5",
        "data.wide - 1 == 123456789012345678901234567889.123456789",
        "data.huge * data.huge * data.huge == 1e1200",
    ],
)
def test_comparisons_are_exact(text: str) -> None:
    assert evaluate(text) is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.price + 1", (Decimal, "2.10")),
        ("data.price * 3", (Decimal, "3.30")),
        ("data.price - 0.05", (Decimal, "1.05")),
        ("data.price + 1.5", (Decimal, "2.60")),
        ("data.price + float('1.5')", (Decimal, "2.60")),
        ("float('1.5') + data.price", (Decimal, "2.60")),
        ("data.big + 1", (int, "123456789012345678901234567891")),
        ("data.big * 10.0", (Decimal, "1234567890123456789012345678900.0")),
        ("data.wide * 2", (Decimal, "246913578024691357802469135780.246913578")),
        ("-data.wide", (Decimal, "-123456789012345678901234567890.123456789")),
        ("+data.wide", (Decimal, "123456789012345678901234567890.123456789")),
        ("abs(data.neg)", (Decimal, "7.5")),
        ("data.huge + 1", (Decimal, "1" + "0" * 399 + "1")),
        ("data.price / 4", (Decimal, "0.275")),
        ("1 / 3.0", (Decimal, "0.3333333333333333333333333333333333")),
        ("7 / 2", (float, "3.5")),
        ("-7.5 // 2", (Decimal, "-4")),
        ("-7.5 % 2", (Decimal, "0.5")),
        ("data.neg // 2", (Decimal, "-4")),
        ("data.neg % 2", (Decimal, "0.5")),
        ("sum(data.price, 2, 0.05)", (Decimal, "3.15")),
        ("sum([data.price, float('0.1')])", (Decimal, "1.20")),
        ("sum(1, 2)", (int, "3")),
        ("round(data.v, 2)", (Decimal, "169299987.35")),
        ("round(2.675, 2)", (Decimal, "2.68")),
        ("round(data.price)", (int, "1")),
        ("round(data.wide, 3)", (Decimal, "123456789012345678901234567890.123")),
        ("floor(data.neg)", (int, "-8")),
        ("ceil(data.neg)", (int, "-7")),
        ("int(data.neg)", (int, "-7")),
        ("int(data.wide)", (int, "123456789012345678901234567890")),
        ("float(data.v)", (float, "169299987.35345113")),
        ("min(data.price, 2, float('1.2'))", (Decimal, "1.10")),
        ("max(data.price, float('1.2'))", (float, "1.2")),
        ("str(data.price)", (str, '"1.10"')),
        ("str(data.huge)", (str, '"1E+400"')),
        ("str(data.items)", (str, '"[{\\"p\\":0.1},{\\"p\\":0.2}]"')),
        ("concat(data.tiny)", (str, '"1E-7"')),
    ],
)
def test_arithmetic_is_exact_and_never_a_type_error(text: str, expected: tuple[type, str]) -> None:
    assert exact(evaluate(text)) == expected


def test_a_template_renders_numbers_with_their_digits() -> None:
    template = Compiler().template("{data.v} {data.price} {data.big} {data.huge} {data}")
    text = template.render(
        Record({"v": DATA["v"], "price": DATA["price"], "big": DATA["big"], "huge": DATA["huge"]})
    )
    assert text == (
        "169299987.35345112 1.10 123456789012345678901234567890 1E+400 "
        '{"v":169299987.35345112,"price":1.10,"big":123456789012345678901234567890,"huge":1E+400}'
    )


def test_the_bench_filter_still_compares_natively() -> None:
    """``data.total >= 10`` with an int literal needs no helper: Decimal and int compare
    exactly in Python."""
    predicate = Compiler().predicate("data.total >= 10")
    assert predicate(Record({"total": Decimal("10.00")})) is True
    assert predicate(Record({"total": Decimal("9.99")})) is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1e999 + 1e-999", "more than 1000 significant digits"),
        ("int(data.huge * 1e4000)", "more than 4,?300 digits"),
        ("floor(1e5000)", "more than 4,?300 digits"),
        ("data.price / 0", "division by zero"),
        ("data.price + 'x'", "unsupported operand"),
        ("data.price < 'x'", "not supported"),
    ],
)
def test_numbers_out_of_reach_are_data_errors(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        evaluate(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("float(data.s) == data.d", True),
        ("float(data.s) in [0.1, 0.2]", True),
        ("float(data.s) not in [0.1, 0.2]", False),
        ("data.d in [float(data.s)]", True),
        ("float(data.s) in data.l", True),
        ("[float(data.s)] == data.l", True),
        ("data.l != [float(data.s)]", False),
        ("{'k': float(data.s)} == {'k': data.d}", True),
        ("float(data.s) in {0.1}", True),
        ("contains(data.l, float(data.s))", True),
        ("indexOf(data.l, float(data.s))", 0),
        ("indexOf(data.l, 0.3)", -1),
        ("float(data.s) in [0.3]", False),
        ("data.c in ['DE', 'FR']", True),
        ("data.c in data.missing", False),
        ("[1] == (1,)", False),
    ],
)
def test_equality_in_contains_and_index_of_agree_on_floats_and_decimals(
    text: str, expected: Any
) -> None:
    """A float meeting a decimal counts as its shortest text for ==; `in`, contains() and
    indexOf() and arrays compared with == said otherwise (a float made by cast or float() was
    never `in [0.1, 0.2]`, while `== 0.1` was true)."""
    data = {"s": "0.1", "d": Decimal("0.1"), "l": [Decimal("0.1")], "c": "DE"}
    assert evaluate(text, data) == expected
