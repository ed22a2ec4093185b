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
import subprocess
import sys
import textwrap
import time

import pytest

from prober.runtime.plan import offsets

from .chat_app import free_port
from .daemon_util import ROOT, Daemon, next_minute, sample, wait_until
from .tencent_emulator import TencentEmulator

# Each real-time run gets a worker of its own (make test runs pytest-xdist, loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-tencent")]

TIMEOUT = 2
CADENCE = {"login": 1, "send_c2c": 2, "send_group": 2}


def safe_name() -> str:
    for i in range(200):
        name = f"tencent-{i}"
        points = [s for p, n in CADENCE.items() for s in offsets(name, p, n)]
        if all(1 <= s <= 60 - TIMEOUT - 1 for s in points):
            return name
    raise AssertionError("no name with safe offsets")


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
    name = safe_name()
    config = workdir / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        targets:
          - name: {name}
            kind: tencent_im
            tencent_im:
              sdkappid: {emulator.sdkappid}
              secret_key: {{file: tencent.key}}
              domain: "{emulator.domain}"
              scheme: http
              group_id: im-prober-group
              verify_delivery: true
            probes:
              login: {{attempts_per_minute: 1, timeout: {TIMEOUT}s}}
              send_c2c: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
              send_group: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01, timezone: Asia/Shanghai}}
        """)
    )
    daemon = Daemon(config, free_port()).start()
    m0 = next_minute()
    timeline = [("code", 70169), ("code", 70001), ("code", 60007), ("hang", 0), ("none", 0)]
    for k, (kind, code) in enumerate(timeline, start=1):
        wait_until((m0 + k) * 60)
        emulator.set_fault(kind, code=code)
    wait_until((m0 + 5) * 60 + TIMEOUT + 2 + 3)
    observed = {"name": name, "m0": m0, "config": config, "metrics": daemon.metrics()}
    observed["stop"] = daemon.stop()
    observed["log"] = daemon.log.read_text()
    observed["key"] = emulator.key
    emulator.stop()
    yield observed


def cli(run, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "prober", *args, "-c", str(run["config"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_the_acceptance_timeline(run) -> None:
    m0 = run["m0"]
    rows = {}
    for line in cli(run, "ledger", "export", "--target", run["name"]).splitlines()[1:]:
        _, probe, minute, state, reason = line.split(",")
        if probe == "":
            stamp = time.strptime(minute, "%Y-%m-%dT%H:%M:%SZ")
            rows[(int(time.mktime(stamp)) - time.timezone) // 60] = (state, reason)
    assert [rows[m0 + k] for k in range(5)] == [
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
    report = json.loads(cli(run, "report", "--target", name, "--format", "json"))
    assert report["minutes"]["apparent_failure"] == 2
    assert run["stop"] == 0
    assert run["key"] not in run["log"] and "usersig=" not in run["log"]
