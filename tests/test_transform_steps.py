"""A filter, and a step with ``when``, run as one compiled function per record (the hot path of
the file pipeline benchmark); the results and the errors are those of the plain composition."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meshconnect.errors import DataError
from meshconnect.expr import Compiler
from meshconnect.jsonvalue import loads
from meshconnect.records import Record
from meshconnect.transforms import Transform, TransformChain
from meshconnect.transforms.routing import Filter

CONDITIONS = [
    "data.total >= 10",
    "data.total < 10.5",
    "data.country == 'DE'",
    "data.missing",
    "data.total == 10.50",
    "not data.flag",
]
RECORDS = [
    {"total": loads("10.50"), "country": "DE", "flag": True},
    {"total": 9, "country": "FR", "flag": False},
    {"total": 10, "country": "DE"},
    {"total": None, "country": None, "missing": 0},
    {"total": 2**70, "missing": [1]},
    {"total": Decimal("1E+400"), "country": "DE"},
    {"total": 3.5, "country": "NL", "flag": None},
]


@pytest.mark.parametrize("text", CONDITIONS)
def test_a_filter_step_keeps_exactly_what_the_condition_is_true_for(text: str) -> None:
    predicate = Compiler().predicate(text, field="where")
    step = Filter(predicate).apply
    assert step.__name__ == "filter"  # the fused function, not a closure over the predicate
    for data in RECORDS:
        record = Record(dict(data))
        assert step(record) is (record if predicate(record) else None), (text, data)


class Tag(Transform):
    type_name = "tag"

    def apply(self, record: Record) -> Record:
        record.data["tagged"] = True
        return record


class Boom(Transform):
    type_name = "boom"

    def apply(self, record: Record) -> Any:
        raise DataError("boom says no")


@pytest.mark.parametrize("text", CONDITIONS)
def test_a_guarded_step_applies_exactly_where_the_condition_is_true(text: str) -> None:
    predicate = Compiler().predicate(text, field="when")
    chain = TransformChain([Tag()], [predicate])
    out, failures = chain.process([Record(dict(d)) for d in RECORDS])
    assert not failures
    expected = [bool(predicate(Record(dict(d)))) for d in RECORDS]
    assert ["tagged" in r.data for r in out] == expected


def test_errors_of_the_condition_and_of_the_transform_stay_apart() -> None:
    compiler = Compiler()
    failing_condition = compiler.predicate("data.total + 'x' > 1", field="when")
    chain = TransformChain([Tag(), Boom()], [failing_condition, compiler.predicate("true")])
    _, failures = chain.process([Record({"total": 1})])
    assert len(failures) == 1
    assert failures[0].stage == "transforms[0] (tag)"
    assert str(failures[0].error).startswith("when: condition \"data.total + 'x' > 1\" failed")

    chain = TransformChain([Boom()], [compiler.predicate("data.total > 0", field="when")])
    _, failures = chain.process([Record({"total": 1}), Record({"total": -1})])
    assert [f.stage for f in failures] == ["transforms[0] (boom)"]
    assert str(failures[0].error) == "boom says no"  # not wrapped as the condition's error


def test_a_filter_condition_that_fails_names_the_condition() -> None:
    step = Filter(Compiler().predicate("data.total + 'x' > 1", field="where")).apply
    with pytest.raises(DataError, match=r"where: condition .* failed"):
        step(Record({"total": 1}))
