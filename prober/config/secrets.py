"""Secret references (`{env: NAME}` / `{file: PATH}`) and redaction.

Secrets are never written inline in a config: a reference names where the value lives and is
resolved at load. A resolved `Secret` prints as its reference, never its value, and every value
is remembered so that `redact()` can scrub it from any text that leaves the process (logs,
attempt details, reports, exceptions).
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections import deque
from pathlib import Path
from typing import Any

REDACTED = "<redacted>"
_known: set[str] = set()
_ephemeral: deque[str] = deque()
_known_lock = threading.Lock()
# Derived values (tokens a login returns) rotate; the newest ones are enough to scrub.
EPHEMERAL_KEPT = 256
_pattern: re.Pattern[str] | None = None
_pattern_stale = False  # rebuilt on the next redact(), not on every remember()
# Secrets longer than this (a key file) are replaced one by one instead: compiling a regular
# expression costs time per character of it (64 secrets of 64 KiB took 7 s to compile),
# while a substring search over a log line is cheap whatever the secret's length.
LONG_SECRET = 256
_long: tuple[str, ...] = ()

# Values too short to scrub safely (they would mangle ordinary text); refused at load.
MIN_SECRET_LENGTH = 4
# Keys, tokens and certificates-as-secrets fit many times over; more is a wrong path.
MAX_SECRET_FILE_BYTES = 64 << 10
# Per load: far above any real config (thousands of targets with a password each).
MAX_SECRET_REFERENCES = 10_000
MAX_SECRET_BYTES = 4 << 20


class SecretReferenceError(ValueError):
    pass


class Secret:
    """A resolved secret. Only `reveal()` gives the value; str() and repr() give the source."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str | None, source: str, *, ephemeral: bool = False) -> None:
        self._value = value
        self.source = source
        if value is not None:
            remember(value, ephemeral=ephemeral)

    @classmethod
    def unresolved(cls, source: str) -> Secret:
        """A reference kept as a name only: for commands that never use the value
        (reports, exports), so they run where the probe credentials are not present."""
        return cls(None, source)

    def reveal(self) -> str:
        if self._value is None:
            raise RuntimeError(f"the secret from {self.source} was not loaded")
        return self._value

    def __repr__(self) -> str:
        return f"<secret from {self.source}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self.source)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not to be pickled")


def remember(value: str, *, ephemeral: bool = False) -> None:
    """Add a value to the set `redact()` scrubs. Ephemeral values (a derived token, a
    UserSig) are kept among the newest EPHEMERAL_KEPT; configured secrets for good."""
    global _pattern_stale
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _known_lock:
        if value in _known or value in _ephemeral:
            return
        if ephemeral:
            _ephemeral.append(value)
            if len(_ephemeral) > EPHEMERAL_KEPT:
                _ephemeral.popleft()
        else:
            _known.add(value)
        # Compiling here made a config with thousands of secrets quadratic (minutes).
        _pattern_stale = True


def _current_pattern() -> re.Pattern[str] | None:
    global _pattern, _pattern_stale, _long
    if _pattern_stale:
        with _known_lock:
            if _pattern_stale:
                ordered = sorted({*_known, *_ephemeral}, key=len, reverse=True)
                _long = tuple(v for v in ordered if len(v) > LONG_SECRET)
                short = [v for v in ordered if len(v) <= LONG_SECRET]
                _pattern = re.compile("|".join(map(re.escape, short))) if short else None
                _pattern_stale = False
    return _pattern


def redact(text: str) -> str:
    if not text:
        return text
    pattern = _current_pattern()
    for value in _long:  # longest first, like the pattern's alternatives
        if value in text:
            text = text.replace(value, REDACTED)
    return text if pattern is None else pattern.sub(REDACTED, text)


def _read_secret_file(path: Path, name: str) -> bytes:
    """The file's bytes, bounded: `/dev/zero` or a FIFO nobody writes must not hang a load or
    a reload. Opened non-blocking so a FIFO returns at once, then refused as not a file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SecretReferenceError(f"secret file {name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise SecretReferenceError(
            f"secret file {name} is larger than {MAX_SECRET_FILE_BYTES >> 10} KiB"
        )
    return data


def _resolve_one(ref: dict[str, Any], base_dir: Path, resolve: bool = True) -> Secret:
    ((kind, name),) = ref.items()
    if not isinstance(name, str) or not name:
        raise SecretReferenceError(f"a {{{kind}: ...}} secret reference needs a non-empty name")
    if not resolve:
        return Secret.unresolved(f"{kind}:{name}")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise SecretReferenceError(f"environment variable {name} is not set")
        source = f"env:{name}"
    else:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            value = _read_secret_file(path, name).decode("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SecretReferenceError(
                f"secret file {name} cannot be read: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise SecretReferenceError(f"secret file {name} is not UTF-8 text") from None
        source = f"file:{name}"
    if len(value) < MIN_SECRET_LENGTH:
        raise SecretReferenceError(
            f"the secret from {source} is shorter than {MIN_SECRET_LENGTH} characters"
        )
    return Secret(value, source)


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("env", "file")


def resolve_references(
    data: Any, base_dir: Path, path: tuple[str | int, ...] = (), *, resolve: bool = True
) -> tuple[Any, list[tuple[tuple[str | int, ...], str]]]:
    """Replace every reference in a loaded YAML tree by a `Secret` (read now, or with
    `resolve=False` only named). Returns the new tree and the problems found, each with its
    location.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    # One read per distinct reference: a reference repeated (or aliased) a hundred thousand
    # times is still one file read and one remembered value.
    resolved: dict[tuple[str, Any], Secret | SecretReferenceError] = {}
    read_bytes = 0

    def resolve_one(node: dict[str, Any]) -> Secret:
        nonlocal read_bytes
        key = next(iter(node.items()))
        if not isinstance(key[1], str):
            return _resolve_one(node, base_dir, resolve)  # refused there, with its message
        if key not in resolved:
            if len(resolved) >= MAX_SECRET_REFERENCES:
                raise SecretReferenceError(
                    f"more than {MAX_SECRET_REFERENCES:,} different secret references"
                )
            try:
                secret = _resolve_one(node, base_dir, resolve)
                read_bytes += len(secret._value or "")
                if read_bytes > MAX_SECRET_BYTES:
                    raise SecretReferenceError(
                        f"the secrets add up to more than {MAX_SECRET_BYTES >> 20} MiB"
                    )
                resolved[key] = secret
            except SecretReferenceError as exc:
                resolved[key] = exc
        found = resolved[key]
        if isinstance(found, SecretReferenceError):
            raise found
        return found

    def walk(node: Any, where: tuple[str | int, ...]) -> Any:
        if is_reference(node):
            try:
                return resolve_one(node)
            except SecretReferenceError as exc:
                problems.append((where, str(exc)))
                return None
        if isinstance(node, dict):
            return {k: walk(v, (*where, k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, (*where, i)) for i, v in enumerate(node)]
        return node

    return walk(data, path), problems
