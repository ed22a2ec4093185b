"""The ledger's hash chains: every minute, vantage minute, attempt and network round is a
link in the chain of its series, so an edit, a deletion, an insertion, a reordering or a
truncated tail made outside the ledger's own writes shows.

A chain is one series of rows (`ChainKey`): minutes per (target, probe) — probe '' is the
target (or fleet) level —, vantage minutes per (target, probe, vantage), attempts per
(target, probe, vantage), network rounds per vantage. Its rows are numbered 1, 2, 3… in
the order they were written (`seq`), not in minute order: an import of an old month and a
vantage's late rows append. Each row stores

    hash = SHA-256(previous row's hash || encoding of the row)

the previous hash of row 1 being `genesis(key)`; `chain_heads` holds each chain's newest
(seq, hash), so a missing tail shows too, and `chain_seals` the last row pruned from an
attempt chain, so the retention keeps what is left verifiable. The encoding (below, and
docs/evidence.md, for a reader in another language) is binary and fixed: 8-byte
big-endian integers, IEEE-754 doubles, length-prefixed UTF-8 text, so no value can be
mistaken for another and no float is rounded.

A third column, `field_map`, keeps one byte per field (the low byte of the CRC-32 of the
field's encoding): when a row's hash no longer matches, the fields whose byte changed are
the ones edited.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..sla import Outcome
from .codes import OUTCOME_CODES

DOMAIN = b"im-prober ledger chain v1"
_FAILURE = OUTCOME_CODES[Outcome.FAILURE]
_PROBER_FAULT = OUTCOME_CODES[Outcome.PROBER_FAULT]
TABLES = ("minutes", "vantage_minutes", "attempts", "network_rounds")
HASH_SIZE = 32

# Each table's chained fields, in encoding order, with their kinds: "i" integer, "f" float,
# "n" integer or NULL, "t" text. The row's seq comes first, as an "i".
_COUNTS = ("success", "failure", "client_error", "throttled", "prober_fault")
MINUTE_FIELDS: tuple[tuple[str, str], ...] = (
    ("minute", "i"),
    ("state", "i"),
    ("reason", "i"),
    *((name, "i") for name in _COUNTS),
)
ATTEMPT_FIELDS: tuple[tuple[str, str], ...] = (
    ("minute", "i"),
    ("started_at", "f"),
    ("duration", "f"),
    ("outcome", "i"),
    ("error_kind", "t"),
    ("error_code", "n"),
    ("http_status", "n"),
    ("detail", "t"),
)
ROUND_FIELDS: tuple[tuple[str, str], ...] = (("minute", "i"), ("all_failed", "i"))
FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "minutes": MINUTE_FIELDS,
    "vantage_minutes": MINUTE_FIELDS,
    "attempts": ATTEMPT_FIELDS,
    "network_rounds": ROUND_FIELDS,
}
FIELD_NAMES: dict[str, tuple[str, ...]] = {t: tuple(n for n, _ in f) for t, f in FIELDS.items()}


@dataclass(frozen=True, slots=True, order=True)
class ChainKey:
    """One chain: a table and the names of its series (unused parts are '')."""

    table: str
    target: str = ""
    probe: str = ""
    vantage: str = ""

    def __str__(self) -> str:
        if self.table == "network_rounds":
            return f"network_rounds of vantage {self.vantage or '-'}"
        series = f"{self.target}/{self.probe}" if self.probe else f"{self.target} (target level)"
        text = f"{self.table} of {series}"
        if self.table != "minutes":
            text += f" from vantage {self.vantage or '-'}"
        return text


@dataclass(frozen=True, slots=True)
class Head:
    """A chain's row at `seq` with its `hash`: the newest one (a head), or one a
    checkpoint recorded."""

    key: ChainKey
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Seal:
    """The last row pruned from an attempt chain: what is left starts after it."""

    key: ChainKey
    seq: int
    hash: bytes
    minute: int  # that row's minute: older minutes keep no attempts to compare with


@dataclass(frozen=True, slots=True)
class Break:
    """The first thing found wrong in a chain."""

    key: ChainKey
    seq: int | None
    minute: int | None
    problem: str  # in words
    field: str | None = None  # the field that differs, when one can be named

    def describe(self) -> str:
        from ..sla import minute_iso

        where = [str(self.key)]
        if self.minute is not None:
            where.append(f"minute {minute_iso(self.minute)}")
        if self.seq is not None:
            where.append(f"seq {self.seq}")
        text = ", ".join(where) + ": " + self.problem
        if self.field is not None:
            text += f" (field: {self.field})"
        return text


@dataclass(slots=True)
class VerifyResult:
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    chains: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    breaks: list[Break] = field(default_factory=list)  # the first of each broken chain
    more_breaks: int = 0  # broken chains beyond those listed
    reclassified: int = 0  # attempts made prober_fault by a failed network check
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first(self) -> Break | None:
        return self.breaks[0] if self.breaks else None


# -- the encoding --------------------------------------------------------------------------

_INT = struct.Struct(">q")
_U32 = struct.Struct(">I")
_MINUTE = struct.Struct(">9q")  # seq + the 8 fields of a minute
_ROUND = struct.Struct(">3q")  # seq, minute, all_failed
_ATTEMPT_HEAD = struct.Struct(">qqddq")  # seq, minute, started_at, duration, outcome
_NULL = b"\x00"
_sha256 = hashlib.sha256


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return _U32.pack(len(data)) + data


def _nint(value: int | None) -> bytes:
    return _NULL if value is None else b"\x01" + _INT.pack(value)


@lru_cache(maxsize=65536)
def key_bytes(key: ChainKey) -> bytes:
    """The chain key's part of every encoding: its four names as text."""
    return _text(key.table) + _text(key.target) + _text(key.probe) + _text(key.vantage)


