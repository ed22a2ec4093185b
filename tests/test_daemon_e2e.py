"""The real daemon over real minutes against a real local chat service.

One daemon run is shared by every assertion (about eight real minutes in all):

  M0  the service works                      → available
  M1  every attempt gets 503                 → apparent_failure
  M2  one success among 503s                 → available (a success "in part" of the minute)
  stop with SIGTERM early in M3; start again two minutes later
  M3  stopped 10 s in                        → decided over the attempts it made before the
                                               stop (stored as they ended): available when
                                               one was made, else no_data / prober_down
  M4  the daemon was down                    → no_data / prober_down
  M5  started again 5 s in (a loaded machine may take seconds more): attempts before the
      start are missed                       → available, or no_data / prober_down
  M6  the service works                      → available; counters continued, never reset

A second target that never answers (every attempt times out) runs throughout and must not
disturb the first; an `external` target runs a real command every minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import (
    Daemon,
    chat_target,
    cli,
    exported_minutes,
    follow_timeline,
    next_minute,
    safe_name,
    sample,
    wait_until,
)

# Each real-time run gets a worker of its own (make test runs pytest-xdist, loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-http")]

TIMEOUT = 2  # seconds per attempt of the chat targets
SCRIPT_TIMEOUT = 5  # the external target's; the largest timeout decides when a minute closes
CLOSED = SCRIPT_TIMEOUT + 2 + 3  # seconds after a minute's end by which it is surely written


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("e2e")
    chat = ChatServer().start()
    dead = ChatServer().start()
    dead.set_mode("hang")
    name = safe_name([f"chat-{i}" for i in range(50)], TIMEOUT)
    config = workdir / "config.yaml"
    config.write_text(
        textwrap.dedent("""\
        ledger: {path: ledger.sqlite3}
        web: {enable_lifecycle: true}
        targets:
        """)
        + chat_target(
            name,
            chat.url,
            TIMEOUT,
            sla="{service_month_anchor: 2026-01-01, timezone: Asia/Shanghai}",
        )
        + textwrap.indent(
            textwrap.dedent(f"""\
          - name: blackhole
            kind: http
            http:
              base_url: {dead.url}
              probes: {{login: [{{url: /ping}}]}}
            probes:
              login: {{attempts_per_minute: 4, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01}}
          - name: script
            kind: external
            external: {{command: ["{sys.executable}", "-c", "pass"]}}
            probes:
              login: {{attempts_per_minute: 1, timeout: {SCRIPT_TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01}}
        """),
            "  ",
        )
    )
    daemon = Daemon(config, free_port(), env={"CHAT_PASSWORD": chat.password}).start()
    m0 = next_minute()
    wait_until(m0 * 60)
    observed: dict[str, object] = {"name": name, "m0": m0, "config": config, "daemon": daemon}
    follow_timeline(
        m0,
        [
            (60, lambda: chat.set_mode("5xx")),
            (120, lambda: chat.set_mode("5xx_but_one")),
            (180, lambda: chat.set_mode("ok")),
        ],
    )
    wait_until((m0 + 3) * 60 + CLOSED)  # M2 has closed
    observed["metrics_before_stop"] = daemon.metrics()
    observed["text_before_stop"] = daemon.get("/metrics")[1]
    observed["openmetrics"] = daemon.get(
        "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )[1]
    observed["readyz"] = daemon.get("/readyz")
    observed["stop_code"] = daemon.stop()
    wait_until((m0 + 5) * 60 + 5)
    daemon.start()
    wait_until((m0 + 7) * 60 + CLOSED)  # M6, the first whole minute after the start, closed
    observed["metrics_after_restart"] = daemon.metrics()
    observed["reload"] = daemon.post("/-/reload")
    observed["final_code"] = daemon.stop()
    observed["log"] = daemon.log.read_text()
    chat.stop()
    dead.stop()
    yield observed


def export(run, target: str) -> dict[int, tuple[str, str]]:
    return exported_minutes(run["config"], "--target", target)


def test_minutes_are_decided_as_the_sla_says(run) -> None:
    m0 = run["m0"]
    rows = export(run, run["name"])
    assert rows[m0] == ("available", "")
    assert rows[m0 + 1] == ("apparent_failure", "")
    assert rows[m0 + 2] == ("available", "")
    # the minute of the stop: its attempts before the stop were stored and taken back
    assert rows[m0 + 3] in {("available", ""), ("no_data", "prober_down")}
    assert rows[m0 + 4] == ("no_data", "prober_down")
    assert rows[m0 + 5] in {("available", ""), ("no_data", "prober_down")}
    assert rows[m0 + 6] == ("available", "")


def test_a_dead_target_fails_alone(run) -> None:
    m0 = run["m0"]
    rows = export(run, "blackhole")
    for minute in (m0, m0 + 1, m0 + 2, m0 + 6):
        assert rows[minute] == ("apparent_failure", "")
    script = export(run, "script")
    assert all(script[m] == ("available", "") for m in (m0, m0 + 1, m0 + 2, m0 + 6))


def test_metrics_agree_with_the_ledger_and_continue_across_restart(run) -> None:
    name = run["name"]
    before, after = run["metrics_before_stop"], run["metrics_after_restart"]

    def verdicts(metrics, state):
        return sample(metrics, "im_minute_verdicts_total", target=name, state=state)

    rows = export(run, name)
    assert verdicts(before, "apparent_failure") == 1
    assert verdicts(after, "apparent_failure") == 1
    # every row in the ledger is counted, and nothing was counted twice across the restart
    for state in ("available", "apparent_failure", "no_data", "maintenance"):
        assert verdicts(after, state) == sum(1 for s, _ in rows.values() if s == state), state
    assert verdicts(after, "no_data") >= verdicts(before, "no_data") + 1
    assert verdicts(after, "available") >= verdicts(before, "available") + 1
    attempts_before = sample(
        before, "im_probe_attempts_total", target=name, probe="send_c2c", outcome="failure"
    )
    assert attempts_before >= 4  # all of M1's sends failed
    assert (
        sample(after, "im_probe_attempts_total", target=name, probe="send_c2c", outcome="failure")
        >= attempts_before
    )
    last = sample(after, "im_last_closed_minute_timestamp_seconds", target=name)
    assert last == (run["m0"] + 6) * 60
    # per probe: M1 failed for both probes; in M2 the one spared request made one probe
    # available and the other failed (which one depends on the offsets)
    per_probe_failed = sum(
        sample(
            before,
            "im_probe_minute_verdicts_total",
            target=name,
            probe=probe,
            state="apparent_failure",
        )
        for probe in ("login", "send_c2c")
    )
    assert per_probe_failed == 3
    assert sample(after, "im_availability_ratio", target=name, window="1h") < 1
    assert sample(after, "im_sla_downtime_seconds", target=name) == 60
    assert sample(before, "im_prober_build_info", version="0.1.0") == 1


def test_scrapes_are_valid_for_promtool_and_openmetrics(run) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(run["openmetrics"]))
    assert {"im_minute_verdicts", "im_probe_duration_seconds"} <= {f.name for f in families}
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=run["text_before_stop"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lifecycle(run) -> None:
    assert run["readyz"] == (200, "ok\n")
    assert run["stop_code"] == 0 and run["final_code"] == 0
    assert run["reload"] == (200, "reloaded\n")
    log = run["log"]
    # the restart took back the stopped minute's attempts (if it had made any) and closed
    # the rest as missed
    assert (
        "took back attempts of minutes that had not closed" in log
        or "recorded minutes missed while the prober was down" in log
    )
    assert "prober started" in log and log.count("prober stopped") == 2
    assert "correct-horse-battery" not in log and "tok-0" not in log


def test_report_reads_the_same_ledger(run) -> None:
    # the probe's password is not in this process's environment: reports need no secrets
    report = json.loads(cli(run["config"], "report", "--target", run["name"], "--format", "json"))
    assert report["minutes"]["apparent_failure"] == 1
    assert report["incidents"][-1]["minutes"] == 1
    assert report["service_month"]["start"].endswith("T00:00:00+08:00")
