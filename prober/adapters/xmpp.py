"""The `xmpp` kind: any XMPP server, client-to-server (RFC 6120/6121), on slixmpp.

- `login`: a fresh session every attempt — connect (an explicit host:port, else the SRV
  records of the domain), STARTTLS or direct TLS (XEP-0368) with certificate verification,
  SASL (slixmpp picks the strongest offered: SCRAM-SHA-256, SCRAM-SHA-1, PLAIN only over
  TLS), resource bind, then a clean close. The detail keeps the time of each phase.
- `send_c2c`: a `chat` message with a unique id from the probe account to its peer, on a
  session kept across attempts (opened again inside the attempt when it died). Accepted when
  an IQ ping sent right after it is answered with no bounce in between: a server handles a
  session's stanzas in order, so the answer means the message went through its routing.
- `send_group`: a `groupchat` message into a MUC room (XEP-0045) both accounts have joined;
  success when the room reflects it back to the sender.
- `verify_delivery`: the peer's own session must receive the message before the timeout, else
  `failure` / `not_delivered`. We watch the peer's stanza stream rather than ask for XEP-0184
  receipts: a receipt is a second message from the peer's client back through the server, so
  it would add the return path to what is measured and depend on the client answering, while
  the peer's stream is the delivery itself.
- `ping` (XEP-0199): an IQ ping to the server on the kept session, a cheap liveness check.

TLS is always required: a server that offers no STARTTLS is a `failure` / `tls`, never a
login in the clear. Outcomes come from one table (`xmpp_errors`); transport errors are
`failure`, the prober's own resources (EMFILE, ENOMEM, …) `prober_fault`. A session whose
attempt did not succeed is dropped, so the next attempt starts on a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import ssl
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import slixmpp
from pydantic import Field, field_validator, model_validator
from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0077.stanza import Register
from slixmpp.util.sasl import mechanisms as _sasl_mechanisms
from slixmpp.xmlstream import register_stanza_plugin

from ..config.fields import SecretRef
from ..config.secrets import Secret
from . import base, xmpp_errors
from .transport import ssl_context

# slixmpp's DEBUG lines carry the SASL exchange (PLAIN is the password in base64) and it logs
# at ERROR each certificate or connection failure that the adapter reports as a result anyway.
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


def _pbkdf2_hi(self: Any, text: Any, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(self.hash().name, bytes(text), salt, iterations)


# SCRAM's Hi() is PBKDF2 (RFC 5802); slixmpp computes it in a Python loop, ~15 ms of CPU per
# login at Prosody's 10,000 iterations, hashlib's C version a fraction of that (bench/README).
_sasl_mechanisms.SCRAM.Hi = _pbkdf2_hi

MAX_STANZA = 256 * 1024  # Prosody's default c2s_stanza_size_limit; no probe reply comes near it
MARGIN = 0.2  # seconds kept back from the attempt's timeout to say what we were waiting for
CLOSE_WAIT = 1.0  # the login probe's clean close waits this long for the server's close
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
REGISTER = "jabber:iq:register"
REGISTER_FEATURE = "http://jabber.org/features/iq-register"
REGISTRATION_CLOSED = "registration_closed"
TOKEN_PREFIX = "im-prober"
DELIVERY = "waiting for the peer to receive the message"

# A join that created the room (xmpp-setup); stands in the join future's result.
CREATED = base.Result.ok("created")

_JID = re.compile(r"^[^@/\s]{1,1023}@[^@/\s]{1,1023}$")
_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class XmppSection(base.Section):
    jid: str = Field(description="the probe account, probe@example.org (no resource)")
    password: SecretRef
    host: str | None = Field(
        None, description="server host; when absent, the SRV records of the JID's domain"
    )
    port: int | None = Field(None, ge=1, le=65535, description="default 5222, or 5223 direct")
    tls: Literal["starttls", "direct"] = Field(
        "starttls", description="STARTTLS on the c2s port, or direct TLS (XEP-0368)"
    )
    tls_verify: bool = True
    ca_file: Path | None = None
    resource: str = Field("im-prober", pattern=_PART.pattern)
    peer_jid: str | None = Field(None, description="the second account, peer@example.org")
    peer_password: SecretRef | None = None
    room: str | None = Field(None, description="MUC room for send_group, probes@muc.example.org")
    nick: str = Field("im-prober", pattern=_PART.pattern)
    verify_delivery: bool = False

    @field_validator("jid", "peer_jid", "room")
    @classmethod
    def _bare_jid(cls, value: str | None) -> str | None:
        if value is not None and not _JID.match(value):
            raise ValueError("a bare JID looks like name@example.org (no /resource)")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:\[\]-]{1,253}", value):
            raise ValueError("host is a name or an address, e.g. xmpp.example.org")
        return value

    @model_validator(mode="after")
    def _port_needs_host(self) -> XmppSection:
        if self.port is not None and self.host is None:
            raise ValueError("port needs host (without host, the SRV records give both)")
        return self

    @property
    def domain(self) -> str:
        return self.jid.split("@", 1)[1]


class _XmppError(Exception):
    def __init__(self, result: base.Result) -> None:
        self.result = result


def _transport_result(error: object, where: str) -> base.Result:
    """A connection error reported by slixmpp (an OSError, or a sentence for DNS)."""
    if isinstance(error, BaseException) and base.local_resource_error(error):
        return base.local_resource_fault(error, where)
    if not isinstance(error, BaseException):
        return base.failure(base.DNS, f"{where}: {error}")
    text = f"{where}: {type(error).__name__}: {error}"
    if isinstance(error, socket.gaierror):
        return base.failure(base.DNS, text)
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return base.failure(base.TLS, text)
    if isinstance(error, TimeoutError):
        return base.failure(base.TIMEOUT, text)
    if isinstance(error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return base.failure(base.RESET, text)
    return base.failure(base.CONNECT, text)


class _Client(slixmpp.ClientXMPP):
    """slixmpp's client with a bound on the size of one incoming stanza."""

    def __init__(
        self, jid: str, password: str, context: ssl.SSLContext, on_too_large: Callable[[], None]
    ) -> None:
        # The shared context given here: slixmpp would otherwise build one per session and
        # load the system's CA store into it (~65 ms of CPU each time).
        super().__init__(jid, password, ssl_context=context)
        self._inside = 0
        self._on_too_large = on_too_large

    def data_received(self, data: bytes | str) -> None:
        self._inside += len(data)
        if self._inside > MAX_STANZA:
            self._on_too_large()
            self.abort()
            return
        super().data_received(data)
        if self.xml_depth <= 1:  # between stanzas: what came so far is complete
            self._inside = 0


