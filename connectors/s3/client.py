"""The boto3 client of both directions and the mapping of botocore's errors onto meshconnect's
taxonomy (imported only when a pipeline uses the connector: it imports boto3)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions as bex
from botocore.config import Config

from meshconnect import ConfigError, DataError, MeshconnectError, RetriableError

from .config import S3Connection

__all__ = ["classify_s3_error", "config_problem", "explained", "make_client"]

#: S3 error codes that a later attempt may get past (throttling, a server's bad moment).
_RETRIABLE_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "503",
    "500",
    "502",
    "504",
}
#: Codes that no retry fixes: the configuration is wrong.
_CONFIG_CODES = {
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "InvalidBucketName",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "ExpiredToken",
    "InvalidToken",
    "403",
}


_session: Any = None
#: The SDK's loggers: at DEBUG they print request headers, the session token among them
#: (``x-amz-security-token``), whatever the worker's ``--log-level``.
QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")


def quiet_sdk_loggers() -> None:
    """Cap the SDK's loggers (:data:`QUIET_LOGGERS`) at INFO: their DEBUG lines carry
    secrets (the session token in request headers), so ``--log-level debug`` of the worker
    must not reach them. A level set above INFO is kept."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def make_client(config: S3Connection) -> Any:
    """A boto3 S3 client for ``config`` (clients are thread-safe), botocore's standard retry
    mode (3 attempts) under meshconnect's own retries, and the pool sized for concurrent
    uploads; the SDK's loggers are capped at INFO (:func:`quiet_sdk_loggers`). Clients come
    from one shared session, which loads S3's service model once (a
    fresh session spends ~0.4 s on it); call this from the event loop's thread only."""
    global _session
    quiet_sdk_loggers()
    if _session is None:
        _session = boto3.session.Session()
    session = _session
    options: dict[str, Any] = {
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": config.connect_timeout,
        "read_timeout": config.read_timeout,
        "max_pool_connections": 64,
    }
    if config.path_style:
        options["s3"] = {"addressing_style": "path"}
    kwargs: dict[str, Any] = {"config": Config(**options)}
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    if config.region:
        kwargs["region_name"] = config.region
    if config.access_key_id is not None and config.secret_access_key is not None:
        kwargs["aws_access_key_id"] = config.access_key_id
        kwargs["aws_secret_access_key"] = config.secret_access_key.get_secret_value()
        if config.session_token is not None:
            kwargs["aws_session_token"] = config.session_token.get_secret_value()
    return session.client("s3", **kwargs)


def error_code(exc: BaseException) -> str | None:
    """The S3 error code of a ``ClientError`` (``NoSuchKey``, ``SlowDown``, ``404``...)."""
    if isinstance(exc, bex.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) or None
    return None


def classify_s3_error(exc: BaseException) -> type[MeshconnectError] | None:
    """botocore's exceptions onto the taxonomy: connection trouble, timeouts, throttling and
    5xx are retriable; missing buckets, refused credentials and signature errors are config
    errors (no retry fixes them); missing credentials too. None: not botocore's."""
    if isinstance(
        exc,
        bex.EndpointConnectionError
        | bex.ConnectionClosedError
        | bex.ReadTimeoutError
        | bex.ConnectTimeoutError
        | bex.ResponseStreamingError
        | bex.IncompleteReadError,
    ):
        return RetriableError
    if isinstance(exc, bex.HTTPClientError | bex.ConnectionError):
        return RetriableError
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return ConfigError
    if isinstance(exc, bex.ClientError):
        code = error_code(exc) or ""
        if code in _RETRIABLE_CODES:
            return RetriableError
        if code in _CONFIG_CODES:
            return ConfigError
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status >= 500 or status == 429:
            return RetriableError
        if code in ("EntityTooLarge", "InvalidArgument", "KeyTooLongError"):
            return DataError
        return None
    if isinstance(exc, bex.BotoCoreError):
        return None
    return None


def config_problem(exc: BaseException, config: S3Connection) -> str | None:
    """What ``exc`` says is wrong in the configuration, naming the key to check (a missing
    bucket: ``config.bucket``; an unknown key id: ``config.access_key_id``; a bad signature:
    ``config.secret_access_key``; a bucket of another region: ``config.region``...), or None
    when it is no configuration error. Never the secret itself."""
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return (
            f"no credentials ({exc}): set config.access_key_id and config.secret_access_key, "
            "or give them to boto3's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, a "
            "role)"
        )
    if not isinstance(exc, bex.ClientError):
        return None
    code = error_code(exc) or ""
    message = str(exc.response.get("Error", {}).get("Message") or "")
    said = f"{exc.operation_name} answered {code}" + (f": {message}" if message else "")
    bucket = config.bucket
    if code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist (config.bucket; {said})"
    if code == "InvalidBucketName":
        return f"bucket {bucket!r} is not a bucket name the endpoint takes (config.bucket; {said})"
    if code == "InvalidAccessKeyId":
        return f"the endpoint does not know the access key id (config.access_key_id; {said})"
    if code == "SignatureDoesNotMatch":
        return (
            f"the endpoint refused the request's signature: check config.secret_access_key ({said})"
        )
    if code in ("ExpiredToken", "InvalidToken"):
        return f"the session token was refused (config.session_token; {said})"
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "301"):
        region = config.region or "unset"
        return (
            f"bucket {bucket!r} is not in region {region} or not at this endpoint: check "
            f"config.region and config.endpoint_url ({said})"
        )
    if code == "IllegalLocationConstraintException":
        return f"bucket {bucket!r} is in another region: check config.region ({said})"
    if code in ("AccessDenied", "AllAccessDisabled", "403"):
        return (
            f"access to bucket {bucket!r} denied: check the permissions of the credentials "
            f"(config.access_key_id) for {exc.operation_name} ({said})"
        )
    return None


def explained(exc: BaseException, config: S3Connection, who: str) -> BaseException:
    """``exc`` as a :class:`ConfigError` naming the key to check when it is a configuration
    error (:func:`config_problem`); else ``exc`` itself."""
    problem = config_problem(exc, config)
    if problem is None:
        return exc
    error = ConfigError(f"{who}: {problem}")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def explaining(config: S3Connection, who: str) -> Iterator[None]:
    """Raise what the block raises as :func:`explained` has it (a configuration error of S3
    as the ``ConfigError`` naming the key to check, chained to the original)."""
    try:
        yield
    except Exception as exc:
        error = explained(exc, config, who)
        if error is exc:
            raise
        raise error from exc
