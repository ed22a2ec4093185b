"""RFC 3161 timestamps of evidence packs, against a time-stamping authority the test makes:
a CA and a TSA certificate (critical timeStamping usage) made here, and an HTTP server on
127.0.0.1 answering each query with Debian's `openssl ts -reply`. A pack made with it
verifies with the authority's CA and shows the time; without the CA it says the authority
was not checked; a token of another manifest, an edited SHA256SUMS (even re-signed) and an
altered token are caught; an authority that cannot be reached or gives no usable token
still leaves a pack, and the command says so."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from prober.config.models import ConfigError, load_config

from .certs import CA
from .cli_util import run
from .conftest import external_config
from .test_evidence_verify import START, Site, verify_elsewhere, write

TSA_NAME = "im-prober test TSA"


class Authority:
    """A time-stamping authority on 127.0.0.1: `openssl ts -reply` behind http.server.
    `mode` makes it misbehave: "refuse" (a TSA that takes only SHA-512 queries), "http500",
    "garbage", "replay" (the previous answer again)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ca = CA(folder, "im-prober test TSA root")
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TSA_NAME)]))
            .issuer_name(self.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
            .sign(self.ca.key, hashes.SHA256())
        )
        (folder / "tsa.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / "tsa.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / "serial").write_text("01\n")
        # No `certs =` line: the token carries the signer's certificate only. With the CA
        # too, openssl writes the certificate SET in chain order, not DER order, and
        # rfc3161-client refuses to read such a token (InvalidSetOrdering).
        section = f"""\
serial = {folder}/serial
crypto_device = builtin
signer_cert = {folder}/tsa.crt
signer_key = {folder}/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""
        (folder / "tsa.cnf").write_text(
            "[tsa]\ndefault_tsa = good\n"
            f"[good]\n{section}digests = sha256, sha384, sha512\n"
            f"[sha512_only]\n{section}digests = sha512\n"
        )
        self.mode = "good"
        self.queries = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsr"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        authority = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                query = self.rfile.read(min(length, 1 << 16))
                body = authority.answer(query, self.headers.get("Content-Type", ""))
                if body is None:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def answer(self, query: bytes, content_type: str) -> bytes | None:
        with self._lock:  # openssl's serial file is not shared safely
            self.queries += 1
            if self.mode == "http500" or content_type != "application/timestamp-query":
                return None
            if self.mode == "garbage":
                return b"<html>not a timestamp</html>"
            if self.mode == "replay":
                return (self.folder / "reply.tsr").read_bytes()
            section = "sha512_only" if self.mode == "refuse" else "good"
            (self.folder / "query.tsq").write_bytes(query)
            done = subprocess.run(
                ["openssl", "ts", "-reply", "-config", str(self.folder / "tsa.cnf"),
                 "-section", section, "-queryfile", str(self.folder / "query.tsq"),
                 "-out", str(self.folder / "reply.tsr")],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return (self.folder / "reply.tsr").read_bytes()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[Authority]:
    authority = Authority(tmp_path / "tsa")
    yield authority
    authority.close()


def stamped_site(root: Path, url: str, *, ca_file: Path | None = None, extra: str = "") -> Site:
    """A signed prober's folder with two hours of a month and evidence.timestamp_authority."""
    site = Site(root)
    settings = f"url: '{url}'" + ("" if ca_file is None else f", ca_file: '{ca_file}'") + extra
    text = site.config.read_text()
    signed = "evidence: {signing_key: {file: evidence.key}}"
    assert signed in text
    site.config.write_text(
        text.replace(signed, f"evidence: {{signing_key: {{file: evidence.key}}, "
                             f"timestamp_authority: {{{settings}}}}}")
    )  # fmt: skip
    write(site.ledger, range(START, START + 120))
    return site


def make_pack(site: Site, capsys, name: str, now: str = "2026-11-01T02:00:00Z"):
    out = site.root / name
    code, stdout, stderr = run(
        capsys, "evidence", "-c", str(site.config), "--target", "box", "--month", "2026-11",
        "--out", str(out), "--now", now,
    )  # fmt: skip
    return code, stdout, stderr, out


