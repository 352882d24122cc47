"""read_body: a request body that arrives in several TCP segments (or chunked) is read whole;
one longer than the limit is refused. ``StreamReader.read(n)`` returned only the first segment:
the chatgpt source stored half a prompt and the slack source refused good signatures."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from meshconnect.httpbody import read_body


async def _server(limit: int) -> TestServer:
    async def handler(request: web.Request) -> web.Response:
        body = await read_body(request, limit)
        if body is None:
            return web.Response(status=413, text="too large")
        return web.Response(text=f"{len(body)}:{body[-5:].decode()}")

    app = web.Application()
    app.router.add_post("/", handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def _send(port: int, head: bytes, pieces: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.15)
    answer = await reader.read()
    writer.close()
    return answer


async def test_a_body_in_pieces_is_read_whole() -> None:
    server = await _server(10_000)
    try:
        body = b"a" * 600 + b"tail!"
        head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n".encode()
        answer = await _send(server.port, head, [body[:100], body[100:350], body[350:]])
        assert answer.endswith(b"605:tail!"), answer
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        chunked += b"Transfer-Encoding: chunked\r\n\r\n"
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:300], body[300:])] + [b"0\r\n\r\n"]
        answer = await _send(server.port, chunked, parts)
        assert answer.endswith(b"605:tail!"), answer
    finally:
        await server.close()


async def test_a_body_over_the_limit_is_refused_even_without_a_length() -> None:
    server = await _server(500)
    try:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 501\r\n\r\n"
        assert b" 413 " in await _send(server.port, head, [b"x" * 501])
        chunked = b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        chunked += b"Transfer-Encoding: chunked\r\n\r\n"
        parts = [b"190\r\n" + b"y" * 400 + b"\r\n"] * 2 + [b"0\r\n\r\n"]
        assert b" 413 " in await _send(server.port, chunked, parts)
    finally:
        await server.close()
