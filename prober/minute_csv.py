"""Minute rows as CSV: `target,probe,minute,state,reason` (probe empty = target level)."""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Container, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from .config import PROBE_NAME, TARGET_NAME
from .errors import UserError
from .ledger import MinuteRow
from .sla import Reason, State, minute_iso

HEADER = ["target", "probe", "minute", "state", "reason"]
MAX_ERRORS_SHOWN = 10


def parse_instant(text: str) -> datetime:
    """ISO-8601 with an offset or Z; a bare date or time without offset is refused."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-03-17T00:05:00Z") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (write Z or +08:00)")
    return value.astimezone(UTC)


def parse_minute(text: str) -> int:
    instant = parse_instant(text)
    if instant.second or instant.microsecond:
        raise ValueError(f"{text!r} is not the start of a minute")
    return int(instant.timestamp()) // 60


def write_rows(rows: Iterable[MinuteRow], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for row in rows:
        writer.writerow([row.target, row.probe, minute_iso(row.minute), row.state, row.reason])
        count += 1
    return count


def _parse_row(fields: list[str], targets: Container[str]) -> MinuteRow:
    if len(fields) != len(HEADER):
        raise ValueError(f"expected {len(HEADER)} fields, found {len(fields)}")
    target, probe, minute_text, state_text, reason_text = (f.strip() for f in fields)
    if not re.match(TARGET_NAME, target):
        raise ValueError(f"target {target!r} is not a valid target name")
    if target not in targets:
        raise ValueError(f"target {target!r} is not in the config")
    if probe and not re.match(PROBE_NAME, probe):
        raise ValueError(f"probe {probe!r} is not a valid probe name")
    minute = parse_minute(minute_text)
    try:
        state = State(state_text)
    except ValueError:
        raise ValueError(
            f"state {state_text!r} is not one of {', '.join(s.value for s in State)}"
        ) from None
    try:
        reason = Reason(reason_text)
    except ValueError:
        raise ValueError(
            f"reason {reason_text!r} is not one of {', '.join(r.value for r in Reason if r)}"
        ) from None
    if (state is State.NO_DATA) != bool(reason):
        raise ValueError("no_data needs a reason, and only no_data has one")
    return MinuteRow(target, probe, minute, state, reason)


def _open_text(path: Path) -> TextIO:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: broken gzip data: {exc}") from None
    try:
        return io.StringIO(raw.decode("utf-8-sig"), newline="")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_rows(path: Path, targets: Container[str]) -> list[tuple[int, MinuteRow]]:
    """Every row of a minute CSV (plain or gzip), checked before anything is written."""
    reader = csv.reader(_open_text(path))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise UserError(f"{path}:1: {exc}") from None
    if header is None or [h.strip() for h in header] != HEADER:
        raise UserError(f"{path}:1: the header must be {','.join(HEADER)}")
    rows: list[tuple[int, MinuteRow]] = []
    errors: list[str] = []
    iterator: Iterator[list[str]] = reader
    while True:
        try:
            fields = next(iterator)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(f"{path}:{reader.line_num}: {exc}")
            break
        line = reader.line_num
        if not fields or fields == [""]:
            continue
        try:
            rows.append((line, _parse_row(fields, targets)))
        except ValueError as exc:
            errors.append(f"{path}:{line}: {exc}")
    if errors:
        more = len(errors) - MAX_ERRORS_SHOWN
        shown = errors[:MAX_ERRORS_SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        raise UserError("nothing was imported:\n" + "\n".join(shown))
    return rows
