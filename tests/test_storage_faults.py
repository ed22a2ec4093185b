"""The ledger's disk fills up under the real daemon (a 8 MiB tmpfs the test mounts and fills),
then space returns. One run, about six real minutes, with a write buffer of two minutes:

  M0          written normally
  M1, M2, M3  closed while the disk is full: /readyz fails, im_ledger_write_errors_total
              rises, probing goes on; M1 is pushed out of the two-minute buffer
  space returns (early in M4)
              M2 and M3 are written as decided (nothing lost within the buffer); M1 is
              recorded as no_data/prober_down (bounded memory, no hole in the ledger)
  M4          written normally
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import Daemon, next_minute, ping_target, safe_name, sample, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-storage")]

TIMEOUT = 2
CLOSED = TIMEOUT + 2 + 3


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {result.stderr}")


def fill(folder: Path) -> Path:
    """Write a file until the file system is full."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as handle:
        while True:
            try:
                handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    # Also the last few bytes.
    with filler.open("ab", buffering=0) as handle:
        for _ in range(64):
            try:
                handle.write(b"\0" * 1024)
            except OSError:
                break
    return filler


@pytest.fixture(scope="module")
def storage_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("storage")
    disk = folder / "disk"
    mount_tmpfs(disk, "8m")
    chat = ChatServer().start()
    name = safe_name([f"s-{i}" for i in range(50)], TIMEOUT)
    config = folder / "config.yaml"
    config.write_text(
        f"ledger: {{path: {disk / 'ledger.sqlite3'}}}\n"
        "scheduler: {write_buffer_minutes: 2}\ntargets:\n"
        + ping_target(name, chat.url, chat.password, TIMEOUT, sends=4)
    )
    daemon = Daemon(config, free_port()).start()
    observed: dict = {"name": name}
    try:
        m0 = next_minute()
        observed["m0"] = m0
        wait_until((m0 + 1) * 60 + CLOSED)  # M0 written
        observed["ready_before"] = daemon.get("/readyz")
        filler = fill(disk)
        observed["durations_at_fill"] = duration_count(daemon, name)
        wait_until((m0 + 4) * 60 + CLOSED)  # M1, M2, M3 closed while full
        observed["ready_full"] = daemon.get("/readyz")
        observed["metrics_full"] = daemon.metrics()
        observed["durations_full"] = duration_count(daemon, name)
        filler.unlink()  # space returns
        wait_until((m0 + 4) * 60 + CLOSED + 4)
        observed["ready_after"] = daemon.get("/readyz")
        wait_until((m0 + 5) * 60 + CLOSED)  # M4 written normally
        observed["metrics_after"] = daemon.metrics()
        observed["stop_code"] = daemon.stop()
        observed["log"] = daemon.log.read_text()
        with sqlite3.connect(disk / "ledger.sqlite3") as db:
            observed["integrity"] = db.execute("PRAGMA integrity_check").fetchall()
            observed["rows"] = {
                minute: (state, reason)
                for minute, state, reason in db.execute(
                    "SELECT minute, state, reason FROM minute_rows WHERE target = ? AND probe = ''",
                    (name,),
                )
            }
        yield observed
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        chat.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def duration_count(daemon: Daemon, name: str) -> float:
    metrics = daemon.metrics()
    return sum(
        value
        for (metric, labels), value in metrics.items()
        if metric == "im_probe_duration_seconds_count" and ("target", name) in labels
    )


def iso(minute: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute * 60))


def test_readyz_fails_while_the_disk_is_full_and_recovers(storage_run):
    assert storage_run["ready_before"][0] == 200
    status, body = storage_run["ready_full"]
    assert status == 503 and "ledger" in body
    assert storage_run["ready_after"][0] == 200


def test_write_errors_are_counted_and_logged(storage_run):
    errors = sample(storage_run["metrics_full"], "im_ledger_write_errors_total")
    assert errors is not None and errors >= 3
    log = storage_run["log"]
    assert "ledger write failed; closed minutes kept in memory" in log
    assert "full" in log  # SQLite's "database or disk is full"
    assert "ledger writable again" in log
    assert "recorded as no_data/prober_down" in log


def test_probing_goes_on_while_the_disk_is_full(storage_run):
    # 5 attempts a minute, three minutes: the in-memory duration histogram keeps counting.
    assert storage_run["durations_full"] - storage_run["durations_at_fill"] >= 12


def test_buffered_minutes_are_written_as_decided_and_the_overflow_is_marked(storage_run):
    m0 = storage_run["m0"]
    rows = storage_run["rows"]
    assert rows[iso(m0)] == ("available", "")
    assert rows[iso(m0 + 1)] == ("no_data", "prober_down")  # pushed out of the buffer
    assert rows[iso(m0 + 2)] == ("available", "")  # kept in memory, written later
    assert rows[iso(m0 + 3)] == ("available", "")
    assert rows[iso(m0 + 4)] == ("available", "")
    assert storage_run["integrity"] == [("ok",)]


def test_counters_include_the_late_minutes(storage_run):
    name = storage_run["name"]
    after = storage_run["metrics_after"]
    available = sample(after, "im_minute_verdicts_total", target=name, state="available")
    no_data = sample(after, "im_minute_verdicts_total", target=name, state="no_data")
    assert available is not None and available >= 4
    assert no_data is not None and no_data >= 1
    assert storage_run["stop_code"] == 0


def test_the_tmpfs_is_really_full_when_filled(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "1m")
    try:
        fill(disk)
        with pytest.raises(OSError) as info:
            (disk / "more").write_bytes(b"\0" * 8192)
        assert info.value.errno == errno.ENOSPC
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        os.sync()
