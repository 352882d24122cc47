"""Transforms and transform chains.

A transform changes, drops or multiplies one record at a time. Every transform takes a ``when``
predicate; a record for which it is false passes through untouched. Built-in transforms live in
the modules of this package by concept (:mod:`.fields`, :mod:`.structure`, :mod:`.masking`,
:mod:`.convert`, :mod:`.routing`, :mod:`.schema`) and register through
:mod:`meshconnect.transforms.builtin`; plugins add more through the ``meshconnect_transforms``
hook with a :class:`~meshconnect.api.TransformSpec`.

While the loader builds a transform (calls its factory), :func:`build_context` tells the factory
where the pipeline file lives (to resolve relative paths, as ``validate`` does for its schema
directory) and whether the chain is a pipeline's or a sink's (``route`` only makes sense before
the record is stored). Outside the loader it gives the current directory and ``sink=False``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, DataError

if TYPE_CHECKING:
    from ..records import Record

__all__ = [
    "BuildContext",
    "Failure",
    "Transform",
    "TransformChain",
    "build_context",
    "building",
]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What a transform factory may know about where it is built."""

    #: The directory of the pipeline file (relative paths in options resolve against it).
    base_dir: Path
    #: True in a sink's ``transforms:`` (records are already stored), False in a pipeline's.
    sink: bool = False


_CONTEXT: contextvars.ContextVar[BuildContext | None] = contextvars.ContextVar(
    "meshconnect_transform_build_context", default=None
)


def build_context() -> BuildContext:
    """The context of the transform being built (see the module docstring)."""
    context = _CONTEXT.get()
    return context if context is not None else BuildContext(Path.cwd())


@contextlib.contextmanager
def building(context: BuildContext) -> Iterator[BuildContext]:
    """Make ``context`` what :func:`build_context` returns while factories run inside."""
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


class Transform:
    """Base class of transforms.

    ``apply`` may change the record in place and return it, return a new record, return
    ``None`` to drop it, or return a list to fan out. It raises
    :class:`~meshconnect.errors.DataError` for a record it cannot handle (missing field, wrong
    type); the chain routes that record by the pipeline's ``errors:`` policy.

    In a sink's chain the record is the sink's own shallow copy of a stored record that every
    sink of the topic shares: its attributes, extensions and payload object are its own, the
    objects *inside* the payload are not, unless the transform says it never changes them in
    place: set ``copies_nested_objects = True`` when ``apply`` copies the objects on the way
    down a nested path before it writes there (as every built-in does). A sink chain with a
    transform that does not say so gets deep copies of the payloads, which is safe but costs
    a copy per record.
    """

    #: The ``type:`` name this transform was configured with (set by the factory).
    type_name: str = ""
    #: True when ``apply`` never changes an object nested in ``data`` in place.
    copies_nested_objects: bool = False
    #: For an ``async def apply`` (a transform that awaits a service, such as an LLM): how
    #: many records it may work on at once. Ignored for a plain ``def apply``.
    concurrency: int = 8

    def apply(self, record: Record) -> Record | list[Record] | None:
        """Transform one record (see the class docstring). May be ``async def``: the chain
        then awaits it for up to :attr:`concurrency` records of a batch at once, and keeps
        the batch's order. A chain of plain transforms is called without any awaiting."""
        raise NotImplementedError


@dataclass(slots=True)
class Failure:
    """A record a transform could not handle.

    A chain lists its failures in the order of the records they come from, and each knows its
    place in the chain's output (:attr:`at`): what a retry makes of the record goes there, so
    the batch keeps its order (:func:`meshconnect.errorpolicy.retry_transforms`)."""

    record: Record
    error: BaseException
    #: ``transforms[i]`` (or ``sinks[j].transforms[i]``) with the transform's type.
    stage: str
    #: The record's place in the chain's output: how many output records come before it.
    at: int = 0


Step = Callable[["Record"], Any]


def _fuse(count: int) -> Callable[..., None]:
    """The loop of :meth:`TransformChain.process` for ``count`` steps, unrolled: each record
    goes through step 0, 1, … by direct calls, with no loop over the steps and no lookup of
    which step failed (``k`` counts them). A step that fans out hands its list to
    ``fan_out(list, next step, out, failures)``; an error goes to ``failed(record as it
    entered the step, error, step, out, failures)``."""
    lines = [
        "def fused(records, append, steps, fan_out, failed, out, failures):",
        "    " + "".join(f"s{i}, " for i in range(count)) + "= steps",
        "    for record in records:",
        "        k = 0",
        "        try:",
    ]
    for i in range(count):
        lines += [
            f"            result = s{i}(record)",
            "            if result is None:",
            "                continue",
            "            if result.__class__ is list:",
            f"                fan_out(result, {i + 1}, out, failures)",
            "                continue",
        ]
        if i + 1 < count:
            lines += ["            record = result", f"            k = {i + 1}"]
    lines += [
        "            append(result)",
        "        except Exception as exc:",
        "            failed(record, exc, k, out, failures)",
    ]
    scope: dict[str, Any] = {}
    exec(compile("\n".join(lines) + "\n", f"<transform chain of {count}>", "exec"), scope)
    return scope["fused"]


