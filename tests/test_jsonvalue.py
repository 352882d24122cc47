"""meshconnect.jsonvalue: the one JSON representation (exact numbers, bounded nesting)."""

from __future__ import annotations

import copy
import pickle
from collections import OrderedDict
from decimal import Decimal

import pytest

from meshconnect import jsonvalue
from meshconnect.jsonvalue import MAX_DEPTH, JSONValueError, dumps, dumps_each, loads


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("-123456789012345678901234567890", -123456789012345678901234567890),
        ("18446744073709551616", 2**64),
        ("9223372036854775808", 2**63),
        ("-9223372036854775809", -(2**63) - 1),
        ("0", 0),
        ("-0", 0),
        ("1" + "0" * 4299, 10**4299),
    ],
)
def test_integers_of_any_size_are_ints(text: str, value: int) -> None:
    got = loads(text)
    assert type(got) is int
    assert got == value


@pytest.mark.parametrize(
    ("text", "digits", "exponent", "sign"),
    [
        ("1.10", (1, 1, 0), -2, 0),
        ("169299987.35345112", (1, 6, 9, 2, 9, 9, 9, 8, 7, 3, 5, 3, 4, 5, 1, 1, 2), -8, 0),
        ("1e400", (1,), 400, 0),
        ("-0.0", (0,), -1, 1),
        ("1E-7", (1,), -7, 0),
        ("0.0000001", (1,), -7, 0),
        ("0.00000001", (1,), -8, 0),
        ("1.5E+300", (1, 5), 299, 0),
        ("-2.50e-3", (2, 5, 0), -5, 1),
        ("0.000000", (0,), -6, 0),
        ("1.0", (1, 0), -1, 0),
    ],
)
def test_numbers_with_a_fraction_or_exponent_are_exact_decimals(
    text: str, digits: tuple[int, ...], exponent: int, sign: int
) -> None:
    got = loads(text)
    assert isinstance(got, Decimal)
    assert got.as_tuple() == (sign, digits, exponent)


@pytest.mark.parametrize(
    "text",
    [
        "1.10",
        "169299987.35345112",
        "-0.0",
        "1E-7",
        "1E+400",
        "1.5E+300",
        "0.000001",
        "123456789012345678901234567890",
        "-123456789012345678901234567890.000000000000000000001",
        "0.000000",
        "0E-7",
        "1.7976931348623157E+308",
        "5E-324",
    ],
)
def test_numbers_in_plain_or_canonical_form_round_trip_byte_for_byte(text: str) -> None:
    doc = f'{{"v":{text},"nested":[1,{{"w":[{text}]}}]}}'
    assert dumps(loads(doc)).decode() == doc
    assert dumps(loads(text)).decode() == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("1e400", "1E+400"),
        ("0.0000001", "1E-7"),
        ("0.00000001", "1E-8"),
        ("-2.50e-3", "-0.00250"),
        ("1e-400", "1E-400"),
        ("0.0000000", "0E-7"),
        ("5E0", "5"),
        ("0e0", "0"),
        ("1.5e3", "1.5E+3"),
        ("15e2", "1.5E+3"),
    ],
)
def test_exponent_forms_come_out_canonical_with_the_same_digits_and_scale(
    text: str, canonical: str
) -> None:
    """Python's to-scientific-string: the same number, digits and exponent, other characters
    (the module docstring says why)."""
    assert dumps(loads(text)).decode() == canonical
    assert Decimal(canonical).as_tuple() == loads(text).as_tuple()


def test_a_decimal_made_by_code_keeps_digits_and_scale() -> None:
    values = [Decimal("1.10"), Decimal("1E+3"), Decimal("0.00000001"), Decimal("-0.0"), Decimal(5)]
    assert dumps(values) == b"[1.10,1E+3,1E-8,-0.0,5]"
    assert loads(dumps(values)) == values


def test_floats_made_by_code_stay_floats_in_shortest_form() -> None:
    assert dumps({"f": 0.1, "g": 1e16}) == b'{"f":0.1,"g":1e16}'


@pytest.mark.parametrize(
    "value",
    [
        Decimal("NaN"),
        Decimal("-Infinity"),
        Decimal("sNaN"),
        float("nan"),
        float("inf"),
        {"a": [1, {"b": float("-inf")}]},
    ],
)
def test_non_finite_numbers_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match=r"NaN|infinity"):
        dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        {"a": None, "b": {"c": [1, 2, (3, float("nan"))]}},  # deep, beside nulls
        OrderedDict(a=None, b=float("inf")),  # a dict subclass: its values, not its keys
        [None, [None, {"x": float("-inf")}]],
        (None, float("nan")),
    ],
)
def test_a_non_finite_float_beside_nulls_is_found_by_every_encoder(value: object) -> None:
    """Encoders write NaN as ``null``; a text holding ``null`` is checked for one."""
    with pytest.raises(TypeError, match=r"NaN|infinity"):
        dumps(value)
    with pytest.raises(TypeError, match=r"NaN|infinity"):
        dumps_each([{"ok": None}, value])


