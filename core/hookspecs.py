"""Every hook a meshconnect plugin can implement, in one place.

A plugin is a module (or object) registered through the ``meshconnect`` entry-point group, or
listed as a local module in ``plugins.toml``. It implements any of these hooks with
``@meshconnect.hookimpl``. Built-in connectors, transforms and stores use exactly this door.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .api import ConnectorSpec, TransformSpec
    from .mesh.store import StoreSpec

PROJECT = "meshconnect"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def meshconnect_connectors() -> Sequence[ConnectorSpec]:  # type: ignore[empty-body]
    """Return the source and sink connectors this plugin provides."""


@hookspec
def meshconnect_transforms() -> Sequence[TransformSpec]:  # type: ignore[empty-body]
    """Return the transforms this plugin provides."""


@hookspec
def meshconnect_stores() -> Sequence[StoreSpec]:  # type: ignore[empty-body]
    """Return mesh store backends, each selected by the scheme of a ``store:`` URL."""


@hookspec
def meshconnect_functions() -> dict[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Return functions that expressions may call, by name (pure, side-effect free)."""
