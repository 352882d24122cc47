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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .config.topics import PARTITION_MARK, partition_of
from .errors import ConfigError
from .mesh.routing import Subscription, resolve_topics, sink_patterns, subscription

if TYPE_CHECKING:
    from .config.loader import LoadedConfig, LoadedPipeline
    from .mesh.store import MeshStore, TopicInfo

__all__ = ["ResetPlan", "apply_reset", "offsets_report", "reset_plan", "source_end"]


def source_id(pipeline: str, name: str) -> str:
    """The id under which a source's positions are stored: ``<pipeline>/<source name>``."""
    return f"{pipeline}/{name}"


def sink_group(pipeline: str, name: str, slot: int | None = None) -> str:
    """The consumer group of a sink: ``<pipeline>/<sink name>``, and of consumer ``slot`` of
    a sink of a pipeline with ``partitions:`` (docs/scaleout.md#partitions):
    ``<pipeline>/<sink name>#<slot>``."""
    return f"{pipeline}/{name}" if slot is None else f"{pipeline}/{name}#{slot}"


def sink_groups(pipeline: LoadedPipeline, name: str) -> list[str]:
    """Every consumer group of ``pipeline``'s sink ``name`` (one per partition)."""
    return [sink_group(pipeline.name, name, slot) for slot in pipeline.slots()]


def partitions_id(pipeline: str) -> str:
    """The id of the positions that record a partitioned pipeline's count."""
    return f"partitions/{pipeline}"


async def check_partitions(store: MeshStore, pipeline: LoadedPipeline) -> None:
    """Refuse to run ``pipeline``'s source or sinks with another ``partitions:`` count than
    the one it ran with: its source would store a key's new records in another partition
    than its earlier ones (read by another consumer, in no order with them), and its sinks'
    consumer groups would deliver again what the old ones delivered. A partitioned pipeline's
    count is recorded in the store (:func:`partitions_id`) the first time it runs; a store
    from before that record is checked by the sinks' consumer groups
    (:func:`check_sink_groups`). Raises :class:`ConfigError`."""
    ident = partitions_id(pipeline.name)
    n = pipeline.partitions
    stored = (await store.positions(ident)).get("count")
    if stored is None:
        for sink in pipeline.sinks:
            await check_sink_groups(store, pipeline, sink.name)
    elif stored.get("n") != n:
        raise ConfigError(
            f"pipeline {pipeline.name!r} ran with partitions: {stored.get('n')} and now has "
            f"partitions: {n}: its source would store a key's new records in another "
            "partition than its earlier ones, and its sinks would deliver again what was "
            "delivered. Keep the count, or run the new count as a pipeline of another name "
            "(writing another topic)"
        )
    topic = pipeline.topic.literal if pipeline.source is not None else None
    if topic is not None:  # every pipeline writing this topic splits it alike
        written = (await store.positions(partitions_id(f"topic:{topic}"))).get("count")
        if written is not None and written.get("n") != n:
            raise ConfigError(
                f"pipeline {pipeline.name!r} writes topic {topic!r} with partitions: {n}, "
                f"but it was written with partitions: {written.get('n')}: one key's records "
                "would be in two partitions, read by two consumers in no order. Give it the "
                "same count, or write another topic"
            )
    if n > 1:  # recorded once every check passed
        if stored is None:
            await store.set_positions(ident, {"count": {"n": n}})
        if topic is not None:
            await store.set_positions(partitions_id(f"topic:{topic}"), {"count": {"n": n}})


async def check_sink_groups(store: MeshStore, pipeline: LoadedPipeline, name: str) -> None:
    """Refuse to start sink ``name`` of ``pipeline`` when the store holds offsets it
    committed with another ``partitions:`` count: its consumer groups are one per partition
    (:func:`sink_groups`), and the new ones would deliver again what the old ones had
    delivered (and lose the sink's committed state). Raises :class:`ConfigError`."""
    base = sink_group(pipeline.name, name)
    mine = set(sink_groups(pipeline, name))
    other = sorted(
        g.group
        for g in await store.groups()
        if g.group not in mine
        and g.offsets
        and (g.group == base or _slot_of(g.group, base) is not None)
    )
    if other:
        slots = [_slot_of(g, base) for g in other]
        before_text = (
            "1 (no partitions)"
            if slots == [None]
            else f"at least {max(n for n in slots if n is not None) + 1}"
        )
        raise ConfigError(
            f"sink {base}: the store holds offsets of its consumer group(s) {', '.join(other)}, "
            f"committed with partitions: {before_text}; this pipeline has partitions: "
            f"{pipeline.partitions}. Changing the count would deliver again what was "
            "delivered: keep the count, or give the sink another name (its consumer groups "
            "then start from the beginning of the topics)"
        )


