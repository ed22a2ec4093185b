"""The web config: real TLS (certificates made here) and bcrypt basic auth on the real daemon,
spoken to with httpx."""

from __future__ import annotations

import base64
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

from prober.expose.webconfig import WebConfigFile, load_web_config, parse_basic

from .certs import CA, peer_serial
from .chat_app import free_port
from .conftest import BASE_TARGET
from .daemon_util import ROOT, Daemon

PASSWORD = "canary-web-password-3f9a1c"
COST = 10  # the usual exporter cost; a check takes ~0.1 s here


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def client_context(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.path))


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """One daemon with TLS and basic auth, health endpoints open."""
    folder = tmp_path_factory.mktemp("web")
    ca = CA(folder)
    ca.issue("server")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST)).decode()
    (folder / "web.yml").write_text(
        textwrap.dedent(f"""\
        tls_server_config:
          cert_file: server.crt
          key_file: server.key
        basic_auth_users:
          prometheus: {hashed}
        open_health_endpoints: true
        """)
    )
    config = folder / "config.yaml"
    config.write_text(
        "ledger: {path: ledger.sqlite3}\nweb: {config_file: web.yml, enable_lifecycle: true}\n"
        "targets:\n" + BASE_TARGET
    )
    daemon = Daemon(
        config,
        free_port(),
        tls=client_context(ca),
        headers=basic("prometheus", PASSWORD),
    ).start()
    yield daemon, ca, folder
    daemon.stop()


