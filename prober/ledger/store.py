"""The ledger: minutes, attempts and running totals, in one SQLite file (WAL; the default,
for one prober: `sqlite_file`) or one PostgreSQL database (a fleet's shared ledger:
`postgres`). The statements here are the SQL both engines run; what differs (opening,
column types, where the schema version lives, PRAGMAs, reconnecting) is the backend's.

Tables:
- `series`: one row per (target, probe); probe '' is the target-level verdict.
- `minutes`: one row per series and closed minute (epoch minute, UTC), written once.
- `attempts`: the evidence behind the minutes, pruned after the retention period; each
  carries the vantage (prober instance) that made it and is stored within about a second of
  ending, before its minute closes, so a restart or a crash loses at most that second.
- `network_rounds`: each vantage's network-check rounds per minute, stored like attempts, so
  a minute decided after a restart knows what the check found before it.
- `vantage_minutes` / `vantage_totals`: per-vantage verdicts in a fleet of probers (the
  fleet verdict is the `minutes` row); `vantages`: each prober's heartbeat and progress.
- `verdict_totals` / `attempt_totals`: running counts kept in the same transactions, so
  metrics and start-up read a few rows instead of scanning millions.
States, reasons and outcomes are stored as small integers (see `sla.types`); the
`minute_rows` view shows them by name for anyone reading the ledger with `sqlite3` or
`psql`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import LedgerError, UserError
from ..records import Attempt, ClosedMinute
from ..sla import Outcome, OutcomeCounts, Reason, State, Verdict, minute_iso
from .chain import LINKERS, ChainKey, genesis, key_bytes
from .codes import (
    OUTCOME_CODES,
    OUTCOMES_BY_CODE,
    REASON_CODES,
    REASONS_BY_CODE,
    STATE_CODES,
    STATES_BY_CODE,
)
from .sqlite_file import APPLICATION_ID as APPLICATION_ID
from .sqlite_file import LINK_COLUMNS, SqliteFile, split_sql
from .sqlite_file import MIGRATIONS as _MIGRATIONS

if TYPE_CHECKING:
    from .postgres import PostgresConnection

SCHEMA_VERSION = len(_MIGRATIONS)
TARGET_LEVEL = ""  # the probe name of target-level rows
_NO_END = 2**62  # an epoch minute later than any real one: "no upper bound" in queries
# A restart looks this far back for minutes its vantage stored attempts of but never closed.
RECOVERY_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """One minute verdict as exported and imported."""

    target: str
    probe: str
    minute: int
    state: State
    reason: Reason = Reason.NONE
    counts: OutcomeCounts = field(default_factory=OutcomeCounts)


@dataclass(frozen=True, slots=True)
class NetworkRound:
    """One network-check round of a vantage: did every reference fail?"""

    vantage: str
    minute: int
    all_failed: bool


@dataclass(slots=True)
class PendingEvidence:
    """What a vantage has finished but not stored yet, written before the minutes."""

    vantage: str
    attempts: list[Attempt] = field(default_factory=list)
    rounds: list[NetworkRound] = field(default_factory=list)
    seen_at: float = 0.0  # when the vantage handed it over: its heartbeat in the ledger


@dataclass(frozen=True, slots=True)
class Evidence:
    attempts: list[Attempt]
    rounds: list[NetworkRound]


_ATTEMPT_COLUMNS = (
    "s.target, s.probe, a.started_at, a.duration, a.outcome, a.error_kind, a.error_code, "
    "a.http_status, a.detail, a.vantage"
)


def _attempt(row: tuple) -> Attempt:
    t, p, started, duration, o, kind, code, status, detail, vantage = row
    return Attempt(
        t,
        p,
        started,
        duration,
        OUTCOMES_BY_CODE[o],
        kind,
        code,
        status,
        detail,
        vantage=vantage,
    )


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: int
    unchanged: int


class ImportConflict(UserError):
    pass


class Ledger:
    """The ledger. `location` is the SQLite file's path, or a PostgreSQL URL (with
    `password`). Opened for writing (the daemon, `ledger import`), it is created and
    migrated as needed; opened with `readonly=True` (report, export, evidence) it is only
    read and never changed: no migration, and for SQLite no pragma that writes, SQLite's
    read-only mode where the user may not write the file or its folder, so a file the user
    may only read works and a file that is not a ledger yet stays exactly as it was."""

    def __init__(
        self,
        location: str | Path,
        *,
        create: bool = True,
        readonly: bool = False,
        password: str | None = None,
    ) -> None:
        from .. import __version__

        self.readonly = readonly
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str], int] = {}
        self._created: list[tuple[str, str]] = []  # series added by the open transaction
        self._chain_keys: dict[tuple[str, int, str], ChainKey] = {}
        self._key_bytes: dict[tuple[str, int, str], bytes] = {}  # chain.key_bytes of each
        self._names: dict[int, tuple[str, str]] = {}  # series id -> (target, probe)
        created_by = f"im-prober {__version__}"
        self._db: SqliteFile | PostgresConnection
        if is_url(location):
            from .postgres import open_database

            self.path: Path | None = None
            self._db = open_database(
                str(location), password, create=create, readonly=readonly, created_by=created_by
            )
        else:
            self.path = Path(location)
            self._db = SqliteFile(
                self.path, _MIGRATIONS, create=create, readonly=readonly, created_by=created_by
            )
        self.where = self._db.where
        # rows the migration to schema 3 chained, per table (None: this open migrated none)
        self.chained = self._db.chained
        try:
            self._load_series()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise LedgerError(f"{self.where}: cannot read the ledger: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def _load_series(self) -> None:
        self._series = {
            (t, p): i for i, t, p in self._db.execute("SELECT id, target, probe FROM series")
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- series -------------------------------------------------------------------------

    def _series_id(self, target: str, probe: str = TARGET_LEVEL) -> int:
        key = (target, probe)
        found = self._series.get(key)
        if found is None:
            self._db.execute(
                "INSERT INTO series (target, probe) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (target, probe),
            )
            found = self._db.execute(
                "SELECT id FROM series WHERE target = ? AND probe = ?", (target, probe)
            ).fetchone()[0]
            self._series[key] = found
            self._created.append(key)
        return found

    def _existing_series(self, target: str, probe: str = TARGET_LEVEL) -> int | None:
        """The series' id, or None if it has no rows yet. A series not known here is looked
        up (on a shared ledger another prober may have added it since this one opened)."""
        key = (target, probe)
        found = self._series.get(key)
        if found is None:
            with self._lock:
                row = self._db.execute(
                    "SELECT id FROM series WHERE target = ? AND probe = ?", key
                ).fetchone()
            if row is not None:
                found = self._series[key] = row[0]
        return found

    def refresh_series(self) -> None:
        """Read the series again: on a shared (PostgreSQL) ledger other probers add some."""
        with self._lock:
            self._load_series()

    def chain_key(self, key: tuple[str, int, str]) -> ChainKey:
        """The names of the chain (table, series id, vantage); network rounds' id is 0."""
        found = self._chain_keys.get(key)
        if found is None:
            table, sid, vantage = key
            target = probe = ""
            if sid:
                names = self._names.get(sid)
                if names is None:
                    self._names = {v: k for k, v in self._series.items()}
                    names = self._names.get(sid)
                if names is None:
                    row = self._db.execute(
                        "SELECT target, probe FROM series WHERE id = ?", (sid,)
                    ).fetchone()
                    if row is None:
                        raise LedgerError(f"{self.where}: series {sid} is not in the ledger")
                    names = self._names[sid] = (row[0], row[1])
                target, probe = names
            found = self._chain_keys[key] = ChainKey(table, target, probe, vantage)
        return found

    # -- writes -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def store_evidence(self, evidence: PendingEvidence) -> None:
        """Store a vantage's finished attempts and rounds, and its heartbeat."""
        with self._transaction() as tx:
            tx.insert_pending(evidence.attempts, evidence.rounds)
            tx.heartbeat(evidence.vantage, evidence.seen_at, None)

    def write_minutes(
        self, closed: Iterable[ClosedMinute], pending: PendingEvidence | None = None
    ) -> list[ClosedMinute]:
        """Write closed minutes, all in one transaction. A minute that is already in the
        ledger is left as it is (a minute is written once). Returns the items written.

        The daemon stores attempts as they end and passes those not stored yet as `pending`
        (written first, in the same transaction); without it, each minute's own attempts
        are stored with it (imports, tools, tests). A minute whose network check failed
        turns its vantage's stored failures into prober_fault, as the verdict did."""
        closed = list(closed)  # read more than once below: a generator would be spent
        with self._transaction() as tx:
            tx.prepare_chains(self.minute_chains(tx, closed, pending))
            return self.write_minutes_in(tx, closed, pending)

    def minute_chains(
        self, tx: _Transaction, closed: Sequence[ClosedMinute], pending: PendingEvidence | None
    ) -> list[tuple[str, int, str]]:
        """Every chain a write of `closed` may extend, to be locked at once (one order for
        all writers, so two never deadlock)."""
        chains = [
            ("minutes", self._series_id(item.target, probe), "")
            for item in closed
            for probe in (TARGET_LEVEL, *item.probes)
        ]
        if pending is None:
            chains += tx.attempt_chains(a for item in closed for a in item.attempts)
        else:
            chains += tx.pending_chains(pending.attempts, pending.rounds)
        return chains

    def write_minutes_in(
        self,
        tx: _Transaction,
        closed: Sequence[ClosedMinute],
        pending: PendingEvidence | None = None,
    ) -> list[ClosedMinute]:
        """write_minutes inside a transaction already open, its chains prepared."""
        written: list[ClosedMinute] = []
        moved: set[int] = set()  # minutes whose failures were made prober faults
        if pending is not None:
            tx.insert_pending(pending.attempts, pending.rounds)
            newest = max((item.minute for item in closed), default=None)
            tx.heartbeat(pending.vantage, pending.seen_at, newest)
        # The target-level rows first, in one statement: which minutes are new.
        keyed = [(self._series_id(item.target), item) for item in closed]
        new = tx.insert_minutes([(sid, i.minute, i.verdict, i.counts) for sid, i in keyed])
        probe_rows: list[tuple[int, int, Verdict, OutcomeCounts]] = []
        attempt_rows: list[tuple] = []
        for sid, item in keyed:
            if (sid, item.minute) not in new:
                continue
            new.discard((sid, item.minute))  # the same minute twice in a batch: once
            written.append(item)
            for probe, (verdict, counts) in item.probes.items():
                psid = self._series_id(item.target, probe)
                probe_rows.append((psid, item.minute, verdict, counts))
                if not item.attempts:
                    # a fleet's minute: its vantages' summed counts are its attempts
                    tx.count_outcomes(psid, counts)
            for attempt in item.attempts:
                asid = self._series_id(item.target, attempt.probe)
                if pending is None:
                    attempt_rows.append(_attempt_row(asid, attempt))
                tx.count_attempt(asid, attempt)
            if pending is not None and item.network_failed and item.minute not in moved:
                moved.add(item.minute)
                tx.reclassify_network_failures(item.minute, pending.vantage)
        tx.insert_minutes(probe_rows)
        tx.insert_attempt_rows(attempt_rows)
        return written

    def record_gap(
        self,
        target: str,
        probes: Iterable[str],
        start: int,
        end: int,
        verdict_of: Callable[[int], Verdict] | None = None,
    ) -> int:
        """Mark minutes [start, end) that have no row as `no_data`/`prober_down` (or what
        `verdict_of` says, e.g. maintenance), for the target and each probe. Returns how many
        target minutes were recorded."""
        if end <= start:
            return 0
        down = Verdict(State.NO_DATA, Reason.PROBER_DOWN)
        decide = verdict_of or (lambda _minute: down)
        recorded = 0
        probes = (TARGET_LEVEL, *probes)
        with self._transaction() as tx:
            tx.prepare_chains([("minutes", self._series_id(target, p), "") for p in probes])
            for probe in probes:
                sid = self._series_id(target, probe)
                added = tx.insert_many(sid, ((m, decide(m)) for m in range(start, end)))
                if probe == TARGET_LEVEL:
                    recorded = added
        return recorded

    def import_rows(self, rows: Iterable[tuple[int, MinuteRow]]) -> ImportResult:
        """Add minute rows (numbered by their source line). Identical rows already present are
        skipped; a conflicting row aborts the whole import and changes nothing."""
        added = unchanged = 0
        batch: dict[tuple[str, str, int], tuple[int, MinuteRow]] = {}
        for line, row in rows:
            key = (row.target, row.probe, row.minute)
            earlier = batch.get(key)
            if earlier is not None:
                if (earlier[1].state, earlier[1].reason) != (row.state, row.reason):
                    raise ImportConflict(
                        f"line {line}: {row.target}/{row.probe or '-'} at "
                        f"{minute_iso(row.minute)} contradicts line {earlier[0]}"
                    )
                continue
            batch[key] = (line, row)
        with self._transaction() as tx:
            keyed = [(self._series_id(r.target, r.probe), line, r) for line, r in batch.values()]
            tx.prepare_chains({("minutes", sid, "") for sid, _line, _r in keyed})
            new = tx.insert_minutes(
                [(sid, r.minute, Verdict(r.state, r.reason), r.counts) for sid, _line, r in keyed]
            )
            # The rows that were there already: the same verdict, or the import is refused
            # whole (the transaction undoes what it added), at the file's first conflict.
            there = [(sid, r.minute) for sid, _line, r in keyed if (sid, r.minute) not in new]
            existing = self._minutes_at(there)
            added = len(new)
            for sid, line, row in keyed:
                if (sid, row.minute) in new:
                    continue
                state, reason = existing[(sid, row.minute)]
                if (state, reason) == (row.state, row.reason):
                    unchanged += 1
                    continue
                raise ImportConflict(
                    f"line {line}: {row.target}/{row.probe or '-'} at {minute_iso(row.minute)} "
                    f"is {row.state}{'/' + row.reason if row.reason else ''} in the file "
                    f"but {state}{'/' + reason if reason else ''} in the ledger; nothing "
                    "was imported"
                )
        return ImportResult(added, unchanged)

    def _minutes_at(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], tuple]:
        """(state, reason) of the given (series id, minute) rows: one range read per series
        where its minutes lie close together (a file imported again), else one per row."""
        by_series: dict[int, list[int]] = {}
        for sid, minute in keys:
            by_series.setdefault(sid, []).append(minute)
        found: dict[tuple[int, int], tuple] = {}
        for sid, minutes in by_series.items():
            lo, hi = min(minutes), max(minutes)
            if hi - lo < 2 * len(minutes) + 64:
                rows = self._db.execute(
                    "SELECT minute, state, reason FROM minutes WHERE series_id = ? "
                    "AND minute >= ? AND minute <= ?",
                    (sid, lo, hi),
                ).fetchall()
            else:
                rows = [
                    (m, *self._db.execute(
                        "SELECT state, reason FROM minutes WHERE series_id = ? AND minute = ?",
                        (sid, m),
                    ).fetchone())
                    for m in minutes
                ]  # fmt: skip
            for minute, state, reason in rows:
                found[(sid, minute)] = (STATES_BY_CODE[state], REASONS_BY_CODE[reason])
        return found

    def prune_attempts(self, before: float, *, now: float | None = None) -> int:
        """Delete attempts that started before `before` (epoch seconds). Minutes stay.

        Each attempt chain loses a prefix: its rows up to the last one before its first
        attempt at or after `before` (an attempt stored out of order stays until it is
        part of the prefix), and its seal records the last row pruned, so what is left
        still links to something the ledger holds."""
        removed = 0
        db = self._db
        with self._transaction() as tx:
            chains = db.execute(
                "SELECT DISTINCT series_id, vantage FROM attempts WHERE started_at < ?",
                (before,),
            ).fetchall()
            tx.prepare_chains([("attempts", sid, vantage) for sid, vantage in chains])
            for sid, vantage in chains:
                row = db.execute(
                    "SELECT seq FROM chain_seals WHERE tbl = 'attempts' AND series_id = ? "
                    "AND vantage = ?",
                    (sid, vantage),
                ).fetchone()
                sealed = row[0] if row else 0
                # `+started_at`: the chain's index finds the first kept row, not the start's.
                kept = db.execute(
                    "SELECT seq FROM attempts WHERE series_id = ? AND vantage = ? "
                    "AND seq > ? AND +started_at >= ? ORDER BY seq LIMIT 1",
                    (sid, vantage, sealed, before),
                ).fetchone()
                last = (kept[0] - 1) if kept else tx.head_seq(("attempts", sid, vantage))
                if last <= sealed:
                    continue
                row = db.execute(
                    "SELECT hash, minute FROM attempts WHERE series_id = ? AND vantage = ? "
                    "AND seq = ?",
                    (sid, vantage, last),
                ).fetchone()
                if row is None:
                    continue  # a chain broken outside the ledger's writes: leave it to verify
                removed += db.execute(
                    "DELETE FROM attempts WHERE series_id = ? AND vantage = ? AND seq <= ?",
                    (sid, vantage, last),
                ).rowcount
                db.execute(
                    "INSERT INTO chain_seals (tbl, series_id, vantage, seq, hash, minute, "
                    "sealed_at) VALUES ('attempts', ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (tbl, series_id, vantage) DO UPDATE SET seq = excluded.seq, "
                    "hash = excluded.hash, minute = excluded.minute, "
                    "sealed_at = excluded.sealed_at",
                    (
                        sid,
                        vantage,
                        last,
                        bytes(row[0]),
                        row[1],
                        time.time() if now is None else now,
                    ),
                )
        return removed

    # -- reads --------------------------------------------------------------------------

    def last_closed_minute(self, target: str, before: int | None = None) -> int | None:
        """The newest target-level minute, or the newest before `before`: the daemon passes
        the current minute, so a row for a minute that has not happened (an import gone
        wrong) is never taken for the newest closed one."""
        sid = self._existing_series(target)
        if sid is None:
            return None
        with self._lock:
            return self._db.execute(
                "SELECT max(minute) FROM minutes WHERE series_id = ? AND minute < ?",
                (sid, _NO_END if before is None else before),
            ).fetchone()[0]

    def future_rows(self, since: int) -> dict[str, int]:
        """Target-level rows at or after minute `since`, per target (none in a sound ledger:
        a minute is written after it has ended)."""
        found: dict[str, int] = {}
        with self._lock:
            for (target, probe), sid in self._series.items():
                if probe != TARGET_LEVEL:
                    continue
                count = self._db.execute(
                    "SELECT count(*) FROM minutes WHERE series_id = ? AND minute >= ?",
                    (sid, since),
                ).fetchone()[0]
                if count:
                    found[target] = count
        return found

    def verdict_totals(self) -> dict[tuple[str, str], dict[State, int]]:
        """Running totals of minute verdicts per (target, probe); probe '' = target level."""
        out: dict[tuple[str, str], dict[State, int]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT s.target, s.probe, v.state, v.count FROM verdict_totals v "
                "JOIN series s ON s.id = v.series_id"
            ).fetchall()
        for target, probe, state, count in rows:
            out.setdefault((target, probe), {})[STATES_BY_CODE[state]] = count
        return out

    def attempt_totals(self) -> dict[tuple[str, str], dict[Outcome, int]]:
        out: dict[tuple[str, str], dict[Outcome, int]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT s.target, s.probe, a.outcome, a.count FROM attempt_totals a "
                "JOIN series s ON s.id = a.series_id"
            ).fetchall()
        for target, probe, outcome, count in rows:
            out.setdefault((target, probe), {})[OUTCOMES_BY_CODE[outcome]] = count
        return out

    def state_counts(
        self, target: str, start: int, end: int, probe: str = TARGET_LEVEL
    ) -> dict[State, int]:
        """How many minutes in [start, end) have each state."""
        counts = dict.fromkeys(State, 0)
        sid = self._existing_series(target, probe)
        if sid is None:
            return counts
        with self._lock:
            rows = self._db.execute(
                "SELECT state, count(*) FROM minutes WHERE series_id = ? AND minute >= ? "
                "AND minute < ? GROUP BY state",
                (sid, start, end),
            ).fetchall()
        for state, count in rows:
            counts[STATES_BY_CODE[state]] = count
        return counts

    def state_codes(
        self, target: str, since: int, until: int | None = None
    ) -> list[tuple[int, int]]:
        """(minute, state code) of the target-level rows in [since, until), oldest first."""
        sid = self._existing_series(target)
        if sid is None:
            return []
        with self._lock:
            return self._db.execute(
                "SELECT minute, state FROM minutes WHERE series_id = ? AND minute >= ? "
                "AND minute < ? ORDER BY minute",
                (sid, since, _NO_END if until is None else until),
            ).fetchall()

    def minutes_in_state(
        self, target: str, state: State, start: int, end: int, probe: str = TARGET_LEVEL
    ) -> list[int]:
        sid = self._existing_series(target, probe)
        if sid is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT minute FROM minutes WHERE series_id = ? AND minute >= ? AND minute < ? "
                "AND state = ? ORDER BY minute",
                (sid, start, end, STATE_CODES[state]),
            ).fetchall()
        return [r[0] for r in rows]

    def minute_rows(
        self, target: str | None = None, since: int | None = None, until: int | None = None
    ) -> Iterator[MinuteRow]:
        """Minute rows in (target, probe, minute) order, [since, until) when given."""
        sql = (
            "SELECT s.target, s.probe, m.minute, m.state, m.reason, m.success, m.failure, "
            "m.client_error, m.throttled, m.prober_fault FROM minutes m "
            "JOIN series s ON s.id = m.series_id WHERE 1=1"
        )
        params: list[object] = []
        if target is not None:
            sql += " AND s.target = ?"
            params.append(target)
        if since is not None:
            sql += " AND m.minute >= ?"
            params.append(since)
        if until is not None:
            sql += " AND m.minute < ?"
            params.append(until)
        sql += " ORDER BY s.target, s.probe, m.minute"
        with self._lock:
            for t, p, minute, state, reason, *counts in self._db.stream(sql, params):
                yield MinuteRow(
                    t,
                    p,
                    minute,
                    STATES_BY_CODE[state],
                    REASONS_BY_CODE[reason],
                    OutcomeCounts(*counts),
                )

    def attempts_in(self, target: str, start: int, end: int) -> list[Attempt]:
        """Attempts of a target (all probes) that started in minutes [start, end)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts a "
                "JOIN series s ON s.id = a.series_id "
                "WHERE s.target = ? AND a.minute >= ? AND a.minute < ? "
                "ORDER BY a.started_at, a.id",
                (target, start, end),
            ).fetchall()
        return [_attempt(row) for row in rows]

    def unclosed_evidence(
        self, vantage: str, current: int, *, as_vantage: bool = False
    ) -> Evidence:
        """What this vantage stored for minutes that never closed (the process crashed, was
        killed, or restarts inside a minute), up to `current`: looked for after the minute
        it last closed, at most RECOVERY_MINUTES back (15 when it never closed one). A
        minute is closed when it has its row: the target's (one prober), or in a fleet
        (`as_vantage`) this vantage's own — the fleet's row may already be there."""
        with self._lock:
            row = self._db.execute(
                "SELECT closed_through FROM vantages WHERE name = ?", (vantage,)
            ).fetchone()
            closed_through = row[0] if row is not None else -1
            since = current - (RECOVERY_MINUTES if closed_through >= 0 else 15)
            since = max(since, closed_through + 1)
            closed_rows = (
                "LEFT JOIN vantage_minutes m ON m.series_id = t.id AND m.minute = a.minute "
                "AND m.vantage = a.vantage "
                if as_vantage
                else "LEFT JOIN minutes m ON m.series_id = t.id AND m.minute = a.minute "
            )
            rows = self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts a "
                "JOIN series s ON s.id = a.series_id "
                "LEFT JOIN series t ON t.target = s.target AND t.probe = '' "
                + closed_rows
                + "WHERE a.vantage = ? AND a.minute >= ? AND a.minute <= ? "
                "AND m.minute IS NULL ORDER BY a.started_at, a.id",
                (vantage, since, current),
            ).fetchall()
            rounds = self._db.execute(
                "SELECT vantage, minute, all_failed FROM network_rounds "
                "WHERE vantage = ? AND minute >= ? AND minute <= ?",
                (vantage, since, current),
            ).fetchall()
        return Evidence(
            [_attempt(row) for row in rows],
            [NetworkRound(v, m, bool(f)) for v, m, f in rounds],
        )

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.integrity_check()


_MINUTE_COLUMNS = (
    "series_id",
    "minute",
    "state",
    "reason",
    "success",
    "failure",
    "client_error",
    "throttled",
    "prober_fault",
)
_MINUTE_TYPES = ("int",) * 2 + ("smallint",) * 2 + ("int",) * 5  # as PostgreSQL has them
_ATTEMPT_COLUMNS_STORED = (
    "series_id",
    "minute",
    "started_at",
    "duration",
    "outcome",
    "error_kind",
    "error_code",
    "http_status",
    "detail",
    "vantage",
)


def _attempt_row(sid: int, attempt: Attempt) -> tuple:
    return (
        sid,
        attempt.minute,
        attempt.started_at,
        attempt.duration,
        OUTCOME_CODES[attempt.outcome],
        attempt.error_kind,
        attempt.error_code,
        attempt.http_status,
        attempt.detail,
        attempt.vantage,
    )


def is_url(location: str | Path) -> bool:
    """A PostgreSQL URL rather than a file's path."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


