"""A real Prosody (Debian's `prosody` package) on 127.0.0.1 for the xmpp tests: a config
written into a temp folder (its own data directory, pidfile and log), a certificate made at
test time, encryption required on c2s, a MUC component, accounts made with `prosodyctl`;
started as a child process and stopped by its pid. Community modules (Debian's
`prosody-modules`: mod_c2s_conn_throttle, mod_firewall) can be enabled for the rate-limit
tests."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prober.adapters.xmpp import XmppSection
from prober.config.secrets import Secret
from prober.setup.xmpp import provision

from .certs import CA
from .chat_app import free_port

DOMAIN = "localhost"
MUC = f"conference.{DOMAIN}"
ROOM = f"probes@{MUC}"
PASSWORD = "probe-password-4711"
PEER_PASSWORD = "peer-password-0815"
# Where Debian's prosody-modules puts each module (mod_x/mod_x.lua): a folder Prosody already
# searches (its own modules' folder), so no plugin_paths is needed.
COMMUNITY_MODULES = Path("/usr/lib/prosody/modules")


def require_prosody() -> None:
    if shutil.which("prosody") is None or shutil.which("prosodyctl") is None:
        pytest.fail("Debian's prosody is not installed: `make system-deps` installs it")


def require_community_module(name: str) -> None:
    if not (COMMUNITY_MODULES / f"mod_{name}" / f"mod_{name}.lua").is_file():
        pytest.fail(f"mod_{name} is missing: `make system-deps` installs Debian's prosody-modules")


def _lua(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "{ " + "; ".join(_lua(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"{k} = {_lua(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _server_cert(ca: CA, folder: Path) -> tuple[Path, Path]:
    """A leaf for the XMPP domain and its MUC host (XMPP checks the domain, not the IP)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(DOMAIN), x509.DNSName(MUC)]),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.crt", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Prosody:
    workdir: Path
    limits: dict[str, dict[str, str]] | None = None  # mod_limits' `limits` option
    allow_registration: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    community: tuple[str, ...] = ()  # modules of Debian's prosody-modules to enable
    firewall: str | None = None  # a mod_firewall script (prosody-modules), e.g. a rate limit
    c2s_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)  # direct TLS (XEP-0368)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = self.workdir / "data"
        self.data.mkdir(exist_ok=True)
        self.ca = CA(self.workdir, "prosody test CA")
        self.cert, self.key = _server_cert(self.ca, self.workdir)
        self.config = self.workdir / "prosody.cfg.lua"
        self.log = self.workdir / "prosody.log"
        self.pidfile = self.workdir / "prosody.pid"
        self._write_config()

    def _write_config(self) -> None:
        # offline: a chat message to a peer that is not online is stored, not bounced
        modules = ["roster", "saslauth", "tls", "disco", "ping", "posix", "offline"]
        if self.limits is not None:
            modules.append("limits")
        if self.allow_registration:
            modules.append("register")
        modules.extend(self.community)
        if self.firewall is not None:
            modules.append("firewall")
        settings: dict[str, object] = {
            "run_as_root": True,  # CI and this machine run tests as root
            "pidfile": str(self.pidfile),
            "data_path": str(self.data),
            "interfaces": ["127.0.0.1"],
            "c2s_ports": [self.c2s_port],
            "c2s_direct_tls_ports": [self.tls_port],
            "c2s_require_encryption": True,
            "allow_unencrypted_plain_auth": False,
            "authentication": "internal_hashed",
            "storage": "internal",
            "modules_enabled": modules,
            "modules_disabled": ["s2s"],
            "s2s_ports": [],
            "component_ports": [],
            "http_ports": [],
            "https_ports": [],
            "allow_registration": self.allow_registration,
            "certificates": str(self.workdir),
            "ssl": {"certificate": str(self.cert), "key": str(self.key)},
            "log": {"info": str(self.log)},
            **self.extra,
        }
        if self.limits is not None:
            settings["limits"] = self.limits
        if self.firewall is not None:
            script = self.workdir / "firewall.pfw"
            script.write_text(self.firewall)
            settings["firewall_scripts"] = [str(script)]
        lines = [f"{key} = {_lua(value)}" for key, value in settings.items()]
        lines.append(f"VirtualHost {_lua(DOMAIN)}")
        lines.append(f"Component {_lua(MUC)} {_lua('muc')}")
        lines.append("    restrict_room_creation = false")
        self.config.write_text("\n".join(lines) + "\n")

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["prosodyctl", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def register(self, user: str, password: str) -> None:
        done = self.prosodyctl("register", user, DOMAIN, password)
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user}: {done.stdout}{done.stderr}")

    def start(self) -> Prosody:
        require_prosody()
        for name in (*self.community, *(["firewall"] if self.firewall is not None else [])):
            require_community_module(name)
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "prosody.stderr").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited at start:\n{self.diagnostics()}")
            if self._listening(self.c2s_port) and self._listening(self.tls_port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"prosody did not listen within 30 s:\n{self.diagnostics()}")

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def diagnostics(self) -> str:
        parts = []
        for path in (self.workdir / "prosody.stderr", self.log):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def accounts(server: Prosody) -> Prosody:
    server.register("probe", PASSWORD)
    server.register("probe-peer", PEER_PASSWORD)
    return server


def section(server: Prosody, **extra: object) -> XmppSection:
    """The target section for this server's probe accounts and room."""
    return XmppSection.model_validate(
        {
            "jid": f"probe@{DOMAIN}",
            "password": Secret(PASSWORD, "env:XMPP_PASSWORD"),
            "host": "127.0.0.1",
            "port": server.c2s_port,
            "ca_file": str(server.ca.path),
            "peer_jid": f"probe-peer@{DOMAIN}",
            "peer_password": Secret(PEER_PASSWORD, "env:XMPP_PEER_PASSWORD"),
            "room": ROOM,
            **extra,
        }
    )


@pytest.fixture(scope="session", name="prosody")
def prosody_server(tmp_path_factory) -> Iterator[Prosody]:
    """A Prosody with the two probe accounts (made with prosodyctl) and the room (made by
    xmpp-setup's provisioning)."""
    require_prosody()
    server = accounts(Prosody(tmp_path_factory.mktemp("prosody")))
    server.start()
    try:
        setup = provision(section(server), "XMPP_PASSWORD", "XMPP_PEER_PASSWORD")
        assert setup.complete, setup
        yield server
    finally:
        server.stop()
