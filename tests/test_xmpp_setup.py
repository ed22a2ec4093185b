"""`im-prober xmpp-setup` against a real Prosody: in-band registration where it is open,
the room created once and found again (idempotent), the printed section works; where
registration is closed, the prosodyctl command is printed without the password."""

from __future__ import annotations

import os
import subprocess
import sys

from prober.adapters.xmpp import XmppAdapter
from prober.config.models import load_config
from prober.sla import Outcome

from .daemon_util import ROOT
from .prosody_fixture import DOMAIN, PASSWORD, PEER_PASSWORD, ROOM, Prosody
from .test_xmpp_adapter import attempts, outcomes

ENV = {"XMPP_PASSWORD": PASSWORD, "XMPP_PEER_PASSWORD": PEER_PASSWORD}


def setup(server: Prosody) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "prober",
            "xmpp-setup",
            "--jid",
            f"probe@{DOMAIN}",
            "--peer-jid",
            f"probe-peer@{DOMAIN}",
            "--room",
            ROOM,
            "--password-env",
            "XMPP_PASSWORD",
            "--peer-password-env",
            "XMPP_PEER_PASSWORD",
            "--host",
            "127.0.0.1",
            "--port",
            str(server.c2s_port),
            "--ca-file",
            str(server.ca.path),
        ],
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_setup_registers_creates_the_room_and_is_idempotent(tmp_path, monkeypatch) -> None:
    server = Prosody(tmp_path / "open", allow_registration=True).start()
    try:
        first = setup(server)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "registered (in-band)" in first.stdout
        assert "created (persistent)" in first.stdout
        second = setup(server)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "registered" not in second.stdout and "logs in" in second.stdout
        assert f"room {ROOM}: exists" in second.stdout
        for done in (first, second):
            assert PASSWORD not in done.stdout + done.stderr
            assert PEER_PASSWORD not in done.stdout + done.stderr
        # the printed section is a working target
        section_text = second.stdout.split("# the target's section:\n", 1)[1]
        config = tmp_path / "config.yaml"
        config.write_text(
            "ledger: {path: ledger.sqlite3}\ntargets:\n  - name: x\n"
            + section_text
            + "    probes:\n      send_c2c: {attempts_per_minute: 1, timeout: 5s}\n"
            "      send_group: {attempts_per_minute: 1, timeout: 5s}\n"
            "    sla: {service_month_anchor: 2026-01-01}\n"
        )
        for name, value in ENV.items():
            monkeypatch.setenv(name, value)
        target = load_config(config).config.targets[0]
        adapter = XmppAdapter("x", target.section, 5.0)
        results = attempts(adapter, ["send_c2c", "send_group"], timeout=5.0)
        assert outcomes(results) == [(Outcome.SUCCESS, "")] * 2, results
    finally:
        server.stop()


def test_closed_registration_prints_the_prosodyctl_command(tmp_path) -> None:
    server = Prosody(tmp_path / "closed").start()
    try:
        done = setup(server)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f'prosodyctl register probe {DOMAIN} "$XMPP_PASSWORD"' in done.stdout
        assert f'prosodyctl register probe-peer {DOMAIN} "$XMPP_PEER_PASSWORD"' in done.stdout
        assert PASSWORD not in done.stdout + done.stderr
    finally:
        server.stop()
