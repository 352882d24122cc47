"""Load pipeline files: parse, interpolate, validate, and build what the worker runs.

:func:`load_pipeline_files` is the engine of ``meshconnect validate`` and of ``run``. It reads
every file and reports **all** problems it finds, in every file, as one
:class:`~meshconnect.errors.ValidationErrors` whose problems print as ``FILE:LINE:COL: message``
(sorted by file in the order given, then line, then column). Each message starts with the
config path (``pipelines[0].sinks[1].config.table: missing required field 'table'``).

The passes, per file:

1. YAML with positions (:mod:`.yamlpos`); a syntax error stops that file.
2. ``${env:…}``/``${file:…}`` interpolation (:mod:`.interpolate`).
3. The file's shape against :class:`~meshconnect.config.model.PipelineFile`.
4. Per pipeline: each connector by name in the registry and its ``config:`` against the
   connector's model; each transform by ``type``, its options against its model, its ``when``
   and its expressions compiled and the transform built; the topic template compiled.
5. Across files: unique pipeline names, unique sink names per pipeline, one ``store:``.

Secrets: a value that came from interpolation, and a ``SecretStr`` field, never appears in a
message. Pydantic's ``input`` is never printed; messages that could echo a value (a validator's
own text) have it replaced by "the value"; finally every text taken from the environment or a
file is masked in every message (anywhere when three characters or longer, else as a whole word in
messages about its own value).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core.core_schema import ErrorType

from ..api import ConnectorConfig, ConnectorSpec
from ..errors import ConfigError, Location, PluginError, Problem, ValidationErrors
from ..expr import Compiler, ExpressionError, Template
from ..plugins import Registry
from ..transforms import Transform, TransformChain
from .interpolate import Interpolated, interpolate
from .model import (
    ErrorPolicy,
    PipelineConfig,
    PipelineFile,
    RetentionConfig,
    SinkConfig,
    TransformConfig,
)
from .yamlpos import Document, YamlPath, parse_yaml, render_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..records import Record

__all__ = [
    "MASK",
    "LoadedConfig",
    "LoadedConnector",
    "LoadedPipeline",
    "LoadedSink",
    "load_pipeline_files",
    "redacted_config",
]

#: What a secret value is shown as.
MASK = "**********"

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


@dataclass(slots=True)
class LoadedConfig:
    """Every pipeline of a set of files, and the settings they share."""

    files: list[str]
    store: str | None
    retention: RetentionConfig
    pipelines: list[LoadedPipeline]
    #: Top-level paths (``("store",)``, ``("retention", …)``) whose values are secret.
    secret_paths: frozenset[YamlPath] = frozenset()


def load_pipeline_files(
    paths: Sequence[str | os.PathLike[str]],
    registry: Registry,
    *,
    env: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Load and validate ``paths``; raise :class:`ValidationErrors` listing every problem.

    ``env`` replaces ``os.environ`` for ``${env:…}``. A file given twice is read once.
    """
    session = _Session(registry, os.environ if env is None else env)
    for path in paths:
        session.load_file(path)
    session.cross_checks()
    if session.problems:
        raise ValidationErrors(session.sorted_problems())
    return session.result()


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
        if not _has(data, part):
            return
        data = data[part]
    if path and _has(data, path[-1]):
        data[path[-1]] = MASK


def _has(container: Any, part: Any) -> bool:
    """Whether ``container[part]`` is an entry of a dict or an index of a list."""
    if isinstance(container, dict):
        return part in container
    if isinstance(container, list):
        return isinstance(part, int) and 0 <= part < len(container)
    return False


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


