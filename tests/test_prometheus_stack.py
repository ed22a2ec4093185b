"""The shipped deploy files against the real tools, in one real-time run (~5 minutes):

Debian's Prometheus scrapes the real daemon over TLS with basic auth (the web config),
evaluates the shipped rules and sends alerts to Debian's Alertmanager running the shipped
routing, which posts them to a local webhook. The daemon probes a local chat service:

  M0      the service works           → available
  M1, M2  every attempt gets 503      → IMTargetFailingNow pages during M1, from the attempts;
                                        apparent_failure twice: IMApparentFailure fires
  M3      the service works again     → IMTargetFailingNow resolves; Alertmanager holds the
                                        IMApparentFailure page back (one page per outage)

Then: the recording rules show the failed minutes, the page reaches the `page` receiver, and
every query of the Grafana dashboard runs in this Prometheus and names metrics the daemon
really exports.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import bcrypt
import httpx
import pytest
import yaml

from .certs import CA
from .chat_app import ChatServer, free_port
from .daemon_util import Daemon, chat_target, next_minute, safe_name, wait_until
from .dashboard import as_promql, dashboard_queries, metric_names
from .prometheus_stack import RULES, Alertmanager, Prometheus, Webhook, poll
from .test_web_security import basic, client_context

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-prometheus")]

TIMEOUT = 2
CLOSED = TIMEOUT + 2 + 3  # seconds after a minute's end by which it is surely written
SCRAPE_PASSWORD = "scrape-password-canary-71d2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stack")
    chat = ChatServer().start()
    webhook = Webhook().start()
    name = safe_name([f"im-{i}" for i in range(50)], TIMEOUT)

    ca = CA(folder)
    ca.issue("server")
    hashed = bcrypt.hashpw(SCRAPE_PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    (folder / "web.yml").write_text(
        "tls_server_config: {cert_file: server.crt, key_file: server.key}\n"
        f"basic_auth_users: {{prometheus: '{hashed}'}}\nopen_health_endpoints: true\n"
    )
    (folder / "scrape-password").write_text(SCRAPE_PASSWORD)
    config = folder / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        web: {{config_file: web.yml}}
        network_check: {{urls: ["{webhook.url}/reference"], timeout: 2s}}
        targets:
        """)
        + chat_target(
            name, chat.url, TIMEOUT, sla='{service_month_anchor: 2026-01-01, monthly_fee: "100.00"}'
        )
    )
    daemon = Daemon(
        config,
        free_port(),
        env={"CHAT_PASSWORD": chat.password},
        tls=client_context(ca),
        headers=basic("prometheus", SCRAPE_PASSWORD),
    ).start()
    alertmanager = Alertmanager(folder, webhook.url)
    alertmanager.start()
    prometheus = Prometheus(
        folder,
        {
            "global": {
                "scrape_interval": "2s",
                "scrape_timeout": "2s",
                "evaluation_interval": "2s",
            },
            "rule_files": [str(RULES)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "im-prober",
                    "scheme": "https",
                    "tls_config": {"ca_file": str(ca.path)},
                    "basic_auth": {
                        "username": "prometheus",
                        "password_file": str(folder / "scrape-password"),
                    },
                    "static_configs": [{"targets": [f"127.0.0.1:{daemon.port}"]}],
                }
            ],
        },
    )
    prometheus.start()
    observed: dict[str, Any] = {"name": name, "prometheus": prometheus, "daemon": daemon}
    try:
        observed["up"] = poll(
            "Prometheus scrapes the daemon over TLS with basic auth",
            lambda: prometheus.query('up{job="im-prober"} == 1'),
            timeout=40,
        )
        m0 = next_minute()
        wait_until((m0 + 1) * 60)
        chat.set_mode("5xx")
        observed["failing_now"] = poll(
            "IMTargetFailingNow firing during the outage",
            lambda: prometheus.firing("IMTargetFailingNow"),
            timeout=75,
        )
        observed["failing_now_delay"] = time.time() - (m0 + 1) * 60
        observed["failed_minutes_when_paged"] = daemon.metrics().get(
            ("im_minute_verdicts_total", (("state", "apparent_failure"), ("target", name))), 0
        )
        wait_until((m0 + 3) * 60)
        chat.set_mode("ok")
        failed_end = (m0 + 3) * 60

        def second_failure_in_metrics() -> bool:
            value = daemon.metrics().get(
                (
                    "im_minute_verdicts_total",
                    (("state", "apparent_failure"), ("target", name)),
                )
            )
            return value == 2

        poll("the second failed minute in /metrics", second_failure_in_metrics, 60, every=0.2)
        observed["verdict_delay"] = time.time() - failed_end
        observed["firing"] = poll(
            "IMApparentFailure firing in Prometheus",
            lambda: prometheus.firing("IMApparentFailure"),
            timeout=60,
        )
        observed["alert_delay"] = time.time() - failed_end
        observed["ratio5m"] = poll(
            "the 5m failed-minute ratio above 0",
            lambda: prometheus.query(
                f'target:im_minutes_failed:ratio_rate5m{{target="{name}"}} > 0'
            ),
            timeout=60,
        )
        observed["paged"] = poll(
            "the page in Alertmanager's page receiver",
            lambda: [
                a
                for a in webhook.alerts("page")
                if a["labels"].get("alertname") == "IMTargetFailingNow"
            ],
            timeout=60,
        )
        observed["held_back"] = poll(
            "IMApparentFailure in Alertmanager, inhibited",
            lambda: [
                a
                for a in httpx.get(alertmanager.url + "/api/v2/alerts", timeout=10).json()
                if a["labels"]["alertname"] == "IMApparentFailure"
                and a["status"]["state"] == "suppressed"
            ],
            timeout=60,
        )
        time.sleep(12)  # past the page route's group_wait (10 s): a page would have been sent
        observed["ticket_pages"] = [
            a for a in webhook.alerts("ticket") if a["labels"].get("severity") == "page"
        ]
        observed["notified"] = {a["labels"]["alertname"] for _, p in webhook.received
                                for a in p.get("alerts", [])}  # fmt: skip
        observed["dashboard"] = {
            (title, expr): prometheus.query(as_promql(expr)) for title, expr in dashboard_queries()
        }
        observed["rule_names"] = {
            r["record"]
            for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"]
            if "record" in r
        }
        observed["metric_names"] = set(daemon.metrics_names())
        observed["other_firing"] = {
            alert: prometheus.firing(alert)
            for alert in ("IMProberDown", "IMMinutesNotClosing", "IMProbeClientErrors")
        }
        yield observed
    finally:
        prometheus.stop()
        alertmanager.stop()
        daemon.stop()
        webhook.stop()
        chat.stop()
        print(
            f"\nverdict in /metrics {observed.get('verdict_delay', -1):.1f} s and "
            f"IMApparentFailure firing {observed.get('alert_delay', -1):.1f} s after the "
            "second failed minute ended; IMTargetFailingNow firing "
            f"{observed.get('failing_now_delay', -1):.1f} s after the outage began"
        )


