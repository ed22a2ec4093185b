"""The real daemon against the Tencent IM emulator over real minutes, with the acceptance
timeline of the tencent issue:

  M0  success                                → available
  M1  every call answers 70169 (internal)    → apparent_failure
  M2  every call answers 70001 (UserSig)     → no_data / excluded_only
  M3  every call answers 60007 (rate limit)  → no_data / excluded_only
  M4  every call hangs                       → apparent_failure

in the ledger, /metrics and the report.
"""

from __future__ import annotations

import json

import pytest

from .chat_app import free_port
from .daemon_util import (
    Daemon,
    cli,
    five_minutes,
    five_states,
    modal_config,
    safe_modal_name,
    sample,
)
from .tencent_emulator import TencentEmulator

# Each real-time run gets a worker of its own (make test runs pytest-xdist, loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-tencent")]

TIMEOUT = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tencent-e2e")
    emulator = TencentEmulator().start()
    emulator.accounts |= {"im_prober_a", "im_prober_b"}
    emulator.groups["im-prober-group"] = {
        "type": "Work",
        "messages": [],
        "members": {"im_prober_a", "im_prober_b"},
    }
    (workdir / "tencent.key").write_text(emulator.key + "\n")
    name = safe_modal_name("tencent", 200, TIMEOUT, switch_at_30=False)
    config = workdir / "config.yaml"
    config.write_text(
        modal_config(
            name,
            "tencent_im",
            f"""\
            sdkappid: {emulator.sdkappid}
            secret_key: {{file: tencent.key}}
            domain: "{emulator.domain}"
            scheme: http
            group_id: im-prober-group
            verify_delivery: true
            """,
            TIMEOUT,
            "Asia/Shanghai",
        )
    )
    faults = [("code", 70169), ("code", 70001), ("code", 60007), ("hang", 0), ("none", 0)]
    observed = five_minutes(
        Daemon(config, free_port()),
        [
            (k * 60, lambda kind=kind, code=code: emulator.set_fault(kind, code=code))
            for k, (kind, code) in enumerate(faults, start=1)
        ],
        TIMEOUT,
    )
    observed |= {"name": name, "config": config}
    observed["key"] = emulator.key
    emulator.stop()
    yield observed


def test_the_acceptance_timeline(run) -> None:
    assert five_states(run, "--target", run["name"]) == [
        ("available", ""),
        ("apparent_failure", ""),
        ("no_data", "excluded_only"),
        ("no_data", "excluded_only"),
        ("apparent_failure", ""),
    ]
    metrics = run["metrics"]
    name = run["name"]
    assert sample(metrics, "im_minute_verdicts_total", target=name, state="apparent_failure") == 2
    assert (
        sample(
            metrics, "im_probe_attempts_total", target=name, probe="send_c2c", outcome="throttled"
        )
        >= 2
    )
    assert (
        sample(
            metrics, "im_probe_attempts_total", target=name, probe="login", outcome="client_error"
        )
        >= 1
    )
    report = json.loads(cli(run["config"], "report", "--target", name, "--format", "json"))
    assert report["minutes"]["apparent_failure"] == 2
    assert run["stop"] == 0
    assert run["key"] not in run["log"] and "usersig=" not in run["log"]
