"""The real daemon against a real Prosody through a fault proxy in front of its c2s port,
over five real minutes:

  M0  pass                                           → available
  M1  connections refused the whole minute           → apparent_failure
  M2  blackhole the whole minute                     → apparent_failure
  M3  pass until :30, then every connection reset
      (the kept sessions are cut mid-session)        → available (successes in part)
  M4  pass                                           → available

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
from .prosody_fixture import (  # noqa: F401 - the session fixture
    DOMAIN,
    PASSWORD,
    PEER_PASSWORD,
    ROOM,
    Prosody,
    prosody_server,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-xmpp")]

TIMEOUT = 2


@pytest.fixture(scope="module")
def run(prosody: Prosody, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("xmpp-e2e")
    proxy = FaultProxy(prosody.c2s_port).start_in_thread()
    # attempts well clear of :00 and :30 (where the proxy switches), some on either side
    name = safe_modal_name("xmpp", 300, TIMEOUT, switch_at_30=True, after_30_too=True)
    config = workdir / "config.yaml"
    config.write_text(
        modal_config(
            name,
            "xmpp",
            f"""\
            jid: "probe@{DOMAIN}"
            password: {{env: XMPP_PASSWORD}}
            host: 127.0.0.1
            port: {proxy.port}
            ca_file: {prosody.ca.path}
            peer_jid: "probe-peer@{DOMAIN}"
            peer_password: {{env: XMPP_PEER_PASSWORD}}
            room: "{ROOM}"
            verify_delivery: true
            """,
            TIMEOUT,
            "UTC",
        )
    )
    daemon = Daemon(
        config, free_port(), env={"XMPP_PASSWORD": PASSWORD, "XMPP_PEER_PASSWORD": PEER_PASSWORD}
    )
    observed = five_minutes(
        daemon,
        [
            (60, lambda: proxy.set_mode("refuse")),
            (120, lambda: proxy.set_mode("blackhole")),
            (180, lambda: proxy.set_mode("pass")),
            (210, lambda: proxy.set_mode("reset")),
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
        "apparent_failure",
        "available",
        "available",
    ], run["log"][-3000:]
    assert run["stop"] == 0
    assert PASSWORD not in run["log"] and PEER_PASSWORD not in run["log"]


def test_metrics_and_report_agree_with_the_ledger(run) -> None:
    name = run["name"]
    metrics = run["metrics"]
    assert sample(metrics, "im_minute_verdicts_total", target=name, state="apparent_failure") == 2
    report = json.loads(cli(run["config"], "report", "--target", name, "--format", "json"))
    assert report["minutes"]["apparent_failure"] == 2
    assert [i["minutes"] for i in report["incidents"]] == [2]
    assert sample(metrics, "im_sla_downtime_seconds", target=name) == 120
