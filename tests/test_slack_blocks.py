"""Block Kit checks of the slack sink (Slack's documented limits), made before any call."""

from __future__ import annotations

from typing import Any

import pytest

from meshconnect.connectors.slack.blocks import block_kit_errors

SECTION = {"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ("not a list", "blocks: must be an array of blocks, not a string"),
        ([], "blocks: must hold at least one block"),
        ([SECTION] * 51, "blocks: 51 blocks, at most 50 are allowed"),
        ([{"text": "x"}], "blocks[0].type: required"),
        ([{"type": "banner"}], "blocks[0].type: unknown block type 'banner'"),
        ([{"type": "section"}], "blocks[0]: a section needs text or fields"),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
            "blocks[0].text.text: 3001 characters, at most 3000 are allowed",
        ),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
            "blocks[0].fields: must be an array of 1 to 10 text objects",
        ),
        (
            [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}],
            "blocks[0].text.type: must be plain_text, not 'mrkdwn'",
        ),
        ([{"type": "context", "elements": []}], "blocks[0].elements: must be an array of 1 to 10"),
        ([{"type": "image", "image_url": "https://x/y.png"}], "blocks[0].alt_text: required"),
        (
            [{"type": "image", "image_url": "not a url", "alt_text": "a"}],
            "blocks[0].image_url: required, an http(s) URL of at most 3000 characters, not "
            "'not a url'",
        ),
        (
            [{"type": "section", "text": None}],
            "blocks[0].text: must be a text object ({type, text}), not null",
        ),
        (
            [{**SECTION, "block_id": "a"}, {**SECTION, "block_id": "a"}],
            "blocks[1].block_id: 'a' is used twice",
        ),
        (
            [{"type": "section", "text": {"type": "mrkdwn", "text": "x", "emoji": True}}],
            "blocks[0].text.emoji: only plain_text takes emoji",
        ),
    ],
)
def test_each_rule(blocks: Any, problem: str) -> None:
    errors = block_kit_errors(blocks)
    assert any(e.startswith(problem) for e in errors), errors


def test_valid_blocks_pass() -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Disk full", "emoji": True}},
        SECTION,
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "db-1"}]},
        {"type": "image", "image_url": "https://example.com/a.png", "alt_text": "graph"},
        {
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Ack"}}],
        },
        {"type": "rich_text", "elements": []},
    ]
    assert block_kit_errors(blocks) == []
