"""Every hook has a test and is documented (datasette's meta-tests)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from meshconnect import hookspecs

HOOKS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("meshconnect_") and inspect.isfunction(obj)
)
DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    assert hasattr(sys.modules[__name__], f"test_hook_{hook}"), f"write test_hook_{hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert f"### {hook}" in text
    assert f"`{hook}()`" in text


def test_hook_meshconnect_connectors() -> None:
    from meshconnect.plugins import load_registry

    registry = load_registry()
    assert registry.connectors[("file", "source")].status == "loaded"
    assert registry.connectors[("file", "sink")].distribution == "meshconnect"


def test_hook_meshconnect_transforms() -> None:
    from meshconnect.plugins import load_registry

    registry = load_registry()
    assert {"filter", "mask", "insert_field"} <= set(registry.transforms)


def test_hook_meshconnect_stores() -> None:
    from meshconnect.plugins import load_registry

    registry = load_registry()
    assert {"sqlite", "memory"} <= set(registry.stores)


def test_hook_meshconnect_functions() -> None:
    from meshconnect import hookimpl
    from meshconnect.expr import Compiler
    from meshconnect.plugins import Registry
    from meshconnect.records import Record

    @hookimpl
    def meshconnect_functions() -> dict[str, object]:
        return {"double": lambda x: x * 2}

    registry = Registry()

    class Plugin:
        pass

    plugin = Plugin()
    plugin.meshconnect_functions = meshconnect_functions  # type: ignore[attr-defined]
    registry.register(plugin, "fx")
    expression = Compiler(registry.functions).expression("double(data.n)")
    assert expression(Record({"n": 21})) == 42
