"""Config tests: ``meshconnect test FILE_test.yaml`` unit-tests a pipeline's transforms.

A test file names a pipeline file (relative to itself) and lists cases. Each case feeds input
records through a pipeline's transforms and topic routing, as the worker would before storing
them, and optionally through one of its sinks' transforms, as that sink would see them; then it
compares what comes out, and what failed, with what the case expects::

    file: quickstart.yaml            # the pipeline file under test, relative to this file
    pipeline: orders                 # default pipeline of the cases (optional: the only one)
    env: {SALT: test}                # ${env:...} values for loading the pipeline file (optional)
    tests:
      - name: big orders are masked and tagged
        sink: archive                # optional: also run this sink's transforms
        input:                       # CloudEvent-ish mappings; id, source, type get defaults
          - data: {id: 1, email: a@example.com, country: DE, total: 99.5}
        expect:                      # the records out, in order
          - topic: orders            # each key given is compared, the others are ignored;
            data: {id: 1, email: "****", country: DE, total: 99.5, region: eu}  # data exactly
        dead_letters:                # the records that failed, in order
          - errorstage: transforms[1]   # a prefix of the stage, e.g. "transforms[1] (mask)"
            errortype: DataError        # exact
            errormessage: not an object # a part of the message
            data: {id: 2, email: 7}

Records out are compared on the keys an expected record gives: ``data`` and ``topic`` exactly
(``data: null`` is a record whose data is null, a tombstone), any other key as a CloudEvent
attribute or extension (``type``, ``subject``, ``partitionkey``).
Dead letters are compared the same way, with ``topic`` the dead-letter topic of the stage's
``errors:`` policy (null when there is none) and ``errorstage`` / ``errormessage`` matched as a
prefix / a substring. Whatever the ``tolerance``, failed records are reported as dead letters
(under ``tolerance: none`` such a record would fail the connector instead).

:func:`load_test_files` reports problems in test files as ``FILE:LINE:COL: message`` (the same
:class:`~meshconnect.errors.ValidationErrors` as ``validate``); :func:`run_test_file` runs the
cases and gives, for each failure, a unified diff of the expected and actual records as JSON.
The secrets of the pipelines loaded are masked as the worker masks them (in dead letters'
``errormessage``, and in what the command prints); the values of a test file's ``env:`` are
written in it, so they are not secrets.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from .config.interpolate import Interpolated, redact, register_secrets
from .config.problems import FileReporter
from .config.topics import PARTITION_MARK, partition_of
from .config.yamlpos import Document, parse_yaml
from .errorpolicy import dead_letter_record
from .errors import Location, Problem, ValidationErrors
from .mesh.routing import Subscription, route, sink_patterns
from .records import Record

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline, LoadedSink
    from .config.model import ErrorPolicy
    from .plugins import Registry

__all__ = [
    "CaseResult",
    "TestCase",
    "TestFile",
    "TestFileSpec",
    "load_test_files",
    "run_test_file",
]

#: Defaults for input records' required attributes.
DEFAULT_SOURCE = "meshconnect-test"
DEFAULT_TYPE = "meshconnect.test"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestCase(_Model):
    """One case: input records, and what should come out and what should fail."""

    __test__ = False  # not a pytest class

    name: str = Field(description="What the case checks (printed).")
    pipeline: str | None = Field(None, description="Pipeline name; default: the file's.")
    sink: str | None = Field(
        None, description="A sink of the pipeline: also run its transforms on what it reads."
    )
    input: list[dict[str, Any]] = Field(
        min_length=1,
        description="CloudEvent-ish mappings: data and any attributes; id, source and type "
        "get defaults.",
    )
    expect: list[dict[str, Any]] = Field(
        default_factory=list, description="The records out, in order (default: none)."
    )
    dead_letters: list[dict[str, Any]] = Field(
        default_factory=list, description="The records that failed, in order (default: none)."
    )


class TestFileSpec(_Model):
    """A ``_test.yaml`` file."""

    __test__ = False

    file: str = Field(description="The pipeline file under test, relative to this file.")
    pipeline: str | None = Field(None, description="Default pipeline of the cases.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment for ${env:...} in the pipeline file."
    )
    tests: list[TestCase] = Field(min_length=1)


@dataclass(slots=True)
class TestFile:
    """A loaded test file: its cases, the loaded pipeline file, where each case stands."""

    __test__ = False

    path: str
    spec: TestFileSpec
    config: LoadedConfig
    locations: list[Location]


@dataclass(slots=True)
class CaseResult:
    name: str
    location: Location
    passed: bool
    #: A unified diff per mismatch (outputs, dead letters), empty when passed; the pipeline's
    #: secrets masked.
    diffs: list[str] = field(default_factory=list)


# -- loading ----------------------------------------------------------------------------------


def load_test_files(paths: Sequence[str], registry: Registry) -> list[TestFile]:
    """Load test files and the pipeline files they name; raise ValidationErrors listing every
    problem (in the test files, and in the pipeline files as ``validate`` reports them)."""
    from .config.loader import load_pipeline_files

    problems: list[Problem] = []
    loaded: list[TestFile] = []
    for name in paths:
        reporter = _read(name, problems)
        if reporter is None:
            continue
        spec = reporter.validate(TestFileSpec, reporter.doc.data, ())
        problems.extend(reporter.problems)
        if spec is None:
            continue
        target = Path(name).parent / spec.file
        if not target.is_file():
            problems.append(
                Problem(reporter.doc.location(("file",)), f"file: no pipeline file {str(target)!r}")
            )
            continue
        try:
            # The test file's env: values are written in it, so they are not secrets (its
            # output shows them); the real environment's and literal secrets are masked.
            config = load_pipeline_files([target], registry, written_env=spec.env)
        except ValidationErrors as exc:
            problems.extend(exc.problems)
            continue
        before = len(reporter.problems)
        _check_names(reporter, spec, config)
        problems.extend(reporter.problems[before:])
        locations = [reporter.doc.location(("tests", i)) for i in range(len(spec.tests))]
        loaded.append(TestFile(name, spec, config, locations))
    if problems:
        raise ValidationErrors(problems)
    # As the worker does: the pipelines' secrets are masked in the dead letters the cases make
    # and in everything that reports them (diffs, errors).
    register_secrets(secret for test in loaded for secret in test.config.secrets)
    return loaded


def _read(name: str, problems: list[Problem]) -> FileReporter | None:
    here = Location(name, 1, 1)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem(here, f"cannot read the test file: {exc}"))
        return None
    doc: Document = parse_yaml(text, name)
    problems.extend(doc.problems)
    if doc.data is None and doc.problems:
        return None
    if not isinstance(doc.data, dict):
        problems.append(
            Problem(here, "expected a mapping with 'file:' and a 'tests:' list of cases")
        )
        return None
    return FileReporter(doc, Interpolated(doc.data))


def _check_names(reporter: FileReporter, spec: TestFileSpec, config: LoadedConfig) -> None:
    names = [p.name for p in config.pipelines]
    if spec.pipeline is not None and spec.pipeline not in names:
        reporter.report(("pipeline",), f"no pipeline {spec.pipeline!r} (pipelines: {names})")
        return
    for i, case in enumerate(spec.tests):
        wanted = case.pipeline or spec.pipeline
        if wanted is None:
            if len(names) != 1:
                reporter.report(
                    ("tests", i),
                    f"say which pipeline to test (pipeline: NAME); the file has {names}",
                )
                continue
            wanted = names[0]
        if wanted not in names:
            reporter.report(
                ("tests", i, "pipeline"), f"no pipeline {wanted!r} (pipelines: {names})"
            )
            continue
        pipeline = config.pipelines[names.index(wanted)]
        sinks = [s.name for s in pipeline.sinks]
        if case.sink is not None and case.sink not in sinks:
            reporter.report(
                ("tests", i, "sink"), f"no sink {case.sink!r} in pipeline {wanted!r} ({sinks})"
            )
        elif case.sink is None and pipeline.source is None:
            reporter.report(
                ("tests", i),
                f"pipeline {wanted!r} has no source: name the sink to test (sink: NAME)",
            )
        for j, item in enumerate(case.input):
            if "data" not in item and "data_base64" not in item:
                reporter.report(("tests", i, "input", j), "an input record needs 'data'")


# -- running ----------------------------------------------------------------------------------


def run_test_file(test: TestFile) -> list[CaseResult]:
    """Run every case of a loaded test file."""
    results = []
    for case, location in zip(test.spec.tests, test.locations, strict=True):
        pipeline = _pipeline(test, case)
        sink = next((s for s in pipeline.sinks if s.name == case.sink), None)
        try:
            outputs, dead = run_case(pipeline, sink, case.input)
        except Exception as exc:  # a transform that breaks its contract: report, go on
            diff = redact(f"the case raised {type(exc).__name__}: {exc}")
            results.append(CaseResult(case.name, location, False, [diff]))
            continue
        diffs = [
            redact(d)  # the records shown may hold the pipeline's secrets
            for d in (
                _diff("records out", case.expect, outputs, _project_record),
                _diff("dead letters", case.dead_letters, dead, _project_dead),
            )
            if d
        ]
        results.append(CaseResult(case.name, location, not diffs, diffs))
    return results


def _pipeline(test: TestFile, case: TestCase) -> LoadedPipeline:
    wanted = case.pipeline or test.spec.pipeline or test.config.pipelines[0].name
    return next(p for p in test.config.pipelines if p.name == wanted)


def input_record(item: Mapping[str, Any], index: int) -> Record:
    """A record from a CloudEvent-ish mapping, with defaults for id, source and type."""
    event = {
        "specversion": "1.0",
        "id": str(index),
        "source": DEFAULT_SOURCE,
        "type": DEFAULT_TYPE,
        **{k: v for k, v in item.items() if k != "topic"},
    }
    time = event.get("time")
    if isinstance(time, datetime):  # YAML reads an unquoted timestamp as a datetime
        event["time"] = time.isoformat().replace("+00:00", "Z")
    record = Record.from_dict(event)
    topic = item.get("topic")
    record.topic = str(topic) if topic is not None else None
    return record


def run_case(
    pipeline: LoadedPipeline, sink: LoadedSink | None, inputs: Sequence[Mapping[str, Any]]
) -> tuple[list[Record], list[Record]]:
    """What comes out of ``pipeline`` (and ``sink``'s transforms) for ``inputs``, and the
    dead letters of what failed on the way."""
    records = [input_record(item, i) for i, item in enumerate(inputs)]
    dead: list[Record] = []
    if pipeline.source is not None:
        source = pipeline.source
        out, failures = pipeline.chain.process(records)
        problems = [(f.record, f.error, f.stage) for f in failures]
        routed, unroutable = route(pipeline, out)
        problems.extend(unroutable)
        dead.extend(_dead(pipeline.name, source.name, source.errors, problems))
        records = routed
    else:  # a sink-only pipeline: the input is what the sink reads
        routed, _ = route(pipeline, records)
        records = routed
    if sink is None:
        return records, dead
    wanted = Subscription(tuple(sink_patterns(pipeline, sink)))  # every partition
    read = [r.copy() for r in records if r.topic is not None and wanted.matches(r.topic)]
    out, failures = sink.chain.process(read)
    dead.extend(
        _dead(
            pipeline.name, sink.name, sink.errors, [(f.record, f.error, f.stage) for f in failures]
        )
    )
    return out, dead


def _dead(
    pipeline: str,
    connector: str,
    policy: ErrorPolicy,
    problems: Sequence[tuple[Record, BaseException, str]],
) -> list[Record]:
    # Failed records are dead letters here whatever the policy: make one even without a topic.
    shown = policy.model_copy(update={"dead_letter_topic": policy.dead_letter_topic or "-"})
    out = []
    for record, error, stage in problems:
        dead = dead_letter_record(
            record, error, stage=stage, pipeline=pipeline, connector=connector, policy=shown
        )
        assert dead is not None
        dead.topic = policy.dead_letter_topic
        out.append(dead)
    return out


# -- comparing ----------------------------------------------------------------------------------


def record_view(record: Record) -> dict[str, Any]:
    """A record as the test file writes one: topic, attributes, extensions and data; for a
    pipeline with ``partitions:``, the topic's name and the record's ``partition``."""
    view: dict[str, Any] = {"topic": record.topic}
    view.update(record.to_dict())
    view.pop("specversion", None)
    # The mesh's topic and partition, set last: an extension of either name (CloudEvents
    # allows both) must not stand in for them (docs/testing.md, "How records are compared").
    view["topic"] = record.topic
    if record.topic is not None and PARTITION_MARK in record.topic:
        view["topic"], view["partition"] = partition_of(record.topic)
    if record.data is None:  # a tombstone: `data: null` in a case matches it
        view["data"] = None
    return view


def _project_record(expected: Mapping[str, Any] | None, record: Record) -> dict[str, Any]:
    view = record_view(record)
    if expected is None:
        return view
    return {k: view.get(k, _MISSING) for k in expected}


def _project_dead(expected: Mapping[str, Any] | None, record: Record) -> dict[str, Any]:
    view = record_view(record)
    if expected is None:
        return view
    out = {}
    for key, want in expected.items():
        got = view.get(key, _MISSING)
        if key == "errorstage" and isinstance(got, str) and isinstance(want, str):
            if got == want or got.startswith(want + " ") or got.startswith(want + "."):
                got = want
        elif (
            key == "errormessage" and isinstance(got, str) and isinstance(want, str) and want in got
        ):
            got = want
        out[key] = got
    return out


_MISSING = "<missing>"


def _diff(
    what: str,
    expected: list[dict[str, Any]],
    actual: list[Record],
    project: Any,
) -> str:
    shown = [
        project(expected[i] if i < len(expected) else None, record)
        for i, record in enumerate(actual)
    ]
    if _canon(shown) == _canon(expected):
        return ""
    lines = difflib.unified_diff(
        _pretty(expected).splitlines(),
        _pretty(shown).splitlines(),
        f"expected {what}",
        f"actual {what}",
        lineterm="",
    )
    return "\n".join(lines)


#: Marks a number's exact text inside the JSON that compares and shows values (stdlib json
#: cannot write a number's own characters); unmarked again in what is shown.
_NUMBER = "\x00number:"
_NUMBER_SHOWN = re.compile(r'"\\u0000number:([^"\\]*)"')


def _exact(value: Any) -> Any:
    """``value`` with every fractional number as its exact text: a YAML test file reads
    ``1.10`` as the Decimal of its text, as records hold JSON numbers, so a case compares
    digits and scale (a float comparison took 169299987.35345113 for ...112 and 1.1 for
    1.10). A float counts as its shortest text (``1.0``), a Decimal without fraction digits
    as the integer it is, as ``jsonvalue.dumps`` writes them."""
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    if isinstance(value, float) and math.isfinite(value):
        value = Decimal(repr(value))
    if isinstance(value, Decimal) and value.is_finite():
        if value.as_tuple().exponent == 0:
            return int(value)
        return _NUMBER + str(value)
    return value


def _canon(value: Any) -> str:
    return json.dumps(_exact(value), sort_keys=True, default=repr)


def _pretty(value: Any) -> str:
    text = json.dumps(_exact(value), indent=2, sort_keys=True, default=repr, ensure_ascii=False)
    return _NUMBER_SHOWN.sub(r"\1", text)
