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

import pytest

from prober.demo.proxy import FaultProxy

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
from .synapse_fixture import PASSWORD, PEER_PASSWORD, MatrixWorld

# Each real-time run gets a worker of its own (make test runs pytest-xdist, loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-matrix")]

TIMEOUT = 2


@pytest.fixture(scope="module")
def run(matrix: MatrixWorld, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("matrix-e2e")
    proxy = FaultProxy(matrix.server.port).start_in_thread()
    # attempts well clear of :00 and :30 (where the proxy switches), one finished before :30
    name = safe_modal_name("matrix", 200, TIMEOUT, switch_at_30=True)
    setup = matrix.setup
    config = workdir / "config.yaml"
    config.write_text(
        modal_config(
            name,
            "matrix",
            f"""\
            homeserver: {proxy.url}
            user: "{setup.user}"
            password: {{env: MATRIX_PASSWORD}}
            peer_user: "{setup.peer_user}"
            peer_password: {{env: MATRIX_PEER_PASSWORD}}
            direct_room: "{setup.direct_room}"
            group_room: "{setup.group_room}"
            verify_delivery: true
            """,
            TIMEOUT,
            "UTC",
        )
    )
    daemon = Daemon(
        config,
        free_port(),
        env={"MATRIX_PASSWORD": PASSWORD, "MATRIX_PEER_PASSWORD": PEER_PASSWORD},
    )
    observed = five_minutes(
        daemon,
        [
            (60, lambda: proxy.set_mode("refuse")),
            (120, lambda: proxy.set_mode("pass")),
            (150, lambda: proxy.set_mode("blackhole")),
            (240, lambda: proxy.set_mode("pass")),
        ],
        TIMEOUT,
    )
    observed |= {"name": name, "config": config}
    proxy.stop_thread()
    yield observed


def test_outages_give_exactly_the_failed_minutes(run) -> None:
    assert [state for state, _ in five_states(run)] == [
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
    exported = cli(run["config"], "ledger", "export", "--target", name)
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
    report = json.loads(cli(run["config"], "report", "--target", name, "--format", "json"))
    assert report["minutes"]["apparent_failure"] == ledger_failed
    assert [i["minutes"] for i in report["incidents"]] == [1, 1]
    assert sample(metrics, "im_sla_downtime_seconds", target=name) == 120
