"""UserSig, Tencent's TLSSigAPIv2: generation and verification.

sig = base64(HMAC-SHA256(key = the secret key's UTF-8 bytes, over the lines
`TLS.identifier:…`, `TLS.sdkappid:…`, `TLS.time:…`, `TLS.expire:…`, each ending in "\\n"));
the UserSig is the JSON document {TLS.ver "2.0", TLS.identifier, TLS.sdkappid, TLS.expire,
TLS.time, TLS.sig} (that key order, Python's default separators), zlib-compressed and
base64-encoded with `+`→`*`, `/`→`-`, `=`→`_`. Byte-for-byte equal to Tencent's reference
package `tls-sig-api-v2` for the same inputs (tested).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass

VERSION = "2.0"
MAX_SIG_BYTES = 4096  # a UserSig is ~200 bytes; anything far larger is not one


class InvalidUserSig(ValueError):
    """Why a UserSig was refused: `reason` is one of malformed, mismatch, expired, tampered."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SigInfo:
    identifier: str
    sdkappid: int
    time: int
    expire: int

    @property
    def expires_at(self) -> int:
        return self.time + self.expire


def _b64url_encode(data: bytes) -> str:
    return base64.b64encode(data).decode().replace("+", "*").replace("/", "-").replace("=", "_")


def _b64url_decode(text: str) -> bytes:
    return base64.b64decode(
        text.replace("*", "+").replace("-", "/").replace("_", "="), validate=True
    )


def _hmac(key: str, identifier: str, sdkappid: int, time: int, expire: int) -> str:
    content = (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdkappid}\n"
        f"TLS.time:{time}\n"
        f"TLS.expire:{expire}\n"
    )
    digest = hmac.new(key.encode("utf-8"), content.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def generate(sdkappid: int, key: str, identifier: str, *, now: int, expire: int) -> str:
    document = {
        "TLS.ver": VERSION,
        "TLS.identifier": str(identifier),
        "TLS.sdkappid": int(sdkappid),
        "TLS.expire": int(expire),
        "TLS.time": int(now),
    }
    document["TLS.sig"] = _hmac(key, identifier, sdkappid, now, expire)
    return _b64url_encode(zlib.compress(json.dumps(document).encode("utf-8")))


def verify(
    sig: str, sdkappid: int, key: str, *, now: int, identifier: str | None = None
) -> SigInfo:
    """Check a UserSig as the service would; raises InvalidUserSig with the reason."""
    if not sig or len(sig) > MAX_SIG_BYTES:
        raise InvalidUserSig("malformed", "not a UserSig")
    try:
        packed = _b64url_decode(sig)
        decompressor = zlib.decompressobj()
        raw = decompressor.decompress(packed, MAX_SIG_BYTES)
        # a whole stream, checksum included, nothing after it, and not a bomb
        if not decompressor.eof or decompressor.unused_data or decompressor.unconsumed_tail:
            raise InvalidUserSig("malformed", "not a UserSig")
        document = json.loads(raw)
        info = SigInfo(
            identifier=str(document["TLS.identifier"]),
            sdkappid=int(document["TLS.sdkappid"]),
            time=int(document["TLS.time"]),
            expire=int(document["TLS.expire"]),
        )
        claimed = str(document["TLS.sig"])
        version = document.get("TLS.ver")
    except InvalidUserSig:
        raise
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError, RecursionError):
        raise InvalidUserSig("malformed", "not a UserSig") from None
    if version != VERSION:
        raise InvalidUserSig("malformed", f"UserSig version {version!r} is not {VERSION}")
    if info.sdkappid != sdkappid:
        raise InvalidUserSig("mismatch", "UserSig was made for another SDKAppID")
    if identifier is not None and info.identifier != identifier:
        raise InvalidUserSig("mismatch", "UserSig was made for another identifier")
    expected = _hmac(key, info.identifier, info.sdkappid, info.time, info.expire)
    if not hmac.compare_digest(expected, claimed):
        raise InvalidUserSig("tampered", "UserSig signature does not match")
    if info.expires_at < now:
        raise InvalidUserSig("expired", "UserSig has expired")
    return info
