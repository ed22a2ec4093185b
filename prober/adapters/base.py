"""What every adapter is: run one attempt of one probe against one target, say how it went.

Adapters know their protocol and nothing else: the scheduler owns timing and timeouts, the
closer owns verdicts, the ledger and metrics never appear here.
"""

from __future__ import annotations

import errno
import ssl
import weakref
from abc import ABC, abstractmethod
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import ClassVar

from ..config.fields import Strict
from ..config.secrets import redact
from ..sla import Outcome

# error_kind values shared by every adapter; each adapter may add a few of its own.
TIMEOUT = "timeout"
CONNECT = "connect"
DNS = "dns"
TLS = "tls"
RESET = "reset"
HTTP_5XX = "http_5xx"
HTTP_4XX = "http_4xx"
AUTH = "auth"
RATE_LIMITED = "rate_limited"
BAD_RESPONSE = "bad_response"
ASSERTION = "assertion"
CONFIG = "config"
INTERNAL = "internal"  # a bug in the prober: never counted against the provider
# the prober's own host ran out of descriptors, memory, buffers, ports or processes: never
# counted against the provider either
LOCAL_RESOURCES = "local_resources"

DETAIL_LIMIT = 200


class Section(Strict):
    """Base of every kind's config section: strict like the rest of the config."""


@dataclass(frozen=True, slots=True)
class Result:
    """How one attempt went, before the scheduler adds its times."""

    outcome: Outcome
    error_kind: str = ""
    error_code: int | None = None
    http_status: int | None = None
    detail: str = ""
    # notAfter (epoch seconds) of the earliest peer certificate this attempt's connections
    # showed; None without TLS or when it could not be read
    tls_not_after: float | None = None

    @classmethod
    def ok(cls, detail: str = "", http_status: int | None = None) -> Result:
        return cls(Outcome.SUCCESS, http_status=http_status, detail=detail)

    def cleaned(self) -> Result:
        """The same result with its detail redacted and bounded, as it may be stored."""
        detail = redact(self.detail.replace("\n", " ").strip())
        if len(detail) > DETAIL_LIMIT:
            detail = detail[: DETAIL_LIMIT - 1] + "…"
        return replace(self, detail=detail)


def failure(kind: str, detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.FAILURE, kind, detail=detail, **extra)  # type: ignore[arg-type]


def client_error(kind: str, detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.CLIENT_ERROR, kind, detail=detail, **extra)  # type: ignore[arg-type]


def throttled(detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.THROTTLED, RATE_LIMITED, detail=detail, **extra)  # type: ignore[arg-type]


def prober_fault(kind: str, detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.PROBER_FAULT, kind, detail=detail, **extra)  # type: ignore[arg-type]


# errno values by which the prober's own kernel refuses it a resource. None of them can come
# from the provider: they are raised by socket(), connect()'s local half, pipe() or fork()
# before anything reaches the wire, or by a send the local stack has no buffer for.
LOCAL_ERRNOS = frozenset(
    {
        errno.EMFILE,  # this process is out of file descriptors
        errno.ENFILE,  # the whole system is
        errno.ENOMEM,
        errno.ENOBUFS,  # no socket buffer space
        errno.EAGAIN,  # fork() over the process limit; connect() out of routing-cache entries
        errno.EADDRNOTAVAIL,  # no local address or ephemeral port left to connect from
    }
)
_LINK_LIMIT = 16  # exceptions followed through causes and contexts; chains are short


