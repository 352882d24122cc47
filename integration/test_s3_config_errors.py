"""Configuration mistakes of the s3 source and sink against a real endpoint: a missing bucket,
an unknown access key id, a wrong secret, credentials without the permission. Each stops the
run with a ConfigError naming the key to check (never the secret). moto checks credentials
only with IAM enforcement on (INITIAL_NO_AUTH_ACTION_COUNT), so those tests start a server of
their own whose first requests (the start probe and the setup) go unchecked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import SECRET_KEY, MotoServer, connection, moto

from meshconnect.testing import run_pipelines, test_registry

__all__ = ["moto"]

#: the start probe, create_bucket, put_object, create_user, create_access_key,
#: create_policy, attach_user_policy
_UNCHECKED = 7


@pytest.fixture
def iam_moto(tmp_path: Path) -> Iterator[tuple[MotoServer, str, dict[str, str]]]:
    """A moto server that checks credentials: (server, bucket, a user's key that may list the
    bucket but not read or write its objects)."""
    server = MotoServer(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": str(_UNCHECKED)})
    try:
        import boto3

        server.client().create_bucket(Bucket="guarded")
        server.client().put_object(Bucket="guarded", Key="in/a.jsonl", Body=b'{"n": 1}\n')
        iam = boto3.client(
            "iam",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="lister")
        key = iam.create_access_key(UserName="lister")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
                    "Resource": "*",
                }
            ],
        }
        arn = iam.create_policy(PolicyName="list", PolicyDocument=json.dumps(policy))["Policy"][
            "Arn"
        ]
        iam.attach_user_policy(UserName="lister", PolicyArn=arn)
        yield server, "guarded", {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        server.stop()


def _pipeline(tmp_path: Path, source: dict[str, Any] | None, sink: dict[str, Any] | None) -> Path:
    doc = {
        "pipelines": [
            {
                "name": "p",
                "source": {"connector": "s3", "config": source}
                if source
                else {"connector": "memory", "config": {"records": [{"n": 1}]}},
                "topic": "t",
                "sinks": [
                    {"name": "out", "connector": "s3", "config": sink}
                    if sink
                    else {"name": "out", "connector": "memory", "config": {"name": "cfg"}}
                ],
            }
        ]
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pipeline.yaml"
    path.write_text(json.dumps(doc))
    return path


async def _failure(path: Path, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="meshconnect"):
        assert await run_pipelines([path], registry=test_registry(), restart_backoff=0.01) != 0
    failed = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert failed, caplog.text
    assert SECRET_KEY not in caplog.text
    return failed[0]


async def test_a_source_on_a_missing_bucket_names_config_bucket(
    moto: MotoServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = {**connection(moto, "no-such-bucket-here"), "prefix": "in/"}
    message = await _failure(_pipeline(tmp_path, source, None), caplog)
    assert "ConfigError" in message and "config.bucket" in message, message
    assert "'no-such-bucket-here' does not exist" in message


@pytest.mark.parametrize("side", ["source", "sink"])
async def test_refused_credentials_name_the_key_to_check(
    iam_moto: tuple[MotoServer, str, dict[str, str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    side: str,
) -> None:
    server, bucket, key = iam_moto
    cases = [
        ({"access_key_id": "AKIAUNKNOWN0000000"}, "config.access_key_id", "InvalidAccessKeyId"),
        (
            {"access_key_id": key["id"], "secret_access_key": "wrong"},
            "config.secret_access_key",
            None,
        ),
        (
            {"access_key_id": key["id"], "secret_access_key": key["secret"]},
            "config.access_key_id",
            "AccessDenied",
        ),
    ]
    for n, (given, field, code) in enumerate(cases):
        config = {**connection(server, bucket), **given}
        if side == "source":
            path = _pipeline(tmp_path / str(n), {**config, "prefix": "in/"}, None)
        else:
            path = _pipeline(tmp_path / str(n), None, {**config, "key_template": "out/"})
        message = await _failure(path, caplog)
        assert "ConfigError" in message and field in message, message
        if code:
            assert code in message, message
        assert key["secret"] not in caplog.text
