"""`im-prober evidence verify DIR [--key PUB]`: what an evidence pack proves, checked with
nothing but the pack's folder (and the public key the reader trusts) — no config, no
ledger, another machine.

Each check ends in one sentence: proved, not proved (nothing broken, but nothing shown
either), or broken. The checks: every file listed in SHA256SUMS and matching it, nothing
unlisted; the Ed25519 signature of SHA256SUMS, by the key the pack carries and, with --key,
by the key the reader trusts; the RFC 3161 timestamp of SHA256SUMS, its signature with
--tsa-ca; the chained rows recomputed link by link; the checkpoint's signature and its heads
against those rows; the pack's failed minutes and attempts against the chained rows.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import stat
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..ledger.chain import TABLES, Break, ChainKey, check_row
from ..ledger.codes import OUTCOMES_BY_CODE, STATE_CODES
from ..ledger.csv_cells import plain
from ..sla import State, minute_iso
from .chain_files import (
    ATTEMPT_ROWS,
    MINUTE_ROWS,
    ROUND_ROWS,
    SEGMENT,
    SEGMENT_SCHEMA,
    RowError,
    read_rows,
)
from .chain_files import FILES as CHAIN_FILES
from .evidence import (
    ATTEMPT_FIELDS,
    CHECKPOINT,
    PACK_FILES,
    PUBLIC_KEY,
    SIGNATURE,
    SUMS,
    TIMESTAMP,
    iso_millis,
)
from .signing import (
    MAX_CHECKPOINT_BYTES,
    MAX_PUBLIC_KEY_BYTES,
    Checkpoint,
    CheckpointError,
    PublicKey,
    public_key_from_pem,
    read_bounded,
    read_checkpoint,
)
from .timestamp import MAX_TOKEN_BYTES, Authority, TokenError, check_authority, read_token

MAX_ENTRIES = 100
MAX_SUMS_BYTES = 64 << 10
MAX_JSON_BYTES = 64 << 20
FAILED_CODE = STATE_CODES[State.APPARENT_FAILURE]
OVER_SUMS = (SUMS, SIGNATURE, TIMESTAMP)  # made from SHA256SUMS, so never listed in it
SUM_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9_.-]{1,100})")


class Level(Enum):
    PROVED = "proved"
    NOT_PROVED = "not proved"
    BROKEN = "BROKEN"


@dataclass
class Proof:
    folder: Path
    findings: list[tuple[Level, str]] = field(default_factory=list)
    signed_by: str | None = None  # the fingerprint, once the signature holds

    def add(self, level: Level, sentence: str) -> None:
        self.findings.append((level, sentence))

    @property
    def ok(self) -> bool:
        """Nothing broken, and signed: an unsigned pack shows nothing about who made it."""
        broken = any(level is Level.BROKEN for level, _ in self.findings)
        return not broken and self.signed_by is not None

    def render(self) -> str:
        lines = [f"evidence pack {self.folder}"]
        lines += [f"{level.value}: {sentence}" for level, sentence in self.findings]
        if self.ok:
            lines.append("result: everything checked holds")
        elif any(level is Level.BROKEN for level, _ in self.findings):
            lines.append("result: the pack does NOT hold (see BROKEN above)")
        else:
            lines.append("result: nothing is broken, but the pack is not signed")
        return "\n".join(lines) + "\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entries(folder: Path) -> dict[str, bool]:
    """The folder's entries: name → whether it is a regular file (not a link)."""
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise UserError(f"{folder}: cannot read the pack: {exc.strerror or exc}") from None
    if len(names) > MAX_ENTRIES:
        raise UserError(f"{folder}: {len(names)} entries; an evidence pack has a few files")
    return {n: stat.S_ISREG((folder / n).lstat().st_mode) for n in names}


