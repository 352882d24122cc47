"""Config models of the ``mongodb`` source and sink (the docs are generated from these fields)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from meshconnect import ConnectorConfig, Duration

__all__ = ["MongoConnection", "MongoSinkConfig", "MongoSourceConfig"]


class MongoConnection(ConnectorConfig):
    """Where the server is: a connection string, and credentials apart from it."""

    uri: str = Field(
        "mongodb://localhost:27017",
        description=(
            "`mongodb://HOST:PORT[,HOST:PORT…]/?replicaSet=…&tls=true` or `mongodb+srv://…` "
            "(every connection-string option pymongo takes). Credentials go in "
            "`username`/`password`, not in the URI."
        ),
    )
    username: str | None = Field(None, description="User to authenticate as.")
    password: SecretStr | None = Field(None, description="Its password; `${env:…}`.")
    auth_source: str | None = Field(
        None, description="Database holding the user (default: admin, or the URI's)."
    )
    timeout: Duration = Field(10.0, description="Server selection and connect timeout.")
    json_mode: Literal["relaxed", "canonical"] = Field(
        "relaxed",
        description=(
            "How BSON types map to JSON (docs/connectors/mongodb.md#bson-and-json): "
            "`relaxed` (readable; numbers as numbers, Decimal128 exact) or `canonical` "
            '(MongoDB Extended JSON canonical: every type kept, e.g. `{"$numberLong": '
            '"5"}`).'
        ),
    )

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mongodb", "mongodb+srv"):
            raise ValueError(
                f"the scheme must be mongodb:// or mongodb+srv://, not {parts.scheme!r}"
            )
        if "@" in parts.netloc:
            raise ValueError(
                "credentials in the URI would show in messages: put them in `username` and "
                "`password` (e.g. password: ${env:MONGODB_PASSWORD})"
            )
        return value


class MongoSinkConfig(MongoConnection):
    """The `config:` of the mongodb sink."""

    database: str = Field(description="The database written to.")
    collection: str | None = Field(
        None,
        description=(
            "Collection (template, e.g. `{subject}`). Default: the source table's name for "
            "change records of the `canal` source, else the record's topic."
        ),
    )
    mode: Literal["insert", "upsert", "replace"] = Field(
        "upsert",
        description=(
            "`insert`: a new document (a duplicate `_id` fails that record alone, unless the "
            "stored document is the same: a re-delivery); `upsert`: `$set` the fields into "
            "the document with that `_id` (created if missing); `replace`: the document "
            "becomes the record's data. Deletes and tombstones delete by `_id` in every mode."
        ),
    )
    key: list[str] | None = Field(
        None,
        description=(
            "Fields of data making `_id` (one: its value; several: a sub-document "
            "`{a: …, b: …}`). Default: the primary key of change records of the `canal` "
            "source (its columns for `format: canal`, else the `partitionkey` text), "
            "`data._id`, else the `partitionkey` extension, else (`insert`) the record's id."
        ),
    )
    cdc: bool = Field(
        True,
        description=(
            "Apply change records of the `canal` source (any format) as upserts and "
            "deletes by primary key; false writes them as plain records."
        ),
    )


class MongoSourceConfig(MongoConnection):
    """The `config:` of the mongodb source."""

    database: str = Field(description="The database read.")
    collection: str = Field(description="The collection read.")
    mode: Literal["change_stream", "poll"] = Field(
        "change_stream",
        description=(
            "`change_stream`: an initial copy, then the change stream (replica sets and "
            "sharded clusters); `poll`: query documents past the last value of `poll_field` "
            "(standalone servers too)."
        ),
    )
    poll_field: str = Field(
        "_id",
        description=(
            "`poll`: a field whose value only grows (ObjectId `_id`, a sequence, an update "
            "time); ties are broken by `_id`."
        ),
    )
    poll_interval: Duration = Field(1.0, description="`poll`: the wait when nothing is new.")
    initial_copy: bool = Field(
        True,
        description=(
            "`change_stream`: copy the documents already there (by `_id`) before streaming, "
            "like a snapshot; false: only changes from the first start on."
        ),
    )
    full_document: Literal["updateLookup", "whenAvailable", "required", "default"] = Field(
        "updateLookup",
        description=(
            "`change_stream`: what an update event carries: `updateLookup` the document as "
            "it is when the event is read; `default` only the changed fields."
        ),
    )
    batch_size: int = Field(500, ge=1, description="Documents or events per batch at most.")
    until_end: bool = Field(
        False,
        description="`poll`: bounded: end once no document is past the last one read.",
    )
    type: str | None = Field(
        None,
        description=(
            "The records' CloudEvent `type`; default `mongodb.<operation>` (`mongodb.insert`, "
            "`mongodb.update`, `mongodb.replace`, `mongodb.delete`, `mongodb.read` for "
            "copied or polled documents)."
        ),
    )

    @model_validator(mode="after")
    def _modes(self) -> MongoSourceConfig:
        if self.mode == "change_stream" and self.until_end:
            raise ValueError("until_end is for mode poll (a change stream never ends)")
        return self
