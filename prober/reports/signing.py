"""Ed25519 signatures: the key that signs evidence packs and ledger checkpoints, its public
half's fingerprint, and the signed checkpoint document.

A fingerprint is `SHA256:` and the hex SHA-256 of the public key's DER form
(SubjectPublicKeyInfo), so anyone can recompute it without this program:
`openssl pkey -pubin -in key.pub -outform DER | sha256sum`. A pack's signature is the raw
64-byte Ed25519 signature of its SHA256SUMS file, which `openssl pkeyutl -verify -rawin`
checks as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .. import __version__
from ..config.models import ConfigFile
from ..config.secrets import Secret, resolve_references
from ..errors import UserError
from ..ledger.store import Ledger

# A PEM public key is about 113 bytes; anything much larger is not one.
MAX_PUBLIC_KEY_BYTES = 16 << 10
# A checkpoint holds one head per chain (a few hundred bytes each): thousands of series fit.
MAX_CHECKPOINT_BYTES = 8 << 20
CHECKPOINT_SCHEMA = "im-prober-checkpoint/1"
CHECKPOINT_REASONS = ("daily", "month_end", "manual")
HEAD_TABLES = ("minutes", "vantage_minutes", "attempts", "network_rounds")


def fingerprint_of(key: Ed25519PublicKey) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey

    @property
    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.key)

    def verifies(self, signature: bytes, data: bytes) -> bool:
        try:
            self.key.verify(signature, data)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """The private key. Never printed: repr() names its public fingerprint only."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = PublicKey(key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"<signing key {self.public.fingerprint}>"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a signing key is not to be pickled")


def _private_from_pem(text: str, where: str) -> SigningKey:
    # The messages never quote the text: it is the secret.
    try:
        key = serialization.load_pem_private_key(text.encode("utf-8"), password=None)
    except TypeError:
        raise UserError(f"{where}: the private key is encrypted; give an unencrypted one") from None
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(
            f"{where}: not a PEM private key (make one with `im-prober keygen KEYFILE`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{where}: not an Ed25519 key (make one with `im-prober keygen KEYFILE`)")
    return SigningKey(key)