def _check_sums(folder: Path, entries: dict[str, bool], proof: Proof) -> dict[str, str]:
    """SHA256SUMS against the folder; returns the listed name → sum."""
    if SUMS not in entries:
        proof.add(Level.BROKEN, f"there is no {SUMS}: the pack's files are not listed")
        return {}
    listed: dict[str, str] = {}
    text = read_bounded(folder / SUMS, MAX_SUMS_BYTES, "checksum list")
    try:
        lines = text.decode("ascii").splitlines()
    except UnicodeDecodeError:
        lines = ["?"]
    for number, line in enumerate(lines, 1):
        match = SUM_LINE.fullmatch(line)
        if match is None or match.group(2) in listed or match.group(2) in OVER_SUMS:
            proof.add(Level.BROKEN, f"{SUMS} line {number} is not `<sha256>  <file name>`")
            return {}
        listed[match.group(2)] = match.group(1)
    broken = []
    for name, expected in listed.items():
        if name not in entries:
            broken.append(f"{name} is listed in {SUMS} but missing")
        elif not entries[name]:
            broken.append(f"{name} is not a regular file")
        elif _sha256(folder / name) != expected:
            broken.append(f"{name} does not match its checksum: it was changed after the pack")
    for name in sorted(set(entries) - set(listed) - set(OVER_SUMS)):
        broken.append(f"{name} is in the folder but not listed in {SUMS}: it was added")
    for sentence in broken:
        proof.add(Level.BROKEN, sentence)
    if not broken:
        proof.add(
            Level.PROVED,
            f"every file is listed in {SUMS} and matches its checksum ({len(listed)} files)",
        )
    return listed


def _check_signature(
    folder: Path, entries: dict[str, bool], trusted: PublicKey | None, proof: Proof
) -> PublicKey | None:
    """The signature of SHA256SUMS; returns the pack's key when the signature holds."""
    if SIGNATURE not in entries and PUBLIC_KEY not in entries:
        level = Level.BROKEN if trusted is not None else Level.NOT_PROVED
        proof.add(
            level,
            "the pack is not signed (it was made without evidence.signing_key): nothing "
            "shows who made it",
        )
        return None
    if SIGNATURE not in entries or PUBLIC_KEY not in entries or SUMS not in entries:
        missing = [n for n in (SIGNATURE, PUBLIC_KEY, SUMS) if n not in entries]
        proof.add(Level.BROKEN, f"the signature cannot be checked: {', '.join(missing)} missing")
        return None
    try:
        key = public_key_from_pem(
            read_bounded(folder / PUBLIC_KEY, MAX_PUBLIC_KEY_BYTES, "public key"), PUBLIC_KEY
        )
    except UserError as exc:
        proof.add(Level.BROKEN, f"{exc}")
        return None
    signature = read_bounded(folder / SIGNATURE, 1024, "signature")
    sums = read_bounded(folder / SUMS, MAX_SUMS_BYTES, "checksum list")
    if not key.verifies(signature, sums):
        proof.add(
            Level.BROKEN,
            f"the signature does not hold: {SUMS} was changed after {key.fingerprint} "
            "signed it, or the signature is another pack's",
        )
        return None
    if trusted is not None and trusted.fingerprint != key.fingerprint:
        proof.add(
            Level.BROKEN,
            f"signed by key {key.fingerprint}, NOT by the key you trust ({trusted.fingerprint})",
        )
        return None
    made_with = (
        ", the key you trust"
        if trusted is not None
        else (" (the key the pack carries; give --key PUB to require yours)")
    )
    proof.add(Level.PROVED, f"signed by key {key.fingerprint}{made_with}")
    proof.signed_by = key.fingerprint
    return key


def _check_timestamp(
    folder: Path, entries: dict[str, bool], tsa: Authority | None, proof: Proof
) -> None:
    """The token over SHA256SUMS: that it covers this SHA256SUMS and, with the reader's CA,
    that a timestamping certificate under it signed it; the time it proves."""
    if TIMESTAMP not in entries:
        summary = load_json(folder, "summary.json", entries)
        asked = summary.get("timestamp") if isinstance(summary, dict) else None
        authority = asked.get("authority") if isinstance(asked, dict) else None
        if tsa is not None:
            proof.add(
                Level.BROKEN,
                f"the pack holds no timestamp ({TIMESTAMP}), and you asked for one by an "
                f"authority {tsa.source} vouches for",
            )
        elif isinstance(authority, str):
            proof.add(
                Level.NOT_PROVED,
                f"the pack was to be timestamped by {authority[:200]} but holds no token (the "
                "authority gave none when it was made): only its maker says when it was made",
            )
        else:
            proof.add(
                Level.NOT_PROVED,
                "the pack has no timestamp (made without evidence.timestamp_authority): only "
                "its maker says when it was made",
            )
        return
    if not entries[TIMESTAMP] or not entries.get(SUMS):
        proof.add(
            Level.BROKEN,
            f"the timestamp cannot be checked: {TIMESTAMP} or {SUMS} is not a regular file",
        )
        return
    data = read_bounded(folder / TIMESTAMP, MAX_TOKEN_BYTES, "timestamp token")
    sums = read_bounded(folder / SUMS, MAX_SUMS_BYTES, "checksum list")
    try:
        token = read_token(data, sums)
        if tsa is not None:
            check_authority(token, sums, tsa)
    except TokenError as exc:
        proof.add(Level.BROKEN, f"the timestamp {TIMESTAMP} does not hold: {exc}")
        return
    if tsa is None:
        proof.add(
            Level.NOT_PROVED,
            f"timestamp present but its authority not checked: the token says {SUMS} existed "
            f"at {token.time_iso} by {token.authority}; give --tsa-ca FILE (the authority's "
            "CA certificate) to check who signed it",
        )
    else:
        proof.add(
            Level.PROVED,
            f"{SUMS} existed at {token.time_iso} by {token.authority} (its token signed "
            f"under {tsa.source})",
        )


