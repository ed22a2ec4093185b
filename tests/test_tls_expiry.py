"""The certificate expiry the probes see: an attempt over TLS carries its peer certificate's
notAfter, the runtime keeps each probe's latest, and `/metrics` shows the target's earliest
as `im_probe_tls_cert_expiry_timestamp_seconds` (a real HTTPS server on 127.0.0.1 with a
certificate made here)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from fractions import Fraction
from pathlib import Path

from aiohttp import web
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families as parse_text

from prober.adapters import ProbeContext
from prober.adapters.http import HttpAdapter, HttpSection
from prober.adapters.xmpp import XmppAdapter
from prober.expose.metrics import Exposition, TargetInfo
from prober.ledger.store import Ledger
from prober.ledger.view import LedgerView
from prober.records import Attempt
from prober.runtime.attempt import run_attempt
from prober.runtime.clock import SystemClock
from prober.runtime.clockwork import Clockwork
from prober.runtime.plan import Planned
from prober.runtime.writer import MinuteWriter
from prober.sla import DEFAULT_TIERS, Outcome, ServiceCalendar, State, Verdict
from prober.stats import RuntimeStats

from .certs import CA, Leaf
from .chat_app import free_port
from .prosody_fixture import Prosody, prosody_server, section  # noqa: F401 - the fixture
from .test_prometheus_rules import promtool

METRIC = "im_probe_tls_cert_expiry_timestamp_seconds"
TIMEOUT = 5.0


def not_after(leaf: Leaf) -> float:
    return x509.load_pem_x509_certificate(leaf.cert.read_bytes()).not_valid_after_utc.timestamp()


@asynccontextmanager
async def server(leaf: Leaf | None) -> AsyncIterator[str]:
    """An HTTP(S) server answering /ping with a body and /empty with 204; yields its URL."""

    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def empty(_: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_get("/empty", empty)
    context = None
    if leaf is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf.cert, leaf.key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield f"{'https' if leaf else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def adapter(url: str, **extra: object) -> HttpAdapter:
    section = HttpSection.model_validate(
        {"base_url": url, "probes": {"ping": [{"url": "/ping"}], "empty": [{"url": "/empty"}]}}
        | extra
    )
    return HttpAdapter("chat", section, TIMEOUT)


async def attempts(url: str, probes: list[str], **extra: object) -> list[Attempt]:
    """The runtime's own attempts, one after another on one adapter (one keep-alive pool)."""
    probing = adapter(url, **extra)
    try:
        done = []
        for probe in probes:
            context = ProbeContext("chat", probe, TIMEOUT, time.time(), f"a-{probe}")
            done.append(await run_attempt(probing, context))
        return done
    finally:
        await probing.aclose()


