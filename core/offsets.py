"""Offsets: what source positions and sink offsets the store holds, and resetting them.

The logic behind ``meshconnect offsets show`` and ``offsets reset``, without the command line,
so the admin API can call it too. Every function takes an *open* store. Problems (no such
sink, a ``--to`` that is not a position) are :class:`~meshconnect.errors.ConfigError`\\ s whose
message says what to give instead.

Ids: a source's positions are stored under ``<pipeline>/<source name>``
(:func:`~meshconnect.worker.source_id`), a sink's offsets under the consumer group
``<pipeline>/<sink name>`` (:func:`~meshconnect.sinkloop.sink_group`); resetting a sink also
forgets what it dead-lettered (``deadletter/<group>``), so it dead-letters again what fails.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import ConfigError

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline
    from .mesh.store import MeshStore

__all__ = ["ResetPlan", "apply_reset", "offsets_report", "reset_plan", "source_end"]


def source_id(pipeline: str, name: str) -> str:
    """The id under which a source's positions are stored: ``<pipeline>/<source name>``."""
    return f"{pipeline}/{name}"


def sink_group(pipeline: str, name: str) -> str:
    """The consumer group of a sink: ``<pipeline>/<sink name>``."""
    return f"{pipeline}/{name}"


def dead_letter_id(group: str) -> str:
    """The id of the positions marking what sink ``group`` has dead-lettered, per topic."""
    return f"deadletter/{group}"


async def offsets_report(store: MeshStore, config: LoadedConfig | None) -> dict[str, Any]:
    """``{"store", "sources": [{"id", "positions"[, "empty"]}], "sinks": [{"group", "topics":
    [{"topic", "offset", "end", "lag"}], "state"}]}``: those of ``config``'s pipelines (sinks
    never committed included, with no topics; each source with ``empty``, what its empty
    position means), or everything the store holds."""
    if config is not None:
        source_ids = [
            source_id(p.name, p.source.name) for p in config.pipelines if p.source is not None
        ]
        wanted_groups: set[str] | None = {
            sink_group(p.name, s.name) for p in config.pipelines for s in p.sinks
        }
    else:
        source_ids = await store.source_ids()
        wanted_groups = None
    sources: list[dict[str, Any]] = [
        {"id": i, "positions": await store.positions(i)} for i in source_ids
    ]
    if config is not None:  # what an empty position means, as each source declares it
        for entry, p in zip(sources, (p for p in config.pipelines if p.source), strict=True):
            assert p.source is not None
            entry["empty"] = getattr(p.source.spec.load(), "empty_position", None)
    groups = await store.groups()
    names = {g.group for g in groups}
    if wanted_groups is not None:
        groups = [g for g in groups if g.group in wanted_groups]
        groups += [await store.group(g) for g in sorted(wanted_groups - names)]
    sinks = []
    for g in groups:
        ends = await store.end_offsets(sorted(g.offsets))
        sinks.append(
            {
                "group": g.group,
                "topics": [
                    {"topic": t, "offset": o, "end": ends[t], "lag": max(0, ends[t] - o)}
                    for t, o in sorted(g.offsets.items())
                ],
                "state": g.state,
            }
        )
    return {"store": store.url, "sources": sources, "sinks": sinks}


@dataclass(slots=True)
class ResetPlan:
    """What a reset will do: ``new`` positions of source ``id`` (``None``: forget them) or
    offsets of sink group ``id`` (``None``: from the beginning); ``describe`` says it."""

    kind: Literal["source", "sink"]
    id: str
    new: Any
    describe: str


async def reset_plan(
    store: MeshStore, pipeline: LoadedPipeline, sink_name: str | None, target: str
) -> ResetPlan:
    """The reset of ``pipeline``'s source (or sink ``sink_name``) to ``target``:
    ``beginning``, ``end``, an offset (sinks) or a JSON position per partition (sources)."""
    if sink_name is None:
        if pipeline.source is None:
            raise ConfigError(f"pipeline {pipeline.name!r} has no source")
        ident = source_id(pipeline.name, pipeline.source.name)
        current = await store.positions(ident)
        new: Any
        if target == "beginning":
            new = None
        elif target == "end":
            new = await source_end(pipeline)
        else:
            try:
                new = json.loads(target)
            except json.JSONDecodeError:
                raise ConfigError(f"--to: not JSON: {target!r}") from None
        describe = f"source {ident}: positions {json.dumps(current)} -> " + (
            "(none: read from the beginning)" if new is None else json.dumps(new)
        )
        return ResetPlan("source", ident, new, describe)
    sinks = [s for s in pipeline.sinks if s.name == sink_name]
    if not sinks:
        names = ", ".join(s.name for s in pipeline.sinks)
        raise ConfigError(f"no sink {sink_name!r} in {pipeline.name} ({names})")
    group = sink_group(pipeline.name, sink_name)
    info = await store.group(group)
    topics = sorted(info.offsets)
    if not topics:
        raise ConfigError(f"sink {group} has no committed offsets")
    ends = await store.end_offsets(topics)
    new_offsets: dict[str, int] | None
    if target == "beginning":
        new_offsets = None
    elif target == "end":
        new_offsets = dict(ends)
    else:
        try:
            value = int(target)
        except ValueError:
            raise ConfigError(f"--to: beginning, end or an offset: {target!r}") from None
        new_offsets = {t: value for t in topics}
    describe = f"sink {group}: offsets {info.offsets} -> " + (
        "(none: from the beginning)" if new_offsets is None else str(new_offsets)
    )
    return ResetPlan("sink", group, new_offsets, describe)


async def source_end(pipeline: LoadedPipeline) -> dict[str, Any]:
    """Where the pipeline's source input ends now (the connector's ``end_positions``)."""
    from .api import ConnectorContext

    loaded = pipeline.source
    assert loaded is not None
    context = ConnectorContext(
        pipeline=pipeline.name,
        name=loaded.name,
        logger=logging.getLogger(f"meshconnect.connector.{pipeline.name}.{loaded.name}"),
        base_dir=pipeline.base_dir,
    )
    source = loaded.spec.load()(loaded.config, context)
    try:
        return dict(await source.end_positions())  # type: ignore[union-attr]
    except NotImplementedError:
        raise ConfigError(
            f"the {loaded.connector!r} source cannot tell where its input ends; "
            "give a JSON position per partition with --to"
        ) from None


async def apply_reset(store: MeshStore, plan: ResetPlan) -> None:
    """Apply ``plan`` (stop the worker that runs the pipeline first)."""
    if plan.kind == "source":
        await store.set_positions(plan.id, plan.new)
        return
    await store.reset_group(plan.id, plan.new)
    # The sink re-reads what it dead-lettered: let it dead-letter again what fails.
    await store.set_positions(dead_letter_id(plan.id), None)
