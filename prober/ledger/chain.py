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
import logging
import struct
import zlib
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..sla import Outcome
from .codes import OUTCOME_CODES

if TYPE_CHECKING:
    from .store import Ledger

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


# Encodings of the texts and optional integers seen most (error kinds, statuses, empty
# details): a few thousand, then no more are kept.
_TEXTS: dict[str | bytes, bytes] = {}
_NINTS: dict[int | None, bytes] = {None: _NULL}
_KEEP = 4096


def _cached_text(value: str | bytes) -> bytes:
    found = _text(value)
    if len(_TEXTS) < _KEEP:
        _TEXTS[value] = found
    return found


def _cached_nint(value: int | None) -> bytes:
    found = _nint(value)
    if len(_NINTS) < _KEEP and type(value) is int:
        _NINTS[value] = found
    return found


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
    """(hash, field map) of a new row at `seq` after a row whose hash is `prev`: what the
    ledger stores with each row it writes (the same bytes as encode() and field_map(),
    packed once)."""
    return LINKERS[key.table](key_bytes(key), prev, seq, fields)


def _link_minute(kb: bytes, prev: bytes, seq: int, fields: Sequence[Any]) -> tuple[bytes, bytes]:
    b = _MINUTE.pack(seq, *fields)
    c = zlib.crc32
    fields_map = bytes(
        (
            c(b[8:16]) & 0xFF, c(b[16:24]) & 0xFF, c(b[24:32]) & 0xFF, c(b[32:40]) & 0xFF,
            c(b[40:48]) & 0xFF, c(b[48:56]) & 0xFF, c(b[56:64]) & 0xFF, c(b[64:72]) & 0xFF,
        )
    )  # fmt: skip
    return _sha256(prev + kb + b).digest(), fields_map


def _link_attempt(kb: bytes, prev: bytes, seq: int, fields: Sequence[Any]) -> tuple[bytes, bytes]:
    minute, started, duration, outcome, kind, code, status, detail = fields
    h = _ATTEMPT_HEAD.pack(seq, minute, started, duration, outcome)
    texts, nints = _TEXTS, _NINTS
    k = texts.get(kind) or _cached_text(kind)
    d = texts.get(detail) or _cached_text(detail)
    a = nints.get(code) or _cached_nint(code)
    st = nints.get(status) or _cached_nint(status)
    c = zlib.crc32
    fields_map = bytes(
        (
            c(h[8:16]) & 0xFF, c(h[16:24]) & 0xFF, c(h[24:32]) & 0xFF, c(h[32:40]) & 0xFF,
            c(k) & 0xFF, c(a) & 0xFF, c(st) & 0xFF, c(d) & 0xFF,
        )
    )  # fmt: skip
    return _sha256(b"".join((prev, kb, h, k, a, st, d))).digest(), fields_map


def _link_round(kb: bytes, prev: bytes, seq: int, fields: Sequence[Any]) -> tuple[bytes, bytes]:
    b = _ROUND.pack(seq, *fields)
    c = zlib.crc32
    return _sha256(prev + kb + b).digest(), bytes((c(b[8:16]) & 0xFF, c(b[16:24]) & 0xFF))


# Per table: (key bytes, previous hash, seq, fields) -> (hash, field map).
LINKERS = {
    "minutes": _link_minute,
    "vantage_minutes": _link_minute,
    "attempts": _link_attempt,
    "network_rounds": _link_round,
}


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


# -- the migration to schema 3: chaining the rows a ledger already holds ------------------

_PAGE = 20_000  # rows read and updated at a time: bounded memory on a ledger of any size


