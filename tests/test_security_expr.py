"""Expressions bounded by data they do not control (issue 19 items 1-3, issue 20 regex replace).

Every value an expression builds stays within the documented budget, arithmetic within the
documented digits, and regular expressions run in linear time (RE2). Each hostile input has
its exact outcome: the value, or the DataError with the reason a dead letter carries.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from meshconnect.errors import DataError
from meshconnect.expr import Compiler, ExpressionError
from meshconnect.expr._budget import MAX_INT_DIGITS, MAX_ROUND_DIGITS, MAX_SIZE, measure
from meshconnect.records import Record

BUDGET = f"larger than the expression budget of {MAX_SIZE:,}"


def evaluate(text: str, data: Any = None, *, record_patterns: bool = False, **attrs: Any) -> Any:
    compiled = Compiler(record_patterns=record_patterns).expression(text, field="where")
    return compiled(Record(data, **attrs))


def failure(text: str, data: Any = None, *, record_patterns: bool = False) -> str:
    with pytest.raises(DataError) as caught:
        evaluate(text, data, record_patterns=record_patterns)
    return str(caught.value)


# -- item 1: catastrophic regular expressions ------------------------------------------------


def test_a_catastrophic_pattern_answers_at_once() -> None:
    """``(a+)+$`` backtracks for hours in Python's re on 34 a's and a '!'; RE2 is linear."""
    start = time.monotonic()
    results = [
        evaluate("matches(data.s, '(a+)+$')", {"s": "a" * n + "!"}) for n in (34, 10_000, 100_000)
    ]
    elapsed = time.monotonic() - start

    assert results == [False, False, False]
    assert evaluate("matches(data.s, '(a+)+$')", {"s": "a" * 34}) is True
    assert elapsed < 5  # generous for a loaded machine; backtracking would take hours


def test_a_pattern_from_the_record_is_refused_unless_the_file_allows_it() -> None:
    with pytest.raises(ExpressionError) as caught:
        Compiler().expression("matches(data.s, data.p)", field="where")

    assert caught.value.column == 16
    assert "needs 'expressions: {record_patterns: true}'" in caught.value.message


def test_an_allowed_record_pattern_is_bounded_too() -> None:
    data = {"s": "a" * 50_000 + "!", "p": "(a+)+$"}
    start = time.monotonic()

    assert evaluate("matches(data.s, data.p)", data, record_patterns=True) is False
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(", "bad regular expression '(': missing ): ("),
        ("(a)\\1", "bad regular expression '(a)\\\\1': invalid escape sequence: \\1"),
        ("(?=a)", "bad regular expression '(?=a)': invalid perl operator: (?="),
        ("x" * 2001, "regular expression longer than 2,000 characters (2,001)"),
        ("\\pL{1000}", "bad regular expression '\\\\pL{1000}': pattern too large - compile failed"),
    ],
)
def test_a_bad_record_pattern_is_a_data_error(pattern: str, reason: str) -> None:
    message = failure("matches(data.s, data.p)", {"s": "a", "p": pattern}, record_patterns=True)

    assert reason in message


def test_a_bad_constant_pattern_fails_validation_at_its_column() -> None:
    with pytest.raises(ExpressionError) as caught:
        Compiler().expression("data.x == 1 or matches(data.s, '(?<=a)b')")

    assert caught.value.column == 31
    assert caught.value.message.startswith("bad regular expression '(?<=a)b'")


# -- issue 20: replace_regex --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        ("replace_regex(data.t, '(.*)-(.*)-(.*)', '$3')", {"t": "db-shop-orders"}, "orders"),
        (
            "replace_regex(data.t, '^(\\\\w+)_v(\\\\d+)$', '$1.v$2')",
            {"t": "orders_v2"},
            "orders.v2",
        ),
        (
            "replace_regex(data.t, '(?P<db>\\\\w+)\\\\.(?P<t>\\\\w+)', '${t}@${db}')",
            {"t": "s.o"},
            "o@s",
        ),
        ("replace_regex(data.t, 'o', '0')", {"t": "foo boo"}, "f00 b00"),
        ("replace_regex(data.t, 'x', 'y')", {"t": "abc"}, "abc"),
        ("replace_regex(data.t, '(a)|(b)', '[$2]')", {"t": "ab"}, "[][b]"),
        ("replace_regex(data.t, 'a', '$$1')", {"t": "a"}, "$1"),
        ("replace_regex(data.t, 'a', '\\\\$0')", {"t": "a"}, "$0"),
        ("replace_regex(data.t, '(a)', '$0$1$10')", {"t": "a"}, "aaa0"),
        ("replace_regex(data.t, '', '-')", {"t": "ab"}, "-a-b-"),
        ("replace_regex(data.t, 'é', 'e')", {"t": "café"}, "cafe"),
        ("replace_regex(data.missing, 'a', 'b')", {}, None),
        ("replace_regex(data.t, 'a', data.r)", {"t": "a", "r": "<$0>"}, "<a>"),
    ],
)
def test_replace_regex(text: str, data: Any, expected: Any) -> None:
    assert evaluate(text, data) == expected


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "replace_regex(data.t, '(a)', '$2')",
            29,
            "replacement refers to group 2; the pattern has 1",
        ),
        (
            "replace_regex(data.t, '(a)', '${x}')",
            29,
            "replacement names no group of the pattern: ${x}",
        ),
        ("replace_regex(data.t, 'a', 'x$')", 27, "replacement ends with '$'"),
        ("replace_regex(data.t, data.p, 'x')", 22, "the regular expression must be a constant"),
    ],
)
def test_a_bad_replacement_fails_validation(text: str, column: int, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        Compiler().expression(text)

    assert caught.value.column == column
    assert message in caught.value.message


def test_replace_regex_in_a_template_builds_a_regex_router_topic() -> None:
    template = Compiler().template("cdc.{replace_regex(subject, '^(\\\\w+)\\\\.(\\\\w+)$', '$2')}")

    assert template.render(Record({}, subject="shop.orders")) == "cdc.orders"


def test_replace_regex_output_is_within_the_budget() -> None:
    message = failure("replace_regex(data.s, 'a', data.r)", {"s": "a" * 1000, "r": "x" * 1001})

    assert "replace_regex() would build a value " + BUDGET in message


# -- item 2: arithmetic -------------------------------------------------------------------------


ARITHMETIC_PAST_BOUNDS: list[tuple[str, Any, Any]] = [
    (
        "round(data.x, data.n)",
        {"x": 5, "n": -1_000_000_000},
        "round() digits must be between -1,000 and 1,000, not -1,000,000,000",
    ),
    (
        "round(data.x, data.n)",
        {"x": 5, "n": 10**30},
        "round() digits must be between -1,000 and 1,000",
    ),
    ("round(data.x, data.n)", {"x": Decimal("1.5"), "n": 1001}, "round() digits must be between"),
    ("round(data.x, data.n)", {"x": 1.5, "n": "2"}, "round() digits must be an integer"),
    (
        "round(data.x)",
        {"x": Decimal("1e999999999")},
        "round() would make an integer of more than 4,300 digits from 1.000e+999999999",
    ),
    (
        "floor(data.x)",
        {"x": Decimal("-1e5000")},
        "floor() would make an integer of more than 4,300 digits",
    ),
    (
        "ceil(data.x)",
        {"x": Decimal("1e4300")},
        "ceil() would make an integer of more than 4,300 digits",
    ),
    (
        "int(data.x)",
        {"x": Decimal("1e99999999")},
        "int() would make an integer of more than 4,300 digits",
    ),
    ("data.x * data.x", {"x": 10**3000}, "'*' would make an integer of more than 4,300 digits"),
    (
        "data.x * data.x * data.x",
        {"x": 10**2000},
        "'*' would make an integer of more than 4,300 digits",
    ),
    (
        "data.x // 7",
        {"x": 10**5000},
        "'//' takes integers of at most 4,300 digits (this one has about 5,001)",
    ),
    ("data.x % 7", {"x": 10**5000}, "'%' takes integers of at most 4,300 digits"),
    ("str(data.x)", {"x": 10**5000}, "rendering takes integers of at most 4,300 digits"),
]


@pytest.mark.parametrize(
    ("text", "data", "reason"),
    ARITHMETIC_PAST_BOUNDS,
    ids=[case[0] for case in ARITHMETIC_PAST_BOUNDS],
)
def test_arithmetic_past_its_bounds_is_a_data_error(text: str, data: Any, reason: str) -> None:
    start = time.monotonic()
    message = failure(text, data)

    assert reason in message
    assert time.monotonic() - start < 1


ARITHMETIC_WITHIN_BOUNDS: list[tuple[str, Any, Any]] = [
    ("round(data.x, -1000)", {"x": 10**1000 * 7}, 10**1000 * 7),
    ("round(data.x, 1000)", {"x": 2.5}, 2.5),
    ("round(data.x, -2)", {"x": 1250}, 1200),
    ("data.x * data.y", {"x": 10**2000, "y": 10**2000}, 10**4000),
    ("data.x + data.x", {"x": 10**100_000}, 2 * 10**100_000),  # linear: any size
    ("data.x - 1 > 0", {"x": 10**100_000}, True),
]


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    ARITHMETIC_WITHIN_BOUNDS,
    ids=[case[0] for case in ARITHMETIC_WITHIN_BOUNDS],
)
def test_arithmetic_within_its_bounds_is_exact(text: str, data: Any, expected: Any) -> None:
    assert evaluate(text, data) == expected


def test_the_documented_bounds_are_these() -> None:
    assert (MAX_SIZE, MAX_INT_DIGITS, MAX_ROUND_DIGITS) == (1_000_000, 4_300, 1_000)


# -- item 3: the size budget --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "what"),
    [
        ("len(join(['x' * 1000000] * 2000)) > 0", {}, "'*'"),
        ("join(data.a)", {"a": ["x" * 1000] * 1001}, "join()"),
        ("join(data.a, data.sep)", {"a": ["", ""] * 1000, "sep": "x" * 1000}, "join()"),
        ("concat(data.s, data.s)", {"s": "x" * 500_001}, "concat()"),
        ("concat(data.a, data.a)", {"a": ["x" * 600_000]}, "concat()"),
        ("concat(data.a)", {"a": ["x" * 1_000_000]}, "rendering an array or object"),
        ("data.s + data.s", {"s": "x" * 500_001}, "'+'"),
        ("data.a + data.a", {"a": ["x" * 500_001]}, "'+'"),
        ("data.s * 3", {"s": "x" * 400_000}, "'*'"),
        ("[data.s] * 3", {"s": "x" * 400_000}, "'*'"),
        ("replace(data.s, 'x', 'yy')", {"s": "x" * 600_000}, "replace()"),
        ("replace(data.s, '', '--')", {"s": "x" * 400_000}, "replace()"),
        ("str([data.s, data.s, data.s])", {"s": "x" * 400_000}, "a literal"),
        ("str([data.s] * 3)", {"s": "x" * 400_000}, "'*'"),
        ("str(data.o)", {"o": {"k": ["x" * 1_000_001]}}, "rendering an array or object"),
    ],
)
def test_a_value_past_the_budget_is_a_data_error(text: str, data: Any, what: str) -> None:
    start = time.monotonic()
    message = failure(text, data)

    assert f"{what} would build a value {BUDGET}" in message
    assert time.monotonic() - start < 1


def test_a_template_past_the_budget_is_a_data_error() -> None:
    template = Compiler().template("{data.s}-{data.s}", field="topic")

    with pytest.raises(DataError) as caught:
        template.render(Record({"s": "x" * 500_000}))

    assert f"the template would build a value {BUDGET}" in str(caught.value)
    assert template.render(Record({"s": "ab", "n": 1})) == "ab-ab"


@pytest.mark.parametrize(
    ("text", "data", "expected"),
    [
        ("len(data.s * 2)", {"s": "x" * 500_000}, 1_000_000),
        ("len(concat(data.s, data.s))", {"s": "x" * 500_000}, 1_000_000),
        ("len(data.s + data.s)", {"s": "x" * 500_000}, 1_000_000),
        ("len(join(data.a, ','))", {"a": ["x" * 1000] * 900}, 900_899),
        ("data.a + [1]", {"a": [0]}, [0, 1]),
        ("data.s + 't'", {"s": "s"}, "st"),
        ("1 + data.n", {"n": 2}, 3),
        ("data.d + data.d", {"d": Decimal("1.10")}, Decimal("2.20")),
        ("len(data.s)", {"s": "x" * 5_000_000}, 5_000_000),  # taken from the record, not built
    ],
)
def test_values_within_the_budget_are_built(text: str, data: Any, expected: Any) -> None:
    assert evaluate(text, data) == expected


def test_measure_counts_repeated_members_each_time_and_stops_past_the_limit() -> None:
    big = "x" * 1000

    assert measure([big, big]) == 2003
    assert measure({"k": big}) == 1 + 1 + 1 + 1000
    assert measure([[big] * 10] * 10_000, limit=50_000) < 60_000


# -- siblings found in verification: split, formatTime, and values echoed in messages ----------


@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("len(split(data.s, 'a'))", {"s": "a" * 1_000_000}),
        ("len(split(data.s, ','))", {"s": ",".join(["ab"] * 400_000)}),
        ("len(split(data.s))", {"s": "a " * 600_000}),
    ],
)
def test_split_is_within_the_budget(text: str, data: Any) -> None:
    """A record string split into a list makes a member per piece: a 5 MB string of one
    repeated separator made 5,000,001 members (44 MB) before split() was counted."""
    start = time.monotonic()
    message = failure(text, data)

    assert f"split() would build a value {BUDGET}" in message
    assert time.monotonic() - start < 1


def test_split_just_within_the_budget_is_exact() -> None:
    assert evaluate("len(split(data.s, ','))", {"s": ",".join(["abc"] * 200_000)}) == 200_000
    assert evaluate("len(split(data.s))", {"s": "abc " * 200_000}) == 200_000


def test_a_time_format_from_the_record_is_within_the_budget() -> None:
    """'%c' writes 24 characters: a format of 200,000 characters taken from the record built
    2.4 million characters (and 800,000 '%Y' took 9 s) before the format was counted."""
    start = time.monotonic()
    message = failure("formatTime(data.t, data.f)", {"t": 0, "f": "%c" * 100_000})

    assert (
        "formatTime() format of 200,000 characters could build a value larger than the "
        "expression budget of 1,000,000 (at most 83,333 characters)"
    ) in message
    assert time.monotonic() - start < 1
    assert evaluate("len(formatTime(data.t, data.f))", {"t": 0, "f": "%c" * 40_000}) == 960_000


def test_a_time_format_from_the_record_cannot_widen_a_directive() -> None:
    """The budget counts 24 characters a directive: a field width ('%1200d', 6 characters
    writing 1,200) in 78,000 characters built 15.6 million, 15 times the budget; '%s' wrote
    a wrong epoch."""
    big = failure("formatTime(data.t, data.f)", {"t": 0, "f": "%1200d" * 13_000})
    local = failure("formatTime(data.t, data.f)", {"t": 0, "f": "%s"})

    assert "'%1200d': flags and widths are not supported" in big
    assert "'%s' writes the time in the worker's local zone: use the format epoch_s" in local
    assert evaluate("formatTime(data.t, data.f)", {"t": 0, "f": "%-d.%-m."}) == "1.1."


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "bool(data.s)",
            "bool() cannot read 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ),
        ("padLeft('a', 5, data.s)", "padLeft() fill must be one character, not 'xxxxx"),
        ("formatTime(0, data.s)", "unknown time format 'xxxxx"),
        ("formatTime(0, 'iso', data.s)", "unknown time zone 'xxxxx"),
        ("parseTime('2020', '%Y', data.s)", "unknown time zone 'xxxxx"),
    ],
)
def test_a_message_shows_a_record_value_cut(text: str, shown: str) -> None:
    """A message showed the whole value: a 1 MB string made a 1 MB log line per record."""
    message = failure(text, {"s": "x" * 1_000_000})

    assert shown in message
    assert "... (1,000,000 characters)" in message
    assert len(message) < 300


@pytest.mark.parametrize(
    "zone", ["Europe", "x" * 300, "../../../../etc/passwd", "/etc/localtime", "Etc/../../etc"]
)
def test_a_hostile_zone_name_is_an_unknown_zone(zone: str) -> None:
    """A directory of the zone database or a name too long for a file gave an OSError with
    the installation's path in it; paths outside the database are refused."""
    message = failure("formatTime(0, 'iso', data.z)", {"z": zone})

    assert "unknown time zone '" in message
    assert "Errno" not in message and "site-packages" not in message


