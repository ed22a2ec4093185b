"""A throwaway Synapse homeserver on 127.0.0.1: SQLite, no federation, a registration shared
secret, cheap password hashing. Needs the `matrix-synapse` package (the `demo` and `test`
extras); runs it as `python -m synapse.app.homeserver` in its own process."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from ..setup.matrix import register_with_shared_secret

SERVER_NAME = "localhost"

# Limits high enough that probing every few seconds is never throttled.
RELAXED_LIMITS: dict[str, Any] = {
    "rc_message": {"per_second": 1000, "burst_count": 1000},
    "rc_login": {
        "address": {"per_second": 1000, "burst_count": 1000},
        "account": {"per_second": 1000, "burst_count": 1000},
        "failed_attempts": {"per_second": 1000, "burst_count": 1000},
    },
    "rc_joins": {
        "local": {"per_second": 1000, "burst_count": 1000},
        "remote": {"per_second": 1000, "burst_count": 1000},
    },
    "rc_registration": {"per_second": 1000, "burst_count": 1000},
    "rc_admin_redaction": {"per_second": 1000, "burst_count": 1000},
    "rc_invites": {
        "per_room": {"per_second": 1000, "burst_count": 1000},
        "per_user": {"per_second": 1000, "burst_count": 1000},
        "per_issuer": {"per_second": 1000, "burst_count": 1000},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HomeserverError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies (Linux),
    so a killed demo or test run leaves no homeserver behind."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Homeserver:
    def __init__(self, workdir: Path, *, port: int | None = None, relaxed: bool = True) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.relaxed = relaxed
        self.shared_secret = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "synapse.log"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "server_name": SERVER_NAME,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "media_store_path": str(self.workdir / "media"),
            "signing_key_path": str(self.workdir / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "enable_registration": False,
            "bcrypt_rounds": 4,
            "presence": {"enabled": False},
            "url_preview_enabled": False,
            "enable_metrics": False,
        }
        if self.relaxed:
            config.update(RELAXED_LIMITS)
        path = self.workdir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, timeout: float = 60) -> Homeserver:
        config = self._write_config()
        base = [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config)]
        env = {**os.environ, "SYNAPSE_ASYNC_IO_REACTOR": "0"}
        if not (self.workdir / "signing.key").exists():
            done = subprocess.run(
                [*base, "--generate-keys"],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                cwd=self.workdir,
            )
            if done.returncode != 0:
                raise HomeserverError(f"synapse could not generate keys: {done.stderr[-2000:]}")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            base,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HomeserverError(
                    "synapse exited: " + self.log_path.read_text(errors="replace")[-3000:]
                )
            try:
                self.request("GET", "/_matrix/client/versions")
                return self
            except (OSError, httpx.HTTPError):
                time.sleep(0.1)
        self.stop()
        raise HomeserverError("synapse did not answer in time")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        base: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.request(
            method,
            (base or self.url) + path,
            json=body,
            headers=headers,
            timeout=10,
            trust_env=False,
        )
        response.raise_for_status()
        return response.json() if response.content else {}

    def register(self, localpart: str, password: str, *, admin: bool = False) -> str:
        """Create an account (or keep the existing one); returns its user id."""
        register_with_shared_secret(self.url, self.shared_secret, localpart, password, admin=admin)
        return f"@{localpart}:{SERVER_NAME}"
