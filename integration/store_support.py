"""What the store backend tests share: the unit tests that take their store from a fixture,
imported so that a backend's test module runs them on its own store (it overrides the
``store_url`` and ``store`` fixtures)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

__all__ = ["STORE_TEST_MODULES", "import_store_tests"]

TESTS = Path(__file__).resolve().parent.parent / "tests"

#: Unit test modules whose tests get their store from the ``store_url`` or ``store`` fixture.
STORE_TEST_MODULES = ("test_worker", "test_errors_policy", "test_errors_replay", "test_ownership")


def import_store_tests() -> dict[str, Any]:
    """The tests and fixtures of :data:`STORE_TEST_MODULES`, by name (the caller overrides
    the store fixtures afterwards). Each module's autouse ``clean_memory`` clears part of the
    test doubles' class state: one fixture here clears all of it."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    found: dict[str, Any] = {}
    for name in STORE_TEST_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if attr.startswith("test_") or getattr(value, "_pytestfixturefunction", None):
                found[attr] = value
            elif hasattr(value, "_fixture_function_marker") or type(value).__name__ in (
                "FixtureFunctionDefinition",
            ):
                found[attr] = value
    found["clean_memory"] = clean_memory
    return found


@pytest.fixture(autouse=True)
def clean_memory() -> None:
    from meshconnect.testing import MemorySink, MemorySource

    MemorySink.outputs.clear()
    MemorySink.crashed.clear()
    MemorySource.crashed.clear()