def chain_existing(
    execute: Callable[..., Any], executemany: Callable[..., Any], *, postgres: bool = False
) -> dict[str, int]:
    """Chain every row already in the ledger, each chain from its first row in (minute,
    then id) order, and record the heads; in the migration's transaction (`execute` and
    `executemany` of either backend, `?` placeholders). Returns the rows chained per
    table, and says so in the log."""
    names = {sid: (t, p) for sid, t, p in execute("SELECT id, target, probe FROM series")}
    heads: list[tuple[str, int, str, int, bytes]] = []
    chained = dict.fromkeys(TABLES, 0)
    # network_rounds has no id column: SQLite's rowid, PostgreSQL's ctid order its rows.
    # Pages go on from the last row's (minute, id): `minute >= ?` lets the index find it.
    ident, after = ("ctid::text", "ctid > ?::tid") if postgres else ("rowid", "rowid > ?")
    plans = (
        (
            "minutes",
            "SELECT DISTINCT series_id, '' FROM minutes ORDER BY 1",
            "SELECT minute, state, reason, success, failure, client_error, throttled, "
            "prober_fault, minute FROM minutes WHERE series_id = ? AND seq IS NULL "
            "AND minute > ? ORDER BY minute LIMIT ?",
            "UPDATE minutes SET seq = ?, hash = ?, field_map = ? "
            "WHERE series_id = ? AND minute = ?",
        ),
        (
            "vantage_minutes",
            "SELECT DISTINCT series_id, vantage FROM vantage_minutes ORDER BY 1, 2",
            "SELECT minute, state, reason, success, failure, client_error, throttled, "
            "prober_fault, minute FROM vantage_minutes WHERE series_id = ? AND vantage = ? "
            "AND seq IS NULL AND minute > ? ORDER BY minute LIMIT ?",
            "UPDATE vantage_minutes SET seq = ?, hash = ?, field_map = ? "
            "WHERE series_id = ? AND vantage = ? AND minute = ?",
        ),
        (
            "attempts",
            "SELECT DISTINCT series_id, vantage FROM attempts ORDER BY 1, 2",
            "SELECT minute, started_at, duration, outcome, error_kind, error_code, "
            "http_status, detail, id FROM attempts WHERE series_id = ? AND vantage = ? "
            "AND seq IS NULL AND minute >= ? AND (minute > ? OR id > ?) "
            "ORDER BY minute, id LIMIT ?",
            "UPDATE attempts SET seq = ?, hash = ?, field_map = ? WHERE id = ?",
        ),
        (
            "network_rounds",
            "SELECT DISTINCT 0, vantage FROM network_rounds ORDER BY 2",
            f"SELECT minute, all_failed, {ident} FROM network_rounds WHERE vantage = ? "
            f"AND seq IS NULL AND minute >= ? AND (minute > ? OR {after}) "
            f"ORDER BY minute, {ident.split('::')[0]} LIMIT ?",
            "UPDATE network_rounds SET seq = ?, hash = ?, field_map = ? WHERE "
            + ("ctid = ?::tid" if postgres else "rowid = ?"),
        ),
    )
    for table, chains_sql, page_sql, update_sql in plans:
        for sid, vantage in execute(chains_sql).fetchall():
            target, probe = names.get(sid, ("", ""))
            key = ChainKey(table, target, probe, vantage)
            seq, prev = 0, genesis(key)
            position: tuple[Any, ...] = (-(2**62), None)
            while True:
                if table == "minutes":
                    params: tuple = (sid, position[0], _PAGE)
                elif table == "vantage_minutes":
                    params = (sid, vantage, position[0], _PAGE)
                elif table == "attempts":
                    params = (sid, vantage, position[0], position[0], position[1] or 0, _PAGE)
                else:
                    first = position[1] if position[1] is not None else ("(0,0)" if postgres else 0)
                    params = (vantage, position[0], position[0], first, _PAGE)
                rows = execute(page_sql, params).fetchall()
                if not rows:
                    break
                updates = []
                for row in rows:
                    *values, where = row
                    seq += 1
                    prev, fields_map = row_link(key, prev, seq, values)
                    if table == "minutes":
                        updates.append((seq, prev, fields_map, sid, where))
                    elif table == "vantage_minutes":
                        updates.append((seq, prev, fields_map, sid, vantage, where))
                    else:
                        updates.append((seq, prev, fields_map, where))
                executemany(update_sql, updates)
                position = (rows[-1][0], rows[-1][-1])
            if seq:
                heads.append((table, sid, vantage, seq, prev))
                chained[table] += seq
    if heads:
        executemany("INSERT INTO chain_heads (tbl, series_id, vantage, seq, hash) "
                    "VALUES (?, ?, ?, ?, ?)", heads)  # fmt: skip
    logging.getLogger("im_prober").info(
        "ledger schema 3: the rows already in the ledger are chained, each chain from its "
        "first row",
        extra={"fields": chained},
    )
    return chained


# -- reading the chains back ---------------------------------------------------------------

# Each table's chain, as a WHERE clause over its key columns and their values.
_CHAIN_WHERE = {
    "minutes": "series_id = ?",
    "vantage_minutes": "series_id = ? AND vantage = ?",
    "attempts": "series_id = ? AND vantage = ?",
    "network_rounds": "vantage = ?",
}
_ROW_COLUMNS = {t: "seq, " + ", ".join(FIELD_NAMES[t]) + ", hash" for t in TABLES}
PIECE = 1_000_000  # rows of one chain checked by one worker at a time
INLINE_ROWS = 300_000  # fewer rows than this are checked in this process, no workers
MAX_BREAKS = 50  # broken chains listed in a result; more are only counted