_PATTERNS_FROM_RECORDS = """
import random, resource, sys
from meshconnect.expr import Compiler
from meshconnect.records import Record

matches = Compiler(record_patterns=True).expression("matches(data.s, data.p)", field="where")
rng = random.Random(1)
text = "".join(rng.choice("ab") for _ in range(200_000))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for i in range(int(sys.argv[1])):
    # each one's DFA grows large on this text (2**(20..49) states; RE2 caches what it meets)
    matches(Record({"s": text, "p": f"[ab]*a[ab]{{{20 + i % 30}}}c{i}"}))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_patterns_from_records_are_kept_within_a_memory_budget() -> None:
    """Each compiled pattern keeps the DFA states its matches built. Records carrying 512
    distinct patterns made the worker hold 1.6 GB (8 MiB each, 512 kept; 100 of them: 304 MB);
    a pattern from a record now has 1 MiB and 64 are kept: 39 MB for 100 patterns, 50 MB for
    512, ~64 MiB at most whatever the records carry."""
    import subprocess
    import sys

    grown = subprocess.run(
        [sys.executable, "-c", _PATTERNS_FROM_RECORDS, "100"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(grown.stdout) < 128, f"{grown.stdout} MB grown"


def test_a_pattern_from_a_record_too_large_for_its_budget_is_a_data_error() -> None:
    """``\\pL{200}`` compiles as a constant (8 MiB) but not from a record (1 MiB): the record
    gets a DataError saying so, and the next one goes on."""
    data = {"s": "abc", "p": r"\pL{200}"}
    assert "pattern too large" in failure("matches(data.s, data.p)", data, record_patterns=True)
    assert evaluate(r"matches(data.s, '\\pL{200}')", data) is False
    assert evaluate("matches(data.s, data.p)", {"s": "abc", "p": "b"}, record_patterns=True)