def _slot_of(group: str, base: str) -> int | None:
    """``k`` when ``group`` is ``base#k`` (a consumer of a partitioned sink), else None."""
    if PARTITION_MARK not in group:
        return None
    head, slot = partition_of(group)
    return slot if head == base else None


async def sink_lags(store: MeshStore, pipeline: LoadedPipeline) -> dict[tuple[str, str], int]:
    """``{(topic, group): records}`` for each consumer group of ``pipeline``'s sinks and each
    topic it reads, committed to or not: a group that has not committed yet lags by the
    whole topic (``meshconnect_consumer_lag_records``)."""
    out: dict[tuple[str, str], int] = {}
    for sink in pipeline.sinks:
        for slot in pipeline.slots():
            group = sink_group(pipeline.name, sink.name, slot)
            info = await store.group(group)
            topics = set(await resolve_topics(store, subscription(pipeline, sink, slot)))
            topics.update(info.offsets)
            ends = await store.end_offsets(sorted(topics))
            for topic, end in ends.items():
                out[(topic, group)] = max(0, end - info.offsets.get(topic, 0))
    return out


def dead_letter_id(group: str) -> str:
    """The id of the positions marking what sink ``group`` has dead-lettered, per topic."""
    return f"deadletter/{group}"


#: The "source" whose positions are the pipelines added over the admin API, as given
#: (:mod:`meshconnect.admin.control`).
ADMIN_PIPELINES = "admin/pipelines"


def _kept_config(ident: str) -> bool:
    """Whether ``ident`` keeps configuration in the store rather than a source's positions:
    a cluster's pipeline definitions (``cluster:NAME``, :mod:`meshconnect.cluster`), the
    pipelines added over the admin API, the partition counts of pipelines. Not shown: the
    pipelines, as written, may hold secrets, and they are not positions."""
    return ident == ADMIN_PIPELINES or ident.startswith(("cluster:", "partitions/"))


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
            g for p in config.pipelines for s in p.sinks for g in sink_groups(p, s.name)
        }
    else:
        source_ids = [i for i in await store.source_ids() if not _kept_config(i)]
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
    """What a reset will do: ``new`` positions of source ``id`` (``None``: forget them), or
    for sink ``id`` (``<pipeline>/<sink>``) its new offsets ``{topic: offset}``, which
    ``groups`` splits by consumer group (one, or one per partition:
    docs/scaleout.md#partitions); ``describe`` says it."""

    kind: Literal["source", "sink"]
    id: str
    new: Any
    describe: str
    groups: dict[str, dict[str, int]] = field(default_factory=dict)


async def reset_plan(
    store: MeshStore, pipeline: LoadedPipeline, sink_name: str | None, target: str
) -> ResetPlan:
    """The reset of ``pipeline``'s source (or sink ``sink_name``) to ``target``:
    ``beginning``, ``end``, an offset (sinks) or a JSON position per partition (sources).
    ``describe`` says what moves and what happens to the output (a sink's output is kept: it
    resumes from its committed state). Raises :class:`ConfigError` for a bad target."""
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
            if not isinstance(new, dict) or not all(isinstance(v, dict) for v in new.values()):
                raise ConfigError(
                    '--to: a JSON object {"<partition>": {<position>}, ...}: ' + target
                )
            source = _fresh_source(pipeline)
            problems = [
                f"{key}: {problem}"
                for key, position in new.items()
                if (problem := source.position_problem(key, position))
            ]
            if problems:
                raise ConfigError(
                    f"--to: not a position of the {pipeline.source.connector!r} source: "
                    + "; ".join(problems)
                )
        describe = [
            f"source {ident}: positions {json.dumps(current)} -> "
            + ("(none: read from the beginning)" if new is None else json.dumps(new)),
            "output: records before the new positions are not read again; records after "
            "them are read (again) and appended to the pipeline's topics, which then hold "
            "a second copy of any record read before. What sinks wrote stays as it is.",
        ]
        return ResetPlan("source", ident, new, "\n".join(describe))
    sinks = [s for s in pipeline.sinks if s.name == sink_name]
    if not sinks:
        names = ", ".join(s.name for s in pipeline.sinks)
        raise ConfigError(f"no sink {sink_name!r} in {pipeline.name} ({names})")
    stored = {t.name: t for t in await store.topics()}
    news: dict[str, Any] = {}
    lines: list[str] = []
    for slot in pipeline.slots():
        group = sink_group(pipeline.name, sink_name, slot)
        offsets = await _reset_group_plan(
            store, group, subscription(pipeline, sinks[0], slot), stored, target, lines
        )
        if offsets is not None:
            news[group] = offsets
    base = sink_group(pipeline.name, sink_name)
    if not news:
        patterns = ", ".join(sink_patterns(pipeline, sinks[0]))
        raise ConfigError(f"sink {base}: no stored topic matches {patterns}; nothing to reset")
    merged = {t: o for offsets in news.values() for t, o in offsets.items()}
    return ResetPlan("sink", base, merged, "\n".join(lines), news)