def _position(steps: list[Step], step: Step | None) -> int:
    """Where ``step`` is in ``steps`` (by identity: two steps are never the same object)."""
    return next(i for i, s in enumerate(steps) if s is step)


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
        self._steps: list[Step] = []
        for t, w in zip(self.transforms, self.whens, strict=True):
            step = self._guarded(t.apply, w)
            if any(s is step for s in self._steps):  # one transform twice: steps stay distinct
                step = self._guarded(step, lambda record: True)
            self._steps.append(step)
        #: Whether a transform may change objects nested in ``data`` in place, so a chain
        #: over records shared with others must run on deep copies.
        self.changes_nested_objects = not all(t.copies_nested_objects for t in self.transforms)
        #: Whether a transform is ``async``: then run the chain with :meth:`aprocess`.
        self.is_async = any(inspect.iscoroutinefunction(t.apply) for t in self.transforms)
        # Built on the first aprocess (``stages`` may be renamed after __init__).
        self._segments: list[tuple[int, TransformChain | None]] | None = None
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._fused = _fuse(len(self._steps)) if self._steps else None

    def __len__(self) -> int:
        return len(self.transforms)

    @staticmethod
    def _guarded(apply: Step, when: Callable[[Record], Any] | None) -> Step:
        if when is None:
            return apply
        guard = getattr(when, "guard", None)
        if guard is not None and not inspect.iscoroutinefunction(apply):
            return guard(apply)  # a compiled condition: one call per record, not two

        def step(record: Record) -> Any:
            return apply(record) if when(record) else record

        return step

    def process(self, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        """Run every record through the chain; return the survivors and the failures.

        Each record goes through every step before the next record starts (no list per
        step). A record a step fans out into goes on through the rest of the chain, each copy
        in turn. A record that fails is reported as it entered the failing step, with its
        place in the output (:attr:`Failure.at`); failures are in the records' order.

        A chain with an ``async`` transform runs :meth:`aprocess` to completion here when no
        event loop runs in this thread (``meshconnect test``); inside one, await
        :meth:`aprocess` instead.
        """
        if self.is_async:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self.aprocess(records))
            raise TypeError("this chain has an async transform: await chain.aprocess(records)")
        if not self._steps:
            return records, []
        out: list[Record] = []
        failures: list[Failure] = []
        assert self._fused is not None
        self._fused(records, out.append, self._steps, self._fan_out, self._failed, out, failures)
        return out, failures

    def _fan_out(
        self, result: list[Record], after: int, out: list[Record], failures: list[Failure]
    ) -> None:
        """The records step ``after - 1`` fanned out into go on through the rest."""
        if after < len(self._steps):
            self._run(result, after, out, failures)
        else:
            out.extend(result)

    def _failed(
        self, record: Record, exc: Exception, step: int, out: list[Record], failures: list[Failure]
    ) -> None:
        failures.append(self._failure(record, exc, self.stages[step], len(out)))

    def _run(
        self, records: list[Record], start: int, out: list[Record], failures: list[Failure]
    ) -> None:
        steps = self._steps[start:] if start else self._steps
        append = out.append
        step: Step | None = None
        for record in records:
            try:
                for step in steps:
                    result = step(record)
                    if result is None:
                        break
                    if result.__class__ is list:
                        after = start + _position(steps, step) + 1
                        self._run(result, after, out, failures)
                        break
                    record = result
                else:
                    append(record)
            except Exception as exc:
                # ``step`` is the one that raised (no index is kept: it costs every record).
                stage = self.stages[start + _position(steps, step)]
                failures.append(self._failure(record, exc, stage, len(out)))

    async def aprocess(self, records: list[Record]) -> tuple[list[Record], list[Failure]]:
        """:meth:`process` for a chain that may hold ``async`` transforms.

        The chain runs in segments: a run of plain transforms as in :meth:`process`, then an
        async transform over the whole batch, up to its ``concurrency`` records at a time,
        then the next segment. The output keeps the input's order (fan-outs in place), and
        the failures are in the records' order, each with its place in the output, whatever
        order the async calls finish in."""
        if not self.is_async:
            return self.process(records)
        out, holes = await self._segmented(records, [])
        failures: list[Failure] = []
        for at, failure in holes:
            assert failure is not None
            failure.at = at
            failures.append(failure)
        return out, failures

    async def aprocess_each(self, records: list[Record]) -> list[list[Record | Failure]]:
        """What each of ``records`` became, one list per record in their order: the records
        it came out as and its failures, in their order in the output (a fan-out's copies
        may fail one by one). Runs as :meth:`aprocess` does, plain chains included: the
        async transforms still see the whole batch at once, the plain ones record by record.
        For retries, which put each record's outcome back in its place."""
        out, holes = await self._segmented(records, [(i, None) for i in range(len(records))])
        outcomes: list[list[Record | Failure]] = []
        done = 0
        for at, item in holes:
            if outcomes:
                outcomes[-1].extend(out[done:at])
            done = at
            if item is None:  # where the next record's outcome starts
                outcomes.append([])
            else:
                item.at = at
                outcomes[-1].append(item)
        if outcomes:
            outcomes[-1].extend(out[done:])
        return outcomes

    async def _segmented(
        self, records: list[Record], holes: list[tuple[int, Failure | None]]
    ) -> tuple[list[Record], list[tuple[int, Failure | None]]]:
        """Run the chain segment by segment. ``holes`` are places in the list of records
        (an index: before that record) that the segments keep apart from the records: a
        failure, or ``None`` for a mark. Returns the output, and the holes (the failures of
        the segments among them) at their places in it, in order."""
        if self._segments is None:
            self._segments = self._split()
        current = records
        for index, part in self._segments:
            if not current:
                break
            if part is None:
                current, holes = await self._run_async(index, current, holes)
            else:
                current, holes = self._run_plain(part, current, holes)
        return current, holes

    def _split(self) -> list[tuple[int, TransformChain | None]]:
        """The chain's segments: each async transform on its own, ``(index, None)``, and each
        run of plain transforms as a chain of its own, ``(start, chain)``."""
        segments: list[tuple[int, TransformChain | None]] = []
        start = 0

        def plain(end: int) -> None:
            if start < end:
                part = TransformChain(self.transforms[start:end], self.whens[start:end])
                part.stages = self.stages[start:end]
                segments.append((start, part))

        for i, t in enumerate(self.transforms):
            if inspect.iscoroutinefunction(t.apply):
                plain(i)
                segments.append((i, None))
                start = i + 1
        plain(len(self.transforms))
        return segments

    @staticmethod
    def _run_plain(
        part: TransformChain, records: list[Record], holes: list[tuple[int, Failure | None]]
    ) -> tuple[list[Record], list[tuple[int, Failure | None]]]:
        """A segment of plain transforms: the records between two holes in one go."""
        if not holes:
            processed, failures = part.process(records)
            return processed, [(f.at, f) for f in failures]
        out: list[Record] = []
        placed: list[tuple[int, Failure | None]] = []
        done = 0

        def upto(end: int) -> None:
            nonlocal done
            if end > done:
                more, failures = part.process(records[done:end])
                placed.extend((len(out) + f.at, f) for f in failures)
                out.extend(more)
                done = end

        for at, item in holes:
            upto(at)
            placed.append((len(out), item))
        upto(len(records))
        return out, placed

    async def _run_async(
        self, index: int, records: list[Record], holes: list[tuple[int, Failure | None]]
    ) -> tuple[list[Record], list[tuple[int, Failure | None]]]:
        """An async transform over the batch; each record's result goes in its place."""
        transform = self.transforms[index]
        when = self.whens[index]
        stage = self.stages[index]
        semaphore = self._semaphores.get(index)
        if semaphore is None:
            semaphore = self._semaphores[index] = asyncio.Semaphore(max(1, transform.concurrency))
        apply: Callable[[Record], Awaitable[Any]] = transform.apply  # type: ignore[assignment]

        async def one(record: Record) -> Any:
            if when is not None and not when(record):
                return record
            async with semaphore:
                return await apply(record)

        results = await asyncio.gather(*(one(r) for r in records), return_exceptions=True)
        out: list[Record] = []
        placed: list[tuple[int, Failure | None]] = []
        waiting = iter(holes)
        hole = next(waiting, None)
        for i, (record, result) in enumerate(zip(records, results, strict=True)):
            while hole is not None and hole[0] <= i:  # the holes before this record
                placed.append((len(out), hole[1]))
                hole = next(waiting, None)
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like
                placed.append((len(out), self._failure(record, result, stage)))
            elif result is None:
                continue
            elif result.__class__ is list:
                out.extend(result)
            else:
                out.append(result)
        while hole is not None:
            placed.append((len(out), hole[1]))
            hole = next(waiting, None)
        return out, placed

    @staticmethod
    def _failure(record: Record, exc: BaseException, stage: str, at: int = 0) -> Failure:
        if isinstance(exc, ConfigError):
            # Not the record's fault (a rejected API key, say): no record can pass, so the
            # connector stops for good rather than dead-letter every record.
            raise exc
        error = exc if isinstance(exc, DataError) else DataError(f"{type(exc).__name__}: {exc}")
        if error is not exc:
            error.__cause__ = exc
        return Failure(record, error, stage, at)
