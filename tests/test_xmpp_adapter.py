"""The xmpp kind against a real Prosody: login with its phases, sends with delivery to the
peer, kept sessions, error mapping (credentials, TLS, connection, stream errors), a peer
that is not online, Prosody's connection rate limit, cancellation and bounded stanzas."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from prober.adapters import ProbeContext
from prober.adapters.xmpp import MAX_STANZA, XmppAdapter
from prober.config.secrets import Secret
from prober.demo.proxy import FaultProxy
from prober.sla import Outcome

from .chat_app import free_port
from .prosody_fixture import (  # noqa: F401 - the session fixture
    PASSWORD,
    PEER_PASSWORD,
    Prosody,
    accounts,
    prosody_server,
    section,
)

TIMEOUT = 3.0


def attempts(adapter: XmppAdapter, probes: list[str], timeout: float = TIMEOUT, between=None):
    """Run the probes one after the other as the runtime does; (result or None, seconds)."""

    async def main():
        out = []
        try:
            for probe in probes:
                context = ProbeContext("x", probe, timeout, time.time(), f"a{len(out)}")
                t0 = time.monotonic()
                try:
                    async with asyncio.timeout(timeout):
                        result = (await adapter.attempt(context)).cleaned()
                except TimeoutError:
                    result = None
                out.append((result, time.monotonic() - t0))
                if between is not None:
                    await between(adapter)
        finally:
            await adapter.aclose()
        return out

    return asyncio.run(main())


def outcomes(results) -> list[tuple[Outcome, str]]:
    return [(r.outcome, r.error_kind) if r is not None else (None, "cancelled") for r, _ in results]


def test_login_succeeds_with_the_time_of_each_phase(prosody: Prosody) -> None:
    [(result, _)] = attempts(XmppAdapter("x", section(prosody), TIMEOUT), ["login"])
    assert result.outcome is Outcome.SUCCESS, result
    for phase in ("connect", "tls", "auth", "bind"):
        assert f"{phase} " in result.detail and " ms" in result.detail


def test_login_over_direct_tls(prosody: Prosody) -> None:
    config = section(prosody, tls="direct", port=prosody.tls_port)
    [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["login"])
    assert result.outcome is Outcome.SUCCESS, result


def test_sends_are_delivered_to_the_peer_on_kept_sessions(prosody: Prosody) -> None:
    adapter = XmppAdapter("x", section(prosody, verify_delivery=True), TIMEOUT)
    seen = []

    async def remember(adapter: XmppAdapter) -> None:
        seen.append(tuple(id(s) for s in adapter.sessions.values()))

    results = attempts(
        adapter, ["send_c2c", "send_group", "send_c2c", "send_group", "ping"], between=remember
    )
    assert outcomes(results) == [(Outcome.SUCCESS, "")] * 5, results
    assert len(set(seen)) == 1 and len(seen[0]) == 2  # the same two sessions throughout


def test_wrong_password_is_a_client_error(prosody: Prosody) -> None:
    config = section(prosody, password=Secret("wrong-password-123", "env:X"))
    [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["login"])
    assert (result.outcome, result.error_kind) == (Outcome.CLIENT_ERROR, "auth")
    assert "not-authorized" in result.detail
    assert "wrong-password-123" not in result.detail and PASSWORD not in result.detail


def test_a_peer_that_is_not_online_gives_not_delivered_then_recovers(prosody: Prosody) -> None:
    adapter = XmppAdapter("x", section(prosody, verify_delivery=True), TIMEOUT)
    state = {"n": 0}

    async def peer_goes_offline(adapter: XmppAdapter) -> None:
        # After the first send: the peer's stream stays up but its presence says it is
        # gone, so the server keeps the next message for later instead of delivering it.
        state["n"] += 1
        if state["n"] == 1:
            adapter.sessions["peer"].client.send_presence(ptype="unavailable")
            await asyncio.sleep(0.3)

    results = attempts(adapter, ["send_c2c"] * 3, between=peer_goes_offline)
    assert outcomes(results) == [
        (Outcome.SUCCESS, ""),
        (Outcome.FAILURE, "not_delivered"),
        (Outcome.SUCCESS, ""),  # the failed attempt dropped the peer's session; a fresh one
    ], results
    assert results[1][1] < TIMEOUT  # reported by the adapter, not cut off by the runtime


def test_a_room_that_does_not_exist_is_a_client_error_and_is_not_created(
    prosody: Prosody,
) -> None:
    config = section(prosody, room="nosuchroom@conference.localhost")
    results = attempts(XmppAdapter("x", config, TIMEOUT), ["send_group", "send_group"])
    assert outcomes(results) == [(Outcome.CLIENT_ERROR, "no_room")] * 2


def test_unknown_certificate_authority_is_a_tls_failure(prosody: Prosody) -> None:
    for extra in ({}, {"tls": "direct", "port": prosody.tls_port}):
        config = section(prosody, ca_file=None, **extra)
        [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["login"])
        assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "tls"), (extra, result)


def test_nothing_listening_is_a_connect_failure(prosody: Prosody) -> None:
    config = section(prosody, port=free_port())
    results = attempts(XmppAdapter("x", config, TIMEOUT), ["login", "send_c2c", "ping"])
    assert outcomes(results) == [(Outcome.FAILURE, "connect")] * 3


def test_outages_through_the_fault_proxy_are_failures_and_pass_recovers(
    prosody: Prosody,
) -> None:
    proxy = FaultProxy(prosody.c2s_port).start_in_thread()
    try:
        adapter = XmppAdapter("x", section(prosody, port=proxy.port), TIMEOUT)
        for mode, kinds in (
            ("refuse", {"connect"}),
            ("reset", {"reset", "connect"}),
            ("blackhole", {"timeout"}),
            ("pass", {""}),
        ):
            proxy.set_mode(mode)
            [(login, elapsed)] = attempts(adapter, ["login"])
            [(ping, _)] = attempts(adapter, ["ping"])
            for result in (login, ping):
                assert result is not None, mode  # the adapter answers before the runtime cuts
                expected = Outcome.SUCCESS if mode == "pass" else Outcome.FAILURE
                assert (result.outcome, result.error_kind in kinds) == (expected, True), (
                    mode,
                    result,
                )
            assert elapsed < TIMEOUT + 0.5
    finally:
        proxy.stop_thread()


def test_a_cancelled_attempt_leaves_no_connection_or_task_behind(prosody: Prosody) -> None:
    proxy = FaultProxy(prosody.c2s_port).start_in_thread()
    proxy.set_mode("blackhole")
    try:

        async def main() -> tuple[int, int]:
            adapter = XmppAdapter("x", section(prosody, port=proxy.port), 10.0)
            before = len(asyncio.all_tasks())
            for probe in ("login", "send_c2c"):
                context = ProbeContext("x", probe, 10.0, time.time(), "c")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # the runtime's timeout, cut short
                        await adapter.attempt(context)
            await asyncio.sleep(0.3)  # let aborted transports finish closing
            left = len(asyncio.all_tasks()) - before
            kept = len(adapter.sessions)  # a session whose attempt did not succeed is dropped
            await adapter.aclose()
            return left, kept

        left, sessions = asyncio.run(main())
        assert (left, sessions) == (0, 0)
        time.sleep(0.3)
        assert proxy_open_connections(proxy) == 0
    finally:
        proxy.stop_thread()


def proxy_open_connections(proxy: FaultProxy) -> int:
    return len(proxy._writers)


def test_connection_rate_limit_slows_a_login_but_is_never_a_failure(tmp_path) -> None:
    """Prosody's mod_limits throttles by pausing reads (it sends no error): a login under a
    limit this tight takes several times longer (here) but still succeeds within its timeout.
    A throttle that outlasts the timeout cannot be told from a server that stopped reading:
    probes are small and few, so a sane limit never comes near them."""
    server = accounts(Prosody(tmp_path / "limited", limits={"c2s": {"rate": "100b/s"}}))
    # 100 bytes/s: Prosody stops reading after each chunk for its size / 100 seconds
    server.start()
    try:
        config = section(server)
        results = attempts(XmppAdapter("x", config, 15.0), ["login"], timeout=15.0)
        [(result, _)] = results
        assert result is not None and result.outcome is Outcome.SUCCESS, result
    finally:
        server.stop()


class StreamErrorServer:
    """A TCP listener that answers a stream header with one stream error, or with a stanza
    larger than the adapter accepts."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(
                        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                        b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' "
                        b"from='localhost' version='1.0'>" + self.reply
                    )
                    time.sleep(0.5)

    def close(self) -> None:
        self.sock.close()