def verify(capsys, pack: Path, *args: str) -> tuple[int, str]:
    code, out, err = run(capsys, "evidence", "verify", str(pack), *args)
    assert "Traceback" not in err
    return code, out + err


def test_a_timestamped_pack_verifies_with_the_authoritys_ca_and_shows_the_time(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    site = stamped_site(tmp_path / "prober", tsa.url, ca_file=tsa.ca.path)
    before = datetime.now(UTC).replace(microsecond=0)
    code, out, err, pack = make_pack(site, capsys, "pack")
    after = datetime.now(UTC)
    assert (code, err) == (0, ""), err
    assert tsa.queries == 1
    said = re.search(r"timestamped: SHA256SUMS existed at (\S+) by CN=im-prober test TSA", out)
    assert said is not None, out
    stamped = datetime.fromisoformat(said.group(1))
    assert before - dt.timedelta(seconds=1) <= stamped <= after + dt.timedelta(seconds=1)
    assert json.loads((pack / "summary.json").read_text())["timestamp"] == {
        "authority": tsa.url,
        "token": "SHA256SUMS.tsr",
    }

    code, out = verify_elsewhere(
        pack, tmp_path, "--key", str(site.public_key), "--tsa-ca", str(tsa.ca.path)
    )
    assert code == 0, out
    assert (
        f"proved: SHA256SUMS existed at {said.group(1)} by CN={TSA_NAME} (its token signed "
        f"under {tsa.ca.path.name})"
    ) in out
    # the token is not listed in SHA256SUMS (it covers it), and is not taken for an added file
    assert "proved: every file is listed in SHA256SUMS and matches its checksum (12 files)" in out
    assert out.rstrip().endswith("result: everything checked holds")

    # and anyone can check it with openssl alone
    checked = subprocess.run(
        ["openssl", "ts", "-verify", "-data", "SHA256SUMS", "-in", "SHA256SUMS.tsr",
         "-CAfile", str(tsa.ca.path)],
        cwd=pack, capture_output=True, text=True,
    )  # fmt: skip
    assert "Verification: OK" in checked.stdout, checked.stdout + checked.stderr


def test_without_the_ca_the_time_is_shown_but_its_authority_is_not_checked(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    site = stamped_site(tmp_path / "prober", tsa.url)  # no ca_file: taken as it comes
    code, _, err, pack = make_pack(site, capsys, "pack")
    assert (code, err) == (0, ""), err
    code, out = verify(capsys, pack, "--key", str(site.public_key))
    assert code == 0, out  # nothing broken, and signed
    assert re.search(
        r"not proved: timestamp present but its authority not checked: the token says "
        rf"SHA256SUMS existed at 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ by CN={TSA_NAME}; give "
        r"--tsa-ca FILE",
        out,
    ), out

    # a CA that did not issue the TSA's certificate
    other = CA(tmp_path, "some other root")
    code, out = verify(capsys, pack, "--tsa-ca", str(other.path))
    assert code == 1, out
    assert (
        "BROKEN: the timestamp SHA256SUMS.tsr does not hold: it is not signed by an authority "
        "some-other-root.crt vouches for (unable to get local issuer certificate)"
    ) in out


def test_a_token_of_another_manifest_or_an_edited_manifest_is_caught(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    site = stamped_site(tmp_path / "prober", tsa.url, ca_file=tsa.ca.path)
    packs = []
    for name, now in (("first", "2026-11-01T01:00:00Z"), ("second", "2026-11-01T02:00:00Z")):
        code, _, err, pack = make_pack(site, capsys, name, now)
        assert (code, err) == (0, ""), err
        packs.append(pack)
    first, second = packs
    ca = ("--tsa-ca", str(tsa.ca.path))
    caught = "BROKEN: the timestamp SHA256SUMS.tsr does not hold: it covers another manifest"

    # the second pack's token put in the first: with or without the CA
    swapped = tmp_path / "swapped"
    shutil.copytree(first, swapped)
    shutil.copy(second / "SHA256SUMS.tsr", swapped / "SHA256SUMS.tsr")
    for args in ((), ca):
        code, out = verify(capsys, swapped, *args)
        assert code == 1 and caught in out, out
        assert "proved: signed by key" in out  # only the timestamp is wrong

    # the key's holder changes a file, lists its new sum and signs SHA256SUMS again: the
    # signature holds, the token does not
    edited = tmp_path / "edited"
    shutil.copytree(first, edited)
    with (edited / "report.txt").open("a") as handle:
        handle.write("an afterthought\n")
    new = subprocess.run(
        ["sha256sum", "report.txt"], cwd=edited, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    sums = "".join(
        f"{new}  report.txt\n" if line.endswith("  report.txt") else line + "\n"
        for line in (edited / "SHA256SUMS").read_text().splitlines()
    )
    (edited / "SHA256SUMS").write_text(sums)
    private = load_pem_private_key((site.root / "evidence.key").read_bytes(), None)
    (edited / "SHA256SUMS.sig").write_bytes(private.sign(sums.encode()))  # type: ignore[union-attr]
    code, out = verify(capsys, edited, "--key", str(site.public_key), *ca)
    assert code == 1, out
    assert "proved: every file is listed in SHA256SUMS and matches its checksum" in out
    assert "proved: signed by key" in out
    assert caught in out
    assert "SHA256SUMS was changed after it was timestamped" in out


def test_an_altered_token_is_caught_by_its_signature(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    site = stamped_site(tmp_path / "prober", tsa.url, ca_file=tsa.ca.path)
    code, _, err, pack = make_pack(site, capsys, "pack")
    assert (code, err) == (0, ""), err
    token = (pack / "SHA256SUMS.tsr").read_bytes()
    # move the stated time by ten minutes (the certificates still valid then): the token
    # still reads, its signature no longer holds
    match = re.search(rb"\x18\x0f(\d{10})(\d)(\d{3})Z", token)  # the genTime
    assert match is not None
    tens = str((int(match.group(2)) + 1) % 6).encode()
    altered = token[: match.start(2)] + tens + token[match.end(2) :]
    (pack / "SHA256SUMS.tsr").write_bytes(altered)
    code, out = verify(capsys, pack)
    stated = datetime.strptime((match.group(1) + tens + match.group(3)).decode(), "%Y%m%d%H%M%S")
    assert f"the token says SHA256SUMS existed at {stated:%Y-%m-%dT%H:%M:%S}Z" in out  # unchecked
    code, out = verify(capsys, pack, "--tsa-ca", str(tsa.ca.path))
    assert code == 1, out
    assert (
        "BROKEN: the timestamp SHA256SUMS.tsr does not hold: its signature does not hold: the "
        "token was changed after the authority signed it"
    ) in out

    (pack / "SHA256SUMS.tsr").write_bytes(b"\x30\x03\x02\x01\x00")
    code, out = verify(capsys, pack)
    assert code == 1, out
    assert "BROKEN: the timestamp SHA256SUMS.tsr does not hold: it is not a timestamp token" in out

    # a reader who asks for a timestamp and gets a pack without one
    (pack / "SHA256SUMS.tsr").unlink()
    code, out = verify(capsys, pack, "--tsa-ca", str(tsa.ca.path))
    assert code == 1 and "BROKEN: the pack holds no timestamp (SHA256SUMS.tsr)" in out, out


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_authority_that_cannot_be_reached_leaves_the_pack_made_and_says_so(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    url = f"http://127.0.0.1:{unused_port()}/tsr"
    site = stamped_site(tmp_path / "prober", url)
    code, out, err, pack = make_pack(site, capsys, "pack")
    assert code == 1
    assert f"not timestamped: {url} could not be reached: Connection refused" in err
    assert "the pack is made without SHA256SUMS.tsr" in err
    assert "signed by key" in out
    assert not (pack / "SHA256SUMS.tsr").exists()
    assert json.loads((pack / "summary.json").read_text())["timestamp"]["authority"] == url
    code, out = verify(capsys, pack, "--key", str(site.public_key))
    assert code == 0, out  # a signed pack all the same
    assert f"not proved: the pack was to be timestamped by {url} but holds no token" in out

    # one that takes the connection and never answers: given up at the timeout
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/tsr"
        slow = stamped_site(tmp_path / "slow", url, extra=", timeout: 1s")
        code, _, err, _ = make_pack(slow, capsys, "pack")
    finally:
        silent.close()
    assert code == 1 and f"not timestamped: {url} did not answer within 1s" in err, err


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("refuse", "refused the request (status rejection"),
        ("http500", "answered HTTP 500"),
        ("garbage", "answered with something that is not a timestamp response"),
    ],
)
def test_an_authority_that_gives_no_usable_token_leaves_the_pack_unstamped(
    tsa: Authority, tmp_path: Path, capsys, mode: str, said: str
) -> None:
    tsa.mode = mode
    site = stamped_site(tmp_path / "prober", tsa.url)
    code, _, err, pack = make_pack(site, capsys, "pack")
    assert code == 1 and f"not timestamped: {tsa.url} {said}" in err, err
    assert tsa.queries == 1
    assert not (pack / "SHA256SUMS.tsr").exists()


def test_an_answer_replayed_from_an_earlier_request_is_not_kept(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    site = stamped_site(tmp_path / "prober", tsa.url, ca_file=tsa.ca.path)
    code, _, err, _ = make_pack(site, capsys, "first")
    assert (code, err) == (0, ""), err
    tsa.mode = "replay"  # a valid token, signed under the CA, of the first pack's request
    code, _, err, pack = make_pack(site, capsys, "second")
    assert code == 1
    assert f"not timestamped: {tsa.url} answered another request (the nonce differs)" in err
    assert not (pack / "SHA256SUMS.tsr").exists()


def test_a_token_not_signed_under_the_configured_ca_is_not_kept(
    tsa: Authority, tmp_path: Path, capsys
) -> None:
    other = CA(tmp_path, "stranger root")
    site = stamped_site(tmp_path / "prober", tsa.url, ca_file=other.path)
    code, _, err, pack = make_pack(site, capsys, "pack")
    assert code == 1
    assert (
        f"not timestamped: {tsa.url} answered with a token that does not hold: it is not "
        "signed by an authority stranger-root.crt vouches for"
    ) in err
    assert not (pack / "SHA256SUMS.tsr").exists()


def test_the_authority_setting_is_checked_with_file_and_line(
    tsa: Authority, tmp_path: Path, capsys, write_config
) -> None:
    base = external_config()
    for setting, problem in [
        ("{url: 'ftp://tsa.test/'}", "url: must be an http:// or https:// URL with a host"),
        ("{url: 'http://me:pw@tsa.test/'}", "url: no credentials in the URL"),
        ("{url: 'http://tsa.test/', timeout: 0.5s}", "timeout:"),
        ("{url: 'http://tsa.test/', nonce: true}", "nonce:"),
        ("{ca_file: ca.pem}", "url:"),
    ]:
        path = write_config(f"evidence:\n  timestamp_authority: {setting}\n" + base)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        text = str(info.value)
        assert f"{path}:2: evidence.timestamp_authority." in text and problem in text, text

    # the CA file is read before the pack is made: missing, or not certificates
    for number, (content, problem) in enumerate(
        [(None, "cannot read"), ("not a certificate\n", "holds no PEM certificate")]
    ):
        ca = tmp_path / "tsa-ca.pem"
        ca.unlink(missing_ok=True)
        if content is not None:
            ca.write_text(content)
        site = stamped_site(tmp_path / f"site-{number}", tsa.url, ca_file=ca)
        code, _, err, pack = make_pack(site, capsys, "pack")
        assert code == 2 and "evidence.timestamp_authority.ca_file" in err and problem in err, err
        assert not pack.exists() and tsa.queries == 0
    code, _, err = run(capsys, "evidence", "verify", str(tmp_path), "--tsa-ca", str(ca))
    assert code == 2 and "holds no PEM certificate" in err, err