def public_key_from_pem(data: bytes, where: str) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise UserError(f"{where}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{where}: not an Ed25519 public key")
    return PublicKey(key)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """A regular file's bytes, at most `limit` (a FIFO or /dev/zero must not hang or fill
    memory)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"{path}: the {what} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UserError(f"{path}: the {what} is larger than {limit >> 10} KiB")
    return data


def load_public_key(path: Path) -> PublicKey:
    return public_key_from_pem(read_bounded(path, MAX_PUBLIC_KEY_BYTES, "public key"), str(path))


def resolved(secret: Secret, base_dir: Path, field: str) -> Secret:
    """The secret with its value: commands that load the config without reading secrets
    (evidence, ledger checkpoint) read just the ones they use, through the same loader."""
    try:
        secret.reveal()
        return secret
    except RuntimeError:
        pass
    kind, _, name = secret.source.partition(":")
    found, problems = resolve_references({kind: name}, base_dir)
    if problems:
        raise UserError(f"{field}: {problems[0][1]}")
    assert isinstance(found, Secret)
    return found


def signing_key(config: ConfigFile) -> SigningKey | None:
    """The configured `evidence.signing_key`, or None when none is configured."""
    secret = config.config.evidence.signing_key
    if secret is None:
        return None
    value = resolved(secret, config.path.parent, "evidence.signing_key").reveal()
    return _private_from_pem(value, f"{config.path}: evidence.signing_key ({secret.source})")


def generate_key_pair(private_path: Path) -> tuple[Path, PublicKey]:
    """A new key: the private half in `private_path` (mode 0600), the public half beside it
    as `<name>.pub`. Existing files are never overwritten."""
    public_path = private_path.with_name(private_path.name + ".pub")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = PublicKey(key.public_key())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    written: list[Path] = []
    try:
        for path, data, mode in (
            (private_path, private_pem, 0o600),
            (public_path, public.pem.encode("ascii"), 0o644),
        ):
            with os.fdopen(os.open(path, flags, mode), "wb") as out:
                written.append(path)
                out.write(data)
    except OSError as exc:
        for path in written:  # never half a key pair
            path.unlink(missing_ok=True)
        hint = " (a key pair is never overwritten)" if isinstance(exc, FileExistsError) else ""
        raise UserError(
            f"{exc.filename or private_path}: cannot write: {exc.strerror or exc}{hint}"
        ) from None
    return public_path, public


# -- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadRecord:
    """One chain's newest row as a checkpoint states it."""

    table: str
    target: str
    probe: str
    vantage: str
    seq: int
    hash: bytes

    @property
    def name(self) -> str:
        parts = [self.table, self.target, self.probe, self.vantage]
        return "/".join(p for p in parts if p)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose signature holds (with the key it carries)."""

    time: datetime
    reason: str
    vantage: str
    prober_version: str
    config_sha256: str
    heads: tuple[HeadRecord, ...]
    public_key: PublicKey
    text: str  # the document as stored

    @property
    def time_iso(self) -> str:
        return iso_minute_z(self.time)

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint


def iso_z(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_minute_z(instant: datetime) -> str:
    """2026-11-30T00:05Z, or with seconds when it has them: how sentences name a time."""
    text = iso_z(instant)
    return text[:-4] + "Z" if text.endswith(":00Z") else text


def canonical(body: dict[str, Any]) -> bytes:
    """What is signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def make_checkpoint(
    key: SigningKey,
    heads: list[HeadRecord],
    *,
    time: datetime,
    reason: str,
    vantage: str,
    prober_version: str,
    config_sha256: str,
) -> str:
    """The signed checkpoint document (JSON text, one key per line for people)."""
    assert reason in CHECKPOINT_REASONS
    body: dict[str, Any] = {
        "schema": CHECKPOINT_SCHEMA,
        "time": iso_z(time),
        "reason": reason,
        "vantage": vantage,
        "prober_version": prober_version,
        "config_sha256": config_sha256,
        "heads": [
            {
                "table": h.table,
                "target": h.target,
                "probe": h.probe,
                "vantage": h.vantage,
                "seq": h.seq,
                "hash": h.hash.hex(),
            }
            for h in sorted(heads, key=lambda h: (h.table, h.target, h.probe, h.vantage))
        ],
        "public_key": key.public.pem,
        "key_fingerprint": key.public.fingerprint,
    }
    body["signature"] = base64.b64encode(key.sign(canonical(body))).decode("ascii")
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


class CheckpointError(ValueError):
    """A checkpoint that is malformed or whose signature does not hold: what is wrong, in
    words."""


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(f"field {name!r} is missing or not a {kind.__name__}")
    return value


def _head(item: Any, index: int) -> HeadRecord:
    if not isinstance(item, dict):
        raise CheckpointError(f"heads[{index}] is not an object")
    try:
        names = [_field(item, k, str) for k in ("table", "target", "probe", "vantage")]
        seq = _field(item, "seq", int)
        digest = bytes.fromhex(_field(item, "hash", str))
    except CheckpointError as exc:
        raise CheckpointError(f"heads[{index}]: {exc}") from None
    except ValueError:
        raise CheckpointError(f"heads[{index}]: hash is not hex") from None
    if names[0] not in HEAD_TABLES or seq < 1 or len(digest) != 32:
        raise CheckpointError(f"heads[{index}]: not a chain head (table, seq >= 1, 32-byte hash)")
    return HeadRecord(names[0], names[1], names[2], names[3], seq, digest)


