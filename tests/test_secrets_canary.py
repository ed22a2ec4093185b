"""Every secret of a real run is a unique canary string; after about three real minutes of
faults (401s that force a fresh login, resets, hangs, provider error codes, hostile
responses, TLS failures, a script that prints its secret, wrong scrape passwords, a SIGKILL
and restart), no canary appears in any log line, metric, report, evidence file, ledger
export, ledger file, probe-once table, check-config output or config error."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import bcrypt
import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import ROOT, Daemon, chat_target, next_minute, wait_until
from .hostile import HostileServer
from .tencent_emulator import TencentEmulator
from .test_web_security import basic

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-canary")]

CANARIES = {
    "chat_password": "CANARY-chat-password-5be1d0",
    "api_key": "CANARY-api-key-from-file-9a7c44",
    "tencent_key": "CANARY-tencent-secret-key-31f0aa",
    "matrix_password": "CANARY-matrix-password-c2e871",
    "script_token": "CANARY-script-token-77d9b3",
    "hostile_auth": "CANARY-hostile-bearer-0e15f6",
    "scrape_password": "CANARY-scrape-password-4aa9e2",
}
TIMEOUT = 2


def config_text(chat: ChatServer, emulator: TencentEmulator, hostile: HostileServer) -> str:
    dead = free_port()
    script = (
        "import os, sys; print('token is', os.environ['TOKEN']); "
        "print('stderr', os.environ['TOKEN'], file=sys.stderr); sys.exit(1)"
    )
    return (
        "ledger: {path: ledger.sqlite3}\nweb: {config_file: web.yml}\ntargets:\n"
        + chat_target(
            "chat",
            chat.url,
            TIMEOUT,
            sends=6,
            password_env="CANARY_CHAT_PASSWORD",
            extra_http="      headers: {X-Api-Key: {file: api.key}}\n",
        )
        + textwrap.indent(
            textwrap.dedent(f"""\
          - name: tencent
            kind: tencent_im
            tencent_im:
              sdkappid: {emulator.sdkappid}
              secret_key: {{env: CANARY_TENCENT_KEY}}
              domain: "{emulator.domain}"
              scheme: http
              group_id: im-prober-group
            probes:
              login: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
              send_c2c: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
              send_group: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01}}
          - name: matrix-dead
            kind: matrix
            matrix:
              homeserver: http://127.0.0.1:{dead}
              user: "@probe:example.org"
              password: {{env: CANARY_MATRIX_PASSWORD}}
            probes:
              login: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01}}
          - name: script
            kind: external
            external:
              command: ["{sys.executable}", "-c", "{script}"]
              env: {{TOKEN: {{env: CANARY_SCRIPT_TOKEN}}}}
            probes:
              login: {{attempts_per_minute: 2, timeout: {TIMEOUT}s}}
            sla: {{service_month_anchor: 2026-01-01}}
        """),
            "  ",
        )
        + "".join(
            hostile_target(i, base, path, hostile)
            for i, (base, path) in enumerate(
                [
                    (hostile.url, "/slow-body"),
                    (hostile.url, "/gzip-bomb"),
                    (hostile.url, "/bad-utf8"),
                    (hostile.url, "/redirect-loop"),
                    (hostile.tls_url("expired"), "/ok"),
                    (hostile.tls_url("wrong_host"), "/ok"),
                ]
            )
        )
    )


def hostile_target(i: int, base: str, path: str, hostile: HostileServer) -> str:
    return (
        f"  - name: hostile-{i}\n"
        "    kind: http\n"
        "    http:\n"
        f"      base_url: {base}\n"
        f"      ca_file: {hostile.ca.path}\n"
        "      headers: {Authorization: {env: CANARY_HOSTILE_AUTH}}\n"
        "      max_redirects: 3\n"
        f'      probes: {{login: [{{url: "{path}", expect_json: {{ok: true}}}}]}}\n'
        "    probes:\n"
        f"      login: {{attempts_per_minute: 3, timeout: {TIMEOUT}s}}\n"
        "    sla: {service_month_anchor: 2026-01-01}\n"
    )


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("canary")
    chat = ChatServer(password=CANARIES["chat_password"]).start()
    emulator = TencentEmulator(key=CANARIES["tencent_key"]).start()
    emulator.accounts |= {"im_prober_a", "im_prober_b"}
    emulator.groups["im-prober-group"] = {
        "type": "Work",
        "messages": [],
        "members": {"im_prober_a", "im_prober_b"},
    }
    hostile = HostileServer(folder).start()
    (folder / "api.key").write_text(CANARIES["api_key"] + "\n")
    hashed = bcrypt.hashpw(CANARIES["scrape_password"].encode(), bcrypt.gensalt(10)).decode()
    (folder / "web.yml").write_text(f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    config = folder / "config.yaml"
    config.write_text(config_text(chat, emulator, hostile))
    env = {
        "CANARY_CHAT_PASSWORD": CANARIES["chat_password"],
        "CANARY_TENCENT_KEY": CANARIES["tencent_key"],
        "CANARY_MATRIX_PASSWORD": CANARIES["matrix_password"],
        "CANARY_SCRIPT_TOKEN": CANARIES["script_token"],
        "CANARY_HOSTILE_AUTH": CANARIES["hostile_auth"],
    }
    daemon = Daemon(
        config, free_port(), env=env, headers=basic("prometheus", CANARIES["scrape_password"])
    ).start()

    def cli(*args: str, check: bool = True) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "prober", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        if check:
            assert result.returncode in (0, 1), result.stderr
        return result.stdout + result.stderr

    texts: dict[str, str] = {}
    try:
        m0 = next_minute()
        wait_until(m0 * 60 + 20)
        texts["metrics-ok"] = daemon.get("/metrics")[1]
        chat.set_mode("401")
        emulator.set_fault("code", code=70001)
        texts["scrape-wrong"] = str(daemon.get("/metrics", basic("prometheus", "wrong")))
        texts["scrape-canary-user"] = str(
            daemon.get("/metrics", basic(CANARIES["scrape_password"], "x"))
        )
        wait_until(m0 * 60 + 45)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
        daemon.start()
        # One attempt of everything now, while the faults are live.
        texts["probe-once"] = cli("probe-once", "-c", str(config))
        wait_until((m0 + 1) * 60 + 2)
        chat.set_mode("reset")
        emulator.set_fault("hang")
        wait_until((m0 + 1) * 60 + 40)
        chat.set_mode("ok")
        emulator.set_fault("none")
        wait_until((m0 + 2) * 60 + TIMEOUT + 2 + 3)
        texts["metrics"] = daemon.get("/metrics")[1]
        texts["openmetrics"] = daemon.get(
            "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
        )[1]
        texts["readyz"] = daemon.get("/readyz")[1]
        daemon.stop()
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()
        chat.stop()
        emulator.stop()
        hostile.stop()
    texts["log"] = daemon.log.read_text()

    month = time.strftime("%Y-%m", time.gmtime(m0 * 60))
    texts["check-config"] = cli("check-config", "-c", str(config))
    texts["ledger-export"] = cli("ledger", "export", "-c", str(config))
    for target in ("chat", "tencent", "script", "matrix-dead", "hostile-1"):
        for fmt in ("text", "json", "csv", "html"):
            texts[f"report-{target}-{fmt}"] = cli(
                "report", "-c", str(config), "--target", target, "--format", fmt
            )
        out = folder / f"evidence-{target}"
        texts[f"evidence-{target}"] = cli(
            "evidence", "-c", str(config), "--target", target, "--month", month, "--out", str(out)
        )
        for path in sorted(out.rglob("*")):
            if path.is_file():
                texts[f"evidence-{target}/{path.name}"] = path.read_bytes().decode("latin-1")
    # A config error in the section that holds a secret.
    broken = folder / "broken.yaml"
    broken.write_text(config.read_text().replace("scheme: http", "scheme: gopher"))
    texts["config-error"] = cli("check-config", "-c", str(broken), check=False)
    for path in folder.glob("ledger.sqlite3*"):
        texts[f"ledger-file/{path.name}"] = path.read_bytes().decode("latin-1")
    return texts


def test_no_canary_anywhere(canary_run):
    leaks = [
        (where, name)
        for where, text in canary_run.items()
        for name, canary in CANARIES.items()
        if canary in text
    ]
    assert leaks == []


def test_no_usersig_or_bearer_value_anywhere(canary_run):
    for where, text in canary_run.items():
        assert not re.search(r"usersig=(?!<)[A-Za-z0-9*_-]{20,}", text), where
        assert "tok-0000" not in text, where  # extracted session tokens are secrets too


def test_the_run_really_went_through_the_faults(canary_run):
    log = canary_run["log"]
    assert log.count("prober started") == 2  # the SIGKILL and restart
    export = canary_run["ledger-export"]
    assert "apparent_failure" in export
    probe_once = canary_run["probe-once"]
    for target in ("chat", "tencent", "matrix-dead", "script", "hostile-0", "hostile-4"):
        assert target in probe_once
    assert "tls" in probe_once
    assert "401" in canary_run["scrape-wrong"]
    assert "error" in canary_run["config-error"].lower()
    assert any(k.startswith("evidence-chat/") for k in canary_run)
