"""The ``mask`` transform: redact, hash, encrypt or decrypt sensitive values (the PII policy).

Modes
    ``redact``   the value becomes ``replacement`` (``****``).
    ``typed``    the value becomes the empty value of its own type, as Kafka Connect's
                 ``MaskField`` does: ``0`` (an integer), ``0.0`` (a float, or a Decimal),
                 ``false``, ``""``, ``[]`` or ``{}``. With ``replacement`` (a number, or text)
                 numbers and strings become it, read as their own type: text through the
                 number grammar of :mod:`meshconnect.numparse` for a number (an integer field
                 takes a whole number only), a number as text for a string; a boolean, an
                 array or an object with a ``replacement`` is a DataError, as in Kafka.
    ``hash``     the value becomes the hex SHA-256 of ``salt`` + value: the same value always
                 gives the same hash, so masked values can still be joined and counted.
    ``encrypt``  the value becomes a ciphertext string (AES-GCM, key from ``key``); reversible
                 by whoever holds the key, with ``decrypt``.
    ``decrypt``  the way back: a ciphertext string becomes the value it was made from.

Ciphertext format (version 1)
    ``enc:v1:`` followed by the standard base64 (with padding) of ``nonce || ciphertext || tag``:
    a 12-byte random nonce, the AES-GCM encryption of the value's compact JSON (UTF-8, so a
    number comes back a number and an object an object), and the 16-byte GCM tag. No
    associated data. The key is 16, 24 or 32 bytes (AES-128/192/256), given base64-encoded,
    normally as ``${env:NAME}``. A wrong key, or a ciphertext that was changed, fails the GCM
    check: a :class:`~meshconnect.errors.DataError`, never a wrong value.

A value that is missing or ``null`` is left alone in every mode, and so is a ``null`` payload
(a tombstone). A path through a value of the wrong shape is a DataError, raised before the
record is changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, StrictFloat, StrictInt, StrictStr, model_validator

from .. import jsonvalue
from ..api import TransformSpec
from ..errors import DataError
from ..numparse import parse_number
from . import Transform
from ._common import Options, PathOption, kind_of, nested, own, set_all
from .paths import FieldPath, parse_path

if TYPE_CHECKING:
    from ..expr import Compiler
    from ..records import Record

__all__ = ["CIPHERTEXT_PREFIX", "SPECS", "Mask", "MaskOptions", "decrypt_value", "encrypt_value"]

#: What every version-1 ciphertext starts with.
CIPHERTEXT_PREFIX = "enc:v1:"
_NONCE = 12
_TAG = 16
_KEY_SIZES = (16, 24, 32)

#: Turns a value into its masked form (never called with ``None``).
Masker = Callable[[Any], Any]


def _key_bytes(key: SecretStr) -> bytes:
    """The AES key given base64-encoded; ValueError (never showing it) when it is not one."""
    try:
        raw = base64.b64decode(key.get_secret_value().strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in _KEY_SIZES:
        raise ValueError(
            "key must be the base64 of 16, 24 or 32 random bytes (AES-128/192/256); make one "
            'with: python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
        )
    return raw


class MaskOptions(Options):
    fields: list[PathOption] = Field(
        min_length=1, description="Paths of the values to mask, e.g. data.email."
    )
    mode: Literal["redact", "typed", "hash", "encrypt", "decrypt"] = Field(
        "redact",
        description="redact: replace the value with `replacement`; typed: replace it with the "
        "empty value of its own type (0, 0.0, false, '', [], {}) or with `replacement` read as "
        "that type, as Kafka's MaskField; hash: replace it with the hex SHA-256 of salt + "
        "value (the same value always gives the same hash); encrypt: replace it with an "
        "AES-GCM ciphertext string (`enc:v1:…`); decrypt: the way back.",
    )
    replacement: StrictStr | StrictInt | StrictFloat | None = Field(
        None,
        description="What a masked value becomes: mode redact, text (default '****'); mode "
        "typed, a number or text that numbers and strings become (default: the empty value).",
    )
    salt: SecretStr | None = Field(
        None,
        description="Secret prefix hashed with each value (mode hash), e.g. ${env:MASK_SALT}. "
        "Without it, hashes of guessable values (emails, phone numbers) can be reversed.",
    )
    key: SecretStr | None = Field(
        None,
        description="The AES key, base64 of 16, 24 or 32 bytes (modes encrypt and decrypt), "
        "e.g. ${env:MASK_KEY}.",
    )

    @model_validator(mode="after")
    def _check_mode_options(self) -> MaskOptions:
        given = "replacement" in self.model_fields_set and self.replacement is not None
        if self.mode not in ("redact", "typed") and given:
            raise ValueError(f"replacement only applies to modes redact and typed, not {self.mode}")
        if self.mode == "redact" and given and not isinstance(self.replacement, str):
            raise ValueError("replacement of mode redact is text (quote it: '0')")
        if self.mode == "typed" and self.replacement in ("",):
            raise ValueError("replacement of mode typed must not be empty (leave it out for '')")
        if self.mode != "hash" and "salt" in self.model_fields_set:
            raise ValueError(f"salt only applies to mode hash, not {self.mode}")
        crypto = self.mode in ("encrypt", "decrypt")
        if not crypto and "key" in self.model_fields_set:
            raise ValueError(f"key only applies to modes encrypt and decrypt, not {self.mode}")
        if crypto:
            if self.key is None:
                raise ValueError(f"mode {self.mode} needs a key, e.g. key: ${{env:MASK_KEY}}")
            _key_bytes(self.key)
        return self


def _as_bytes(value: Any) -> bytes:
    """What is hashed: a string's UTF-8, bytes as they are, anything else as sorted JSON."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return jsonvalue.dumps(value, sort_keys=True, strict=True)


