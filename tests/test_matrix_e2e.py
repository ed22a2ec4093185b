"""The real daemon against a real Synapse through a fault proxy, over five real minutes:

  M0  pass                                   → available
  M1  connections refused the whole minute   → apparent_failure (exactly one)
  M2  pass until :30, then a blackhole       → available (successes in part of the minute)
  M3  blackhole the whole minute             → apparent_failure
  M4  pass                                   → available

and /metrics and `im-prober report` agree with the ledger.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from prober.demo.proxy import FaultProxy
from prober.runtime.plan import offsets

from .chat_app import free_port
from .daemon_util import ROOT, Daemon, next_minute, sample, wait_until
from .synapse_fixture import PASSWORD, PEER_PASSWORD, MatrixWorld

# Each real-time run gets a worker of its own (make test runs pytest-xdist, loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-matrix")]

TIMEOUT = 2
CADENCE = {"login": 1, "send_c2c": 2, "send_group": 2}


def starts(name: str) -> list[float]:
    return sorted(s for probe, n in CADENCE.items() for s in offsets(name, probe, n))


def safe_name() -> str:
    """Attempts well clear of :00 and :30 (where the proxy switches), with at least one
    finished before :30."""
    for i in range(200):
        name = f"matrix-{i}"
        points = starts(name)
        clear = all(1 <= s <= 27 or 32 <= s <= 60 - TIMEOUT - 1 for s in points)
        if clear and any(s <= 27 for s in points):
            return name
    raise AssertionError("no name with safe offsets")


@pytest.fixture(scope="module")
def run(matrix: MatrixWorld, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("matrix-e2e")
    proxy = FaultProxy(matrix.server.port).start_in_thread()
    name = safe_name()
    setup = matrix.setup
    config = workdir / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        targets:
          - name: {name}
            kind: matrix
            matrix:
              homeserver: {proxy.url}
              user: "{setup.user}"
              password: {{env: MATRIX_PASSWORD}}
              peer_user: "{setup.peer_user}"
              peer_password: {{env: MATRIX_PEER_PASSWORD}}
              direct_room: "{setup.direct_room}"
              group_room: "{setup.group_room}"
              verify_delivery: true
            probes:
              login: {{attempts_per_minute: 1, timeout: {TIMEOUT}s}}
              send_c2c: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
              send_group: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01, timezone: UTC}}
        """)
    )
    daemon = Daemon(
        config,
        free_port(),
        env={"MATRIX_PASSWORD": PASSWORD, "MATRIX_PEER_PASSWORD": PEER_PASSWORD},
    )
    daemon.start()
    m0 = next_minute()
    wait_until((m0 + 1) * 60)
    proxy.set_mode("refuse")
    wait_until((m0 + 2) * 60)
    proxy.set_mode("pass")
    wait_until((m0 + 2) * 60 + 30)
    proxy.set_mode("blackhole")
    wait_until((m0 + 4) * 60)
    proxy.set_mode("pass")
    wait_until((m0 + 5) * 60 + TIMEOUT + 2 + 3)  # M4 has closed
    observed = {"name": name, "m0": m0, "config": config, "metrics": daemon.metrics()}
    observed["stop"] = daemon.stop()
    observed["log"] = daemon.log.read_text()
    proxy.stop_thread()
    yield observed


def cli(run, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prober", *args, "-c", str(run["config"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_outages_give_exactly_the_failed_minutes(run) -> None:
    m0 = run["m0"]
    rows = {}
    for line in cli(run, "ledger", "export").splitlines()[1:]:
        _, probe, minute, state, _ = line.split(",")
        if probe == "":
            stamp = time.strptime(minute, "%Y-%m-%dT%H:%M:%SZ")
            rows[(int(time.mktime(stamp)) - time.timezone) // 60] = state
    assert [rows[m0 + k] for k in range(5)] == [
        "available",
        "apparent_failure",
        "available",
        "apparent_failure",
        "available",
    ]
    assert run["stop"] == 0
    assert PASSWORD not in run["log"] and PEER_PASSWORD not in run["log"]


def test_metrics_and_report_agree_with_the_ledger(run) -> None:
    name = run["name"]
    exported = cli(run, "ledger", "export", "--target", name)
    ledger_failed = sum(
        1
        for line in exported.splitlines()
        if line.startswith(f"{name},,") and ",apparent_failure," in line
    )
    assert ledger_failed == 2
    metrics = run["metrics"]
    assert (
        sample(metrics, "im_minute_verdicts_total", target=name, state="apparent_failure")
        == ledger_failed
    )
    report = json.loads(cli(run, "report", "--target", name, "--format", "json"))
    assert report["minutes"]["apparent_failure"] == ledger_failed
    assert [i["minutes"] for i in report["incidents"]] == [1, 1]
    assert sample(metrics, "im_sla_downtime_seconds", target=name) == 120
