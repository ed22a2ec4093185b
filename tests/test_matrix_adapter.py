"""The matrix kind against a real Synapse: login, sends into the direct and group rooms,
delivery to the peer, token refresh, error mapping, and Synapse's own login rate limit."""

from __future__ import annotations

import asyncio
import time

from prober.adapters import ProbeContext
from prober.adapters.matrix import MatrixAdapter, MatrixSection
from prober.config.secrets import Secret
from prober.demo.proxy import FaultProxy
from prober.sla import Outcome

from .synapse_fixture import PASSWORD, PEER_PASSWORD, MatrixWorld

TIMEOUT = 3.0


def section(world: MatrixWorld, homeserver: str | None = None, **extra) -> MatrixSection:
    setup = world.setup
    return MatrixSection.model_validate(
        {
            "homeserver": homeserver or world.server.url,
            "user": setup.user,
            "password": Secret(PASSWORD, "env:MATRIX_PASSWORD"),
            "peer_user": setup.peer_user,
            "peer_password": Secret(PEER_PASSWORD, "env:MATRIX_PEER_PASSWORD"),
            "direct_room": "#im-prober-direct:localhost",
            "group_room": setup.group_room,
            **extra,
        }
    )


def attempts(adapter: MatrixAdapter, probes: list[str]):
    async def main():
        out = []
        try:
            for probe in probes:
                context = ProbeContext("m", probe, TIMEOUT, time.time(), f"a{len(out)}")
                t0 = time.monotonic()
                try:
                    async with asyncio.timeout(TIMEOUT):
                        result = (await adapter.attempt(context)).cleaned()
                except TimeoutError:
                    result = None
                out.append((result, time.monotonic() - t0))
        finally:
            await adapter.aclose()
        return out

    return asyncio.run(main())


def test_login_and_sends_with_delivery(matrix: MatrixWorld) -> None:
    adapter = MatrixAdapter("m", section(matrix, verify_delivery=True), TIMEOUT)
    results = attempts(adapter, ["login", "send_c2c", "send_group", "send_c2c"])
    for result, _ in results:
        assert result is not None and result.outcome is Outcome.SUCCESS, result
    assert adapter.rooms["#im-prober-direct:localhost"] == matrix.setup.direct_room


def test_send_logs_in_by_itself_and_renews_a_rejected_token(matrix: MatrixWorld) -> None:
    adapter = MatrixAdapter("m", section(matrix), TIMEOUT)
    [(first, _)] = attempts(adapter, ["send_group"])  # no login probe ran: it logs in itself
    assert first.outcome is Outcome.SUCCESS
    adapter.account.token = Secret("syt_not_a_valid_token_at_all", "test", ephemeral=True)
    [(second, _)] = attempts(adapter, ["send_group"])
    assert second.outcome is Outcome.SUCCESS


def test_fixed_device_id_does_not_pile_up_devices(matrix: MatrixWorld) -> None:
    adapter = MatrixAdapter("m", section(matrix), TIMEOUT)
    attempts(adapter, ["login"] * 4)
    server = matrix.server
    login = server.request(
        "POST",
        "/_matrix/client/v3/login",
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": "probe"},
            "password": PASSWORD,
            "device_id": "IMPROBER",
        },
    )
    devices = server.request("GET", "/_matrix/client/v3/devices", token=login["access_token"])
    ids = [d["device_id"] for d in devices["devices"]]
    assert ids.count("IMPROBER") == 1
    assert "IMPROBER" in ids and len(ids) <= 3  # probe, plus at most the setup login


def test_wrong_password_is_a_client_error(matrix: MatrixWorld) -> None:
    adapter = MatrixAdapter("m", section(matrix, password=Secret("wrong-password", "x")), TIMEOUT)
    [(result, _)] = attempts(adapter, ["login"])
    assert (result.outcome, result.error_kind) == (Outcome.CLIENT_ERROR, "forbidden")
    assert "wrong-password" not in result.detail and PASSWORD not in result.detail


def test_not_in_room_is_a_client_error(matrix: MatrixWorld) -> None:
    adapter = MatrixAdapter("m", section(matrix, group_room="!nosuchroom:localhost"), TIMEOUT)
    [(result, _)] = attempts(adapter, ["send_group"])
    assert result.outcome is Outcome.CLIENT_ERROR
    assert result.error_kind in ("forbidden", "not_found")


def test_outages_between_prober_and_homeserver_are_failures(matrix: MatrixWorld) -> None:
    proxy = FaultProxy(matrix.server.port).start_in_thread()
    try:
        adapter = MatrixAdapter("m", section(matrix, homeserver=proxy.url), TIMEOUT)
        expectations = {
            "refuse": {"connect"},
            # a reset can reach the client while it is still connecting, or after
            "reset": {"reset", "connect"},
            "blackhole": None,  # nothing ever answers: the timeout ends it
        }
        for mode, kinds in expectations.items():
            proxy.set_mode(mode)
            [(result, elapsed)] = attempts(adapter, ["login"])
            if kinds is None:
                assert result is None and elapsed < TIMEOUT + 0.5
            else:
                assert result.outcome is Outcome.FAILURE and result.error_kind in kinds, result
        proxy.set_mode("pass")
        [(result, _)] = attempts(adapter, ["login"])
        assert result.outcome is Outcome.SUCCESS
    finally:
        proxy.stop_thread()


def test_default_login_rate_limit_is_throttled_never_failed(strict_matrix) -> None:
    section_ = MatrixSection.model_validate(
        {
            "homeserver": strict_matrix.url,
            "user": "@probe:localhost",
            "password": Secret(PASSWORD, "env:P"),
        }
    )
    adapter = MatrixAdapter("m", section_, TIMEOUT)
    outcomes = [r.outcome for r, _ in attempts(adapter, ["login"] * 8)]
    assert Outcome.THROTTLED in outcomes
    assert Outcome.FAILURE not in outcomes
    first_throttled = outcomes.index(Outcome.THROTTLED)
    assert all(o is Outcome.SUCCESS for o in outcomes[:first_throttled])
