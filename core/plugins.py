"""Plugin discovery and the registry of connectors, transforms, stores and functions.

Plugins are found through the ``meshconnect`` entry-point group (built-ins included) and, when
``plugins.toml`` lists them, as local modules by path. Each entry point is loaded in its own
``try``: a broken package is recorded with its reason and skipped, never crashing the worker,
unless ``strict`` is set (``--strict`` / ``MESHCONNECT_STRICT_PLUGINS=1``).

``plugins.toml`` is the worker's plugin policy::

    [plugins]
    load = "all"            # "all" installed plugins, or "listed": only those in `enabled`
    enabled = ["file"]      # entry-point names loaded when load = "listed"
    disabled = ["slack"]    # entry-point names, or connector/transform names, never loaded
    paths = ["./my_plugin.py"]          # local plugin modules, relative to plugins.toml
    installed = ["meshconnect-foo==1.2"]  # recorded by `meshconnect plugins install`

    [plugins.pins]
    meshconnect-foo = ">=1.2,<2"        # distribution version requirements
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from . import hookspecs
from .api import ConnectorSpec, TransformSpec
from .errors import PluginError
from .mesh.store import StoreSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginEntry",
    "PluginPolicy",
    "Registry",
    "load_registry",
]

log = logging.getLogger("meshconnect.plugins")

ENTRY_POINT_GROUP = "meshconnect"
Status = Literal["loaded", "disabled", "missing-extra", "failed"]


@dataclass(slots=True)
class PluginEntry:
    """One connector, transform, store or plugin module, with its load status."""

    name: str
    kind: Literal["source", "sink", "transform", "store", "plugin"]
    plugin: str
    distribution: str | None
    version: str | None
    status: Status
    reason: str = ""
    spec: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(slots=True)
class PluginPolicy:
    load: Literal["all", "listed"] = "all"
    enabled: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    pins: dict[str, str] = field(default_factory=dict)
    installed: list[str] = field(default_factory=list)
    base_dir: Path = field(default_factory=Path.cwd)
    file: Path | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str] | None = None) -> PluginPolicy:
        """Read ``plugins.toml`` (``path``, ``$MESHCONNECT_PLUGINS`` or ``./plugins.toml``)."""
        candidate = Path(path or os.environ.get("MESHCONNECT_PLUGINS") or "plugins.toml")
        if not candidate.exists():
            if path is not None:
                raise PluginError(f"{candidate}: plugin policy file not found")
            return cls()
        import tomllib  # only when there is a policy file to read

        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PluginError(f"{candidate}: {exc}") from None
        section = data.get("plugins", {})
        known = {"load", "enabled", "disabled", "paths", "pins", "installed"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise PluginError(
                f"{candidate}: unknown key(s) in [plugins]: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        load = section.get("load", "all")
        if load not in ("all", "listed"):
            raise PluginError(f'{candidate}: plugins.load must be "all" or "listed", not {load!r}')
        return cls(
            load=load,
            enabled=list(section.get("enabled", [])),
            disabled=list(section.get("disabled", [])),
            paths=list(section.get("paths", [])),
            pins=dict(section.get("pins", {})),
            installed=list(section.get("installed", [])),
            base_dir=candidate.resolve().parent,
            file=candidate,
        )


class Registry:
    """Everything the loaded plugins provide, plus what failed to load and why."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        #: Every entry listed by ``plugins list``, in discovery order.
        self.entries: list[PluginEntry] = []
        self.connectors: dict[tuple[str, str], PluginEntry] = {}
        self.transforms: dict[str, PluginEntry] = {}
        self.stores: dict[str, PluginEntry] = {}
        self.functions: dict[str, Callable[..., Any]] = {}
        self._function_owner: dict[str, str] = {}

    # -- lookup --------------------------------------------------------------------------------

    def connector(self, name: str, kind: Literal["source", "sink"]) -> ConnectorSpec:
        """The spec of a loaded connector; PluginError naming the cause otherwise."""
        entry = self.connectors.get((name, kind))
        if entry is None:
            raise PluginError(self.unknown_message(name, kind))
        if entry.status != "loaded":
            raise PluginError(f"{kind} connector {name!r} is {entry.status}: {entry.reason}")
        spec: ConnectorSpec = entry.spec
        return spec

    def transform(self, name: str) -> TransformSpec:
        entry = self.transforms.get(name)
        if entry is None:
            raise PluginError(self.unknown_message(name, "transform"))
        if entry.status != "loaded":
            raise PluginError(f"transform {name!r} is {entry.status}: {entry.reason}")
        spec: TransformSpec = entry.spec
        return spec

    def store(self, scheme: str) -> StoreSpec:
        entry = self.stores.get(scheme)
        if entry is None or entry.status != "loaded":
            known = ", ".join(sorted(self.stores)) or "none"
            raise PluginError(f"no mesh store backend for {scheme!r}:// (installed: {known})")
        spec: StoreSpec = entry.spec
        return spec

    def names(self, kind: str) -> list[str]:
        """Names of the installed (any status) connectors of ``kind`` or transforms."""
        if kind == "transform":
            return sorted(self.transforms)
        return sorted(name for (name, k) in self.connectors if k == kind)

    def unknown_message(self, name: str, kind: str) -> str:
        import difflib

        names = self.names(kind)
        what = "transform" if kind == "transform" else f"{kind} connector"
        hint = difflib.get_close_matches(name, names, n=1)
        maybe = f"did you mean {hint[0]!r}? " if hint else ""
        message = f"unknown {what} {name!r} ({maybe}installed: {', '.join(names) or 'none'})"
        # A plugin that did not load provides nothing: it may be the one meant.
        down = [e for e in self.entries if e.kind == "plugin" and e.status != "loaded"]
        if down:
            message += "; not loaded: " + "; ".join(
                f"plugin {e.plugin!r} ({e.status}: {e.reason})" for e in down[:3]
            )
            if len(down) > 3:
                message += f"; and {len(down) - 3} more (meshconnect plugins list)"
        return message

    # -- registration --------------------------------------------------------------------------

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        disabled: Iterable[str] = (),
    ) -> None:
        """Register one plugin module/object and collect what its hooks provide.

        A hook that raises marks this plugin failed; nothing it provided is kept.
        """
        blocked = set(disabled)
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # a hook of the wrong signature, a module registered twice
            self._failed(name, distribution, version, self._register_problem(plugin, exc))
            return
        caller = self.pm.subset_hook_caller  # call only this plugin's implementations
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        try:
            _check_hook_names(plugin)
            connectors = _flatten(
                "meshconnect_connectors", caller("meshconnect_connectors", others)()
            )
            transforms = _flatten(
                "meshconnect_transforms", caller("meshconnect_transforms", others)()
            )
            stores = _flatten("meshconnect_stores", caller("meshconnect_stores", others)())
            functions: dict[str, Callable[..., Any]] = {}
            for mapping in caller("meshconnect_functions", others)():
                functions.update(self._functions(mapping, functions))
            if not (connectors or transforms or stores or functions):
                raise PluginError(_nothing_provided(plugin))
        except Exception as exc:
            self.pm.unregister(plugin)
            self._failed(name, distribution, version, f"{type(exc).__name__}: {exc}")
            return

        def entry(item_name: str, kind: Any, spec: Any) -> PluginEntry:
            status: Status = "loaded"
            reason = ""
            if item_name in blocked:
                status, reason = "disabled", "disabled in plugins.toml"
            elif (
                isinstance(spec, (ConnectorSpec, TransformSpec))
                and (problem := spec.problem()) is not None
            ):
                status, reason = "failed", problem
            elif isinstance(spec, ConnectorSpec):
                missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
                if missing:
                    status = "missing-extra"
                    reason = f"needs {', '.join(missing)}"
                    if spec.extra:  # an extra of meshconnect's (docs/plugins.md)
                        reason += f": pip install 'meshconnect[{spec.extra}]'"
                    else:
                        reason += " (not installed; see the connector's description)"
            return PluginEntry(item_name, kind, name, distribution, version, status, reason, spec)

        for spec in connectors:
            if not isinstance(spec, ConnectorSpec):
                self._failed(name, distribution, version, f"not a ConnectorSpec: {spec!r}")
                continue
            item = entry(spec.name, spec.kind, spec)
            self._add(self.connectors, (spec.name, spec.kind), item)
        for tspec in transforms:
            if not isinstance(tspec, TransformSpec):
                self._failed(name, distribution, version, f"not a TransformSpec: {tspec!r}")
                continue
            item = entry(tspec.name, "transform", tspec)
            self._add(self.transforms, tspec.name, item)
        for sspec in stores:
            if not isinstance(sspec, StoreSpec):
                self._failed(name, distribution, version, f"not a StoreSpec: {sspec!r}")
                continue
            item = entry(sspec.scheme, "store", sspec)
            self._add(self.stores, sspec.scheme, item)
        self.functions.update(functions)
        self._function_owner.update(dict.fromkeys(functions, name))

    def _register_problem(self, plugin: object, exc: Exception) -> str:
        other = self.pm.get_name(plugin)
        if other is not None:
            return (
                f"{_describe(plugin)} is already loaded as plugin {other!r}: two entry points "
                "name the same module"
            )
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return f"{type(exc).__name__}: {'; '.join(lines)}"

    def _functions(
        self, mapping: Any, earlier: dict[str, Callable[..., Any]]
    ) -> dict[str, Callable[..., Any]]:
        """A meshconnect_functions result, checked as the expression compiler would, so a bad
        one fails its plugin here instead of every pipeline's compilation."""
        if not isinstance(mapping, dict):
            raise PluginError(f"meshconnect_functions returned {mapping!r}, not a dict")
        from .expr._functions import BUILTIN_FUNCTIONS

        for fname, function in mapping.items():
            if not isinstance(fname, str) or not fname.isidentifier() or fname.startswith("_"):
                raise PluginError(f"expression function {fname!r}: not a valid function name")
            if fname in BUILTIN_FUNCTIONS:
                raise PluginError(f"expression function {fname!r}: redefines a built-in function")
            if not callable(function):
                raise PluginError(f"expression function {fname!r}: {function!r} is not callable")
            if fname in self.functions or fname in earlier:
                raise PluginError(
                    f"expression function {fname!r}: name clash: already provided by "
                    f"{self._function_owner.get(fname, 'another plugin')!r}"
                )
        return dict(mapping)

    def _add(self, table: dict[Any, PluginEntry], key: Any, item: PluginEntry) -> None:
        existing = table.get(key)
        if existing is not None and existing.status == "loaded":
            item.status = "failed"
            item.reason = f"name clash: {item.name!r} is already provided by {existing.plugin!r}"
            self.entries.append(item)
            return
        table[key] = item
        self.entries.append(item)

    def _failed(self, plugin: str, dist: str | None, version: str | None, reason: str) -> None:
        log.warning("plugin %s (%s %s) failed to load: %s", plugin, dist, version, reason)
        self.entries.append(PluginEntry(plugin, "plugin", plugin, dist, version, "failed", reason))


