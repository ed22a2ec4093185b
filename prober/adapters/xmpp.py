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
import re
import uuid
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config.fields import SecretRef
from . import base, xmpp_errors

if TYPE_CHECKING:
    from .xmpp_session import Session

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


class XmppError(Exception):
    def __init__(self, result: base.Result) -> None:
        self.result = result


class XmppAdapter(base.Adapter):
    kind: ClassVar[str] = "xmpp"
    section_model: ClassVar[type[base.Section]] = XmppSection
    probes: ClassVar[frozenset[str]] = frozenset({"login", "send_c2c", "send_group", "ping"})

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, XmppSection)
        self.config: XmppSection = section
        # the daemon has preloaded it (a test, probe-once or xmpp-setup imports it here)
        from .xmpp_session import Session

        self._session = Session
        self.sessions: dict[str, Session] = {}  # "probe" / "peer" → the kept session
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def preload(cls) -> None:
        # slixmpp (~6 MB, 40-75 ms to import) comes in with the first xmpp target
        from . import xmpp_session  # noqa: F401

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

    async def _kept(self, role: str) -> Session:
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
                session = self._session(config, config.jid, config.password, config.resource)
            else:
                assert config.peer_jid is not None and config.peer_password is not None
                session = self._session(
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
        except XmppError as exc:
            return exc.result
        except TimeoutError:
            if stage[0] == DELIVERY:  # the server took the message; the peer never got it
                return base.failure(
                    xmpp_errors.NOT_DELIVERED,
                    f"the peer did not receive the message within {context.timeout:g}s",
                )
            where = stage[0]
            if isinstance(where, self._session):  # a login: which phase hung, and the others
                where = f"in {where.stage} ({where.timings() or 'nothing answered'})"
            return base.failure(base.TIMEOUT, f"no answer within {context.timeout:g}s {where}")
        # Anything else escapes to the runtime's catch-all (run_attempt), which names the
        # prober's own shortages as local_resources and everything else as internal.

    async def _login(self, stage: list[str]) -> base.Result:
        config = self.config
        # A resource of its own: binding the kept sessions' resource would kick them off.
        resource = f"{config.resource}-login-{uuid.uuid4().hex[:8]}"
        session = self._session(config, config.jid, config.password, resource)
        stage[0] = session
        try:
            try:
                await session.open()
            except XmppError as exc:
                raise XmppError(self._with_timings(exc.result, session)) from None
            base.saw_certificate(session.not_after)
            timings = session.timings()
            stage[0] = "while closing"
            await session.close()
            return base.Result.ok(detail=timings)
        finally:
            session.abort()

    @staticmethod
    def _with_timings(result: base.Result, session: Session) -> base.Result:
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
        sender: Session | None = None
        peer: Session | None = None
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
