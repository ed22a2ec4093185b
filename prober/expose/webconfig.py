"""The web config file (`--web.config.file`): TLS for the HTTP endpoints and basic auth with
bcrypt-hashed passwords, in the shape Prometheus exporters use, so operators can reuse theirs.

    tls_server_config:
      cert_file: server.crt        # relative paths are taken from this file's folder
      key_file: server.key
      min_version: TLS12           # or TLS13
      client_ca_file: ca.crt       # optional: then clients must present a certificate
    basic_auth_users:
      prometheus: $2b$12$...       # `im-prober hash-password` prints one
    open_health_endpoints: true    # /healthz and /readyz without a password

Passwords are checked with bcrypt in a worker thread (a check costs ~0.1 s, which must not
delay attempts); an unknown user is checked against a dummy hash so that the answer takes as
long as for a known one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
import ssl
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Literal

import bcrypt
from pydantic import AfterValidator, Field

from ..config.fields import Strict
from ..config.models import validate_document
from ..config.yamlsource import YamlError, read_yaml_file
from ..errors import UserError

BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
HEALTH_PATHS = frozenset({"/healthz", "/readyz"})
_CACHE_SIZE = 64


def _bcrypt_hash(value: str) -> str:
    if not BCRYPT_HASH.match(value):
        # The value itself is not echoed: a pasted plain password must not reach logs.
        raise ValueError("not a bcrypt hash ($2b$...); make one with `im-prober hash-password`")
    return value


def _user_name(value: str) -> str:
    if not value or ":" in value:
        raise ValueError("a user name must be non-empty and without ':'")
    return value


BcryptHash = Annotated[str, AfterValidator(_bcrypt_hash)]
UserName = Annotated[str, AfterValidator(_user_name)]


class TLSServerConfig(Strict):
    cert_file: Path = Field(description="PEM certificate (chain) served to clients")
    key_file: Path = Field(description="PEM private key of cert_file")
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    client_ca_file: Path | None = Field(
        None, description="when set, clients must present a certificate signed by this CA"
    )


class WebConfigFile(Strict):
    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[UserName, BcryptHash] = Field(
        default_factory=dict, description="user name → bcrypt hash of the password"
    )
    open_health_endpoints: bool = Field(
        False, description="serve /healthz and /readyz without basic auth"
    )


class WebSecurity:
    """What the endpoints enforce: the TLS context (if any) and the basic-auth check."""

    def __init__(self, source: Path | None, settings: WebConfigFile) -> None:
        self.source = source
        self.settings = settings
        self.tls: ssl.SSLContext | None = None
        self._users = {u: h.encode() for u, h in settings.basic_auth_users.items()}
        # A hash of a password nobody has, at the users' highest cost: an unknown user's
        # check then takes as long as a known one's.
        cost = max((int(h[4:6]) for h in settings.basic_auth_users.values()), default=4)
        self._dummy = bcrypt.hashpw(secrets.token_hex(16).encode(), bcrypt.gensalt(cost))
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        # bcrypt runs in threads; at most two at once so a flood of guesses cannot take
        # every worker thread (or both cores) from the probes.
        self._bcrypt_slots = asyncio.Semaphore(2)

    @property
    def auth_required(self) -> bool:
        return bool(self._users)

    def is_open(self, path: str) -> bool:
        if not self._users:
            return True
        return self.settings.open_health_endpoints and path in HEALTH_PATHS

    async def authorized(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        key = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
        if hashed is not None and key in self._verified:
            self._verified.move_to_end(key)
            return True
        async with self._bcrypt_slots:
            ok = await asyncio.to_thread(_check, password, hashed or self._dummy)
        ok = ok and hashed is not None
        if ok:
            self._verified[key] = None
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        return ok


def _check(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def load_cert_chain(context: ssl.SSLContext, source: Path, tls: TLSServerConfig) -> None:
    """Load the configured certificate and key into `context` (also how a reload rotates
    them in the listener's context); an unreadable or mismatched pair is a clear error."""
    base = source.parent
    cert, key = _resolve(base, tls.cert_file), _resolve(base, tls.key_file)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(
            f"{source}: tls_server_config: cannot load cert_file {cert} with key_file {key}: "
            f"{reason}"
        ) from None


def tls_context(source: Path, tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context from the files; an unreadable or mismatched file is a clear error."""
    base = source.parent
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLS13" else ssl.TLSVersion.TLSv1_2
    )
    load_cert_chain(context, source, tls)
    if tls.client_ca_file is not None:
        ca = _resolve(base, tls.client_ca_file)
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(
                f"{source}: tls_server_config.client_ca_file: cannot load {ca}: {exc}"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_web_config(path: Path | None) -> WebSecurity:
    """The web config at `path`, or plain HTTP without auth when there is none."""
    if path is None:
        return WebSecurity(None, WebConfigFile())
    try:
        text = read_yaml_file(path)  # bounded: `--web.config.file /dev/zero` is refused
    except FileNotFoundError:
        raise UserError(f"{path}: web config file not found") from None
    except YamlError as exc:
        raise UserError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the web config: {exc}") from None
    if not text.strip():
        return WebSecurity(path, WebConfigFile())
    settings = validate_document(
        WebConfigFile,
        text,
        path,
        resolve_secrets=False,
        not_mapping="the web config must be a YAML mapping",
    )
    security = WebSecurity(path, settings)
    if settings.tls_server_config is not None:
        security.tls = tls_context(path, settings.tls_server_config)
    return security


def hash_password(password: bytes, cost: int = 12) -> str:
    return bcrypt.hashpw(password, bcrypt.gensalt(cost)).decode()
