"""validate with exact numbers: data and schemas hold ints and Decimals (meshconnect.jsonvalue),
so bounds, integer types and multipleOf are decided on the digits, never on binary floats."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_transforms import build

from meshconnect import jsonvalue
from meshconnect.errors import DataError
from meshconnect.records import Record
from meshconnect.transforms import BuildContext, Transform, building
from meshconnect.transforms.schema import is_multiple

PRICE_JSON = """{
  "type": "object",
  "properties": {
    "price": {"type": "number", "minimum": 0.1, "maximum": 169299987.35345112,
              "multipleOf": 0.01},
    "qty": {"type": "integer", "maximum": 123456789012345678901234567890}
  }
}"""
PRICE_YAML = """
type: object
properties:
  price: {type: number, minimum: 0.1, maximum: 169299987.35345112, multipleOf: 0.01}
  qty: {type: integer, maximum: 123456789012345678901234567890}
"""


@pytest.fixture(params=["price.json", "price.yaml"])
def validate(request: pytest.FixtureRequest, tmp_path: Path) -> Transform:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "price.json").write_text(PRICE_JSON)
    (tmp_path / "schemas" / "price.yaml").write_text(PRICE_YAML)
    with building(BuildContext(tmp_path)):
        return build("validate", directory="schemas", schema=request.param)


@pytest.mark.parametrize(
    "line",
    [
        '{"price":1.10,"qty":5.0}',
        '{"price":0.1,"qty":123456789012345678901234567890}',
        '{"price":169299987.35,"qty":1e2}',
        '{"price":0.30}',
    ],
)
def test_exact_numbers_are_valid(validate: Transform, line: str) -> None:
    record = Record(jsonvalue.loads(line))
    assert validate.apply(record) is record


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"price":0.09}', "less than the minimum of 0.1"),
        ('{"price":169299987.35345113}', "greater than the maximum"),
        ('{"price":1.105}', "not a multiple of 0.01"),
        ('{"qty":5.5}', "is not of type 'integer'"),
        ('{"qty":123456789012345678901234567891}', "greater than the maximum"),
    ],
)
def test_numbers_beyond_the_digits_are_invalid(
    validate: Transform, line: str, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        validate.apply(Record(jsonvalue.loads(line)))


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.10", "0.01", True),
        ("1.105", "0.01", False),
        ("1e400", "0.01", True),
        ("1e400", "3", False),
        ("1e400", "1e399", True),
        ("1e-400", "1e-399", False),
        ("0", "0.7", True),
        ("-2.1", "0.7", True),
        ("123456789012345678901234567890", "10", True),
        ("0.3", "0.1", True),
        ("7.5", "2.5", True),
    ],
)
def test_multiple_of_is_exact(a: str, b: str, expected: bool) -> None:
    assert is_multiple(jsonvalue.loads(a), jsonvalue.loads(b)) is expected


def test_multiple_of_takes_floats_as_their_shortest_text() -> None:
    assert is_multiple(0.3, 0.1) is True  # 0.3 / 0.1 is 2.9999999999999996 in binary
