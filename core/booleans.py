"""The one reading of text as a boolean, shared by the expression function ``bool()`` and
``cast: bool`` (and any connector that reads flags from text).

The words are PostgreSQL's boolean input literals without its unique-prefix rule, plus the
empty string as false (a blank CSV cell): case and surrounding blanks do not matter.
"""

from __future__ import annotations

__all__ = ["FALSE_WORDS", "TRUE_WORDS", "parse_bool"]

TRUE_WORDS = frozenset(("true", "yes", "on", "1", "y", "t"))
FALSE_WORDS = frozenset(("false", "no", "off", "0", "n", "f", ""))


def parse_bool(text: str) -> bool | None:
    """``True``/``False`` for a word of :data:`TRUE_WORDS`/:data:`FALSE_WORDS`, else ``None``
    (the caller raises its own error naming where the text came from)."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None
