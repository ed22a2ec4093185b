"""Prosody's rate limits against the xmpp kind, each on a real Prosody of its own: the limits
that answer with an error give `throttled`, never `failure`, and the minute they fill is no
apparent failure; the one that only slows reads (core mod_limits) cannot be told from a slow
server, and what an operator sets against it.

- mod_c2s_conn_throttle (Debian's prosody-modules): past `cthrottler_logins_count` logins
  from one address within `cthrottler_time` seconds it closes the stream with the stream
  error `policy-violation`.
- mod_firewall (prosody-modules) with a `LIMIT` rule: the groupchat message over the rate is
  bounced with a stanza error, `policy-violation`, as mod_muc_limits does (mod_muc_limits is
  not in Debian's package; it never limits affiliated users, such as the probe accounts
  xmpp-setup makes owner and member).
- mod_limits (core): reads of a session are paused for `bytes / rate` seconds; no error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prober.adapters import ProbeContext
from prober.adapters.xmpp import XmppAdapter
from prober.config.secrets import Secret
from prober.setup.xmpp import provision
from prober.sla import Outcome, OutcomeCounts, Reason, State, decide

from .prosody_fixture import DOMAIN, PASSWORD, PEER_PASSWORD, Prosody, accounts, section
from .test_xmpp_adapter import attempts, outcomes

TIMEOUT = 3.0
SUCCESS = (Outcome.SUCCESS, "")
THROTTLED = (Outcome.THROTTLED, "rate_limited")


def minute_of(results) -> tuple[State, Reason]:
    verdict = decide(OutcomeCounts.of([r.outcome for r, _ in results]))
    return verdict.state, verdict.reason


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., Prosody]]:
    """Starts a Prosody with the probe accounts and the given settings; stopped after."""
    servers: list[Prosody] = []

    def start(**settings: Any) -> Prosody:
        server = accounts(Prosody(tmp_path / f"prosody{len(servers)}", **settings))
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def test_logins_over_prosodys_connection_rate_limit_are_throttled_never_failures(
    started: Callable[..., Prosody],
) -> None:
    server = started(
        community=("c2s_conn_throttle",),
        extra={"cthrottler_logins_count": 2, "cthrottler_time": 600},
    )
    results = attempts(
        XmppAdapter("x", section(server), TIMEOUT), ["login", "login", "login", "send_c2c", "ping"]
    )
    direct = section(server, tls="direct", port=server.tls_port)
    results += attempts(XmppAdapter("x", direct, TIMEOUT), ["login"])
    assert outcomes(results) == [SUCCESS, SUCCESS] + [THROTTLED] * 4, results
    for result, _ in results[2:]:
        assert "stream error in " in result.detail and "policy-violation" in result.detail
    assert "Exceeded login count for 127.0.0.1" in server.log.read_text()
    # the minute: available by its successes; with only the throttled ones, excluded
    assert minute_of(results) == (State.AVAILABLE, Reason.NONE)
    assert minute_of(results[2:]) == (State.NO_DATA, Reason.EXCLUDED_ONLY)


# 2 groupchat messages at once (mod_firewall's util.throttle holds rate × burst), then one
# every 4 s; the bounce is the one mod_muc_limits sends (type wait).
GROUPCHAT_LIMIT = """\
%RATE groupchat: 0.25 (burst 8)

