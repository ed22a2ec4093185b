"""RFC 3161 timestamps of an evidence pack's manifest: a token from a time-stamping
authority (TSA) saying SHA256SUMS existed at a time, and the checks `evidence verify`
makes of one.

The token covers the SHA-256 of SHA256SUMS, and so every file the manifest lists. It is
what the pack's own signature cannot show: the signer's clock is the signer's word, the
TSA's is a third party's. The request carries a nonce, so an answer replayed from another
request is refused when the pack is made. The ASN.1 and CMS work is rfc3161-client's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerificationError,
    VerifierBuilder,
    decode_timestamp_response,
)

from ..config.checkpoints import TimestampAuthorityConfig
from ..config.models import ConfigFile
from ..errors import UserError
from .signing import read_bounded

MAX_TOKEN_BYTES = 256 << 10  # a token with a long certificate chain is a few tens of KiB
MAX_CA_BYTES = 1 << 20
SHA256_OID = x509.ObjectIdentifier("2.16.840.1.101.3.4.2.1")
DIGESTS = {
    SHA256_OID: hashlib.sha256,
    x509.ObjectIdentifier("2.16.840.1.101.3.4.2.2"): hashlib.sha384,
    x509.ObjectIdentifier("2.16.840.1.101.3.4.2.3"): hashlib.sha512,
}


class TimestampError(Exception):
    """The authority gave no usable token; the message says why, in one sentence."""


class TokenError(Exception):
    """A stored token does not hold; the message says how."""


@dataclass(frozen=True)
class Authority:
    """Certificates trusted to issue timestamps (a CA file), and the file's name to say."""

    certificates: tuple[x509.Certificate, ...]
    source: str


@dataclass(frozen=True)
class Stamper:
    """The configured authority: where to ask, how long to wait, whom to trust."""

    url: str
    timeout: float
    trusted: Authority | None

    @property
    def shown(self) -> str:
        """The URL without its query: what the pack and the output name."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class Token:
    """A token read and matched against the manifest; the time and authority it states."""

    response: TimeStampResponse
    time: datetime
    authority: str

    @property
    def time_iso(self) -> str:
        return self.time.isoformat(timespec="seconds").replace("+00:00", "Z")

    @property
    def der(self) -> bytes:
        return self.response.as_bytes()


def load_authority(path: Path, what: str) -> Authority:
    """PEM certificates from `path`: the TSA's root CA (and any intermediates)."""
    data = read_bounded(path, MAX_CA_BYTES, what)
    if len(data) > MAX_CA_BYTES:
        raise UserError(f"{path}: the {what} is larger than {MAX_CA_BYTES >> 10} KiB")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise UserError(
            f"{path}: the {what} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None
    return Authority(tuple(certificates), path.name)


def stamper(config: ConfigFile) -> Stamper | None:
    """The configured `evidence.timestamp_authority`, its CA file read; None when unset."""
    settings: TimestampAuthorityConfig | None = config.config.evidence.timestamp_authority
    if settings is None:
        return None
    trusted = None
    if settings.ca_file is not None:
        path = settings.ca_file
        path = path if path.is_absolute() else config.path.parent / path
        try:
            trusted = load_authority(path, "timestamp authority's CA file")
        except UserError as exc:
            raise UserError(f"{config.path}: evidence.timestamp_authority.ca_file: {exc}") from None
    return Stamper(settings.url, settings.timeout, trusted)


def request_token(stamper: Stamper, manifest: bytes) -> Token:
    """A token over SHA-256(manifest) from the authority, checked before it is kept: granted,
    over this manifest, with this request's nonce and, with a CA file, signed under it."""
    request = (
        TimestampRequestBuilder()
        .data(manifest)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)  # the signer's certificate travels in the token
        .build()
    )
    body = asyncio.run(_post(stamper, request.as_bytes()))
    try:
        response = decode_timestamp_response(body)
    except ValueError as exc:
        raise TimestampError(
            f"{stamper.shown} answered with something that is not a timestamp response"
            + _parse_reason(str(exc))
        ) from None
    if response.status != PKIStatus.GRANTED:
        said = "; ".join(response.status_string)[:200]
        raise TimestampError(
            f"{stamper.shown} refused the request (status {_status(response.status)}"
            + (f": {said})" if said else ")")
        )
    if response.tst_info.nonce != request.nonce:
        raise TimestampError(f"{stamper.shown} answered another request (the nonce differs)")
    try:
        token = read_token(body, manifest)
        if stamper.trusted is not None:
            check_authority(token, manifest, stamper.trusted)
    except TokenError as exc:
        raise TimestampError(
            f"{stamper.shown} answered with a token that does not hold: {exc}"
        ) from None
    return token


