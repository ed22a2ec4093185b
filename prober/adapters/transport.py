"""Shared HTTP client plumbing: one SSL context per trust setting, small pools per target,
and the mapping from transport exceptions to outcomes."""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path

import httpx

from . import base


@lru_cache(maxsize=8)
def ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Built once and shared: building a context loads the CA bundle (~12 ms each time)."""
    if not verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=ca_file)


def make_client(
    *,
    timeout: float,
    verify: bool = True,
    ca_file: Path | None = None,
    max_redirects: int = 0,
    max_connections: int = 4,
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context(verify, str(ca_file) if ca_file else None),
        timeout=httpx.Timeout(timeout),
        follow_redirects=max_redirects > 0,
        max_redirects=max(max_redirects, 0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        trust_env=False,  # no proxies or netrc from the environment: probes go where configured
    )


def classify_exception(exc: Exception) -> base.Result:
    """A transport exception as an attempt result. Every one of these is the service's (or
    the path's) failure, except a URL the config got wrong."""
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, httpx.TimeoutException):
        return base.failure(base.TIMEOUT, text)
    if isinstance(exc, httpx.TooManyRedirects):
        return base.failure("redirect", text)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return base.client_error(base.CONFIG, text)
    if isinstance(exc, httpx.ConnectError):
        lowered = text.lower()
        if "ssl" in lowered or "certificate" in lowered or "tls" in lowered:
            return base.failure(base.TLS, text)
        if any(
            s in lowered for s in ("name or service", "nodename", "getaddrinfo", "name resolution")
        ):
            return base.failure(base.DNS, text)
        return base.failure(base.CONNECT, text)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return base.failure(base.RESET, text)
    if isinstance(exc, httpx.DecodingError):
        return base.failure(base.BAD_RESPONSE, text)
    if isinstance(exc, httpx.HTTPError):
        return base.failure(base.CONNECT, text)
    if isinstance(exc, ssl.SSLError):
        return base.failure(base.TLS, text)
    if isinstance(exc, OSError):
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


async def read_bounded(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None when it is longer than `limit` (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
