"""matrix-setup against a real Synapse: idempotent, and its snippet makes a valid target."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from prober.config.models import parse_config
from prober.setup.matrix import provision

from .daemon_util import ROOT
from .synapse_fixture import PASSWORD, PEER_PASSWORD, MatrixWorld


def test_provisioning_twice_changes_nothing(matrix: MatrixWorld) -> None:
    again = provision(
        matrix.server.url,
        user="probe",
        password=PASSWORD,
        peer="probe-peer",
        peer_password=PEER_PASSWORD,
        shared_secret=matrix.server.shared_secret,
    )
    assert again == matrix.setup


def test_cli_prints_a_working_config_section(matrix: MatrixWorld, tmp_path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "P": PASSWORD,
        "PP": PEER_PASSWORD,
        "S": matrix.server.shared_secret,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prober",
            "matrix-setup",
            "--homeserver",
            matrix.server.url,
            "--user",
            "probe",
            "--peer",
            "probe-peer",
            "--password-env",
            "P",
            "--peer-password-env",
            "PP",
            "--shared-secret-env",
            "S",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout and matrix.server.shared_secret not in done.stdout
    section = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("#"))
    text = (
        "targets:\n  - name: m\n"
        + section
        + "\n"
        + textwrap.indent(
            textwrap.dedent("""\
        probes: {login: {attempts_per_minute: 1, timeout: 5s}, send_group: {attempts_per_minute: 1, timeout: 5s}}
        sla: {service_month_anchor: 2026-01-01}
        """),
            "    ",
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "prober", "probe-once", "-c", str(config)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "P": PASSWORD, "PP": PEER_PASSWORD},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    parse_config(text, config, resolve_secrets=False)


def test_missing_secret_variable_is_a_clear_error(matrix: MatrixWorld) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prober",
            "matrix-setup",
            "--homeserver",
            matrix.server.url,
            "--password-env",
            "NOPE",
            "--peer-password-env",
            "NOPE2",
            "--shared-secret-env",
            "S",
        ],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "S": "x"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "environment variable" in done.stderr and "Traceback" not in done.stderr
