"""The expression language of ``where``, ``when`` and templates.

Expressions are a small, safe subset of Python expression syntax. They are parsed once, checked
against a whitelist, translated into plain Python that calls a few helpers, and compiled once to
a function: a comparison such as ``data.total >= 10`` costs well under a microsecond per record.

Names
    ``data`` is the record's payload. ``id``, ``source``, ``type``, ``specversion``,
    ``subject``, ``time``, ``datacontenttype`` and ``dataschema`` are its CloudEvent context
    attributes. ``topic`` is the topic the record is routed to (in a sink's transforms, the one
    it was stored in; in a pipeline's, the one a ``route`` gave it, else ``null``), without its
    partition (``orders``, not the store's ``orders#2``). Any other
    bare name is an extension attribute (``partitionkey``); it is ``null`` when the record does
    not have it. ``true``, ``false`` and ``null`` are aliases of ``True``,
    ``False`` and ``None``.

Paths
    ``data.customer.email``, ``data.items[0]``, ``data.items[-1]``, ``data['weird key']``,
    ``data.a[data.key]`` and slices ``data.items[1:3]``. Keys starting with ``_`` are written
    quoted: ``data['_id']``. A path only ever looks up keys of
    objects and indexes of arrays (never Python attributes). A missing key, an index out of
    range, or a path through a value that is not an object or array yields ``null``; it never
    fails.

Operators
    ``==  !=  <  <=  >  >=  in  not in`` (chains such as ``0 < data.x <= 10`` work),
    ``is null`` / ``is not null``, ``and  or  not``, ``+  -  *  /  //  %``, unary ``-`` and
    ``+``, ``a if cond else b``, and list, tuple, set and object literals.

Numbers
    ``int``, ``float`` and ``Decimal`` (JSON numbers with a fraction, see
    :mod:`meshconnect.jsonvalue`) compare and compute together, exactly: a number literal with
    a fraction or exponent is a ``Decimal`` of its text, a float meeting a Decimal counts as its
    shortest text, Decimal arithmetic never rounds silently (``/`` to 34 digits). Details in
    ``_numeric``.

Null semantics (SQL-like)
    An ordering comparison (``< <= > >=``) with ``null`` on either side is false; ``==`` and
    ``!=`` compare normally (``data.x == null`` is true when ``data.x`` is missing).
    ``x in null`` is false. Arithmetic with ``null`` gives ``null``. ``and``/``or``/``not`` use
    truthiness (``null``, ``0``, ``''``, ``[]`` and ``{}`` are false), so ``data.nick or
    data.name`` picks the first that is set. A predicate (``where``, ``when``) whose value is
    ``null`` is false.

Functions
    ``len(x)``               length of a string, array or object; ``null`` for ``null``.
    ``lower(s)``, ``upper(s)``, ``trim(s)``
                             case conversion and whitespace stripping; ``null`` for ``null``.
    ``startsWith(s, p)``, ``endsWith(s, p)``
                             whether string ``s`` starts/ends with ``p`` (a string, or an
                             array of strings: any of them); false for ``null``.
    ``contains(h, n)``       substring of a string, element of an array, or key of an object;
                             false when ``h`` is ``null``.
    ``matches(s, re)``       whether the regular expression ``re`` (RE2 syntax, linear time)
                             matches anywhere in ``s`` (anchor with ``^``/``$``); false for
                             ``null``. The pattern is a constant string, compiled once, when
                             the expression is (from the record only where the file allows).
    ``replace(s, old, new)`` every ``old`` in ``s`` replaced by ``new``; ``null`` for ``null``.
    ``replace_regex(s, re, replacement)``
                             every match of ``re`` in ``s`` replaced; the replacement refers
                             to groups as ``$1`` and ``${name}`` (Java's and Kafka Connect
                             RegexRouter's syntax, ``$$`` is a ``$``); ``null`` for ``null``.
    ``substr(s, start[, end])``
                             the part of a string (or array) from ``start`` up to, not
                             including, ``end``; negative positions count from the end.
    ``int(x)``, ``float(x)`` numbers from numbers, booleans and numeric strings in the
                             grammar of :mod:`meshconnect.numparse`, as ``cast`` reads them
                             (``int(3.9)`` and ``int('3.9')`` are 3; ``int('1_000')``,
                             ``float('nan')`` are errors); ``null`` for null.
    ``str(x)``               ``x`` as text, as a template renders it (objects and arrays as
                             compact JSON, booleans as ``true``/``false``); ``null`` for null.
    ``bool(x)``              truthiness, except that the strings ``true/yes/on/1/y/t`` and
                             ``false/no/off/0/n/f/''`` (any case) are read as booleans, as
                             ``cast: bool`` reads them (:mod:`meshconnect.booleans`).
    ``abs(x)``, ``round(x[, digits])``, ``floor(x)``, ``ceil(x)``
                             absolute value; rounding half to even; integer below/above;
                             ``null`` for ``null``.
    ``sum(...)``             the sum of the numbers (or of one array), ignoring ``null``s.
    ``min(...)``, ``max(...)``
                             the least/greatest of the arguments, or of the one array given,
                             ignoring ``null``s; ``null`` when nothing is left.
    ``coalesce(a, b, ...)``  the first argument that is not ``null``.
    ``isNull(x)``            whether ``x`` is ``null``.
    ``isEmpty(x)``           whether ``x`` is ``null``, ``''``, ``[]`` or ``{}``.
    ``now()``                the current time in seconds since the epoch (a float).
    ``parseTime(t[, fmt[, zone]])``, ``formatTime(t[, fmt[, zone]])``
                             epoch seconds from ISO 8601 or ``strptime`` text; a time as ISO
                             8601 (UTC) or ``strftime`` text in an IANA zone.
    ``concat(a, b, ...)``    the arguments as text, joined (``null`` adds nothing).
    ``split(s[, sep])``, ``join(a[, sep])``, ``indexOf(h, n)``
                             split text, join an array as text, find a substring or element.
    ``padLeft(x, w[, f])``, ``padRight(x, w[, f])``
                             ``x`` as text padded to width ``w`` with character ``f``.

    Plugins add functions through the ``meshconnect_functions`` hook. Only these bare names can
    be called: no methods (``data.get('x')``), no keyword arguments.

Templates
    Literal text with ``{expression}`` placeholders, e.g. ``cdc.{data.database}.{data.table}``;
    ``{{`` and ``}}`` stand for literal braces. ``null`` renders as nothing, booleans as
    ``true``/``false``, objects and arrays as compact JSON.

Not allowed (rejected when the pipeline is validated)
    Names and attributes starting with ``_``, constant keys starting with ``__``; attributes of
    anything but a path (``"x".upper``); calls of anything but the functions above; ``lambda``;
    comprehensions; ``*``/``**`` unpacking; ``:=``; f-strings; ``**`` (power), bit operators,
    ``await`` and ``yield``. Evaluation has no access to Python builtins.

Budgets
    Records are untrusted: every value an expression builds (strings, arrays, rendered text) is
    at most :data:`~._budget.MAX_SIZE` in size, integers that ``*``, ``//`` and ``%`` take at
    most :data:`~._budget.MAX_INT_DIGITS` digits, and ``round`` at most
    :data:`~._budget.MAX_ROUND_DIGITS` digits; past a budget evaluation fails with a DataError
    (see :mod:`._budget` and docs/security.md).

Errors
    A bad expression raises :class:`ExpressionError` (a :class:`~meshconnect.errors.ConfigError`)
    with the 0-based ``column`` of the problem in the text. An expression that fails on a record
    (``'abc' < 1``, ``int('abc')``, division by zero) raises
    :class:`~meshconnect.errors.DataError` naming the expression and the cause.
"""

from __future__ import annotations

# One concept per module: _translator checks an expression and translates it to Python,
# _runtime and _functions are what the translated code calls, _templates turns a template
# into one expression, and _compiler compiles the result to a function.
from ._compiler import Compiler, Expression, Predicate
from ._errors import ExpressionError
from ._functions import BUILTIN_FUNCTIONS
from ._regex import compile_re2
from ._runtime import render_value
from ._templates import Template, sole_placeholder, template_pieces
from ._translator import MAX_DEPTH as MAX_DEPTH  # the limits stay importable from here
from ._translator import MAX_LENGTH as MAX_LENGTH
from ._translator import is_special_name

__all__ = [
    "BUILTIN_FUNCTIONS",
    "Compiler",
    "Expression",
    "ExpressionError",
    "Predicate",
    "Template",
    "compile_re2",
    "is_special_name",
    "render_value",
    "sole_placeholder",
    "template_pieces",
]
