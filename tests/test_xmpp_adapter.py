"""The xmpp kind against a real Prosody: login with its phases, sends with delivery to the
peer, kept sessions, error mapping (credentials, TLS, connection, stream errors, a bounce),
a peer that is not online, cancellation and bounded stanzas; the outcome table itself, and a
scripted server for what Prosody will not send on demand (SASL and bind errors, bounces, a
refused room join, no STARTTLS). Prosody's rate limits: tests/test_xmpp_limits.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from slixmpp import Message

from prober.adapters import ProbeContext, xmpp_errors
from prober.adapters.xmpp import MAX_STANZA, XmppAdapter, XmppSection
from prober.config.secrets import Secret
from prober.demo.proxy import FaultProxy
from prober.sla import Outcome

from .certs import CA
from .chat_app import free_port
from .prosody_fixture import (  # noqa: F401 - the session fixture
    DOMAIN,
    PASSWORD,
    PEER_PASSWORD,
    ROOM,
    Prosody,
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


# -- the outcome table ------------------------------------------------------------------

CLIENT, THROTTLED, FAILURE = Outcome.CLIENT_ERROR, Outcome.THROTTLED, Outcome.FAILURE
NAMED_BY_THE_ISSUE = {
    # SASL
    "not-authorized": (CLIENT, "auth"),
    "account-disabled": (CLIENT, "account"),
    "credentials-expired": (CLIENT, "account"),
    # bind
    "not-allowed": (CLIENT, "forbidden"),
    "forbidden": (CLIENT, "forbidden"),
    "registration-required": (CLIENT, "forbidden"),
    # rate limits
    "policy-violation": (THROTTLED, "rate_limited"),
    "resource-constraint": (THROTTLED, "rate_limited"),
    # stream errors towards the provider
    "internal-server-error": (FAILURE, "stream_error"),
    "remote-connection-failed": (FAILURE, "stream_error"),
    "system-shutdown": (FAILURE, "stream_error"),
    "connection-timeout": (FAILURE, "stream_error"),
    "host-unknown": (FAILURE, "stream_error"),
    # a bounced message
    "service-unavailable": (FAILURE, "bounced"),
    "recipient-unavailable": (FAILURE, "bounced"),
    "remote-server-timeout": (FAILURE, "bounced"),
}


def test_every_condition_the_issue_names_has_its_outcome_in_the_table() -> None:
    seen = {
        c: (found.outcome, found.kind)
        for c in NAMED_BY_THE_ISSUE
        for found in [xmpp_errors.classify(c)]
    }
    assert seen == NAMED_BY_THE_ISSUE
    assert set(NAMED_BY_THE_ISSUE) <= set(xmpp_errors.TABLE)  # not by the unknown fallback
    # a condition nobody listed keeps the customer's evidence
    unknown = xmpp_errors.classify("some-future-condition")
    assert (unknown.outcome, unknown.kind) == (FAILURE, "unknown_condition")
    assert xmpp_errors.classify("").outcome is FAILURE
    result = xmpp_errors.result("policy-violation", "message bounced")
    assert (result.outcome, result.detail) == (THROTTLED, "message bounced: policy-violation")


def test_a_stanza_errors_condition_is_read_whatever_name_slixmpp_knows() -> None:
    bounce = ET.fromstring(
        "<message xmlns='jabber:client' type='error' id='m1'><body>improber-a1</body>"
        "<error type='wait'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>too fast</text>"
        "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
    )
    assert xmpp_errors.stanza_condition(bounce) == "policy-violation"
    # slixmpp's own reading of the same stanza finds nothing (RFC 3920's list)
    assert Message(xml=bounce)["error"]["condition"] == ""
    assert xmpp_errors.stanza_condition(ET.fromstring("<message xmlns='jabber:client'/>")) == ""
    no_condition = "<iq xmlns='jabber:client' type='error'><error type='cancel'/></iq>"
    assert xmpp_errors.stanza_condition(ET.fromstring(no_condition)) == ""


def test_no_rate_limit_and_no_client_error_condition_counts_against_the_provider() -> None:
    # the rule of the table, over all of it: only the service's own faults are failures
    for condition, found in xmpp_errors.TABLE.items():
        if found.outcome is FAILURE:
            assert found.kind in {"stream_error", "bounced", "auth"}, condition
    assert {c for c, f in xmpp_errors.TABLE.items() if f.outcome is THROTTLED} == {
        "policy-violation",
        "resource-constraint",
    }


# -- a scripted server: one session, STARTTLS, SASL PLAIN, bind, then stanzas ------------

STREAM_HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='localhost' version='1.0'>"
)
STANZA = re.compile(rb"<(iq|message|presence)\b[^>]*?(?:/>|>.*?</\1>)", re.DOTALL)
ATTRIBUTE = re.compile(rb"""\b(id|to|type)=["']([^"']*)["']""")


@dataclass
class Script:
    """What the scripted server answers; None: it goes on as a healthy server would."""

    starttls: bool = True
    sasl_failure: str | None = None  # a SASL condition for the <failure/>
    bind_error: str | None = None  # a stanza error condition for the bind IQ
    bounce: str | None = None  # a stanza error condition for every message
    bounce_with_body: bool = False  # the bounce carries the original body (mod_muc_limits)
    join_error: str | None = None  # a stanza error condition for a room join


class ScriptedServer:
    """Speaks just enough XMPP for the adapter over real TLS (a certificate for `localhost`
    from a CA made here): each connection is one session that follows `script`."""

    def __init__(self, folder: Path, script: Script) -> None:
        self.script = script
        self.ca = CA(folder, "scripted xmpp CA")
        leaf = self.ca.issue("scripted-xmpp", host=DOMAIN)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(leaf.cert, leaf.key)
        self.seen: list[bytes] = []  # every stanza the client sent after bind
        self.received = bytearray()  # all the client sent (decrypted)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def section(self, **extra: object) -> XmppSection:
        return section_for(self.port, self.ca.path, **extra)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _recv(self, conn) -> bytes:
        chunk = conn.recv(65536)
        self.received += chunk
        return chunk

    def _read_until(self, conn, pattern: bytes, buffer: bytearray) -> bytes:
        while pattern not in buffer:
            chunk = self._recv(conn)
            if not chunk:
                raise ConnectionError("closed")
            buffer += chunk
        head, _, rest = bytes(buffer).partition(pattern)
        buffer[:] = rest
        return head

    def _session(self, conn) -> None:
        script, buffer = self.script, bytearray()
        with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
            conn.settimeout(5)
            self._read_until(conn, b"<stream:stream", buffer)
            mechanisms = (
                b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                b"<mechanism>PLAIN</mechanism></mechanisms>"
            )
            if not script.starttls:  # an old or misconfigured server: SASL in the clear
                conn.sendall(
                    STREAM_HEADER + b"<stream:features>" + mechanisms + b"</stream:features>"
                )
                self._read_until(conn, b"</stream:stream>", buffer)
                return
            conn.sendall(
                STREAM_HEADER + b"<stream:features><starttls "
                b"xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
            )
            self._read_until(conn, b"<starttls", buffer)
            conn.sendall(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            conn = self.context.wrap_socket(conn, server_side=True)
            buffer.clear()
            self._read_until(conn, b"<stream:stream", buffer)
            conn.sendall(STREAM_HEADER + b"<stream:features>" + mechanisms + b"</stream:features>")
            auth = self._read_until(conn, b"</auth>", buffer)
            if script.sasl_failure is not None:
                conn.sendall(
                    b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><"
                    + script.sasl_failure.encode()
                    + b"/></failure>"
                )
                return
            assert PASSWORD.encode() in base64.b64decode(auth.rsplit(b">", 1)[-1])
            conn.sendall(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            self._read_until(conn, b"<stream:stream", buffer)
            conn.sendall(
                STREAM_HEADER + b"<stream:features><bind "
                b"xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
            )
            self._stanzas(conn, buffer)

    def _stanzas(self, conn, buffer: bytearray) -> None:
        while True:
            match = STANZA.search(buffer)
            if match is None:
                chunk = self._recv(conn)
                if not chunk or b"</stream:stream>" in chunk:
                    return
                buffer += chunk
                continue
            name, stanza = bytes(match.group(1)), bytes(match.group(0))
            del buffer[: match.end()]
            self.seen.append(stanza)
            reply = self._answer(name, stanza)
            if reply:
                conn.sendall(reply)

    def _answer(self, name: bytes, stanza: bytes) -> bytes:
        attrs = {k.decode(): v.decode() for k, v in ATTRIBUTE.findall(stanza.split(b">", 1)[0])}
        sid, to = attrs.get("id", ""), attrs.get("to", "")
        me = f"probe@{DOMAIN}/im-prober"
        if name == b"iq" and b"urn:ietf:params:xml:ns:xmpp-bind" in stanza:
            resource = re.search(rb"<resource>([^<]*)</resource>", stanza)
            me = f"probe@{DOMAIN}/{resource.group(1).decode() if resource else 'r'}"
            if self.script.bind_error is not None:
                return error_stanza("iq", sid, "", me, self.script.bind_error, "cancel")
            return (
                f"<iq type='result' id='{sid}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                f"<jid>{me}</jid></bind></iq>"
            ).encode()
        if name == b"iq":  # a ping, or anything else: an empty result
            return f"<iq type='result' id='{sid}' from='{to or DOMAIN}'/>".encode()
        if name == b"presence" and "/" in to and self.script.join_error is not None:
            return error_stanza("presence", sid, to, me, self.script.join_error, "wait")
        if name == b"presence" and "/" in to:  # a room join: our own presence, status 110
            return (
                f"<presence from='{to}'><x xmlns='http://jabber.org/protocol/muc#user'>"
                f"<item affiliation='member' role='participant'/><status code='110'/></x>"
                f"</presence>"
            ).encode()
        if name == b"message" and self.script.bounce is not None:
            body = re.search(rb"<body>.*?</body>", stanza, re.DOTALL)
            extra = body.group(0).decode() if body and self.script.bounce_with_body else ""
            return error_stanza("message", sid, to, me, self.script.bounce, "wait", extra)
        if name == b"message" and attrs.get("type") == "groupchat":  # the room reflects it
            return stanza.replace(b"to=", b"from=", 1)
        return b""

    def close(self) -> None:
        self.sock.close()


def error_stanza(
    name: str, sid: str, sender: str, to: str, condition: str, kind: str, extra: str = ""
) -> bytes:
    """A stanza error as Prosody's error_reply makes it (plus `extra`, e.g. the body)."""
    origin = f" from='{sender}'" if sender else ""
    return (
        f"<{name} type='error' id='{sid}' to='{to}'{origin}><error type='{kind}'>"
        f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        f"<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>scripted</text></error>"
        f"{extra}</{name}>"
    ).encode()