async def _post(stamper: Stamper, query: bytes) -> bytes:
    """The authority's answer; the whole exchange within the timeout, the body bounded."""
    timeout = aiohttp.ClientTimeout(total=stamper.timeout)
    headers = {"Content-Type": "application/timestamp-query"}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(stamper.url, data=query, headers=headers, allow_redirects=False) as reply,
        ):
            if reply.status != 200:
                raise TimestampError(f"{stamper.shown} answered HTTP {reply.status}")
            body = bytearray()
            async for chunk in reply.content.iter_chunked(64 << 10):
                body += chunk
                if len(body) > MAX_TOKEN_BYTES:
                    raise TimestampError(
                        f"{stamper.shown} answered with more than {MAX_TOKEN_BYTES >> 10} KiB"
                    )
            return bytes(body)
    except TimeoutError:
        raise TimestampError(
            f"{stamper.shown} did not answer within {stamper.timeout:g}s"
        ) from None
    except aiohttp.ClientError as exc:
        raise TimestampError(f"{stamper.shown} could not be reached: {_reason(exc)}") from None


def read_token(data: bytes, manifest: bytes) -> Token:
    """The stored token, granted and over this manifest's hash (its signature unchecked)."""
    try:
        response = decode_timestamp_response(data)
        info = response.tst_info
    except ValueError as exc:
        raise TokenError(
            "it is not a timestamp token: it was damaged or replaced" + _parse_reason(str(exc))
        ) from None
    if response.status != PKIStatus.GRANTED:
        raise TokenError(f"it holds status {_status(response.status)}, not a granted token")
    digest = DIGESTS.get(info.message_imprint.hash_algorithm)
    if digest is None:
        raise TokenError(f"it covers a hash by {info.message_imprint.hash_algorithm.dotted_string}")
    if info.message_imprint.message != digest(manifest).digest():
        raise TokenError(
            f"it covers another manifest (hash {info.message_imprint.message.hex()[:16]}…), "
            "not this SHA256SUMS: SHA256SUMS was changed after it was timestamped, or the "
            "token is another pack's"
        )
    return Token(response, info.gen_time, _authority_name(response))


def check_authority(token: Token, manifest: bytes, trusted: Authority) -> None:
    """The token's signature, by a timestamping certificate that chains to `trusted`
    (valid at the time the token states)."""
    builder = VerifierBuilder()
    for certificate in trusted.certificates:
        builder = builder.add_root_certificate(certificate)
    try:
        builder.build().verify_message(token.response, manifest)
    except VerificationError as exc:
        raise TokenError(_verification_sentence(str(exc), trusted)) from None


def _verification_sentence(text: str, trusted: Authority) -> str:
    """rfc3161-client's message (with OpenSSL's error stack) as one short sentence."""
    if "signature failure" in text:
        return "its signature does not hold: the token was changed after the authority signed it"
    if "EKU" in text:
        return "it is not signed with a timestamping certificate (critical timeStamping usage)"
    found = re.search(r'data: "Verify error: ([^"]{1,120})"', text)
    if "certificate" in text:
        why = found.group(1) if found else "no chain"
        return f"it is not signed by an authority {trusted.source} vouches for ({why})"
    return f"it does not verify: {text[:160]}"


def _authority_name(response: TimeStampResponse) -> str:
    """Who signed the token: the signer's certificate's subject when it travels in the
    token, else the name the token states, else the signer's issuer and serial."""
    try:
        signers = list(response.signed_data.signer_infos)
        certificates = [
            x509.load_der_x509_certificate(c) for c in response.signed_data.certificates
        ]
    except ValueError:
        signers, certificates = [], []
    for signer in signers[:1]:
        for certificate in certificates:
            if (certificate.issuer, certificate.serial_number) == (
                signer.issuer,
                signer.serial_number,
            ):
                return certificate.subject.rfc4514_string()[:200] or "(no subject)"
    name = response.tst_info.name
    if name is not None:
        value = name.value
        shown = value.rfc4514_string() if isinstance(value, x509.Name) else str(value)
        return shown[:200]
    if signers:
        return f"{signers[0].issuer.rfc4514_string()[:160]} serial {signers[0].serial_number}"
    return "an unnamed authority"


def _parse_reason(text: str) -> str:
    """What rfc3161-client's parser stumbled on, when it says (e.g. InvalidSetOrdering: a
    token whose certificates are not in DER order, as some authorities send them)."""
    found = re.search(r"kind: (\w{1,40})", text)
    return f" (ASN.1: {found.group(1)})" if found else ""


def _status(code: int) -> str:
    try:
        return PKIStatus(code).name.lower()
    except ValueError:
        return str(code)


def _reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error is not None:
        error = exc.os_error  # asyncio's own text names the address again: the errno's says why
        return os.strerror(error.errno) if error.errno else str(error.strerror or error)[:200]
    return type(exc).__name__