def test_metrics_need_the_password_health_stays_open(secured):
    daemon, ca, _ = secured
    with httpx.Client(verify=client_context(ca), timeout=10) as client:
        anonymous = client.get(daemon.url + "/metrics")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Basic ")
        assert client.get(daemon.url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
        assert client.get(daemon.url + "/metrics", auth=("nobody", PASSWORD)).status_code == 401
        assert client.get(daemon.url + "/metrics", auth=("prometheus", "")).status_code == 401
        assert (
            client.get(daemon.url + "/metrics", headers={"Authorization": "Basic !!!"}).status_code
            == 401
        )
        ok = client.get(daemon.url + "/metrics", auth=("prometheus", PASSWORD))
        assert ok.status_code == 200
        assert "im_minute_verdicts_total" in ok.text
        # Cached after the first bcrypt check: the second scrape must work the same.
        assert client.get(daemon.url + "/metrics", auth=("prometheus", PASSWORD)).status_code == 200
        assert client.get(daemon.url + "/healthz").status_code == 200
        assert client.get(daemon.url + "/readyz").status_code in (200, 503)
        assert client.post(daemon.url + "/-/reload").status_code == 401
        assert client.get(daemon.url + "/").status_code == 401


def test_plain_http_and_unknown_ca_are_refused(secured):
    daemon, _, folder = secured
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{daemon.port}/healthz", timeout=5)
    other = CA(folder / "..", name="some other CA")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(daemon.url + "/healthz", verify=client_context(other), timeout=5)


def test_wrong_password_and_unknown_user_take_as_long(secured):
    """Both pay one bcrypt check: an unknown user is checked against a dummy hash of the
    same cost, so response times do not tell which user names exist."""
    daemon, ca, _ = secured

    def timed(user: str, password: str) -> float:
        started = time.perf_counter()
        response = client.get(daemon.url + "/metrics", auth=(user, password))
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        return elapsed

    with httpx.Client(verify=client_context(ca), timeout=10) as client:
        client.get(daemon.url + "/healthz")  # warm connection
        known = [timed("prometheus", f"wrong-{i}") for i in range(7)]
        unknown = [timed(f"ghost-{i}", f"wrong-{i}") for i in range(7)]
    ratio = statistics.median(unknown) / statistics.median(known)
    # Both are dominated by one bcrypt check (~0.1 s); a skipped check would be ~100x faster.
    assert statistics.median(known) > 0.02
    assert 0.5 < ratio < 2, (known, unknown)


def test_the_password_never_reaches_the_log(secured):
    daemon, ca, _ = secured
    httpx.get(daemon.url + "/metrics", auth=("prometheus", PASSWORD), verify=client_context(ca))
    httpx.get(daemon.url + "/metrics", auth=(PASSWORD, PASSWORD), verify=client_context(ca))
    log = daemon.log.read_text()
    assert "listening" in log and "tls=true" in log.lower().replace(" ", "")
    assert PASSWORD not in log
    assert base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode() not in log


def test_reload_rotates_the_certificate(secured):
    daemon, ca, _ = secured

    def served_serial() -> int:
        with (
            socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as raw,
            client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return peer_serial(der)

    before = served_serial()
    rotated = ca.issue("server")  # overwrites server.crt/server.key in place
    assert rotated.serial != before
    assert daemon.post("/-/reload")[0] == 200
    assert served_serial() == rotated.serial


def test_client_certificates_when_a_client_ca_is_set(tmp_path):
    ca = CA(tmp_path)
    ca.issue("server")
    client_leaf = ca.issue("scraper", client=True)
    (tmp_path / "web.yml").write_text(
        "tls_server_config: {cert_file: server.crt, key_file: server.key, "
        f"client_ca_file: {ca.path.name}, min_version: TLS13}}\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("ledger: {path: ledger.sqlite3}\ntargets:\n" + BASE_TARGET)
    with_cert = client_context(ca)
    with_cert.load_cert_chain(client_leaf.cert, client_leaf.key)
    daemon = Daemon(
        config, free_port(), args=("--web.config.file", str(tmp_path / "web.yml")), tls=with_cert
    ).start()
    try:
        assert httpx.get(daemon.url + "/metrics", verify=with_cert).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(daemon.url + "/metrics", verify=client_context(ca), timeout=5)
        tls12 = client_context(ca)
        tls12.load_cert_chain(client_leaf.cert, client_leaf.key)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(httpx.ConnectError):
            httpx.get(daemon.url + "/metrics", verify=tls12, timeout=5)
    finally:
        daemon.stop()


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prober", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
    )


def test_hash_password_makes_a_hash_the_daemon_accepts(tmp_path):
    result = run_cli("hash-password", "--cost", "10", stdin="s3cret-pw\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert "s3cret-pw" not in result.stdout
    assert bcrypt.checkpw(b"s3cret-pw", hashed.encode())
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  ops: {hashed}\n")
    assert load_web_config(path).auth_required


def test_a_plain_password_in_the_web_config_is_refused_without_echo(tmp_path, demo_config):
    web = tmp_path / "web.yml"
    web.write_text("open_health_endpoints: true\nbasic_auth_users:\n  ops: hunter2-plain\n")
    result = run_cli("check-config", "-c", str(demo_config), "--web.config.file", str(web))
    assert result.returncode == 2
    assert f"{web}:3: basic_auth_users.ops: " in result.stderr
    assert "hash-password" in result.stderr
    assert "hunter2-plain" not in result.stderr + result.stdout


def test_web_config_errors_name_file_line_and_field(tmp_path, demo_config):
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  keyfile: x.key\n")
    result = run_cli("check-config", "-c", str(demo_config), "--web.config.file", str(web))
    assert result.returncode == 2
    assert f"{web}:3: tls_server_config.keyfile: unknown key" in result.stderr
    assert "tls_server_config.key_file: required key is missing" in result.stderr
    web.write_text("tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n")
    result = run_cli("check-config", "-c", str(demo_config), "--web.config.file", str(web))
    assert result.returncode == 2
    assert "cannot load cert_file" in result.stderr and "missing.crt" in result.stderr
    result = run_cli("run", "-c", str(demo_config), "--web.config.file", str(web))
    assert result.returncode == 2
    assert "cannot load cert_file" in result.stderr


def wait_for(condition, seconds: float = 30.0) -> None:
    """A reload loads the config in a child process: seconds on a busy machine."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "the reload did not take effect"
        time.sleep(0.1)


def test_turning_tls_on_needs_a_restart_and_a_bad_reload_keeps_the_old_settings(tmp_path):
    ca = CA(tmp_path)
    ca.issue("server")
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw-one", bcrypt.gensalt(COST)).decode()
    web.write_text(f"basic_auth_users: {{ops: '{hashed}'}}\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "ledger: {path: ledger.sqlite3}\nweb: {config_file: web.yml}\ntargets:\n" + BASE_TARGET
    )
    daemon = Daemon(config, free_port(), headers=basic("ops", "pw-one")).start()
    try:
        assert daemon.get("/metrics")[0] == 200
        web.write_text("tls_server_config: {cert_file: server.crt, key_file: server.key}\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "needs a restart" in daemon.log.read_text())
        assert daemon.get("/metrics")[0] == 200  # still plain HTTP with the old users
        hashed_two = bcrypt.hashpw(b"pw-two", bcrypt.gensalt(COST)).decode()
        web.write_text(f"basic_auth_users: {{ops: '{hashed_two}'}}\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.get("/metrics")[0] == 401)  # the old password no longer works
        assert daemon.get("/metrics", basic("ops", "pw-two"))[0] == 200
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Bearer abc", None),
        ("Basic " + base64.b64encode(b"u:p:q").decode(), ("u", b"p:q")),
        ("basic " + base64.b64encode(b"u:").decode(), ("u", b"")),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
        ("Basic not base64!", None),
    ],
)
def test_parse_basic(header, expected):
    assert parse_basic(header) == expected


def test_an_empty_web_config_means_plain_http_without_auth(tmp_path: Path):
    path = tmp_path / "web.yml"
    path.write_text("")
    security = load_web_config(path)
    assert security.tls is None and not security.auth_required
    assert security.is_open("/metrics")
    assert WebConfigFile().open_health_endpoints is False


def test_dev_zero_as_the_web_config_is_refused_not_read_forever(tmp_path: Path) -> None:
    from prober.errors import UserError
    from prober.expose.webconfig import load_web_config

    with pytest.raises(UserError, match="larger than 16 MiB"):
        load_web_config(Path("/dev/zero"))