def _chain_params(table: str, sid: int, vantage: str) -> tuple:
    if table == "minutes":
        return (sid,)
    if table == "network_rounds":
        return (vantage,)
    return (sid, vantage)


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive rows of one chain, (seq, hash, *fields), with the hash before them."""

    key: ChainKey
    prev: bytes
    first_seq: int
    rows: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _Source:
    """How a worker opens the ledger for reading: a file's path or a database's URL."""

    path: str | None
    url: str | None = None
    password: str | None = None


def _source(ledger: Ledger) -> _Source:
    if ledger.path is not None:
        return _Source(str(ledger.path))
    db: Any = ledger._db
    return _Source(None, db.url, db._password)


def _open(source: _Source) -> Any:
    """A read-only connection of our own (store.py's execute/stream interface); SQLite's
    gives text as bytes, which the encoding takes as they are (no decoding, no error on
    bytes that are not UTF-8: they just do not match)."""
    if source.path is not None:
        from .sqlite_file import MIGRATIONS, SqliteFile

        db = SqliteFile(source.path, MIGRATIONS, readonly=True)
        db._db.text_factory = bytes
        return db
    from .postgres import open_database

    return open_database(source.url or "", source.password, readonly=True)


def _names(db: Any) -> dict[int, tuple[str, str]]:
    return {
        sid: (_str(t), _str(p)) for sid, t, p in db.execute("SELECT id, target, probe FROM series")
    }


def _str(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def heads(ledger: Ledger) -> list[Head]:
    """Every chain's newest row (chains without a row are left out), in key order."""
    with ledger._lock:
        names = _names(ledger._db)
        rows = ledger._db.execute(
            "SELECT tbl, series_id, vantage, seq, hash FROM chain_heads WHERE seq > 0"
        ).fetchall()
    found = []
    for table, sid, vantage, seq, digest in rows:
        target, probe = names.get(sid, ("", ""))
        found.append(Head(ChainKey(table, target, probe, vantage), seq, bytes(digest)))
    return sorted(found, key=lambda h: (TABLES.index(h.key.table), h.key))


def _prev_hash(db: Any, table: str, params: tuple, key: ChainKey, seq: int) -> bytes | None:
    """The stored hash of the row before `seq` (the genesis, or the seal's, where it is);
    None when that row is not there."""
    found = _prev_row(db, table, params, key, seq)
    return None if found is None else found[0]


def _prev_row(
    db: Any, table: str, params: tuple, key: ChainKey, seq: int
) -> tuple[bytes, int | None] | None:
    """(hash, minute) of the row before `seq`, as _prev_hash."""
    if seq <= 1:
        return genesis(key), None
    row = db.execute(
        f"SELECT hash, minute FROM {table} WHERE {_CHAIN_WHERE[table]} AND seq = ?",
        (*params, seq - 1),
    ).fetchone()
    if row is not None:
        return bytes(row[0]), row[1]
    if table == "attempts":
        sealed = db.execute(
            "SELECT seq, hash, minute FROM chain_seals WHERE tbl = 'attempts' AND series_id = ? "
            "AND vantage = ?",
            params,
        ).fetchone()
        if sealed is not None and sealed[0] == seq - 1:
            return bytes(sealed[1]), sealed[2]
    return None


def segment(ledger: Ledger, target: str, start: int, end: int) -> list[Segment]:
    """The chained rows covering minutes [start, end) of the target: for each chain of
    its series (minutes, vantage minutes, attempts) the consecutive rows from the first to
    the last one of those minutes (a late row of another minute between them comes too),
    and the network rounds of the vantages whose attempts are there; each with the hash
    just before it, so a reader can recompute every link."""
    out: list[Segment] = []
    with ledger._lock:
        db = ledger._db
        names = _names(db)
        sids = [sid for sid, (t, _p) in names.items() if t == target]
        vantages: set[str] = set()
        chains: list[tuple[str, int, str]] = []
        for sid in sorted(sids):
            chains.append(("minutes", sid, ""))
            for table in ("vantage_minutes", "attempts"):
                for (vantage,) in db.execute(
                    f"SELECT DISTINCT vantage FROM {table} WHERE series_id = ? "
                    "AND minute >= ? AND minute < ?",
                    (sid, start, end),
                ).fetchall():
                    chains.append((table, sid, vantage))
                    if table == "attempts":
                        vantages.add(vantage)
        chains += [("network_rounds", 0, v) for v in sorted(vantages)]
        for table, sid, vantage in chains:
            target_name, probe = names.get(sid, ("", ""))
            key = ChainKey(table, target_name, probe, vantage)
            params = _chain_params(table, sid, vantage)
            lo, hi = db.execute(
                f"SELECT min(seq), max(seq) FROM {table} WHERE {_CHAIN_WHERE[table]} "
                "AND minute >= ? AND minute < ?",
                (*params, start, end),
            ).fetchone()
            if lo is None:
                continue
            rows = [
                (row[0], bytes(row[-1]), *row[1:-1])
                for row in db.execute(
                    f"SELECT {_ROW_COLUMNS[table]} FROM {table} WHERE {_CHAIN_WHERE[table]} "
                    "AND seq >= ? AND seq <= ? ORDER BY seq",
                    (*params, lo, hi),
                ).fetchall()
            ]
            prev = _prev_hash(db, table, params, key, lo)
            out.append(Segment(key, prev if prev is not None else b"", lo, rows))
    return out


# -- verify ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Piece:
    """Rows lo..hi of one chain, checked by one worker. The chain's last piece also
    checks its head, that nothing lies beyond it, and (its first) nothing below its seal."""

    key: ChainKey
    sid: int
    vantage: str
    lo: int
    hi: int
    head: bytes  # the chain's head hash (checked at hi when `last`)
    first: bool
    last: bool
    sealed: int  # the seal's seq (0: none)


@dataclass(frozen=True, slots=True)
class _Counts:
    """A probe's minutes in [lo, hi] against the attempts the ledger holds of them."""

    key: ChainKey
    sid: int
    lo: int
    hi: int


@dataclass(slots=True)
class _Found:
    rows: int = 0
    reclassified: int = 0
    breaks: list[Break] = field(default_factory=list)


def _body(table: str) -> Callable[[tuple], bytes]:
    """The row's encoding after its key, from a scanned row (seq, *fields, hash)."""
    if table == "attempts":
        head, text, nint = _ATTEMPT_HEAD.pack, _text, _nint

        def attempt(r: tuple) -> bytes:
            return (
                head(r[0], r[1], r[2], r[3], r[4])
                + text(r[5])
                + nint(r[6])
                + nint(r[7])
                + (text(r[8]))
            )

        return attempt
    if table == "network_rounds":
        pack3 = _ROUND.pack
        return lambda r: pack3(r[0], r[1], r[2])
    pack9 = _MINUTE.pack
    return lambda r: pack9(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])