def stream_error(condition: str) -> bytes:
    return (
        f"<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        f"</stream:error></stream:stream>"
    ).encode()


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("policy-violation", (Outcome.THROTTLED, "rate_limited")),
        ("resource-constraint", (Outcome.THROTTLED, "rate_limited")),
        ("system-shutdown", (Outcome.FAILURE, "stream_error")),
        ("internal-server-error", (Outcome.FAILURE, "stream_error")),
        ("host-unknown", (Outcome.FAILURE, "stream_error")),
        ("not-authorized", (Outcome.CLIENT_ERROR, "auth")),
        ("no-such-condition-at-all", (Outcome.FAILURE, "unknown_condition")),
    ],
)
def test_stream_errors_follow_the_outcome_table(prosody: Prosody, condition, expected) -> None:
    server = StreamErrorServer(stream_error(condition))
    try:
        config = section(prosody, port=server.port)
        [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["login"])
        assert (result.outcome, result.error_kind) == expected, result
        if expected[1] != "unknown_condition":  # slixmpp names only the RFC's conditions
            assert condition in result.detail
    finally:
        server.close()


def test_a_stanza_over_the_bound_ends_the_session(prosody: Prosody) -> None:
    huge = b"<message><body>" + b"x" * (MAX_STANZA + 1024) + b"</body></message>"
    server = StreamErrorServer(huge)
    try:
        config = section(prosody, port=server.port)
        [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["login"])
        assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "bad_response"), result
    finally:
        server.close()


def test_secrets_never_reach_the_details(prosody: Prosody) -> None:
    proxy = FaultProxy(prosody.c2s_port).start_in_thread()
    try:
        adapter = XmppAdapter("x", section(prosody, port=proxy.port, verify_delivery=True), 2.0)
        results = attempts(adapter, ["login", "send_c2c"], timeout=2.0)
        proxy.set_mode("reset")
        results += attempts(adapter, ["login", "send_group"], timeout=2.0)
        for result, _ in results:
            assert result is not None
            assert PASSWORD not in result.detail and PEER_PASSWORD not in result.detail
    finally:
        proxy.stop_thread()
