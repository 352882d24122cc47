"""Block Kit checks made before a message is sent, so a bad template fails one record (to the
dead-letter topic, with every problem by path) instead of costing a call that Slack answers
``invalid_blocks``.

The limits are Slack's documented ones (https://api.slack.com/reference/block-kit/blocks and
https://api.slack.com/reference/block-kit/composition-objects#text): at most 50 blocks in a
message, ``block_id`` at most 255 characters and unique, a section's text at most 3,000
characters and at most 10 fields of 2,000, a header's plain text at most 150, a context's 1-10
elements, an actions block's 1-25 elements, an image's URL and alt text. Blocks whose type this
module does not know in detail (``rich_text``, ``input``, ``file``, ``video``...) are checked
only for their ``type``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["block_kit_errors"]

MAX_BLOCKS = 50
_KNOWN = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}


def block_kit_errors(blocks: Any) -> list[str]:
    """Every problem of ``blocks`` (a message's ``blocks`` value), as ``path: reason``; empty
    when it is valid."""
    errors: list[str] = []
    if not isinstance(blocks, list):
        return [f"blocks: must be an array of blocks, not {_kind(blocks)}"]
    if not blocks:
        return ["blocks: must hold at least one block"]
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"blocks: {len(blocks)} blocks, at most {MAX_BLOCKS} are allowed")
    ids: set[str] = set()
    for i, block in enumerate(blocks):
        _block(block, f"blocks[{i}]", ids, errors)
    return errors


_KINDS: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def _is_url(value: str) -> bool:
    """An absolute http(s) URL without spaces (what Slack fetches an image from)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.netloc)
        and not any(c.isspace() for c in value)
    )


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), "a " + type(value).__name__)


def _block(block: Any, path: str, ids: set[str], errors: list[str]) -> None:
    if not isinstance(block, dict):
        errors.append(f"{path}: must be an object, not {_kind(block)}")
        return
    kind = block.get("type")
    if not isinstance(kind, str):
        errors.append(f"{path}.type: required (section, header, context, divider, ...)")
        return
    if kind not in _KNOWN:
        errors.append(f"{path}.type: unknown block type {kind!r}")
        return
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or not block_id or len(block_id) > 255:
            errors.append(f"{path}.block_id: must be a string of 1 to 255 characters")
        elif block_id in ids:
            errors.append(f"{path}.block_id: {block_id!r} is used twice")
        else:
            ids.add(block_id)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"{path}: a section needs text or fields")
        if "text" in block:
            _text(block["text"], f"{path}.text", 3000, errors)
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                errors.append(f"{path}.fields: must be an array of 1 to 10 text objects")
            else:
                for j, item in enumerate(fields):
                    _text(item, f"{path}.fields[{j}]", 2000, errors)
    elif kind == "header":
        _text(block.get("text"), f"{path}.text", 150, errors, plain_only=True)
    elif kind == "context":
        _elements(block, path, 10, errors)
        for j, item in enumerate(block.get("elements") or []):
            if isinstance(item, dict) and item.get("type") != "image":
                _text(item, f"{path}.elements[{j}]", 3000, errors)
    elif kind == "actions":
        _elements(block, path, 25, errors)
    elif kind == "image":
        url = block.get("image_url")
        if "slack_file" not in block and (
            not isinstance(url, str) or not 1 <= len(url) <= 3000 or not _is_url(url)
        ):
            errors.append(
                f"{path}.image_url: required, an http(s) URL of at most 3000 characters"
                + (f", not {url[:80]!r}" if isinstance(url, str) else f", not {_kind(url)}")
            )
        alt = block.get("alt_text")
        if not isinstance(alt, str) or not 1 <= len(alt) <= 2000:
            errors.append(f"{path}.alt_text: required, a string of 1 to 2000 characters")
    elif kind == "markdown":
        text = block.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= 12000:
            errors.append(f"{path}.text: required, a string of 1 to 12000 characters")


def _elements(block: dict[str, Any], path: str, most: int, errors: list[str]) -> None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 1 <= len(elements) <= most:
        errors.append(f"{path}.elements: must be an array of 1 to {most} elements")
        return
    for j, item in enumerate(elements):
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            errors.append(f"{path}.elements[{j}]: must be an object with a type")


def _text(value: Any, path: str, most: int, errors: list[str], plain_only: bool = False) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: must be a text object ({{type, text}}), not {_kind(value)}")
        return
    kind = value.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind not in allowed:
        errors.append(f"{path}.type: must be {' or '.join(allowed)}, not {kind!r}")
    text = value.get("text")
    if not isinstance(text, str) or not text:
        errors.append(f"{path}.text: required, a non-empty string")
    elif len(text) > most:
        errors.append(f"{path}.text: {len(text)} characters, at most {most} are allowed")
    if "emoji" in value and kind != "plain_text":
        errors.append(f"{path}.emoji: only plain_text takes emoji")
    if "verbatim" in value and kind != "mrkdwn":
        errors.append(f"{path}.verbatim: only mrkdwn takes verbatim")