def section_for(port: int, ca: Path, **extra: object) -> XmppSection:
    return XmppSection.model_validate(
        {
            "jid": f"probe@{DOMAIN}",
            "password": Secret(PASSWORD, "env:XMPP_PASSWORD"),
            "host": "127.0.0.1",
            "port": port,
            "ca_file": str(ca),
            "peer_jid": f"probe-peer@{DOMAIN}",
            "room": ROOM,
            **extra,
        }
    )


@contextlib.contextmanager
def scripted(tmp_path: Path, **script: object):
    server = ScriptedServer(tmp_path, Script(**script))  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()


def test_the_scripted_server_is_a_healthy_server_without_a_script(tmp_path: Path) -> None:
    with scripted(tmp_path) as server:
        results = attempts(
            XmppAdapter("x", server.section(), TIMEOUT), ["login", "send_c2c", "send_group"]
        )
    assert outcomes(results) == [(Outcome.SUCCESS, "")] * 3, results


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("account-disabled", (Outcome.CLIENT_ERROR, "account")),
        ("credentials-expired", (Outcome.CLIENT_ERROR, "account")),
        ("temporary-auth-failure", (Outcome.FAILURE, "auth")),
    ],
)
def test_a_sasl_failure_follows_the_outcome_table(tmp_path: Path, condition, expected) -> None:
    with scripted(tmp_path, sasl_failure=condition) as server:
        [(result, _)] = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["login"])
    assert (result.outcome, result.error_kind) == expected, result
    assert f"sasl: {condition}" in result.detail