class _File:
    """One pipeline file: its document, interpolation, and how to report problems in it."""

    def __init__(self, doc: Document, interp: Interpolated, base_dir: Path) -> None:
        self.doc = doc
        self.interp = interp
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.model: PipelineFile | None = None
        failed = {path for path, _ in interp.errors}
        self.failed = failed
        fragments = [frag for frags in interp.secrets.values() for frag in frags]
        self.fragments = sorted({f for f in fragments if len(f) >= 3}, key=len, reverse=True)

    @property
    def name(self) -> str:
        return self.doc.file

    @property
    def data(self) -> Any:
        return self.interp.data

    def report(
        self,
        path: YamlPath,
        detail: str,
        *,
        location: Location | None = None,
        key: bool = False,
        always: bool = False,
    ) -> None:
        """Record a problem about ``path``; at ``location``, else at the path's value or key.

        Problems under a path whose interpolation failed are dropped (they only echo that
        failure), unless ``always``.
        """
        if not always and any(path[: len(f)] == f for f in self.failed):
            return
        detail = self.scrub(path, detail)
        message = f"{render_path(path)}: {detail}" if path else detail
        self.problems.append(Problem(location or self.doc.location(path, key=key), message))

    def scrub(self, path: YamlPath, detail: str) -> str:
        for fragment in self.fragments:
            detail = detail.replace(fragment, MASK)
        for secret_path, fragments in self.interp.secrets.items():
            if path[: len(secret_path)] != secret_path:
                continue
            for fragment in fragments:
                if fragment.strip():
                    detail = re.sub(rf"(?<!\w){re.escape(fragment)}(?!\w)", MASK, detail)
        return detail

    def validate(
        self,
        model: type[M],
        data: Any,
        prefix: YamlPath,
        *,
        also_known: Sequence[str] = (),
    ) -> M | None:
        """``model`` validated from ``data`` (found at ``prefix``); None after reporting problems.

        A model that does not set ``extra`` itself is held to ``extra="forbid"`` here, so a
        misspelt option is reported even when a plugin author forgot to forbid extras.
        """
        if isinstance(data, dict) and model.model_config.get("extra") is None:
            accepted = set(_accepted_keys(model)) | set(also_known)
            unknown = [k for k in data if k not in accepted]
            for key in unknown:
                self.unknown_key((*prefix, key), key, [*_accepted_keys(model), *also_known])
            data = {k: v for k, v in data.items() if k not in unknown}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.report_validation(exc, model, data, prefix, also_known)
        except Exception as exc:  # a plugin's validator that raised something else
            self.report(prefix, f"could not be validated: {type(exc).__name__}: {exc}")
        return None

    def report_validation(
        self,
        exc: ValidationError,
        model: type[BaseModel],
        data: Any,
        prefix: YamlPath,
        also_known: Sequence[str] = (),
    ) -> None:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            kind = error["type"]
            path, rest = _data_path(data, loc)
            full = (*prefix, *path)
            if kind == "missing" and rest:
                name = rest[-1]
                self.report(
                    (*full, name),
                    f"missing required field {name!r}",
                    location=self.doc.location(full, key=True),
                )
            elif kind == "extra_forbidden" and loc:
                key = loc[-1]
                owner = _model_at(model, loc[:-1])
                known = [*_accepted_keys(owner), *also_known] if owner is not None else []
                self.unknown_key(full, key, known)
            else:
                self.report(full, _safe_message(error))

    def unknown_key(self, path: YamlPath, key: Any, known: Sequence[str]) -> None:
        names = sorted(set(known))
        hint = difflib.get_close_matches(str(key), names, n=1) if names else []
        if hint:
            detail = f"unknown key {key!r} (did you mean {hint[0]!r}?)"
        elif names:
            detail = f"unknown key {key!r} (known keys: {', '.join(names)})"
        else:
            detail = f"unknown key {key!r}"
        self.report(path, detail, key=True)


