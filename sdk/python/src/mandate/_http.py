"""HTTP for the clients: configuration, one request description shared by
the sync and async clients, two small transports on the standard library,
and the retry rule.

Retry rule: a request is sent again only when that cannot do anything twice.

* ``429 too_many_requests`` is refused before anything is done: any request
  is retried, after ``Retry-After``.
* A refused connection means nothing was sent: any request is retried.
* A timeout, a broken connection, a 502/503/504 or a 500: only idempotent
  requests are retried (reads, ``PUT /v1/policies``, and ``authorize``,
  which always carries a ``request_id`` that makes the server answer a
  repeat with the first answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import (
    ConnectionFailed,
    MandateError,
    ProblemError,
    RequestTimeout,
    TransportError,
    UnexpectedResponse,
    problem_error,
)

__all__ = ["DEFAULT_URL", "Call", "Config", "Response"]

T = TypeVar("T")

#: Where ``mandate serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8420"
#: Per-request timeout when none is given.
TIMEOUT_S_DEFAULT = 10.0
#: Retries after the first attempt, when the rule allows them.
RETRIES_DEFAULT = 2
#: The first back-off; it doubles each retry, with jitter.
BACKOFF_S_DEFAULT = 0.2
#: The longest ``Retry-After`` the client waits by itself.
RETRY_AFTER_MAX_S = 5.0
#: The largest answer read (the API's pages stay far below it).
RESPONSE_BYTES_MAX = 64 * 1024 * 1024

_NO_BODY: Any = object()


@dataclass(frozen=True)
class Config:
    """Where and how a client talks to Mandate.

    Build it with :meth:`from_env` to fall back on ``MANDATE_URL`` and
    ``MANDATE_TOKEN``.
    """

    #: The server's base URL, e.g. ``http://127.0.0.1:8420``.
    url: str = DEFAULT_URL
    #: An admin key (``mk_...``) or an agent token (``mt_...``).
    token: str | None = None
    #: The acting identity sent with ``authorize`` when the call names none
    #: (needed with an admin key; with an agent token, leave it ``None``).
    identity: str | None = None
    #: Seconds to wait for one answer (long polls add their wait to it).
    timeout_s: float = TIMEOUT_S_DEFAULT
    #: How many times a request may be sent again (see the module's rule).
    retries: int = RETRIES_DEFAULT
    #: The first back-off in seconds; doubled each time.
    backoff_s: float = BACKOFF_S_DEFAULT
    #: The ``User-Agent`` header.
    user_agent: str = "mandate-python/0.1"

    @classmethod
    def from_env(
        cls,
        url: str | None = None,
        token: str | None = None,
        **options: Any,
    ) -> Config:
        """Arguments first, then ``MANDATE_URL`` and ``MANDATE_TOKEN``, then
        the defaults (``http://127.0.0.1:8420``, no token)."""
        resolved_url = url or os.environ.get("MANDATE_URL") or DEFAULT_URL
        resolved_token = token or os.environ.get("MANDATE_TOKEN") or None
        return cls(url=resolved_url.rstrip("/"), token=resolved_token, **options)


@dataclass(frozen=True)
class Response:
    """An HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def text(self) -> str:
        """The body as UTF-8 text."""
        return self.body.decode("utf-8")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call: the request and how to read its successful answer."""

    method: str
    path: str
    parse: Callable[[Response], T]
    query: Mapping[str, Any] | None = None
    body: Any = field(default=_NO_BODY)
    idempotent: bool = False
    #: Added to the timeout (long polls).
    extra_timeout_s: float = 0.0

    def target(self, base_url: str) -> str:
        """The full URL."""
        url = base_url + self.path
        if self.query:
            pairs = [(k, _query_value(v)) for k, v in self.query.items() if v is not None]
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        return url

    def payload(self) -> bytes | None:
        """The JSON body, or ``None``."""
        if self.body is _NO_BODY:
            return None
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def quote(segment: str) -> str:
    """A path segment, percent-encoded (ids may hold `:` and `/`)."""
    return urllib.parse.quote(segment, safe="")


def _headers(config: Config, has_body: bool) -> dict[str, str]:
    headers = {"Accept": "application/json, text/plain, application/problem+json", "User-Agent": config.user_agent}
    if config.token:
        headers["Authorization"] = f"Bearer {config.token}"
    if has_body:
        headers["Content-Type"] = "application/json"
    return headers


def _check(call: Call[T], response: Response) -> T:
    """The parsed answer, or the problem raised."""
    if 200 <= response.status < 300:
        try:
            return call.parse(response)
        except (ValueError, KeyError, TypeError) as error:
            raise UnexpectedResponse(
                response.status, {"code": "unexpected_response", "detail": f"cannot read the answer: {error}"}
            ) from error
    raise _problem(response)


def _problem(response: Response) -> ProblemError:
    problem: Any = None
    try:
        problem = response.json()
    except ValueError:
        pass
    if not isinstance(problem, dict) or "code" not in problem:
        snippet = response.body[:200].decode("utf-8", "replace")
        problem = {
            "code": "unexpected_response",
            "status": response.status,
            "detail": f"HTTP {response.status}: {snippet}",
        }
    error = problem_error(response.status, problem)
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            error.retry_after_s = float(retry_after)
        except ValueError:
            pass
    return error


def _retry_delay(call: Call[Any], error: MandateError, attempt: int, config: Config) -> float | None:
    """Seconds to wait before sending again, or ``None`` not to retry."""
    if attempt >= config.retries:
        return None
    backoff: float = config.backoff_s * float(2**attempt) * (0.5 + random.random())
    if isinstance(error, ProblemError):
        if error.status == 429:
            return min(error.retry_after_s if error.retry_after_s is not None else backoff, RETRY_AFTER_MAX_S)
        if call.idempotent and error.status in (500, 502, 503, 504):
            return backoff
        return None
    if isinstance(error, ConnectionFailed) and error.nothing_sent:
        return backoff
    if isinstance(error, TransportError) and call.idempotent:
        return backoff
    return None


# ---------------------------------------------------------------- sync


class _NoRaise(urllib.request.HTTPErrorProcessor):
    """Hands every status back as a response instead of raising."""

    def http_response(self, request: Any, response: Any) -> Any:
        return response

    https_response = http_response


class SyncTransport:
    """Blocking HTTP on :mod:`urllib.request`."""

    def __init__(self, config: Config, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        handlers: list[Any] = [_NoRaise()]
        if ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    def call(self, call: Call[T]) -> T:
        """Sends the call (with retries as the rule allows) and reads the answer."""
        attempt = 0
        while True:
            try:
                return _check(call, self._send(call))
            except MandateError as error:
                delay = _retry_delay(call, error, attempt, self.config)
                if delay is None:
                    raise
                time.sleep(delay)
                attempt += 1

    def _send(self, call: Call[Any]) -> Response:
        url = call.target(self.config.url)
        data = call.payload()
        request = urllib.request.Request(
            url, data=data, method=call.method, headers=_headers(self.config, data is not None)
        )
        timeout = self.config.timeout_s + call.extra_timeout_s
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                body = answer.read(RESPONSE_BYTES_MAX + 1)
                headers = {k.lower(): v for k, v in answer.headers.items()}
                return Response(status=answer.status, headers=headers, body=body)
        except TimeoutError as error:
            raise RequestTimeout(f"no answer from {url} within {timeout:g} s", url=url) from error
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise RequestTimeout(f"no answer from {url} within {timeout:g} s", url=url) from error
            nothing_sent = isinstance(reason, (ConnectionRefusedError, socket.gaierror))
            raise ConnectionFailed(
                f"cannot reach Mandate at {url}: {reason}", url=url, nothing_sent=nothing_sent
            ) from error
        except (ConnectionError, OSError, ValueError) as error:
            raise ConnectionFailed(f"connection to {url} failed: {error}", url=url) from error


# ---------------------------------------------------------------- async


class AsyncTransport:
    """Non-blocking HTTP/1.1 on :mod:`asyncio` streams (one connection per
    request, ``Connection: close``), so cancelling a call really stops it."""

    def __init__(self, config: Config, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self._ssl_context = ssl_context

    async def call(self, call: Call[T]) -> T:
        """Sends the call (with retries as the rule allows) and reads the answer."""
        attempt = 0
        while True:
            try:
                return _check(call, await self._send(call))
            except MandateError as error:
                delay = _retry_delay(call, error, attempt, self.config)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                attempt += 1

    async def _send(self, call: Call[Any]) -> Response:
        url = call.target(self.config.url)
        timeout = self.config.timeout_s + call.extra_timeout_s
        try:
            return await asyncio.wait_for(self._exchange(call, url), timeout)
        except asyncio.TimeoutError as error:
            raise RequestTimeout(f"no answer from {url} within {timeout:g} s", url=url) from error

    async def _exchange(self, call: Call[Any], url: str) -> Response:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        context: ssl.SSLContext | None = None
        if secure:
            context = self._ssl_context or ssl.create_default_context()
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except (ConnectionRefusedError, socket.gaierror) as error:
            raise ConnectionFailed(f"cannot reach Mandate at {url}: {error}", url=url, nothing_sent=True) from error
        except OSError as error:
            raise ConnectionFailed(f"cannot reach Mandate at {url}: {error}", url=url) from error
        try:
            data = call.payload()
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            headers = _headers(self.config, data is not None)
            headers["Host"] = parts.netloc
            headers["Connection"] = "close"
            headers["Content-Length"] = str(len(data or b""))
            head = f"{call.method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(head.encode("latin-1") + b"\r\n" + (data or b""))
            await writer.drain()
            return await _read_response(reader)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            raise ConnectionFailed(f"connection to {url} failed: {error}", url=url) from error
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError, ssl.SSLError):
                pass


async def _read_response(reader: asyncio.StreamReader) -> Response:
    status_line = (await reader.readline()).decode("latin-1").strip()
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    status = int(rest.split(" ", 1)[0])
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            if len(body) + size > RESPONSE_BYTES_MAX:
                raise ValueError("answer too large")
            body += await reader.readexactly(size)
            await reader.readline()
        return Response(status, headers, bytes(body))
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > RESPONSE_BYTES_MAX:
            raise ValueError("answer too large")
        return Response(status, headers, await reader.readexactly(length))
    return Response(status, headers, await reader.read(RESPONSE_BYTES_MAX))