@pytest.mark.parametrize("condition", ["not-allowed", "forbidden", "registration-required"])
def test_a_refused_bind_is_a_client_error(tmp_path: Path, condition: str) -> None:
    with scripted(tmp_path, bind_error=condition) as server:
        results = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["login", "send_c2c"])
    assert outcomes(results) == [(Outcome.CLIENT_ERROR, "forbidden")] * 2, results
    assert all(f"bind: {condition}" in r.detail for r, _ in results)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("service-unavailable", (Outcome.FAILURE, "bounced")),
        ("recipient-unavailable", (Outcome.FAILURE, "bounced")),
        ("remote-server-timeout", (Outcome.FAILURE, "bounced")),
        # RFC 6120's name for a rate limit, which slixmpp's stanza class does not know
        ("policy-violation", (Outcome.THROTTLED, "rate_limited")),
        ("resource-constraint", (Outcome.THROTTLED, "rate_limited")),
    ],
)
def test_a_bounced_message_follows_the_outcome_table(tmp_path: Path, condition, expected) -> None:
    with scripted(tmp_path, bounce=condition) as server:
        results = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["send_c2c", "send_group"])
    assert outcomes(results) == [expected] * 2, results
    assert all(f"message bounced: {condition}" in r.detail for r, _ in results)