def test_a_non_finite_float_is_found_in_any_value_of_a_batch() -> None:
    """dumps_each checks a batch level by level: a container the values share is looked at
    once, and a dict subclass anywhere is still looked into."""
    shared = {"types": {"a": "int", "b": None}, "names": ["a", None]}
    fine = [{"meta": shared, "row": {"a": "1", "b": None}, "n": [1.5, -0.0]} for _ in range(50)]
    assert jsonvalue.dumps_each(fine) == [dumps(v) for v in fine]
    for bad in (
        {"meta": shared, "row": {"a": float("nan")}},
        {"meta": shared, "deep": [[[[None, (1, float("-inf"))]]]]},
        {"meta": shared, "od": OrderedDict(a=[None, float("nan")])},
    ):
        with pytest.raises(TypeError, match=r"NaN|infinity"):
            jsonvalue.dumps_each([*fine, bad, *fine])
    shared["types"]["c"] = float("inf")  # a shared container is still looked at
    with pytest.raises(TypeError, match=r"NaN|infinity"):
        jsonvalue.dumps_each(fine)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"n": 0xCB7F, "m": 0xCAFF00},  # integers whose packed bytes look like a NaN's start
        {"big": 2**70},  # beyond MessagePack's integers
        {"text": "\u02ff\u02c0"},  # UTF-8 cb bf cb 80: marker bytes in a text
        {"floats": [1.5, -0.0, 1e300, 5e-324]},  # finite floats: nothing to walk for
    ],
)
def test_the_float_prefilter_never_hides_a_nan_and_lets_the_rest_through(
    extra: dict[str, object],
) -> None:
    """dumps_each walks a batch for a NaN only when its MessagePack form may hold one (a
    float marker byte, then 0x7f or 0xff); whatever else makes such bytes appear, the walk
    then decides."""
    fine = [{"a": None, **extra}, {"b": [None, Decimal("2.50")]}]
    assert jsonvalue.dumps_each(fine) == [dumps(v) for v in fine]
    with pytest.raises(TypeError, match=r"NaN|infinity"):
        jsonvalue.dumps_each([*fine, {"f": float("nan"), "a": None, **extra}])


@pytest.mark.parametrize(
    "value",
    [
        {"a": None, "nan": "null", "d": Decimal("1.5"), "f": 1.5},
        OrderedDict(a=None, b=2.0),
        [[[[None]]]],
        (None, "NaN", b"x"),
    ],
)
def test_nulls_without_a_non_finite_float_are_written(value: object) -> None:
    assert b"null" in dumps(value)
    assert dumps_each([value, None]) == [dumps(value), b"null"]


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "[1e999999999999999999999]"])
def test_non_finite_or_unrepresentable_input_is_refused(text: str) -> None:
    with pytest.raises(JSONValueError):
        loads(text)


def test_null_is_still_null() -> None:
    assert dumps({"a": None, "b": [None]}) == b'{"a":null,"b":[null]}'


def test_an_integer_beyond_the_digit_limit_is_refused_with_the_reason() -> None:
    with pytest.raises(JSONValueError, match="4300 digits"):
        loads("1" + "0" * 4300)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 300, 1_000, 100_000])
