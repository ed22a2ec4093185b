"""The signing key (made by `keygen`, loaded from a secret reference), its fingerprint, and
signed checkpoints: a changed byte, another key or a forged fingerprint is caught, and the
private key never shows in a message."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from prober.config.models import load_config
from prober.errors import UserError
from prober.reports.signing import (
    CheckpointError,
    HeadRecord,
    canonical,
    generate_key_pair,
    load_public_key,
    make_checkpoint,
    read_checkpoint,
    signing_key,
)

from .cli_util import run
from .conftest import external_config

HEADS = [
    HeadRecord("minutes", "box", "", "", 1440, bytes(range(32))),
    HeadRecord("attempts", "box", "login", "here", 5_000, bytes(32)),
]
WHEN = datetime(2026, 11, 30, 0, 5, tzinfo=UTC)


def keyed_config(tmp_path: Path, key: str = "keys/evidence.key") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(external_config() + f"evidence: {{signing_key: {{file: {key}}}}}\n")
    return path


def checkpoint(key_path: Path, config: Path) -> str:
    key = signing_key(load_config(config, resolve_secrets=False))
    assert key is not None
    return make_checkpoint(
        key,
        HEADS,
        time=WHEN,
        reason="daily",
        vantage="here",
        prober_version="1.0",
        config_sha256="ab" * 32,
    )


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path, capsys
) -> None:
    key = tmp_path / "evidence.key"
    code, out, err = run(capsys, "keygen", str(key))
    assert (code, err) == (0, "")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = load_public_key(tmp_path / "evidence.key.pub")
    assert f"fingerprint {public.fingerprint}" in out
    assert f"evidence: {{signing_key: {{file: {key}}}}}" in out
    before = key.read_bytes()
    code, _, err = run(capsys, "keygen", str(key))
    assert code == 2 and "never overwritten" in err
    assert key.read_bytes() == before


def test_the_fingerprint_is_what_openssl_computes_from_the_public_key(tmp_path: Path) -> None:
    public_path, public = generate_key_pair(tmp_path / "k")
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(public_path), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert public.fingerprint == "SHA256:" + hashlib.sha256(der).hexdigest()


def test_the_key_is_read_from_its_secret_reference_even_where_other_secrets_are_not(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    _, public = generate_key_pair(tmp_path / "keys" / "evidence.key")
    config = keyed_config(tmp_path)
    # the commands that make packs load the config without reading secrets
    key = signing_key(load_config(config, resolve_secrets=False))
    assert key is not None and key.public.fingerprint == public.fingerprint
    private = (tmp_path / "keys" / "evidence.key").read_text().strip()
    assert private not in repr(key) and public.fingerprint in repr(key)


def test_a_key_that_is_not_an_ed25519_private_key_is_refused_without_quoting_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cases = {
        "ec.key": (other, "not an Ed25519 key"),
        "garbage.key": (b"hunter2-is-my-password\n", "not a PEM private key"),
        "public.key": (None, "not a PEM private key"),
    }
    generate_key_pair(tmp_path / "keys" / "pair")
    for name, (data, expected) in cases.items():
        path = tmp_path / "keys" / name
        if data is None:
            path.write_bytes((tmp_path / "keys" / "pair.pub").read_bytes())
        else:
            path.write_bytes(data)
        config = keyed_config(tmp_path, f"keys/{name}")
        with pytest.raises(UserError) as caught:
            signing_key(load_config(config, resolve_secrets=False))
        message = str(caught.value)
        assert f"evidence.signing_key (file:keys/{name}): {expected}" in message, message
        assert "hunter2" not in message and "BEGIN" not in message
    config = keyed_config(tmp_path, "keys/missing.key")
    with pytest.raises(UserError, match=r"missing\.key cannot be read"):
        signing_key(load_config(config, resolve_secrets=False))


def test_an_encrypted_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "evidence.key").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    with pytest.raises(UserError, match="encrypted; give an unencrypted one"):
        signing_key(load_config(keyed_config(tmp_path), resolve_secrets=False))


def test_a_checkpoint_carries_every_head_and_its_signature_holds(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    public_path, public = generate_key_pair(tmp_path / "keys" / "evidence.key")
    text = checkpoint(public_path, keyed_config(tmp_path))
    found = read_checkpoint(text, trusted=load_public_key(public_path))
    assert found.heads == tuple(sorted(HEADS, key=lambda h: h.table))
    assert found.time == WHEN and found.time_iso == "2026-11-30T00:05Z"
    assert (found.vantage, found.reason, found.fingerprint) == ("here", "daily", public.fingerprint)
    body = json.loads(text)
    assert body["key_fingerprint"] == public.fingerprint
    assert "PRIVATE" not in text


def test_a_changed_checkpoint_another_key_or_a_forged_fingerprint_is_caught(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    public_path, _ = generate_key_pair(tmp_path / "keys" / "evidence.key")
    _, stranger = generate_key_pair(tmp_path / "stranger.key")
    text = checkpoint(public_path, keyed_config(tmp_path))
    body = json.loads(text)

    changed = json.loads(text)
    changed["heads"][0]["seq"] += 1
    with pytest.raises(CheckpointError, match="the signature does not hold"):
        read_checkpoint(json.dumps(changed))
    # the document is fine, but not signed by the key the reader trusts
    with pytest.raises(CheckpointError, match="not by the key you trust"):
        read_checkpoint(text, trusted=stranger)
    # someone re-signs with their own key and claims the trusted fingerprint
    forged = dict(body, public_key=stranger.pem)
    with pytest.raises(CheckpointError, match="key_fingerprint is not the fingerprint"):
        read_checkpoint(json.dumps(forged))
    for bad, message in (
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
        (json.dumps(dict(body, schema="x")), "not a checkpoint"),
        (json.dumps(dict(body, signature="***")), "not base64"),
    ):
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(bad)
    # signed, but not what a checkpoint holds: named, never taken
    key = signing_key(load_config(keyed_config(tmp_path), resolve_secrets=False))
    assert key is not None
    for field, value, message in (
        ("heads", [{"table": "minutes"}], "heads\\[0\\]: field 'target' is missing"),
        ("heads", [dict(body["heads"][0], seq=0)], "heads\\[0\\]: not a chain head"),
        ("time", "yesterday", "time is not an ISO-8601 instant"),
    ):
        unsigned = {k: v for k, v in body.items() if k != "signature"} | {field: value}
        signature = base64.b64encode(key.sign(canonical(unsigned))).decode()
        with pytest.raises(CheckpointError, match=message):
            read_checkpoint(json.dumps(unsigned | {"signature": signature}))
