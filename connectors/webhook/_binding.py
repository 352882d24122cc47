"""The CloudEvents HTTP protocol binding (``cloudevents/bindings/http-protocol-binding.md``),
both ways, on top of the ``cloudevents`` SDK.

The SDK decides the content mode (``is_binary``: a ``ce-specversion`` header; structured: an
``application/cloudevents+json`` body) and maps attributes to and from ``ce-`` headers
(``to_binary``, ``from_http``). Where it falls short of the spec this module finishes the job:

* header values are percent-encoded (section 3.1.3.2: space, ``"``, ``%``, controls and
  non-ASCII as UTF-8 ``%XX``) and, on the way in, unquoted (double-quoted strings) and
  decoded; the SDK does neither;
* on the way in, a ``ce-`` header given twice, ``ce-data``/``ce-data_base64`` (the data is
  the body) and ``ce-datacontenttype`` next to a ``Content-Type`` (section 3.1.1: it MUST
  NOT be there) are refused: the SDK keeps one of them silently;
* booleans in headers are ``true``/``false`` and integers their decimal text (the SDK puts
  the Python objects in the header dict);
* the SDK's JSON reader and writer use floats and accept duplicate keys, so structured and
  batch bodies are read with :func:`meshconnect.eventrules.loads_event` (exact numbers, a
  duplicate key is an error) and written with :mod:`meshconnect.jsonvalue`;
* the SDK's ``CloudEvent`` adds a ``time`` to an event without one; it is removed again so
  the event goes out as it was stored.

Every event is then checked by :func:`meshconnect.eventrules.parse_event`: nothing invalid
reaches the mesh.

Tracing: the CloudEvents distributed-tracing extension (``traceparent``, ``tracestate``) is an
extension like any other, so a CloudEvent keeps it both ways (``ce-traceparent`` in binary
mode, a member in structured and batch mode). Where no CloudEvent carries it, the W3C Trace
Context request headers stand in: a plain body's event takes them as its extension
(:func:`trace_context`), and a sink sending only the data sends the extension as those
headers (:func:`trace_headers`).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from meshconnect import Record, jsonvalue
from meshconnect.eventrules import InvalidEventError, loads_event, parse_event

__all__ = [
    "BATCH",
    "STRUCTURED",
    "BadRequest",
    "check_json_charset",
    "decode_data",
    "encode_data",
    "event_from_binary",
    "event_from_structured",
    "events_from_batch",
    "is_json_type",
    "media_type",
    "missing_attributes",
    "to_batch",
    "to_binary",
    "to_structured",
    "trace_context",
    "trace_headers",
]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("specversion", "id", "source", "type")
#: Characters a header value keeps as they are (printable ASCII but space, '"' and '%').
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
#: A W3C Trace Context ``traceparent``: version, trace id, parent id, flags (a later version
#: may add fields after them, version 00 may not); version ``ff`` and all-zero ids are
#: invalid.
_TRACEPARENT = re.compile(
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]*)?\Z"
)


class BadRequest(ValueError):
    """Input that gets a 4xx: ``status``, a short ``title``, the ``detail``, and extra members
    of the problem body (``missing``, ``invalid``)."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"Application/JSON; charset=UTF-8"`` -> ``("application/json", {"charset": "utf-8"})``."""
    if not content_type:
        return "", {}
    main, *params = content_type.split(";")
    out: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        out[name.strip().lower()] = value.strip().strip('"').lower()
    return main.strip().lower(), out


def is_json_type(mime: str) -> bool:
    return mime in ("application/json", "text/json") or mime.endswith("+json")


def missing_attributes(event: Any) -> list[str]:
    """The required attributes an event in JSON form lacks (or has as null)."""
    if not isinstance(event, dict):
        return []
    return [name for name in REQUIRED if event.get(name) is None]


def _invalid(exc: InvalidEventError, index: int | None = None) -> BadRequest:
    where = "" if index is None else f"event {index}: "
    missing = [exc.attribute] if str(exc).startswith("missing required attribute") else []
    invalid = [] if missing else [{"attribute": exc.attribute, "problem": str(exc)}]
    return BadRequest(400, "Invalid CloudEvent", where + str(exc), missing=missing, invalid=invalid)


def _check(event: Any, index: int | None = None) -> Record:
    missing = missing_attributes(event)
    if missing:
        where = "" if index is None else f"event {index}: "
        raise BadRequest(
            400,
            "Invalid CloudEvent",
            f"{where}missing required attribute(s): {', '.join(missing)}",
            missing=missing,
            invalid=[],
        )
    try:
        return parse_event(event, Record)
    except InvalidEventError as exc:
        raise _invalid(exc, index) from None


def check_json_charset(content_type: str | None) -> None:
    """415 for a JSON body declared in a charset other than UTF-8: JSON exchanged between
    systems is UTF-8 (RFC 8259 section 8.1), and so is the CloudEvents JSON format."""
    _, params = media_type(content_type)
    charset = params.get("charset")
    if charset is not None and charset.replace("_", "-") not in ("utf-8", "utf8", "us-ascii"):
        raise BadRequest(
            415, "Unsupported Media Type", "JSON bodies must be UTF-8 (RFC 8259 section 8.1)"
        )