def _checkpoint(
    folder: Path,
    entries: dict[str, bool],
    trusted: PublicKey | None,
    pack_key: PublicKey | None,
    proof: Proof,
) -> Checkpoint | None:
    if CHECKPOINT not in entries:
        proof.add(
            Level.NOT_PROVED,
            "the pack holds no checkpoint: nothing shows these rows had left the machine "
            "before the pack was made",
        )
        return None
    text = read_bounded(folder / CHECKPOINT, MAX_CHECKPOINT_BYTES, "checkpoint")
    try:
        found = read_checkpoint(text.decode("utf-8", "replace"), trusted or pack_key)
    except CheckpointError as exc:
        proof.add(Level.BROKEN, f"{CHECKPOINT}: {exc}")
        return None
    return found


def load_json(folder: Path, name: str, entries: dict[str, bool]) -> Any:
    if not entries.get(name):
        return None
    try:
        return json.loads(read_bounded(folder / name, MAX_JSON_BYTES, name))
    except (ValueError, RecursionError):
        return None


def check_pack(
    folder: Path, trusted: PublicKey | None = None, tsa: Authority | None = None
) -> Proof:
    """Every check of a pack's folder, each with its sentence; `trusted` is the signing key
    and `tsa` the time-stamping authority's CA the reader trusts."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder (give the evidence pack's folder)")
    entries = _entries(folder)
    if not set(entries) & set(PACK_FILES):
        raise UserError(f"{folder}: not an evidence pack (no {SUMS}, no summary.json)")
    proof = Proof(folder)
    _check_sums(folder, entries, proof)
    pack_key = _check_signature(folder, entries, trusted, proof)
    _check_timestamp(folder, entries, tsa, proof)
    checkpoint = _checkpoint(folder, entries, trusted, pack_key, proof)
    seen = _check_chains(folder, entries, checkpoint, proof)
    if seen is not None:
        _check_rows_agree(folder, entries, seen, proof)
    return proof


@dataclass
class _Chain:
    """One declared chain while its rows stream by."""

    key: ChainKey
    prev: bytes
    expected: int
    declared: int
    rows: int = 0
    broken: bool = False


@dataclass
class _Seen:
    """What the chained rows say about the claim: the target's failed minutes, and the
    attempts of those minutes as the pack's attempts.csv shows them."""

    target: str
    start: int
    end: int
    failed: set[int] = field(default_factory=set)
    attempts: Counter[tuple[str, ...]] = field(default_factory=Counter)


def _declared(segment: Any) -> tuple[dict[ChainKey, _Chain], str, int, int]:
    if not isinstance(segment, dict) or segment.get("schema") != SEGMENT_SCHEMA:
        raise ValueError(f"{SEGMENT} is not a chain segment ({SEGMENT_SCHEMA})")
    chains: dict[ChainKey, _Chain] = {}
    for item in segment.get("chains") or []:
        key = ChainKey(item["table"], item["target"], item["probe"], item["vantage"])
        if key.table not in TABLES or key in chains:
            raise ValueError(f"{SEGMENT} names {key} twice or an unknown table")
        first = int(item["first_seq"])
        chains[key] = _Chain(key, bytes.fromhex(item["prev_hash"]), first, int(item["rows"]))
    return chains, str(segment["target"]), int(segment["start_minute"]), int(segment["end_minute"])


def _attempt_key(minute: int, vantage: str, probe: str, fields: tuple[Any, ...]) -> tuple[str, ...]:
    """An attempt as attempts.csv writes it (the detail aside: it is redacted there)."""
    _, started, duration, outcome, kind, code, status, _detail = fields
    return (
        minute_iso(minute),
        vantage,
        probe,
        iso_millis(started),
        str(round(duration * 1000, 1)),
        str(OUTCOMES_BY_CODE.get(outcome, outcome)),
        kind,
        "" if code is None else str(code),
        "" if status is None else str(status),
    )


