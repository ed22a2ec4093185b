"""The evidence pack of a service month: every failed minute with the attempts behind it,
plus a summary with checksums, ready to attach to a credit claim."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__, sla
from ..config.secrets import redact
from ..errors import UserError
from ..ledger import chain
from ..ledger.chain import ChainKey
from ..ledger.csv_cells import cells
from ..ledger.store import Ledger
from ..records import Attempt
from ..sla import State, minute_iso
from .chain_files import FILES as CHAIN_FILES
from .chain_files import write_files
from .report import Report, as_dict, render_html, render_text
from .signing import Checkpoint, CheckpointError, SigningKey, read_checkpoint
from .timestamp import Stamper, Token, request_token

# Every file a pack may consist of. A folder holding anything else is refused, even with
# --force: SHA256SUMS must describe exactly what the folder holds. The public key, the
# checkpoint, the signature and the timestamp are there when the pack was made with them.
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"  # the raw Ed25519 signature of SHA256SUMS
TIMESTAMP = "SHA256SUMS.tsr"  # an RFC 3161 timestamp response over SHA256SUMS
PUBLIC_KEY = "public_key.pem"
CHECKPOINT = "checkpoint.json"
PACK_FILES = (
    "failed_minutes.json",
    "failed_minutes.csv",
    "attempts.csv",
    "report.txt",
    "report.json",
    "report.html",
    "summary.json",
    *CHAIN_FILES,
    PUBLIC_KEY,
    CHECKPOINT,
    SUMS,
    SIGNATURE,
    TIMESTAMP,
)

ATTEMPT_FIELDS = [
    "minute",
    "vantage",
    "probe",
    "started_at",
    "duration_ms",
    "outcome",
    "error_kind",
    "error_code",
    "http_status",
    "detail",
]


def iso_millis(seconds: float) -> str:
    """An instant as attempts.csv writes it: ISO-8601 UTC to the millisecond."""
    return (
        datetime.fromtimestamp(seconds, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _attempt_record(attempt: Attempt) -> dict[str, Any]:
    return {
        "minute": minute_iso(attempt.minute),
        "vantage": attempt.vantage,
        "probe": attempt.probe,
        "started_at": iso_millis(attempt.started_at),
        "duration_ms": round(attempt.duration * 1000, 1),
        "outcome": str(attempt.outcome),
        "error_kind": attempt.error_kind,
        "error_code": attempt.error_code,
        "http_status": attempt.http_status,
        "detail": redact(attempt.detail),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare_folder(out_dir: Path, force: bool) -> None:
    """A new or empty folder; with `force`, one holding an earlier pack, whose files are
    removed first. Anything else in it (or a pack name that is not a plain file) is refused
    and nothing is touched."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        entries = sorted(os.listdir(out_dir))
    except OSError as exc:
        raise UserError(
            f"{out_dir}: cannot create the evidence folder: {exc.strerror or exc}"
        ) from None
    if not entries:
        return
    if not force:
        raise UserError(
            f"{out_dir}: not empty ({len(entries)} entries, e.g. {entries[0]}); give a new "
            "folder, or --force to replace an earlier pack in it"
        )
    foreign = [
        name
        for name in entries
        if name not in PACK_FILES or not stat.S_ISREG((out_dir / name).lstat().st_mode)
    ]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise UserError(
            f"{out_dir}: holds files that are not part of an evidence pack ({shown}); "
            "--force only replaces a pack's own files, so give a new folder"
        )
    for name in entries:
        try:
            (out_dir / name).unlink()
        except OSError as exc:
            raise UserError(f"{out_dir / name}: cannot replace: {exc.strerror or exc}") from None