def test_nesting_deeper_than_the_limit_is_refused(levels: int) -> None:
    for text in ("[" * levels + "]" * levels, '{"a":' * levels + "1" + "}" * levels):
        with pytest.raises(JSONValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
            loads(text)
        with pytest.raises(JSONValueError, match="nested deeper"):
            loads(text.encode())


def test_nesting_up_to_the_limit_is_accepted_and_written_again() -> None:
    text = "[" * MAX_DEPTH + "1.10" + "]" * MAX_DEPTH
    assert dumps(loads(text)).decode() == text
    assert jsonvalue.depth(loads(text)) == MAX_DEPTH


def test_many_brackets_that_do_not_nest_are_fine() -> None:
    text = "[" + ",".join(['{"a":[1.5]}'] * 1000) + "]"
    assert dumps(loads(text)).decode() == text


def test_duplicate_keys_the_last_one_wins() -> None:
    assert loads('{"a":1,"a":2.50}') == {"a": Decimal("2.50")}


@pytest.mark.parametrize(
    "text", ['"\\ud800"', "[1,2", '{"a":1}x', "", "\ufeff{}", "{'a':1}", "01", "1.", ".5"]
)
def test_invalid_json_is_a_json_value_error(text: str) -> None:
    with pytest.raises(JSONValueError):
        loads(text)
    assert issubclass(JSONValueError, ValueError)


def test_bytes_and_str_give_the_same_value() -> None:
    text = '{"s":"é😀","n":[1,2.5,1e3]}'
    assert loads(text) == loads(text.encode()) == loads(bytearray(text.encode()))
    assert loads(text) == {"s": "é😀", "n": [1, Decimal("2.5"), Decimal("1e3")]}


@pytest.mark.parametrize("value", [object(), {"a": [Decimal("1"), object()]}, {"f": print}])
def test_values_that_have_no_json_form_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps(value)


def test_values_json_lacks_are_written_in_their_json_form() -> None:
    assert dumps({"set": {2}, "bytes": b"\x00\xff", "tuple": (1, 2), 7: "int key"}) == (
        b'{"set":[2],"bytes":"AP8=","tuple":[1,2],"7":"int key"}'
    )


def test_nesting_beyond_what_python_can_write_is_a_type_error() -> None:
    value: list[object] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(TypeError, match="nested too deep"):
        dumps(value)


def test_sorted_keys_and_newline() -> None:
    assert dumps({"b": loads("1e400"), "a": 1}, sort_keys=True, newline=True) == (
        b'{"a":1,"b":1E+400}\n'
    )


def test_decimals_read_from_text_copy_and_pickle_with_their_digits() -> None:
    value = loads('{"v":[1e400,0.00000001,1.10]}')
    for again in (copy.deepcopy(value), copy.copy(value), pickle.loads(pickle.dumps(value))):
        assert dumps(again) == b'{"v":[1E+400,1E-8,1.10]}'


def test_arithmetic_on_a_decimal_read_from_text_is_plain_decimal() -> None:
    value = loads("1e2")
    assert value + 1 == Decimal("101")
    assert type(value + 1) is Decimal
    assert value == Decimal("100") and hash(value) == hash(Decimal(100)) == hash(100)


@pytest.mark.parametrize("value", [{1, 2}, b"x", {1: 2}, [frozenset()]])
def test_strict_refuses_what_has_no_single_json_text(value: object) -> None:
    with pytest.raises(TypeError):
        dumps(value, strict=True)


def test_strict_writes_numbers_as_dumps_does() -> None:
    value = loads('{"b":[1e400,1.10,123456789012345678901234567890],"a":-0.0}')
    assert dumps(value, strict=True, sort_keys=True, newline=True) == (
        b'{"a":-0.0,"b":[1E+400,1.10,123456789012345678901234567890]}\n'
    )
    with pytest.raises(TypeError, match="NaN"):
        dumps([Decimal("NaN")], strict=True)


def test_dumps_each_gives_the_bytes_dumps_gives_each_value() -> None:
    # dumps_each encodes a batch in one call and splits it at newlines: a newline inside a
    # string, a key or bytes must not split a value.
    values = [
        loads('{"a":1.10,"b":123456789012345678901234567890,"c":-0.0}'),
        {"text": "two\nlines\r\n", "key\nwith newline": [1, "\n"]},
        "\n",
        None,
        [],
        {"bytes": b"\n\n\n", "tuple": ("\n",), "set": {"\n"}},
        Decimal("1E+400"),
    ]
    assert jsonvalue.dumps_each(values) == [dumps(v) for v in values]
    assert jsonvalue.dumps_each(()) == []


@pytest.mark.parametrize(
    "bad", [float("nan"), Decimal("NaN"), {"x": float("inf")}, object(), {"f": print}]
)
def test_dumps_each_refuses_what_dumps_refuses(bad: object) -> None:
    values = [{"ok": 1, "null": None}, bad, {"also": "fine"}]
    with pytest.raises(TypeError) as each:
        jsonvalue.dumps_each(values)
    with pytest.raises(TypeError) as one:
        dumps(bad)
    assert str(each.value) == str(one.value)


def test_dumps_each_lets_nulls_through() -> None:
    assert jsonvalue.dumps_each([None, {"a": None}, [None, 1.5]]) == [
        b"null",
        b'{"a":null}',
        b"[null,1.5]",
    ]


def test_what_cannot_be_written_is_named_for_what_it_is() -> None:
    """msgspec raises ValueError for a NaN Decimal, an unpaired surrogate and a 5,000-digit
    integer alike; the message must say which (all were "NaN and infinity ..." before)."""
    from decimal import Decimal

    import pytest

    cases = [
        ("\ud800", "unpaired UTF-16 surrogate"),
        (10**5000, "more than 4300 digits"),
        (Decimal("NaN"), "NaN and infinity"),
    ]
    for value, message in cases:
        with pytest.raises(TypeError, match=message):
            jsonvalue.dumps({"v": value})


@pytest.mark.parametrize(
    "text",
    [b'{"a":"\\ud800"}', b'"\\udbff"', b'{"\\ud800":1}', b'["x\\ud800y"]', '"\\ud800"'],
)
def test_a_lone_surrogate_escape_is_named_as_such(text: str | bytes) -> None:
    # msgspec says "Input data was truncated" for a whole text holding "\ud800": the dead
    # letter told the user to look for a cut-off line that was not there.
    with pytest.raises(jsonvalue.JSONValueError, match="lone UTF-16 surrogate escape"):
        jsonvalue.loads(text)


@pytest.mark.parametrize("text", [b'{"a":1', b'"\\ud800', b'{"a":"\\\\ud800"'])
def test_truncated_text_is_still_called_truncated(text: bytes) -> None:
    with pytest.raises(jsonvalue.JSONValueError, match="truncated"):
        jsonvalue.loads(text)


def test_an_escaped_backslash_before_ud800_is_text() -> None:
    assert jsonvalue.loads(b'{"a":"\\\\ud800"}') == {"a": "\\ud800"}