class _Session:
    """One client-to-server session and what the adapter waits for on it."""

    def __init__(
        self,
        section: XmppSection,
        jid: str,
        password: Secret,
        resource: str,
        *,
        register_first: bool = False,
    ) -> None:
        self.section = section
        self._register_first = register_first  # xmpp-setup: in-band registration (XEP-0077)
        self.stage = "connect"
        self.phases: dict[str, float] = {}
        self._t0 = time.monotonic()
        self._last_connect_error: object = None
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[base.Result | None] = loop.create_future()
        self.dead: base.Result | None = None
        self.not_after: float | None = None  # the server certificate's, once encrypted
        self.rooms: set[str] = set()  # occupant JIDs (room/nick) we are joined as
        self._create = False
        self._joins: dict[str, asyncio.Future[base.Result | None]] = {}
        self._waiters: dict[str, asyncio.Future[base.Result | None]] = {}
        context = ssl_context(section.tls_verify, str(section.ca_file) if section.ca_file else None)
        client = _Client(f"{jid}/{resource}", password.reveal(), context, self._too_large)
        self.client = client
        client.enable_plaintext = False
        client.enable_starttls = section.tls == "starttls"
        client.enable_direct_tls = section.tls == "direct"
        client.whitespace_keepalive_interval = 60
        client.register_plugin("xep_0199", {"keepalive": False})
        # Our own bind step, so a refused bind is a result rather than a lost exception.
        client._stream_feature_handlers["bind"] = (self._bind, False)
        mechanisms, restart = client._stream_feature_handlers["mechanisms"]
        client._stream_feature_handlers["mechanisms"] = (self._guard(mechanisms), restart)
        for name, handler in (
            ("connected", self._phase("connect", "tls")),
            ("tls_success", self._phase("tls", "auth")),
            ("auth_success", self._phase("auth", "bind")),
            ("session_start", self._on_start),
            ("connection_failed", self._on_connect_failed),
            ("reconnect_delay", self._on_gave_up),
            ("ssl_invalid_chain", self._on_bad_chain),
            ("failed_auth", self._on_failed_auth),
            ("no_auth", self._on_no_auth),
            ("stream_error", self._on_stream_error),
            ("disconnected", self._on_disconnected),
            ("message", self._on_message),
            ("message_error", self._on_message_error),
            ("presence", self._on_presence),
        ):
            client.add_event_handler(name, handler)

    # -- opening ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, secure, authenticate, bind; raises _XmppError with the result."""
        section = self.section
        self._t0 = time.monotonic()
        if section.host is not None:
            port = section.port or (5223 if section.tls == "direct" else 5222)
            self.client.connect(section.host, port)
        else:
            self.client.connect()
        problem = await self.started
        if problem is not None:
            raise _XmppError(problem)

    def _fail(self, result: base.Result) -> None:
        if not self.started.done():
            self.started.set_result(result)
        if self.dead is None:
            self.dead = result
        for future in [*self._waiters.values(), *self._joins.values()]:
            if not future.done():
                future.set_result(result)

    def _phase(self, name: str, following: str) -> Callable[[Any], None]:
        def mark(_event: Any) -> None:
            self.phases[name] = time.monotonic() - self._t0
            self.stage = following

        return mark

    def _guard(self, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """SASL only once the stream is encrypted (and, for xmpp-setup, after registering)."""

        async def guarded(features: Any) -> Any:
            transport = self.client.transport
            if transport is None or transport.get_extra_info("ssl_object") is None:
                self._fail(base.failure(base.TLS, "the server offered no STARTTLS"))
                self.abort()
                return True
            self.not_after = base.peer_not_after(transport.get_extra_info("ssl_object"))
            if self._register_first:
                self._register_first = False
                offered = features.xml.find(f"{{{REGISTER_FEATURE}}}register") is not None
                problem = (
                    await self._register()
                    if offered
                    else base.client_error(REGISTRATION_CLOSED, "register: not offered")
                )
                if problem is not None:
                    self._fail(problem)
                    self.abort()
                    return True
            return handler(features)

        return guarded

    async def _register(self) -> base.Result | None:
        """In-band registration of this session's account (XEP-0077), before SASL."""
        jid = self.client.requested_jid
        # slixmpp's stanza class: before the session it only lets known register IQs out.
        register_stanza_plugin(Iq, Register)
        iq = self.client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = str(jid.user)
        iq["register"]["password"] = self.client.password
        try:
            await iq.send(timeout=30)
        except IqError as exc:
            condition = xmpp_errors.stanza_condition(exc.iq.xml)
            if condition == "conflict":
                return base.client_error("conflict", "register: the account exists")
            return base.client_error(REGISTRATION_CLOSED, f"register: {condition}")
        except IqTimeout:
            return base.failure(base.TIMEOUT, "register: no answer")
        return None

    async def _bind(self, features: Any) -> None:
        iq = self.client.Iq()
        iq["type"] = "set"
        iq.enable("bind")
        iq["bind"]["resource"] = self.client.requested_jid.resource
        try:
            response = await iq.send(timeout=30)
        except IqError as exc:
            self._fail(xmpp_errors.result(xmpp_errors.stanza_condition(exc.iq.xml), "bind"))
            self.abort()
            return
        except IqTimeout:
            return  # the attempt's own timeout reports it, naming the stage
        self.phases["bind"] = time.monotonic() - self._t0
        self.client.plugin["feature_bind"].features = features
        self.client.plugin["feature_bind"]._on_bind_response(response)

    def _on_start(self, _event: Any) -> None:
        self.stage = "ready"
        if not self.started.done():
            self.started.set_result(None)

    def _on_connect_failed(self, error: Any) -> None:
        self._last_connect_error = error  # more addresses (SRV records) may follow

    def _on_gave_up(self, _wait: Any) -> None:
        # slixmpp schedules another round after every address failed: that is our answer.
        self.client.cancel_connection_attempt()
        self._fail(_transport_result(self._last_connect_error, "connect"))

    def _on_bad_chain(self, error: Any) -> None:
        self._fail(base.failure(base.TLS, f"tls: {type(error).__name__}: {error}"))
        self.abort()

    def _on_failed_auth(self, stanza: Any) -> None:
        self._fail(xmpp_errors.result(stanza["condition"], "sasl"))
        self.abort()

    def _on_no_auth(self, _event: Any) -> None:
        self._fail(base.client_error(base.CONFIG, "sasl: no mechanism we can use was offered"))

    def _on_stream_error(self, error: Any) -> None:
        self._fail(xmpp_errors.result(error["condition"], f"stream error in {self.stage}"))

    def _on_disconnected(self, _reason: Any) -> None:
        # Reported a moment later: asyncio closes the transport of a failed TLS handshake
        # before the handshake's own error reaches slixmpp, and that error says more.
        result = base.failure(base.RESET, f"connection closed in {self.stage}")
        asyncio.get_running_loop().call_later(0.05, self._fail, result)

    def _too_large(self) -> None:
        self._fail(base.failure(base.BAD_RESPONSE, f"a stanza over {MAX_STANZA} bytes"))

    # -- stanzas ---------------------------------------------------------------------

    def expect(self, token: str) -> asyncio.Future[base.Result | None]:
        """A future that a message carrying `token` (or a bounce of it) resolves."""
        future: asyncio.Future[base.Result | None] = asyncio.get_running_loop().create_future()
        if self.dead is not None:
            future.set_result(self.dead)
        self._waiters[token] = future
        return future

    def forget(self, token: str) -> None:
        self._waiters.pop(token, None)

    @staticmethod
    def _token(msg: Any) -> str:
        if msg["id"]:
            return str(msg["id"])
        body = str(msg["body"])
        return body.rsplit(" ", 1)[-1] if body.startswith(TOKEN_PREFIX) else ""

    def _on_message(self, msg: Any) -> None:
        if msg["type"] == "error":  # a bounce that carries the body (mod_muc_limits' does)
            return
        future = self._waiters.get(self._token(msg))
        if future is None:
            future = self._waiters.get(str(msg["body"]).rsplit(" ", 1)[-1])
        if future is not None and not future.done():
            future.set_result(None)

    def _on_message_error(self, msg: Any) -> None:
        future = self._waiters.get(self._token(msg))
        if future is not None and not future.done():
            future.set_result(
                xmpp_errors.result(xmpp_errors.stanza_condition(msg.xml), "message bounced")
            )

    async def join(self, room: str, nick: str, *, create: bool = False) -> bool:
        """Join as `nick`; True when the join created the room (only with `create`, for
        xmpp-setup: a probe never creates a room, as a mistyped name would then succeed)."""
        occupant = f"{room}/{nick}"
        if occupant in self.rooms:
            return False
        self._create = create
        future: asyncio.Future[base.Result | None] = asyncio.get_running_loop().create_future()
        self._joins[occupant] = future
        presence = self.client.make_presence(pto=occupant)
        x = ET.SubElement(presence.xml, f"{{{MUC}}}x")
        ET.SubElement(x, f"{{{MUC}}}history", maxstanzas="0")
        presence.send()
        try:
            problem = await future
        finally:
            self._joins.pop(occupant, None)
        if problem is CREATED:
            self.rooms.add(occupant)
            return True
        if problem is not None:
            raise _XmppError(problem)
        self.rooms.add(occupant)
        return False

    def _on_presence(self, presence: Any) -> None:
        occupant = str(presence["from"])
        codes = {
            status.get("code")
            for status in presence.xml.iterfind(f"{{{MUC_USER}}}x/{{{MUC_USER}}}status")
        }
        if presence["type"] == "unavailable":
            self.rooms.discard(occupant)
        future = self._joins.get(occupant)
        if future is None or future.done():
            return
        if presence["type"] == "error":
            condition = xmpp_errors.stanza_condition(presence.xml)
            future.set_result(xmpp_errors.result(condition, "join room"))
        elif "201" in codes and self._create:
            future.set_result(CREATED)
        elif "201" in codes:  # our join created the room: it was not there
            future.set_result(
                base.client_error(xmpp_errors.NO_ROOM, "the room did not exist: run xmpp-setup")
            )
            leave = self.client.make_presence(pto=occupant, ptype="unavailable")
            leave.send()
        elif "110" in codes:
            future.set_result(None)

    async def ping(self, timeout: float) -> None:
        try:
            await self.client.plugin["xep_0199"].ping(jid=self.section.domain, timeout=timeout)
        except IqError as exc:
            condition = xmpp_errors.stanza_condition(exc.iq.xml)
            raise _XmppError(xmpp_errors.result(condition, "ping")) from None
        except IqTimeout:
            raise _XmppError(base.failure(base.TIMEOUT, "no answer to the ping")) from None

    # -- closing ---------------------------------------------------------------------

    async def close(self) -> None:
        """A clean close (our stream end, the server's), bounded; then nothing is left."""
        client = self.client
        if client.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(wait=CLOSE_WAIT), CLOSE_WAIT + 0.5)
        self.abort()

    def abort(self) -> None:
        """Synchronous, so it also runs in a `finally` of a cancelled attempt."""
        client = self.client
        client.cancel_connection_attempt()
        transport = client.transport
        if transport is not None:
            transport.abort()
        if client._run_out_filters is not None:  # slixmpp's send loop, one task per session
            client._run_out_filters.cancel()
        if self.dead is None:
            self.dead = base.failure(base.RESET, "session closed")

    def timings(self) -> str:
        return ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.phases.items())