def _near_groups(
    everything: Any,  # importlib.metadata.EntryPoints (typeshed: SelectableGroups before 3.12)
) -> list[tuple[str, importlib.metadata.EntryPoint]]:
    """Entry points in a group that is meant to be meshconnect's and is not (a typo such as
    ``meshconnect.plugins`` or ``meshconnect_connectors``): the worker would never see them."""
    found = []
    for group in sorted(everything.groups):
        normal = group.lower().replace("-", "_").replace(".", "_")
        if group != ENTRY_POINT_GROUP and (
            normal == "meshconnect" or normal.startswith("meshconnect_")
        ):
            found += [(group, ep) for ep in everything.select(group=group)]
    return found


#: The hooks a plugin may implement (:mod:`meshconnect.hookspecs`).
_HOOKS = [n for n in dir(hookspecs) if n.startswith("meshconnect_")]


def _dist(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    """The name and version of the distribution that declares ``ep`` (None when unknown)."""
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)


def _describe(plugin: object) -> str:
    name = getattr(plugin, "__name__", None)
    return f"module {name}" if isinstance(plugin, ModuleType) else repr(plugin)


def _check_hook_names(plugin: object) -> None:
    """PluginError for a ``@hookimpl`` whose name is no hook (pluggy would ignore it)."""
    import difflib

    for attr in dir(plugin):
        value = getattr(plugin, attr, None)
        if attr in _HOOKS or getattr(value, f"{hookspecs.PROJECT}_impl", None) is None:
            continue
        hint = difflib.get_close_matches(attr, _HOOKS, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise PluginError(f"@hookimpl {attr!r} is not a meshconnect hook{maybe}")


def _nothing_provided(plugin: object) -> str:
    """Why a plugin gave nothing: hook functions without ``@hookimpl``, or none at all (the
    entry point names the wrong module)."""
    bare = [n for n in _HOOKS if callable(getattr(plugin, n, None))]
    if bare:
        return (
            f"{_describe(plugin)} provides nothing: {', '.join(bare)} "
            "lacks the @meshconnect.hookimpl decorator"
        )
    return (
        f"{_describe(plugin)} provides nothing: it has no @meshconnect.hookimpl function "
        f"({', '.join(_HOOKS)}); does the entry point name the module that holds the hooks?"
    )


def _flatten(hook: str, results: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if result is None:
            continue
        if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
            raise PluginError(f"{hook} returned {result!r}, not a list")
        out.extend(result)
    return out


def _load_path(path: Path) -> ModuleType:
    """Import a local plugin file. Its directory goes on ``sys.path`` (at the end: installed
    modules win), so the file and its ``"module:Class"`` strings can name modules beside it."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    module_name = "meshconnect_local_" + path.stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _pin_problem(dist: str | None, version: str | None, pins: dict[str, str]) -> str | None:
    if dist is None or dist not in pins:
        return None
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - packaging ships with pip
        return None
    if version is None or version not in SpecifierSet(pins[dist]):
        return f"version {version} does not satisfy the pin {dist}{pins[dist]} in plugins.toml"
    return None


def load_registry(
    policy: PluginPolicy | None = None,
    *,
    strict: bool | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
) -> Registry:
    """Discover and load every plugin the policy allows, each in isolation."""
    policy = policy or PluginPolicy()
    if strict is None:
        strict = os.environ.get("MESHCONNECT_STRICT_PLUGINS", "") not in ("", "0")
    registry = Registry()
    eps = entry_points
    if eps is None:
        everything = importlib.metadata.entry_points()
        eps = everything.select(group=ENTRY_POINT_GROUP)
        for group, ep in _near_groups(everything):
            dist_name, dist_version = _dist(ep)
            near = (
                f"entry point {ep.name} = {ep.value!r} is in the group {group!r}, which "
                "meshconnect does not read: put it under "
                f"[project.entry-points.{ENTRY_POINT_GROUP}]"
            )
            if strict:
                raise PluginError(f"plugin {ep.name!r} from {dist_name}: {near}")
            registry._failed(ep.name, dist_name, dist_version, near)
    seen: dict[str, tuple[str, str | None, str | None]] = {}
    for ep in eps:
        dist_name, version = _dist(ep)
        first = seen.get(ep.name)
        if first is not None:
            if first[:2] == (ep.value, dist_name):
                continue  # the same distribution found twice on sys.path
            clash = (
                f"entry point name clash: {ep.name!r} ({ep.value}) is already the entry point "
                f"of {first[1] or 'a plugin'} {first[2] or ''} ({first[0]}): give the entry "
                "point another name"
            ).replace("  ", " ")
            if strict:
                raise PluginError(f"plugin {ep.name!r} from {dist_name} {version}: {clash}")
            registry._failed(ep.name, dist_name, version, clash)
            continue
        seen[ep.name] = (ep.value, dist_name, version)
        if ep.name in policy.disabled or (
            policy.load == "listed" and ep.name not in policy.enabled
        ):
            why = "disabled in plugins.toml" if ep.name in policy.disabled else "not listed"
            registry.entries.append(
                PluginEntry(ep.name, "plugin", ep.name, dist_name, version, "disabled", why)
            )
            continue
        problem = _pin_problem(dist_name, version, policy.pins)
        if problem:
            if strict:
                raise PluginError(f"plugin {ep.name!r}: {problem}")
            registry._failed(ep.name, dist_name, version, problem)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            if strict:
                raise PluginError(
                    f"plugin {ep.name!r} from {dist_name} {version} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            registry._failed(ep.name, dist_name, version, f"{type(exc).__name__}: {exc}")
            continue
        before = len(registry.entries)
        registry.register(
            plugin, ep.name, distribution=dist_name, version=version, disabled=policy.disabled
        )
        failed = [e for e in registry.entries[before:] if e.status == "failed"]
        if strict and failed:
            raise PluginError(f"plugin {ep.name!r}: {failed[0].reason}")
    for raw in policy.paths:
        path = (policy.base_dir / raw).resolve()
        name = f"local:{raw}"
        try:
            module = _load_path(path)
        except Exception as exc:
            if strict:
                raise PluginError(f"local plugin {path} failed to load: {exc}") from exc
            registry._failed(name, None, None, f"{type(exc).__name__}: {exc}")
            continue
        before = len(registry.entries)
        registry.register(module, name, distribution=None, version=None, disabled=policy.disabled)
        failed = [e for e in registry.entries[before:] if e.status == "failed"]
        if strict and failed:
            raise PluginError(f"local plugin {path}: {failed[0].reason}")
    return registry
