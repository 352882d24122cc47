"""The error a bad expression or template raises when it is compiled."""

from __future__ import annotations

from ..errors import ConfigError


class ExpressionError(ConfigError):
    """An expression or template that cannot be compiled.

    ``message`` is the bare reason, ``text`` the whole expression (or template) text,
    ``column`` the 0-based offset in ``text`` where the problem is (``None`` if unknown) and
    ``field`` the option it came from (``"where"``). ``str()`` gives all of it in one line.
    """

    def __init__(
        self, message: str, *, text: str = "", column: int | None = None, field: str | None = None
    ) -> None:
        self.message = message
        self.text = text
        self.column = column
        self.field = field
        super().__init__(message)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        at = f" at column {self.column}" if self.column is not None else ""
        return f"{where}{self.message} (in {self.text!r}{at})"
