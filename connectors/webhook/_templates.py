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
from urllib.parse import quote

__all__ = ["Template", "data_path", "url_escape", "url_template"]


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

    def render(
        self, lookup: Callable[[str], Any], escape: Callable[[str], str] | None = None
    ) -> str:
        """The text with each placeholder replaced by ``str(lookup(name))`` (booleans as
        ``true``/``false``), passed through ``escape`` when given (URLs: :func:`url_escape`);
        ``KeyError(name)`` when ``lookup`` finds nothing (``None``)."""
        if self.literal is not None:
            return self.literal
        out: list[str] = []
        for is_name, part in self.parts:
            if not is_name:
                out.append(part)
                continue
            if part.startswith("time:"):
                text = _strftime(lookup("time"), part[5:], part)
            else:
                value = lookup(part)
                if value is None:
                    raise KeyError(part)
                text = _text(value)
            out.append(text if escape is None else escape(text))
        return "".join(out)

    def check_url(self) -> None:
        """``ValueError`` unless every placeholder stands after the authority of an absolute
        ``http(s)://host[:port]/`` URL (in the path, query or fragment): a value must never
        choose the scheme, the host or the port (the records would pick where they go)."""
        prefix = ""
        for is_name, part in self.parts:
            if not is_name:
                prefix += part
                continue
            scheme, sep, rest = prefix.partition("://")
            if not sep or "/" in scheme or not any(c in rest for c in "/?#"):
                raise ValueError(
                    f"template {self.text!r}: {{{part}}} stands in the scheme, host or port; "
                    "placeholders may only stand in the path, the query or the fragment"
                )
            prefix += "x"


def url_template(text: str) -> Template:
    """A URL template whose literal text is percent-encoded where RFC 3986 wants it (spaces,
    non-ASCII; reserved characters and existing ``%XX`` kept), ready for values escaped by
    :func:`url_escape`: the rendered URL is sent as it is, never re-normalized."""
    template = Template(text)
    template.parts = [
        (is_name, part if is_name else quote(part, safe=_URL_LITERAL))
        for is_name, part in template.parts
    ]
    if template.literal is not None:
        template.literal = quote(template.literal, safe=_URL_LITERAL)
    return template


_URL_LITERAL = "!#$%&'()*+,/:;=?@[]~"


def url_escape(value: str) -> str:
    """A value for a URL template: percent-encoded (RFC 3986 section 2.1, UTF-8) with only the
    unreserved characters left as they are, so it stays one path segment or one query value
    (``/``, ``?``, ``#``, ``&``, ``=`` are encoded); ``.`` and ``..``, which a client or server
    would resolve as dot-segments (section 5.2.4), become ``%2E`` and ``%2E%2E``."""
    if value in (".", ".."):
        return "%2E" * len(value)
    return quote(value, safe="", encoding="utf-8", errors="strict")


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
