"""Reading an HTTP request's body whole, within a size limit, for the HTTP sources.

``StreamReader.read(n)`` returns what has arrived so far, up to ``n`` bytes: a body sent in
several TCP segments (any client on a slow link, chunked transfer encoding) comes back cut
short, so a signature over it fails and a half prompt is stored. :func:`read_body` reads to
the end of the body, stopping as soon as it passes the limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["read_body"]

_CHUNK = 1 << 16


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body of ``request``, or ``None`` when it is longer than ``limit`` bytes
    (by its ``Content-Length`` before anything is read, else as soon as more has arrived)."""
    if (request.content_length or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
