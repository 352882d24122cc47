"""Generated expressions with hostile operands all end within the documented budgets.

Expressions are drawn from the grammar in docs/expressions.md (conditionals, boolean and
comparison chains, arithmetic, unary signs, paths with keys, indexes and slices, every built-in
function, list/tuple/object literals) over a record whose values are chosen to hurt: a string
that makes backtracking regexes explode, long strings and arrays just under the size budget,
integers of thousands of digits, decimals with extreme exponents, deep nesting. Whatever the
expression, its evaluation must return or raise DataError within the time bound, its peak
memory must stay within the budget's bound, and a value it returns is never larger than the
budget (each value of the record is at most 1/20 of it here, and an expression has at most 12
leaves, so a value past the budget can only have been built, which the budget forbids).
"""

from __future__ import annotations

import itertools
import time
import tracemalloc
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshconnect.errors import DataError
from meshconnect.expr import BUILTIN_FUNCTIONS, Compiler, ExpressionError
from meshconnect.expr._budget import MAX_SIZE, measure
from meshconnect.records import Record

#: Each evaluation ends within this many seconds (generous on a loaded 2-core machine: the
#: budget work itself is in the milliseconds).
TIME_BOUND = 5.0
#: Peak memory one evaluation may allocate: a few budget-sized values (an array of the
#: budget's size holds 8 bytes per member).
MEMORY_BOUND = 40 * MAX_SIZE

HOSTILE: dict[str, Any] = {
    "s": "a" * 49_999 + "!",  # (a+)+$ backtracks exponentially on this in Python's re
    "t": "ab" * 25_000,
    "a": ["x" * 10_000] * 5,  # measure 50,006
    "l": list(range(5_000)),
    "o": {"k": "v" * 49_000, "n": [1, 2, 3]},
    "n": 10**4_000,
    "m": -(10**4_000) + 1,
    "e": -1_000_000_000,
    "d": Decimal("1e999999999"),
    "z": Decimal("-1e-999999999"),
    "f": 1.7976931348623157e308,
    "deep": [[[[[[[[[[["x"]]]]]]]]]]],
    "p": "(a+)+$",
    "r": "$0$0$0$0",
    "u": "\u202e\u001b]0;x\u0007",
}
PATHS = [f"data.{k}" for k in HOSTILE] + ["data.missing", "data.a[0]", "data.o.k", "data['o']"]
LITERALS = [
    "0", "1", "-1", "2", "1000000", "2000", "1e308", "0.5", "''", "'a'", "'(a+)+$'", "'$1'",
    "'%Y'", "'x'", "null", "true", "false", "[]", "{}", "1000000000000", "10", "20", "200",
]  # fmt: skip
BINARY = ["+", "-", "*", "/", "//", "%"]
COMPARE = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
FUNCTIONS = sorted(set(BUILTIN_FUNCTIONS) - {"now"})

#: Values just under the budget, built by '*' (checked there): any two of them together are
#: past it, so every operation that joins values must check.
NEAR_BUDGET = ["(data.s * 19)", "([data.a] * 19)", "(data.t * 19)", "(data.l * 190)"]

atoms = st.sampled_from(PATHS + LITERALS + NEAR_BUDGET)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(BINARY), inner),
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(COMPARE), inner),
        st.builds(lambda a, op, b: f"({a} {op} {b})", inner, st.sampled_from(["and", "or"]), inner),
        st.builds(lambda a: f"(not {a})", inner),
        st.builds(lambda a: f"(-{a})", inner),
        st.builds(lambda a, b, c: f"({a} if {b} else {c})", inner, inner, inner),
        st.builds(lambda a: f"({a} is null)", inner),
        st.builds(
            lambda f, args: f"{f}({', '.join(args)})",
            st.sampled_from(FUNCTIONS),
            st.lists(inner, min_size=0, max_size=3),
        ),
        st.builds(lambda items: f"[{', '.join(items)}]", st.lists(inner, max_size=4)),
        st.builds(lambda a, b: f"{{{a}: {b}}}", inner, inner),
        st.builds(lambda p, i: f"{p}[{i}]", st.sampled_from(PATHS), inner),
        st.builds(lambda p, i, j: f"{p}[{i}:{j}]", st.sampled_from(PATHS), inner, inner),
    )


expressions = st.recursive(atoms, _extend, max_leaves=12)
#: One operation over operands half of which are near the budget: where a missing budget
#: check shows at once.
_hostile = st.one_of(st.sampled_from(NEAR_BUDGET), atoms)
shallow = st.one_of(
    st.builds(
        lambda f, args: f"{f}({', '.join(args)})",
        st.sampled_from(FUNCTIONS),
        st.lists(_hostile, min_size=1, max_size=3),
    ),
    _extend(_hostile),
)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.one_of(shallow, expressions))
def test_every_generated_expression_ends_within_the_budget(text: str) -> None:
    _within_budget(text)


def _within_budget(text: str) -> None:
    """Evaluate ``text`` over the hostile record: it ends in time, within memory, and returns
    a value no larger than the budget (or fails with DataError)."""
    try:
        expression = Compiler(record_patterns=True).expression(text, field="where")
    except ExpressionError:
        return
    tracemalloc.start()
    start = time.monotonic()
    try:
        value = expression(Record(HOSTILE))
    except DataError:
        value = None
    finally:
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < TIME_BOUND, f"{text!r} took {elapsed:.1f} s"
    assert peak < MEMORY_BOUND, f"{text!r} allocated {peak:,} bytes"
    assert measure(value) <= MAX_SIZE, f"{text!r} built a value past the budget"


VARIADIC = ["coalesce", "concat", "max", "min", "sum"]


@pytest.mark.parametrize("name", FUNCTIONS + BINARY)
def test_every_function_and_operator_keeps_near_budget_operands_within_it(name: str) -> None:
    """Exhaustive where the generator samples: each built-in function and arithmetic operator
    over every pair of near-budget values (and a hostile pattern or number), the functions that
    take any number of arguments over every triple too."""
    operands = [*NEAR_BUDGET, "data.p", "data.n", "20"]
    cases = list(itertools.product(operands, repeat=2))
    if name in VARIADIC:
        cases += itertools.product(NEAR_BUDGET, repeat=3)
    for args in cases:
        _within_budget(f" {name} ".join(args) if name in BINARY else f"{name}({', '.join(args)})")
