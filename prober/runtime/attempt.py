"""One attempt's life, the same for the daemon and `probe-once`: run the adapter under the
attempt's own timeout, turn whatever happens into exactly one outcome, and return the record
that is stored (detail redacted and bounded)."""

from __future__ import annotations

import asyncio
import logging

from ..adapters import Adapter, ProbeContext
from ..adapters import base as adapter_base
from ..records import Attempt
from .clock import Clock, SystemClock

log = logging.getLogger(__name__)


async def run_attempt(
    adapter: Adapter, context: ProbeContext, clock: Clock | None = None, vantage: str = ""
) -> Attempt:
    """Never raises but for cancellation: a timeout is the service's `failure`/`timeout`; an
    exception the adapter let escape is the prober's own fault (`local_resources` when
    something ran out, else `internal`, logged with its traceback since it is a bug)."""
    clock = clock or SystemClock()
    started = clock.wall()
    t0 = clock.monotonic()
    try:
        async with asyncio.timeout(context.timeout):
            result = await adapter.attempt_noting_tls(context)
    except TimeoutError:
        result = adapter_base.failure(
            adapter_base.TIMEOUT, f"no answer within {context.timeout:g}s"
        )
    except Exception as exc:
        result = adapter_base.unexpected_error(exc)
        if result.error_kind == adapter_base.INTERNAL:
            log.exception("adapter error")
    duration = clock.monotonic() - t0
    result = result.cleaned()
    return Attempt(
        context.target,
        context.probe,
        started,
        duration,
        result.outcome,
        result.error_kind,
        result.error_code,
        result.http_status,
        result.detail,
        result.tls_not_after,
        vantage,
    )