class _Session:
    def __init__(self, registry: Registry, env: Mapping[str, str]) -> None:
        self.registry = registry
        self.env = env
        self.compiler = Compiler(registry.functions)
        self.files: list[_File] = []
        self.file_names: list[str] = []
        self.seen: set[Path] = set()
        self.extra_problems: list[Problem] = []
        self.built: list[_Built] = []
        self.names: dict[str, Location] = {}

    @property
    def problems(self) -> list[Problem]:
        return [*self.extra_problems, *(p for f in self.files for p in f.problems)]

    def sorted_problems(self) -> list[Problem]:
        order = {name: i for i, name in enumerate(self.file_names)}
        unique = list(dict.fromkeys(self.problems))

        def key(problem: Problem) -> tuple[int, int, int]:
            loc = problem.location
            if loc is None:
                return (-1, 0, 0)
            return (order.get(loc.file, len(order)), loc.line, loc.column)

        return sorted(unique, key=key)

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
        interp = interpolate(doc.data, env=self.env, base_dir=resolved.parent)
        file = _File(doc, interp, resolved.parent)
        self.files.append(file)
        for error_path, message in interp.errors:
            file.report(error_path, message, always=True)
        file.model = file.validate(PipelineFile, file.data, ())
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

        sinks = raw.get("sinks")
        if isinstance(sinks, list):
            self.sinks(file, built, sinks, path)
        if source is None and (sinks is None or sinks == []):
            file.report(path, "a pipeline needs a source, sinks, or both")

        topic = raw.get("topic")
        if topic is None and name is not None:
            built.topic = self.template(file, name, (*path, "name"))
        elif isinstance(topic, str):
            built.topic = self.template(file, topic, (*path, "topic"))
        return built

    def sinks(self, file: _File, built: _Built, sinks: list[Any], path: YamlPath) -> None:
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
        model = file.validate(spec.config_model, config, (*path, "config"))
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
                self.expression_problem(file, exc, path, "when")
                ok = False
        if options is None:
            return None
        try:
            transform = spec.factory(options, self.compiler)
        except ExpressionError as exc:
            self.expression_problem(file, exc, path, None)
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
        if not ok:
            return None
        transform.type_name = step.type
        return transform, when, options

    def template(self, file: _File, text: str, path: YamlPath) -> Template | None:
        try:
            return self.compiler.template(text, field=path[-1])
        except ExpressionError as exc:
            self.expression_problem(file, exc, path[:-1], str(path[-1]))
            return None

    def expression_problem(
        self, file: _File, exc: ExpressionError, owner: YamlPath, field_name: str | None
    ) -> None:
        """Report ``exc`` at its option (``exc.field``) inside ``owner``, at its column if known."""
        name = exc.field or field_name
        path = (*owner, name) if name else owner
        detail = exc.message
        info = file.doc.scalars.get(path)
        if info is not None and info.exact and path not in file.interp.rewritten:
            location = file.doc.inner_location(path, exc.column)
        else:
            location = file.doc.location(path)
            if exc.column is not None:
                detail += f" (at offset {exc.column} of the expression)"
        file.report(path, detail, location=location)

    # -- across files --------------------------------------------------------------------------

    def cross_checks(self) -> None:
        self.same_everywhere("store", "a different store")
        self.same_everywhere("retention", "a different retention")

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
        pipelines = [self.loaded(b) for b in self.built]
        return LoadedConfig(
            list(self.file_names), store, retention, pipelines, frozenset(top_secrets)
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
        )


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
    )


# -- helpers ---------------------------------------------------------------------------------


def _quiet(model: type[M], data: Any) -> M | None:
    try:
        return model.model_validate(data)
    except Exception:
        return None


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[YamlPath, YamlPath]:
    """Split a pydantic ``loc`` into the part that exists in ``data`` and the rest.

    The rest holds a missing field's name and pydantic's own tags (union members such as
    ``int``, ``function-after[…]``, ``[key]``), which are not part of the config path.
    """
    path: list[Any] = []
    rest: list[Any] = []
    current = data
    for part in loc:
        if not rest and _has(current, part):
            path.append(part)
            current = current[part]
        else:
            rest.append(part)
    return tuple(path), tuple(rest)


def _accepted_keys(model: type[BaseModel]) -> list[str]:
    keys: list[str] = []
    for name, info in model.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        keys.append(alias or name)
    return keys


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc`` inside ``model``, if found."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
    found = _models_in(current)
    return found[0] if found else None


def _step(tp: Any, part: Any) -> Any:
    for candidate in _members(tp):
        origin = typing.get_origin(candidate)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            for name, info in candidate.model_fields.items():
                if part in (name, info.alias, info.validation_alias):
                    return info.annotation
        elif isinstance(part, int) and origin in (list, tuple, set, frozenset, Sequence):
            args = typing.get_args(candidate)
            return args[0] if args else Any
        elif origin in (dict, Mapping):
            args = typing.get_args(candidate)
            return args[1] if len(args) == 2 else Any
    return tp  # a pydantic tag (union member, validator): stay where we are


def _members(tp: Any) -> list[Any]:
    """``tp`` with Annotated and unions unwrapped into their members."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp]


def _models_in(tp: Any) -> list[type[BaseModel]]:
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]


#: Error types whose message is a validator's own text and so may echo the value.
_ECHOING = {"value_error", "assertion_error"}
_KNOWN_TYPES = set(typing.get_args(ErrorType))


def _safe_message(error: Any) -> str:
    """Pydantic's message for ``error``, never containing the input value."""
    kind = error["type"]
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    if kind == "union_tag_invalid":
        ctx = error.get("ctx") or {}
        return (
            f"unknown value for {ctx.get('discriminator', 'the tag')} "
            f"(expected one of: {ctx.get('expected_tags', '?')})"
        )
    if kind in _ECHOING or kind not in _KNOWN_TYPES:
        message = _unecho(message, error.get("input"))
    return message


def _unecho(message: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return message
    tokens = sorted({repr(value), str(value)}, key=len, reverse=True)
    for token in tokens:
        if token.strip():
            message = re.sub(rf"(?<![\w.]){re.escape(token)}(?![\w.])", "the value", message)
    return message
