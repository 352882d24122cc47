"""cast, timestamp_convert, and the time helpers of meshconnect.timefmt they use."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from test_transforms import SPECS, build, chain, fails_unchanged

from meshconnect.errors import ConfigError
from meshconnect.mesh.codec import decode_json, encode_json
from meshconnect.records import Record
from meshconnect.timefmt import format_time, parse_time, zone

# -- cast -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "42", 42),
        ("int", "-7", -7),
        ("int", "+7", 7),
        ("int", "007", 7),
        ("int", "3.9", 3),
        ("int", "-3.9", -3),
        ("int", "1e3", 1000),
        ("int", "1.5E2", 150),
        ("int", Decimal("-2.75"), -2),
        ("int", Decimal("1E+3"), 1000),
        ("int", 10**30, 10**30),
        ("int", "123456789012345678901234567890", 123456789012345678901234567890),
        ("float", ".5", 0.5),
        ("float", "5.", 5.0),
        ("float", Decimal("0.1"), 0.1),
        ("bool", Decimal("0.0"), False),
        ("int", 3.9, 3),
        ("int", True, 1),
        ("float", "2.5", 2.5),
        ("float", 2, 2.0),
        ("string", 42, "42"),
        ("string", 1.5, "1.5"),
        ("string", False, "false"),
        ("string", {"a": [1]}, '{"a":[1]}'),
        ("bool", "yes", True),
        ("bool", "OFF", False),
        ("bool", 0, False),
        ("bool", 2.5, True),
        ("decimal", "12.50", "12.50"),
        ("decimal", 0.1, "0.1"),
        ("decimal", 10, "10"),
        ("decimal", "1E+3", "1000"),
        ("decimal", "-1.5e-3", "-0.0015"),
        ("timestamp", 1700000000000, "2023-11-14T22:13:20Z"),
        ("timestamp", "2023-11-14T23:13:20+01:00", "2023-11-14T22:13:20Z"),
        ("timestamp", "2023-11-14 22:13:20.5", "2023-11-14T22:13:20.500000Z"),
        ("timestamp", "2023-11-14", "2023-11-14T00:00:00Z"),
    ],
)
def test_cast_converts(kind: str, value: Any, expected: Any) -> None:
    record = Record({"v": value})

    build("cast", fields={"data.v": kind}).apply(record)

    assert (record.data["v"], type(record.data["v"])) == (expected, type(expected))


def test_cast_several_nested_fields_and_attributes() -> None:
    record = Record({"o": {"qty": "3", "price": 9.99, "lines": [{"n": "1"}]}}, subject="7")

    build(
        "cast",
        fields={"data.o.qty": "int", "data.o.price": "decimal", "data.o.lines[0].n": "float"},
    ).apply(record)

    assert record.data == {"o": {"qty": 3, "price": "9.99", "lines": [{"n": 1.0}]}}


def test_cast_keeps_null() -> None:
    record = Record({"v": None})

    build("cast", fields={"data.v": "int"}).apply(record)

    assert record.data == {"v": None}


def test_cast_with_when() -> None:
    records = [Record({"v": "1", "k": 1}), Record({"v": "2", "k": 2})]

    kept, _ = chain(build("cast", fields={"data.v": "int"}), when=["data.k == 2"]).process(records)

    assert [r.data["v"] for r in kept] == ["1", 2]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("int", "abc", "'abc' is not a number"),
        ("int", "1_000", "'1_000' is not a number"),
        ("int", " 42", "' 42' is not a number"),
        ("int", "42\n", "is not a number"),
        ("int", "\u0664\u0662", "is not a number"),
        ("int", "\uff14\uff12", "is not a number"),
        ("int", "0x1A", "'0x1A' is not a number"),
        ("int", "1e", "'1e' is not a number"),
        ("int", "", "'' is not a number"),
        ("int", "1e99999", "too large for an integer"),
        ("int", [1], "an array cannot become an integer"),
        ("int", float("inf"), "inf has no integer value"),
        ("float", "nan", "'nan' is not a number"),
        ("float", "inf", "'inf' is not a number"),
        ("float", "Infinity", "'Infinity' is not a number"),
        ("float", "1e400", "not a finite float"),
        ("float", Decimal("1e400"), "1E\\+400 is not a finite float"),
        ("float", 10**400, "is not a finite float"),
        ("float", "1_0.5", "is not a number"),
        ("float", {}, "cannot become a number"),
        ("bool", "maybe", "'maybe' is not a boolean"),
        ("decimal", "12,50", "'12,50' is not a number"),
        ("decimal", "1_000", "'1_000' is not a number"),
        ("decimal", " 1", "' 1' is not a number"),
        ("decimal", True, "cannot become a decimal"),
        ("decimal", "Infinity", "'Infinity' is not a number"),
        ("timestamp", "yesterday", "not an ISO 8601 time"),
        ("timestamp", True, "not a boolean"),
        ("timestamp", 1e300, "out of range"),
    ],
)
def test_cast_of_a_wrong_value_is_a_data_error_naming_the_field(
    kind: str, value: Any, message: str
) -> None:
    fails_unchanged(
        build("cast", fields={"data.ok": "string", "data.v": kind}),
        Record({"ok": 1, "v": value}),
        f"cast: data.v: .*{message}",
    )


def test_cast_of_a_missing_field_is_a_data_error() -> None:
    fails_unchanged(
        build("cast", fields={"data.a.b": "int"}), Record({"a": {}}), "cast: data.a.b is missing"
    )


def test_cast_through_a_wrong_shape_is_a_data_error() -> None:
    fails_unchanged(build("cast", fields={"data.a.b": "int"}), Record({"a": 5}), "data.a is a")


@pytest.mark.parametrize(
    ("path", "kind", "message"),
    [("subject", "int", "takes decimal, string, timestamp"), ("partitionkey", "float", "float")],
)
def test_cast_refuses_types_an_attribute_cannot_hold(path: str, kind: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build("cast", fields={path: kind})


def test_cast_refuses_unknown_types() -> None:
    with pytest.raises(ValidationError, match="'int', 'float', 'string', 'bool', 'decimal'"):
        SPECS["cast"].options_model(fields={"data.x": "money"})


def test_a_decimal_survives_the_mesh_codec_exactly() -> None:
    record = Record({"price": "0.1"})
    build("cast", fields={"data.price": "decimal"}).apply(record)

    stored = decode_json(encode_json(record.data))

    assert Decimal(stored["price"]) + Decimal("0.2") == Decimal("0.3")


# -- timestamp_convert ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "value", "expected"),
    [
        ({"from": "epoch_ms", "to": "iso"}, 1700000000123, "2023-11-14T22:13:20.123000Z"),
        ({"from": "epoch_s", "to": "iso"}, 1700000000, "2023-11-14T22:13:20Z"),
        ({"from": "epoch_s", "to": "iso"}, "1700000000", "2023-11-14T22:13:20Z"),
        ({"from": "iso", "to": "epoch_ms"}, "2023-11-14T22:13:20.123Z", 1700000000123),
        ({"from": "iso", "to": "epoch_s"}, "2023-11-14T23:13:20.9+01:00", 1700000000),
        ({"to": "epoch_s"}, 1700000000000, 1700000000),
        (
            {"from": "epoch_s", "to": "iso", "timezone": "Europe/Berlin"},
            1700000000,
            "2023-11-14T23:13:20+01:00",
        ),
        (
            {"from": "epoch_s", "to": "iso", "timezone": "America/New_York"},
            1688000000,
            "2023-06-28T20:53:20-04:00",
        ),
        ({"from": "%d/%m/%Y %H:%M", "to": "iso"}, "14/11/2023 22:13", "2023-11-14T22:13:00Z"),
        (
            {"from": "%d/%m/%Y %H:%M", "to": "iso", "input_timezone": "Europe/Berlin"},
            "14/11/2023 23:13",
            "2023-11-14T22:13:00Z",
        ),
        (
            {"from": "iso", "to": "%Y-%m-%d %H:%M %Z", "timezone": "Asia/Tokyo"},
            "2023-11-14T22:13:20Z",
            "2023-11-15 07:13 JST",
        ),
        ({"from": "epoch_ms", "to": "%Y%m%d"}, -86400000, "19691231"),
    ],
)
def test_timestamp_convert(options: dict[str, str], value: Any, expected: Any) -> None:
    record = Record({"t": value})

    build("timestamp_convert", fields=["data.t"], **options).apply(record)

    assert record.data["t"] == expected


def test_timestamp_convert_of_nested_fields_and_the_time_attribute() -> None:
    record = Record({"o": {"at": 1700000000}}, time="2023-11-14T23:13:20+01:00")

    build("timestamp_convert", fields=["data.o.at", "time"], **{"from": "auto"}).apply(record)

    assert (record.data["o"]["at"], record.time) == ("1970-01-20T16:13:20Z", "2023-11-14T22:13:20Z")


def test_timestamp_convert_with_when() -> None:
    records = [Record({"t": 0, "k": 1}), Record({"t": 0, "k": 2})]

    kept, _ = chain(
        build("timestamp_convert", fields=["data.t"], **{"from": "epoch_s"}), when=["data.k == 2"]
    ).process(records)

    assert [r.data["t"] for r in kept] == [0, "1970-01-01T00:00:00Z"]


@pytest.mark.parametrize(
    ("options", "value", "message"),
    [
        ({"from": "epoch_ms"}, "soon", "expected a number of milliseconds since the epoch"),
        ({"from": "iso"}, 17, "expected a string, not a number"),
        ({"from": "%Y-%m-%d"}, "14/11/2023", "does not match the format '%Y-%m-%d'"),
        ({"from": "epoch_s"}, 1e20, "out of range"),
        ({"from": "auto"}, [1], "expected an ISO 8601 string or epoch milliseconds"),
    ],
)
def test_timestamp_convert_of_a_wrong_value_is_a_data_error(
    options: dict[str, str], value: Any, message: str
) -> None:
    fails_unchanged(
        build("timestamp_convert", fields=["data.t", "data.ok"], **options),
        Record({"ok": 0, "t": value}),
        f"timestamp_convert: data.t: .*{message}",
    )


def test_timestamp_convert_of_a_missing_field_is_a_data_error() -> None:
    fails_unchanged(
        build("timestamp_convert", fields=["data.t"]),
        Record({}),
        "timestamp_convert: data.t is missing",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not a known time zone: use an IANA name"),
        (
            {"to": "auto"},
            "not a time format: use epoch_s, epoch_ms, epoch_us, .* iso_ns or a strftime",
        ),
        ({"from": "yyyy-MM-dd"}, "not a time format: use auto, epoch_s"),
        # patterns whose directives strptime cannot read or strftime writes wrongly: each
        # failed every record ('%Q' "does not match"), or wrote a wrong value silently ('%s'
        # in the worker's local zone, '%Ez' as +0000, '%Q' and a trailing '%' as they are)
        ({"from": "%d.%m.%Q"}, "not a time format: '%Q' is not a directive that can be read"),
        ({"from": "%-d.%m.%Y"}, "'%-d': flags and widths are not supported"),
        ({"to": "%s"}, "'%s' writes the time in the worker's local zone: use the format epoch_s"),
        ({"to": "%Y %Ez"}, "'%E' is not a directive that can be written"),
        ({"to": "%d.%m.%Q"}, "'%Q' is not a directive that can be written"),
        ({"to": "%Y%"}, "the pattern ends in a lone percent sign"),
        ({"to": "%1000000d"}, "'%1000000d': flags and widths are not supported"),
    ],
)
def test_timestamp_convert_options_are_checked(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["timestamp_convert"].options_model(fields=["data.t"], **options)


@pytest.mark.parametrize("to", ["%-d.%m.%Y", "%e %T %F %G-%V-%u %%s", "%Y-%m-%d %H:%M %Z"])
def test_timestamp_convert_writes_the_c_library_directives_that_are_right(to: str) -> None:
    record = Record({"t": "2023-11-04T22:13:20Z"})
    build("timestamp_convert", fields=["data.t"], to=to, timezone="Asia/Tokyo").apply(record)

    expected = {
        "%-d.%m.%Y": "5.11.2023",
        "%e %T %F %G-%V-%u %%s": " 5 07:13:20 2023-11-05 2023-44-7 %s",
        "%Y-%m-%d %H:%M %Z": "2023-11-05 07:13 JST",
    }
    assert record.data == {"t": expected[to]}


def test_timestamp_convert_to_epoch_refuses_an_attribute() -> None:
    with pytest.raises(ConfigError, match="time is an attribute"):
        build("timestamp_convert", fields=["time"], to="epoch_ms")


# -- meshconnect.timefmt --------------------------------------------------------------------------


def test_zone_names_an_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        zone("Mars/Olympus")


def test_parse_time_gives_aware_datetimes() -> None:
    berlin = zone("Europe/Berlin")

    assert [
        parse_time(0, "epoch_s"),
        parse_time("2026-01-01T12:00", "iso", tz=berlin),
        parse_time(datetime(2026, 1, 1), tz=berlin),
    ] == [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 1, 11, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=berlin),
    ]


def test_format_time_in_a_zone_across_daylight_saving() -> None:
    berlin = zone("Europe/Berlin")
    winter, summer = datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 7, 1, 12, tzinfo=UTC)

    assert [format_time(winter, "iso", tz=berlin), format_time(summer, "iso", tz=berlin)] == [
        "2026-01-01T13:00:00+01:00",
        "2026-07-01T14:00:00+02:00",
    ]


def test_epoch_milliseconds_round_trip_exactly() -> None:
    for ms in (0, 1, -1, 1700000000123, -62135596800000):
        assert format_time(parse_time(ms, "epoch_ms"), "epoch_ms") == ms


def test_time_results_are_json() -> None:
    record = Record({"t": 1700000000})
    build("timestamp_convert", fields=["data.t"], **{"from": "epoch_s"}).apply(record)

    assert orjson.loads(orjson.dumps(record.data)) == {"t": "2023-11-14T22:13:20Z"}


# -- Decimals, precisions and the range (issue 20) ------------------------------------------------


@pytest.mark.parametrize(
    ("options", "value", "expected"),
    [
        ({"from": "epoch_s"}, Decimal("253402300799.5"), "9999-12-31T23:59:59.500000Z"),
        ({"from": "epoch_s"}, Decimal("253402300799.999999999"), "9999-12-31T23:59:59.999999999Z"),
        (
            {"from": "epoch_s"},
            Decimal("1700000000.1234567891234"),
            "2023-11-14T22:13:20.123456789Z",
        ),
        ({"from": "epoch_ms"}, Decimal("253402300799999.999999"), "9999-12-31T23:59:59.999999999Z"),
        ({"from": "epoch_s"}, Decimal("-0.000000000001"), "1969-12-31T23:59:59.999999999Z"),
        ({"from": "epoch_s"}, Decimal("1E-999999999"), "1970-01-01T00:00:00Z"),
        ({"from": "epoch_ms"}, Decimal("1.7E+12"), "2023-11-14T22:13:20Z"),
        ({"from": "epoch_s", "to": "epoch_ns"}, Decimal("0.000000001"), 1),
        ({"from": "epoch_us", "to": "epoch_ms"}, Decimal("-1"), -1),
    ],
)
def test_timestamp_convert_reads_decimals_exactly(
    options: dict[str, Any], value: Decimal, expected: Any
) -> None:
    record = Record({"t": value})

    build("timestamp_convert", fields=["data.t"], **options).apply(record)

    assert record.data["t"] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("253402300800"), "out of range"),
        (Decimal("1E+999999999"), "out of range"),
        (Decimal("-62135596800.000000001"), "out of range"),
    ],
)
def test_timestamp_convert_of_a_decimal_out_of_range(value: Decimal, message: str) -> None:
    fails_unchanged(
        build("timestamp_convert", fields=["data.t"], **{"from": "epoch_s"}),
        Record({"t": value}),
        message,
    )


def test_every_instant_converts_both_ways_at_every_precision() -> None:
    from meshconnect.timefmt import MAX_NS, MIN_NS, read_instant, write_instant

    instants = [MIN_NS, MIN_NS + 1, -1, 0, 1, 1700000000123456789, MAX_NS - 1, MAX_NS]
    for ns in instants:
        for fmt, unit in (("epoch_s", 10**9), ("epoch_ms", 10**6), ("epoch_us", 10**3)):
            written = write_instant(ns, fmt)
            assert written == ns // unit
            assert read_instant(written, fmt) == ns - ns % unit
        assert read_instant(write_instant(ns, "epoch_ns"), "epoch_ns") == ns
        assert read_instant(write_instant(ns, "iso"), "iso") == ns
        assert read_instant(write_instant(ns, "iso_ns"), "iso") == ns
        assert read_instant(str(write_instant(ns, "epoch_ns")), "epoch_ns") == ns
        seconds = Decimal(ns) / Decimal(10**9)
        assert read_instant(seconds, "epoch_s") == ns


def test_cast_and_mask_take_decimals() -> None:
    record = Record(
        {"i": Decimal("2.75"), "f": Decimal("0.1"), "b": Decimal("0"), "m": Decimal("9.5")}
    )

    build("cast", fields={"data.i": "int", "data.f": "float", "data.b": "bool"}).apply(record)
    build("mask", fields=["data.m"], mode="typed").apply(record)

    assert record.data == {"i": 2, "f": 0.1, "b": False, "m": Decimal(0)}
    masked = Record({"m": Decimal("9.5")})
    build("mask", fields=["data.m"], mode="typed", replacement="123.0").apply(masked)
    assert (masked.data["m"], str(masked.data["m"])) == (Decimal("123.0"), "123.0")


BOOLEAN_WORDS = [
    ("true", True),
    ("Yes", True),
    (" on ", True),
    ("1", True),
    ("y", True),
    ("T", True),
    ("false", False),
    ("NO", False),
    ("off", False),
    ("0", False),
    ("n", False),
    ("f", False),
    ("", False),
    ("maybe", None),
    ("yess", None),
    ("2", None),
]


@pytest.mark.parametrize(("word", "expected"), BOOLEAN_WORDS)
def test_cast_bool_and_the_bool_function_read_every_word_alike(word: str, expected: Any) -> None:
    """One parser (meshconnect.booleans): `cast: bool` and `bool()` in expressions agree."""
    from meshconnect.errors import DataError
    from meshconnect.expr import Compiler

    record = Record({"v": word})
    read = Compiler().expression("bool(data.v)", field="value")
    if expected is None:
        with pytest.raises(DataError, match="bool\\(\\) cannot read"):
            read(record)
        fails_unchanged(build("cast", fields={"data.v": "bool"}), record, "is not a boolean")
        return
    assert read(record) is expected
    build("cast", fields={"data.v": "bool"}).apply(record)
    assert record.data["v"] is expected