def _check_chains(
    folder: Path, entries: dict[str, bool], checkpoint: Checkpoint | None, proof: Proof
) -> _Seen | None:
    present = [name for name in CHAIN_FILES if name in entries]
    if not present:
        proof.add(
            Level.NOT_PROVED,
            "the pack carries no chained rows (made before the ledger was chained): the "
            "rows' order and completeness are not shown",
        )
        return None
    missing = [name for name in CHAIN_FILES if name not in entries]
    if missing:
        proof.add(Level.BROKEN, f"the chained rows are incomplete: {', '.join(missing)} missing")
        return None
    try:
        chains, target, start, end = _declared(load_json(folder, SEGMENT, entries))
    except (ValueError, KeyError, TypeError) as exc:
        proof.add(Level.BROKEN, f"{SEGMENT} cannot be read: {exc}")
        return None
    seen = _Seen(target, start, end)
    # the checkpoint's heads on these chains: (key, seq) → hash
    wanted = {(h_key(h), h.seq): h.hash for h in checkpoint.heads} if checkpoint else {}
    compared: list[tuple[bool, ChainKey, int]] = []
    network_failed: dict[str, set[int]] = defaultdict(set)
    for key, chain in chains.items():  # a head just before the pack's rows is its prev
        if (key, chain.expected - 1) in wanted:
            seq = chain.expected - 1
            compared.append((wanted[(key, seq)] == chain.prev, key, seq))
    breaks: list[str] = []
    done: set[ChainKey] = set()
    for name in (ROUND_ROWS, MINUTE_ROWS, ATTEMPT_ROWS):
        current: _Chain | None = None
        try:
            for line, key, row in read_rows(folder / name):
                if current is None or key != current.key:
                    if current is not None:
                        done.add(current.key)
                    if key in done:
                        breaks.append(f"{name} line {line}: the rows of {key} are not together")
                        break
                    current = chains.get(key)
                    if current is None:
                        breaks.append(
                            f"{name} line {line}: rows of {key}, a chain {SEGMENT} does not name"
                        )
                        break
                seq, digest, *values = row
                current.rows += 1
                _note(seen, key, values, network_failed)  # the claim's rows, linked or not
                if current.broken:
                    continue
                problem: str | None
                if seq != current.expected:
                    gap = "rows are missing" if seq > current.expected else "rows repeat"
                    problem, where = f"seq {seq} where {current.expected} was expected: {gap}", None
                else:
                    problem, where = check_row(
                        key, current.prev, seq, values, digest, network_failed[key.vantage]
                    )
                if problem is not None:
                    current.broken = True
                    text = Break(key, seq, values[0], problem, where).describe()
                    breaks.append(f"{name} line {line}: {text}")
                    continue
                current.prev, current.expected = digest, seq + 1
                if (key, seq) in wanted:
                    compared.append((wanted[(key, seq)] == digest, key, seq))
        except RowError as exc:
            breaks.append(str(exc))
        except OSError as exc:
            breaks.append(f"{name}: cannot be read: {exc.strerror or exc}")
    for chain in chains.values():
        if chain.rows != chain.declared and not chain.broken:
            breaks.append(
                f"{chain.key}: {SEGMENT} says {chain.declared:,} rows, the files hold "
                f"{chain.rows:,} (rows dropped or added)"
            )
    for sentence in breaks:
        proof.add(Level.BROKEN, sentence)
    counts = Counter[str]()
    for chain in chains.values():
        counts[chain.key.table] += chain.rows
    if not breaks:
        said = (
            ", ".join(f"{counts[table]:,} {WORDS[table]}" for table in TABLES if counts[table])
            or "no rows"
        )
        proof.add(
            Level.PROVED,
            f"{said} chained without a break ({len(chains)} chains, every hash recomputed "
            "from the stored values)",
        )
    if checkpoint is not None:
        _say_checkpoint(checkpoint, compared, proof)
    return seen


WORDS = {
    "minutes": "minute rows",
    "vantage_minutes": "vantage minute rows",
    "attempts": "attempts",
    "network_rounds": "network-check rounds",
}


def h_key(head: Any) -> ChainKey:
    return ChainKey(head.table, head.target, head.probe, head.vantage)


