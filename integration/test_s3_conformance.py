"""The shipped source and sink conformance suites over the s3 connector, against a private
moto server (real HTTP, the real boto3 client)."""

from __future__ import annotations

import contextlib
import gzip
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import MotoServer, TcpProxy, body, connection, keys, moto

from meshconnect import ConnectorContext, Record, jsonvalue
from meshconnect.connectors.s3.config import S3SinkConfig, S3SourceConfig
from meshconnect.connectors.s3.sink import S3Sink
from meshconnect.connectors.s3.source import S3Source
from meshconnect.testing import SinkConformance, SourceConformance

__all__ = ["moto"]

OBJECTS = 7  # of the source's input, the i-th holding 3 + i records


def context(name: str) -> ConnectorContext:
    return ConnectorContext("test", name, logging.getLogger(f"test.s3.{name}"))


class TestS3SourceConformance(SourceConformance):
    """Seven objects of mixed formats (JSON lines, gzip JSON lines, CSV), batch_size 4, so
    batches end both mid-object and at object ends."""

    @pytest.fixture(autouse=True)
    def _server(self, moto: MotoServer) -> None:
        self.server = moto
        self.buckets: dict[Path, str] = getattr(self, "buckets", {})

    def _bucket(self, tmp_path: Path) -> str:
        if tmp_path not in self.buckets:
            bucket = self.server.bucket()
            client = self.server.client()
            n = 0
            for i in range(OBJECTS):
                rows = [{"n": n + j, "name": f"row {n + j}"} for j in range(3 + i)]
                n += len(rows)
                if i % 3 == 2:
                    text = "n,name\n" + "".join(f"{r['n']},{r['name']}\n" for r in rows)
                    key, data = f"in/{i:03d}.csv", text.encode()
                else:
                    data = b"".join(jsonvalue.dumps(r, newline=True) for r in rows)
                    key = f"in/{i:03d}.jsonl"
                    if i % 3 == 1:
                        key, data = key + ".gz", gzip.compress(data)
                client.put_object(Bucket=bucket, Key=key, Body=data)
            self.buckets[tmp_path] = bucket
        return self.buckets[tmp_path]

    def make_source(self, tmp_path: Path) -> S3Source:
        config = S3SourceConfig(
            **connection(self.server, self._bucket(tmp_path)), prefix="in/", batch_size=4
        )
        return S3Source(config, context("source"))

    def input_ids(self, tmp_path: Path) -> list[str]:
        """``s3://BUCKET/KEY#INDEX`` (docs/connectors/s3.md): the objects in key order, each
        one's records numbered from 0 (a CSV's header is no record)."""
        bucket = self._bucket(tmp_path)
        return [
            f"s3://{bucket}/{key}#{j}"
            for i, key in enumerate(sorted(keys(self.server, bucket, "in/")))
            for j in range(3 + i)
        ]


class TestS3SinkConformance(SinkConformance):
    """Objects rotated every 9 records under a per-test bucket; durable = every object's
    lines, in key order (which is offset order)."""

    @pytest.fixture(autouse=True)
    def _server(self, moto: MotoServer) -> Iterator[None]:
        self.server = moto
        self.buckets: dict[Path, str] = getattr(self, "buckets", {})
        self.proxies: dict[Path, TcpProxy] = {}
        yield
        for proxy in self.proxies.values():
            proxy.down()

    def _bucket(self, tmp_path: Path) -> str:
        if tmp_path not in self.buckets:
            self.buckets[tmp_path] = self.server.bucket()
        return self.buckets[tmp_path]

    def _proxy(self, tmp_path: Path) -> TcpProxy:
        """The sink's way to moto: a proxy the outage closes (moto keeps its data)."""
        if tmp_path not in self.proxies:
            self.proxies[tmp_path] = TcpProxy(self.server.port)
        return self.proxies[tmp_path]

    def make_sink(self, tmp_path: Path) -> S3Sink:
        config = S3SinkConfig(
            **connection(self.server, self._bucket(tmp_path), self._proxy(tmp_path).url),
            key_template="out/{topic}/",
            rotate_records=9,
            compression="gzip",
        )
        return S3Sink(config, context("sink"))

    def durable(self, tmp_path: Path) -> list[Any]:
        bucket = self._bucket(tmp_path)
        out = []
        for key in keys(self.server, bucket, "out/"):
            for line in gzip.decompress(body(self.server, bucket, key)).splitlines():
                out.append(jsonvalue.loads(line)["n"])
        return out

    def poison_record(self, i: int) -> Record | None:
        return Record(float("nan"), id="poison", topic="conformance", offset=i)

    @contextlib.contextmanager
    def _down(self, tmp_path: Path) -> Iterator[None]:
        proxy = self._proxy(tmp_path)
        proxy.down()  # connections refused, open ones cut
        try:
            yield
        finally:
            proxy.up()

    def unavailable(self, tmp_path: Path) -> contextlib.AbstractContextManager[None]:
        return self._down(tmp_path)
