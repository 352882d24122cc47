"""Small templates for URLs, headers and CloudEvent attributes: text with ``{name}``
placeholders (``{{`` and ``}}`` are literal braces).

A name is looked up by the caller's function (``header.X-Name``, ``query.kind``,
``data.order.id``, ``type``, ``partitionkey``...); ``{time:STRFTIME}`` formats the record's
``time`` (UTC), as every template of ARCHITECTURE.md section 1.5 does. A value that is not
there is a :class:`KeyError` naming the placeholder; the caller decides what that means (a
400 for the webhook, a dead letter for the sink).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

__all__ = ["Template", "data_path"]


class Template:
    """A compiled template; ``ValueError`` at construction for an unclosed or empty
    placeholder, naming its position."""

    __slots__ = ("literal", "parts", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts: list[tuple[bool, str]] = []  # (is_name, text)
        buf: list[str] = []
        i = 0
        while i < len(text):
            char = text[i]
            if char == "{" and text.startswith("{{", i):
                buf.append("{")
                i += 2
            elif char == "}" and text.startswith("}}", i):
                buf.append("}")
                i += 2
            elif char == "{":
                end = text.find("}", i)
                if end < 0:
                    raise ValueError(f"template {text!r}: '{{' at {i} is never closed")
                name = text[i + 1 : end].strip()
                if not name or "{" in name:
                    raise ValueError(f"template {text!r}: bad placeholder at {i}")
                if buf:
                    parts.append((False, "".join(buf)))
                    buf = []
                parts.append((True, name))
                i = end + 1
            elif char == "}":
                raise ValueError(f"template {text!r}: '}}' at {i} without '{{' (write '}}}}')")
            else:
                buf.append(char)
                i += 1
        if buf:
            parts.append((False, "".join(buf)))
        self.parts = parts
        self.literal: str | None = (
            "".join(p for _, p in parts) if not any(n for n, _ in parts) else None
        )

    def names(self) -> list[str]:
        return [p for is_name, p in self.parts if is_name]

    def render(self, lookup: Callable[[str], Any]) -> str:
        """The text with each placeholder replaced by ``str(lookup(name))`` (booleans as
        ``true``/``false``); ``KeyError(name)`` when ``lookup`` finds nothing (``None``)."""
        if self.literal is not None:
            return self.literal
        out: list[str] = []
        for is_name, part in self.parts:
            if not is_name:
                out.append(part)
                continue
            if part.startswith("time:"):
                out.append(_strftime(lookup("time"), part[5:], part))
                continue
            value = lookup(part)
            if value is None:
                raise KeyError(part)
            out.append(_text(value))
        return "".join(out)


def _text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _strftime(value: Any, pattern: str, name: str) -> str:
    if not isinstance(value, str):
        raise KeyError(name)
    try:
        when = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise KeyError(name) from None
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime(pattern)


def data_path(data: Any, path: str) -> Any:
    """``data`` followed along the dotted ``path`` (object keys, list indexes); None when a
    step is missing."""
    value = data
    for step in path.split("."):
        if isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list) and step.lstrip("-").isdigit():
            index = int(step)
            value = value[index] if -len(value) <= index < len(value) else None
        else:
            return None
        if value is None:
            return None
    return value
