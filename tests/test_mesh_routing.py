"""Topic routing (meshconnect.mesh.routing): the glob a templated topic subscribes to, built
with the expression template scanner, and resolving patterns against the store."""

from __future__ import annotations

import fnmatch

import pytest

from meshconnect.mesh.memory import MemoryStore
from meshconnect.mesh.routing import resolve_topics, template_glob
from meshconnect.records import Record


@pytest.mark.parametrize(
    ("template", "glob"),
    [
        ("cdc.{data.db}.{data.table}", "cdc.*.*"),
        ("orders", "orders"),
        ("{{literal}}.{data.x}", "{literal}.*"),
        # a brace inside a quoted string of a placeholder does not end it
        ("a.{data['}'] or 'x'}.b", "a.*.b"),
        ("{subject}{data.n}", "**"),
        # glob characters of the literal text match only themselves
        ("lit[1]*?.{data.x}", "lit[[]1][*][?].*"),
    ],
)
def test_a_templated_topic_subscribes_to_the_glob_of_what_it_can_produce(
    template: str, glob: str
) -> None:
    assert template_glob(template) == glob


def test_literal_glob_characters_do_not_widen_the_subscription() -> None:
    glob = template_glob("lit[1]*.{data.x}")
    assert fnmatch.fnmatchcase("lit[1]*.eu", glob)
    assert not fnmatch.fnmatchcase("lit1x.eu", glob)


async def test_patterns_resolve_to_the_topics_the_store_holds_and_literal_names() -> None:
    store = MemoryStore("memory://")
    await store.open()
    await store.append([Record({}, topic=t) for t in ("cdc.shop.orders", "cdc.shop.users", "x")])
    assert await resolve_topics(store, ["cdc.*.orders", "later", "cdc.shop.u*"]) == [
        "cdc.shop.orders",
        "cdc.shop.users",
        "later",
    ]
    await store.close()
