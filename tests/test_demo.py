"""The README's first command: the demo starts a throwaway Synapse and the daemon, serves
metrics, and Ctrl-C (SIGINT) stops everything, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .chat_app import free_port
from .daemon_util import ROOT
from .synapse_fixture import require_synapse


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    require_synapse()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prober",
            "demo",
            "--dir",
            str(tmp_path / "demo"),
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _drive(proc, port, tmp_path)
    finally:
        if proc.poll() is None:  # a failed assertion must not leave the demo running
            proc.kill()
            proc.wait(10)
        for pid in _processes_mentioning(str(tmp_path / "demo")):
            os.kill(pid, signal.SIGKILL)


def _drive(proc: subprocess.Popen[str], port: int, tmp_path: Path) -> None:
    deadline = time.time() + 90
    ready = False
    while time.time() < deadline and not ready:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                ready = r.status == 200
        except OSError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.5)
    assert ready, "the demo did not become ready"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert 'target="matrix-demo"' in r.read().decode()
    pid_file = tmp_path / "demo" / "demo.pid"
    assert pid_file.read_text().strip() == str(proc.pid)
    synapse = _processes_mentioning(str(tmp_path / "demo" / "synapse" / "homeserver.yaml"))
    assert len(synapse) == 1, "one homeserver runs for the demo"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "im-prober demo is running" in output
    assert "demo stopped: daemon, proxy and homeserver are down." in output
    assert "coverage starts low" in output
    config = (tmp_path / "demo" / "config.yaml").read_text()
    anchor = (tmp_path / "demo" / "service-month-anchor").read_text().strip()
    assert f"service_month_anchor: {anchor}" in config
    assert _processes_mentioning(str(tmp_path / "demo")) == []
    assert not pid_file.exists()
    secret = (tmp_path / "demo" / "secrets" / "probe-password").read_text().strip()
    assert secret not in output


def _processes_mentioning(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_the_demo_month_starts_on_its_first_day_and_stays_there(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from prober.demo.run import demo_anchor

    today = datetime.now(UTC).date().isoformat()
    assert demo_anchor(tmp_path) == today
    (tmp_path / "service-month-anchor").write_text("2026-03-17\n")
    assert demo_anchor(tmp_path) == "2026-03-17"  # a restart keeps the month it had
