"""The daemon's controls, quickly (no minute needs to pass): SIGHUP and POST /-/reload with
bad and good configs, JSON logs, readiness, probe-once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import ROOT, Daemon, run_in_foreground, sample


def config_text(chat: ChatServer, extra_target: bool = False, lifecycle: bool = True) -> str:
    text = f"""\
        ledger: {{path: ledger.sqlite3}}
        web: {{enable_lifecycle: {str(lifecycle).lower()}}}
        targets:
          - name: chat
            kind: http
            http:
              base_url: {chat.url}
              variables: {{password: {{env: CHAT_PASSWORD}}}}
              probes:
                login: [{{method: POST, url: /login, json: {{user: p, password: "{{password}}"}}}}]
            probes: {{login: {{attempts_per_minute: 6, timeout: 2s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
        """
    if extra_target:
        text = (
            text.rstrip(" ")
            + """\
          - name: added
            kind: external
            external: {command: ["true"]}
            probes: {login: {attempts_per_minute: 1, timeout: 5s}}
            sla: {service_month_anchor: 2026-01-01}
        """
        )
    return textwrap.dedent(text)


@pytest.fixture
def chat():
    server = ChatServer().start()
    yield server
    server.stop()


def test_reload_keeps_the_old_config_when_the_new_one_is_bad(tmp_path: Path, chat) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(chat))
    daemon = Daemon(config, free_port(), env={"CHAT_PASSWORD": chat.password})
    daemon.env["PYTHONUNBUFFERED"] = "1"
    daemon.start()
    try:
        assert daemon.get("/readyz") == (200, "ok\n")
        config.write_text(
            config_text(chat).replace("attempts_per_minute: 6", "attempts_per_minute: 0")
        )
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 30
        while sample(daemon.metrics(), "im_config_last_reload_successful") != 0:
            assert time.time() < deadline, "SIGHUP reload did not report failure"
            time.sleep(0.2)
        metrics = daemon.metrics()
        assert (
            sample(metrics, "im_minute_verdicts_total", target="chat", state="available")
            is not None
        )
        assert daemon.get("/healthz")[0] == 200
        status, body = daemon.post("/-/reload")
        assert (
            status == 500 and "config.yaml:11: targets[0].probes.login.attempts_per_minute" in body
        )
        config.write_text(config_text(chat, extra_target=True))
        assert daemon.post("/-/reload") == (200, "reloaded\n")
        metrics = daemon.metrics()
        assert sample(metrics, "im_config_last_reload_successful") == 1
        assert sample(metrics, "im_minute_verdicts_total", target="added", state="no_data") == 0
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "reload failed; the running configuration stays" in log
    assert chat.password not in log


def test_json_logs_and_lifecycle_off(tmp_path: Path, chat) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(chat, lifecycle=False))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prober",
            "run",
            "-c",
            str(config),
            "--log-format",
            "json",
            "--web.listen-address",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env={"CHAT_PASSWORD": chat.password, "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    daemon = Daemon(config, port)
    daemon.proc = proc
    deadline = time.time() + 20
    while True:
        try:
            daemon.get("/healthz")
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
    assert daemon.post("/-/reload")[0] in (404, 405)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    messages = [line["msg"] for line in lines]
    assert "prober started" in messages and "prober stopped" in messages
    assert all({"ts", "level", "msg"} <= set(line) for line in lines)


def test_listen_address_in_use_is_a_clear_error(tmp_path: Path, chat) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(chat))
    done = run_in_foreground(
        config,
        f"127.0.0.1:{chat.port}",
        env={"CHAT_PASSWORD": chat.password, "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "cannot listen on 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr


def test_probe_once_prints_a_table_and_exits_by_outcome(tmp_path: Path, chat) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(chat, extra_target=True))
    env = {"CHAT_PASSWORD": chat.password, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "prober", "probe-once", "-c", str(config)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "PROBE", "OUTCOME", "MS", "ERROR", "HTTP", "DETAIL"]
    assert lines[1].split()[:3] == ["chat", "login", "success"]
    assert lines[2].split()[:3] == ["added", "login", "success"]
    chat.set_mode("5xx")
    done = subprocess.run(
        [*command, "--target", "chat"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout.splitlines()[1].split()[:3] == ["chat", "login", "failure"]
    assert "http_5xx" in done.stdout and chat.password not in done.stdout
