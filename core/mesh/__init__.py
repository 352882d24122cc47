"""The mesh: topics, offsets and the router between pipelines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .store import GroupInfo, Lease, MeshStore, Retention, StoreSpec, TopicInfo

if TYPE_CHECKING:
    from ..plugins import Registry

__all__ = [
    "GroupInfo",
    "Lease",
    "MeshStore",
    "Retention",
    "StoreSpec",
    "TopicInfo",
    "default_store_url",
    "open_store",
    "state_dir",
]


def state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where embedded state lives: ``--state``, ``$MESHCONNECT_STATE`` or ``./.meshconnect``."""
    return Path(explicit or os.environ.get("MESHCONNECT_STATE") or ".meshconnect")


def default_store_url(state: str | os.PathLike[str] | None = None) -> str:
    """The embedded default store: SQLite in the state directory."""
    return f"sqlite:///{state_dir(state) / 'mesh.db'}"


def open_store(url: str, registry: Registry) -> MeshStore:
    """An unopened store for ``url``, by its scheme, from the loaded store plugins."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        from ..errors import ConfigError

        raise ConfigError(f"store URL {url!r} has no scheme (e.g. sqlite:///path/mesh.db)")
    return registry.store(scheme).factory(url)
