"""The one number grammar (meshconnect.numparse) and its users agreeing value by value."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from test_transforms import build

from meshconnect.errors import DataError
from meshconnect.expr import Compiler
from meshconnect.numparse import parse_number, to_float, to_int
from meshconnect.records import Record
from meshconnect.timefmt import read_instant

#: Text that is a number, and the number (int when there is no point and no exponent).
NUMBERS: list[tuple[str, int | Decimal]] = [
    ("0", 0),
    ("-0", 0),
    ("+1", 1),
    ("007", 7),
    ("-42", -42),
    ("1.50", Decimal("1.50")),
    (".5", Decimal("0.5")),
    ("5.", Decimal("5")),
    ("1e3", Decimal("1E+3")),
    ("-2.5E-3", Decimal("-0.0025")),
    ("1E+400", Decimal("1E+400")),
    ("12345678901234567890123", 12345678901234567890123),
]

#: Text that is not a number in the grammar (Python's int()/float() accept some of them).
NOT_NUMBERS = [
    "",
    " 1",
    "1 ",
    "\t1",
    "1\n",
    "1_000",
    "1,000",
    "1 000",
    "\u0664\u0662",  # Arabic-Indic 42
    "\uff14\uff12",  # fullwidth 42
    "\u00b2",  # superscript two
    "0x1A",
    "0b10",
    "0o7",
    "nan",
    "NaN",
    "inf",
    "-Infinity",
    "1e",
    "e3",
    ".",
    "+",
    "--1",
    "+-1",
    "1.2.3",
    "1e3.5",
    "1j",
    "\u0661",  # Arabic-Indic one
]


@pytest.mark.parametrize(("text", "number"), NUMBERS)
def test_numbers_in_the_grammar(text: str, number: int | Decimal) -> None:
    parsed = parse_number(text)

    assert (parsed, type(parsed)) == (number, type(number))


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_text_outside_the_grammar_is_refused_by_every_reader(text: str) -> None:
    with pytest.raises(ValueError, match="is not a number"):
        parse_number(text)
    with pytest.raises(DataError, match="is not a number"):
        build("cast", fields={"data.v": "int"}).apply(Record({"v": text}))
    with pytest.raises(DataError, match="is not a number"):
        build("cast", fields={"data.v": "float"}).apply(Record({"v": text}))
    with pytest.raises(DataError, match="is not a number"):
        build("cast", fields={"data.v": "decimal"}).apply(Record({"v": text}))
    for function in ("int", "float"):
        with pytest.raises(DataError, match="is not a number"):
            Compiler().expression(f"{function}(data.v)", field="where")(Record({"v": text}))
    with pytest.raises(ValueError, match="is not a number"):
        read_instant(text, "epoch_s")


@pytest.mark.parametrize(
    "value",
    ["42", "+42", "-3.9", "3.9", "1e3", "-1.5E2", "007", 3.9, -3.9, True, 10**40, Decimal("2.5")],
)
def test_cast_and_the_expression_functions_agree(value: Any) -> None:
    record = Record({"v": value})
    as_int = Compiler().expression("int(data.v)", field="where")(record)
    as_float = Compiler().expression("float(data.v)", field="where")(record)

    cast_int = build("cast", fields={"data.v": "int"}).apply(Record({"v": value}))
    cast_float = build("cast", fields={"data.v": "float"}).apply(Record({"v": value}))

    assert (as_int, as_float) == (cast_int.data["v"], cast_float.data["v"])  # type: ignore[union-attr]
    assert (as_int, as_float) == (to_int(value), to_float(value))


def test_whole_numbers_are_cut_towards_zero_as_kafka_cast_does() -> None:
    assert [to_int(v) for v in ("3.9", "-3.9", "1e3", "1.5e1", "-0.5", Decimal("-7.99"))] == [
        3,
        -3,
        1000,
        15,
        0,
        -7,
    ]


def test_a_huge_exponent_is_refused_before_making_an_integer() -> None:
    with pytest.raises(ValueError, match="too large for an integer"):
        to_int("1e999999999")
    with pytest.raises(ValueError, match="too large for an integer"):
        to_int(Decimal("1e5000"))


def test_too_many_digits_are_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_number("9" * 5000)