def _create(path: Path, text: str) -> None:
    """A new file (never through a link planted where the pack writes)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(path, flags, 0o644), "w", encoding="utf-8", newline="") as out:
            out.write(text)
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _create_bytes(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(path, flags, 0o644), "wb") as out:
            out.write(data)
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


def _csv_text(rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(cells(row))
    return buffer.getvalue()


def write_evidence(
    ledger: Ledger,
    report: Report,
    out_dir: Path,
    *,
    config_digest: str,
    force: bool = False,
    key: SigningKey | None = None,
    checkpoints: Iterable[tuple[str, str]] = (),
    timestamp_by: str | None = None,
) -> dict[str, str]:
    """Write the pack into `out_dir` (new or empty; with `force`, replacing an earlier
    pack); returns file name → SHA-256. With `key` the pack is signed; `checkpoints` are the
    stored ones ((where, text)) it may carry one of; `timestamp_by` names the authority
    `timestamp_pack` is to ask next (summary.json says so, as the token cannot)."""
    _prepare_folder(out_dir, force)
    month = report.month
    end = month.start_minute + report.figures.total
    failed = ledger.minutes_in_state(report.target, State.APPARENT_FAILURE, month.start_minute, end)
    failed_set = set(failed)
    by_minute: dict[int, list[Attempt]] = defaultdict(list)
    for attempt in ledger.attempts_in(report.target, month.start_minute, end):
        if attempt.minute in failed_set:
            by_minute[attempt.minute].append(attempt)

    minutes = [
        {
            "minute": minute_iso(m),
            "local_minute": sla.minute_start(m).astimezone(month.start.tzinfo).isoformat(),
            "state": str(State.APPARENT_FAILURE),
            "attempts": [_attempt_record(a) for a in by_minute.get(m, [])],
        }
        for m in failed
    ]
    files: dict[str, str] = {}

    def put(name: str, text: str) -> None:
        path = out_dir / name
        _create(path, text)
        files[name] = _sha256(path)

    put(
        "failed_minutes.json",
        json.dumps({"target": report.target, "minutes": minutes}, indent=2) + "\n",
    )
    put(
        "failed_minutes.csv",
        _csv_text(
            [
                ["minute", "local_minute", "attempts", "failures"],
                *(
                    [
                        item["minute"],
                        item["local_minute"],
                        len(item["attempts"]),
                        sum(1 for a in item["attempts"] if a["outcome"] == "failure"),
                    ]
                    for item in minutes
                ),
            ]
        ),
    )
    put(
        "attempts.csv",
        _csv_text(
            [
                list(ATTEMPT_FIELDS),
                *(
                    [attempt[k] for k in ATTEMPT_FIELDS]
                    for item in minutes
                    for attempt in item["attempts"]
                ),
            ]
        ),
    )
    put("report.txt", render_text(report))
    put("report.json", json.dumps(as_dict(report), indent=2) + "\n")
    put("report.html", render_html(report))

    # the chained rows of the month, exactly as stored, and what proves they predate the pack
    parts = chain_parts(ledger, report.target, month.start_minute, end)
    for name in write_files(out_dir, parts, report.target, month.start_minute, end):
        files[name] = _sha256(out_dir / name)
    chosen = pick_checkpoint(checkpoints, parts, report.target, key)
    if chosen is not None:
        put(CHECKPOINT, chosen.text)
    if key is not None:
        put(PUBLIC_KEY, key.public.pem)

    missing = sum(1 for m in failed if not by_minute.get(m))
    rows: dict[str, int] = defaultdict(int)
    for part in parts:
        rows[part.key.table] += len(part.rows)
    summary = {
        "target": report.target,
        "service_month": {"start": month.start.isoformat(), "end": month.end.isoformat()},
        "failed_minutes": len(failed),
        "failed_minutes_without_attempts": missing,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "prober_version": __version__,
        "config_sha256": config_digest,
        "signed_by": None if key is None else key.public.fingerprint,
        "checkpoint": None if chosen is None else chosen.time_iso,
        # the token covers SHA256SUMS, which covers this file: what was asked, not its answer
        "timestamp": timestamp_by and {"authority": timestamp_by, "token": TIMESTAMP},
        "chained_rows": dict(sorted(rows.items())),
        "files": dict(sorted(files.items())),
    }
    summary_path = out_dir / "summary.json"
    _create(summary_path, json.dumps(summary, indent=2) + "\n")
    lines = [f"{digest}  {name}" for name, digest in sorted(files.items())]
    lines.append(f"{_sha256(summary_path)}  summary.json")
    sums = "\n".join(lines) + "\n"
    _create(out_dir / SUMS, sums)
    if key is not None:  # the signature covers SHA256SUMS, and so every file it lists
        _create_bytes(out_dir / SIGNATURE, key.sign(sums.encode("ascii")))
    return {**files, "summary.json": _sha256(summary_path)}


def timestamp_pack(out_dir: Path, stamper: Stamper) -> Token:
    """The authority's token over the pack's SHA256SUMS, kept as SHA256SUMS.tsr. Raises
    TimestampError (and writes nothing) when the authority gives no usable token."""
    token = request_token(stamper, (out_dir / SUMS).read_bytes())
    _create_bytes(out_dir / TIMESTAMP, token.der)
    return token


def chain_parts(ledger: Ledger, target: str, start: int, end: int) -> list[chain.Segment]:
    """The chained rows of the target's series over [start, end), each chain with the hash
    just before its part."""
    return chain.segment(ledger, target, start, end)


def pick_checkpoint(
    stored: Iterable[tuple[str, str]],
    parts: list[chain.Segment],
    target: str,
    key: SigningKey | None,
) -> Checkpoint | None:
    """The checkpoint a pack carries: the newest one (signed by the pack's key, when it has
    one) whose head of the target's minutes falls inside the month's rows — the month-end
    checkpoint when there is one, else the last one taken during the month."""
    wanted = ChainKey("minutes", target)
    minutes = next((p for p in parts if p.key == wanted), None)
    if minutes is None or not minutes.rows:
        return None
    low, high = minutes.first_seq - 1, minutes.rows[-1][0]
    best: Checkpoint | None = None
    for _where, text in stored:
        try:
            found = read_checkpoint(text, None if key is None else key.public)
        except CheckpointError:
            continue  # another key's, or damaged: never carried as proof
        head = next(
            (h for h in found.heads if (h.table, h.target, h.probe) == ("minutes", target, "")),
            None,
        )
        if head is None or not low <= head.seq <= high:
            continue
        if best is None or found.time > best.time:
            best = found
    return best
