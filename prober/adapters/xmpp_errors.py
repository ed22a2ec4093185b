"""XMPP error conditions → attempt outcome and error kind: the one table of the `xmpp` kind.

Conditions come from three places, named alike by RFC 6120: SASL failures, stream errors
(the server closes the session) and stanza errors (a bind refused, a message bounced). One
table serves all three, as the names do not clash in meaning. A condition missing from it is
a `failure`: when in doubt, the customer's evidence is kept.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from ..sla import Outcome
from . import base

STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# error kinds of this adapter (a small fixed set, usable as a label)
ACCOUNT = "account"  # the account is disabled or its credentials expired
FORBIDDEN = "forbidden"
STREAM_ERROR = "stream_error"
BOUNCED = "bounced"  # a message came back as an error from the server
NOT_DELIVERED = "not_delivered"
NO_ROOM = "no_room"
UNKNOWN_CONDITION = "unknown_condition"


@dataclass(frozen=True, slots=True)
class Classified:
    outcome: Outcome
    kind: str


_CLIENT = Outcome.CLIENT_ERROR
_FAILURE = Outcome.FAILURE
_THROTTLED = Outcome.THROTTLED

TABLE: dict[str, Classified] = {
    # Our credentials and permissions (SASL, bind, stanza errors): the caller's fault.
    "not-authorized": Classified(_CLIENT, base.AUTH),
    "account-disabled": Classified(_CLIENT, ACCOUNT),
    "credentials-expired": Classified(_CLIENT, ACCOUNT),
    "invalid-authzid": Classified(_CLIENT, base.AUTH),
    "invalid-mechanism": Classified(_CLIENT, base.CONFIG),
    "mechanism-too-weak": Classified(_CLIENT, base.CONFIG),
    "encryption-required": Classified(_CLIENT, base.CONFIG),
    "malformed-request": Classified(_CLIENT, base.CONFIG),
    "bad-request": Classified(_CLIENT, base.CONFIG),
    "jid-malformed": Classified(_CLIENT, base.CONFIG),
    "not-allowed": Classified(_CLIENT, FORBIDDEN),
    "forbidden": Classified(_CLIENT, FORBIDDEN),
    "registration-required": Classified(_CLIENT, FORBIDDEN),
    "not-acceptable": Classified(_CLIENT, FORBIDDEN),  # e.g. not an occupant of the room
    "item-not-found": Classified(_CLIENT, NO_ROOM),
    # Another session took our resource or nickname: someone else uses the probe account.
    "conflict": Classified(_CLIENT, "conflict"),
    # Rate limits and quotas: excluded (the prober must stay under them).
    "policy-violation": Classified(_THROTTLED, base.RATE_LIMITED),
    "resource-constraint": Classified(_THROTTLED, base.RATE_LIMITED),
    # The service's own faults, stream errors towards the provider.
    "internal-server-error": Classified(_FAILURE, STREAM_ERROR),
    "remote-connection-failed": Classified(_FAILURE, STREAM_ERROR),
    "system-shutdown": Classified(_FAILURE, STREAM_ERROR),
    "connection-timeout": Classified(_FAILURE, STREAM_ERROR),
    "host-unknown": Classified(_FAILURE, STREAM_ERROR),
    "host-gone": Classified(_FAILURE, STREAM_ERROR),
    "see-other-host": Classified(_FAILURE, STREAM_ERROR),  # not followed: a probe goes where told
    "reset": Classified(_FAILURE, STREAM_ERROR),
    "undefined-condition": Classified(_FAILURE, STREAM_ERROR),
    "temporary-auth-failure": Classified(_FAILURE, base.AUTH),  # the server could not check
    "aborted": Classified(_FAILURE, base.AUTH),
    # A message bounced by the server: it did not deliver.
    "service-unavailable": Classified(_FAILURE, BOUNCED),
    "recipient-unavailable": Classified(_FAILURE, BOUNCED),
    "remote-server-timeout": Classified(_FAILURE, BOUNCED),
    "remote-server-not-found": Classified(_FAILURE, BOUNCED),
}


def classify(condition: str) -> Classified:
    """The outcome of an error with this condition name (`not-authorized`, …)."""
    return TABLE.get(condition, Classified(_FAILURE, UNKNOWN_CONDITION))


def stanza_condition(stanza: ET.Element) -> str:
    """The defined condition in a stanza's <error/> (RFC 6120 8.3.3), read from the XML.

    Not slixmpp's `stanza["error"]["condition"]`: it knows only RFC 3920's names and reads
    `policy-violation`, the condition rate limiters bounce with (mod_muc_limits,
    mod_firewall), as no condition at all, which would make a rate limit a `failure`."""
    prefix = f"{{{STANZA_ERRORS}}}"
    for child in stanza:
        if child.tag.rpartition("}")[2] != "error":
            continue
        for condition in child:
            name = condition.tag.removeprefix(prefix)
            if condition.tag.startswith(prefix) and name != "text":
                return name
    return ""


def result(condition: str, where: str) -> base.Result:
    found = classify(condition)
    return base.Result(found.outcome, found.kind, detail=f"{where}: {condition or 'no condition'}")