async def _reset_group_plan(
    store: MeshStore,
    group: str,
    wanted: Subscription,
    stored: dict[str, TopicInfo],
    target: str,
    lines: list[str],
) -> dict[str, int] | None:
    """The new offsets of consumer group ``group`` for a reset to ``target`` (``None``: it
    reads no stored topic); adds the lines that describe it to ``lines``."""
    info = await store.group(group)
    topics = sorted(set(info.offsets) | set(await resolve_topics(store, wanted)))
    topics = [t for t in topics if t in stored or t in info.offsets]
    if not topics:
        return None
    starts = {t: stored[t].start if t in stored else 0 for t in topics}
    ends = {t: stored[t].end if t in stored else 0 for t in topics}
    if target == "beginning":
        new_offsets = {t: starts[t] for t in topics}
    elif target == "end":
        new_offsets = dict(ends)
    else:
        if target.startswith("-") and target[1:].isascii() and target[1:].isdigit():
            raise ConfigError(f"--to: an offset is 0 or more: {target!r}")
        # Digits only: int() also took " 5", "+5", "1_000" and other scripts' digits ("٣").
        if not (target.isascii() and target.isdigit()):
            raise ConfigError(f"--to: beginning, end or an offset: {target!r}")
        value = int(target)
        past = [t for t in topics if value > ends[t]]
        if past:
            # The records stored there later would be skipped without a word.
            raise ConfigError(
                f"--to: offset {value} is past the end of "
                + ", ".join(f"{t} ({ends[t]})" for t in past)
                + ": records stored up to it later would never be delivered; use end"
            )
        new_offsets = {t: value for t in topics}
    old = {t: info.offsets.get(t, 0) for t in topics}
    lines += [
        f"sink {group}: offsets {json.dumps(info.offsets, sort_keys=True)} -> "
        f"{json.dumps(new_offsets, sort_keys=True)}"
    ]
    if info.state is None:
        lines.append(
            "output: this sink has no committed state; it starts its output as on a first run"
        )
    else:
        lines.append(
            f"output: kept. The sink resumes from its committed state "
            f"{json.dumps(info.state, sort_keys=True)} (a file sink appends after it); "
            "nothing it wrote is removed."
        )
    for t in topics:
        first, last = min(old[t], new_offsets[t]), max(old[t], new_offsets[t])
        first = max(first, starts[t])
        last = min(last, ends[t])
        count = max(0, last - first)
        if new_offsets[t] < old[t] and count:
            lines.append(
                f"  {t}: {count} record(s) at offsets {first}..{last - 1} are delivered "
                "again, after the existing output"
            )
        elif new_offsets[t] > old[t] and count:
            lines.append(
                f"  {t}: {count} record(s) at offsets {first}..{last - 1} are skipped "
                "(never delivered to this sink)"
            )
        else:
            lines.append(f"  {t}: no record is delivered again or skipped")
    return new_offsets


def _fresh_source(pipeline: LoadedPipeline) -> Any:
    """A fresh instance of the pipeline's source (not started)."""
    from .api import ConnectorContext

    loaded = pipeline.source
    assert loaded is not None
    context = ConnectorContext(
        pipeline=pipeline.name,
        name=loaded.name,
        logger=logging.getLogger(f"meshconnect.connector.{pipeline.name}.{loaded.name}"),
        base_dir=pipeline.base_dir,
    )
    return loaded.spec.load()(loaded.config, context)


async def source_end(pipeline: LoadedPipeline) -> dict[str, Any]:
    """Where the pipeline's source input ends now (the connector's ``end_positions``)."""
    loaded = pipeline.source
    assert loaded is not None
    source = _fresh_source(pipeline)
    try:
        return dict(await source.end_positions())
    except NotImplementedError:
        raise ConfigError(
            f"the {loaded.connector!r} source cannot tell where its input ends; give its "
            "position per partition instead: `offsets reset --to "
            """'{"PARTITION": {...}}'`, over the admin API {"source": {"PARTITION": {...}}} """
            "(`offsets show` lists the partitions and what their positions hold)"
        ) from None


async def apply_reset(store: MeshStore, plan: ResetPlan) -> None:
    """Apply ``plan`` (stop the worker that runs the pipeline first)."""
    if plan.kind == "source":
        await store.set_positions(plan.id, plan.new)
        return
    for group, offsets in plan.groups.items():
        await store.reset_group(group, offsets)
        # The sink re-reads what it dead-lettered: let it dead-letter again what fails.
        await store.set_positions(dead_letter_id(group), None)
