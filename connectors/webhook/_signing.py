"""HMAC signatures of request bodies, written by the http sink and checked by the webhook.

``plain``: ``header: prefix + digest(body)`` (GitHub's ``X-Hub-Signature-256: sha256=HEX``
with ``prefix: "sha256="``). ``timestamped`` follows Stripe's scheme
(https://docs.stripe.com/webhooks#verify-manually): ``header: t=UNIX,v1=DIGEST[,v1=...]``
where the digest is of ``t + "." + body``, refused when ``t`` is further than ``tolerance``
seconds from now. Comparisons are constant-time (:func:`hmac.compare_digest`). Nothing here
logs or returns a secret or a digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .config import HmacConfig

__all__ = ["sign", "verify"]


def _digest(secret: bytes, message: bytes, config: HmacConfig) -> str:
    raw = hmac.new(secret, message, getattr(hashlib, config.algorithm)).digest()
    if config.encoding == "base64":
        return base64.b64encode(raw).decode("ascii")
    return raw.hex()


def sign(body: bytes, config: HmacConfig, now: float | None = None) -> str:
    """The signature header's value for ``body``, with the first secret."""
    secret = config.secrets()[0]
    if config.scheme == "timestamped":
        stamp = str(int(time.time() if now is None else now))
        return f"t={stamp},v1={_digest(secret, stamp.encode() + b'.' + body, config)}"
    return config.prefix + _digest(secret, body, config)


def verify(header: str | None, body: bytes, config: HmacConfig, now: float | None = None) -> str:
    """``""`` when ``header`` is a valid signature of ``body`` under one of the secrets,
    otherwise why not (for the 401's problem body: never the expected value)."""
    if not header:
        return f"missing signature header {config.header}"
    secrets = config.secrets()
    if config.scheme == "timestamped":
        stamp = None
        given: list[str] = []
        for item in header.split(","):
            key, _, value = item.strip().partition("=")
            if key == "t":
                stamp = value
            elif key == "v1":
                given.append(value)
        if stamp is None or not stamp.isdigit() or not given:
            return f"{config.header}: expected t=UNIX_SECONDS,v1=SIGNATURE"
        skew = abs((time.time() if now is None else now) - int(stamp))
        if skew > config.tolerance:
            return f"{config.header}: timestamp outside the tolerance of {config.tolerance:g}s"
        message = stamp.encode() + b"." + body
        presented_all = [_presented(g, config) for g in given]
        for secret in secrets:
            expected = _digest(secret, message, config)
            if any(hmac.compare_digest(expected.encode(), g) for g in presented_all):
                return ""
        return f"{config.header}: signature does not match"
    if not header.startswith(config.prefix):
        return f"{config.header}: expected the prefix {config.prefix!r}"
    presented = _presented(header[len(config.prefix) :], config)
    for secret in secrets:
        if hmac.compare_digest(_digest(secret, body, config).encode(), presented):
            return ""
    return f"{config.header}: signature does not match"


def _presented(value: str, config: HmacConfig) -> bytes:
    """A presented digest, for comparing with :func:`_digest`'s: hex in either case (senders
    differ: RFC 4648 section 8 allows both; ours is lower-case), base64 as it is."""
    value = value.strip()
    if config.encoding == "hex":
        value = value.lower()
    return value.encode("utf-8", "replace")