@lru_cache(maxsize=65536)
def genesis(key: ChainKey) -> bytes:
    """The "previous hash" of a chain's first row."""
    return _sha256(DOMAIN + b"\x00" + key_bytes(key)).digest()


def _fields_of(table: str, fields: Sequence[Any] | Mapping[str, Any]) -> Sequence[Any]:
    if isinstance(fields, Mapping):
        return [fields[name] for name in FIELD_NAMES[table]]
    return fields


def encode_minute(key: ChainKey, seq: int, fields: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """A minute's (or a vantage minute's) encoding: the key, then seq and the 8 fields of
    MINUTE_FIELDS as 8-byte integers."""
    return key_bytes(key) + _MINUTE.pack(seq, *_fields_of(key.table, fields))


def encode_attempt(key: ChainKey, seq: int, fields: Sequence[Any] | Mapping[str, Any]) -> bytes:
    minute, started, duration, outcome, kind, code, status, detail = _fields_of("attempts", fields)
    return b"".join(
        (
            key_bytes(key),
            _ATTEMPT_HEAD.pack(seq, minute, started, duration, outcome),
            _text(kind),
            _nint(code),
            _nint(status),
            _text(detail),
        )
    )


def encode_round(key: ChainKey, seq: int, fields: Sequence[Any] | Mapping[str, Any]) -> bytes:
    return key_bytes(key) + _ROUND.pack(seq, *_fields_of("network_rounds", fields))


ENCODERS = {
    "minutes": encode_minute,
    "vantage_minutes": encode_minute,
    "attempts": encode_attempt,
    "network_rounds": encode_round,
}


def encode(key: ChainKey, seq: int, fields: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """A row's canonical encoding (the table is the key's)."""
    return ENCODERS[key.table](key, seq, fields)


def link(prev: bytes, encoded: bytes) -> bytes:
    """The row's hash: SHA-256 of the previous row's hash and the row's encoding."""
    return _sha256(prev + encoded).digest()


def field_encoding(kind: str, value: Any) -> bytes:
    """One field's bytes in the encoding (the reference form; the encoders are faster)."""
    if kind == "i":
        return _INT.pack(value)
    if kind == "f":
        return struct.pack(">d", value)
    if kind == "n":
        return _nint(value)
    return _text(value)


def field_map(table: str, fields: Sequence[Any] | Mapping[str, Any]) -> bytes:
    """One byte per field: the low byte of the CRC-32 of the field's encoding."""
    values = _fields_of(table, fields)
    return bytes(
        zlib.crc32(field_encoding(kind, value)) & 0xFF
        for (_name, kind), value in zip(FIELDS[table], values, strict=True)
    )


def changed_fields(table: str, fields: Sequence[Any] | Mapping[str, Any], stored: bytes) -> list:
    """The fields whose byte in the stored field map differs from the values now (empty
    when the map is missing, malformed or agrees)."""
    names = FIELD_NAMES[table]
    if not isinstance(stored, bytes | bytearray | memoryview) or len(stored) != len(names):
        return []
    try:
        now = field_map(table, fields)
    except (struct.error, TypeError, ValueError, OverflowError):
        return []
    return [name for name, a, b in zip(names, now, bytes(stored), strict=True) if a != b]


def row_link(key: ChainKey, prev: bytes, seq: int, fields: Sequence[Any]) -> tuple[bytes, bytes]:
    """(hash, field map) of a new row at `seq` after a row whose hash is `prev`."""
    return link(prev, encode(key, seq, fields)), field_map(key.table, fields)


# -- checking rows given in full (an evidence pack) --------------------------------------


def check_segment(
    key: ChainKey,
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    prev_hash: bytes,
    *,
    first_seq: int | None = None,
    network_failed: Container[int] = (),
) -> Break | None:
    """Check consecutive rows of one chain: each as a mapping (`seq`, `hash`, the table's
    field names, optionally `field_map` to name an edited field) or a tuple (seq, hash,
    *fields in FIELDS order). `prev_hash` is the hash of the row before the first (the
    genesis for seq 1); `first_seq`, when given, is the seq the first row must have. An
    attempt stored as prober_fault whose hash was made over `failure` is accepted when its
    minute is in `network_failed` (the vantage's network check failed then, and the stored
    failures were made the prober's own)."""
    table = key.table
    prev, expected = prev_hash, first_seq
    for row in rows:
        stored_map = None
        if isinstance(row, Mapping):
            seq, digest, values = row["seq"], row["hash"], _fields_of(table, row)
            stored_map = row.get("field_map")
        else:
            seq, digest, values = row[0], row[1], row[2:]
        minute = values[0] if values else None
        if expected is not None and seq != expected:
            problem = f"seq {seq} where seq {expected} was expected: " + (
                "rows are missing" if seq > expected else "rows repeat or are reordered"
            )
            return Break(key, expected, minute, problem)
        problem, name = check_row(key, prev, seq, values, bytes(digest), network_failed, stored_map)
        if problem is not None:
            return Break(key, seq, minute, problem, name)
        prev, expected = bytes(digest), seq + 1
    return None


def check_row(
    key: ChainKey,
    prev: bytes,
    seq: int,
    values: Sequence[Any],
    digest: bytes,
    network_failed: Container[int] = (),
    stored_map: bytes | None = None,
) -> tuple[str | None, str | None]:
    """(what is wrong in words, the field) of one row, or (None, None) when it links."""
    try:
        encoded = encode(key, seq, values)
    except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
        return "a field holds a value of the wrong type", _mistyped(key.table, values)
    if link(prev, encoded) == digest:
        return None, None
    if key.table == "attempts" and values[3] == _PROBER_FAULT and values[0] in network_failed:
        as_failure = list(values)
        as_failure[3] = _FAILURE
        if link(prev, encode(key, seq, as_failure)) == digest:
            return None, None  # reclassified: the network check failed in that minute
    return explain_mismatch(key, values, stored_map)


def explain_mismatch(
    key: ChainKey, values: Sequence[Any], stored_map: bytes | None
) -> tuple[str, str | None]:
    changed = changed_fields(key.table, values, stored_map) if stored_map is not None else []
    if changed:
        return (
            f"the stored {', '.join(changed)} differ{'s' if len(changed) == 1 else ''} from "
            "what was chained (edited)",
            ", ".join(changed),
        )
    if key.table == "attempts" and values[1] is not None:
        try:
            if int(values[1] // 60) != values[0]:
                return "its minute does not match its started_at (edited)", "minute"
        except TypeError:
            pass
    return (
        "its hash does not follow from the row before it and its content (a row inserted, "
        "reordered or replaced; or its hash edited)",
        None,
    )


def _mistyped(table: str, values: Sequence[Any]) -> str | None:
    for (name, kind), value in zip(FIELDS[table], values, strict=False):
        try:
            field_encoding(kind, value)
        except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
            return name
    return None
