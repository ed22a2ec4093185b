"""Tencent Cloud IM error codes → attempt outcome and error kind (DESIGN.md §6).

One table. Categories follow the provider's published error-code pages: service-side faults
count against the provider; signature, parameter, permission and account-setup errors are the
caller's (SLA 4.1/4.2/4.4); rate limits are excluded (the prober must stay under them);
account and edition state rejections are the caller's too but get their own kind, so an
alert can name them. A code missing from the table is a `failure`: when in doubt, the
customer's evidence is kept (and a warning is logged once per code).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ...sla import Outcome

log = logging.getLogger(__name__)

# error kinds (a small fixed set, usable as a label)
INTERNAL = "internal"
SIGNATURE = "signature"
PARAMETER = "parameter"
PERMISSION = "permission"
ACCOUNT = "account"
GROUP = "group"
RATE_LIMITED = "rate_limited"
APP_STATE = "app_state"  # SDKAppID in arrears, frozen or disabled
EDITION = "edition"  # the purchased edition does not allow it
ACCOUNT_STATE = "account_state"  # the account is banned
CONTENT_BLOCKED = "content_blocked"
UNKNOWN_CODE = "unknown_code"


@dataclass(frozen=True, slots=True)
class Classified:
    outcome: Outcome
    kind: str


def _rows() -> dict[int, Classified]:
    table: dict[int, Classified] = {}

    def put(codes: range | list[int], outcome: Outcome, kind: str) -> None:
        for code in codes:
            table[code] = Classified(outcome, kind)

    failure, client, throttled = Outcome.FAILURE, Outcome.CLIENT_ERROR, Outcome.THROTTLED
    # Group errors (10002-10023): 10002 is the service's internal error; the rest are the
    # caller's (bad group, no permission, not a member) except the rate limits below.
    put(range(10003, 10022), client, GROUP)
    put([10002], failure, INTERNAL)
    # Internal / service errors of the REST gateway, messaging and relationship chain.
    put([20002, 20004, 20005], failure, INTERNAL)
    put([60013, 60014], failure, INTERNAL)
    put([70169, 70500], failure, INTERNAL)
    put([90994, 90995, 91000], failure, INTERNAL)
    # REST gateway: request, signature and permission errors of the caller.
    put([60002, 60003], client, PARAMETER)
    put([60004, 60005], client, SIGNATURE)
    put([60006, 60009, 60010, 60021], client, PERMISSION)
    # Account system: UserSig errors 70001-70020, account setup.
    put(range(70001, 70021), client, SIGNATURE)
    put([70107], client, ACCOUNT)
    put([70402, 70403], client, PARAMETER)
    # Messaging parameters.
    put(range(90001, 90013), client, PARAMETER)
    put([93000, 80002], client, PARAMETER)
    # Rate limits (excluded: the prober must stay under them).
    put([60007, 60011, 60018, 60019, 70050, 10006, 10023], throttled, RATE_LIMITED)
    # Account and edition state: the caller's, named so an alert can say which.
    put([60016], client, APP_STATE)
    put([60017], client, APP_STATE)
    put([60020, 70398], client, EDITION)
    put([70051], client, ACCOUNT_STATE)
    put([80001], client, CONTENT_BLOCKED)
    return table


TABLE: dict[int, Classified] = _rows()
_warned: set[int] = set()


def classify(code: int) -> Classified:
    """The outcome of a response with `ActionStatus` FAIL and this `ErrorCode`."""
    if code == 0:
        return Classified(Outcome.SUCCESS, "")
    found = TABLE.get(code)
    if found is not None:
        return found
    if code not in _warned:
        _warned.add(code)
        log.warning("unknown Tencent IM error code %d counted as a failure", code)
    return Classified(Outcome.FAILURE, UNKNOWN_CODE)
