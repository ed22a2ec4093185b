"""The tencent_im kind against the protocol-faithful emulator: every taxonomy class through
a real HTTP exchange, transport faults, delivery read-back, setup, backup domain, and no
UserSig or key in any result."""

from __future__ import annotations

import asyncio
import time

import pytest

from prober.adapters import ProbeContext
from prober.adapters.tencent_im import TencentImAdapter, TencentSection
from prober.config.secrets import Secret
from prober.setup.tencent import setup
from prober.sla import Outcome

from .chat_app import free_port
from .tencent_emulator import TencentEmulator

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def emulator():
    server = TencentEmulator().start()
    yield server
    server.stop()


def section(emulator: TencentEmulator, **extra) -> TencentSection:
    return TencentSection.model_validate(
        {
            "sdkappid": emulator.sdkappid,
            "secret_key": Secret(emulator.key, "env:TENCENT_KEY"),
            "domain": emulator.domain,
            "scheme": "http",
            "group_id": "im-prober-group",
            **extra,
        }
    )


def run(emulator: TencentEmulator, probes: list[str], **extra):
    async def main():
        adapter = TencentImAdapter("tc", section(emulator, **extra), TIMEOUT)
        out = []
        try:
            for probe in probes:
                context = ProbeContext("tc", probe, TIMEOUT, time.time(), "a1")
                try:
                    async with asyncio.timeout(TIMEOUT):
                        out.append((await adapter.attempt(context)).cleaned())
                except TimeoutError:
                    out.append(None)
        finally:
            await adapter.aclose()
        return out, adapter

    return asyncio.run(main())


@pytest.fixture(scope="module", autouse=True)
def provisioned(emulator: TencentEmulator):
    lines = setup("tc", section(emulator))
    assert lines == [
        "account im_prober_a: imported",
        "account im_prober_b: imported",
        "group im-prober-group: created",
    ]
    again = setup("tc", section(emulator))
    assert again[-1] == "group im-prober-group: exists"
    assert emulator.groups["im-prober-group"]["type"] == "Work"


def test_probes_succeed_and_read_back(emulator: TencentEmulator) -> None:
    emulator.set_fault()
    results, _ = run(
        emulator, ["login", "send_c2c", "send_group", "send_c2c"], verify_delivery=True
    )
    assert [r.outcome for r in results] == [Outcome.SUCCESS] * 4
    assert len(emulator.c2c) >= 2
    randoms = [m["MsgRandom"] for m in emulator.c2c]
    assert len(set(randoms)) == len(randoms)  # a fresh random every attempt
    assert "openim/admin_getroammsg" in emulator.calls
    assert "group_open_http_svc/group_msg_get_simple" in emulator.calls


@pytest.mark.parametrize(
    ("code", "outcome", "kind"),
    [
        (70169, Outcome.FAILURE, "internal"),
        (60013, Outcome.FAILURE, "internal"),
        (70001, Outcome.CLIENT_ERROR, "signature"),
        (90001, Outcome.CLIENT_ERROR, "parameter"),
        (60010, Outcome.CLIENT_ERROR, "permission"),
        (70107, Outcome.CLIENT_ERROR, "account"),
        (10010, Outcome.CLIENT_ERROR, "group"),
        (60007, Outcome.THROTTLED, "rate_limited"),
        (60016, Outcome.CLIENT_ERROR, "app_state"),
        (60020, Outcome.CLIENT_ERROR, "edition"),
        (70051, Outcome.CLIENT_ERROR, "account_state"),
        (80001, Outcome.CLIENT_ERROR, "content_blocked"),
        (12345, Outcome.FAILURE, "unknown_code"),
    ],
)
def test_each_taxonomy_class_over_the_wire(emulator, code, outcome, kind) -> None:
    emulator.set_fault("code", code=code)
    try:
        [result], _ = run(emulator, ["send_c2c"])
    finally:
        emulator.set_fault()
    assert (result.outcome, result.error_kind, result.error_code) == (outcome, kind, code)


@pytest.mark.parametrize(
    ("fault", "outcome", "kind"),
    [
        ({"kind": "http", "status": 502}, Outcome.FAILURE, "http_5xx"),
        ({"kind": "http", "status": 504}, Outcome.FAILURE, "http_5xx"),
        ({"kind": "badjson"}, Outcome.FAILURE, "bad_response"),
        ({"kind": "reset"}, Outcome.FAILURE, "reset"),
        ({"kind": "slow", "seconds": 0.5}, Outcome.SUCCESS, ""),
    ],
)
def test_transport_faults(emulator, fault, outcome, kind) -> None:
    emulator.set_fault(**fault)
    try:
        [result], _ = run(emulator, ["send_group"])
    finally:
        emulator.set_fault()
    assert (result.outcome, result.error_kind) == (outcome, kind)


def test_hang_ends_at_the_timeout(emulator) -> None:
    emulator.set_fault("hang")
    try:
        t0 = time.monotonic()
        [result], _ = run(emulator, ["login"])
    finally:
        emulator.set_fault()
    assert result is None and time.monotonic() - t0 < TIMEOUT + 0.5


def test_real_signature_and_permission_checks(emulator) -> None:
    [wrong_key], _ = run(emulator, ["login"], secret_key=Secret("not-the-key-at-all", "x"))
    assert (wrong_key.outcome, wrong_key.error_kind, wrong_key.error_code) == (
        Outcome.CLIENT_ERROR,
        "signature",
        70009,
    )
    [not_admin], _ = run(emulator, ["login"], admin_identifier="im_prober_a")
    assert (not_admin.outcome, not_admin.error_kind) == (Outcome.CLIENT_ERROR, "permission")
    [not_imported], _ = run(emulator, ["login"], to_account="nobody_here")
    assert (not_imported.outcome, not_imported.error_kind) == (Outcome.CLIENT_ERROR, "account")
    for result in (wrong_key, not_admin, not_imported):
        assert emulator.key not in result.detail and "sig=" not in result.detail


def test_per_second_limit_is_throttling(emulator) -> None:
    emulator.per_second = 2
    try:
        results, _ = run(emulator, ["send_c2c"] * 5)
    finally:
        emulator.per_second = 200
    assert Outcome.THROTTLED in [r.outcome for r in results]
    assert Outcome.FAILURE not in [r.outcome for r in results]


def test_backup_domain_policy(emulator) -> None:
    dead = f"127.0.0.1:{free_port()}"
    [off], _ = run(emulator, ["login"], domain=dead, backup_domain=emulator.domain)
    assert (off.outcome, off.error_kind) == (Outcome.FAILURE, "connect")
    [fallback], adapter = run(
        emulator, ["login"], domain=dead, backup_domain=emulator.domain, backup_policy="fallback"
    )
    assert fallback.outcome is Outcome.SUCCESS
    assert adapter.last_host == emulator.domain


def test_regions_name_the_documented_domains() -> None:
    s = TencentSection.model_validate(
        {"sdkappid": 1, "secret_key": Secret("abcd", "x"), "region": "singapore"}
    )
    assert s.hosts == ("adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com")
    with pytest.raises(ValueError):
        TencentSection.model_validate({"sdkappid": 1, "secret_key": Secret("abcd", "x")})