def test_prometheus_scrapes_the_daemon_over_tls_with_basic_auth(stack):
    (series,) = stack["up"]
    assert series["metric"]["job"] == "im-prober"


def test_the_recording_rule_sees_the_failed_minutes(stack):
    (series,) = stack["ratio5m"]
    assert series["metric"] == {
        "__name__": "target:im_minutes_failed:ratio_rate5m",
        "target": stack["name"],
    }
    # Two of the minutes in the window failed, at least one succeeded.
    assert 0 < float(series["value"][1]) < 1


def test_imtargetfailingnow_pages_from_the_attempts_before_the_minutes_could(stack):
    (alert,) = stack["failing_now"]
    assert alert["labels"] == {
        "alertname": "IMTargetFailingNow",
        "severity": "page",
        "target": stack["name"],
    }
    assert alert["annotations"]["runbook"] == "deploy/README.md#imtargetfailingnow"
    # IMApparentFailure needs two failed minutes: fewer had closed when this one fired
    assert stack["failed_minutes_when_paged"] < 2
    paged = stack["paged"][0]
    assert paged["status"] == "firing"
    assert paged["labels"]["target"] == stack["name"]
    assert stack["ticket_pages"] == []  # pages never go to the ticket receiver


def test_imapparentfailure_fires_but_alertmanager_holds_its_page_back(stack):
    (alert,) = stack["firing"]
    assert alert["labels"]["target"] == stack["name"]
    assert alert["labels"]["severity"] == "page"
    assert alert["annotations"]["runbook"] == "deploy/README.md#imapparentfailure"
    # by then the service works again and IMTargetFailingNow has resolved: the hold inhibits
    (held,) = stack["held_back"]
    assert held["labels"]["target"] == stack["name"]
    assert held["status"]["inhibitedBy"]
    assert "IMApparentFailure" not in stack["notified"]
    assert "IMTargetFailingNowHold" not in stack["notified"]  # it notifies nobody


def test_the_verdict_lands_right_after_the_minute(stack):
    # The floor is the minute's end; the close waits for the attempt timeout plus grace.
    assert stack["verdict_delay"] < TIMEOUT + 2 + 3


def test_no_false_alarms_about_the_prober_itself(stack):
    assert stack["other_firing"] == {
        "IMProberDown": [],
        "IMMinutesNotClosing": [],
        "IMProbeClientErrors": [],
    }


def test_every_dashboard_query_runs_and_returns_data(stack):
    empty = [title for (title, _), result in stack["dashboard"].items() if not result]
    assert empty == []


def test_every_dashboard_metric_is_exported_or_recorded(stack):
    exported = stack["metric_names"]
    known = exported | stack["rule_names"] | {"up"}
    for title, expr in dashboard_queries():
        for name in metric_names(expr):
            assert name in known, f"{title}: {name} is neither exported nor recorded"