def local_resource_error(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps: aiohttp's `os_error`, `__cause__`, `__context__`)
    is the prober's host running out of a resource rather than anything the far end did.

    An exception group (several addresses tried at once) is local only when every member
    is: one address that refused the connection is still the provider's answer."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < _LINK_LIMIT:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        if isinstance(current, BaseExceptionGroup):
            members = current.exceptions
            if members and all(local_resource_error(m) for m in members):
                return True
        elif isinstance(current, OSError) and current.errno in LOCAL_ERRNOS:
            return True
        elif isinstance(current, RuntimeError) and str(current) == "can't start new thread":
            # asyncio's resolver and child watcher start threads; the OS refused one
            return True
        for linked in (getattr(current, "os_error", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return False


def local_resource_fault(exc: BaseException, where: str = "") -> Result:
    """The result of an attempt the prober's own host could not carry out."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = f"prober out of resources: {text}"
    return prober_fault(LOCAL_RESOURCES, f"{where}: {detail}" if where else detail)


def unexpected_error(exc: Exception) -> Result:
    """An exception an adapter let escape (the runtime's and probe-once's catch-all): the
    prober's own fault either way, named by what ran out when something did."""
    if local_resource_error(exc):
        return local_resource_fault(exc)
    return prober_fault(INTERNAL, f"internal error: {type(exc).__name__}")


# The notAfter values the running attempt's connections showed. A context variable rather
# than an argument: the transports that see a handshake (a connector, slixmpp's callbacks)
# are shared by the target's attempts, and tasks an attempt starts inherit the list.
_certificates_seen: ContextVar[list[float] | None] = ContextVar("certificates_seen", default=None)


def saw_certificate(not_after: float | None) -> None:
    """Note a peer certificate's notAfter for the attempt running in this context."""
    seen = _certificates_seen.get()
    if seen is not None and not_after is not None:
        seen.append(not_after)


# One value per TLS connection: a kept-alive connection shows the same certificate at every
# request, and reading it again builds the certificate's dict each time (~26 µs a request).
_not_after_of: weakref.WeakKeyDictionary[object, float | None] = weakref.WeakKeyDictionary()


def peer_not_after(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> float | None:
    """The notAfter of the peer's leaf certificate (the only one Python's ssl hands out
    without extra work, so not the chain's earliest), in epoch seconds; None without one."""
    if ssl_object is None:
        return None
    try:
        return _not_after_of[ssl_object]
    except KeyError:
        pass
    _not_after_of[ssl_object] = found = _read_not_after(ssl_object)
    return found


def _read_not_after(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> float | None:
    try:
        parsed = ssl_object.getpeercert()
        if parsed and "notAfter" in parsed:
            return float(ssl.cert_time_to_seconds(str(parsed["notAfter"])))
        der = ssl_object.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None
    # An unverified connection (tls_verify: false) gives only the DER form.
    return _der_not_after(der) if der else None


@lru_cache(maxsize=64)  # keep-alive and kept sessions show the same certificate again
def _der_not_after(der: bytes) -> float | None:
    """notAfter from a DER certificate, read with `cryptography` (a dependency already, and
    imported at start for the checkpoints' signatures)."""
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
    except Exception:  # hostile bytes: any decoder error means "unknown", never a fault
        return None


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What an attempt may know about itself (handed to templates and commands)."""

    target: str
    probe: str
    timeout: float
    planned_at: float  # wall clock, epoch seconds
    attempt_id: str  # unique per attempt


class Adapter(ABC):
    """One instance per target, built from its validated section, reused for every attempt."""

    kind: ClassVar[str]
    section_model: ClassVar[type[Section]]
    probes: ClassVar[frozenset[str]]  # probe names this kind can run

    def __init__(self, target: str, section: Section, timeout: float) -> None:
        self.target = target
        self.section = section
        self.timeout = timeout  # the largest attempt timeout of the target

    @classmethod
    def preload(cls) -> None:
        """Imports what the kind's attempts need and the kind imports only when a target of
        it exists; called in a worker thread before its adapters are built, so the import
        never holds up the event loop. Most kinds import everything with their module."""
        return

    @classmethod
    def probe_problems(cls, section: Section, probes: list[str]) -> list[str]:
        """What is wrong with running these probes with this section (names it cannot run)."""
        unknown = [p for p in probes if cls.probes and p not in cls.probes]
        return [f"kind {cls.kind} has no probe {p}" for p in unknown]

    async def attempt_noting_tls(self, context: ProbeContext) -> Result:
        """`attempt()`, with the earliest certificate notAfter its connections showed."""
        seen: list[float] = []
        token = _certificates_seen.set(seen)
        try:
            result = await self.attempt(context)
        finally:
            _certificates_seen.reset(token)
        if seen and result.tls_not_after is None:
            result = replace(result, tls_not_after=min(seen))
        return result

    @abstractmethod
    async def attempt(self, context: ProbeContext) -> Result:
        """Run one attempt. May be cancelled at the timeout; must not raise for protocol
        errors (those are results), only for bugs."""

    async def aclose(self) -> None:  # noqa: B027 - adapters without resources need nothing
        """Release connections and processes."""
