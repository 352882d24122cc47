"""mask with mode encrypt / decrypt: AES-GCM with a key from the environment."""

from __future__ import annotations

import base64
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from test_transforms import SPECS, build, chain, fails_unchanged

from meshconnect.config.loader import load_pipeline_files, redacted_config
from meshconnect.errors import ValidationErrors
from meshconnect.plugins import load_registry
from meshconnect.records import Record
from meshconnect.transforms.masking import CIPHERTEXT_PREFIX

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()


def person() -> Record:
    return Record({"email": "ann@example.com", "age": 41, "card": {"number": "4111"}, "x": None})


def test_encrypt_replaces_values_with_versioned_ciphertexts() -> None:
    record = person()

    build("mask", fields=["data.email", "data.card.number"], mode="encrypt", key=KEY).apply(record)

    assert [record.data["email"][:7], record.data["card"]["number"][:7]] == [CIPHERTEXT_PREFIX] * 2


def test_encrypt_then_decrypt_gives_back_every_value_with_its_type() -> None:
    record = person()
    fields = ["data.email", "data.age", "data.card", "data.x"]

    build("mask", fields=fields, mode="encrypt", key=KEY).apply(record)
    build("mask", fields=fields, mode="decrypt", key=KEY).apply(record)

    assert record.data == person().data


def test_encrypting_one_value_twice_gives_different_ciphertexts() -> None:
    transform = build("mask", fields=["data.email"], mode="encrypt", key=KEY)
    first, second = person(), person()
    transform.apply(first)
    transform.apply(second)

    assert first.data["email"] != second.data["email"]


def test_the_ciphertext_format_is_prefix_base64_of_nonce_ciphertext_and_tag() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    record = Record({"email": "ann@example.com"})
    build("mask", fields=["data.email"], mode="encrypt", key=KEY).apply(record)

    blob = base64.b64decode(record.data["email"].removeprefix("enc:v1:"))
    plain = AESGCM(base64.b64decode(KEY)).decrypt(blob[:12], blob[12:], None)

    assert plain == b'"ann@example.com"'


def test_decrypt_with_the_wrong_key_is_a_data_error_and_changes_nothing() -> None:
    record = person()
    build("mask", fields=["data.email"], mode="encrypt", key=KEY).apply(record)

    fails_unchanged(
        build("mask", fields=["data.email"], mode="decrypt", key=OTHER_KEY),
        record,
        "mask data.email: cannot decrypt: wrong key, or the ciphertext was changed",
    )


def test_decrypt_of_a_changed_ciphertext_is_a_data_error() -> None:
    record = person()
    build("mask", fields=["data.email"], mode="encrypt", key=KEY).apply(record)
    text = record.data["email"]
    record.data["email"] = text[:-6] + ("A" if text[-6] != "A" else "B") + text[-5:]

    fails_unchanged(
        build("mask", fields=["data.email"], mode="decrypt", key=KEY), record, "was changed"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("plain text", "not an enc:v1:"),
        (42, "cannot decrypt a number"),
        ("enc:v1:%%%", "not valid base64"),
        ("enc:v1:AAAA", "too short"),
    ],
)
def test_decrypt_of_what_is_not_a_ciphertext_is_a_data_error(value: object, message: str) -> None:
    fails_unchanged(
        build("mask", fields=["data.a", "data.b"], mode="decrypt", key=KEY),
        Record({"a": value, "b": "enc:v1:irrelevant"}),
        message,
    )


def test_encrypt_leaves_missing_fields_alone_and_fails_on_wrong_shapes() -> None:
    record = Record({"card": "4111"})

    fails_unchanged(
        build("mask", fields=["data.email", "data.card.number"], mode="encrypt", key=KEY),
        record,
        "data.card is a string",
    )


def test_encrypt_with_when() -> None:
    records = [Record({"email": "a@x", "eu": True}), Record({"email": "b@x", "eu": False})]

    kept, _ = chain(
        build("mask", fields=["data.email"], mode="encrypt", key=KEY), when=["data.eu"]
    ).process(records)

    assert [r.data["email"].startswith(CIPHERTEXT_PREFIX) for r in kept] == [True, False]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "encrypt"}, "mode encrypt needs a key"),
        ({"mode": "decrypt", "key": "c2hvcnQ="}, "16, 24 or 32 random bytes"),
        ({"mode": "encrypt", "key": "not base64!"}, "16, 24 or 32 random bytes"),
        ({"mode": "hash", "key": KEY}, "key only applies to modes encrypt and decrypt"),
        ({"mode": "encrypt", "key": KEY, "salt": "s"}, "salt only applies to mode hash"),
    ],
)
def test_encrypt_options_are_checked(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["mask"].options_model(fields=["data.x"], **options)


def test_a_bad_key_is_never_shown(tmp_path: Path) -> None:
    secret = "c2VjcmV0LXZhbHVl"  # base64, but of 12 bytes
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                transforms:
                  - {type: mask, fields: [data.email], mode: encrypt, key: "${env:MASK_KEY}"}
            """
        )
    )

    with pytest.raises(ValidationErrors) as caught:
        load_pipeline_files([tmp_path / "p.yaml"], load_registry(), env={"MASK_KEY": secret})

    assert ("16, 24 or 32" in str(caught.value), secret in str(caught.value)) == (True, False)


def test_the_key_comes_from_the_environment_and_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        textwrap.dedent(
            """
            pipelines:
              - name: p
                source: {connector: file, config: {path: in.jsonl}}
                transforms:
                  - {type: mask, fields: [data.email], mode: encrypt, key: "${env:MASK_KEY}"}
                  - {type: mask, fields: [data.email], mode: decrypt, key: "${env:MASK_KEY}"}
            """
        )
    )
    key = base64.b64encode(os.urandom(16)).decode()
    loaded = load_pipeline_files([tmp_path / "p.yaml"], load_registry(), env={"MASK_KEY": key})
    record = Record({"email": "ann@example.com"})

    kept, _ = loaded.pipelines[0].chain.process([record])

    assert (kept[0].data, key in str(redacted_config(loaded))) == (
        {"email": "ann@example.com"},
        False,
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "typed", "replacement": ""}, "must not be empty"),
        ({"mode": "redact", "replacement": 0}, "replacement of mode redact is text"),
        ({"mode": "typed", "replacement": True}, "replacement"),
        ({"mode": "typed", "replacement": [0]}, "replacement"),
        ({"mode": "hash", "replacement": "x"}, "only applies to modes redact and typed"),
    ],
)
def test_mask_replacement_is_checked_when_the_file_is_validated(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SPECS["mask"].options_model(fields=["data.x"], **options)


def test_typed_mask_makes_fresh_empty_arrays_and_objects_per_record() -> None:
    mask = build("mask", fields=["data.a", "data.o"], mode="typed")
    first, second = Record({"a": [1], "o": {"k": 1}}), Record({"a": [2], "o": {"k": 2}})

    mask.apply(first)
    mask.apply(second)
    first.data["a"].append(0)
    first.data["o"]["k"] = "v"

    assert second.data == {"a": [], "o": {}}
