"""Text that is safe to print on a terminal.

Topic names, connector names, record contents and error messages reach the terminal through
``meshconnect`` commands and logs, and records come from outside. A control character (``ESC``
starts the sequences that retitle a window, move the cursor or, on some terminals, write
files; ``\\r`` hides what came before on the line) or an invisible formatting character (the
bidirectional overrides of "Trojan Source") must never reach the terminal raw.

:func:`printable` escapes every character that ``str.isprintable()`` refuses — control (Cc),
format (Cf), surrogate, private-use and unassigned characters, and separators other than the
ASCII space — as ``\\x1b``, ``\\u202e`` or ``\\U000e0001``. :func:`printable_json` does the
same inside a JSON text, as ``\\u`` escapes, so the line stays valid JSON that decodes to the
very same value.
"""

from __future__ import annotations

__all__ = ["printable", "printable_json"]


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str, keep: str = "") -> str:
    """``text`` with every non-printable character escaped (those in ``keep`` excepted, e.g.
    ``"\\n"`` for a multi-line log message). Printable text comes back as it is."""
    if text.isprintable():
        return text
    return "".join(c if c in keep or c.isprintable() else _escape(c) for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def printable_json(text: str) -> str:
    """A JSON text with each non-printable character written as a ``\\u`` escape (such a
    character can only stand inside a string, where the escape means the same)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _json_escape(c) for c in text)