def _redact_text(options: MaskOptions) -> str:
    return options.replacement if isinstance(options.replacement, str) else "****"


def _redactor(options: MaskOptions) -> Masker:
    replacement = _redact_text(options)
    return lambda value: replacement


def _typed(options: MaskOptions) -> Masker:
    """The empty value of the value's own type, or ``replacement`` read as that type."""
    given = options.replacement
    if given is None:

        def empty(value: Any) -> Any:
            cls = value.__class__
            if cls is str:
                return ""
            if cls is bool:
                return False
            if cls is int:
                return 0
            if cls is float:
                return 0.0
            if cls is Decimal:
                return _ZERO_POINT_ZERO
            if cls is list:
                return []
            if cls is dict:
                return {}
            raise DataError(f"cannot mask {kind_of(value)} by its type")

        return empty
    # The replacement as a number, when it reads as one; as text (for strings).
    number: Any
    if isinstance(given, str):
        try:
            number = parse_number(given)
        except ValueError:
            number = None
        text = given
    else:
        number = given if isinstance(given, int) else Decimal(repr(given))
        text = str(given) if isinstance(given, int) else repr(given)

    fractional = None if number is None else _fractional(number)

    def replace(value: Any) -> Any:
        cls = value.__class__
        if cls is str:
            return text
        if cls is bool or cls is list or cls is dict:
            raise DataError(
                f"cannot mask {kind_of(value)} with a replacement (only numbers and "
                "strings take one; leave replacement out for false, [] or {})"
            )
        if number is None:
            raise DataError(
                f"cannot mask {kind_of(value)} with the replacement {given!r}: it is not a number"
            )
        if cls is int:
            if number.__class__ is not int:
                raise DataError(
                    f"cannot mask an integer with the replacement {text}: it is not a whole number"
                )
            return number
        if cls is float:
            return float(number)
        if cls is Decimal:
            return fractional
        raise DataError(f"cannot mask {kind_of(value)} by its type")

    return replace


#: What a fractional number (a JSON number with a fraction: an exact Decimal) is masked to:
#: still a fractional number, ``0.0`` as Kafka Connect's MaskField gives a JSON double, not
#: ``0``, which JSON readers (this one too) take for an integer.
_ZERO_POINT_ZERO = Decimal("0.0")


def _fractional(number: int | Decimal) -> Decimal:
    """``number`` as a Decimal with at least one fraction digit (``123`` -> ``123.0``)."""
    value = Decimal(number)
    exponent = value.as_tuple().exponent
    return value if isinstance(exponent, int) and exponent < 0 else Decimal(f"{value:f}.0")


def _hasher(options: MaskOptions) -> Masker:
    salt = options.salt.get_secret_value().encode("utf-8") if options.salt else b""
    sha256 = hashlib.sha256

    def mask(value: Any) -> str:
        return sha256(salt + _as_bytes(value)).hexdigest()

    return mask


