"""The ``http`` sink: each record POSTed (or PUT) to a URL, one request per record.

Delivery is at-least-once: a request is not idempotent, so the sink reports each record's own
result (:class:`meshconnect.BatchError`) and a record that failed is the only one sent again;
the others of the batch are never re-sent in the run. After a crash (SIGKILL), the records
sent since the last commit are sent again: the duplicate window is the batch being written
when the worker died (at most the sink's ``batch_size`` records). Receivers de-duplicate on
the CloudEvent ``id`` (``ce-id`` header / ``id`` member), which is the same on every send.

Per record:

* 2xx (and ``success_codes``): delivered.
* 408, 429 and 5xx, connection errors, resets and timeouts: a
  :class:`~meshconnect.RetriableError`; the worker sends that record again after the sink's
  ``errors.retry`` backoff (exponential, jittered). A ``Retry-After`` (seconds or an HTTP
  date, capped at ``max_retry_after``) holds every send of this sink until then.
* 3xx: redirects are never followed (a 301/302 would turn the POST into a GET without
  body, a 307 would re-send the ``ce-`` headers and signature to another host): a
  :class:`~meshconnect.DataError` naming the status and the ``Location`` (without its query).
* any other 4xx: a :class:`~meshconnect.DataError` with the status and the first 300
  characters of the response body: the record goes to the dead-letter topic, never re-sent.
* 401 with ``oauth2``: the token is fetched again and the request repeated once.

Ordering: records with the same ``partitionkey`` extension are sent one after the other in
offset order; when one fails for a retriable reason, the later records of its key in the
batch are held back (reported retriable without being sent, as :class:`HeldBack`) so the
key keeps its order. The worker charges a held-back record an attempt all the same; the
sink credits it: once the record can go out, it is sent up to (attempts charged - sends
made) times in place, with a backoff, so no record loses sends to waiting, and a
:class:`HeldBack` dead letter's ``errorattempts`` is its real sends.
Records without a partition key form one more such lane (they keep their order too). Lanes
run side by side, at most ``max_concurrency`` requests in flight.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus, urljoin, urlsplit

from meshconnect import (
    BatchError,
    ConfigError,
    DataError,
    Flushed,
    Record,
    RetriableError,
    Sink,
)

from . import _binding
from ._signing import sign
from ._templates import Template, data_path, url_escape, url_template
from .config import HEADER_CONTROL, HttpSinkConfig

__all__ = ["HttpSink"]

EXCERPT = 300
_RECORD_ATTRIBUTES = frozenset(
    ("id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema")
)
RETRIABLE_STATUS = {408, 425, 429}


class HttpSink(Sink[HttpSinkConfig]):
    """Sends each record as the module docstring says."""

    @classmethod
    def partition_problem(cls, config: Any) -> str | None:
        """Several consumers may write at once (``partitions:``): one request per record."""
        return None

    async def open(self, state: Mapping[str, Any] | None) -> None:
        import aiohttp
        import yarl

        self.aiohttp = aiohttp
        self.yarl = yarl
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
        )
        self.url = url_template(self.config.url)
        self.headers = {name: Template(text) for name, text in self.config.headers.items()}
        self.gate = asyncio.Semaphore(self.config.max_concurrency)
        self.tally: dict[int, tuple[Record, int, int]] = {}
        self.not_before = 0.0  # monotonic: no send before (a Retry-After)
        self.token: str | None = None
        self.token_expires = 0.0
        self.token_lock = asyncio.Lock()
        self.sent = self.context.metrics.counter("http_sink_sent", "Records delivered")
        self.failed = self.context.metrics.counter("http_sink_failed", "Failed requests")

    async def close(self) -> None:
        session = getattr(self, "session", None)
        if session is not None:
            await session.close()

    async def flush(self) -> Flushed:
        return Flushed({})  # every record is delivered (or failed) when write returns

    async def write(self, records: Sequence[Record]) -> None:
        # The worker retries the records a BatchError names, counting one attempt per call
        # for each of them, sent or not. A record held back behind a same-key retry is
        # charged an attempt it did not use: it is credited, and once it can go out it may
        # be sent up to (attempts charged - sends made) times in place (with a backoff), so
        # every record gets as many real sends as the worker's errors.retry allows.
        tally = self.tally = {
            id(r): self.tally.get(id(r), (r, 0, 0)) for r in records
        }  # id -> (record, write calls that held it, sends made); the record is kept so
        # that its id cannot be reused by another while the entry lives
        for key, (record, calls, sends) in tally.items():
            tally[key] = (record, calls + 1, sends)
        lanes: dict[Any, list[int]] = {}
        for index, record in enumerate(records):
            lanes.setdefault(record.extensions.get("partitionkey"), []).append(index)
        failures = BatchError()

        async def lane(indexes: list[int]) -> None:
            chunks = self._chunks(records, indexes, failures)
            for n, (url, chunk) in enumerate(chunks):
                error = await self._send_credited(url, [records[i] for i in chunk])
                if error is None:
                    continue
                for index in chunk:
                    failures.failed(index, error)
                if isinstance(error, RetriableError):  # keep the key's order
                    for _, later in chunks[n + 1 :]:
                        for index in later:
                            failures.failed(
                                index,
                                HeldBack(
                                    f"held back: record {records[chunk[0]].id!r} of the same "
                                    "partition key is to be sent again first",
                                    tally[id(records[index])][2],
                                ),
                            )
                    return

        await asyncio.gather(*(lane(indexes) for indexes in lanes.values()))
        if failures.failures:
            raise failures

    async def _send_credited(self, url: str, chunk: list[Record]) -> BaseException | None:
        """:meth:`_send`, repeated in place while every record of ``chunk`` has attempts
        charged and not used (see :meth:`write`); the error of the last send, or None."""
        tally = self.tally
        credit = min(tally[id(r)][1] - tally[id(r)][2] for r in chunk)
        send = 0
        while True:
            error = await self._send(url, chunk)
            send += 1
            for r in chunk:
                record, calls, sends = tally[id(r)]
                tally[id(r)] = (record, calls, sends + 1)
            if error is None or not isinstance(error, RetriableError) or send >= credit:
                return error
            # the backoff the worker would have waited (errors.retry is not the sink's to
            # read: its default initial_backoff, doubling), besides any Retry-After
            await asyncio.sleep(min(30.0, 0.2 * 2 ** (send - 1)) * (0.5 + random.random() / 2))

    def _chunks(
        self, records: Sequence[Record], indexes: list[int], failures: BatchError
    ) -> list[tuple[str, list[int]]]:
        """The requests of one lane: (url, indexes), in order. One record each, or in batch
        mode up to ``batch_max`` consecutive records with the same URL. A record whose URL
        cannot be made is failed at once (a data error)."""
        size = self.config.batch_max if self.config.mode == "batch" else 1
        chunks: list[tuple[str, list[int]]] = []
        for index in indexes:
            try:
                url = self._render(
                    self.url, records[index], f"url {_shown(self.config.url)!r}", url_escape
                )
            except DataError as exc:
                failures.failed(index, exc)
                continue
            if chunks and chunks[-1][0] == url and len(chunks[-1][1]) < size:
                chunks[-1][1].append(index)
            else:
                chunks.append((url, [index]))
        return chunks

    # -- one request ----------------------------------------------------------------------------

    def _render(
        self,
        template: Template,
        record: Record,
        what: str,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        def lookup(name: str) -> Any:
            if name.startswith("data."):
                value = data_path(record.data, name[5:])
                return None if isinstance(value, dict | list) else value
            if name in _RECORD_ATTRIBUTES:
                return getattr(record, name)
            if name == "topic":
                return record.topic
            if name == "offset":
                return record.offset
            return record.extensions.get(name)

        try:
            return template.render(lookup, escape)
        except UnicodeEncodeError:
            raise DataError(
                f"http sink {self.context.name}: {what}: a value is not "
                "Unicode text that UTF-8 can encode"
            ) from None
        except KeyError as exc:
            raise DataError(
                f"http sink {self.context.name}: {what}: the record has no "
                f"value for {{{exc.args[0]}}}"
            ) from None

    def _request(self, records: list[Record]) -> tuple[dict[str, str], bytes]:
        """Headers and body of one request: one record, or a batch (``mode: batch``), whose
        header templates are rendered from its first record."""
        record = records[0]
        mode = self.config.mode
        if mode == "binary":
            headers, body = _binding.to_binary(record)
        elif mode == "structured":
            headers, body = _binding.to_structured(record)
        elif mode == "batch":
            headers, body = _binding.to_batch(records)
        else:
            body, content_type = _binding.encode_data(record)
            headers = {"content-type": content_type} if content_type else {}
            headers.update(_binding.trace_headers(record))  # no CloudEvent to carry them
        for name, template in self.headers.items():
            value = self._render(template, record, f"headers.{name}")
            if HEADER_CONTROL.search(value):  # a value must not start another header
                raise DataError(
                    f"http sink {self.context.name}: headers.{name}: a value "
                    "holds a line break or another control character"
                )
            _put(headers, name, value)
        if self.config.hmac is not None:
            _put(headers, self.config.hmac.header, sign(body, self.config.hmac))
        return headers, body

    async def _send(self, url: str, records: list[Record]) -> BaseException | None:
        """Send one request; None when delivered, else the error (module docstring)."""
        try:
            headers, body = self._request(records)
        except (DataError, TypeError, ValueError) as exc:
            return exc if isinstance(exc, DataError) else DataError(f"cannot encode: {exc}")
        where = _shown(url)
        for attempt in (1, 2):
            wait = self.not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self.config.oauth2 is not None:
                _put(headers, "Authorization", f"Bearer {await self._token()}")
            try:
                async with (
                    self.gate,
                    self.session.request(
                        self.config.method,
                        self.yarl.URL(url, encoded=True),  # as escaped: never re-normalized
                        data=body,
                        headers=headers,
                        allow_redirects=False,  # a 3xx is a failure: never re-sent elsewhere
                    ) as response,
                ):
                    status = response.status
                    excerpt = (await response.content.read(EXCERPT)).decode("utf-8", "replace")
                    retry_after = response.headers.get("Retry-After")
                    location = response.headers.get("Location")
            except self.aiohttp.InvalidURL:  # a url template that made no URL: never retried
                return DataError(f"{where}: not a valid URL")
            except (self.aiohttp.ClientError, TimeoutError) as exc:
                self.failed.inc()
                text = str(exc).replace(url, where)  # no query string or user info
                return RetriableError(f"{where}: {type(exc).__name__}: {text}"[:500])
            if 200 <= status < 300 or status in self.config.success_codes:
                self.sent.inc(len(records))
                return None
            self.failed.inc()
            if status == 401 and self.config.oauth2 is not None and attempt == 1:
                self.token = None  # revoked or expired early: fetch a new one, once
                continue
            if retry_after:
                self._hold(retry_after)
            message = f"{where}: HTTP {status}: {excerpt.strip()}"
            if 300 <= status < 400:  # followed, a POST becomes a GET (301/302) or goes to
                # another host with the ce-* headers: the receiver must be configured instead
                shown = _shown(urljoin(url, location)) if location else "(no Location)"
                return DataError(
                    f"{where}: HTTP {status} redirect to {shown}: redirects are not followed; "
                    "set url to the final address"
                )
            if status in RETRIABLE_STATUS or status >= 500:
                return RetriableError(message)
            return DataError(message)
        return DataError(f"{where}: HTTP 401 with a fresh OAuth2 token")

    def _hold(self, value: str) -> None:
        """Honour a Retry-After (delta-seconds or an HTTP-date, RFC 9110 section 10.2.3)."""
        seconds: float | None = None
        if value.strip().isdigit():
            seconds = float(value.strip())
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
                seconds = when.timestamp() - time.time()
            except (TypeError, ValueError, IndexError):
                return
        seconds = min(max(0.0, seconds), self.config.max_retry_after)
        self.not_before = max(self.not_before, time.monotonic() + seconds)

    async def _token(self) -> str:
        """The OAuth2 access token, fetched with the client credentials when missing or about
        to expire (RFC 6749 section 4.4; credentials in HTTP Basic, section 2.3.1)."""
        oauth = self.config.oauth2
        assert oauth is not None
        async with self.token_lock:
            if self.token is not None and time.monotonic() < self.token_expires:
                return self.token
            form = {"grant_type": "client_credentials"}
            if oauth.scope:
                form["scope"] = oauth.scope
            if oauth.audience:
                form["audience"] = oauth.audience
            # RFC 6749 section 2.3.1: each form-urlencoded, then HTTP Basic
            secret = oauth.client_secret.get_secret_value()
            pair = f"{quote_plus(oauth.client_id)}:{quote_plus(secret)}"
            auth = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
            try:
                async with self.session.post(oauth.token_url, data=form, headers=auth) as response:
                    if response.status >= 500 or response.status == 429:
                        raise RetriableError(
                            f"oauth2 token endpoint {_shown(oauth.token_url)}: "
                            f"HTTP {response.status}"
                        )
                    if response.status != 200:
                        raise ConfigError(
                            f"http sink {self.context.name}: config.oauth2: the token endpoint "
                            f"refused the client credentials (HTTP {response.status})"
                        )
                    answer = await response.json(content_type=None)
            except (self.aiohttp.ClientError, TimeoutError) as exc:
                raise RetriableError(
                    f"oauth2 token endpoint {_shown(oauth.token_url)}: {type(exc).__name__}"
                ) from None
            token = answer.get("access_token") if isinstance(answer, dict) else None
            if not isinstance(token, str) or not token:
                raise ConfigError(
                    f"http sink {self.context.name}: config.oauth2: no access_token in the "
                    "token endpoint's answer"
                )
            expires = answer.get("expires_in", 3600)
            lifetime = float(expires) if isinstance(expires, int | float) else 3600.0
            self.token = token
            # refresh a little early (a tenth of the lifetime, at most 60 s)
            self.token_expires = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return token


class HeldBack(RetriableError):
    """A record not sent because an earlier one of its partition key is to be sent again
    first. ``attempts`` is the sends it had (the worker writes what it counted into it when
    it gives up: that is ignored, so the dead letter's ``errorattempts`` says real sends)."""

    def __init__(self, message: str, sends: int) -> None:
        super().__init__(message)
        self.sends = sends

    @property
    def attempts(self) -> int:
        return self.sends

    @attempts.setter
    def attempts(self, value: int) -> None:
        pass


def _put(headers: dict[str, str], name: str, value: str) -> None:
    """Set a header, replacing one of the same name in any case (HTTP names are
    case-insensitive: both would be sent, and a receiver would take either)."""
    for other in [k for k in headers if k.lower() == name.lower()]:
        del headers[other]
    headers[name] = value


def _shown(url: str) -> str:
    """A URL for messages: no user info, no query (either may carry a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range, a bad IPv6 literal
        return "(an invalid URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"
