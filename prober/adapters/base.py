"""What every adapter is: run one attempt of one probe against one target, say how it went.

Adapters know their protocol and nothing else: the scheduler owns timing and timeouts, the
closer owns verdicts, the ledger and metrics never appear here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from ..fields import Strict
from ..secrets import redact
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

    @classmethod
    def ok(cls, detail: str = "", http_status: int | None = None) -> Result:
        return cls(Outcome.SUCCESS, http_status=http_status, detail=detail)

    def cleaned(self) -> Result:
        """The same result with its detail redacted and bounded, as it may be stored."""
        detail = redact(self.detail.replace("\n", " ").strip())
        if len(detail) > DETAIL_LIMIT:
            detail = detail[: DETAIL_LIMIT - 1] + "…"
        return Result(self.outcome, self.error_kind, self.error_code, self.http_status, detail)


def failure(kind: str, detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.FAILURE, kind, detail=detail, **extra)  # type: ignore[arg-type]


def client_error(kind: str, detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.CLIENT_ERROR, kind, detail=detail, **extra)  # type: ignore[arg-type]


def throttled(detail: str = "", **extra: int | None) -> Result:
    return Result(Outcome.THROTTLED, RATE_LIMITED, detail=detail, **extra)  # type: ignore[arg-type]


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
    def probe_problems(cls, section: Section, probes: list[str]) -> list[str]:
        """What is wrong with running these probes with this section (names it cannot run)."""
        unknown = [p for p in probes if cls.probes and p not in cls.probes]
        return [f"kind {cls.kind} has no probe {p}" for p in unknown]

    @abstractmethod
    async def attempt(self, context: ProbeContext) -> Result:
        """Run one attempt. May be cancelled at the timeout; must not raise for protocol
        errors (those are results), only for bugs."""

    async def aclose(self) -> None:  # noqa: B027 - adapters without resources need nothing
        """Release connections and processes."""
