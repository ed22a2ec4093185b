"""The http kind against a real local chat service: every fault gives the right outcome
within the timeout, memory stays bounded, and secrets never reach the result."""

from __future__ import annotations

import asyncio
import time

import pytest

from prober.adapters import ProbeContext
from prober.adapters.http import HttpAdapter, HttpSection
from prober.config.secrets import Secret
from prober.sla import Outcome

from .chat_app import ChatServer, free_port

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def chat():
    server = ChatServer(slow_seconds=5.0).start()
    yield server
    server.stop()


def section(chat: ChatServer, **extra) -> HttpSection:
    return HttpSection.model_validate(
        {
            "base_url": chat.url,
            "variables": {"password": Secret(chat.password, "env:CHAT_PASSWORD")},
            "probes": {
                "login": [
                    {
                        "method": "POST",
                        "url": "/login",
                        "json": {"user": "probe", "password": "{password}"},
                        "expect_json": {"ok": True},
                        "extract": {"token": {"path": "token", "secret": True}},
                    }
                ],
                "send_c2c": [
                    {
                        "method": "POST",
                        "url": "/send",
                        "headers": {"Authorization": "Bearer {token}"},
                        "json": {"text": "probe {uuid}", "n": "{random}"},
                        "extract": {"message_id": "id"},
                    }
                ],
                "ping": [{"url": "/ping"}],
                "loop": [{"url": "/loop"}],
            },
            **extra,
        }
    )


async def attempt(adapter: HttpAdapter, probe: str):
    context = ProbeContext(adapter.target, probe, TIMEOUT, time.time(), "a1")
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(TIMEOUT):
            result = await adapter.attempt(context)
    except TimeoutError:
        return None, time.monotonic() - t0
    return result.cleaned(), time.monotonic() - t0


def run(chat: ChatServer, mode: str, probes: list[str], **extra):
    chat.set_mode("ok")

    async def main():
        adapter = HttpAdapter("chat", section(chat, **extra), TIMEOUT)
        try:
            if "send_c2c" in probes:  # a token first, as the login probe would give it
                first, _ = await attempt(adapter, "login")
                assert first is not None and first.outcome is Outcome.SUCCESS
            chat.set_mode(mode)
            return [await attempt(adapter, p) for p in probes]
        finally:
            await adapter.aclose()

    try:
        return asyncio.run(main())
    finally:
        chat.set_mode("ok")


def test_login_then_send_carries_the_token(chat: ChatServer) -> None:
    [(result, _)] = run(chat, "ok", ["send_c2c"])
    assert result.outcome is Outcome.SUCCESS and result.http_status == 200
    sent = chat.messages[-1]
    assert '"text": "probe ' in sent and '"n": ' in sent and '"{random}"' not in sent


@pytest.mark.parametrize(
    ("mode", "outcome", "kind", "status"),
    [
        ("5xx", Outcome.FAILURE, "http_5xx", 503),
        ("429", Outcome.THROTTLED, "rate_limited", 429),
        ("401", Outcome.CLIENT_ERROR, "auth", 401),
        ("malformed", Outcome.FAILURE, "bad_response", 200),
        ("nested", Outcome.FAILURE, "bad_response", 200),
        ("bad_utf8", Outcome.FAILURE, "bad_response", 200),
        ("huge", Outcome.FAILURE, "body_too_large", 200),
        ("reset", Outcome.FAILURE, "reset", None),
        ("refuse", Outcome.FAILURE, "connect", None),
        ("big_headers", Outcome.FAILURE, "bad_response", None),
    ],
)
def test_faults_map_to_outcomes(chat: ChatServer, mode, outcome, kind, status) -> None:
    [(result, elapsed)] = run(chat, mode, ["login"])
    assert result is not None, "no result within the timeout"
    assert (result.outcome, result.error_kind) == (outcome, kind), result.detail
    if status is not None:
        assert result.http_status == status
    assert elapsed < TIMEOUT
    assert chat.password not in result.detail


def test_hang_and_slow_end_at_the_timeout(chat: ChatServer) -> None:
    for mode in ("hang", "slow"):
        [(result, elapsed)] = run(chat, mode, ["ping"])
        assert result is None  # the scheduler's timeout turns this into failure/timeout
        assert TIMEOUT <= elapsed < TIMEOUT + 0.5


def test_redirect_loop_is_bounded(chat: ChatServer) -> None:
    [(result, _)] = run(chat, "ok", ["loop"], max_redirects=3)
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "redirect")
    [(result, _)] = run(chat, "ok", ["loop"])
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "unexpected_status")


