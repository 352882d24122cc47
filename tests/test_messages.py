"""Weak messages made useful (issue 9 item 6): an expression syntax error points at the
token and says what was expected; a tab in YAML says "tab"; an unknown time zone gets a
did-you-mean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshconnect.config.yamlpos import parse_yaml
from meshconnect.expr import Compiler, ExpressionError
from meshconnect.plugins import PluginPolicy, load_registry
from meshconnect.timefmt import zone

VALUE = "a value (a path such as data.x, a literal or a function call)"
OPERATOR = (
    "an operator (and, or, ==, !=, <, <=, >, >=, in, +, -, *, /, %) or the end of the expression"
)


@pytest.fixture(scope="module")
def compiler() -> Compiler:
    return Compiler(load_registry(PluginPolicy.read(None)).functions)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("data.a >= 10 &&& data.b = 'x'", 13, "'&&' is not an operator here: use 'and'"),
        ("data.a || data.b", 7, "'||' is not an operator here: use 'or'"),
        ("!data.a", 0, "'!' is not an operator here: use 'not'"),
        ("data.b = 'x'", 7, "'=' is not an operator here: use '=='"),
        ("data.a >= ", 9, f"the expression ends after '>=': expected {VALUE}"),
        ("data.a == 1 and", 15, f"the expression ends after 'and': expected {VALUE}"),
        ("data.a 1", 7, f"unexpected '1': expected {OPERATOR}"),
        ("data.a == 'x", 10, "the string opened here is not closed: expected a closing '"),
        ("(data.a == 1", 0, "'(' was never closed: expected the closing bracket"),
    ],
)
def test_expression_syntax_errors_point_at_the_token_and_say_what_was_expected(
    compiler: Compiler, text: str, column: int, message: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        compiler.predicate(text, field="where")

    assert (caught.value.column, caught.value.message) == (column, f"syntax error: {message}")


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("data.a == 'x' & data.b == 'y'", 14, "'&' is not an operator here: use 'and'"),
        ("data.a | data.b", 7, "'|' is not an operator here: use 'or'"),
        ("data.é == 'é' | data.b", 14, "'|' is not an operator here: use 'or'"),
        ("(data.a) ^ (data.b)", 9, "operator '^' is not supported"),
        ("data.a ** 2 > 1", 7, "operator '**' is not supported"),
    ],
)
def test_an_unsupported_operator_is_pointed_at_itself(
    compiler: Compiler, text: str, column: int, message: str
) -> None:
    """A sibling of '&&&': a single '&' (pandas style) was reported at its left operand,
    without the word to use."""
    with pytest.raises(ExpressionError) as caught:
        compiler.predicate(text, field="where")

    assert (caught.value.column, caught.value.message) == (column, message)


def test_validate_prints_the_syntax_error_at_its_file_column(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("")
    p = tmp_path / "p.yaml"
    p.write_text(
        "pipelines:\n"
        "  - name: e\n"
        "    source: {connector: file, config: {path: in.jsonl}}\n"
        "    transforms:\n"
        "      - {type: filter, where: \"data.a >= 10 &&& data.b = 'x'\"}\n"
    )

    result = subprocess.run(
        [sys.executable, "-m", "meshconnect", "validate", str(p)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr == (
        f"{p}:5:45: pipelines[0].transforms[0].where: syntax error: '&&' is not an operator "
        "here: use 'and'\n1 problem(s) found\n"
    )


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("pipelines:\n  - name: t\n\tsource: {}\n", (3, 1)),
        ("pipelines:\n  - name: t\n    sinks:\n\t- {connector: file}\n", (4, 1)),
        ("pipelines:\n  - name: t\n   \t source: {}\n", (3, 4)),
    ],
)
def test_a_tab_in_yaml_indentation_says_tab(text: str, where: tuple[int, int]) -> None:
    doc = parse_yaml(text, "p.yaml")

    assert [(p.location.line, p.location.column, p.message) for p in doc.problems] == [
        (*where, "invalid YAML: a tab character indents this line; YAML indents with spaces only")
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Europe/Berln", "unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin'?)"),
        (
            "america/new_york",
            "unknown time zone 'america/new_york' (did you mean 'America/New_York'?)",
        ),
        (
            "Mars/Olympus",
            "unknown time zone 'Mars/Olympus' (use an IANA name such as 'Europe/Berlin', or 'UTC')",
        ),
    ],
)
def test_an_unknown_time_zone_gets_a_did_you_mean(name: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        zone(name)

    assert str(caught.value) == message