def test_an_https_attempt_records_the_peer_certificates_not_after(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    leaf = ca.issue("server")

    async def main() -> list[Attempt]:
        async with server(leaf) as url:
            # the second ping reuses the first one's connection: no second handshake
            return await attempts(url, ["ping", "ping", "empty"], ca_file=str(ca.path))

    done = asyncio.run(main())
    assert [a.outcome for a in done] == [Outcome.SUCCESS] * 3
    assert [a.tls_not_after for a in done] == [not_after(leaf)] * 3


def test_without_verification_the_not_after_comes_from_the_binary_certificate(
    tmp_path: Path,
) -> None:
    # an unknown CA: only tls_verify: false lets the attempt through, and then Python's ssl
    # hands out the certificate only in its DER form
    leaf = CA(tmp_path, name="unknown CA").issue("server")

    async def main() -> list[Attempt]:
        async with server(leaf) as url:
            return await attempts(url, ["ping"], tls_verify=False)

    (done,) = asyncio.run(main())
    assert done.outcome is Outcome.SUCCESS
    assert done.tls_not_after == not_after(leaf)


def test_plain_http_and_a_failed_handshake_see_no_certificate(tmp_path: Path) -> None:
    leaf = CA(tmp_path, name="unknown CA").issue("server")

    async def main() -> tuple[list[Attempt], list[Attempt]]:
        async with server(None) as plain, server(leaf) as untrusted:
            return await attempts(plain, ["ping"]), await attempts(untrusted, ["ping"])

    (plain,), (untrusted,) = asyncio.run(main())
    assert plain.outcome is Outcome.SUCCESS and plain.tls_not_after is None
    assert untrusted.error_kind == "tls" and untrusted.tls_not_after is None


def exposition(stats: RuntimeStats, probes: tuple[str, ...]) -> Exposition:
    view = LedgerView()
    view.track("chat", ServiceCalendar(date(2026, 1, 1), "UTC"))
    shown = Exposition(view, stats, "test")
    shown.set_targets([TargetInfo("chat", probes, Fraction(99, 100), DEFAULT_TIERS)])
    return shown


def series(shown: Exposition) -> dict[str, float]:
    text = shown.render(time.time()).decode()
    return {
        s.labels["target"]: s.value for f in parse_text(text) if f.name == METRIC for s in f.samples
    }


def test_the_clockworks_attempts_reach_metrics_as_the_targets_expiry(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    leaf = ca.issue("server")
    stats = RuntimeStats()

    async def main() -> None:
        async with server(leaf) as url:
            probing = adapter(url, ca_file=str(ca.path))
            # one attempt's life in the clockwork uses the stats, the clock and the writer
            ledger = Ledger(tmp_path / "ledger.sqlite3")
            writer = MinuteWriter(
                ledger,
                LedgerView(),
                stats,
                SystemClock(),
                buffer_minutes=1,
                verdict_of_missed=lambda _target: lambda _minute: Verdict(State.NO_DATA),
            )
            clockwork = Clockwork(SystemClock(), stats, None, writer, lambda: 0.0)  # type: ignore[arg-type]
            try:
                planned = Planned(time.time(), "chat", "ping", TIMEOUT, 60.0)
                await clockwork.attempt(planned, probing)
            finally:
                await probing.aclose()

    asyncio.run(main())
    shown = exposition(stats, ("ping", "empty"))
    assert series(shown) == {"chat": not_after(leaf)}
    body = shown.render(time.time())
    assert f"# HELP {METRIC} ".encode() in body
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_target_that_saw_no_tls_has_no_series() -> None:
    stats = RuntimeStats()
    stats.saw_certificate("chat", "ping", None)
    assert series(exposition(stats, ("ping",))) == {}
    assert METRIC not in exposition(stats, ("ping",)).render(time.time()).decode()


def test_the_earliest_of_each_probes_latest_shows_and_a_renewal_replaces_it() -> None:
    stats = RuntimeStats()
    stats.saw_certificate("chat", "ping", 2_000_000_000.0)
    stats.saw_certificate("chat", "empty", 1_900_000_000.0)
    shown = exposition(stats, ("ping", "empty"))
    assert series(shown) == {"chat": 1_900_000_000.0}
    stats.saw_certificate("chat", "empty", 2_100_000_000.0)  # renewed
    stats.saw_certificate("chat", "empty", None)  # a later attempt without TLS keeps it
    assert series(shown) == {"chat": 2_000_000_000.0}
    # a probe no longer configured no longer counts
    assert series(exposition(stats, ("empty",))) == {"chat": 2_100_000_000.0}


def test_xmpp_attempts_carry_the_servers_not_after_on_login_and_on_kept_sessions(
    prosody: Prosody,
) -> None:
    expected = x509.load_pem_x509_certificate(prosody.cert.read_bytes())
    expected_not_after = expected.not_valid_after_utc.timestamp()
    probes = ["login", "send_c2c", "send_group", "ping", "send_c2c"]

    async def main(
        probes: list[str] = probes, **extra: object
    ) -> tuple[list[Attempt], list[tuple[int, ...]]]:
        adapter = XmppAdapter("xm", section(prosody, verify_delivery=True, **extra), TIMEOUT)
        done, kept = [], []
        try:
            for probe in probes:
                context = ProbeContext("xm", probe, TIMEOUT, time.time(), f"a-{probe}")
                done.append(await run_attempt(adapter, context))
                kept.append(tuple(id(s) for s in adapter.sessions.values()))
        finally:
            await adapter.aclose()
        return done, kept

    for extra in ({}, {"tls": "direct", "port": prosody.tls_port}):
        done, kept = asyncio.run(main(**extra))
        assert [a.outcome for a in done] == [Outcome.SUCCESS] * len(probes), (extra, done)
        assert [a.tls_not_after for a in done] == [expected_not_after] * len(probes), extra
        # the attempts after the first send ran on the sessions it opened: no new handshake
        assert len(set(kept[1:])) == 1 and len(kept[1]) == 2, kept
    # no certificate when the handshake fails (an unknown CA), on a login or a kept session
    untrusted, _ = asyncio.run(main(["login", "send_c2c"], ca_file=None))
    assert [(a.error_kind, a.tls_not_after) for a in untrusted] == [("tls", None)] * 2
