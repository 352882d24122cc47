"""A small client of the admin API for the command line (``meshconnect status``,
``meshconnect connectors …``): the standard library's urllib, no extra dependency."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..errors import MeshconnectError
from ..secrets import shown_url

__all__ = ["DEFAULT_URL", "AdminClient", "AdminError"]

DEFAULT_URL = "http://127.0.0.1:8083"


class AdminError(MeshconnectError):
    """The admin API answered an error, or could not be reached."""


class AdminClient:
    def __init__(self, url: str, token: str | None = None, token_path: Path | None = None):
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        if not token and token_path is not None and token_path.is_file():
            token = token_path.read_text(encoding="utf-8").strip()
        self.token = token or None

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.reason
            try:
                detail = json.loads(exc.read()).get("detail") or detail
            except (ValueError, AttributeError):
                pass
            raise AdminError(f"{method} {path}: {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(
                f"cannot reach the admin API at {shown_url(self.url)}: {reason} (is the worker "
                "running with --admin?)"
            ) from None
        return json.loads(raw) if raw else None


def env_token() -> str | None:
    return os.environ.get("MESHCONNECT_ADMIN_TOKEN") or None
