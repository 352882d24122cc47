"""Load pipeline files: parse, interpolate, validate, and build what the worker runs.

:func:`load_pipeline_files` is the engine of ``meshconnect validate`` and of ``run``. It reads
every file and reports **all** problems it finds, in every file, as one
:class:`~meshconnect.errors.ValidationErrors`. How each finding becomes a located
``FILE:LINE:COL: message`` that never shows a secret is the business of :mod:`.problems`.

The passes, per file:

1. YAML with positions (:mod:`.yamlpos`); a syntax error stops that file.
2. ``${env:…}``/``${file:…}`` interpolation (:mod:`.interpolate`).
3. The file's shape against :class:`~meshconnect.config.model.PipelineFile`.
4. Per pipeline: each connector by name in the registry and its ``config:`` against the
   connector's model; each transform by ``type``, its options against its model, its ``when``
   and its expressions compiled and the transform built; the topic template compiled.
5. Across files: unique pipeline names, unique sink names per pipeline, one ``store:``.

:func:`redacted_config` gives the result back as plain data, with every interpolated value and
every ``SecretStr`` shown as :data:`MASK`.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from .. import jsonvalue
from ..api import ConnectorConfig, ConnectorSpec
from ..errors import ConfigError, Location, PluginError, Problem, ValidationErrors
from ..expr import Compiler, ExpressionError, Template
from ..plugins import Registry
from ..secrets import pipeline_secrets, secret_str_values
from ..transforms import BuildContext, Transform, TransformChain, building
from .interpolate import Interpolated, Redactor, interpolate
from .model import (
    ClusterConfig,
    ErrorPolicy,
    PipelineConfig,
    PipelineFile,
    RetentionConfig,
    SinkConfig,
    TransformConfig,
)
from .problems import MASK, FileReporter, has_entry, sort_problems
from .topics import DeadLetterSink, dead_letter_loops, pattern_problem, topic_problem
from .yamlpos import Document, YamlPath, parse_yaml

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..records import Record

log = logging.getLogger("meshconnect.config")

__all__ = [
    "MASK",
    "LoadedConfig",
    "LoadedConnector",
    "LoadedPipeline",
    "LoadedSink",
    "load_pipeline_files",
    "load_pipeline_texts",
    "redacted_config",
]

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class LoadedConnector:
    """A source connector, found in the registry, with its validated config."""

    name: str
    connector: str
    spec: ConnectorSpec
    config: ConnectorConfig = field(repr=False)
    errors: ErrorPolicy


@dataclass(slots=True)
class LoadedSink:
    """A sink connector with its config, topic patterns, transforms and delivery settings."""

    name: str
    connector: str
    spec: ConnectorSpec
    config: ConnectorConfig = field(repr=False)
    #: Topic names or globs; ``None``: the topics this sink's pipeline writes.
    topics: list[str] | None
    chain: TransformChain
    errors: ErrorPolicy
    batch_size: int
    commit_interval: float
    #: The validated options of each transform in ``chain`` (for ``redacted_config``).
    transform_options: list[BaseModel] = field(default_factory=list, repr=False)
    #: Whether the file gave ``batch_size`` (else a sink's ``batch_size_hint`` may lower it).
    batch_size_given: bool = False


@dataclass(slots=True)
class LoadedPipeline:
    """One pipeline, ready to run."""

    name: str
    #: The pipeline file as given on the command line.
    file: str
    #: The pipeline file's directory, absolute; relative paths in config resolve against it.
    base_dir: str
    config: PipelineConfig = field(repr=False)
    source: LoadedConnector | None
    chain: TransformChain
    topic: Template
    sinks: list[LoadedSink]
    #: Its index in the file's ``pipelines:`` list.
    index: int = 0
    #: Paths (relative to this pipeline) of values that came from interpolation: secret.
    secret_paths: frozenset[YamlPath] = frozenset()
    transform_options: list[BaseModel] = field(default_factory=list, repr=False)
    #: The pipeline as written, before interpolation, with its file's ``expressions:``
    #: settings: what a cluster member publishes (:mod:`meshconnect.cluster`; no secret
    #: value is in it, only the ``${env:…}`` references).
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def partitions(self) -> int:
        """``partitions:`` (1: unpartitioned topics, one consumer per sink)."""
        return self.config.partitions

    def slots(self) -> list[int | None]:
        """The consumers each sink runs as: ``[None]`` (one, reading every partition), or
        ``[0, 1, …, partitions - 1]``."""
        n = self.config.partitions
        return [None] if n == 1 else list(range(n))


@dataclass(slots=True)
class LoadedConfig:
    """Every pipeline of a set of files, and the settings they share."""

    files: list[str]
    store: str | None
    retention: RetentionConfig
    pipelines: list[LoadedPipeline]
    #: Top-level paths (``("store",)``, ``("retention", …)``) whose values are secret.
    secret_paths: frozenset[YamlPath] = frozenset()
    #: Every text interpolation took from the environment or a file: masked in every message
    #: the run prints or stores (:func:`~meshconnect.config.interpolate.Redactor`).
    secrets: frozenset[str] = field(default=frozenset(), repr=False)
    #: ``cluster:`` of the files (:mod:`meshconnect.cluster`), and where it is written.
    cluster: ClusterConfig | None = None
    cluster_at: str = ""


def load_pipeline_files(
    paths: Sequence[str | os.PathLike[str]],
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
    written_env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load and validate ``paths``; raise :class:`ValidationErrors` listing every problem.

    ``env`` replaces ``os.environ`` for ``${env:…}``; ``written_env`` (a test file's ``env:``)
    comes before it, and its values are not secrets. A file given twice is read once.
    """
    session = _Session(registry, os.environ if env is None else env, written_env)
    for path in paths:
        session.load_file(path)
    return session.finish()