def encrypt_value(value: Any, key: bytes) -> str:
    """``value`` (any JSON value) as a version-1 ciphertext string."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        plain = jsonvalue.dumps(value)
    except TypeError as exc:
        raise DataError(f"cannot encrypt {kind_of(value)}: {exc}") from None
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, plain, None)
    return CIPHERTEXT_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")


def decrypt_value(text: Any, key: bytes) -> Any:
    """The value a version-1 ciphertext string was made from; DataError saying why if it
    cannot be had (not a ciphertext, wrong key, changed ciphertext)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not isinstance(text, str) or not text.startswith(CIPHERTEXT_PREFIX):
        what = kind_of(text) if not isinstance(text, str) else "a string"
        raise DataError(f"cannot decrypt {what} that is not an {CIPHERTEXT_PREFIX}… ciphertext")
    try:
        blob = base64.b64decode(text[len(CIPHERTEXT_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise DataError("cannot decrypt: the ciphertext is not valid base64") from None
    if len(blob) < _NONCE + _TAG:
        raise DataError("cannot decrypt: the ciphertext is too short")
    try:
        plain = AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], None)
    except InvalidTag:
        raise DataError("cannot decrypt: wrong key, or the ciphertext was changed") from None
    return jsonvalue.loads(plain, max_depth=None)


def _encryptor(options: MaskOptions) -> Masker:
    assert options.key is not None
    key = _key_bytes(options.key)
    return lambda value: encrypt_value(value, key)


def _decryptor(options: MaskOptions) -> Masker:
    assert options.key is not None
    key = _key_bytes(options.key)
    return lambda value: decrypt_value(value, key)


_MASKERS: dict[str, Callable[[MaskOptions], Masker]] = {
    "redact": _redactor,
    "typed": _typed,
    "hash": _hasher,
    "encrypt": _encryptor,
    "decrypt": _decryptor,
}


class Mask(Transform):
    """Replaces the values at ``paths`` by ``masker(value)``.

    A path that is missing (or holds ``null``) is left alone. A path through a value of the
    wrong shape (``data.a.b`` where ``data.a`` is a string) is a DataError, raised before the
    record is changed: every value is read and masked first, then all are written, deepest
    first, so one written path never breaks another.
    """

    copies_nested_objects = True

    def __init__(
        self,
        paths: list[FieldPath],
        masker: Masker,
        mode: str = "redact",
        replacement: str | None = None,
    ) -> None:
        self.type_name = "mask"
        # Attributes and extensions first (setting one can fail: an empty subject is not a
        # CloudEvent's), then data paths deepest first, so a failure changes nothing.
        self.paths = sorted(paths, key=lambda p: (p.kind == "data", -len(p.segments)))
        self.masker = masker
        self.mode = mode
        # One path with a masker that cannot fail: a single walk (the common, fast case).
        simple = len(self.paths) == 1 and mode in ("redact", "hash")
        self._single = self.paths[0] if simple else None
        path = self._single
        self._key: str | None = None
        if path is not None and path.kind == "data" and len(path.segments) == 1:
            first = path.segments[0]
            self._key = first if isinstance(first, str) and replacement is not None else None
        self._replacement = replacement
        self._nested = nested(self.paths)

    def apply(self, record: Record) -> Record:
        key = self._key
        if key is not None:  # redact one top-level field of an object payload
            data = record.data
            if data.__class__ is dict:
                if data.get(key) is not None:
                    data[key] = self._replacement
                return record
        masker = self.masker
        single = self._single
        if self._nested:
            own(record, self._nested)
        if single is not None:
            single.update(record, masker)
            return record
        updates = []
        for path in self.paths:
            found, value = path.get(record)
            if found and value is not None:
                try:
                    updates.append((path, masker(value)))
                except DataError as exc:
                    raise DataError(f"mask {path}: {exc}") from None
        set_all(record, updates)  # a typed mask of subject ('') fails before anything changes
        return record


def _make_mask(options: MaskOptions, compiler: Compiler) -> Mask:
    paths = [parse_path(text) for text in options.fields]
    replacement = _redact_text(options) if options.mode == "redact" else None
    return Mask(paths, _MASKERS[options.mode](options), options.mode, replacement)


SPECS = [
    TransformSpec(
        name="mask",
        options_model=MaskOptions,
        factory=_make_mask,
        description="Redact, mask by type (0, false, '', [], {}), hash, encrypt or decrypt "
        "sensitive values (missing and null ones are left alone).",
        examples=[
            "- type: mask\n  fields: [data.email, data.card.number]",
            "- type: mask\n  fields: [data.email]\n  mode: hash\n  salt: ${env:MASK_SALT}",
            "- type: mask\n  fields: [data.age, data.vip, data.tags]\n  mode: typed",
            "- type: mask\n  fields: [data.email, data.phone]\n  mode: encrypt\n"
            "  key: ${env:MASK_KEY}",
        ],
    ),
]
