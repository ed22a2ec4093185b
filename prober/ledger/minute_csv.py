"""Minute rows as CSV: `target,probe,minute,state,reason` (probe empty = target level).

Import files are hostile input: they are read as a stream (plain or gzip) and bounded in
uncompressed size, line count and line length, so a compression bomb ends in one clear error
instead of exhausting memory. Only minutes that have ended and that lie after 2000-01-01 are
accepted, and exported minutes always have four-digit years, so what `write_rows` writes
`read_rows` reads back unchanged.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import time
import zlib
from collections.abc import Collection, Container, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from ..config.models import PROBE_NAME, TARGET_NAME
from ..errors import UserError
from ..sla import OutcomeCounts, Reason, State, minute_iso
from .csv_cells import cells, plain
from .store import MinuteRow

HEADER = ["target", "probe", "minute", "state", "reason"]
MAX_ERRORS_SHOWN = 10
# Bounds of one import file. A service month of one target with three probes is ~180,000
# rows of ~45 characters; bigger histories are imported in pieces (export --since/--until).
MAX_ROWS = 1_000_000
MAX_LINE_CHARS = 4096
MAX_TEXT_CHARS = 128 * 1024 * 1024
# The earliest minute accepted: older ones are typing mistakes (0001-01-01), not history.
EARLIEST_MINUTE = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) // 60
_NO_COUNTS = OutcomeCounts()  # imported rows carry no attempt counts; one shared value


def parse_instant(text: str) -> datetime:
    """ISO-8601 with an offset or Z; a bare date or time without offset is refused."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-03-17T00:05:00Z") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (write Z or +08:00)")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+08:00 is before year 1 in UTC
        raise ValueError(f"{text!r} is out of range") from None


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
        writer.writerow(
            cells((row.target, row.probe, minute_iso(row.minute), row.state, row.reason))
        )
        count += 1
    return count


_STATES = {s.value: s for s in State}
_REASONS = {r.value: r for r in Reason}
_TARGET = re.compile(TARGET_NAME)
_PROBE = re.compile(PROBE_NAME)


class _RowChecker:
    """Checks one row at a time; names and minutes already seen are not checked again
    (a file repeats a handful of target/probe pairs over every minute)."""

    def __init__(
        self,
        targets: Container[str],
        probes: Mapping[str, Container[str]] | None,
        now_minute: int,
    ) -> None:
        self.targets = targets
        self.probes = probes
        self.now_minute = now_minute
        self._series: set[tuple[str, str]] = set()

    def _check_series(self, target: str, probe: str) -> None:
        if (target, probe) in self._series:
            return
        if not _TARGET.fullmatch(target):
            raise ValueError(f"target {target!r} is not a valid target name")
        if target not in self.targets:
            raise ValueError(f"target {target!r} is not in the config")
        if probe:
            if not _PROBE.fullmatch(probe):
                raise ValueError(f"probe {probe!r} is not a valid probe name")
            if self.probes is not None and probe not in self.probes.get(target, ()):
                raise ValueError(f"target {target} has no probe {probe!r} in the config")
        self._series.add((target, probe))

    def row(self, fields: list[str]) -> MinuteRow:
        if len(fields) != len(HEADER):
            raise ValueError(f"expected {len(HEADER)} fields, found {len(fields)}")
        target, probe, minute_text, state_text, reason_text = fields
        target, probe = plain(target.strip()), plain(probe.strip())
        minute_text, state_text, reason_text = (
            plain(minute_text.strip()),
            plain(state_text.strip()),
            plain(reason_text.strip()),
        )
        self._check_series(target, probe)
        minute = parse_minute(minute_text)
        if minute < EARLIEST_MINUTE:
            raise ValueError(f"minute {minute_text} is before 2000-01-01")
        if minute >= self.now_minute:
            raise ValueError(
                f"minute {minute_text} has not ended yet (now is "
                f"{minute_iso(self.now_minute)}): only closed minutes can be imported"
            )
        state = _STATES.get(state_text)
        if state is None:
            raise ValueError(f"state {state_text!r} is not one of {', '.join(_STATES)}")
        reason = _REASONS.get(reason_text)
        if reason is None:
            raise ValueError(
                f"reason {reason_text!r} is not one of {', '.join(r for r in _REASONS if r)}"
            )
        if (state is State.NO_DATA) != bool(reason):
            raise ValueError("no_data needs a reason, and only no_data has one")
        return MinuteRow(target, probe, minute, state, reason, _NO_COUNTS)


def _open_text(path: Path) -> TextIO:
    """The file as a text stream, gunzipped on the fly when it is gzip."""
    try:
        with path.open("rb") as probe:
            magic = probe.read(2)
        # Returned open: the caller's `with` on the text stream closes it.
        raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")  # noqa: SIM115
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _lines(path: Path, text: TextIO) -> Iterator[tuple[int, str]]:
    """Physical lines with their numbers, each at most MAX_LINE_CHARS long, the whole file at
    most MAX_TEXT_CHARS and MAX_ROWS + 1 lines: one clear error past any bound."""
    total = 0
    number = 0
    while True:
        try:
            line = text.readline(MAX_LINE_CHARS + 1)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}:{number + 1}: not UTF-8 text (byte {exc.start})") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{path}:{number + 1}: broken gzip data: {exc}") from None
        if not line:
            return
        number += 1
        total += len(line)
        if len(line) > MAX_LINE_CHARS:
            raise UserError(f"{path}:{number}: line longer than {MAX_LINE_CHARS} characters")
        if number > MAX_ROWS + 1:
            raise UserError(
                f"{path}: more than {MAX_ROWS:,} rows; import it in pieces "
                "(ledger export --since/--until)"
            )
        if total > MAX_TEXT_CHARS:
            raise UserError(
                f"{path}: more than {MAX_TEXT_CHARS // (1024 * 1024)} MiB of text "
                "(uncompressed); import it in pieces"
            )
        yield number, line


def _fields(line: str) -> list[str]:
    """One line's fields; a quoted field may not run into the next line."""
    return next(csv.reader((line,)), [])


def read_rows(
    path: Path,
    targets: Container[str],
    *,
    probes: Mapping[str, Collection[str]] | None = None,
    now: float | None = None,
) -> list[tuple[int, MinuteRow]]:
    """Every row of a minute CSV (plain or gzip), checked before anything is written:
    targets (and, given `probes`, each target's probe names) must be in the config, and each
    minute must have ended by `now` (default: the current time)."""
    checker = _RowChecker(targets, probes, int((time.time() if now is None else now) // 60))
    rows: list[tuple[int, MinuteRow]] = []
    errors: list[str] = []
    error_count = 0
    with _open_text(path) as text:
        lines = _lines(path, text)
        first = next(lines, None)
        try:
            header = _fields(first[1]) if first is not None else None
        except csv.Error as exc:
            raise UserError(f"{path}:1: {exc}") from None
        if header is None or [plain(h.strip()) for h in header] != HEADER:
            raise UserError(f"{path}:1: the header must be {','.join(HEADER)}")
        for number, line in lines:
            try:
                fields = _fields(line)
                if not fields or fields == [""]:
                    continue
                rows.append((number, checker.row(fields)))
            except (csv.Error, ValueError) as exc:
                error_count += 1
                if len(errors) < MAX_ERRORS_SHOWN:
                    errors.append(f"{path}:{number}: {exc}")
    if errors:
        more = error_count - len(errors)
        shown = errors + ([f"... and {more} more"] if more > 0 else [])
        raise UserError("nothing was imported:\n" + "\n".join(shown))
    return rows