def _chunks(db: Any, sql: str, args: tuple, size: int = 10_000) -> Iterator[list[tuple]]:
    """The rows of a query a list at a time (bounded memory): SQLite's cursor as it is,
    PostgreSQL's server-side cursor (store.py's stream) gathered into lists."""
    if getattr(db, "path", None) is not None:
        cursor = db.execute(sql, args)
        while chunk := cursor.fetchmany(size):
            yield chunk
        return
    chunk = []
    for row in db.stream(sql, args, size):
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _quick_minutes(kb: bytes, prev: bytes, chunk: list[tuple]) -> list[int]:
    """Indexes of the rows whose hash does not follow (rows: seq, 8 fields, hash)."""
    pack, sha = _MINUTE.pack, _sha256
    prevs = [prev, *(r[9] for r in chunk[:-1])]
    return [
        i
        for i, (p, r) in enumerate(zip(prevs, chunk, strict=True))
        if sha(p + kb + pack(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8])).digest() != r[9]
    ]


def _quick_rounds(kb: bytes, prev: bytes, chunk: list[tuple]) -> list[int]:
    pack, sha = _ROUND.pack, _sha256
    prevs = [prev, *(r[3] for r in chunk[:-1])]
    return [
        i
        for i, (p, r) in enumerate(zip(prevs, chunk, strict=True))
        if sha(p + kb + pack(r[0], r[1], r[2])).digest() != r[3]
    ]


def _quick_attempts(kb: bytes, prev: bytes, chunk: list[tuple]) -> list[int]:
    """As _quick_minutes, for attempts (seq, minute, started_at, duration, outcome,
    error_kind, error_code, http_status, detail, hash): one hash fed in parts."""
    head, sha, texts, nints = _ATTEMPT_HEAD.pack, _sha256, _TEXTS, _NINTS
    bad = []
    for i, r in enumerate(chunk):
        h = sha(prev)
        h.update(kb)
        h.update(head(r[0], r[1], r[2], r[3], r[4]))
        h.update(texts.get(r[5]) or _cached_text(r[5]))
        h.update(nints.get(r[6]) or _cached_nint(r[6]))
        h.update(nints.get(r[7]) or _cached_nint(r[7]))
        h.update(texts.get(r[8]) or _cached_text(r[8]))
        prev = r[9]
        if h.digest() != prev:
            bad.append(i)
    return bad


_QUICK: dict[str, Callable[[bytes, bytes, list[tuple]], list[int]]] = {
    "minutes": _quick_minutes,
    "vantage_minutes": _quick_minutes,
    "attempts": _quick_attempts,
    "network_rounds": _quick_rounds,
}


def _check_piece(db: Any, piece: _Piece) -> _Found:
    key, table = piece.key, piece.key.table
    params = _chain_params(table, piece.sid, piece.vantage)
    where = _CHAIN_WHERE[table]
    found = _Found()
    broken = found.breaks

    def fail(seq: int | None, minute: int | None, problem: str, name: str | None = None) -> None:
        if len(broken) < MAX_BREAKS:
            broken.append(Break(key, seq, minute, problem, name))

    if piece.first and piece.sealed:
        below = db.execute(
            f"SELECT min(seq), min(minute) FROM {table} WHERE {where} AND seq <= ?",
            (*params, piece.sealed),
        ).fetchone()
        if below[0] is not None:
            fail(below[0], below[1], f"a row at or below the retention seal (seq {piece.sealed})")
    before = _prev_row(db, table, params, key, piece.lo)
    prev, last_minute = before if before is not None else (None, None)
    if before is None and piece.first:  # (a later piece's: told by the piece before it)
        fail(piece.lo - 1, None, f"the row at seq {piece.lo - 1} is missing (deleted)")
    kb = key_bytes(key)
    body = _body(table)
    sha = _sha256
    expected = piece.lo
    reclassified: list[tuple[int, int]] = []  # (seq, minute)
    upper = "" if piece.last else " AND seq <= ?"
    sql = (
        f"SELECT {_ROW_COLUMNS[table]} FROM {table} WHERE {where} AND seq >= ?{upper} ORDER BY seq"
    )
    args = (*params, piece.lo) if piece.last else (*params, piece.lo, piece.hi)
    rows = 0

    def slow(r: tuple) -> None:
        """One row, every check spelled out: where the quick pass found something."""
        nonlocal prev, expected, last_minute
        seq = r[0]
        if seq != expected:
            if seq > expected:
                fail(
                    expected,
                    last_minute,
                    _missing(expected, seq - 1, last_minute, r[1])
                    + _shortfall(db, key, piece.sid, last_minute, r[1]),
                )
                prev = None
            else:
                fail(seq, r[1], "a second row with this seq (rows inserted outside the ledger)")
        elif seq > piece.hi and piece.last:
            fail(
                seq,
                r[1],
                f"a row beyond the chain's head (seq {piece.hi}): added outside the ledger",
            )
        digest = r[-1]
        if prev is not None:
            try:
                ok = sha(prev + kb + body(r)).digest() == digest
            except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
                ok = False
            if not ok:
                if table == "attempts" and r[4] == _PROBER_FAULT and _as_failure(prev, kb, body, r):
                    reclassified.append((seq, r[1]))
                else:
                    problem, name = _diagnose(db, key, params, r, prev)
                    fail(seq, r[1], problem, name)
        prev = digest if isinstance(digest, bytes) else None
        expected = seq + 1
        last_minute = r[1]

    quick = _QUICK[table]
    for chunk in _chunks(db, sql, args):
        rows += len(chunk)
        n = len(chunk)
        # The quick pass: consecutive seqs within the head, every link recomputed at once.
        if (
            prev is not None
            and chunk[0][0] == expected
            and chunk[-1][0] == expected + n - 1
            and (not piece.last or chunk[-1][0] <= piece.hi)
            and [r[0] for r in chunk] == list(range(expected, expected + n))
        ):
            try:
                bad = quick(kb, prev, chunk)
            except (struct.error, TypeError, ValueError, OverflowError, AttributeError):
                bad = None  # a value of the wrong type somewhere: row by row
            if bad is not None and not bad:
                prev, expected, last_minute = chunk[-1][-1], expected + n, chunk[-1][1]
                continue
        for r in chunk:
            slow(r)
    end = piece.hi + 1
    if expected < end:
        if piece.last:
            fail(
                expected,
                last_minute,
                f"the newest rows (seq {expected}..{piece.hi}) are missing: the chain's tail "
                f"was cut (its head says seq {piece.hi})"
                + _shortfall(db, key, piece.sid, last_minute, None),
            )
        else:
            fail(expected, last_minute, _missing(expected, piece.hi, last_minute, None))
    elif piece.last and piece.hi:
        row = db.execute(
            f"SELECT hash, minute FROM {table} WHERE {where} AND seq = ?", (*params, piece.hi)
        ).fetchone()
        if row is not None and bytes(row[0]) != piece.head:
            fail(
                piece.hi,
                row[1],
                "the row at the chain's head does not have the head's hash (the row or the "
                "head was replaced)",
            )
    if reclassified:
        found.reclassified = _check_reclassified(db, key, reclassified, fail)
    found.rows = rows
    return found