def test_extracted_secret_token_is_redacted_from_details(chat: ChatServer) -> None:
    async def main():
        adapter = HttpAdapter("chat", section(chat), TIMEOUT)
        try:
            result, _ = await attempt(adapter, "login")
            token = adapter.carried["token"]
            assert isinstance(token, Secret)
            from prober.adapters.base import Result

            leaked = Result(Outcome.FAILURE, "x", detail=f"echo {token.reveal()}").cleaned()
            return result, leaked
        finally:
            await adapter.aclose()

    result, leaked = asyncio.run(main())
    assert result.outcome is Outcome.SUCCESS
    assert leaked.detail == "echo <redacted>"


def test_missing_token_runs_login_first_or_is_a_client_error(chat: ChatServer) -> None:
    async def main(**extra):
        adapter = HttpAdapter("chat", section(chat, **extra), TIMEOUT)
        try:
            first = (await attempt(adapter, "send_c2c"))[0]  # no login yet: no {token}
            # an expired token: the service answers 401, login runs again, the send is retried
            adapter.carried["token"] = Secret("expired-token", "test")
            second = (await attempt(adapter, "send_c2c"))[0]
            return first, second
        finally:
            await adapter.aclose()

    chat.set_mode("ok")
    sent = len(chat.messages)
    first, second = asyncio.run(main())
    assert first.outcome is Outcome.SUCCESS and second.outcome is Outcome.SUCCESS
    assert len(chat.messages) == sent + 2
    first, second = asyncio.run(main(refresh_with=None))
    assert (first.outcome, first.error_kind) == (Outcome.CLIENT_ERROR, "config")
    assert "no value for {token}" in first.detail
    assert (second.outcome, second.error_kind) == (Outcome.CLIENT_ERROR, "auth")


def test_failed_refresh_is_reported_as_such(chat: ChatServer) -> None:
    async def main():
        adapter = HttpAdapter("chat", section(chat), TIMEOUT)
        try:
            chat.set_mode("5xx")
            return (await attempt(adapter, "send_c2c"))[0]
        finally:
            chat.set_mode("ok")
            await adapter.aclose()

    result = asyncio.run(main())
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "http_5xx")
    assert result.detail.startswith("login (refresh): ")


def test_dns_failure(chat: ChatServer) -> None:
    async def main():
        adapter = HttpAdapter(
            "chat",
            HttpSection.model_validate(
                {"probes": {"ping": [{"url": "http://no-such-host.invalid/"}]}}
            ),
            TIMEOUT,
        )
        try:
            return (await attempt(adapter, "ping"))[0]
        finally:
            await adapter.aclose()

    result = asyncio.run(main())
    assert result is None or (result.outcome, result.error_kind) == (Outcome.FAILURE, "dns")


def test_closed_port_is_connect_failure() -> None:
    port = free_port()

    async def main():
        adapter = HttpAdapter(
            "x",
            HttpSection.model_validate(
                {"probes": {"ping": [{"url": f"http://127.0.0.1:{port}/"}]}}
            ),
            TIMEOUT,
        )
        try:
            return (await attempt(adapter, "ping"))[0]
        finally:
            await adapter.aclose()

    result = asyncio.run(main())
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "connect")


def test_targets_with_the_same_transport_options_share_one_session(
    chat: ChatServer,
) -> None:
    chat.set_mode("ok")

    async def main():
        a, b = (HttpAdapter(name, section(chat), TIMEOUT) for name in ("a", "b"))
        other = HttpAdapter("c", section(chat, tls_verify=False), TIMEOUT)
        for adapter in (a, b):
            send, _ = await attempt(adapter, "send_c2c")  # logs in first, on its own token
            assert send is not None and send.outcome is Outcome.SUCCESS
        await attempt(other, "ping")
        shared = a._http.session
        assert b._http.session is shared and other._http.session is not shared
        await a.aclose()  # a reload dropping one target leaves the session to the others
        assert not shared.closed
        ping, _ = await attempt(b, "ping")
        assert ping is not None and ping.outcome is Outcome.SUCCESS
        await b.aclose()
        assert shared.closed  # closed with its last user
        # a target made again after that gets a session of its own
        again = HttpAdapter("a", section(chat), TIMEOUT)
        ping, _ = await attempt(again, "ping")
        assert ping is not None and ping.outcome is Outcome.SUCCESS
        assert again._http.session is not shared
        await again.aclose()
        await other.aclose()

    asyncio.run(main())