def test_a_bounce_that_carries_the_original_body_is_not_taken_for_the_message(
    tmp_path: Path,
) -> None:
    # mod_muc_limits (prosody-modules) copies the body into its bounce; the body alone
    # must not make the bounce count as the room's reflection of the message
    with scripted(tmp_path, bounce="policy-violation", bounce_with_body=True) as server:
        results = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["send_group", "send_c2c"])
        assert any(b"<body>" in s for s in server.seen)
    assert outcomes(results) == [(Outcome.THROTTLED, "rate_limited")] * 2, results


def test_a_rate_limited_room_join_is_throttled(tmp_path: Path) -> None:
    # mod_muc_limits limits joins too, with a presence error
    with scripted(tmp_path, join_error="policy-violation") as server:
        [(result, _)] = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["send_group"])
    assert (result.outcome, result.error_kind) == (Outcome.THROTTLED, "rate_limited"), result
    assert result.detail == "join room: policy-violation"


def test_a_server_that_offers_no_starttls_is_a_tls_failure_and_hears_no_password(
    tmp_path: Path,
) -> None:
    with scripted(tmp_path, starttls=False) as server:
        results = attempts(XmppAdapter("x", server.section(), TIMEOUT), ["login", "send_c2c"])
        sent = bytes(server.received)
    assert outcomes(results) == [(Outcome.FAILURE, "tls")] * 2, results
    assert "no STARTTLS" in results[0][0].detail
    assert b"<stream:stream" in sent and b"<auth" not in sent  # no SASL in the clear


def test_a_message_to_an_account_that_does_not_exist_is_bounced_by_prosody(
    prosody: Prosody,
) -> None:
    config = section(prosody, peer_jid=f"nobody-here@{DOMAIN}")
    [(result, _)] = attempts(XmppAdapter("x", config, TIMEOUT), ["send_c2c"])
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "bounced"), result
    assert result.detail == "message bounced: service-unavailable"
