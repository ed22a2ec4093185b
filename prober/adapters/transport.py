"""Shared HTTP client plumbing on aiohttp: one SSL context per trust setting, one
keep-alive pool per set of transport options (shared by the targets that have them), bounded
reads, and the mapping from transport errors to outcomes.

aiohttp rather than httpx for the probe path: on this project's machines a keep-alive
request costs ~420 µs of CPU with aiohttp against ~1,600 µs with httpx (~1,000 µs with httpx
on an aiohttp transport); see bench/README.md.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import re
import ssl
import weakref
from functools import lru_cache
from pathlib import Path

import aiohttp

from . import base
from .base import local_resource_error

# Connections idle for less than this are reused: probes come every few seconds to a minute.
KEEPALIVE_SECONDS = 90.0

# What aiohttp refuses to write into a header (RFC 9110 5.5: control characters but tab),
# with a ValueError that is no transport error; and lone surrogates, which no encoding holds.
_UNSENDABLE_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def sendable_in_header(value: str) -> bool:
    """Whether `value` can go into a request header as it is."""
    return _UNSENDABLE_IN_HEADER.search(value) is None


@lru_cache(maxsize=8)
def ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Built once and shared: building a context loads the CA bundle (~12 ms each time)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


class _CertificateNotingConnector(aiohttp.TCPConnector):
    """Tells the running attempt which certificate each request's connection showed: at
    connect time, since a response without a body hands its connection back at once."""

    async def connect(self, req, traces, timeout):  # type: ignore[no-untyped-def]
        connection = await super().connect(req, traces, timeout)
        transport = connection.transport
        if transport is not None:
            base.saw_certificate(base.peer_not_after(transport.get_extra_info("ssl_object")))
        return connection


def make_session(
    *,
    verify: bool = True,
    ca_file: Path | None = None,
    max_connections: int = 0,
    fresh_connection: bool = False,
) -> aiohttp.ClientSession:
    """A session (0 connections: no bound of its own). Must be created inside the running
    event loop."""
    connector = _CertificateNotingConnector(
        limit=max_connections,
        ssl=ssl_context(verify, str(ca_file) if ca_file else None),
        keepalive_timeout=None if fresh_connection else KEEPALIVE_SECONDS,
        force_close=fresh_connection,  # a new connection, DNS lookup and TLS handshake each time
        use_dns_cache=not fresh_connection,
        ttl_dns_cache=60,
    )
    return aiohttp.ClientSession(
        connector=connector,
        # Attempt timeouts are the scheduler's; this only stops a request outliving one.
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,  # no proxies or netrc from the environment: probes go where configured
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


_SESSION_DEFAULTS = {p.name: p.default for p in inspect.signature(make_session).parameters.values()}


class _Shared:
    __slots__ = ("session", "users")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.users = 0


# Sessions by event loop, then by options. A session carries no state of a target's own (no
# cookies, headers or base URL: every request brings its own), so the targets with the same
# transport options share one, and its connections are pooled by host as aiohttp does: ten
# thousand targets on one service keep the few connections their attempts have open at a
# time, not one each (~11 KB a target, bench/README.md "Scale"). The pool has no bound of
# its own: the attempts planned bound how many requests are open, and a bound here would
# make attempts queue in the prober, their wait counted against the service.
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Shared]] = (
    weakref.WeakKeyDictionary()
)


class LazySession:
    """A user's handle on the shared session for its options, taken on first use inside the
    running event loop (an adapter is built before the loop runs) and taken again if it was
    closed; closed when the last user lets go of it."""

    def __init__(self, **options: object) -> None:
        options = {**_SESSION_DEFAULTS, **options}  # given or left out: one key
        self._options = options
        self._key = tuple(sorted(options.items()))
        self._held: _Shared | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        held = self._held
        if held is None or held.session.closed:
            if held is not None:
                held.users -= 1
            sessions = _SESSIONS.setdefault(asyncio.get_running_loop(), {})
            held = sessions.get(self._key)
            if held is None or held.session.closed:
                held = sessions[self._key] = _Shared(make_session(**self._options))  # type: ignore[arg-type]
            held.users += 1
            self._held = held
        return held.session

    async def aclose(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        held.users -= 1
        if held.users <= 0:
            sessions = _SESSIONS.get(asyncio.get_running_loop(), {})
            if sessions.get(self._key) is held:
                del sessions[self._key]
            await held.session.close()


def transport_failure(
    exc: BaseException, where: str, http_status: int | None = None
) -> base.Result:
    """`classify_exception` with the place it happened in the detail."""
    result = classify_exception(exc)
    return base.Result(
        result.outcome,
        result.error_kind,
        http_status=http_status,
        detail=f"{where}: {result.detail}",
    )


def classify_exception(exc: BaseException) -> base.Result:
    """A transport exception as an attempt result. Every one of these is the service's (or
    the path's) failure, except a URL the config got wrong and the prober's own host running
    out of descriptors, memory or ports (aiohttp reports an `EMFILE` from socket() as
    "Cannot connect", which must not count against the provider)."""
    if local_resource_error(exc):  # first: aiohttp wraps these as connect or DNS errors
        return base.local_resource_fault(exc)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return base.failure(base.TIMEOUT, text)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return base.failure("redirect", text)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return base.client_error(base.CONFIG, text)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return base.failure(base.DNS, text)
    if isinstance(
        exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError | ssl.SSLError
    ):
        return base.failure(base.TLS, text)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return base.failure(base.CONNECT, text)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return base.failure(base.RESET, text)
    if isinstance(exc, aiohttp.ClientResponseError):  # e.g. an over-long header line
        return base.failure(base.BAD_RESPONSE, text)
    if isinstance(exc, aiohttp.ClientOSError | ConnectionError | OSError):
        code = getattr(exc, "errno", None)
        if code in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return base.failure(base.RESET, text)
        return base.failure(base.CONNECT, text)
    if isinstance(exc, aiohttp.ClientError):
        return base.failure(base.CONNECT, text)
    raise exc


def status_result(status: int, detail: str) -> base.Result | None:
    """The result an HTTP status forces, whatever the step expected; None when it is fine so
    far. 429 is throttling, 401/403 our credentials, 5xx the service."""
    if status == 429:
        return base.throttled(detail, http_status=status)
    if status in (401, 403):
        return base.client_error(base.AUTH, detail, http_status=status)
    if status >= 500:
        return base.failure(base.HTTP_5XX, detail, http_status=status)
    return None


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (the rest is not read)."""
    if response.content_length is not None and response.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