def _json(body: bytes, what: str) -> Any:
    try:
        return loads_event(body)
    except (ValueError, RecursionError, ArithmeticError) as exc:
        raise BadRequest(
            400, "Malformed JSON", f"{what}: {jsonvalue.error_text(exc, body)}"
        ) from None


def event_from_structured(body: bytes) -> Record:
    """One event from a structured-mode body; :class:`BadRequest` (400) naming what is wrong."""
    return _check(_json(body, "structured CloudEvent"))


def events_from_batch(body: bytes, max_batch: int) -> list[Record]:
    """The events of a batch-mode body (a JSON array of structured events); 413 beyond
    ``max_batch`` events."""
    value = _json(body, "CloudEvents batch")
    if not isinstance(value, list):
        raise BadRequest(400, "Invalid CloudEvents batch", "a batch must be a JSON array")
    if len(value) > max_batch:
        raise BadRequest(
            413, "Batch too long", f"{len(value)} events in one batch; at most {max_batch}"
        )
    return [_check(event, i) for i, event in enumerate(value)]


def decode_data(body: bytes, content_type: str | None, binary_fallback: bool) -> Any:
    """A body as ``data``: JSON media types parsed (exact numbers), ``text/*`` as a string in
    its charset, anything else as bytes (``binary_fallback``) or a 415."""
    mime, params = media_type(content_type)
    if is_json_type(mime) or (not mime and not binary_fallback):
        check_json_charset(content_type)
        if not body.strip():
            raise BadRequest(400, "Malformed JSON", "empty JSON body")
        return _json(body, "JSON body")
    if mime.startswith("text/"):
        charset = params.get("charset", "utf-8")
        try:
            codecs.lookup(charset)
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise BadRequest(400, "Bad text", f"body is not {charset} text: {exc}") from None
    if binary_fallback:
        return bytes(body)
    raise BadRequest(
        415,
        "Unsupported Media Type",
        "unsupported content type: send application/json, "
        "application/x-www-form-urlencoded, text/*, or a CloudEvent",
    )


def event_from_binary(headers: Any, body: bytes) -> Record:
    """One event from a binary-mode request (``ce-`` headers, the body as data)."""
    from cloudevents.conversion import from_http
    from cloudevents.exceptions import GenericException
    from cloudevents.http import CloudEvent

    attributes: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if not lower.startswith("ce-"):
            continue
        attribute = lower[3:]
        problem = None
        if attribute in attributes:  # which one would be the event's is anyone's guess
            problem = "given more than once"
        elif attribute in ("data", "data_base64"):
            problem = "in binary mode the data is the body, not a header"
        elif attribute == "datacontenttype" and "content-type" in {k.lower() for k in headers}:
            problem = "with a Content-Type, which is the datacontenttype in binary mode"
        if problem is not None:
            raise BadRequest(
                400,
                "Invalid CloudEvent",
                f"header {lower}: {problem}",
                missing=[],
                invalid=[{"attribute": attribute, "problem": f"header {lower}: {problem}"}],
            )
        try:
            attributes[attribute] = unquote(
                _unquote_string(value), encoding="utf-8", errors="strict"
            )
        except UnicodeDecodeError:
            raise BadRequest(
                400, "Invalid CloudEvent", f"header {name}: invalid percent-encoding"
            ) from None
    missing = missing_attributes(attributes)
    if missing:
        raise BadRequest(
            400,
            "Invalid CloudEvent",
            f"missing required attribute(s): {', '.join(missing)}",
            missing=missing,
            invalid=[],
        )
    plain = {f"ce-{k}": v for k, v in attributes.items()}
    if "content-type" in {k.lower() for k in headers}:
        plain["content-type"] = headers.get("Content-Type")
    try:  # the SDK's reading of the binding (which header is which attribute)
        sdk_event = from_http(CloudEvent, plain, body, data_unmarshaller=lambda raw: raw)
    except GenericException as exc:
        raise BadRequest(400, "Invalid CloudEvent", str(exc)[:300]) from None
    event = dict(sdk_event.get_attributes())
    if "time" not in attributes:
        event.pop("time", None)  # the SDK made one up
    if body:
        event["data"] = decode_data(body, event.get("datacontenttype"), binary_fallback=True)
    return _check(event)


def _unquote_string(value: str) -> str:
    """A header value with its double-quoted strings unescaped (RFC 7230 section 3.2.6:
    the quotes dropped, ``\\X`` read as ``X``), as the binding's section 3.1.3.2 requires
    before the percent-decoding (older senders quoted values with spaces). A quote that is
    never closed is kept as it is."""
    if '"' not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != '"':
            out.append(char)
            i += 1
            continue
        j, text = i + 1, []
        while j < len(value) and value[j] != '"':
            if value[j] == "\\" and j + 1 < len(value):
                j += 1
            text.append(value[j])
            j += 1
        if j >= len(value):  # never closed: not a quoted string
            out.append(value[i:])
            break
        out.extend(text)
        i = j + 1
    return "".join(out)