::preroute
KIND: message
TYPE: groupchat
LIMIT: groupchat
BOUNCE=policy-violation:wait (groupchat over the rate limit)
"""


def test_groupchat_faster_than_the_rooms_limit_is_throttled_and_the_next_one_succeeds(
    started: Callable[..., Prosody],
) -> None:
    server = started(firewall=GROUPCHAT_LIMIT)
    assert provision(section(server), "XMPP_PASSWORD", "XMPP_PEER_PASSWORD").complete
    adapter = XmppAdapter("x", section(server, verify_delivery=True), TIMEOUT)
    state = {"n": 0}

    async def refilled(_adapter: XmppAdapter) -> None:
        state["n"] += 1
        if state["n"] == 4:  # the limiter gives one message every 4 s
            await asyncio.sleep(4.2)

    results = attempts(adapter, ["send_group"] * 5, between=refilled)
    assert outcomes(results) == [SUCCESS, SUCCESS, THROTTLED, THROTTLED, SUCCESS], results
    for result, _ in results[2:4]:
        assert result.detail == "message bounced: policy-violation"
    assert minute_of(results) == (State.AVAILABLE, Reason.NONE)
    assert minute_of(results[2:4]) == (State.NO_DATA, Reason.EXCLUDED_ONLY)


def test_mod_limits_slows_a_login_without_an_error_and_it_still_succeeds(
    started: Callable[..., Prosody],
) -> None:
    """At 1000 bytes/s Prosody pauses after each read for its size / 1000 seconds: a login
    takes several times longer, and succeeds within its timeout."""
    server = started(limits={"c2s": {"rate": "1kb/s"}})
    for extra in ({}, {"tls": "direct", "port": server.tls_port}):
        config = section(server, **extra)
        results = attempts(XmppAdapter("x", config, 10.0), ["login", "send_c2c"], timeout=10.0)
        assert outcomes(results) == [SUCCESS, SUCCESS], (extra, results)


# Prosody 0.12's mod_limits reads the unit `b` as a power of ten (its table says b = 1, like
# k = 3), so "10b/s" is 100 bytes/s; should a later Prosody read it as 10, the pauses only
# grow and every assertion below still holds.
SLOW = {"c2s": {"rate": "10b/s"}}


def test_a_read_limit_that_outlasts_the_timeout_is_a_timeout_even_for_unlimited_jids(
    started: Callable[..., Prosody],
) -> None:
    """Nothing on the wire tells paused reads from a server that is slow or stuck: the login
    ends as `failure`/`timeout`. unlimited_jids does not spare the login: Prosody lifts the
    limit on authentication-success, after the stream header, STARTTLS and SASL."""
    server = started(limits=SLOW, extra={"unlimited_jids": [f"probe@{DOMAIN}"]})
    [(result, _)] = attempts(XmppAdapter("x", section(server), 1.0), ["login"], timeout=1.0)
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "timeout"), result
    assert "no answer within 1s in " in result.detail


def test_unlimited_jids_spares_the_kept_sessions_once_they_are_logged_in(
    started: Callable[..., Prosody],
) -> None:
    server = started(limits=SLOW, extra={"unlimited_jids": [f"probe@{DOMAIN}"]})
    # the same sends from the probe (unlimited) and from the peer's account (limited), at
    # the same time; each first opens its kept session with time to spare
    unlimited = section(server)
    limited = section(
        server,
        jid=f"probe-peer@{DOMAIN}",
        password=Secret(PEER_PASSWORD, "env:XMPP_PEER_PASSWORD"),
        peer_jid=f"probe@{DOMAIN}",
        peer_password=Secret(PASSWORD, "env:XMPP_PASSWORD"),
    )

    async def sends(config) -> list[tuple[Outcome, str]]:
        adapter = XmppAdapter("x", config, 30.0)
        seen = []
        try:
            for n, timeout in enumerate([30.0, 1.0, 1.0]):
                context = ProbeContext("x", "send_c2c", timeout, time.time(), f"a{n}")
                async with asyncio.timeout(timeout):
                    result = await adapter.attempt(context)
                seen.append((result.outcome, result.error_kind))
        finally:
            await adapter.aclose()
        return seen

    async def main():
        return await asyncio.gather(sends(unlimited), sends(limited))

    fast, slow = asyncio.run(main())
    assert fast == [SUCCESS] * 3
    # a message of a few hundred bytes pauses the limited session's reads for seconds: the
    # ping after it is answered too late
    assert slow[0] == SUCCESS and slow[1:] == [(Outcome.FAILURE, "timeout")] * 2, slow
