"""Headless Chromium driven over the DevTools protocol (with aiohttp's websocket client), for
the dashboard test and docs/shots/dashboard.py.

``--dump-dom`` with ``--virtual-time-budget`` runs the page's timers in virtual time: its polls
come a few milliseconds apart in real time, so the counters it reads have not moved and every
rate is 0. Here the page runs in real time, and :func:`load` waits (up to a deadline) for a
condition on the page before it takes the DOM and a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Page", "find_chromium", "load"]


@dataclass
class Page:
    html: str
    png: bytes
    value: Any  # what the condition returned last


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def load(
    browser: str,
    url: str,
    until: str,
    *,
    width: int = 1280,
    height: int = 900,
    timeout: float = 90,
) -> Page:
    """Open ``url``, wait until JavaScript expression ``until`` is truthy (AssertionError after
    ``timeout`` seconds), and return the page's HTML and a PNG screenshot."""
    with tempfile.TemporaryDirectory(prefix="meshconnect-chromium-") as profile:
        proc = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            endpoint = _devtools_endpoint(proc, timeout)
            return asyncio.run(_drive(endpoint, url, until, width, height, timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def _devtools_endpoint(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"chromium exited {proc.wait()}:\n{''.join(seen)}")
        seen.append(line)
        found = re.search(r"DevTools listening on ws://([^/]+)/", line)
        if found:
            return found.group(1)
    raise AssertionError("chromium did not start its DevTools server:\n" + "".join(seen))


async def _drive(
    endpoint: str, url: str, until: str, width: int, height: int, timeout: float
) -> Page:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{endpoint}/json/list") as reply:
            targets = await reply.json()
        (page,) = [t for t in targets if t.get("type") == "page"][:1]
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params: Any) -> dict[str, Any]:
                ident = next(ids)
                await ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    message = json.loads((await ws.receive()).data)
                    if message.get("id") == ident:
                        if "error" in message:
                            raise AssertionError(f"{method}: {message['error']}")
                        return message["result"]  # type: ignore[no-any-return]

            async def evaluate(expression: str) -> Any:
                result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                return result["result"].get("value")

            await call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            value: Any = None
            while True:
                value = await evaluate(f"(() => {{ try {{ return {until}; }} "
                                       "catch (e) { return null; } })()")  # fmt: skip
                if value:
                    break
                if time.monotonic() > deadline:
                    html = await evaluate("document.documentElement.outerHTML")
                    raise AssertionError(f"the page never got to {until}:\n{str(html)[-3000:]}")
                await asyncio.sleep(0.25)
            html = await evaluate("document.documentElement.outerHTML")
            shot = await call("Page.captureScreenshot", format="png")
            return Page(str(html), base64.b64decode(shot["data"]), value)