class _Transaction:
    """One write transaction; keeps the running totals in step with the rows it adds."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._db = ledger._db
        self._verdicts: Counter[tuple[int, int]] = Counter()
        self._outcomes: Counter[tuple[int, int]] = Counter()
        # chain (table, series id, vantage) -> its head (seq, hash) in this transaction
        self._heads: dict[tuple[str, int, str], tuple[int, bytes]] = {}
        self._moved: set[tuple[str, int, str]] = set()
        self._before: dict[tuple[str, int, str], tuple[int, bytes]] = {}

    def __enter__(self) -> _Transaction:
        ledger = self._ledger
        if ledger.readonly:
            raise LedgerError(f"{ledger.where}: opened read-only; nothing can be written")
        ledger._lock.acquire()
        try:
            self._db.begin_write()
        except BaseException:
            ledger._lock.release()
            raise
        ledger._created = []
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._flush_totals()
                    self._flush_heads()
                    self._db.execute("COMMIT")
                except BaseException as failed:
                    self._abort(failed)
                    raise
                self._db.heads_committed({k: self._heads[k] for k in self._moved})
            else:
                self._abort(exc)
        finally:
            self._ledger._lock.release()

    def _abort(self, exc: BaseException | None) -> None:
        self._db.write_failed(exc)
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        # Series ids created in the rolled-back transaction do not exist any more (and
        # SQLite may give their ids to other series): nor do the chain names kept for them.
        for key in self._ledger._created:
            self._ledger._series.pop(key, None)
        if self._ledger._created:
            self._ledger._names.clear()
            self._ledger._chain_keys.clear()
            self._ledger._key_bytes.clear()
        self._ledger._created = []

    # -- the chains -------------------------------------------------------------------------

    def prepare_chains(self, keys: Iterable[tuple[str, int, str]]) -> None:
        """Read (on PostgreSQL: lock) the heads of the chains this transaction extends."""
        need = list({k: None for k in keys if k not in self._heads})
        if not need:
            return
        chain_key = self._ledger.chain_key
        found = self._db.lock_heads(need, lambda k: genesis(chain_key(k)))
        for k in need:
            self._heads[k] = found.get(k) or (0, genesis(chain_key(k)))

    def head_seq(self, key: tuple[str, int, str]) -> int:
        self.prepare_chains([key])
        return self._heads[key][0]

    def link(self, key: tuple[str, int, str], fields: Sequence) -> tuple[int, bytes, bytes]:
        """The chain columns (seq, hash, field map) of a row appended to chain `key`."""
        head = self._heads.get(key)
        if head is None:
            self.prepare_chains([key])
            head = self._heads[key]
        seq = head[0] + 1
        kb = self._ledger._key_bytes.get(key)
        if kb is None:
            kb = self._ledger._key_bytes[key] = key_bytes(self._ledger.chain_key(key))
        digest, fields_map = LINKERS[key[0]](kb, head[1], seq, fields)
        self._before[key] = head
        self._heads[key] = (seq, digest)
        self._moved.add(key)
        return seq, digest, fields_map

    def unlink(self, key: tuple[str, int, str]) -> None:
        """The row just linked was not added (it was there already): its chain goes back."""
        self._heads[key] = self._before[key]

    def heads_snapshot(self) -> dict[tuple[str, int, str], tuple[int, bytes]]:
        """Every chain's head now, for `restore_heads` when a batch linked ahead is undone."""
        return dict(self._heads)

    def restore_heads(self, snapshot: dict[tuple[str, int, str], tuple[int, bytes]]) -> None:
        self._heads.clear()
        self._heads.update(snapshot)

    def attempt_chains(self, attempts: Iterable[Attempt]) -> list[tuple[str, int, str]]:
        series_id = self._ledger._series_id
        return [("attempts", series_id(a.target, a.probe), a.vantage) for a in attempts]

    def pending_chains(
        self, attempts: Iterable[Attempt], rounds: Iterable[NetworkRound]
    ) -> list[tuple[str, int, str]]:
        return self.attempt_chains(attempts) + [("network_rounds", 0, r.vantage) for r in rounds]

    def insert_attempt_rows(self, rows: Sequence[tuple]) -> None:
        """Attempt rows (as _attempt_row makes them), each appended to its chain (link()
        spelled out: this runs for every attempt the prober makes)."""
        heads, moved, known = self._heads, self._moved, self._ledger._key_bytes
        linker = LINKERS["attempts"]
        linked = []
        for row in rows:
            key = ("attempts", row[0], row[9])
            head = heads.get(key)
            if head is None:
                self.prepare_chains([key])
                head = heads[key]
            kb = known.get(key)
            if kb is None:
                kb = known[key] = key_bytes(self._ledger.chain_key(key))
            seq = head[0] + 1
            digest, fields_map = linker(kb, head[1], seq, row[1:9])
            heads[key] = (seq, digest)
            moved.add(key)
            linked.append((*row, seq, digest, fields_map))
        self._db.insert_all("attempts", (*_ATTEMPT_COLUMNS_STORED, *LINK_COLUMNS), linked)

    def _flush_heads(self) -> None:
        # (No order needed: the chains are locked already, SQLite's file or PostgreSQL's
        # advisory lock of each group.)
        heads = self._heads
        moved = [(*k, *heads[k]) for k in self._moved if heads[k][0] > 0]
        if moved:
            self._db.write_heads(moved)

    # -- rows ---------------------------------------------------------------------------

    def insert_minute(self, sid: int, minute: int, verdict: Verdict, counts: OutcomeCounts) -> bool:
        return bool(self.insert_minutes([(sid, minute, verdict, counts)]))

    def insert_minutes(
        self, rows: Sequence[tuple[int, int, Verdict, OutcomeCounts]]
    ) -> set[tuple[int, int]]:
        """Minute rows, in one statement; a row already there stays as it was. Returns the
        (series id, minute) of the rows added, which the verdict totals count."""
        added = self._db.insert_new(
            "minutes",
            _MINUTE_COLUMNS,
            _MINUTE_TYPES,
            [
                (sid, minute, STATE_CODES[v.state], REASON_CODES[v.reason], *c.as_tuple())
                for sid, minute, v, c in rows
            ],
            "series_id, minute, state",
            _MinuteLinks(self, "minutes"),
        )
        for sid, _minute, state in added:
            self._verdicts[(sid, state)] += 1
        return {(sid, minute) for sid, minute, _state in added}

    def insert_many(self, sid: int, verdicts: Iterable[tuple[int, Verdict]]) -> int:
        return len(self.insert_minutes([(sid, m, v, OutcomeCounts()) for m, v in verdicts]))

    def insert_attempt(self, sid: int, attempt: Attempt) -> None:
        self.insert_attempt_rows([_attempt_row(sid, attempt)])

    def count_attempt(self, sid: int, attempt: Attempt) -> None:
        """Attempt totals count the attempts of closed minutes, with the outcome the verdict
        used: stored earlier or not, merged from two processes or not, each counts once."""
        self._outcomes[(sid, OUTCOME_CODES[attempt.outcome])] += 1

    def count_outcomes(self, sid: int, counts: OutcomeCounts) -> None:
        for outcome in Outcome:
            n = getattr(counts, outcome.value)
            if n:
                self._outcomes[(sid, OUTCOME_CODES[outcome])] += n

    def insert_pending(self, attempts: Iterable[Attempt], rounds: Iterable[NetworkRound]) -> None:
        series_id = self._ledger._series_id
        rows = [_attempt_row(series_id(a.target, a.probe), a) for a in attempts]
        rounds = list(rounds)
        self.prepare_chains(
            [("attempts", row[0], row[9]) for row in rows]
            + [("network_rounds", 0, r.vantage) for r in rounds]
        )
        self.insert_attempt_rows(rows)
        link = self.link
        self._db.insert_all(
            "network_rounds",
            ("vantage", "minute", "all_failed", *LINK_COLUMNS),
            [
                (r.vantage, r.minute, int(r.all_failed), *link(key, (r.minute, int(r.all_failed))))
                for r in rounds
                for key in [("network_rounds", 0, r.vantage)]
            ],
        )

    def heartbeat(self, vantage: str, seen_at: float, closed_through: int | None) -> None:
        from .. import __version__

        self._db.execute(
            "INSERT INTO vantages (name, started_at, last_seen, closed_through, version) "
            "VALUES (?, ?, ?, coalesce(?, -1), ?) ON CONFLICT (name) DO UPDATE SET "
            "last_seen = CASE WHEN excluded.last_seen > vantages.last_seen "
            "THEN excluded.last_seen ELSE vantages.last_seen END, "
            "closed_through = CASE WHEN excluded.closed_through > vantages.closed_through "
            "THEN excluded.closed_through ELSE vantages.closed_through END, "
            "version = excluded.version",
            (vantage, seen_at, seen_at, closed_through, __version__),
        )

    def reclassify_network_failures(self, minute: int, vantage: str) -> None:
        """The network check failed in `minute`: the vantage's failures were its own. The
        rows keep the hash they were chained with (over `failure`); verify accepts exactly
        this change, where the vantage's failed network round of that minute is stored."""
        failure, fault = OUTCOME_CODES[Outcome.FAILURE], OUTCOME_CODES[Outcome.PROBER_FAULT]
        self._db.execute(
            "UPDATE attempts SET outcome = ? WHERE vantage = ? AND minute = ? AND outcome = ?",
            (fault, vantage, minute, failure),
        )

    def _flush_totals(self) -> None:
        for table, key, counter in (
            ("verdict_totals", "state", self._verdicts),
            ("attempt_totals", "outcome", self._outcomes),
        ):
            if counter:
                # In key order: two probers adding to the same totals never deadlock.
                self._db.add_counts(
                    table,
                    ("series_id", key),
                    ("int", "smallint"),
                    [(sid, code, n) for (sid, code), n in sorted(counter.items())],
                )


class _MinuteLinks:
    """Chain columns for minute rows (series_id, minute, …) as insert_new adds them."""

    def __init__(self, tx: _Transaction, table: str) -> None:
        self._tx = tx
        self._table = table

    def add(self, row: Sequence) -> tuple[int, bytes, bytes]:
        return self._tx.link((self._table, row[0], ""), row[1:])

    def take_back(self, row: Sequence) -> None:
        self._tx.unlink((self._table, row[0], ""))

    def snapshot(self) -> object:
        return self._tx.heads_snapshot()

    def restore(self, snapshot: object) -> None:
        assert isinstance(snapshot, dict)
        self._tx.restore_heads(snapshot)


_split_sql = split_sql  # tests build old schemas step by step
