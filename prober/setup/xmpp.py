"""`im-prober xmpp-setup`: make sure the two probe accounts and the MUC room exist, that both
accounts are members of the room, and print the target's config section. Idempotent: an
account that logs in is kept, a room that exists is kept, affiliations are set again.

Accounts are made by in-band registration (XEP-0077) where the server allows it; where it
does not, the server-side command to run is printed instead (Prosody's `prosodyctl`, with
the password taken from the same environment variable, never written out).
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from slixmpp.exceptions import IqError, IqTimeout

from ..adapters import base
from ..adapters.xmpp import REGISTRATION_CLOSED, XmppError, XmppSection
from ..adapters.xmpp_session import Session
from ..config.secrets import Secret
from ..errors import UserError

MUC_OWNER = "http://jabber.org/protocol/muc#owner"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
DATA = "jabber:x:data"
STEP_TIMEOUT = 20.0


@dataclass
class Setup:
    done: list[str] = field(default_factory=list)  # what is in place, one line each
    manual: list[str] = field(default_factory=list)  # commands for the server's operator

    @property
    def complete(self) -> bool:
        return not self.manual


def _session(section: XmppSection, jid: str, password: Secret, register: bool) -> Session:
    resource = f"{section.resource}-setup-{uuid.uuid4().hex[:8]}"
    return Session(section, jid, password, resource, register_first=register)


async def _opened(session: Session, what: str) -> Session:
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            await session.open()
    except TimeoutError:
        session.abort()
        raise UserError(f"{what}: no answer within {STEP_TIMEOUT:g}s ({session.stage})") from None
    except XmppError:
        session.abort()
        raise
    return session


async def _account(
    section: XmppSection, jid: str, password: Secret, env: str, setup: Setup
) -> Session | None:
    """The account's session, registering it first when it cannot log in; None when the
    operator has to create it."""
    try:
        session = await _opened(_session(section, jid, password, False), f"log in as {jid}")
        setup.done.append(f"account {jid}: logs in")
        return session
    except XmppError as exc:
        if exc.result.error_kind != base.AUTH:
            raise UserError(f"log in as {jid}: {exc.result.detail}") from None
    try:
        session = await _opened(_session(section, jid, password, True), f"register {jid}")
    except XmppError as exc:
        if exc.result.error_kind == "conflict":
            raise UserError(
                f"account {jid} exists but does not accept the password in ${env}"
            ) from None
        if exc.result.error_kind != REGISTRATION_CLOSED:
            raise UserError(f"register {jid}: {exc.result.detail}") from None
        user, domain = jid.split("@", 1)
        setup.manual.append(
            f'prosodyctl register {user} {domain} "${env}"   '
            f"# in-band registration is closed ({exc.result.detail}); or your server's tool"
        )
        return None
    setup.done.append(f"account {jid}: registered (in-band) and logs in")
    return session


async def _iq(session: Session, to: str, namespace: str, build) -> None:
    iq = session.client.Iq()
    iq["type"] = "set"
    iq["to"] = to
    build(ET.SubElement(iq.xml, f"{{{namespace}}}query"))
    try:
        await iq.send(timeout=STEP_TIMEOUT)
    except IqError as exc:
        raise UserError(f"room {to}: {exc.iq['error']['condition']}") from None
    except IqTimeout:
        raise UserError(f"room {to}: no answer") from None


def _persistent_form(query: ET.Element) -> None:
    form = ET.SubElement(query, f"{{{DATA}}}x", type="submit")
    for var, value in (
        ("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
        ("muc#roomconfig_persistentroom", "1"),
        ("muc#roomconfig_roomname", "im-prober"),
    ):
        ET.SubElement(
            ET.SubElement(form, f"{{{DATA}}}field", var=var), f"{{{DATA}}}value"
        ).text = value


async def _room(section: XmppSection, probe: Session, peer: Session, setup: Setup) -> None:
    assert section.room is not None and section.peer_jid is not None
    room = section.room
    try:
        created = await probe.join(room, section.nick, create=True)
    except XmppError as exc:
        raise UserError(f"join {room}: {exc.result.detail}") from None
    if created:
        await _iq(probe, room, MUC_OWNER, _persistent_form)
        setup.done.append(f"room {room}: created (persistent)")
    else:
        setup.done.append(f"room {room}: exists")

    def members(query: ET.Element) -> None:
        for jid in (section.peer_jid,):
            ET.SubElement(query, f"{{{MUC_ADMIN}}}item", affiliation="member", jid=jid)

    try:
        await _iq(probe, room, MUC_ADMIN, members)
        setup.done.append(f"room {room}: {section.peer_jid} is a member")
    except UserError as exc:
        # Not the room's owner (someone else made it): membership is theirs to grant.
        setup.done.append(f"room {room}: could not set memberships ({exc}); joining anyway")
    try:
        await peer.join(room, section.nick + "-peer")
    except XmppError as exc:
        raise UserError(f"{section.peer_jid} joins {room}: {exc.result.detail}") from None
    setup.done.append(f"room {room}: both accounts join")


async def _provision(section: XmppSection, password_env: str, peer_password_env: str) -> Setup:
    assert section.peer_jid is not None and section.peer_password is not None
    setup = Setup()
    sessions: list[Session] = []
    try:
        probe = await _account(section, section.jid, section.password, password_env, setup)
        peer = await _account(
            section, section.peer_jid, section.peer_password, peer_password_env, setup
        )
        sessions = [s for s in (probe, peer) if s is not None]
        if probe is not None and peer is not None and section.room is not None:
            await _room(section, probe, peer, setup)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
    return setup


def provision(section: XmppSection, password_env: str, peer_password_env: str) -> Setup:
    return asyncio.run(_provision(section, password_env, peer_password_env))


def snippet(section: XmppSection, password_env: str, peer_password_env: str) -> str:
    lines = ["    kind: xmpp", "    xmpp:", f'      jid: "{section.jid}"']
    lines.append(f"      password: {{env: {password_env}}}")
    if section.host is not None:
        lines.append(f"      host: {section.host}")
    if section.port is not None:
        lines.append(f"      port: {section.port}")
    if section.tls != "starttls":
        lines.append(f"      tls: {section.tls}")
    if section.ca_file is not None:
        lines.append(f"      ca_file: {section.ca_file}")
    if not section.tls_verify:
        lines.append("      tls_verify: false")
    lines.append(f'      peer_jid: "{section.peer_jid}"')
    lines.append(f"      peer_password: {{env: {peer_password_env}}}")
    if section.room is not None:
        lines.append(f'      room: "{section.room}"')
    lines.append("      verify_delivery: true")
    return "\n".join(lines) + "\n"