def _note(
    seen: _Seen, key: ChainKey, values: list[Any], network_failed: dict[str, set[int]]
) -> None:
    minute = values[0]
    if key.table == "network_rounds":
        if values[1]:
            network_failed[key.vantage].add(minute)
        return
    if key.target != seen.target or not seen.start <= minute < seen.end:
        return
    if key.table == "minutes" and key.probe == "" and values[1] == FAILED_CODE:
        seen.failed.add(minute)
    elif key.table == "attempts" and minute in seen.failed:
        seen.attempts[_attempt_key(minute, key.vantage, key.probe, tuple(values))] += 1


def _say_checkpoint(
    checkpoint: Checkpoint, compared: list[tuple[bool, ChainKey, int]], proof: Proof
) -> None:
    when = f"checkpoint of {checkpoint.time_iso} ({checkpoint.reason}, {checkpoint.vantage})"
    differ = [(key, seq) for same, key, seq in compared if not same]
    if not compared:
        proof.add(
            Level.NOT_PROVED,
            f"{when}: none of its heads falls inside the pack's rows, so nothing is compared",
        )
    elif not differ:
        proof.add(
            Level.PROVED,
            f"extends {when}: its {_count(len(compared), 'head')} on these chains are the "
            "pack's rows, hash for hash: those rows have not changed since it left the machine",
        )
    else:
        key, seq = differ[0]
        proof.add(
            Level.BROKEN,
            f"{when}: {len(differ)} of its {_count(len(compared), 'head')} on these chains "
            f"differ from the pack's rows (first: {key} seq {seq}): the rows were rewritten "
            "after the checkpoint",
        )


def _count(number: int, word: str) -> str:
    return f"{number:,} {word}" + ("" if number == 1 else "s")


def _csv_rows(folder: Path, name: str, entries: dict[str, bool]) -> list[list[str]] | None:
    if not entries.get(name):
        return None
    try:
        with open(folder / name, encoding="utf-8", newline="") as handle:
            return [[plain(c) for c in row] for row in csv.reader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _check_rows_agree(folder: Path, entries: dict[str, bool], seen: _Seen, proof: Proof) -> None:
    """The claim's rows (failed_minutes.csv, attempts.csv, report.json) are the chain's."""
    failed_rows = _csv_rows(folder, "failed_minutes.csv", entries)
    attempt_rows = _csv_rows(folder, "attempts.csv", entries)
    if failed_rows is None or attempt_rows is None:
        proof.add(Level.BROKEN, "failed_minutes.csv or attempts.csv is missing or unreadable")
        return
    chained = {minute_iso(m) for m in seen.failed}
    listed = [row[0] for row in failed_rows[1:] if row]
    problems = []
    extra = sorted(set(listed) - chained)
    left_out = sorted(chained - set(listed))
    if extra:
        problems.append(
            f"failed_minutes.csv lists {_count(len(extra), 'minute')} the chain does not "
            f"hold as failed (first {extra[0]})"
        )
    if left_out:
        problems.append(
            f"failed_minutes.csv leaves out {_count(len(left_out), 'failed minute')} of the "
            f"chain (first {left_out[0]})"
        )
    columns = attempt_rows[0] if attempt_rows else []
    wanted = [name for name in ATTEMPT_FIELDS if name != "detail"]  # the pack redacts detail
    if not set(wanted) <= set(columns):
        problems.append("attempts.csv does not have the columns of an evidence pack")
    else:
        index = [columns.index(c) for c in wanted]
        shown = Counter(tuple(row[i] for i in index) for row in attempt_rows[1:] if row)
        unchained = shown - seen.attempts
        missing = seen.attempts - shown
        if unchained:
            first = min(unchained)
            problems.append(
                f"attempts.csv has {_count(sum(unchained.values()), 'attempt')} the chain "
                f"does not hold (first: minute {first[0]}, probe {first[2]})"
            )
        if missing:
            first = min(missing)
            problems.append(
                f"attempts.csv leaves out {_count(sum(missing.values()), 'chained attempt')} "
                f"of the failed minutes (first: minute {first[0]}, probe {first[2]})"
            )
    report = load_json(folder, "report.json", entries)
    stated = (
        (report or {}).get("minutes", {}).get("apparent_failure")
        if isinstance(report, dict)
        else None
    )
    if stated != len(seen.failed):
        problems.append(
            f"report.json states {stated} failed minutes; the chain holds {len(seen.failed)}"
        )
    for sentence in problems:
        proof.add(Level.BROKEN, sentence)
    if not problems:
        count = sum(seen.attempts.values())
        proof.add(
            Level.PROVED,
            f"the report's {len(seen.failed):,} failed minutes and their {count:,} attempts in "
            "failed_minutes.csv and attempts.csv are the chain's rows",
        )
