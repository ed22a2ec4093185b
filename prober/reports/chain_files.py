"""The chained rows an evidence pack carries, as files: `chain.json` names each chain's
part (its key, the hash just before it, its first seq and row count) and three CSV files
hold the rows with their seq and hash, every field exactly as stored — codes as the
integers the ledger keeps, times as the shortest text that reads back as the same double —
so the pack's reader recomputes every hash with `ledger.chain`'s pure functions.

Cells go through `csv_cells.cell` like every CSV the prober writes (a spreadsheet runs
none of them); `plain` undoes it exactly, so nothing is lost.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..config.secrets import redact
from ..errors import UserError
from ..ledger.chain import FIELDS, ChainKey, Segment
from ..ledger.csv_cells import cells, plain

SEGMENT = "chain.json"
SEGMENT_SCHEMA = "im-prober-chain-segment/1"
MINUTE_ROWS = "chain_minutes.csv"
ATTEMPT_ROWS = "chain_attempts.csv"
ROUND_ROWS = "chain_rounds.csv"
FILES = (SEGMENT, MINUTE_ROWS, ATTEMPT_ROWS, ROUND_ROWS)
# which file holds a table's rows, and the key columns before seq and hash
FILE_OF = {
    "minutes": MINUTE_ROWS,
    "vantage_minutes": MINUTE_ROWS,
    "attempts": ATTEMPT_ROWS,
    "network_rounds": ROUND_ROWS,
}
KEY_COLUMNS = {
    MINUTE_ROWS: ("table", "target", "probe", "vantage"),
    ATTEMPT_ROWS: ("target", "probe", "vantage"),
    ROUND_ROWS: ("vantage",),
}
TABLE_OF_FILE = {ATTEMPT_ROWS: "attempts", ROUND_ROWS: "network_rounds"}
# A cell longer than this is not a value the ledger writes (details are capped far below).
MAX_CELL = 1 << 20


def header(name: str) -> list[str]:
    table = TABLE_OF_FILE.get(name, "minutes")
    return [*KEY_COLUMNS[name], "seq", "hash", *(f for f, _ in FIELDS[table])]


def _key_cells(name: str, key: ChainKey) -> list[str]:
    return [getattr(key, column) for column in KEY_COLUMNS[name]]


def _value(kind: str, value: Any) -> object:
    if kind == "f":
        return repr(float(value))  # the shortest text that reads back as the same double
    if kind == "t":
        # Stored details are redacted when made; should one still hold a known secret, the
        # pack shows it redacted (and that row's hash no longer checks) rather than leak it.
        return redact(value)
    return value


def write_files(
    out_dir: Path, parts: Iterable[Segment], target: str, start: int, end: int
) -> list[str]:
    """Write the segment's files (new files, streamed); returns their names."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    handles = {}
    writers = {}
    described = []
    try:
        for name in (MINUTE_ROWS, ATTEMPT_ROWS, ROUND_ROWS):
            handle = os.fdopen(
                os.open(out_dir / name, flags, 0o644), "w", encoding="utf-8", newline=""
            )
            handles[name] = handle
            writers[name] = csv.writer(handle, lineterminator="\n")
            writers[name].writerow(header(name))
        for part in sorted(parts, key=lambda p: p.key):
            name = FILE_OF[part.key.table]
            kinds = [kind for _, kind in FIELDS[part.key.table]]
            keyed = _key_cells(name, part.key)
            for seq, digest, *values in part.rows:
                row = [*keyed, seq, bytes(digest).hex()]
                row += [_value(kind, v) for kind, v in zip(kinds, values, strict=True)]
                writers[name].writerow(cells(row))
            described.append(
                {
                    "table": part.key.table,
                    "target": part.key.target,
                    "probe": part.key.probe,
                    "vantage": part.key.vantage,
                    "prev_hash": part.prev.hex(),
                    "first_seq": part.first_seq,
                    "rows": len(part.rows),
                }
            )
    except OSError as exc:
        raise UserError(f"{exc.filename or out_dir}: cannot write: {exc.strerror or exc}") from None
    finally:
        for handle in handles.values():
            handle.close()
    text = json.dumps(
        {
            "schema": SEGMENT_SCHEMA,
            "target": target,
            "start_minute": start,
            "end_minute": end,
            "chains": described,
        },
        indent=1,
    )
    try:
        with os.fdopen(os.open(out_dir / SEGMENT, flags, 0o644), "w", encoding="utf-8") as out:
            out.write(text + "\n")
    except OSError as exc:
        raise UserError(f"{out_dir / SEGMENT}: cannot write: {exc.strerror or exc}") from None
    return list(FILES)


class RowError(ValueError):
    """A row of a chain file that cannot be read: where and why."""


def _parse(kind: str, text: str) -> Any:
    if kind == "i":
        return int(text)
    if kind == "f":
        return float(text)
    if kind == "n":
        return None if text == "" else int(text)
    return text


def read_rows(path: Path) -> Iterator[tuple[int, ChainKey, tuple[Any, ...]]]:
    """(line, chain key, (seq, hash, *fields)) of every row of one chain file, streamed.
    Raises RowError at the first row that is not one."""
    name = path.name
    columns = header(name)
    count = len(KEY_COLUMNS[name])
    table_of_file = TABLE_OF_FILE.get(name)
    csv.field_size_limit(MAX_CELL)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        try:
            first = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise RowError(f"{name} line 1: {exc}") from None
        if first != columns:
            raise RowError(f"{name} line 1: the header is not {','.join(columns)}")
        line = 1
        try:
            for raw in reader:
                line = reader.line_num
                if len(raw) != len(columns):
                    raise RowError(f"{name} line {line}: {len(raw)} cells, not {len(columns)}")
                values = [plain(cell) for cell in raw]
                names = dict(zip(KEY_COLUMNS[name], values[:count], strict=True))
                table = table_of_file or names["table"]
                if table not in ("minutes", "vantage_minutes") and table_of_file is None:
                    raise RowError(f"{name} line {line}: table {table!r} does not belong here")
                key = ChainKey(
                    table, names.get("target", ""), names.get("probe", ""), names["vantage"]
                )
                try:
                    seq = int(values[count])
                    digest = bytes.fromhex(values[count + 1])
                    fields = tuple(
                        _parse(kind, text)
                        for (_, kind), text in zip(FIELDS[table], values[count + 2 :], strict=True)
                    )
                except ValueError:
                    raise RowError(
                        f"{name} line {line}: a seq, hash or field is not of its kind"
                    ) from None
                yield line, key, (seq, digest, *fields)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise RowError(f"{name} line {line}: {exc}") from None
