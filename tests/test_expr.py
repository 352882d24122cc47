"""The expression language (meshconnect.expr): semantics, templates, safety and errors."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

import pytest

from meshconnect.errors import ConfigError, DataError, PluginError
from meshconnect.expr import BUILTIN_FUNCTIONS, Compiler, ExpressionError
from meshconnect.records import Record

ORDER = {
    "total": 12,
    "country": "DE",
    "email": "Ann@Example.com",
    "customer": {"name": "Ann", "address": {"zip": "10115"}},
    "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}],
    "tags": ["new", "vip"],
    "weird key": "w",
    "i": 1,
    "none": None,
    "_id": "a1",
}


@pytest.fixture
def compiler() -> Compiler:
    return Compiler()


def evaluate(text: str, data: Any = None, **attributes: Any) -> Any:
    record = Record(ORDER if data is None else data, **attributes)
    return Compiler().expression(text)(record)


# -- names and paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.total", 12),
        ("data.customer.address.zip", "10115"),
        ("data.items[0].sku", "a-1"),
        ("data.items[-1].sku", "b-2"),
        ("data['weird key']", "w"),
        ('data["customer"]["name"]', "Ann"),
        ("data.items[data.i].sku", "b-2"),
        ("data.tags[0:1]", ["new"]),
        ("data.items[0]['qty']", 2),
        ("data.tags[1][0]", "v"),
    ],
)
def test_paths_read_keys_and_indexes(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "data.missing",
        "data.missing.deeper",
        "data.items[5]",
        "data.items[5].sku",
        "data.total.digits",  # through a number
        "data.email.domain",  # through a string
        "data.tags.first",  # a key of an array
        "data.customer[0]",  # an index of an object
        "data.items['0']",
        "data[data.missing]",
        "data.none.x",
    ],
)
def test_a_path_that_leads_nowhere_is_null(text: str) -> None:
    assert evaluate(text) is None


def test_a_path_into_data_that_is_not_an_object_is_null() -> None:
    assert evaluate("data.total", data="just text") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id", "e-1"),
        ("source", "/orders"),
        ("type", "order.created"),
        ("specversion", "1.0"),
        ("subject", "order-7"),
        ("time", "2024-05-01T10:00:00Z"),
        ("datacontenttype", "application/json"),
        ("dataschema", None),
    ],
)
def test_context_attributes_are_names(text: str, expected: Any) -> None:
    record = Record(
        {},
        id="e-1",
        source="/orders",
        type="order.created",
        subject="order-7",
        time="2024-05-01T10:00:00Z",
    )

    value = Compiler().expression(text)(record)

    assert value == expected


def test_other_names_are_extension_attributes() -> None:
    record = Record({}, extensions={"partitionkey": "p-1"})

    value = Compiler().expression("partitionkey")(record)

    assert value == "p-1"


def test_an_absent_extension_is_null() -> None:
    assert evaluate("tenant") is None


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("false", False), ("null", None)])
def test_true_false_null_are_constants(text: str, expected: Any) -> None:
    assert evaluate(text) is expected


# -- operators and null semantics -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.total >= 10", True),
        ("data.total < 10", False),
        ("data.country == 'DE'", True),
        ("data.country != 'DE'", False),
        ("0 < data.total <= 12", True),
        ("0 < data.total < 12", False),
        ("1 < 2 < data.total < 100", True),
        ("'vip' in data.tags", True),
        ("'gold' not in data.tags", True),
        ("data.country in ['DE', 'AT']", True),
        ("data.country in ('FR',)", False),
        ("data.country in {'DE', 'AT'}", True),
        ("'customer' in data", True),
        ("data.total > 10 and data.country == 'DE'", True),
        ("data.total > 100 or data.country == 'DE'", True),
        ("not data.total > 100", True),
        ("data.missing or 'fallback'", "fallback"),
        ("data.total + 3", 15),
        ("data.total - 2 * 3", 6),
        ("data.total / 5", 2.4),
        ("data.total // 5", 2),
        ("data.total % 5", 2),
        ("-data.total", -12),
        ("+data.total", 12),
        ("data.total > -1", True),
        ("'a' + data.country", "aDE"),
        ("data.tags + ['x']", ["new", "vip", "x"]),
        ("'big' if data.total > 10 else 'small'", "big"),
        ("[data.total, data.country]", [12, "DE"]),
        ("{'n': data.total}['n']", 12),
        ("data.missing is null", True),
        ("data.total is not null", True),
    ],
)
def test_operators(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "data.missing < 10",
        "data.missing <= 10",
        "data.missing > 10",
        "data.missing >= 10",
        "10 > data.missing",
        "data.missing < data.other",
        "null < 1",
        "0 < data.missing < 10",
    ],
)
def test_ordering_with_null_is_false(text: str) -> None:
    assert evaluate(text) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.missing == null", True),
        ("data.missing != null", False),
        ("data.missing == 0", False),
        ("data.missing != 0", True),
    ],
)
def test_equality_with_null_is_ordinary(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


def test_in_null_is_false() -> None:
    assert evaluate("'x' in data.missing") is False


def test_not_in_null_is_true() -> None:
    assert evaluate("'x' not in data.missing") is True


@pytest.mark.parametrize(
    "text",
    [
        "data.missing + 1",
        "1 - data.missing",
        "data.missing * 2",
        "data.missing / 2",
        "data.missing // 2",
        "data.missing % 2",
        "-data.missing",
        "data.total + null",
    ],
)
def test_arithmetic_with_null_is_null(text: str) -> None:
    assert evaluate(text) is None


def test_chained_comparison_evaluates_the_middle_once() -> None:
    calls: list[int] = []

    def tick() -> int:
        calls.append(1)
        return 5

    expression = Compiler({"tick": tick}).expression("0 < tick() < 10")
    expression(Record({}))

    assert len(calls) == 1


# -- functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("len(data.tags)", 2),
        ("len(data.country)", 2),
        ("len(data.customer)", 2),
        ("len(data.missing)", None),
        ("lower(data.email)", "ann@example.com"),
        ("upper(data.country)", "DE"),
        ("trim('  x ')", "x"),
        ("lower(data.missing)", None),
        ("startsWith(data.email, 'Ann')", True),
        ("startsWith(data.email, ['Bob', 'Ann'])", True),
        ("endsWith(data.email, '.org')", False),
        ("startsWith(data.missing, 'x')", False),
        ("contains(data.email, '@')", True),
        ("contains(data.tags, 'vip')", True),
        ("contains(data.customer, 'name')", True),
        ("contains(data.missing, 'x')", False),
        ("matches(data.email, '^[A-Za-z]+@')", True),
        ("matches(data.email, 'x{3}')", False),
        ("matches(data.email, '^DE$')", False),
        ("matches(data.missing, '.')", False),
        ("replace(data.email, 'Example', 'test')", "Ann@test.com"),
        ("substr(data.email, 0, 3)", "Ann"),
        ("substr(data.email, -3)", "com"),
        ("int('42')", 42),
        ("int(3.9)", 3),
        ("int(data.missing)", None),
        ("float('2.5')", 2.5),
        ("str(data.total)", "12"),
        ("str(true)", "true"),
        ("str(data.customer.address)", '{"zip":"10115"}'),
        ("str(data.missing)", None),
        ("bool('yes')", True),
        ("bool('False')", False),
        ("bool(data.tags)", True),
        ("abs(-3)", 3),
        ("round(2.567, 2)", Decimal("2.57")),
        ("min(3, 1, 2)", 1),
        ("max(data.items[0].qty, data.items[1].qty)", 2),
        ("max([4, null, 9])", 9),
        ("min(null, null)", None),
        ("coalesce(data.missing, data.none, data.country)", "DE"),
        ("coalesce(data.missing)", None),
        ("isNull(data.missing)", True),
        ("isNull(data.total)", False),
        ("concat(data.country, '-', data.total, data.missing, true)", "DE-12true"),
        ("floor(2.7)", 2),
        ("ceil(2.1)", 3),
        ("floor(-2.5)", -3),
        ("ceil(data.missing)", None),
        ("sum(1, 2.5, null)", 3.5),
        ("sum([data.items[0].qty, data.items[1].qty])", 3),
        ("sum([])", 0),
        ("isEmpty(data.missing)", True),
        ("isEmpty('')", True),
        ("isEmpty([])", True),
        ("isEmpty({})", True),
        ("isEmpty(data.tags)", False),
        ("isEmpty(0)", False),
        ("split('a,b,,c', ',')", ["a", "b", "", "c"]),
        ("split(' a  b ')", ["a", "b"]),
        ("split(data.missing, ',')", None),
        ("join(data.tags, '|')", "new|vip"),
        ("join([1, null, true])", "1true"),
        ("join(data.missing, ',')", None),
        ("indexOf(data.email, '@')", 3),
        ("indexOf(data.email, 'zzz')", -1),
        ("indexOf(data.tags, 'vip')", 1),
        ("indexOf(data.missing, 'x')", None),
        ("padLeft(7, 3, '0')", "007"),
        ("padRight('ab', 4)", "ab  "),
        ("padLeft('long', 2)", "long"),
        ("padLeft(data.missing, 3)", None),
        ("parseTime('2024-03-01T10:00:00Z')", 1709287200.0),
        ("parseTime('2024-03-01T11:00:00+01:00')", 1709287200.0),
        ("parseTime('2024-03-01 10:00:00')", 1709287200.0),
        ("parseTime('01/03/2024 11:00', '%d/%m/%Y %H:%M', 'Europe/Berlin')", 1709287200.0),
        ("parseTime(1709287200)", 1709287200.0),
        ("parseTime(data.missing)", None),
        ("formatTime(1709287200)", "2024-03-01T10:00:00Z"),
        ("formatTime(1709287200.25)", "2024-03-01T10:00:00.250000Z"),
        ("formatTime('2024-03-01T10:00:00Z', 'epoch_ms')", 1709287200000),
        ("parseTime('1709287200000', 'epoch_ms')", 1709287200.0),
        ("formatTime('2024-03-01T10:00:00Z', '%Y-%m-%d %H:%M', 'Asia/Tokyo')", "2024-03-01 19:00"),
        ("formatTime(1709287200, null, 'Europe/Berlin')", "2024-03-01T11:00:00+01:00"),
        ("formatTime(data.missing)", None),
        ("data['_id']", "a1"),
    ],
)
def test_functions(text: str, expected: Any) -> None:
    assert evaluate(text) == expected


def test_time_functions_round_trip_through_a_zone() -> None:
    text = "formatTime(parseTime('2024-07-01 08:30', '%Y-%m-%d %H:%M', 'America/New_York'))"
    assert evaluate(text) == "2024-07-01T12:30:00Z"


def test_now_is_epoch_seconds() -> None:
    assert evaluate("now() > 1700000000") is True


def test_every_builtin_function_is_documented() -> None:
    import meshconnect.expr as expr

    doc = expr.__doc__ or ""
    undocumented = [name for name in BUILTIN_FUNCTIONS if f"``{name}(" not in doc]

    assert undocumented == []


def test_plugin_functions_are_callable() -> None:
    compiler = Compiler({"double": lambda x: x * 2})

    value = compiler.expression("double(data.total)")(Record({"total": 4}))

    assert value == 8


def test_a_plugin_cannot_redefine_a_builtin_function() -> None:
    with pytest.raises(PluginError, match="redefines a built-in"):
        Compiler({"len": lambda x: 0})


def test_a_plugin_function_name_cannot_start_with_underscore() -> None:
    with pytest.raises(PluginError, match="not a valid function name"):
        Compiler({"_hidden": lambda: 0})


# -- predicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data.total >= 10", True),
        ("data.missing", False),
        ("data.tags", True),
        ("data.country", True),
        ("data.none", False),
    ],
)
def test_predicates_return_booleans(text: str, expected: bool) -> None:
    predicate = Compiler().predicate(text)

    value = predicate(Record(ORDER))

    assert value is expected


def test_compiled_expressions_carry_their_text_and_field(compiler: Compiler) -> None:
    predicate = compiler.predicate("data.total >= 10", field="where")

    assert (predicate.text, predicate.field) == ("data.total >= 10", "where")


# -- templates ------------------------------------------------------------------------------------


def test_template_renders_placeholders(compiler: Compiler) -> None:
    template = compiler.template("cdc.{data.database}.{data.table}")

    text = template.render(Record({"database": "shop", "table": "orders"}))

    assert text == "cdc.shop.orders"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{data.total}", "12"),
        ("n={data.missing}", "n="),
        ("{data.total > 10}", "true"),
        ("{data.customer.address}", '{"zip":"10115"}'),
        ("{data.tags}", '["new","vip"]'),
        ("{data.total / 8}", "1.5"),
        ("{upper(data.country)}-{data.i}", "DE-1"),
        ("{{literal}} {data.country}", "{literal} DE"),
        ("{ {'a': data.country}['a'] }", "DE"),
        ("{data['weird key']}", "w"),
        ("{'}'}", "}"),
    ],
)
def test_template_rendering(text: str, expected: str) -> None:
    template = Compiler().template(text)

    assert template.render(Record(ORDER)) == expected


def test_template_without_placeholders_is_literal(compiler: Compiler) -> None:
    template = compiler.template("orders.{{eu}}")

    assert (template.is_literal, template.literal) == (True, "orders.{eu}")


def test_template_with_placeholders_is_not_literal(compiler: Compiler) -> None:
    template = compiler.template("orders.{data.region}")

    assert (template.is_literal, template.literal) == (False, None)


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("cdc.{data.table", 4),
        ("cdc.}", 4),
        ("cdc.{}", 5),
        ("cdc.{data.__class__}", 10),
        ("a{data.x +}", 10),
    ],
)
def test_template_errors_point_into_the_template(text: str, column: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        Compiler().template(text, field="topic")

    assert (caught.value.text, caught.value.column, caught.value.field) == (text, column, "topic")


def test_template_evaluation_error_is_a_data_error(compiler: Compiler) -> None:
    template = compiler.template("{data.total / data.zero}")

    with pytest.raises(DataError, match="division by zero"):
        template.render(Record({"total": 1, "zero": 0}))


# -- safety ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "().__class__.__bases__",
        "__import__('os')",
        "data.__class__",
        "data._private",
        "(lambda: 1)()",
        "[x for x in data.items]",
        "getattr(data, 'x')",
        "data.get('x')",
        "open('/etc/passwd')",
        "type(data)",
        "eval('1')",
        "{**data}",
        # and their relatives
        "data['__class__']",
        "data.items[0].__class__",
        "_r",
        "{x: 1 for x in data}",
        "(x for x in data)",
        "{x for x in data}",
        "[*data.items]",
        "len(*data.items)",
        "(y := 1)",
        "f'{data}'",
        "'x'.upper",
        "'x'.upper()",
        "len(data).real",
        "str(data).__class__",
        "data.x(1)",
        "lower(s='x')",
        "data.x ** 2",
        "data.x << 1",
        "data.x & 1",
        "~data.x",
        "data is data",
        "b'bytes'",
        "...",
        "1j",
        "exec('1')",
        "compile('1', '', 'eval')",
        "globals()",
        "(data.__class__)",
        "coalesce(data)['__globals__']",
    ],
)
def test_escapes_are_rejected_at_compile_time(text: str) -> None:
    with pytest.raises(ExpressionError):
        Compiler().expression(text)


def test_quoted_keys_starting_with_two_underscores_are_read() -> None:
    # Debezium's ExtractNewRecordState adds __deleted, __op, __source_ts_ms: only special
    # names (__class__) are refused, and a quoted key is only ever looked up in an object.
    data = {"__deleted": "true", "__op": "d"}

    assert evaluate("data['__deleted'] == 'true'", data) is True
    assert evaluate('data["__op"]', data) == "d"
    with pytest.raises(ExpressionError, match="'__init__'"):
        Compiler().expression("data['__init__']")


def test_underscore_names_are_refused_with_their_name(compiler: Compiler) -> None:
    with pytest.raises(
        ExpressionError, match="names starting with '_' are not allowed: '__class__'"
    ):
        compiler.expression("data.__class__")


def test_calls_are_limited_to_the_listed_functions(compiler: Compiler) -> None:
    with pytest.raises(
        ExpressionError, match=r"calls are limited to the functions: abs, .*; 'getattr' is not one"
    ):
        compiler.expression("getattr(data, 'x')")


def test_lambda_is_refused(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match="lambda is not allowed"):
        compiler.expression("(lambda: 1)()")


def test_comprehensions_are_refused(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match="comprehensions are not allowed"):
        compiler.expression("[x for x in data.items]")


def test_method_calls_are_refused(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match="method calls are not allowed"):
        compiler.expression("data.get('x')")


def test_compiled_code_sees_no_python_builtins(compiler: Compiler) -> None:
    expression = compiler.expression("data.x")

    assert expression.__globals__["__builtins__"] == {}


def test_an_expression_error_is_a_config_error(compiler: Compiler) -> None:
    with pytest.raises(ConfigError):
        compiler.expression("data.__class__")


def test_wrong_argument_count_is_a_compile_error(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match=re.escape("len()")):
        compiler.expression("len(data.a, data.b)")


def test_a_bad_constant_regex_is_a_compile_error(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match="bad regular expression") as caught:
        compiler.expression("matches(data.s, '(')")

    assert caught.value.column == 16


# -- error reporting ------------------------------------------------------------------------------


def test_syntax_error_reports_the_column(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("data.total >= = 10", field="where")

    assert (caught.value.column, caught.value.field) == (14, "where")


def test_syntax_error_at_the_end_points_past_the_text(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("data.total >=")

    assert caught.value.column == len("data.total >=")


def test_column_points_at_the_offending_name(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("data.a and data.__class__")

    assert caught.value.column == len("data.a and data.")


def test_column_counts_characters_not_bytes(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("'été' == data._x")

    assert caught.value.column == len("'été' == data.")


def test_columns_count_leading_whitespace(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("  data._x")

    assert caught.value.column == 7


def test_line_breaks_count_as_spaces(compiler: Compiler) -> None:
    predicate = compiler.predicate("data.total >= 10\n  and data.country == 'DE'\n")

    assert predicate(Record(ORDER)) is True


@pytest.mark.parametrize(
    "text",
    [
        "data.a" + ".b" * 200,
        "1" + " + 1" * 200,
        "not " * 200 + "x",
        "-" * 5000 + "1",
        "(" * 300 + "1" + ")" * 300,
        "x" * 20_000,
    ],
)
def test_pathological_expressions_are_refused_not_crashes(text: str) -> None:
    with pytest.raises(ExpressionError):
        Compiler().expression(text)


def test_empty_expression_is_an_error(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError, match="empty expression"):
        compiler.expression("  ")


def test_error_message_names_field_text_and_column(compiler: Compiler) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.expression("data._x", field="where")

    assert str(caught.value) == (
        "where: names starting with '_' are not allowed: '_x' (in 'data._x' at column 5)"
    )


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("data.name < 10", "'<' not supported"),
        ("int(data.name)", "'abc' is not a number"),
        ("data.total / 0", "division by zero"),
        ("lower(data.total)", "lower() needs a string, not number"),
        ("data.name + 1", "can only concatenate str"),
        ("data.name * 2000000", "larger than the expression budget of 1,000,000"),
        ("parseTime('yesterday')", "the string 'yesterday' is not an ISO 8601 time"),
        ("parseTime('2024', '%d/%m')", "does not match the format '%d/%m'"),
        ("parseTime('2024', 'dd/mm')", "unknown time format 'dd/mm'"),
        ("formatTime(0, null, 'Mars/Olympus')", "unknown time zone 'Mars/Olympus'"),
        ("floor('3')", "floor() needs a number, not string"),
        ("sum(1, 'x')", "sum() needs a number, not string"),
        ("join(data.name)", "join() needs an array, not string"),
        ("split(data.name, '')", "separator cannot be empty"),
        ("padLeft(data.name, 20000)", "width is limited to 10000"),
        ("padLeft(data.name, 5, 'ab')", "fill must be one character"),
    ],
)
def test_evaluation_errors_are_data_errors(text: str, cause: str) -> None:
    expression = Compiler().expression(text, field="where")

    with pytest.raises(DataError, match=re.escape(cause)) as caught:
        expression(Record({"name": "abc", "total": 5, "bad": "("}))

    assert str(caught.value).startswith(f"where: expression {text!r} failed: ")


def test_a_failing_predicate_is_a_data_error(compiler: Compiler) -> None:
    predicate = compiler.predicate("data.total >= 10")

    with pytest.raises(DataError, match=re.escape("condition 'data.total >= 10' failed")):
        predicate(Record({"total": "ten"}))


def test_evaluation_error_keeps_the_cause(compiler: Compiler) -> None:
    expression = compiler.expression("int(data.x)")

    with pytest.raises(DataError) as caught:
        expression(Record({"x": "abc"}))

    assert isinstance(caught.value.__cause__, ValueError)


def test_hash_function_from_a_plugin_sees_values() -> None:
    """Plugin functions get plain values, as built-ins do."""
    compiler = Compiler({"sha": lambda s: hashlib.sha256(s.encode()).hexdigest()[:8]})

    value = compiler.expression("sha(data.email)")(Record({"email": "a@b"}))

    assert value == hashlib.sha256(b"a@b").hexdigest()[:8]


# -- {time:FORMAT} in templates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logs.{time:%Y.%m}", "logs.2024.03"),
        ("{subject}/{time:%Y/%m/%d/%H}", "orders/2024/03/01/10"),
        ("dt={time:%Y-%m-%d}-{data.n}", "dt=2024-03-01-7"),
        ("{time:iso}", "2024-03-01T10:00:00Z"),
    ],
)
def test_a_template_takes_the_records_time_through_strftime(text: str, expected: str) -> None:
    """ARCHITECTURE.md 1.5: templates accept {time:STRFTIME}. The connectors' templates did
    (s3, redis, http, slack); the expression templates (`topic:`, `route`, `insert_field`,
    `template`) refused it as a syntax error."""
    record = Record({"n": 7}, time="2024-03-01T12:00:00+02:00", subject="orders")

    assert Compiler().template(text).render(record) == expected


def test_time_alone_in_a_template_step_is_text() -> None:
    from meshconnect.expr import sole_placeholder

    assert sole_placeholder("{time:%Y}") is None
    assert sole_placeholder("{time}") == "time"


def test_a_record_without_time_fails_a_time_placeholder() -> None:
    with pytest.raises(DataError, match="has no time attribute"):
        Compiler().template("logs.{time:%Y}").render(Record({}))


def test_a_time_placeholder_with_an_unknown_format_fails_to_compile() -> None:
    with pytest.raises(ExpressionError, match="unknown time format 'Y'"):
        Compiler().template("logs.{time:Y}", field="topic")
