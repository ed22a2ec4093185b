"""Hostile targets against the http kind, all at once and beside a healthy target: each
yields the right outcome within the attempt timeout, memory stays bounded, and the healthy
target's attempts are not disturbed."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest

from prober.adapters import ProbeContext
from prober.adapters.http import HttpAdapter, HttpSection
from prober.sla import Outcome

from .hostile import HostileServer

TIMEOUT = 2.0
TIMED_OUT = None  # the scheduler's timeout turns this into failure/timeout

CASES = {
    "/slow-headers": TIMED_OUT,
    "/slow-body": TIMED_OUT,
    "/endless": (Outcome.FAILURE, "body_too_large"),
    "/many-headers": (Outcome.FAILURE, "bad_response"),
    "/gzip-bomb": (Outcome.FAILURE, "body_too_large"),
    "/nesting-bomb": (Outcome.FAILURE, "bad_response"),
    "/bad-utf8": (Outcome.FAILURE, "bad_response"),
    "/redirect-loop": (Outcome.FAILURE, "redirect"),
}
TLS_CASES = ("expired", "wrong_host", "unknown_ca")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    server = HostileServer(tmp_path_factory.mktemp("hostile")).start()
    yield server
    server.stop()


def adapter_for(name: str, base_url: str, path: str, ca: str | None = None) -> HttpAdapter:
    section = HttpSection.model_validate(
        {
            "base_url": base_url,
            "probes": {"login": [{"url": path, "expect_json": {"ok": True}}]},
            "max_redirects": 5,
            **({"ca_file": ca} if ca else {}),
        }
    )
    return HttpAdapter(name, section, TIMEOUT)


async def timed_attempt(adapter: HttpAdapter) -> tuple[object, float]:
    context = ProbeContext(adapter.target, "login", TIMEOUT, time.time(), "a1")
    started = time.monotonic()
    try:
        async with asyncio.timeout(TIMEOUT):
            result = await adapter.attempt(context)
    except TimeoutError:
        return TIMED_OUT, time.monotonic() - started
    return (result.outcome, result.error_kind), time.monotonic() - started


async def healthy_loop(adapter: HttpAdapter, until: float) -> list[tuple[object, float]]:
    results = []
    while time.monotonic() < until:
        results.append(await timed_attempt(adapter))
        await asyncio.sleep(0.1)
    return results


def test_every_hostile_response_at_once_beside_a_healthy_target(hostile: HostileServer) -> None:
    async def main():
        adapters = {path: adapter_for(f"h{i}", hostile.url, path) for i, path in enumerate(CASES)}
        adapters |= {
            kind: adapter_for(kind, hostile.tls_url(kind), "/ok", ca=str(hostile.ca.path))
            for kind in TLS_CASES
        }
        healthy = adapter_for("healthy", hostile.url, "/ok")
        try:
            await timed_attempt(healthy)  # warm: imports, first connection
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            rounds = []
            for _ in range(3):  # three rounds, to see memory settle rather than grow
                until = time.monotonic() + TIMEOUT + 0.3
                hostile_results, healthy_results = await asyncio.gather(
                    asyncio.gather(*(timed_attempt(a) for a in adapters.values())),
                    healthy_loop(healthy, until),
                )
                rounds.append((dict(zip(adapters, hostile_results, strict=True)), healthy_results))
            peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
            return rounds, peak
        finally:
            for adapter in [*adapters.values(), healthy]:
                await adapter.aclose()

    rounds, peak = asyncio.run(main())
    for hostile_results, healthy_results in rounds:
        for path, expected in CASES.items():
            outcome, elapsed = hostile_results[path]
            assert outcome == expected, path
            assert elapsed < TIMEOUT + 0.3, path
        for kind in TLS_CASES:
            outcome, elapsed = hostile_results[kind]
            assert outcome == (Outcome.FAILURE, "tls"), kind
            assert elapsed < 1.0, kind
        # The healthy target beside them: every attempt succeeded, promptly.
        assert len(healthy_results) >= 5
        assert all(o == (Outcome.SUCCESS, "") for o, _ in healthy_results), healthy_results
        assert max(e for _, e in healthy_results) < 1.0  # loopback: ~5 ms unloaded
    # Bounded: a 1 GiB compression bomb, an endless body and 2 MB of headers, three times
    # over, cost far less than any of them would if read whole.
    print(f"hostile rounds: peak traced memory {peak / 2**20:.1f} MiB")
    assert peak < 48 << 20, f"peak {peak / 2**20:.1f} MiB"


def test_tls_failures_name_the_reason(hostile: HostileServer) -> None:
    async def main():
        found = {}
        for kind in TLS_CASES:
            adapter = adapter_for(kind, hostile.tls_url(kind), "/ok", ca=str(hostile.ca.path))
            try:
                context = ProbeContext(kind, "login", TIMEOUT, time.time(), "a1")
                found[kind] = (await adapter.attempt(context)).detail
            finally:
                await adapter.aclose()
        return found

    details = asyncio.run(main())
    assert "expired" in details["expired"]
    assert "match" in details["wrong_host"] or "mismatch" in details["wrong_host"]
    assert (
        "unable to get local issuer" in details["unknown_ca"] or "verify" in details["unknown_ca"]
    )