def _header_value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return quote(str(value), safe=_SAFE, encoding="utf-8")


def encode_data(record: Record) -> tuple[bytes, str | None]:
    """``data`` as a body and its content type: bytes as they are, a string as text unless
    the content type is JSON, anything else as JSON (:mod:`meshconnect.jsonvalue`); text
    and JSON in the content type's ``charset`` (UTF-8 when it names none)."""
    data = record.data
    mime, params = media_type(record.datacontenttype)
    if isinstance(data, bytes | bytearray):
        return bytes(data), record.datacontenttype or "application/octet-stream"
    if data is None and not record.null_data:
        return b"", record.datacontenttype
    charset = params.get("charset")
    if isinstance(data, str) and record.datacontenttype and not is_json_type(mime):
        return _encode_text(data, charset), record.datacontenttype
    encoded = record.encoded_data if record.encoded_data is not None else jsonvalue.dumps(data)
    if charset is not None and _codec(charset) != "utf-8":
        encoded = _encode_text(encoded.decode("utf-8"), charset)
    return encoded, record.datacontenttype or "application/json"


def _codec(charset: str | None) -> str:
    """The Python codec of a ``charset`` parameter (``utf-8`` when there is none);
    ``ValueError`` for a charset Python does not know."""
    if charset is None:
        return "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        raise ValueError(f"datacontenttype: unknown charset {charset!r}") from None


def _encode_text(text: str, charset: str | None) -> bytes:
    """``text`` in the ``charset`` its content type declares (UTF-8 when none): a receiver
    decodes the body in that charset (binding section 2.2); ``ValueError`` when the text
    has a character the charset cannot write."""
    codec = _codec(charset)
    try:
        return text.encode(codec)
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"datacontenttype: the data has {exc.object[exc.start]!r}, which {charset} cannot write"
        ) from None


def to_binary(record: Record) -> tuple[dict[str, str], bytes]:
    """Binary mode: ``ce-`` headers (through the SDK, then percent-encoded) and the body."""
    from cloudevents.conversion import to_binary as sdk_to_binary
    from cloudevents.http import CloudEvent

    body, content_type = encode_data(record)
    if media_type(content_type)[0].startswith("application/cloudevents"):
        # the binding (section 3) reads such a Content-Type as structured or batch mode:
        # the receiver would take the data for the event and drop the ce- headers
        raise ValueError(
            f"datacontenttype {content_type!r} cannot go in binary mode: a receiver reads "
            "the body as a structured event; send it with mode: structured"
        )
    attributes = {k: v for k, v in record.to_dict().items() if k not in ("data", "data_base64")}
    event = CloudEvent(attributes, body)
    if record.time is None:
        del event["time"]  # the SDK made one up
    headers, out = sdk_to_binary(event, data_marshaller=lambda raw: raw)
    fixed = {name: _header_value(value) for name, value in headers.items() if value is not None}
    fixed.pop("content-type", None)
    fixed.pop("ce-datacontenttype", None)  # the binding carries it as Content-Type
    if content_type:
        fixed["content-type"] = content_type
    return fixed, out if isinstance(out, bytes) else str(out).encode("utf-8")


def to_structured(record: Record) -> tuple[dict[str, str], bytes]:
    """Structured mode: the event's JSON form (exact numbers) as the body."""
    return {"content-type": STRUCTURED}, jsonvalue.dumps(record.to_dict())


def to_batch(records: list[Record]) -> tuple[dict[str, str], bytes]:
    """Batch mode: a JSON array of structured events."""
    return {"content-type": BATCH}, jsonvalue.dumps([r.to_dict() for r in records])


def trace_context(headers: Mapping[str, str]) -> dict[str, str]:
    """The W3C Trace Context headers of a request as the distributed-tracing extension
    (``traceparent``, and ``tracestate`` with it); nothing when ``traceparent`` is missing or
    malformed (a sender's broken header is not worth refusing its event)."""
    parent = headers.get("traceparent", "").strip()
    if not _TRACEPARENT.match(parent) or (parent[:2] == "00" and len(parent) != 55):
        return {}
    out = {"traceparent": parent}
    state = headers.get("tracestate", "").strip()
    if state:
        out["tracestate"] = state
    return out


def trace_headers(record: Record) -> dict[str, str]:
    """A record's distributed-tracing extension as W3C Trace Context headers."""
    out: dict[str, str] = {}
    parent = record.extensions.get("traceparent")
    if isinstance(parent, str) and parent:
        out["traceparent"] = parent
        state = record.extensions.get("tracestate")
        if isinstance(state, str) and state:
            out["tracestate"] = state
    return out