def load_pipeline_texts(
    texts: Sequence[tuple[str, str, str]],
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """As :func:`load_pipeline_files`, for ``(name, text, base_dir)`` documents that are not
    files (the pipelines a cluster keeps in its store); ``name`` stands for the file in
    messages and relative paths resolve against ``base_dir``."""
    session = _Session(registry, os.environ if env is None else env)
    for name, text, base_dir in texts:
        session.file_names.append(name)
        session.load_text(name, text, Path(base_dir))
    return session.finish()


def redacted_config(loaded: LoadedConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data, safe to print.

    Every interpolated value and every ``SecretStr`` is replaced by :data:`MASK`. Defaults are
    filled in and durations are seconds.
    """
    retention = loaded.retention.model_dump(mode="json", by_alias=True)
    out: dict[str, Any] = {
        "store": loaded.store,
        "retention": retention,
        "pipelines": [_pipeline_dict(p) for p in loaded.pipelines],
    }
    for path in loaded.secret_paths:
        _mask(out, path)
    return out


def _pipeline_dict(pipeline: LoadedPipeline) -> dict[str, Any]:
    data = pipeline.config.model_dump(mode="json", by_alias=True)
    if pipeline.source is not None:
        data["source"]["config"] = pipeline.source.config.model_dump(mode="json", by_alias=True)
    _dump_options(data["transforms"], pipeline.transform_options)
    for sink, sink_data in zip(pipeline.sinks, data["sinks"], strict=True):
        sink_data["config"] = sink.config.model_dump(mode="json", by_alias=True)
        _dump_options(sink_data["transforms"], sink.transform_options)
    for path in pipeline.secret_paths:
        _mask(data, path)
    return data


def _dump_options(items: list[dict[str, Any]], options: list[BaseModel]) -> None:
    for item, model in zip(items, options, strict=True):
        item.update(model.model_dump(mode="json", by_alias=True))


def _mask(data: Any, path: YamlPath) -> None:
    for part in path[:-1]:
        if not has_entry(data, part):
            return
        data = data[part]
    if path and has_entry(data, path[-1]):
        data[path[-1]] = MASK


# -- the loading session ---------------------------------------------------------------------


@dataclass(slots=True)
class _Built:
    """What the second pass made of one pipeline (complete only when there were no problems)."""

    file: _File
    index: int
    name: str | None
    chain: TransformChain | None = None
    options: list[BaseModel] = field(default_factory=list)
    source: tuple[ConnectorSpec, ConnectorConfig] | None = None
    sinks: list[_BuiltSink] = field(default_factory=list)
    topic: Template | None = None


@dataclass(slots=True)
class _BuiltSink:
    spec: ConnectorSpec
    config: ConnectorConfig
    chain: TransformChain
    options: list[BaseModel]


class _File(FileReporter):
    """One pipeline file: its document, interpolation, directory and validated model.

    Problems in it are reported through the :class:`~.problems.FileReporter` methods.
    """

    def __init__(self, doc: Document, interp: Interpolated, base_dir: Path) -> None:
        super().__init__(doc, interp)
        self.base_dir = base_dir
        self.model: PipelineFile | None = None

    @property
    def name(self) -> str:
        return self.doc.file

    @property
    def data(self) -> Any:
        return self.interp.data


class _Session:
    def __init__(
        self,
        registry: Registry,
        env: Mapping[str, str],
        written_env: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry
        self.env = env
        self.written_env = written_env
        self.compiler = Compiler(registry.functions)
        self.files: list[_File] = []
        self.file_names: list[str] = []
        self.seen: set[Path] = set()
        self.extra_problems: list[Problem] = []
        self.built: list[_Built] = []
        self.names: dict[str, Location] = {}
        #: Sinks with a dead-letter topic, for the loop check across every file of the run.
        self.dead_sinks: list[tuple[_File, YamlPath, DeadLetterSink]] = []
        #: Every value interpolation took from the environment or a file, in any file.
        self.secrets: set[str] = set()

    @property
    def problems(self) -> list[Problem]:
        return [*self.extra_problems, *(p for f in self.files for p in f.problems)]

    # -- one file ------------------------------------------------------------------------------

    def load_file(self, path: str | os.PathLike[str]) -> None:
        name = os.fspath(path)
        resolved = Path(name).resolve()
        if resolved in self.seen:
            return
        self.seen.add(resolved)
        self.file_names.append(name)
        here = Location(name, 1, 1)
        try:
            text = Path(name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            self.extra_problems.append(Problem(here, "the pipeline file is not UTF-8 text"))
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.extra_problems.append(Problem(here, f"cannot read the pipeline file: {reason}"))
            return
        self.load_text(name, text, resolved.parent)

    def load_text(self, name: str, text: str, base_dir: Path) -> None:
        doc = parse_yaml(text, name)
        self.extra_problems.extend(doc.problems)
        if doc.problems and doc.data is None:
            return
        if not isinstance(doc.data, dict):
            what = "the file is empty" if doc.data is None else "the top level is not a mapping"
            self.extra_problems.append(
                Problem(doc.location(()), f"{what}: expected a mapping with a 'pipelines:' list")
            )
            return
        interp = interpolate(
            doc.data, env=self.env, base_dir=base_dir, written_env=self.written_env
        )
        interp.literal = pipeline_secrets(interp.data)
        file = _File(doc, interp, base_dir)
        self.files.append(file)
        for error_path, message in interp.errors:
            file.report(error_path, message, always=True)
        file.model = file.validate(PipelineFile, file.data, ())
        self.secrets.update(interp.secret_values())
        # Expressions compiled for this file: its own pattern policy, and run-time failure
        # messages with every interpolated value of the file masked (as validation's are).
        self.compiler = Compiler(
            self.registry.functions,
            record_patterns=file.model is not None and file.model.expressions.record_patterns,
            redact=Redactor(interp.secret_values()).redact,
        )
        pipelines = file.data.get("pipelines")
        if isinstance(pipelines, list):
            for index, raw in enumerate(pipelines):
                if isinstance(raw, dict):
                    self.built.append(self.pipeline(file, index, raw))

    def pipeline(self, file: _File, index: int, raw: dict[Any, Any]) -> _Built:
        path: YamlPath = ("pipelines", index)
        name = raw.get("name")
        if not isinstance(name, str) or (*path, "name") in file.failed:
            name = None
        built = _Built(file, index, name)
        if name is not None:
            first = self.names.get(name)
            if first is not None:
                file.report((*path, "name"), f"duplicate pipeline name {name!r} (first at {first})")
            else:
                self.names[name] = file.doc.location((*path, "name"))

        chain = self.chain(file, raw.get("transforms"), (*path, "transforms"), "transforms")
        if chain is not None:
            built.chain, built.options = chain

        source = raw.get("source")
        if isinstance(source, dict):
            built.source = self.connector(file, source, (*path, "source"), "source")

        partitions = self.partitions(file, index)
        sinks = raw.get("sinks")
        if isinstance(sinks, list):
            self.sinks(file, built, sinks, path, partitions)
        if source is None and (sinks is None or sinks == []):
            file.report(path, "a pipeline needs a source, sinks, or both")

        topic = raw.get("topic")
        if topic is None and name is not None:
            built.topic = self.template(file, name, (*path, "name"))
        elif isinstance(topic, str):
            built.topic = self.template(file, topic, (*path, "topic"))
        self.topic_checks(file, built, raw, path)
        return built

    def topic_checks(self, file: _File, built: _Built, raw: dict[Any, Any], path: YamlPath) -> None:
        """Literal topic names obey the rule of :mod:`.topics`; a source does not dead-letter
        into its own pipeline's topics; sinks are collected for the dead-letter loop check."""
        from ..mesh.routing import template_glob
        from ..transforms.routing import RouteOptions

        def check(text: Any, at: YamlPath, glob: bool = False) -> None:
            if isinstance(text, str) and at not in file.failed:
                problem = pattern_problem(text) if glob else topic_problem(text)
                if problem is not None:
                    file.report(at, problem)

        if built.topic is not None and built.topic.is_literal:
            at = (*path, "topic") if "topic" in raw else (*path, "name")
            check(built.topic.literal, at)
        # What the pipeline writes: its topic (a template gives a glob) and route targets.
        written: list[str] = []
        if built.topic is not None:
            text = built.topic.text
            written.append(
                str(built.topic.literal) if built.topic.is_literal else template_glob(text)
            )
        for k, options in enumerate(built.options):
            if isinstance(options, RouteOptions):
                targets: list[tuple[str | None, YamlPath]] = [
                    (options.topic, ("topic",)),
                    (options.default, ("default",)),
                ]
                targets += [
                    (r.topic, ("rules", m, "topic")) for m, r in enumerate(options.rules or [])
                ]
                for target, sub in targets:
                    if target is None:
                        continue
                    if "{" in target:
                        written.append(template_glob(target))
                    else:
                        check(target, (*path, "transforms", k, *sub))
                        written.append(target)
        source = raw.get("source")
        errors = source.get("errors") if isinstance(source, dict) else None
        if isinstance(errors, dict):
            dlq = errors.get("dead_letter_topic")
            at = (*path, "source", "errors", "dead_letter_topic")
            check(dlq, at)
            if isinstance(dlq, str) and any(fnmatch.fnmatchcase(dlq, w) for w in written):
                file.report(
                    at,
                    f"the source dead-letters into {dlq!r}, a topic this pipeline writes "
                    f"({', '.join(written)}): dead letters would be mixed with its records and "
                    "delivered by its sinks; use a topic of their own, e.g. 'dlq.' + the "
                    "pipeline name",
                )
        sinks = raw.get("sinks")
        if not isinstance(sinks, list):
            return
        for j, sink in enumerate(sinks):
            if not isinstance(sink, dict):
                continue
            sink_path = (*path, "sinks", j)
            topics = sink.get("topics")
            if isinstance(topics, list):
                for k, pattern in enumerate(topics):
                    check(pattern, (*sink_path, "topics", k), glob=True)
                patterns = [t for t in topics if isinstance(t, str)]
            else:
                patterns = written[:1]
            errors = sink.get("errors")
            if not isinstance(errors, dict):
                continue
            dlq = errors.get("dead_letter_topic")
            at = (*sink_path, "errors", "dead_letter_topic")
            check(dlq, at)
            if isinstance(dlq, str) and errors.get("tolerance") == "all" and built.name:
                sink_name = sink.get("name") or sink.get("connector")
                self.dead_sinks.append(
                    (file, at, DeadLetterSink(f"{built.name}/{sink_name}", tuple(patterns), dlq))
                )

    def partitions(self, file: _File, index: int) -> int:
        """The pipeline's ``partitions:`` as written: a number, or a problem. It decides where
        records are stored, so it must be the same in every run and on every cluster member:
        a quoted or interpolated value (``${env:N}``) could differ, and got past the checks
        that depend on it."""
        raw = file.doc.data["pipelines"][index]
        value = raw.get("partitions", 1) if isinstance(raw, dict) else 1
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:  # as YAML wrote it (4.0, "4", true, null), not as a Python repr
            shown = jsonvalue.dumps(value).decode()
        except TypeError:
            shown = repr(value)
        file.replace(  # pydantic's "should be a valid integer" says less
            ("pipelines", index, "partitions"),
            f"write partitions as a whole number, not {shown}: it decides which partition each "
            "record is stored in, so it must be the same in every run and on every cluster "
            "member (an interpolated or quoted value could differ)",
        )
        return 1

    def sinks(
        self, file: _File, built: _Built, sinks: list[Any], path: YamlPath, partitions: int
    ) -> None:
        """Build the sinks; each of a pipeline with ``partitions: N`` runs as N consumers
        writing at once, which its connector must allow."""
        names: dict[str, int] = {}
        for j, raw in enumerate(sinks):
            if not isinstance(raw, dict):
                continue
            sink_path = (*path, "sinks", j)
            connector = self.connector(file, raw, sink_path, "sink")
            chain = self.chain(
                file, raw.get("transforms"), (*sink_path, "transforms"), f"sinks[{j}].transforms"
            )
            if connector is not None and chain is not None:
                built.sinks.append(_BuiltSink(*connector, *chain))
            if connector is not None and partitions > 1:
                spec, config = connector
                check_partitions = getattr(spec.load(), "partition_problem", None)
                problem = check_partitions(config) if check_partitions is not None else None
                if problem is not None:
                    file.report(
                        (*path, "partitions"),
                        f"sinks[{j}] ({raw.get('name') or raw.get('connector')}) cannot run as "
                        f"{partitions} consumers: {problem}",
                    )
            explicit = raw.get("name")
            sink_name = explicit if isinstance(explicit, str) else raw.get("connector")
            if not isinstance(sink_name, str):
                continue
            if sink_name in names:
                field_name = "name" if isinstance(explicit, str) else "connector"
                file.report(
                    (*sink_path, field_name),
                    f"duplicate sink name {sink_name!r} (sinks[{names[sink_name]}] has it too; "
                    "give each sink its own 'name:')",
                )
            else:
                names[sink_name] = j

    def connector(
        self,
        file: _File,
        raw: dict[Any, Any],
        path: YamlPath,
        kind: Literal["source", "sink"],
    ) -> tuple[ConnectorSpec, ConnectorConfig] | None:
        """The spec and validated config of the connector that ``raw`` names, or None."""
        name = raw.get("connector")
        config = raw.get("config", {})
        if not isinstance(name, str) or not isinstance(config, dict):
            return None  # the shape pass reported it
        try:
            spec = self.registry.connector(name, kind)
        except PluginError as exc:
            file.report((*path, "connector"), self.connector_message(name, kind, exc))
            return None
        try:
            config_model = spec.model()
        except PluginError as exc:  # a plugin's "module:Class" that does not import
            entry = self.registry.connectors.get((name, kind))
            plugin = f"plugin {entry.plugin!r}" if entry is not None else "its plugin"
            log.debug("%s", exc, exc_info=exc.__cause__ or exc)
            file.report(
                (*path, "connector"),
                f"{kind} {exc} (a fault of {plugin}, not of this file; --log-level debug shows "
                "the traceback)",
            )
            return None
        model = file.validate(config_model, config, (*path, "config"))
        self.secrets |= secret_str_values(model)
        return (spec, model) if model is not None else None

    def connector_message(self, name: str, kind: str, exc: PluginError) -> str:
        entry = self.registry.connectors.get((name, kind))
        if entry is None:
            other = "sink" if kind == "source" else "source"
            message = self.registry.unknown_message(name, kind)
            if (name, other) in self.registry.connectors:
                message += f"; {name!r} is a {other} connector"
            return message
        if entry.status == "missing-extra":
            return f"{kind} connector {name!r} is installed without its extra: {entry.reason}"
        if entry.status == "disabled":
            return f"{kind} connector {name!r} is disabled ({entry.reason})"
        if entry.status == "failed":
            return f"{kind} connector {name!r} failed to load: {entry.reason}"
        return str(exc)

    def chain(
        self, file: _File, raw: Any, path: YamlPath, stage_prefix: str
    ) -> tuple[TransformChain, list[BaseModel]] | None:
        if raw is None:
            return TransformChain([], stage_prefix=stage_prefix), []
        if not isinstance(raw, list):
            return None
        transforms: list[Transform] = []
        whens: list[Callable[[Record], Any] | None] = []
        options: list[BaseModel] = []
        complete = True
        for k, item in enumerate(raw):
            made = self.transform(file, item, (*path, k))
            if made is None:
                complete = False
                continue
            transforms.append(made[0])
            whens.append(made[1])
            options.append(made[2])
        if not complete:
            return None
        return TransformChain(transforms, whens, stage_prefix=stage_prefix), options

    def transform(
        self, file: _File, raw: Any, path: YamlPath
    ) -> tuple[Transform, Callable[[Record], Any] | None, BaseModel] | None:
        step = _quiet(TransformConfig, raw)
        if step is None:
            return None  # the shape pass reported it
        try:
            spec = self.registry.transform(step.type)
        except PluginError as exc:
            file.report((*path, "type"), str(exc))
            return None
        options = file.validate(
            spec.options_model, step.options(), path, also_known=("type", "when")
        )
        when: Callable[[Record], Any] | None = None
        ok = options is not None
        if step.when is not None:
            try:
                when = self.compiler.predicate(step.when, field="when")
            except ExpressionError as exc:
                file.report_expression(exc, path, "when")
                ok = False
        if options is None:
            return None
        self.secrets |= secret_str_values(options)
        context = BuildContext(file.base_dir, sink="sinks" in path)
        try:
            with building(context):
                transform = spec.factory(options, self.compiler)
        except ExpressionError as exc:
            file.report_expression(exc, path, None)
            return None
        except ConfigError as exc:
            file.report(path, str(exc))
            return None
        except Exception as exc:
            file.report(
                (*path, "type"),
                f"transform {step.type!r} could not be built: {type(exc).__name__}: {exc}",
            )
            return None
        if not isinstance(transform, Transform):
            file.report(
                (*path, "type"),
                f"transform {step.type!r}: its factory returned {transform!r}, not a "
                "meshconnect.Transform",
            )
            return None
        if not ok:
            return None
        transform.type_name = step.type
        return transform, when, options

    def template(self, file: _File, text: str, path: YamlPath) -> Template | None:
        try:
            return self.compiler.template(text, field=path[-1])
        except ExpressionError as exc:
            file.report_expression(exc, path[:-1], str(path[-1]))
            return None

    # -- across files --------------------------------------------------------------------------

    def cross_checks(self) -> None:
        self.same_partitions()
        sinks = [sink for _, _, sink in self.dead_sinks]
        for index, message in dead_letter_loops(sinks):
            file, at, _ = self.dead_sinks[index]
            file.report(at, message)
        self.same_everywhere("store", "a different store")
        self.same_everywhere("retention", "a different retention")
        self.same_everywhere("cluster", "a different cluster")
        clustered = [f for f in self.files if f.model is not None and f.model.cluster is not None]
        for file in self.files:
            if file.model is not None and file.model.store is not None:
                self.check_store(file, file.model.store)
                if clustered:
                    self.check_cluster_store(clustered[0], file.model.store)

    def same_partitions(self) -> None:
        """Pipelines that write the same literal topic split it the same way: with two counts,
        one key's records would be in two partitions, read by two consumers in no order."""
        first: dict[str, tuple[_Built, int]] = {}
        for built in self.built:
            model = built.file.model
            if model is None or built.topic is None or built.topic.literal is None:
                continue
            if built.index >= len(model.pipelines) or model.pipelines[built.index].source is None:
                continue  # only what a source writes is partitioned
            n = model.pipelines[built.index].partitions
            seen = first.setdefault(built.topic.literal, (built, n))
            if seen[1] != n:
                other = seen[0]
                where = other.file.doc.location(("pipelines", other.index))
                built.file.report(
                    ("pipelines", built.index, "partitions"),
                    f"topic {built.topic.literal!r} is written with partitions: {seen[1]} by "
                    f"pipeline {other.name!r} ({where}) and with {n} here: one key's records "
                    "would be in two partitions; give both the same count",
                )

    def check_store(self, file: _File, url: str) -> None:
        """The store URL names an installed backend and parses (nothing is opened)."""
        scheme, sep, _ = url.partition("://")
        if not sep:
            file.report(("store",), "not a store URL (e.g. sqlite:///.meshconnect/mesh.db)")
            return
        try:
            self.registry.store(scheme).factory(url)
        except (PluginError, ConfigError) as exc:
            file.report(("store",), str(exc))

    def check_cluster_store(self, file: _File, url: str) -> None:
        """``cluster:`` with a ``store:`` it cannot run on (``run`` refuses it too)."""
        from ..cluster import CLUSTER_SCHEMES

        scheme = url.partition("://")[0]
        if scheme in CLUSTER_SCHEMES or file.model is None or file.model.cluster is None:
            return
        shown = f"{scheme}://…" if "@" in url else url
        file.report(
            ("cluster",),
            f"{file.model.cluster.name!r} needs a redis:// or nats:// store that every member "
            f"reaches, but `store:` is {shown}",
        )

    def same_everywhere(self, key: str, what: str) -> None:
        first: tuple[_File, Any] | None = None
        for file in self.files:
            if file.model is None or key not in file.data:
                continue
            value = getattr(file.model, key)
            if first is None:
                first = (file, value)
            elif value != first[1]:
                where = first[0].doc.location((key,))
                file.report(
                    (key,),
                    f"this file names {what} than {where}; the files of one run share one",
                )

    def finish(self) -> LoadedConfig:
        """The loaded config, or ValidationErrors listing every problem."""
        self.cross_checks()
        if self.problems:
            raise ValidationErrors(sort_problems(self.problems, self.file_names))
        return self.result()

    def result(self) -> LoadedConfig:
        store: str | None = None
        retention = RetentionConfig.model_validate({})
        top_secrets: set[YamlPath] = set()
        for file in self.files:
            assert file.model is not None
            if "store" in file.data and store is None:
                store = file.model.store
                top_secrets |= {p for p in file.interp.secrets if p[:1] == ("store",)}
        for file in self.files:
            assert file.model is not None
            if "retention" in file.data:
                retention = file.model.retention
                top_secrets |= {p for p in file.interp.secrets if p[:1] == ("retention",)}
                break
        cluster, cluster_at = None, ""
        for file in self.files:
            assert file.model is not None
            if file.model.cluster is not None:
                cluster = file.model.cluster
                cluster_at = str(file.doc.location(("cluster",)))
                break
        pipelines = [self.loaded(b) for b in self.built]
        return LoadedConfig(
            list(self.file_names),
            store,
            retention,
            pipelines,
            frozenset(top_secrets),
            secrets=frozenset(self.secrets),
            cluster=cluster,
            cluster_at=cluster_at,
        )

    def loaded(self, built: _Built) -> LoadedPipeline:
        file = built.file
        assert file.model is not None and built.chain is not None and built.topic is not None
        config = file.model.pipelines[built.index]
        prefix = ("pipelines", built.index)
        secrets = frozenset(p[2:] for p in file.interp.secrets if p[:2] == prefix)
        source = None
        if config.source is not None:
            assert built.source is not None
            spec, source_config = built.source
            source = LoadedConnector(
                config.source.name or config.source.connector,
                config.source.connector,
                spec,
                source_config,
                config.source.errors,
            )
        sinks = [_loaded_sink(c, b) for c, b in zip(config.sinks, built.sinks, strict=True)]
        return LoadedPipeline(
            name=config.name,
            file=file.name,
            base_dir=str(file.base_dir),
            config=config,
            source=source,
            chain=built.chain,
            topic=built.topic,
            sinks=sinks,
            index=built.index,
            secret_paths=secrets,
            transform_options=built.options,
            raw=_raw_pipeline(file, built.index),
        )


def _raw_pipeline(file: _File, index: int) -> dict[str, Any]:
    """Pipeline ``index`` of ``file`` as written (before interpolation), with the file's
    ``expressions:`` (they decide how its expressions compile)."""
    raw = file.doc.data["pipelines"][index]
    expressions = file.doc.data.get("expressions")
    return {"pipeline": raw, "expressions": expressions} if expressions else {"pipeline": raw}


def _loaded_sink(config: SinkConfig, built: _BuiltSink) -> LoadedSink:
    return LoadedSink(
        name=config.name or config.connector,
        connector=config.connector,
        spec=built.spec,
        config=built.config,
        topics=config.topics,
        chain=built.chain,
        errors=config.errors,
        batch_size=config.batch_size,
        commit_interval=config.commit_interval,
        transform_options=built.options,
        batch_size_given="batch_size" in config.model_fields_set,
    )


# -- helpers ---------------------------------------------------------------------------------


def _quiet(model: type[M], data: Any) -> M | None:
    try:
        return model.model_validate(data)
    except Exception:
        return None