class XmppAdapter(base.Adapter):
    kind: ClassVar[str] = "xmpp"
    section_model: ClassVar[type[base.Section]] = XmppSection
    probes: ClassVar[frozenset[str]] = frozenset({"login", "send_c2c", "send_group", "ping"})

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, XmppSection)
        self.config: XmppSection = section
        self.sessions: dict[str, _Session] = {}  # "probe" / "peer" → the kept session
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def probe_problems(cls, section: base.Section, probes: list[str]) -> list[str]:
        assert isinstance(section, XmppSection)
        problems = super().probe_problems(section, probes)
        if "send_c2c" in probes and section.peer_jid is None:
            problems.append("send_c2c needs xmpp.peer_jid (the recipient)")
        if "send_group" in probes and section.room is None:
            problems.append("send_group needs xmpp.room")
        if section.verify_delivery and (section.peer_jid is None or section.peer_password is None):
            problems.append("verify_delivery needs xmpp.peer_jid and xmpp.peer_password")
        if section.peer_jid is not None and section.peer_jid == section.jid:
            problems.append("xmpp.peer_jid must be another account than xmpp.jid")
        return problems

    async def aclose(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    # -- sessions --------------------------------------------------------------------

    async def _kept(self, role: str) -> _Session:
        """The role's kept session, opened again within this attempt when it died."""
        lock = self._locks.setdefault(role, asyncio.Lock())
        async with lock:
            session = self.sessions.get(role)
            if session is not None and session.dead is None and session.started.done():
                base.saw_certificate(session.not_after)  # kept: its handshake was earlier
                return session
            if session is not None:
                session.abort()
            config = self.config
            if role == "probe":
                session = _Session(config, config.jid, config.password, config.resource)
            else:
                assert config.peer_jid is not None and config.peer_password is not None
                session = _Session(
                    config, config.peer_jid, config.peer_password, config.resource + "-peer"
                )
            self.sessions[role] = session
            try:
                await session.open()
            except BaseException:
                session.abort()
                self.sessions.pop(role, None)
                raise
            if role == "peer":
                session.client.send_presence()  # available: chat to the bare JID reaches it
            base.saw_certificate(session.not_after)
            return session

    def _drop(self, *roles: str) -> None:
        for role in roles:
            session = self.sessions.pop(role, None)
            if session is not None:
                session.abort()

    # -- probes ----------------------------------------------------------------------

    async def attempt(self, context: base.ProbeContext) -> base.Result:
        stage: list[Any] = ["starting"]  # what the attempt waits for, named on a timeout
        try:
            async with asyncio.timeout(max(0.05, context.timeout - MARGIN)):
                if context.probe == "login":
                    return await self._login(stage)
                if context.probe == "ping":
                    return await self._ping(stage, context)
                return await self._send(stage, context)
        except _XmppError as exc:
            return exc.result
        except TimeoutError:
            if stage[0] == DELIVERY:  # the server took the message; the peer never got it
                return base.failure(
                    xmpp_errors.NOT_DELIVERED,
                    f"the peer did not receive the message within {context.timeout:g}s",
                )
            where = stage[0]
            if isinstance(where, _Session):  # a login: say which phase hung, and the others
                where = f"in {where.stage} ({where.timings() or 'nothing answered'})"
            return base.failure(base.TIMEOUT, f"no answer within {context.timeout:g}s {where}")
        # Anything else escapes to the runtime's catch-all (run_attempt), which names the
        # prober's own shortages as local_resources and everything else as internal.

    async def _login(self, stage: list[str]) -> base.Result:
        config = self.config
        # A resource of its own: binding the kept sessions' resource would kick them off.
        resource = f"{config.resource}-login-{uuid.uuid4().hex[:8]}"
        session = _Session(config, config.jid, config.password, resource)
        stage[0] = session
        try:
            try:
                await session.open()
            except _XmppError as exc:
                raise _XmppError(self._with_timings(exc.result, session)) from None
            base.saw_certificate(session.not_after)
            timings = session.timings()
            stage[0] = "while closing"
            await session.close()
            return base.Result.ok(detail=timings)
        finally:
            session.abort()

    @staticmethod
    def _with_timings(result: base.Result, session: _Session) -> base.Result:
        timings = session.timings()
        if not timings:
            return result
        return replace(result, detail=f"{result.detail} (after {timings})")

    async def _ping(self, stage: list[str], context: base.ProbeContext) -> base.Result:
        ok = False
        try:
            stage[0] = "while opening the session"
            session = await self._kept("probe")
            stage[0] = "while waiting for the pong"
            await session.ping(context.timeout)
            ok = True
            return base.Result.ok()
        finally:
            if not ok:
                self._drop("probe")

    async def _send(self, stage: list[str], context: base.ProbeContext) -> base.Result:
        config = self.config
        group = context.probe == "send_group"
        verify = config.verify_delivery
        roles = ("probe", "peer") if verify else ("probe",)
        token = f"improber-{context.attempt_id}-{uuid.uuid4().hex[:8]}"
        ok = False
        sender: _Session | None = None
        peer: _Session | None = None
        try:
            stage[0] = "while opening the sender's session"
            sender = await self._kept("probe")
            if verify:
                stage[0] = "while opening the peer's session"
                peer = await self._kept("peer")
            if group:
                assert config.room is not None
                stage[0] = "while joining the room"
                await sender.join(config.room, config.nick)
                if peer is not None:
                    await peer.join(config.room, config.nick + "-peer")
            echo = sender.expect(token)  # the room's reflection, or a bounce
            delivered = peer.expect(token) if peer is not None else None
            message = sender.client.make_message(
                mto=config.room if group else config.peer_jid,
                mbody=f"{TOKEN_PREFIX} {context.probe} {token}",
                mtype="groupchat" if group else "chat",
            )
            message["id"] = token
            stage[0] = "while sending"
            message.send()
            if group:
                stage[0] = "while waiting for the room to reflect the message"
                problem = await echo
            else:
                stage[0] = "while waiting for the server to accept the message"
                await sender.ping(context.timeout)
                await asyncio.sleep(0)  # a bounce read with the pong is handled first
                problem = echo.result() if echo.done() else None
            if problem is not None:
                return problem
            if delivered is not None:
                stage[0] = DELIVERY
                problem = await delivered
                if problem is not None:
                    return problem
            ok = True
            return base.Result.ok()
        finally:
            for session in (sender, peer):
                if session is not None:
                    session.forget(token)
            if not ok:
                self._drop(*roles)
