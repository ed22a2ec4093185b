"""The PostgreSQL URL of a shared ledger (`ledger.url`): checked at load, shown redacted.

A password never belongs in the URL: the URL is printed (start-up line, errors, `status`), so
one inside it would leak into logs. It comes from `ledger.password` (a secret reference)
instead, and a URL carrying one, in its user part or as a `password=` parameter, is refused.
`display_url` still scrubs both, so a URL printed before (or without) that check leaks
nothing either.
"""

from __future__ import annotations

import urllib.parse

SCHEMES = ("postgresql", "postgres")
# libpq's connection parameters that hold a secret (a URL may carry any parameter).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
MAX_URL_LENGTH = 2048
REDACTED = "<redacted>"


def _split(url: str) -> urllib.parse.SplitResult:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:  # an unbalanced IPv6 bracket, say
        raise ValueError(f"not a URL ({exc})") from None


def _secret_parameters(query: str) -> list[str]:
    names = [name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)]
    return sorted({n.lower() for n in names} & SECRET_PARAMETERS)


def check_url(url: str) -> str:
    """The URL if a prober may use it as `ledger.url`; otherwise ValueError saying why. The
    messages never repeat the URL (it may hold the very password they refuse)."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("a URL has no spaces or control characters")
    parts = _split(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("must be a postgresql://USER@HOST:PORT/DATABASE URL")
    if parts.fragment:
        raise ValueError("a postgresql:// URL has no #fragment")
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        raise ValueError(
            "holds a password, which would be printed wherever the URL is (logs, errors): "
            "remove it and set ledger.password: {env: NAME} or {file: PATH}"
        )
    secret = _secret_parameters(parts.query)
    if secret:
        raise ValueError(
            f"holds a {secret[0]}= parameter, which would be printed wherever the URL is: "
            "remove it and set ledger.password: {env: NAME} or {file: PATH}"
        )
    if not parts.path.strip("/"):
        raise ValueError("names no database: postgresql://USER@HOST:PORT/DATABASE")
    return url


def display_url(url: str) -> str:
    """The URL as it may be printed: any password (user part or parameter) replaced."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    user, at, hosts = netloc.rpartition("@")
    if at and ":" in user:
        netloc = f"{user.partition(':')[0]}:{REDACTED}@{hosts}"
    query = parts.query
    if _secret_parameters(query):
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(
            f"{name}={REDACTED}" if name.lower() in SECRET_PARAMETERS else f"{name}{eq}{value}"
            for name, eq, value in pairs
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_hosts(url: str) -> str:
    """Where the URL points, for messages: `host:port` (several joined by commas), or the
    socket folder of a `host=` parameter; never the user or a password."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "?"
    hosts = parts.netloc.rpartition("@")[2]
    params = dict(urllib.parse.parse_qsl(parts.query))
    if not hosts:
        hosts = params.get("host", "") or "the local socket"
    return hosts
