"""Two real daemons as vantages `a` and `b` on one real PostgreSQL ledger, probing one chat
service through real minutes (one run, shared by every assertion):

    m0  the service is fine                       -> fleet available
    m1  a's path is a blackhole (a proxy for a)   -> fleet available, a apparent_failure
    m2  the service fails for both                -> fleet apparent_failure (quorum 2 met)
    m3  a is SIGKILLed 35 s in (it is the closer) -> b takes over closing within seconds;
    m4  the fleet's minutes ...                      no fleet minute lost or changed
    m5  a comes back                              -> it rejoins (its vantage rows again)
    m6  a stops; the service fails for b          -> no_data/below_quorum (one vantage < 2)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import Daemon, chat_target, next_minute, sample, wait_until
from .fault_proxy import FaultProxy
from .postgres_fixture import PostgresCluster
from .prometheus_stack import RULES, Prometheus

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-fleet")]

TIMEOUT = 3
CLOSE_DELAY = TIMEOUT + 2  # the largest timeout + the default close grace
DEADLINE = 10  # fleet.close_deadline
KILL_AT = 35  # seconds into m3: a has closed m2 (as a vantage and the fleet) and stored
# m3's first attempts (its sends are 30 s apart, so one started by :30)
MINUTES = 7


def fleet_config(folder: Path, vantage: str, url: str, base_url: str) -> Path:
    path = folder / f"{vantage}.yaml"
    path.write_text(
        f"vantage: {vantage}\n"
        f"fleet: {{failure_quorum: 2, close_deadline: {DEADLINE}s}}\n"
        f"ledger: {{url: '{url}', password: {{env: IM_PROBER_TEST_PG_PASSWORD}}}}\n"
        "targets:\n" + chat_target("svc", base_url, TIMEOUT, sends=2)
    )
    return path


def closer(daemon: Daemon) -> float | None:
    try:
        return sample(daemon.metrics(), "im_fleet_closer")
    except OSError:
        return None


def wait_for(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.time()
    while not condition():
        assert time.time() - started < timeout, f"{what} within {timeout} s"
        time.sleep(0.2)
    return time.time() - started


def paged_during(minute: int) -> str:
    """Whether IMTargetFailingNow fired at any moment of `minute`."""
    return (
        'max_over_time(ALERTS{alertname="IMTargetFailingNow",alertstate="firing"}[58s] '
        f"@ {(minute + 1) * 60 - 1})"
    )


def asked(prometheus: Prometheus, promql: str) -> list | str:
    try:
        return prometheus.query(promql)
    except AssertionError as exc:  # kept for the test that reads it; the run's data stays
        return str(exc)


@pytest.fixture(scope="module")
def fleet_run(postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("fleet")
    chat = ChatServer().start()
    proxy = FaultProxy(chat.port).start()
    database = postgres.create_database("fleet")
    url = postgres.url(database)
    env = {"IM_PROBER_TEST_PG_PASSWORD": postgres.password, "CHAT_PASSWORD": chat.password}
    for vantage in ("a", "b"):
        (folder / vantage).mkdir()
    configs = {
        "a": fleet_config(folder / "a", "a", url, proxy.url),
        "b": fleet_config(folder / "b", "b", url, chat.url),
    }
    ports = {"a": free_port(), "b": free_port()}
    prometheus = Prometheus(
        folder,
        {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "im-prober",
                    "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports.values()]}],
                }
            ],
        },
    )
    prometheus.start()
    a = Daemon(configs["a"], ports["a"], env).start()
    daemons = [a]
    result: dict = {}
    try:
        wait_for(lambda: closer(a) == 1, 20, "a closes the fleet's minutes")
        b = Daemon(configs["b"], ports["b"], env).start()
        daemons.append(b)
        assert closer(b) == 0
        m0 = next_minute()
        result["m0"] = m0
        wait_until((m0 + 1) * 60)
        proxy.set_blackhole(True)
        wait_until((m0 + 2) * 60)
        proxy.set_blackhole(False)
        chat.set_mode("5xx")
        wait_until((m0 + 3) * 60)
        chat.set_mode("ok")
        wait_until((m0 + 3) * 60 + KILL_AT)
        assert closer(a) == 1 and closer(b) == 0
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        result["takeover"] = wait_for(lambda: closer(b) == 1, 30, "b takes over closing")
        wait_until((m0 + 5) * 60 + 1)
        a = Daemon(configs["a"], ports["a"], env).start()  # back, inside m5
        daemons.append(a)
        wait_until((m0 + 6) * 60)
        assert a.proc is not None
        a.stop()
        chat.set_mode("5xx")
        wait_until((m0 + MINUTES) * 60 + CLOSE_DELAY + DEADLINE + 4)
        result["b_metrics"] = b.metrics()
        result["prometheus"] = {
            name: asked(prometheus, promql)
            for name, promql in (
                (
                    "failed_minutes",
                    'sum by (target) (im_minute_verdicts_total{state="apparent_failure"})',
                ),
                ("paged_in_m1", paged_during(m0 + 1)),
                ("paged_in_m2", paged_during(m0 + 2)),
            )
        }
        assert b.stop(timeout=30) == 0
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.kill()
        proxy.stop()
        chat.stop()
        prometheus.stop()
    with psycopg.connect(
        host="127.0.0.1",
        port=postgres.port,
        user=postgres.role,
        password=postgres.password,
        dbname=database,
    ) as db:
        result["fleet"] = {
            m: (state, reason)
            for m, state, reason in db.execute(
                "SELECT m.minute, m.state, m.reason FROM minutes m JOIN series s "
                "ON s.id = m.series_id WHERE s.target = 'svc' AND s.probe = '' "
                "AND m.minute BETWEEN %s AND %s",
                (m0, m0 + MINUTES - 1),
            ).fetchall()
        }
        result["fleet_rows"] = db.execute(
            "SELECT count(*), count(DISTINCT m.minute) FROM minutes m JOIN series s "
            "ON s.id = m.series_id WHERE s.probe = ''"
        ).fetchone()
        result["a_stored_m3"] = db.execute(
            "SELECT count(*) FROM attempts WHERE vantage = 'a' AND minute = %s", (m0 + 3,)
        ).fetchone()[0]
        result["vantages"] = {
            (m, v): state
            for m, v, state in db.execute(
                "SELECT v.minute, v.vantage, v.state FROM vantage_minutes v JOIN series s "
                "ON s.id = v.series_id WHERE s.target = 'svc' AND s.probe = '' "
                "AND v.minute BETWEEN %s AND %s",
                (m0, m0 + MINUTES - 1),
            ).fetchall()
        }
    result["logs"] = {v: (folder / v / "daemon.log").read_text() for v in ("a", "b")}
    # the report, read from the fleet's ledger as an operator would (the month holding m2)
    just_after_m2 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((m0 + 3) * 60))
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "prober",
            "report",
            "-c",
            str(configs["b"]),
            "--target",
            "svc",
            "--format",
            "json",
            "--now",
            just_after_m2,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    result["report"] = json.loads(report.stdout) if report.returncode == 0 else report.stderr
    return result


AVAILABLE, FAILED, NO_DATA = 0, 1, 3
BELOW_QUORUM = 4


def test_every_fleet_minute_is_written_once_with_the_union_verdict(fleet_run) -> None:
    m0 = fleet_run["m0"]
    assert fleet_run["fleet"] == {
        m0: (AVAILABLE, 0),
        m0 + 1: (AVAILABLE, 0),  # a's path failed, b reached the service
        m0 + 2: (FAILED, 0),  # both vantages saw the failure: quorum 2 met
        m0 + 3: (AVAILABLE, 0),  # a killed: b carried on
        m0 + 4: (AVAILABLE, 0),
        m0 + 5: (AVAILABLE, 0),
        m0 + 6: (NO_DATA, BELOW_QUORUM),  # one vantage's failures, quorum 2
    }
    total, distinct = fleet_run["fleet_rows"]
    assert total == distinct  # no minute written twice


def test_each_vantage_keeps_its_own_verdicts(fleet_run) -> None:
    m0 = fleet_run["m0"]
    seen = fleet_run["vantages"]
    assert seen[(m0, "a")] == AVAILABLE and seen[(m0, "b")] == AVAILABLE
    assert seen[(m0 + 1, "a")] == FAILED and seen[(m0 + 1, "b")] == AVAILABLE
    assert seen[(m0 + 2, "a")] == FAILED and seen[(m0 + 2, "b")] == FAILED
    assert seen[(m0 + 4, "b")] == AVAILABLE
    # a, killed in m3 and back in m5, took back what it had stored of m3 and decided it
    assert fleet_run["a_stored_m3"] >= 1
    assert seen[(m0 + 3, "a")] == AVAILABLE
    assert (m0 + 4, "a") not in seen or seen[(m0 + 4, "a")] == NO_DATA  # it was down
    assert seen[(m0 + 5, "a")] in (AVAILABLE, NO_DATA)  # back inside m5: rejoined
    assert seen[(m0 + 6, "b")] == FAILED


def test_the_closer_role_moves_within_seconds_when_the_closer_dies(fleet_run) -> None:
    assert fleet_run["takeover"] <= 10
    assert "this prober now closes the fleet's minutes" in fleet_run["logs"]["b"]


def test_only_the_closer_exports_the_fleet_figures_every_prober_its_vantage(fleet_run) -> None:
    metrics = fleet_run["b_metrics"]
    assert sample(metrics, "im_fleet_closer") == 1
    assert sample(metrics, "im_minute_verdicts_total", target="svc", state="apparent_failure") == 1
    assert (
        sample(
            metrics,
            "im_vantage_minute_verdicts_total",
            target="svc",
            vantage="b",
            state="apparent_failure",
        )
        or 0
    ) >= 2
    for log in fleet_run["logs"].values():
        assert "Traceback" not in log
        assert "correct-horse-battery" not in log


def test_the_report_reads_the_fleets_minutes_and_names_the_vantages_that_saw_them(
    fleet_run,
) -> None:
    assert isinstance(fleet_run["report"], dict), fleet_run["report"]
    incident = fleet_run["report"]["incidents"][-1]  # m2, the fleet's one failed minute
    assert incident["minutes"] == 1
    assert incident["vantages"] == ["a", "b"]


def test_prometheus_counts_each_fleet_minute_once_and_pages_once_per_target(fleet_run) -> None:
    seen = fleet_run["prometheus"]
    # two probers scraped, the closer moved once: the fleet's one failed minute, once
    assert [(r["metric"], float(r["value"][1])) for r in seen["failed_minutes"]] == [
        ({"target": "svc"}, 1.0)
    ]
    # m1: only a's path failed (b fine): no page; m2: every vantage failed: one alert
    assert seen["paged_in_m1"] == []
    assert [r["metric"]["target"] for r in seen["paged_in_m2"]] == ["svc"]
