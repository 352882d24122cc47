"""Config models of the ``s3`` source and sink (the docs are generated from these fields).

Key names follow ARCHITECTURE.md §1.5; the connection keys are shared by both."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from meshconnect import ByteSize, ConnectorConfig, Duration
from meshconnect.expr import compile_re2

from .keys import KeyTemplate

__all__ = ["S3Connection", "S3SinkConfig", "S3SourceConfig"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-_]{1,254}$")
MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MAX_PUT = 5 * 1024 * 1024 * 1024  # S3's largest single PUT (and part)
MAX_PARTS = 10_000  # S3's most parts of one multipart upload


class S3Connection(ConnectorConfig):
    """Where the objects live and how to reach them (shared by the source and the sink)."""

    bucket: str = Field(description="The bucket name (it must exist).")
    endpoint_url: str | None = Field(
        default=None,
        description=(
            "An S3-compatible endpoint, e.g. `http://127.0.0.1:9000` (MinIO) or "
            "`https://<account>.r2.cloudflarestorage.com` (R2): scheme, host and port only "
            "(the bucket goes in `bucket`, not in a path). Unset: AWS S3 for `region`."
        ),
    )
    region: str | None = Field(
        default=None,
        description="The region (`us-east-1`, `auto` for R2). Unset: boto3's default chain.",
    )
    access_key_id: str | None = Field(
        default=None,
        description=(
            "Access key id. Unset (with `secret_access_key` unset too): boto3's standard "
            "credential chain (environment, `~/.aws`, instance or container role)."
        ),
    )
    secret_access_key: SecretStr | None = Field(
        default=None,
        description="Secret access key (a secret: use `${env:NAME}`; never printed).",
    )
    session_token: SecretStr | None = Field(
        default=None, description="Session token of temporary credentials (a secret)."
    )
    path_style: bool = Field(
        default=False,
        description=(
            "Address the bucket in the path (`http://host/bucket/key`) instead of the host "
            "name (`http://bucket.host/key`); MinIO and most self-hosted servers need it."
        ),
    )
    connect_timeout: Duration = Field(
        default=10.0, gt=0, description="Seconds to wait for a connection to the endpoint."
    )
    read_timeout: Duration = Field(
        default=60.0, gt=0, description="Seconds to wait for a response once connected."
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        """An ``http(s)://host[:port]`` URL: without a scheme boto3 failed each start with
        "Invalid endpoint" (a restart loop, at ``run``), and a path (the bucket pasted into
        the URL: ``https://ACCOUNT.r2.cloudflarestorage.com/archive``) sent every request
        to the wrong place (NoSuchKey on a listing)."""
        from urllib.parse import urlsplit

        from meshconnect.httplisten import check_http_url

        if value is None:
            return value
        check_http_url(value)
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 (raises on a port that is no number or out of range)
        except ValueError as exc:
            raise ValueError(f"{value!r}: {exc}") from None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"{value!r}: give the endpoint alone (scheme, host, port), without a path: "
                "the bucket goes in `bucket`"
            )
        return value

    @field_validator("access_key_id")
    @classmethod
    def _key_id_set(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty: give the key id (an environment variable that is set)")
        return value

    @field_validator("secret_access_key", "session_token")
    @classmethod
    def _secret_set(cls, value: SecretStr | None) -> SecretStr | None:
        from meshconnect.httplisten import check_secret

        return None if value is None else check_secret(value)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not _BUCKET.match(value):
            raise ValueError(
                f"{value!r} is not a bucket name (3 to 255 lower-case letters, digits, '.', '-')"
            )
        return value

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Connection:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "give access_key_id and secret_access_key together, or neither (boto3's "
                "credential chain)"
            )
        return self


class S3SinkConfig(S3Connection):
    """Write records to objects: partitioned by a key template, rotated by count, size or
    time, exactly once across restarts."""

    key_template: str = Field(
        default="{topic}/",
        description=(
            "The key prefix of each object, a template (see 'Key templates'): "
            "`{topic}/{time:%Y/%m/%d/%H}/`, `{topic}/country={data.country}/`; a `/` is "
            "added when it does not end in one. The sink appends a deterministic name made of "
            "the topic and the offset of the first record in the object plus the extension: "
            "`orders+00000000000000001000.jsonl.gz`."
        ),
    )
    format: Literal["json", "csv", "parquet", "cloudevents"] = Field(
        default="json",
        description=(
            "`json`: JSON lines, one record's data per line (`.jsonl`). `cloudevents`: JSON "
            "lines of whole structured CloudEvents (`.jsonl`). `csv`: one row per record, "
            "header once per object; data must be an object (nested values as JSON text; a "
            "record with other fields starts a new object). `parquet` (extra `[parquet]`): "
            "columns from the records' fields; a record whose fields or value types differ "
            "starts a new object."
        ),
    )
    compression: Literal["none", "gzip"] = Field(
        default="none",
        description=(
            "`gzip` compresses JSON lines and CSV objects (`.gz` appended to the name); for "
            "Parquet it is the column codec (the name stays `.parquet`)."
        ),
    )
    rotate_records: int | None = Field(
        default=None,
        ge=1,
        description="Close an object once it holds this many records. Unset: no count limit.",
    )
    rotate_bytes: ByteSize | None = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description=(
            "Close an object before it would grow past this size, counted before compression "
            "(for Parquet: the records' size as JSON). A record larger than this gets an "
            "object of its own. Also bounds the memory an open object takes. null (no size "
            "limit) only with rotate_records or rotate_interval set."
        ),
    )
    rotate_interval: Duration | None = Field(
        default=600.0,
        gt=0,
        description=(
            "Close an object this long after its first record, even when no further record "
            "arrives (an idle partition is closed by the clock). Unset: only count and size "
            "close objects (and the end of a bounded run)."
        ),
    )
    multipart_threshold: ByteSize = Field(
        default=16 * 1024 * 1024,
        ge=MIN_PART,
        le=MAX_PUT,
        description=(
            "Objects larger than this (after compression) are uploaded in parts "
            "(multipart upload); smaller ones with one PUT. 5MiB to 5GiB (S3 refuses a larger "
            "PUT)."
        ),
    )
    part_size: ByteSize = Field(
        default=8 * 1024 * 1024,
        ge=MIN_PART,
        le=5 * 1024 * 1024 * 1024,
        description=(
            "The size of each part of a multipart upload (5MiB to 5GiB); larger for an object "
            "that would need more than S3's 10,000 parts."
        ),
    )
    upload_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="How many objects (or parts of one object) are uploaded at once.",
    )
    abort_orphan_uploads: bool = Field(
        default=True,
        description=(
            "At start, abort the unfinished multipart uploads (left by a crash mid-upload; "
            "storage keeps billing them otherwise) whose keys this sink could have made: "
            "the template's shape (its literal text, each placeholder any text without '/', "
            "a time/now placeholder its format's shape, {topic} the object name's topic) "
            "followed by an object name TOPIC+<20 digits><extension>. Other uploads stay. "
            "Two sinks whose templates can render the same keys share them: give each sink "
            "its own prefix."
        ),
    )

    @model_validator(mode="after")
    def _rotation_bounded(self) -> S3SinkConfig:
        if self.rotate_bytes is None and self.rotate_records is None and not self.rotate_interval:
            raise ValueError(
                "rotate_bytes: null with neither rotate_records nor rotate_interval would keep "
                "one object open in memory for the whole run: set a size, or another limit"
            )
        return self

    @field_validator("key_template")
    @classmethod
    def _template_parses(cls, value: str) -> str:
        template = KeyTemplate(value)  # raises ValueError naming the problem
        literal = "".join(part if isinstance(part, str) else "x" for part in template.parts)
        if value.lower().startswith("s3://"):
            raise ValueError(
                f"{value!r} is a URL: give the key prefix alone (the bucket goes in `bucket`)"
            )
        if literal.startswith("/") or "//" in literal:
            # an empty level: consoles show a folder without a name, a source's prefix
            # `orders/` does not find `/orders/...`
            raise ValueError(
                f"{value!r} makes keys with an empty level ('/' at the start or '//'): drop "
                "the extra '/'"
            )
        # A level of its own for the object names: `{topic}/{time:%H}` would otherwise make
        # `orders/14orders+….jsonl`, outside the `orders/14/` a reader lists.
        return value if value == "" or value.endswith("/") else value + "/"

    @property
    def template(self) -> KeyTemplate:
        """The parsed ``key_template``."""
        return KeyTemplate(self.key_template)


class S3SourceConfig(S3Connection):
    """Read objects under a prefix in key order: JSON lines, CSV or Parquet, gzip; resumes in
    the middle of an object."""

    prefix: str = Field(
        default="",
        description=(
            "Read the objects whose keys start with this (e.g. `archive/orders/`; a key "
            "prefix, not an `s3://` URL). A first listing that finds nothing under it is a "
            "warning."
        ),
    )
    pattern: str | None = Field(
        default=None,
        description=(
            "Only keys that match this regular expression (searched in the key after "
            "`prefix`; RE2 syntax, linear in the key, no lookaround or backreferences), e.g. "
            "`\\.jsonl(\\.gz)?$`."
        ),
    )
    format: Literal["auto", "json", "csv", "parquet", "cloudevents"] = Field(
        default="auto",
        description=(
            "`auto`: by the extension (`.jsonl`/`.json`/`.ndjson` JSON lines, `.csv`, "
            "`.parquet`; a key with none of them is skipped with a warning). `json`: each "
            "line's JSON value is a record's data. `csv`: each row an object keyed by the "
            "header (values stay strings). `parquet`: each row an object. `cloudevents`: each "
            "line a structured CloudEvent, kept as it is."
        ),
    )
    compression: Literal["auto", "none", "gzip"] = Field(
        default="auto",
        description=(
            "`auto`: gzip when the key ends in `.gz`; or `none`/`gzip` for every key (a "
            "Parquet file is read as it is: its gzip is the column codec, as the sink writes "
            "it with `compression: gzip`)."
        ),
    )
    follow: bool = Field(
        default=False,
        description=(
            "false: bounded, read the objects there at start and the ones that appear while "
            "reading, then the source is done. true: keep listing every `poll_interval` for "
            "new objects (keys after the last one read)."
        ),
    )
    poll_interval: Duration = Field(
        default=5.0, gt=0, description="Seconds between listings once every object is read."
    )
    batch_size: int = Field(
        default=5000, ge=1, description="The most records in one batch (one store transaction)."
    )
    max_object_bytes: ByteSize = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description=(
            "The largest object read, in bytes after decompression (the whole object is held "
            "in memory): a larger one, or a gzip object that decompresses to more, is one "
            "failure (the `errors:` policy) and not downloaded or decompressed further."
        ),
    )
    after_read: Literal["keep", "delete", "move"] = Field(
        default="keep",
        description=(
            "What to do with an object once its records are committed to the mesh: `keep` it, "
            "`delete` it, or `move` it under `move_to`."
        ),
    )
    move_to: str | None = Field(
        default=None,
        description=(
            "For `after_read: move`: the prefix that replaces `prefix` in the moved key "
            "(e.g. `done/`). Neither of `move_to` and `prefix` may start with the other (a "
            "moved object would land under `prefix` again)."
        ),
    )
    type: str = Field(
        default="meshconnect.s3.object",
        min_length=1,
        description="CloudEvent `type` of the records (not used by `format: cloudevents`).",
    )
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="CSV only: the field delimiter."
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_key_prefix(cls, value: str) -> str:
        if value.lower().startswith("s3://"):
            raise ValueError(
                f"{value!r} is a URL: give the key prefix alone (the bucket goes in `bucket`), "
                "e.g. 'orders/2024/'"
            )
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_re2(value)
            except ValueError as exc:
                raise ValueError(
                    f"not a regular expression RE2 can run: {exc} (no lookaround or backreferences)"
                ) from None
        return value

    @model_validator(mode="after")
    def _move_needs_target(self) -> S3SourceConfig:
        if self.after_read == "move":
            if not self.move_to:
                raise ValueError("after_read: move needs move_to (the prefix to move to)")
            if self.move_to.startswith(self.prefix):
                raise ValueError(
                    f"move_to {self.move_to!r} starts with prefix {self.prefix!r}: moved "
                    "objects would be read again"
                )
            if self.prefix.startswith(self.move_to):
                # prefix data/in/, move_to data/: data/in/in/a.jsonl moves to data/in/a.jsonl,
                # under the prefix again: read twice
                raise ValueError(
                    f"prefix {self.prefix!r} starts with move_to {self.move_to!r}: an object "
                    f"under {self.prefix + self.prefix[len(self.move_to) :]!r} would move back "
                    "under the prefix and be read again; move to a prefix outside it"
                )
        return self