def _as_failure(prev: bytes, kb: bytes, body: Callable[[tuple], bytes], r: tuple) -> bool:
    """The attempt's hash was made over outcome `failure` (then reclassified)."""
    as_stored = list(r)
    as_stored[4] = _FAILURE
    return _sha256(prev + kb + body(tuple(as_stored))).digest() == r[-1]


def _check_reclassified(
    db: Any, key: ChainKey, moved: list[tuple[int, int]], fail: Callable[..., None]
) -> int:
    """Attempts stored as failure and now prober_fault: right only where the vantage's
    network check failed in that minute (every round it stored then failed)."""
    minutes = sorted({minute for _seq, minute in moved})
    failed: set[int] = set()
    for start in range(0, len(minutes), 500):
        chunk = minutes[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        failed.update(
            minute
            for minute, rounds, passed in db.execute(
                "SELECT minute, count(*), sum(CASE WHEN all_failed = 0 THEN 1 ELSE 0 END) "
                f"FROM network_rounds WHERE vantage = ? AND minute IN ({marks}) GROUP BY minute",
                (key.vantage, *chunk),
            ).fetchall()
            if rounds and not passed
        )
    accepted = 0
    for seq, minute in moved:
        if minute in failed:
            accepted += 1
        else:
            fail(
                seq,
                minute,
                "its outcome was changed from failure to prober_fault, but no failed network "
                f"check of vantage {key.vantage or '-'} in that minute is in the ledger",
                "outcome",
            )
    return accepted


def _missing(first: int, last: int, before: int | None, after: int | None) -> str:
    from ..sla import minute_iso

    rows = f"row seq {first} is" if first == last else f"rows seq {first}..{last} are"
    where = []
    if before is not None:
        where.append(f"after minute {minute_iso(before)}")
    if after is not None:
        where.append(f"before minute {minute_iso(after)}")
    return f"{rows} missing (deleted{', ' + ' and '.join(where) if where else ''})"


def _shortfall(db: Any, key: ChainKey, sid: int, lo: int | None, hi: int | None) -> str:
    """For attempts missing from a chain: the first minute in [lo, hi] whose counts say
    more attempts than the ledger holds, in words ('' when none is found)."""
    if key.table != "attempts" or lo is None:
        return ""
    hit = _first_shortfall(db, sid, lo, hi if hi is not None else lo + 10_000_000)
    if hit is None:
        return ""
    from ..sla import minute_iso

    minute, what, _names = hit
    return f"; minute {minute_iso(minute)} of {key.target}/{key.probe} {what}"


def _first_shortfall(db: Any, sid: int, lo: int, hi: int) -> tuple[int, str, list[str]] | None:
    """The first minute in [lo, hi] of the series whose counts exceed the attempts held:
    (minute, in words, the outcomes short)."""
    row = db.execute(
        "SELECT minute, counted, present FROM (SELECT m.minute AS minute, "
        "m.success + m.failure + m.client_error + m.throttled + m.prober_fault AS counted, "
        "(SELECT count(*) FROM attempts a WHERE a.series_id = m.series_id "
        "AND a.minute = m.minute) AS present FROM minutes m WHERE m.series_id = ? "
        "AND m.minute >= ? AND m.minute <= ?) c WHERE counted > present "
        "ORDER BY minute LIMIT 1",
        (sid, lo, hi),
    ).fetchone()
    if row is None:
        return None
    minute, counted, present = row
    counts = db.execute(
        "SELECT success, failure, client_error, throttled, prober_fault FROM minutes "
        "WHERE series_id = ? AND minute = ?",
        (sid, minute),
    ).fetchone()
    held = dict(
        db.execute(
            "SELECT outcome, count(*) FROM attempts WHERE series_id = ? AND minute = ? "
            "GROUP BY outcome",
            (sid, minute),
        ).fetchall()
    )
    short = [
        (name, n, held.get(OUTCOME_CODES[Outcome(name)], 0))
        for name, n in zip(_COUNTS, counts, strict=True)
        if n > held.get(OUTCOME_CODES[Outcome(name)], 0)
    ]
    words = ", ".join(f"{name} {n}, the ledger holds {h}" for name, n, h in short)
    return (
        minute,
        f"counts {counted} attempts but the ledger holds {present} ({words})",
        [name for name, _n, _h in short],
    )


def _check_counts(db: Any, unit: _Counts) -> _Found:
    found = _Found()
    hit = _first_shortfall(db, unit.sid, unit.lo, unit.hi)
    if hit is not None:
        minute, what, names = hit
        found.breaks.append(
            Break(
                unit.key,
                None,
                minute,
                f"the minute {what}: attempts behind it were deleted",
                ", ".join(names) or None,
            )
        )
    return found


def _diagnose(
    db: Any, key: ChainKey, params: tuple, r: tuple, prev: bytes
) -> tuple[str, str | None]:
    """Why a row's hash does not follow: a named field, a swap with its neighbour, a
    missing or malformed hash."""
    table = key.table
    seq, values, digest = r[0], r[1:-1], r[-1]
    if not isinstance(digest, bytes) or len(digest) != HASH_SIZE:
        return "its hash is missing or not a 32-byte value (edited)", "hash"
    stored = db.execute(
        f"SELECT field_map FROM {table} WHERE {_CHAIN_WHERE[table]} AND seq = ?", (*params, seq)
    ).fetchone()
    problem, name = explain_mismatch(
        key, values, bytes(stored[0]) if stored and stored[0] else None
    )
    if name is not None:
        return problem, name
    # Swapped with the next row: this row's hash fits one place on, after the next row.
    nxt = db.execute(
        f"SELECT {_ROW_COLUMNS[table]} FROM {table} WHERE {_CHAIN_WHERE[table]} AND seq = ?",
        (*params, seq + 1),
    ).fetchone()
    body = _body(table)
    if nxt is not None and isinstance(nxt[-1], bytes):
        moved = (seq + 1, *values)
        if _sha256(nxt[-1] + key_bytes(key) + body(moved)).digest() == digest:
            return (
                f"rows seq {seq} and {seq + 1} are swapped (each one's hash fits the other's "
                "place): reordered",
                "seq",
            )
    return problem, name


def _begin_read(db: Any) -> None:
    """One snapshot for the statements that follow (heads and rows agree)."""
    if getattr(db, "path", None) is not None:
        db.execute("BEGIN")
    else:
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")


def _end_read(db: Any) -> None:
    if db.in_transaction:
        db.execute("COMMIT")


def _run(db: Any, unit: _Piece | _Counts) -> _Found:
    _begin_read(db)
    try:
        if isinstance(unit, _Counts):
            return _check_counts(db, unit)
        if unit.last:
            unit = _with_own_head(db, unit)
        return _check_piece(db, unit)
    finally:
        _end_read(db)


def _with_own_head(db: Any, piece: _Piece) -> _Piece:
    """The chain's head as this snapshot has it: the daemon may have added rows since the
    plan was made, and they are checked too (a head never moves back)."""
    row = db.execute(
        "SELECT seq, hash FROM chain_heads WHERE tbl = ? AND series_id = ? AND vantage = ?",
        (piece.key.table, piece.sid, piece.vantage),
    ).fetchone()
    if row is None or row[0] <= piece.hi:
        return piece
    return _Piece(
        piece.key, piece.sid, piece.vantage, piece.lo, row[0], bytes(row[1]), piece.first,
        True, piece.sealed,
    )  # fmt: skip


_worker_db: Any = None


def _worker_start(source: _Source) -> None:
    global _worker_db
    _worker_db = _open(source)


def _worker_run(unit: _Piece | _Counts) -> tuple[str, ChainKey, _Found]:
    table = unit.key.table if isinstance(unit, _Piece) else "counts"
    return table, unit.key, _run(_worker_db, unit)


class _Plan:
    """What verify checks, found in one snapshot: the chains' pieces, the minutes whose
    counts are compared with their attempts, and the breaks seen already."""

    def __init__(self) -> None:
        self.pieces: list[_Piece] = []
        self.counts: list[_Counts] = []
        self.breaks: list[Break] = []
        self.chains: dict[str, set[ChainKey]] = {t: set() for t in TABLES}


def _loose_chains(db: Any, table: str, sids: Sequence[int] | None) -> list[tuple[int, str]]:
    """Every (series id, vantage) with rows in `table`, one index probe each."""
    out: list[tuple[int, str]] = []
    if table == "network_rounds":
        vantage: Any = None
        while True:
            row = db.execute(
                "SELECT vantage FROM network_rounds"
                + (" WHERE vantage > ?" if vantage is not None else "")
                + " ORDER BY vantage LIMIT 1",
                (vantage,) if vantage is not None else (),
            ).fetchone()
            if row is None:
                return out
            vantage = row[0]
            out.append((0, _str(vantage)))
    if table == "minutes":
        if sids is not None:
            for sid in sids:
                if db.execute(
                    "SELECT 1 FROM minutes WHERE series_id = ? LIMIT 1", (sid,)
                ).fetchone():
                    out.append((sid, ""))
            return out
        sid = -(2**62)
        while (row := db.execute(
            "SELECT series_id FROM minutes WHERE series_id > ? ORDER BY series_id LIMIT 1",
            (sid,),
        ).fetchone()) is not None:  # fmt: skip
            sid = row[0]
            out.append((sid, ""))
        return out
    for sid in sids if sids is not None else [None]:
        at: tuple = (sid if sid is not None else -(2**62), "")
        first = True
        while True:
            if sid is not None:
                row = db.execute(
                    f"SELECT series_id, vantage FROM {table} WHERE series_id = ? AND vantage "
                    f"{'>=' if first else '>'} ? ORDER BY vantage LIMIT 1",
                    at,
                ).fetchone()
            else:
                row = db.execute(
                    f"SELECT series_id, vantage FROM {table} WHERE (series_id, vantage) "
                    f"{'>=' if first else '>'} (?, ?) ORDER BY series_id, vantage LIMIT 1",
                    at,
                ).fetchone()
            if row is None:
                break
            first = False
            at = (row[0], row[1])
            out.append((row[0], _str(row[1])))
    return out


def _plan(
    db: Any,
    target: str | None,
    since: int | None,
    until: int | None,
    checkpoints: Sequence[Head],
) -> _Plan:
    plan = _Plan()
    names = _names(db)
    sids = None if target is None else sorted(s for s, (t, _p) in names.items() if t == target)
    heads_at = {
        (_str(t), sid, _str(v)): (seq, bytes(h))
        for t, sid, v, seq, h in db.execute(
            "SELECT tbl, series_id, vantage, seq, hash FROM chain_heads"
        ).fetchall()
    }
    seals = {
        (_str(t), sid, _str(v)): (seq, bytes(h), minute)
        for t, sid, v, seq, h, minute in db.execute(
            "SELECT tbl, series_id, vantage, seq, hash, minute FROM chain_seals"
        ).fetchall()
    }

    def key_of(table: str, sid: int, vantage: str) -> ChainKey:
        t, p = names.get(sid, ("", ""))
        return ChainKey(table, t, p, vantage)

    tables = TABLES if target is None else TABLES[:3]
    ranged = since is not None or until is not None
    lo_minute = since if since is not None else -(2**62)
    hi_minute = until if until is not None else 2**62
    for table in tables:
        where = _CHAIN_WHERE[table]
        for sid, vantage in _loose_chains(db, table, sids):
            key = key_of(table, sid, vantage)
            params = _chain_params(table, sid, vantage)
            head = heads_at.get((table, sid, vantage))
            loose = db.execute(
                f"SELECT min(minute) FROM {table} WHERE {where} AND seq IS NULL", params
            ).fetchone()[0]
            if loose is not None:
                plan.breaks.append(
                    Break(key, None, loose, "a row outside its chain (no seq or hash): added "
                          "outside the ledger's writes")
                )  # fmt: skip
            if head is None or head[0] == 0:
                first = db.execute(
                    f"SELECT min(minute) FROM {table} WHERE {where}", params
                ).fetchone()[0]
                plan.breaks.append(
                    Break(key, None, first, "rows without a chain head (the head was deleted, "
                          "or the rows were added outside the ledger)")
                )  # fmt: skip
        for (t, sid, vantage), (seq, digest) in heads_at.items():
            if t != table or seq <= 0 or (sids is not None and sid not in sids):
                continue
            key = key_of(table, sid, vantage)
            plan.chains[table].add(key)
            sealed = seals.get((table, sid, vantage), (0, b"", None))[0]
            lo, hi = sealed + 1, seq
            if ranged:
                bounds = _range_seqs(
                    db, table, _chain_params(table, sid, vantage), lo_minute, hi_minute
                )
                if bounds is None:
                    continue
                lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
                if lo > hi:
                    continue
            start = lo
            while start <= hi:
                end = min(hi, start + PIECE - 1)
                plan.pieces.append(
                    _Piece(key, sid, vantage, start, end, digest, start == lo, end == seq, sealed)
                )
                start = end + 1
    _plan_counts(db, plan, names, sids, seals, lo_minute, hi_minute)
    _check_checkpoints(db, plan, names, heads_at, seals, checkpoints)
    return plan


def _range_seqs(
    db: Any, table: str, params: tuple, since: int, until: int
) -> tuple[int, int] | None:
    """The seqs to check for minutes [since, until): from the row just before them (by
    minute) to the row just after, so rows deleted at either end show as a gap."""
    where = _CHAIN_WHERE[table]
    inside = db.execute(
        f"SELECT min(seq), max(seq) FROM {table} WHERE {where} AND minute >= ? AND minute < ?",
        (*params, since, until),
    ).fetchone()
    before = db.execute(
        f"SELECT seq FROM {table} WHERE {where} AND minute < ? ORDER BY minute DESC LIMIT 1",
        (*params, since),
    ).fetchone()
    after = db.execute(
        f"SELECT seq FROM {table} WHERE {where} AND minute >= ? ORDER BY minute LIMIT 1",
        (*params, until),
    ).fetchone()
    found = [s for s in (*inside, before and before[0], after and after[0]) if s is not None]
    if inside[0] is None and (before is None or after is None):
        return None
    return min(found), max(found)


def _plan_counts(
    db: Any,
    plan: _Plan,
    names: dict[int, tuple[str, str]],
    sids: Sequence[int] | None,
    seals: dict[tuple[str, int, str], tuple[int, bytes, int]],
    since: int,
    until: int,
) -> None:
    """Each probe's minutes from its oldest attempt kept (after the retention seals) to its
    newest: their counts must not exceed the attempts held."""
    for sid in sids if sids is not None else sorted(names):
        target, probe = names[sid]
        if not probe:
            continue
        lo, hi = db.execute(
            "SELECT min(minute), max(minute) FROM attempts WHERE series_id = ?", (sid,)
        ).fetchone()
        if lo is None:
            continue
        sealed = [m for (t, s, _v), (_q, _h, m) in seals.items() if t == "attempts" and s == sid]
        lo = max(lo, since, *(m + 1 for m in sealed))
        hi = min(hi, until - 1)
        if lo <= hi:
            plan.counts.append(_Counts(ChainKey("minutes", target, probe), sid, lo, hi))


def _check_checkpoints(
    db: Any,
    plan: _Plan,
    names: dict[int, tuple[str, str]],
    heads_at: dict[tuple[str, int, str], tuple[int, bytes]],
    seals: dict[tuple[str, int, str], tuple[int, bytes, int]],
    checkpoints: Sequence[Head],
) -> None:
    """Each checkpoint head must still be in the ledger, at its seq, with its hash."""
    ids = {v: k for k, v in names.items()}
    for head in checkpoints:
        key = head.key
        sid = 0 if key.table == "network_rounds" else ids.get((key.target, key.probe))
        at = (key.table, sid, key.vantage)
        if key.table not in TABLES or sid is None or at not in heads_at:
            plan.breaks.append(
                Break(key, head.seq, None, "a checkpoint names this chain, and the ledger no "
                      "longer has it (deleted)")
            )  # fmt: skip
            continue
        now = heads_at[at][0]
        if head.seq > now:
            plan.breaks.append(
                Break(key, head.seq, None, f"a checkpoint recorded seq {head.seq}, and the "
                      f"chain now ends at seq {now}: its tail was cut")
            )  # fmt: skip
            continue
        row = db.execute(
            f"SELECT hash, minute FROM {key.table} WHERE {_CHAIN_WHERE[key.table]} AND seq = ?",
            (*_chain_params(key.table, sid, key.vantage), head.seq),
        ).fetchone()
        if row is None:
            sealed = seals.get(at)
            if sealed is not None and head.seq <= sealed[0]:
                if head.seq == sealed[0] and sealed[1] != head.hash:
                    plan.breaks.append(
                        Break(key, head.seq, sealed[2], "the retention seal does not have the "
                              "hash a checkpoint recorded for its row (rewritten)")
                    )  # fmt: skip
                continue  # pruned after the checkpoint: nothing left to compare
            plan.breaks.append(
                Break(key, head.seq, None, "the row a checkpoint recorded is missing (deleted)")
            )
        elif bytes(row[0]) != head.hash:
            plan.breaks.append(
                Break(key, head.seq, row[1], "the ledger no longer extends a checkpoint: the "
                      "row it recorded has another hash now (rewritten)")
            )  # fmt: skip


def verify(
    ledger: Ledger,
    *,
    target: str | None = None,
    since: int | None = None,
    until: int | None = None,
    checkpoints: Sequence[Head] = (),
    workers: int | None = None,
) -> VerifyResult:
    """Walk the chains (of one target, of minutes [since, until) when given) and report
    what is broken: each link recomputed from the previous row's stored hash, every seq
    present once, each head and seal found, minutes' counts against their attempts, and
    each checkpoint head still in the ledger. Read-only; the rows are checked in worker
    processes (one per CPU) when there are many, each on its own connection."""
    import os
    import time

    started = time.perf_counter()
    source = _source(ledger)
    result = VerifyResult()
    db = _open(source)
    try:
        _begin_read(db)
        try:
            plan = _plan(db, target, since, until, checkpoints)
        finally:
            _end_read(db)
        units: list[_Piece | _Counts] = sorted(plan.pieces, key=lambda p: p.hi - p.lo, reverse=True)
        units += plan.counts
        total = sum(p.hi - p.lo + 1 for p in plan.pieces)
        count = workers if workers is not None else (os.cpu_count() or 1)
        found: list[tuple[str, ChainKey, _Found]] = []
        if count <= 1 or total < INLINE_ROWS or len(units) <= 1:
            for unit in units:
                table = unit.key.table if isinstance(unit, _Piece) else "counts"
                found.append((table, unit.key, _run(db, unit)))
        else:
            import multiprocessing

            context = multiprocessing.get_context("spawn")
            with context.Pool(min(count, len(units)), _worker_start, (source,)) as pool:
                found = list(pool.imap_unordered(_worker_run, units))
    finally:
        db.close()
    breaks = list(plan.breaks)
    for table, _key, part in found:
        if table != "counts":
            result.rows[table] += part.rows
        result.reclassified += part.reclassified
        breaks += part.breaks
    for table in TABLES:
        result.chains[table] = len(plan.chains[table])
    first: dict[ChainKey, Break] = {}
    for item in sorted(breaks, key=_break_order):
        first.setdefault(item.key, item)
    ordered = sorted(first.values(), key=_break_order)
    result.breaks = ordered[:MAX_BREAKS]
    result.more_breaks = max(0, len(ordered) - MAX_BREAKS)
    result.seconds = time.perf_counter() - started
    return result


def _break_order(item: Break) -> tuple:
    return (
        TABLES.index(item.key.table),
        item.key,
        item.seq if item.seq is not None else -1,
        item.minute if item.minute is not None else -1,
    )
