"""5,000 targets, every one blackholed (connections that are never answered, so every
attempt times out), for three real minutes: no minute is missed, RSS stays bounded and flat,
the scheduler's lag is recorded, and /metrics keeps answering."""

from __future__ import annotations

import socket
import sqlite3
import time

import pytest

from .chat_app import free_port
from .daemon_util import Daemon, next_minute, sample, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-load")]

TARGETS = 5000
TIMEOUT = 5
CLOSED = TIMEOUT + 2 + 4
# Every scrape must answer; how fast is bench/'s to measure (this runs beside a dozen other
# end-to-end runs on two cores), so the bound here is only "well within a scrape interval".
SCRAPE_LIMIT = 15.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def run_load(folder):
    """The one run (a few real minutes at full load): one test makes it and checks it all,
    so nothing can make a second run of it beside another test's."""
    # A listener that never accepts: the kernel completes some handshakes, then nothing is
    # ever read or answered; past its backlog, connects hang. Every attempt times out.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(4096)
    port = blackhole.getsockname()[1]
    targets = "".join(
        f"  - {{name: b{i:04d}, kind: http, "
        f"http: {{base_url: 'http://127.0.0.1:{port}', probes: {{login: [{{url: /}}]}}}}, "
        f"probes: {{login: {{attempts_per_minute: 1, timeout: {TIMEOUT}s}}}}, "
        "sla: {service_month_anchor: 2026-01-01}}\n"
        for i in range(TARGETS)
    )
    config = folder / "config.yaml"
    config.write_text("ledger: {path: ledger.sqlite3}\ntargets:\n" + targets)
    daemon = Daemon(config, free_port()).start()
    assert daemon.proc is not None
    samples: list[tuple[float, int, float]] = []  # (time, rss, /metrics seconds)
    try:
        # Restoring 5,000 targets takes seconds: the first whole minute is the one after ready.
        deadline = time.time() + 60
        while daemon.get("/readyz")[0] != 200:
            assert time.time() < deadline, "daemon not ready within 60 s"
            time.sleep(0.2)
        m0 = next_minute()
        wait_until(m0 * 60)
        while time.time() < (m0 + 3) * 60 + CLOSED:
            started = time.monotonic()
            status, _ = daemon.get("/metrics", timeout=SCRAPE_LIMIT)
            assert status == 200
            samples.append((time.time(), rss_bytes(daemon.proc.pid), time.monotonic() - started))
            time.sleep(max(0.0, 5 - (time.monotonic() - started)))  # a sample every 5 s
        metrics = daemon.metrics()
        stop_code = daemon.stop(timeout=60)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        blackhole.close()
    with sqlite3.connect(folder / "ledger.sqlite3") as db:
        counts = dict(
            db.execute(
                """
                SELECT m.minute, count(*) FROM minutes m JOIN series s ON s.id = m.series_id
                WHERE s.probe = '' AND m.minute BETWEEN ? AND ? GROUP BY m.minute
                """,
                (m0, m0 + 2),
            ).fetchall()
        )
        states = dict(
            db.execute(
                """
                SELECT m.state, count(*) FROM minutes m JOIN series s ON s.id = m.series_id
                WHERE s.probe = '' AND m.minute BETWEEN ? AND ? GROUP BY m.state
                """,
                (m0, m0 + 2),
            ).fetchall()
        )
        timeouts = db.execute(
            "SELECT count(*) FROM attempts WHERE minute BETWEEN ? AND ? AND error_kind = 'timeout'",
            (m0, m0 + 2),
        ).fetchone()[0]
    result = {
        "m0": m0,
        "counts": counts,
        "states": states,
        "timeouts": timeouts,
        "samples": samples,
        "metrics": metrics,
        "stop_code": stop_code,
        "log": daemon.log.read_text(),
    }
    rss = [r for _, r, _ in samples]
    scrape = sorted(s for _, _, s in samples)
    print(
        f"\n{TARGETS} blackholed targets: RSS {min(rss) / 2**20:.0f}-{max(rss) / 2**20:.0f} MiB, "
        f"/metrics median {scrape[len(scrape) // 2] * 1000:.0f} ms, max {scrape[-1] * 1000:.0f} ms, "
        f"lag samples {sample(metrics, 'im_scheduler_lag_seconds_count')}"
    )
    return result


def test_5000_blackholed_targets_for_three_minutes(tmp_path) -> None:
    load_run = run_load(tmp_path)
    no_minute_missed(load_run)
    memory_is_bounded_and_flat(load_run)
    metrics_stay_responsive(load_run)
    scheduler_lag_is_recorded(load_run)


def no_minute_missed(load_run):
    m0 = load_run["m0"]
    assert load_run["counts"] == {m0: TARGETS, m0 + 1: TARGETS, m0 + 2: TARGETS}
    # Every attempt timed out, so every minute is an apparent failure (no network check).
    assert load_run["states"] == {1: 3 * TARGETS}
    assert load_run["timeouts"] == 3 * TARGETS
    assert load_run["stop_code"] == 0


def memory_is_bounded_and_flat(load_run):
    rss = [r for _, r, _ in load_run["samples"]]
    assert max(rss) < 1536 << 20
    first_minute = [r for t, r, _ in load_run["samples"] if t < (load_run["m0"] + 1) * 60]
    # No growth from minute to minute: the third minute costs what the first did.
    assert max(rss) < max(first_minute) * 1.3


def metrics_stay_responsive(load_run):
    scrape = sorted(s for _, _, s in load_run["samples"])
    assert len(scrape) >= 30
    assert scrape[len(scrape) // 2] < 1.0
    assert scrape[-1] < SCRAPE_LIMIT


def scheduler_lag_is_recorded(load_run):
    metrics = load_run["metrics"]
    count = sample(metrics, "im_scheduler_lag_seconds_count")
    assert count is not None and count >= 3 * TARGETS
    assert sample(metrics, "im_scheduler_misfires_total") is not None
    assert "Traceback" not in load_run["log"]
