"""What the admin API does to a running worker: pipelines' states, pause, resume, stop,
restart, pipelines added, replaced and deleted while it runs (kept in the mesh store), offsets
read and reset while running.

A *connector* of the API is a pipeline (its source and sinks are its *tasks*, as in Kafka
Connect). Pipelines from the run's files can be paused, resumed, stopped, restarted and have
their offsets reset; only pipelines added over the API can be replaced or deleted (a file's
pipeline is changed by editing the file).

In cluster mode (:mod:`meshconnect.cluster`) the connectors are the cluster's pipelines this
worker can run; their statuses show this worker's tasks (the units it owns), the pipeline's
target state and who owns every unit; :meth:`Controller.cluster_view` is the whole cluster.
Pause, resume and stop set the pipeline's target state in the store, which every member
applies to the units it owns and takes later. A restart restarts the units this worker owns.
What cannot act on the whole cluster yet is refused (409) rather than done on this worker
alone: adding, replacing and deleting pipelines, and offset changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import tempfile
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.interpolate import register_secrets
from ..config.loader import LoadedConfig, load_pipeline_files, redacted_config
from ..errors import ConfigError, Problem, ValidationErrors
from ..offsets import (
    ADMIN_PIPELINES,
    apply_reset,
    offsets_report,
    reset_plan,
    sink_groups,
    sink_lags,
    source_id,
)
from ..secrets import literal_secrets

if TYPE_CHECKING:
    from ..config.loader import LoadedPipeline
    from ..plugins import Registry
    from ..runstate import ConnectorStatus
    from ..worker import Worker

__all__ = ["STORE_ID", "Controller", "NotFound", "Refused", "pipeline_state"]

log = logging.getLogger("meshconnect.admin")

#: The store "source id" under which pipelines added over the API are kept (one partition per
#: pipeline: ``{"config": <the pipeline as given>}``), so they survive a restart on any store.
STORE_ID = ADMIN_PIPELINES
#: Seconds of samples the throughput rates are computed over.
RATE_WINDOW = 5.0


class NotFound(LookupError):
    """No such pipeline (404)."""


class Refused(Exception):
    """The request cannot be done in this state (409)."""


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def pipeline_state(paused: bool, halted: bool, tasks: list[ConnectorStatus]) -> str:
    """One of RUNNING, DEGRADED, FAILED, PAUSED, STOPPED (docs/operations.md#states)."""
    if halted:
        return "STOPPED"
    failed = [t for t in tasks if t.state == "FAILED"]
    live = [t for t in tasks if t.state in ("RUNNING", "STARTING")]
    if failed:
        return "DEGRADED" if live else "FAILED"
    if paused:
        return "PAUSED"
    if tasks and not live:  # a bounded pipeline that finished, or the run is stopping
        return "STOPPED"
    return "RUNNING"


class Controller:
    """The admin API's handle on one worker (and its store and plugin registry)."""

    def __init__(self, worker: Worker, registry: Registry, base_dir: Path | None = None) -> None:
        self.worker = worker
        self.registry = registry
        self.base_dir = (base_dir or Path.cwd()).resolve()
        #: Names of the pipelines added over the API (the others come from the run's files).
        self.from_api: set[str] = set()
        #: (time, records in, records out) samples per pipeline, for the rates.
        self._samples: dict[str, deque[tuple[float, int, int]]] = {}
        #: One change at a time (two restarts of one pipeline at once would start it twice).
        self._lock = asyncio.Lock()

    # -- pipelines -----------------------------------------------------------------------------

    @property
    def pipelines(self) -> list[LoadedPipeline]:
        return self.worker.config.pipelines

    def get(self, name: str) -> LoadedPipeline:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise NotFound(f"no connector {name!r}")

    def origin(self, name: str) -> str:
        if self.cluster is not None:
            version = getattr(self.worker.member, "versions", {}).get(name)
            return f"cluster {self.cluster} version {version}"
        return "api" if name in self.from_api else f"file {self.get(name).file}"

    # -- cluster mode --------------------------------------------------------------------------

    @property
    def cluster(self) -> str | None:
        """The name of the cluster this worker is a member of, or None."""
        cluster = self.worker.config.cluster
        return None if cluster is None else cluster.name

    def _not_in_cluster(self, name: str, what: str) -> None:
        """Refused (409) in cluster mode: ``what`` cannot act on the whole cluster yet."""
        if self.cluster is not None:
            raise Refused(f"connector {name!r} runs on cluster {self.cluster!r}: {what}")

    def _local_keys(self) -> dict[str, str]:
        """Cluster mode: the status key of each unit this worker runs, by lease name."""
        member = self.worker.member
        return {} if member is None else dict(member.local_status_keys())

    async def unit_owners(self, pipeline: LoadedPipeline) -> list[dict[str, Any]]:
        """Cluster mode: who owns each of ``pipeline``'s units (lease, epoch) and, for those
        this worker runs, their task status."""
        from ..cluster import unit_owner

        leases = {lease.name: lease for lease in await self.worker.store.leases()}
        local = self._local_keys()
        now = time.time()
        out = []
        for name in _lease_names(pipeline, source_first=True):
            row = unit_owner(name, leases.get(name), now)
            row.update(self._local(name, local))
            out.append(row)
        return out

    def _local(self, lease: str, local: dict[str, str]) -> dict[str, Any]:
        status = self.worker.statuses.get(local[lease]) if lease in local else None
        return {"local": lease in local, "task": None if status is None else _task(status)}

    async def cluster_view(self) -> dict[str, Any]:
        """The whole cluster (as ``meshconnect status --cluster --json`` shows it) with this
        worker's identity and, for each unit it runs, its task status. NotFound outside
        cluster mode."""
        from ..cluster import cluster_report
        from ..mesh.ownership import describe_owner

        if self.cluster is None:
            raise NotFound("this worker is not a cluster member (run --cluster NAME)")
        report = await cluster_report(self.worker.store, self.cluster)
        member = self.worker.member
        owner = getattr(member, "owner", None)
        report["member"] = {
            "id": owner,
            "worker": None if owner is None else describe_owner(owner),
            "joined": bool(getattr(member, "joined", False)),
        }
        local = self._local_keys()
        runs = {p.name for p in self.pipelines}
        for pipeline in report["pipelines"]:
            pipeline["loaded"] = pipeline["name"] in runs
            for unit in pipeline["units"]:
                unit.update(self._local(unit["unit"], local))
        return report

    def load(self, name: str, raw: Any) -> LoadedPipeline:
        """Validate pipeline ``raw`` (one entry of ``pipelines:``, named ``name``); raise
        :class:`ValidationErrors` with the problems ``meshconnect validate`` would print."""
        if not isinstance(raw, dict):
            raise ValidationErrors([Problem(None, "the body must be a JSON object")])
        given = raw.get("name", name)
        if given != name:
            raise ValidationErrors(
                [Problem(None, f"name: {given!r} differs from the connector in the URL {name!r}")]
            )
        entry = {**raw, "name": name}
        # Before loading: a problem may quote a value (a malformed URL with its password).
        register_secrets(literal_secrets(entry))
        with tempfile.TemporaryDirectory(prefix="meshconnect-admin-") as tmp:
            path = Path(tmp) / "pipeline.yaml"
            path.write_text(json.dumps({"pipelines": [entry]}, indent=2), encoding="utf-8")
            try:
                config = load_pipeline_files([path], self.registry)
            except ValidationErrors as exc:
                raise ValidationErrors(
                    [_relocate(p, str(path), f"connectors/{name}/config") for p in exc.problems]
                ) from None
        register_secrets(config.secrets)
        (pipeline,) = config.pipelines
        pipeline.file = f"connectors/{name}/config"
        pipeline.base_dir = str(self.base_dir)  # relative paths: the worker's directory
        return pipeline

    async def load_persisted(self) -> list[str]:
        """Add the pipelines kept in the store (added over the API before) to the worker's
        config; call before ``worker.run()``. A kept pipeline that no longer validates (a
        plugin uninstalled) is logged and skipped, and stays kept."""
        kept = await self.worker.store.positions(STORE_ID)
        loaded = []
        for name, entry in sorted(kept.items()):
            if any(p.name == name for p in self.pipelines):
                log.error("pipeline %r kept by the admin API is also in a file: skipped", name)
                continue
            try:
                pipeline = self.load(name, entry.get("config"))
            except ValidationErrors as exc:
                log.error(
                    "pipeline %r kept by the admin API does not load: %s",
                    name,
                    "; ".join(str(p) for p in exc.problems),
                )
                continue
            self.pipelines.append(pipeline)
            self.from_api.add(name)
            loaded.append(name)
        return loaded

    async def put(self, name: str, raw: Any) -> bool:
        """Add or replace pipeline ``name`` (API pipelines only); True when it is new."""
        self._not_in_cluster(name, _CLUSTER_DEFINITIONS)
        existing = next((p for p in self.pipelines if p.name == name), None)
        if existing is not None and name not in self.from_api:
            raise Refused(
                f"connector {name!r} is defined in {existing.file}: edit that file to change it"
            )
        self._running()
        pipeline = self.load(name, raw)
        async with self._lock:
            existing = next((p for p in self.pipelines if p.name == name), None)
            if existing is not None and name not in self.from_api:  # a file's, meanwhile
                raise Refused(f"connector {name!r} is defined in {existing.file}")
            await self._take_leases(pipeline)
            await self._keep(name, raw)
            if existing is not None:
                await self.worker.halt(name)
                self.pipelines.remove(existing)
                self._drop_gone(existing, pipeline)
            self.pipelines.append(pipeline)
            self.from_api.add(name)
            self.worker.add_delivery_groups(pipeline)
            self.worker.spawn(pipeline)
        return existing is None

    async def delete(self, name: str) -> None:
        pipeline = self.get(name)
        self._not_in_cluster(name, _CLUSTER_DEFINITIONS)
        if name not in self.from_api:
            raise Refused(
                f"connector {name!r} is defined in {pipeline.file}: remove it from that file"
            )
        async with self._lock:
            await self._forget(pipeline)
            self.worker.metrics.forget(name)

    async def _forget(self, pipeline: LoadedPipeline) -> None:
        name = pipeline.name
        if pipeline not in self.pipelines:  # deleted by a call that came first
            raise NotFound(f"no connector {name!r}")
        await self.worker.halt(name)
        kept = await self.worker.store.positions(STORE_ID)
        kept.pop(name, None)
        await self.worker.store.set_positions(STORE_ID, kept or None)
        self.pipelines.remove(pipeline)
        self.from_api.discard(name)
        self._drop_units(_status_keys(pipeline))
        self.worker.pipeline_states.pop(name, None)
        self.worker.tasks.pop(name, None)
        self._samples.pop(name, None)
        ownership = self.worker.ownership
        if ownership is not None:  # its leases are no longer renewed: they expire
            gone = set(_lease_names(pipeline))
            ownership.names = [n for n in ownership.names if n not in gone]

    def _drop_gone(self, old: LoadedPipeline, new: LoadedPipeline) -> None:
        """What a replaced pipeline's connectors that the new version no longer has (a sink
        renamed or removed, fewer partitions) leave behind: their status, delivery groups and
        metric series (``/metrics`` showed a removed sink's series until the worker stopped)."""
        kept = set(_status_keys(new))
        self._drop_units(key for key in _status_keys(old) if key not in kept)
        names = [s.name for s in new.sinks]
        if new.source is not None:
            names.append(new.source.name)
        self.worker.metrics.forget(new.name, keep=names)

    def _drop_units(self, keys: Iterable[str]) -> None:
        """Forget the sources and sinks of ``keys`` (``_status_keys``): their status, and a
        sink's delivery group, which no longer holds a bounded run open."""
        for key in keys:
            self.worker.statuses.pop(key, None)
            if key.startswith("sink "):
                group = key.removeprefix("sink ")
                self.worker.deliveries.remove_group(group)
                self.worker.state.sink_gave_up(group)

    async def _keep(self, name: str, raw: dict[str, Any]) -> None:
        kept = await self.worker.store.positions(STORE_ID)
        kept[name] = {"config": {k: v for k, v in raw.items() if k != "name"}}
        await self.worker.store.set_positions(STORE_ID, kept)

    async def _take_leases(self, pipeline: LoadedPipeline) -> None:
        ownership = self.worker.ownership
        if ownership is None:
            return
        from ..mesh.ownership import OwnershipError

        names = _lease_names(pipeline)
        before = list(ownership.names)
        ownership.names = sorted(set(before) | set(names))
        try:
            await ownership.acquire()
        except OwnershipError as exc:
            ownership.names = before
            raise Refused(str(exc)) from None

    def _running(self) -> None:
        if self.worker.stopping:
            raise Refused("the worker is stopping")
        if self.cluster is not None:
            if not getattr(self.worker.member, "joined", False):
                raise Refused(f"the worker is joining cluster {self.cluster!r}; retry in a moment")
        elif self.worker.ownership is None:
            raise Refused("the worker is starting; retry in a moment")

    # -- control -------------------------------------------------------------------------------

    async def _set_target(self, name: str, state: str) -> None:
        """Cluster mode: set pipeline ``name``'s target state for every member."""
        from ..cluster import read_target_states, target_state

        self._running()
        member = self.worker.member
        stored = await read_target_states(self.worker.store, member.name)
        if state == "PAUSED" and target_state(stored, name) == "STOPPED":
            raise Refused(
                f"connector {name!r} is stopped on cluster {self.cluster!r}: resume it first"
            )
        async with self._lock:
            await member.set_target(name, state)

    async def pause(self, name: str) -> None:
        self.get(name)
        if self.cluster is not None:
            await self._set_target(name, "PAUSED")
            return
        view = self.worker.pipeline_states.get(name)
        if view is None or view.halted:
            raise Refused(f"connector {name!r} is stopped: resume it first")
        view.pause()

    async def resume(self, name: str) -> None:
        pipeline = self.get(name)
        if self.cluster is not None:
            await self._set_target(name, "STARTED")
            return
        view = self.worker.pipeline_states.get(name)
        if view is not None and view.halted:
            self._running()
            async with self._lock:
                view = self.worker.pipeline_states.get(name)
                if view is not None and view.halted:
                    self._fresh(pipeline)
                    self.worker.spawn(pipeline)
        elif view is not None:
            view.resume()

    async def stop(self, name: str) -> None:
        self.get(name)
        if self.cluster is not None:
            await self._set_target(name, "STOPPED")
            return
        self._running()
        async with self._lock:
            await self.worker.halt(name)

    async def restart(self, name: str) -> None:
        """Stop the pipeline (drain, flush, commit) and start it again, unpaused."""
        pipeline = self.get(name)
        self._running()
        if self.cluster is not None:
            await self._restart_units(pipeline)
            return
        async with self._lock:
            await self.worker.halt(name)
            self._fresh(pipeline)
            self.worker.spawn(pipeline)

    async def _restart_units(self, pipeline: LoadedPipeline) -> None:
        """Cluster mode: restart the units of ``pipeline`` this worker owns; Refused when it
        owns none (the owners' admin APIs restart theirs)."""
        async with self._lock:
            restarted = await self.worker.member.restart_units(pipeline.name)
        if restarted:
            return
        if self.worker.member.target(pipeline.name) == "STOPPED":
            raise Refused(
                f"connector {pipeline.name!r} is stopped on cluster {self.cluster!r}: no member "
                "runs its units; resume it"
            )
        owners = sorted(
            {
                f"{u['unit']} by {u['worker']}"
                for u in await self.unit_owners(pipeline)
                if u["worker"]
            }
        )
        raise Refused(
            f"connector {pipeline.name!r}: this worker runs none of its units on cluster "
            f"{self.cluster!r}; restart it on the admin API of the worker that owns them"
            + (f" ({'; '.join(owners)})" if owners else " (none has an owner now)")
        )

    def _fresh(self, pipeline: LoadedPipeline) -> None:
        for key in _status_keys(pipeline):
            status = self.worker.statuses.get(key)
            if status is not None:
                status.set("STARTING")

    # -- status --------------------------------------------------------------------------------

    def tasks(self, pipeline: LoadedPipeline) -> list[ConnectorStatus]:
        """The statuses of ``pipeline``'s tasks on this worker (in cluster mode: of the units
        it runs now, not those it gave back or that moved to another member)."""
        keys = _status_keys(pipeline)
        if self.cluster is not None:
            local = set(self._local_keys().values())
            keys = [k for k in keys if k in local]
        return [self.worker.statuses[key] for key in keys if key in self.worker.statuses]

    def sample(self) -> None:
        """Record every pipeline's counts (the admin server calls it every second)."""
        now = time.monotonic()
        for p in self.pipelines:
            records_in, records_out = self._counts(p)
            samples = self._samples.setdefault(p.name, deque(maxlen=64))
            samples.append((now, records_in, records_out))
            while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW:
                samples.popleft()

    def _counts(self, pipeline: LoadedPipeline) -> tuple[int, int]:
        tasks = self.tasks(pipeline)
        sources = [t for t in tasks if t.kind == "source"]
        sinks = [t for t in tasks if t.kind == "sink"]
        records_in = sum(t.records_in for t in sources) or sum(t.records_in for t in sinks)
        return records_in, sum(t.records_out for t in sinks)

    def rates(self, name: str) -> tuple[float, float]:
        samples = self._samples.get(name)
        if not samples or len(samples) < 2:
            return 0.0, 0.0
        (t0, in0, out0), (t1, in1, out1) = samples[0], samples[-1]
        span = t1 - t0
        if span <= 0:
            return 0.0, 0.0
        return max(0.0, (in1 - in0) / span), max(0.0, (out1 - out0) / span)

    async def status(self, name: str) -> dict[str, Any]:
        pipeline = self.get(name)
        view = self.worker.pipeline_states.get(name)
        tasks = self.tasks(pipeline)
        state = pipeline_state(
            view is not None and view.paused, view is not None and view.halted, tasks
        )
        failed = [t for t in tasks if t.failed_at is not None]
        last = max(failed, key=lambda t: t.failed_at or 0.0) if failed else None
        restarting = [t for t in tasks if t.next_restart is not None and t.state == "FAILED"]
        records_in, records_out = self._counts(pipeline)
        rate_in, rate_out = self.rates(name)
        cluster = None
        if self.cluster is not None:
            from ..cluster import read_target_states, target_state

            units = await self.unit_owners(pipeline)
            # From the store: set on another member a moment ago, this one shows it already.
            target = target_state(await read_target_states(self.worker.store, self.cluster), name)
            state = pipeline_state(target == "PAUSED", target == "STOPPED", tasks)
            if not tasks and target == "STARTED":  # this worker runs none: whether the cluster does
                state = "RUNNING" if any(u["owner"] for u in units) else "STOPPED"
            version = getattr(self.worker.member, "versions", {}).get(name)
            cluster = {
                "name": self.cluster,
                "version": version,
                "target_state": target,
                "units": units,
            }
        out = {
            "name": name,
            "state": state,
            "origin": self.origin(name),
            "error": None if last is None else _error(last),
            "restarts": sum(t.restarts for t in tasks),
            "next_restart_at": iso(min(t.next_restart or 0.0 for t in restarting))
            if restarting
            else None,
            "records_in": records_in,
            "records_out": records_out,
            "rate_in": round(rate_in, 3),
            "rate_out": round(rate_out, 3),
            "lag": await self.lag(pipeline),
            "tasks": [_task(t) for t in tasks],
        }
        if cluster is not None:
            out["cluster"] = cluster
        return out

    async def lag(self, pipeline: LoadedPipeline) -> int:
        """Records stored but not yet committed by the pipeline's sinks, summed."""
        return sum((await self.group_lags(pipeline)).values())

    async def group_lags(self, pipeline: LoadedPipeline) -> dict[tuple[str, str], int]:
        """``{(topic, group): records}`` for each sink of ``pipeline`` and each topic it reads,
        committed to or not: a sink that has not committed yet lags by the whole topic (as
        ``meshconnect_consumer_lag_records`` says)."""
        return await sink_lags(self.worker.store, pipeline)

    def info(self, name: str) -> dict[str, Any]:
        pipeline = self.get(name)
        config = LoadedConfig([], None, self.worker.config.retention, [pipeline])
        redacted = redacted_config(config)["pipelines"][0]
        tasks = []
        if pipeline.source is not None:
            tasks.append(
                {
                    "id": source_id(name, pipeline.source.name),
                    "kind": "source",
                    "connector": pipeline.source.connector,
                }
            )
        tasks += [
            {"id": group, "kind": "sink", "connector": s.connector}
            for s in pipeline.sinks
            for group in sink_groups(pipeline, s.name)
        ]
        kinds = {t["kind"] for t in tasks}
        return {
            "name": name,
            "type": kinds.pop() if len(kinds) == 1 else "pipeline",
            "origin": self.origin(name),
            "config": redacted,
            "tasks": tasks,
        }

    # -- offsets -------------------------------------------------------------------------------

    async def offsets(self, name: str) -> dict[str, Any]:
        pipeline = self.get(name)
        config = LoadedConfig([], None, self.worker.config.retention, [pipeline])
        report = await offsets_report(self.worker.store, config)
        return {"name": name, "sources": report["sources"], "sinks": report["sinks"]}

    async def reset(
        self, name: str, targets: list[tuple[str | None, str]], dry_run: bool
    ) -> dict[str, Any]:
        """Reset the source (``None``) or sinks named in ``targets`` to their target while
        the pipeline runs: it is stopped (drained, flushed, committed), reset and started
        again (paused if it was). ``dry_run``: only say what would happen."""
        pipeline = self.get(name)
        try:
            plans = [
                await reset_plan(self.worker.store, pipeline, sink, target)
                for sink, target in targets
            ]
        except ConfigError as exc:  # told as the CLI's --to; here it is the body's value
            raise ConfigError(str(exc).removeprefix("--to: ")) from None
        out = {
            "name": name,
            "dry_run": dry_run,
            "plans": [
                {"kind": p.kind, "id": p.id, "new": p.new, "describe": p.describe} for p in plans
            ],
        }
        if dry_run:
            return out
        self._not_in_cluster(name, _CLUSTER_OFFSETS)
        self._running()
        async with self._lock:
            view = self.worker.pipeline_states.get(name)
            was_paused = view is not None and view.paused
            was_halted = view is not None and view.halted
            await self.worker.halt(name)
            for plan in plans:
                await apply_reset(self.worker.store, plan)
            if not was_halted:
                self._fresh(pipeline)
                self.worker.spawn(pipeline)
                if was_paused:
                    self.worker.pipeline_states[name].pause()
        return out

    def reset_targets(self, name: str, body: Any) -> list[tuple[str | None, str]]:
        """``{"source": TO, "sinks": {NAME: TO}}`` (TO: beginning, end, an offset, a
        position object) -> reset_plan's (sink or None, target) pairs."""
        pipeline = self.get(name)
        if not isinstance(body, dict) or not body or set(body) - {"source", "sinks"}:
            raise ConfigError('expected {"source": TO, "sinks": {"NAME": TO}} (one or both)')
        targets: list[tuple[str | None, str]] = []
        if "source" in body:
            if pipeline.source is None:
                raise ConfigError(f"connector {name!r} has no source")
            targets.append((None, _target(body["source"])))
        sinks = body.get("sinks", {})
        if not isinstance(sinks, dict):
            raise ConfigError('"sinks": an object {"NAME": TO}')
        for sink, to in sinks.items():
            targets.append((sink, _target(to)))
        return targets

    def everything(self, name: str) -> list[tuple[str | None, str]]:
        pipeline = self.get(name)
        out: list[tuple[str | None, str]] = []
        if pipeline.source is not None:
            out.append((None, "beginning"))
        out += [(s.name, "beginning") for s in pipeline.sinks]
        return out


def _target(value: Any) -> str:
    if isinstance(value, bool):
        raise ConfigError(
            f"not a reset target: {value!r} (beginning, end, an offset, or a position object)"
        )
    if isinstance(value, int) or value in ("beginning", "end"):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    raise ConfigError(
        f"not a reset target: {value!r} (beginning, end, an offset, or a position object)"
    )


def _lease_names(pipeline: LoadedPipeline, source_first: bool = False) -> list[str]:
    """The store leases running ``pipeline`` takes (:mod:`meshconnect.mesh.ownership`)."""
    names = [f"group {g}" for s in pipeline.sinks for g in sink_groups(pipeline, s.name)]
    if pipeline.source is not None:
        source = f"source {source_id(pipeline.name, pipeline.source.name)}"
        names = [source, *names] if source_first else [*names, source]
    return names


#: Why an operation is refused in cluster mode (after "connector 'p' runs on cluster 'c': ").
_CLUSTER_DEFINITIONS = (
    "a cluster's pipelines are published by its members' files (docs/scaleout.md); the admin "
    "API cannot add, replace or delete them yet"
)
_CLUSTER_OFFSETS = (
    "its offsets cannot be moved while members run its units (a unit running on another member "
    "would go on from where it is); not available in cluster mode yet (?dry_run=true shows "
    "the plan)"
)


def _status_keys(pipeline: LoadedPipeline) -> list[str]:
    keys = []
    if pipeline.source is not None:
        keys.append(f"source {source_id(pipeline.name, pipeline.source.name)}")
    keys += [f"sink {g}" for s in pipeline.sinks for g in sink_groups(pipeline, s.name)]
    return keys


def _error(t: ConnectorStatus) -> dict[str, Any]:
    return {
        "task": t.id,
        "kind": t.kind,
        "message": t.last_error,
        "at": iso(t.failed_at),
        "topic": t.failed_topic,
        "offset": t.failed_offset,
    }


def _task(t: ConnectorStatus) -> dict[str, Any]:
    return {
        "id": t.id,
        "kind": t.kind,
        "connector": t.connector,
        "state": t.state,
        "error": _error(t) if t.failed_at is not None else None,
        "restarts": t.restarts,
        "next_restart_at": iso(t.next_restart) if t.state == "FAILED" else None,
        "backoff_seconds": t.restart_delay if t.state == "FAILED" else None,
        "records_in": t.records_in,
        "records_out": t.records_out,
        "failed": t.failed,
        "dead_lettered": t.dead_lettered,
    }


def _relocate(problem: Problem, path: str, where: str) -> Problem:
    """A problem in the temporary file, told against ``connectors/NAME/config``: the line and
    column are those of a file the caller never saw (kept in ``location`` for the CLI's
    format, left out by the API), so the message names the field by its path in the body."""
    message = problem.message.replace(path, where)
    for prefix in ("pipelines[0].", "pipelines[0]: "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
            break
    if problem.location is None or problem.location.file != path:
        return Problem(problem.location, message)
    from ..errors import Location

    return Problem(Location(where, problem.location.line, problem.location.column), message)