def read_checkpoint(text: str, trusted: PublicKey | None = None) -> Checkpoint:
    """Parse a checkpoint and check its signature with the key it carries, and that this key
    is `trusted` when one is given. Raises CheckpointError saying what does not hold."""
    if len(text) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"larger than {MAX_CHECKPOINT_BYTES >> 20} MiB")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError("not JSON") from None
    if not isinstance(body, dict):
        raise CheckpointError("not a JSON object")
    if body.get("schema") != CHECKPOINT_SCHEMA:
        raise CheckpointError(f"not a checkpoint (schema is not {CHECKPOINT_SCHEMA})")
    signature_text = _field(body, "signature", str)
    try:
        signature = base64.b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("the signature is not base64") from None
    try:
        public = public_key_from_pem(_field(body, "public_key", str).encode("ascii"), "key")
    except (UserError, UnicodeEncodeError):
        raise CheckpointError("its public_key is not an Ed25519 public key in PEM") from None
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    if _field(body, "key_fingerprint", str) != public.fingerprint:
        raise CheckpointError("its key_fingerprint is not the fingerprint of its public_key")
    if not public.verifies(signature, canonical(unsigned)):
        raise CheckpointError(
            f"the signature does not hold: the checkpoint was changed after {public.fingerprint} "
            "signed it, or another key made the signature"
        )
    if trusted is not None and trusted.fingerprint != public.fingerprint:
        raise CheckpointError(
            f"signed by {public.fingerprint}, not by the key you trust ({trusted.fingerprint})"
        )
    try:
        when = datetime.fromisoformat(_field(body, "time", str).replace("Z", "+00:00"))
    except ValueError:
        raise CheckpointError("its time is not an ISO-8601 instant") from None
    if when.tzinfo is None:
        raise CheckpointError("its time has no UTC offset")
    heads = _field(body, "heads", list)
    return Checkpoint(
        time=when,
        reason=_field(body, "reason", str),
        vantage=_field(body, "vantage", str),
        prober_version=_field(body, "prober_version", str),
        config_sha256=_field(body, "config_sha256", str),
        heads=tuple(_head(item, i) for i, item in enumerate(heads)),
        public_key=public,
        text=text,
    )


def checkpoint_of(
    ledger: Ledger,
    config: ConfigFile,
    reason: str,
    now: datetime,
    key: SigningKey | None = None,
) -> str:
    """A signed checkpoint of every chain's head in `ledger` now, signed with `key` (default:
    the configured one)."""
    from ..ledger import chain

    key = key or signing_key(config)
    if key is None:
        raise UserError(
            f"{config.path}: set evidence.signing_key to sign checkpoints "
            "(im-prober keygen KEYFILE makes a key)"
        )

    heads = [
        HeadRecord(h.key.table, h.key.target, h.key.probe, h.key.vantage, h.seq, h.hash)
        for h in chain.heads(ledger)
    ]
    return make_checkpoint(
        key,
        heads,
        time=now,
        reason=reason,
        vantage=config.vantage,
        prober_version=__version__,
        config_sha256=config.digest,
    )


def load_checkpoints(paths: list[Path], trusted: PublicKey | None) -> list[Checkpoint]:
    """The checkpoint files a reader gives (`ledger verify --checkpoint`), each signature
    checked (by `trusted` when given); any that does not hold is one clear error."""
    found = []
    for path in paths:
        text = read_bounded(path, MAX_CHECKPOINT_BYTES, "checkpoint")
        try:
            found.append(read_checkpoint(text.decode("utf-8", "replace"), trusted))
        except CheckpointError as exc:
            raise UserError(f"{path}: not a valid checkpoint: {exc}") from None
    return found


def chain_heads(checkpoint: Checkpoint) -> list[Any]:
    """The checkpoint's heads as the ledger's chain module takes them."""
    from ..ledger.chain import ChainKey, Head

    return [
        Head(ChainKey(h.table, h.target, h.probe, h.vantage), h.seq, h.hash)
        for h in checkpoint.heads
    ]
