"""The slixmpp side of the `xmpp` kind: one client-to-server session and what the adapter
waits for on it. Apart from `xmpp.py` so that slixmpp (~6 MB of memory once imported) is
imported only by a daemon that has an xmpp target, when its adapter is built."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import slixmpp
from slixmpp import Iq
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.plugins.xep_0077.stanza import Register
from slixmpp.util.sasl import mechanisms as _sasl_mechanisms
from slixmpp.xmlstream import register_stanza_plugin

from ..config.secrets import Secret
from . import base, xmpp_errors
from .transport import ssl_context
from .xmpp import (
    CLOSE_WAIT,
    CREATED,
    MAX_STANZA,
    MUC,
    MUC_USER,
    REGISTER_FEATURE,
    REGISTRATION_CLOSED,
    TOKEN_PREFIX,
    XmppError,
    XmppSection,
)

# slixmpp's DEBUG lines carry the SASL exchange (PLAIN is the password in base64) and it logs
# at ERROR each certificate or connection failure that the adapter reports as a result anyway.
logging.getLogger("slixmpp").setLevel(logging.CRITICAL)


def _pbkdf2_hi(self: Any, text: Any, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac(self.hash().name, bytes(text), salt, iterations)


# SCRAM's Hi() is PBKDF2 (RFC 5802); slixmpp computes it in a Python loop, ~15 ms of CPU per
# login at Prosody's 10,000 iterations, hashlib's C version a fraction of that (bench/README).
_sasl_mechanisms.SCRAM.Hi = _pbkdf2_hi


def transport_result(error: object, where: str) -> base.Result:
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


class Session:
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
        """Connect, secure, authenticate, bind; raises XmppError with the result."""
        section = self.section
        self._t0 = time.monotonic()
        if section.host is not None:
            port = section.port or (5223 if section.tls == "direct" else 5222)
            self.client.connect(section.host, port)
        else:
            self.client.connect()
        problem = await self.started
        if problem is not None:
            raise XmppError(problem)

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
        self._fail(transport_result(self._last_connect_error, "connect"))

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
            raise XmppError(problem)
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
            raise XmppError(xmpp_errors.result(condition, "ping")) from None
        except IqTimeout:
            raise XmppError(base.failure(base.TIMEOUT, "no answer to the ping")) from None

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
