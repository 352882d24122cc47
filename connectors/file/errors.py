"""How the file connectors map ``OSError`` onto the error taxonomy (see docs/errors.md).

* Opening (the sink's ``open``, the source's ``start``): a wrong path or permission
  (``EACCES``, ``ENOENT``, ``ENOTDIR``, ``EROFS`` ...) is a :class:`~meshconnect.errors.ConfigError`
  naming the path: the connector stops for good until someone fixes it.
* Reading or writing (``poll``, ``write``, ``flush``): a transient error (``ENOSPC``, ``EIO``,
  ``EDQUOT`` ...) may strike after part of a batch reached the disk or the source's read
  position moved, so retrying the call in place could lose or repeat lines. It is a
  :class:`FileIOFailure` instead: the worker restarts the connector with backoff from its
  committed offsets (the sink truncates to its checkpoint), which is the safe retry: the
  taxonomy's :class:`~meshconnect.errors.RestartError`. A path or permission error there is a
  ``ConfigError`` as at opening.
"""

from __future__ import annotations

from meshconnect import ConfigError, MeshconnectError, RestartError, classify

__all__ = ["FileIOFailure", "io_error"]


class FileIOFailure(RestartError):
    """A read or write failed part-way: restart the connector from its committed offsets
    (a :class:`~meshconnect.errors.RestartError`: neither retried in place nor
    dead-lettered)."""


def io_error(exc: OSError, what: str) -> MeshconnectError:
    """The taxonomy error for ``exc``, raised while doing ``what`` (e.g. "file sink out.jsonl:
    write"); raise it ``from exc``."""
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if classify(exc) is ConfigError:
        return ConfigError(f"{what}: {reason}{where}; fix the path or its permissions")
    return FileIOFailure(f"{what}: {reason}{where}; restarting from the last committed offsets")
