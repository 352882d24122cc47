"""Transforms and transform chains.

A transform changes, drops or multiplies one record at a time. Every transform takes a ``when``
predicate; a record for which it is false passes through untouched. Built-in transforms live in
:mod:`meshconnect.transforms.builtin`; plugins add more through the ``meshconnect_transforms``
hook with a :class:`~meshconnect.api.TransformSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import DataError

if TYPE_CHECKING:
    from ..records import Record

__all__ = ["Failure", "Transform", "TransformChain"]


class Transform:
    """Base class of transforms.

    ``apply`` may change the record in place and return it, return a new record, return
    ``None`` to drop it, or return a list to fan out. It raises
    :class:`~meshconnect.errors.DataError` for a record it cannot handle (missing field, wrong
    type); the chain routes that record by the pipeline's ``errors:`` policy.
    """

    #: The ``type:`` name this transform was configured with (set by the factory).
    type_name: str = ""

    def apply(self, record: Record) -> Record | list[Record] | None:
        raise NotImplementedError


@dataclass(slots=True)
class Failure:
    """A record a transform could not handle."""

    record: Record
    error: BaseException
    #: ``transforms[i]`` (or ``sinks[j].transforms[i]``) with the transform's type.
    stage: str


Step = Callable[["Record"], Any]


class TransformChain:
    """The transforms of a pipeline (or a sink), applied in order, compiled to one function."""

    def __init__(
        self,
        transforms: Sequence[Transform],
        whens: Sequence[Callable[[Record], Any] | None] | None = None,
        *,
        stage_prefix: str = "transforms",
    ) -> None:
        self.transforms = list(transforms)
        self.whens = list(whens) if whens is not None else [None] * len(self.transforms)
        self.stages = [
            f"{stage_prefix}[{i}] ({t.type_name or type(t).__name__})"
            for i, t in enumerate(self.transforms)
        ]
        self._steps: list[Step] = [
            self._guarded(t.apply, w) for t, w in zip(self.transforms, self.whens, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.transforms)

    @staticmethod
    def _guarded(apply: Step, when: Callable[[Record], Any] | None) -> Step:
        if when is None:
            return apply

        def step(record: Record) -> Any:
            return apply(record) if when(record) else record

        return step

    def process(self, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        """Run every record through the chain; return the survivors and the failures."""
        if not self._steps:
            return records, []
        failures: list[Failure] = []
        current = records
        for index, step in enumerate(self._steps):
            out: list[Record] = []
            append = out.append
            record = None
            try:
                for record in current:
                    result = step(record)
                    if result is None:
                        continue
                    if result.__class__ is list:
                        out.extend(result)
                    else:
                        append(result)
            except Exception as exc:
                # ``record`` failed: note it, then go on record by record after it.
                done = next(i for i, r in enumerate(current) if r is record)
                failures.append(self._failure(current[done], exc, self.stages[index]))
                rest, more = self._isolate(step, current[done + 1 :], self.stages[index])
                out.extend(rest)
                failures.extend(more)
            current = out
            if not current:
                break
        return current, failures

    @staticmethod
    def _failure(record: Record, exc: BaseException, stage: str) -> Failure:
        error = exc if isinstance(exc, DataError) else DataError(f"{type(exc).__name__}: {exc}")
        if error is not exc:
            error.__cause__ = exc
        return Failure(record, error, stage)

    @staticmethod
    def _isolate(
        step: Step, records: list[Record], stage: str
    ) -> tuple[list[Record], list[Failure]]:
        out: list[Record] = []
        failures: list[Failure] = []
        for record in records:
            try:
                result = step(record)
            except Exception as exc:
                failures.append(TransformChain._failure(record, exc, stage))
                continue
            if result is None:
                continue
            if isinstance(result, list):
                out.extend(result)
            else:
                out.append(result)
        return out, failures
