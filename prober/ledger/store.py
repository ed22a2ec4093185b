"""The ledger: one SQLite file (WAL) holding minutes, attempts and running totals.

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
`minute_rows` view shows them by name for anyone reading the file with `sqlite3`.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LedgerError, UserError
from ..records import Attempt, ClosedMinute
from ..sla import Outcome, OutcomeCounts, Reason, State, Verdict, minute_iso
from .codes import (
    OUTCOME_CODES,
    OUTCOMES_BY_CODE,
    REASON_CODES,
    REASONS_BY_CODE,
    STATE_CODES,
    STATES_BY_CODE,
)

APPLICATION_ID = 0x494D5052  # "IMPR": marks the file as an im-prober ledger
SCHEMA_VERSION = 2
TARGET_LEVEL = ""  # the probe name of target-level rows
_NO_END = 2**62  # an epoch minute later than any real one: "no upper bound" in queries
# A restart looks this far back for minutes its vantage stored attempts of but never closed.
RECOVERY_MINUTES = 24 * 60

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    probe TEXT NOT NULL DEFAULT '',
    UNIQUE (target, probe)
);
CREATE TABLE minutes (
    series_id INTEGER NOT NULL REFERENCES series(id),
    minute INTEGER NOT NULL,
    state INTEGER NOT NULL,
    reason INTEGER NOT NULL DEFAULT 0,
    success INTEGER NOT NULL DEFAULT 0,
    failure INTEGER NOT NULL DEFAULT 0,
    client_error INTEGER NOT NULL DEFAULT 0,
    throttled INTEGER NOT NULL DEFAULT 0,
    prober_fault INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (series_id, minute)
) WITHOUT ROWID;
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL REFERENCES series(id),
    minute INTEGER NOT NULL,
    started_at REAL NOT NULL,
    duration REAL NOT NULL,
    outcome INTEGER NOT NULL,
    error_kind TEXT NOT NULL DEFAULT '',
    error_code INTEGER,
    http_status INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX attempts_by_minute ON attempts (series_id, minute);
CREATE INDEX attempts_by_start ON attempts (started_at);
CREATE TABLE verdict_totals (
    series_id INTEGER NOT NULL, state INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (series_id, state)
) WITHOUT ROWID;
CREATE TABLE attempt_totals (
    series_id INTEGER NOT NULL, outcome INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (series_id, outcome)
) WITHOUT ROWID;
CREATE VIEW minute_rows AS
SELECT s.target, s.probe,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.minute * 60, 'unixepoch') AS minute,
       CASE m.state WHEN 0 THEN 'available' WHEN 1 THEN 'apparent_failure'
                    WHEN 2 THEN 'maintenance' ELSE 'no_data' END AS state,
       CASE m.reason WHEN 1 THEN 'prober_down' WHEN 2 THEN 'prober_network'
                     WHEN 3 THEN 'excluded_only' ELSE '' END AS reason,
       m.success, m.failure, m.client_error, m.throttled, m.prober_fault
FROM minutes m JOIN series s ON s.id = m.series_id;
"""

_SCHEMA_V2 = """
ALTER TABLE attempts ADD COLUMN vantage TEXT NOT NULL DEFAULT '';
CREATE INDEX attempts_by_vantage_minute ON attempts (vantage, minute);
CREATE TABLE network_rounds (
    vantage TEXT NOT NULL,
    minute INTEGER NOT NULL,
    all_failed INTEGER NOT NULL
);
CREATE INDEX network_rounds_by_minute ON network_rounds (vantage, minute);
CREATE TABLE vantage_minutes (
    series_id INTEGER NOT NULL REFERENCES series(id),
    vantage TEXT NOT NULL,
    minute INTEGER NOT NULL,
    state INTEGER NOT NULL,
    reason INTEGER NOT NULL DEFAULT 0,
    success INTEGER NOT NULL DEFAULT 0,
    failure INTEGER NOT NULL DEFAULT 0,
    client_error INTEGER NOT NULL DEFAULT 0,
    throttled INTEGER NOT NULL DEFAULT 0,
    prober_fault INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (series_id, minute, vantage)
) WITHOUT ROWID;
CREATE INDEX vantage_minutes_by_minute ON vantage_minutes (minute);
CREATE TABLE vantage_totals (
    series_id INTEGER NOT NULL, vantage TEXT NOT NULL, state INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (series_id, vantage, state)
) WITHOUT ROWID;
DROP VIEW minute_rows;
CREATE VIEW minute_rows AS
SELECT s.target, s.probe,
       strftime('%Y-%m-%dT%H:%M:%SZ', m.minute * 60, 'unixepoch') AS minute,
       CASE m.state WHEN 0 THEN 'available' WHEN 1 THEN 'apparent_failure'
                    WHEN 2 THEN 'maintenance' ELSE 'no_data' END AS state,
       CASE m.reason WHEN 1 THEN 'prober_down' WHEN 2 THEN 'prober_network'
                     WHEN 3 THEN 'excluded_only' WHEN 4 THEN 'below_quorum'
                     ELSE '' END AS reason,
       m.success, m.failure, m.client_error, m.throttled, m.prober_fault
FROM minutes m JOIN series s ON s.id = m.series_id;
CREATE VIEW vantage_minute_rows AS
SELECT s.target, s.probe, v.vantage,
       strftime('%Y-%m-%dT%H:%M:%SZ', v.minute * 60, 'unixepoch') AS minute,
       CASE v.state WHEN 0 THEN 'available' WHEN 1 THEN 'apparent_failure'
                    WHEN 2 THEN 'maintenance' ELSE 'no_data' END AS state,
       CASE v.reason WHEN 1 THEN 'prober_down' WHEN 2 THEN 'prober_network'
                     WHEN 3 THEN 'excluded_only' WHEN 4 THEN 'below_quorum'
                     ELSE '' END AS reason,
       v.success, v.failure, v.client_error, v.throttled, v.prober_fault
FROM vantage_minutes v JOIN series s ON s.id = v.series_id;
CREATE TABLE vantages (
    name TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    closed_through INTEGER NOT NULL DEFAULT -1,
    version TEXT NOT NULL DEFAULT ''
);
"""

# Index i upgrades a ledger from schema version i to i + 1.
_MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2]


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


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc.strerror or exc}") from None
    if header and header != b"SQLite format 3\x00":
        raise LedgerError(f"{path}: not an im-prober ledger (not an SQLite file)")


def _is_readonly_error(exc: BaseException) -> bool:
    """SQLite refused a write because its file, or the file's folder, is read-only."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(exc)


class Ledger:
    """The ledger file. Opened for writing (the daemon, `ledger import`), it is created and
    migrated as needed; opened with `readonly=True` (report, export, evidence) it is only
    read: query_only, no migration, no pragma that writes, SQLite's read-only mode where the
    user may not write the file or its folder, so a file the user may only read works and a
    file that is not a ledger yet stays exactly as it was."""

    def __init__(self, path: str | Path, *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if not self.path.exists():
            if readonly or not create:
                raise LedgerError(f"{self.path}: no ledger here (has the daemon run yet?)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            _check_readable(self.path)
            if readonly and self.path.stat().st_size == 0:
                raise LedgerError(
                    f"{self.path}: an empty file, not a ledger yet (the daemon or "
                    "`ledger import` creates one)"
                )
        self._lock = threading.RLock()
        self._reconnect = False  # set when SQLite refused a write: reopen before the next one
        self._series: dict[tuple[str, str], int] = {}
        try:
            if readonly:
                self._db = self._connect_readonly()
            else:
                self._connect()
            self._load_series()
        except sqlite3.DatabaseError as exc:
            if readonly:
                raise LedgerError(f"{self.path}: cannot read the ledger: {exc}") from None
            if _is_readonly_error(exc):
                raise LedgerError(
                    f"{self.path}: the ledger's schema must be written, but the file (or its "
                    "folder) is read-only"
                ) from None
            raise LedgerError(f"{self.path}: cannot use the ledger: {exc}") from None

    def _load_series(self) -> None:
        self._series = {
            (t, p): i for i, t, p in self._db.execute("SELECT id, target, probe FROM series")
        }

    # -- opening and migrations ---------------------------------------------------------

    def _connect(self) -> None:
        self._db = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _connect_readonly(self) -> sqlite3.Connection:
        if os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
            # A reader that may write the file opens it the way writers do, only with
            # query_only: on close SQLite then removes the -wal/-shm files it created. A
            # mode=ro connection leaves them behind, owned by this user (root, say), where
            # the daemon's own user could not write them and so could not write the ledger.
            db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            try:
                db.execute("PRAGMA query_only = ON")
                self._check_version(db, readonly=True)
            except BaseException:
                db.close()
                raise
            return db
        uri = "file:" + urllib.parse.quote(str(self.path.absolute())) + "?mode=ro"
        db = sqlite3.connect(
            uri, uri=True, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._check_version(db, readonly=True)
        except BaseException as exc:
            db.close()
            if not isinstance(exc, sqlite3.OperationalError):
                raise
            # Reading a WAL-mode file needs its -shm file, which SQLite creates beside it. In
            # a folder this user may not write, that fails; when there is no -wal file either,
            # nobody has the ledger open for writing, and it can be read as an immutable file.
            wal = self.path.with_name(self.path.name + "-wal")
            if not (_is_readonly_error(exc) or "unable to open" in str(exc)):
                raise
            if wal.exists():
                raise LedgerError(
                    f"{self.path}: cannot read the ledger as this user: its folder is not "
                    f"writable, and {wal.name} shows the daemon has it open (or stopped "
                    "without closing it), so SQLite needs an index file (-shm) beside it; "
                    "run this as the daemon's user"
                ) from None
            db = sqlite3.connect(
                uri + "&immutable=1",
                uri=True,
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                self._check_version(db, readonly=True)
            except BaseException:
                db.close()
                raise
        db.execute("PRAGMA query_only = ON")
        return db

    def _check_version(self, db: sqlite3.Connection, *, readonly: bool) -> int:
        """The file's schema version, after checking it is a ledger this version can use."""
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
        if app_id != APPLICATION_ID and (app_id != 0 or has_tables):
            raise LedgerError(f"{self.path}: not an im-prober ledger (another application's file)")
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: written by a newer im-prober (ledger schema {version}); this "
                f"version reads schema {SCHEMA_VERSION} or older. Upgrade im-prober."
            )
        if readonly and version < SCHEMA_VERSION:
            if version == 0 and not has_tables:
                raise LedgerError(
                    f"{self.path}: an empty database, not a ledger yet (the daemon or "
                    "`ledger import` creates one)"
                )
            raise LedgerError(
                f"{self.path}: ledger schema {version} is older than this version's "
                f"{SCHEMA_VERSION}; upgrade it first (`im-prober ledger migrate -c CONFIG`, "
                "or start the daemon) with write access to the file"
            )
        return version

    def _open(self) -> None:
        db = self._db
        version = self._check_version(db, readonly=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed minute survives power loss too; one fsync per closing batch.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def _reopen_if_refused(self) -> None:
        """A connection SQLite opened while the file was read-only stays read-only; once a
        write was refused, the next write opens the file afresh (it may be writable now)."""
        if not self._reconnect:
            return
        old = self._db
        try:
            self._connect()
        except BaseException:
            self._db = old  # still good for reading
            raise
        old.close()
        self._reconnect = False
        self._load_series()

    def _migrate(self, version: int) -> None:
        from .. import __version__

        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                for statement in _split_sql(_MIGRATIONS[step]):
                    db.execute(statement)
            if version == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(
                    "INSERT INTO meta VALUES ('created_by', ?)", (f"im-prober {__version__}",)
                )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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
                "INSERT OR IGNORE INTO series (target, probe) VALUES (?, ?)", (target, probe)
            )
            found = self._db.execute(
                "SELECT id FROM series WHERE target = ? AND probe = ?", (target, probe)
            ).fetchone()[0]
            self._series[key] = found
        return found

    def _existing_series(self, target: str, probe: str = TARGET_LEVEL) -> int | None:
        return self._series.get((target, probe))

    # -- writes -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def write_attempts(
        self, attempts: Iterable[Attempt], rounds: Iterable[NetworkRound] = ()
    ) -> None:
        """Store finished attempts (and network-check rounds) before their minute closes."""
        with self._transaction() as tx:
            tx.insert_pending(attempts, rounds)

    def store_evidence(self, evidence: PendingEvidence) -> None:
        """Store a vantage's finished attempts and rounds, and its heartbeat."""
        with self._transaction() as tx:
            tx.insert_pending(evidence.attempts, evidence.rounds)
            tx.heartbeat(evidence.vantage, evidence.seen_at, None)

    def write_minutes(
        self, closed: Sequence[ClosedMinute], pending: PendingEvidence | None = None
    ) -> list[ClosedMinute]:
        """Write closed minutes, all in one transaction. A minute that is already in the
        ledger is left as it is (a minute is written once). Returns the items written.

        The daemon stores attempts as they end and passes those not stored yet as `pending`
        (written first, in the same transaction); without it, each minute's own attempts
        are stored with it (imports, tools, tests). A minute whose network check failed
        turns its vantage's stored failures into prober_fault, as the verdict did."""
        written: list[ClosedMinute] = []
        moved: set[int] = set()  # minutes whose failures were made prober faults
        with self._transaction() as tx:
            if pending is not None:
                tx.insert_pending(pending.attempts, pending.rounds)
                newest = max((item.minute for item in closed), default=None)
                tx.heartbeat(pending.vantage, pending.seen_at, newest)
            for item in closed:
                sid = self._series_id(item.target)
                if not tx.insert_minute(sid, item.minute, item.verdict, item.counts):
                    continue
                written.append(item)
                for probe, (verdict, counts) in item.probes.items():
                    tx.insert_minute(
                        self._series_id(item.target, probe), item.minute, verdict, counts
                    )
                for attempt in item.attempts:
                    sid = self._series_id(item.target, attempt.probe)
                    if pending is None:
                        tx.insert_attempt(sid, attempt)
                    tx.count_attempt(sid, attempt)
                if pending is not None and item.network_failed and item.minute not in moved:
                    moved.add(item.minute)
                    tx.reclassify_network_failures(item.minute, pending.vantage)
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
        with self._transaction() as tx:
            for probe in (TARGET_LEVEL, *probes):
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
            for line, row in batch.values():
                sid = self._series_id(row.target, row.probe)
                existing = self._db.execute(
                    "SELECT state, reason FROM minutes WHERE series_id = ? AND minute = ?",
                    (sid, row.minute),
                ).fetchone()
                if existing is None:
                    tx.insert_minute(sid, row.minute, Verdict(row.state, row.reason), row.counts)
                    added += 1
                elif (STATES_BY_CODE[existing[0]], REASONS_BY_CODE[existing[1]]) == (
                    row.state,
                    row.reason,
                ):
                    unchanged += 1
                else:
                    state, reason = STATES_BY_CODE[existing[0]], REASONS_BY_CODE[existing[1]]
                    raise ImportConflict(
                        f"line {line}: {row.target}/{row.probe or '-'} at {minute_iso(row.minute)} "
                        f"is {row.state}{'/' + row.reason if row.reason else ''} in the file "
                        f"but {state}{'/' + reason if reason else ''} in the ledger; nothing "
                        "was imported"
                    )
        return ImportResult(added, unchanged)

    def prune_attempts(self, before: float) -> int:
        """Delete attempts that started before `before` (epoch seconds). Minutes stay."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM attempts WHERE started_at < ?", (before,))
            return cursor.rowcount

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
            cursor = self._db.execute(sql, params)
            while chunk := cursor.fetchmany(5000):
                for t, p, minute, state, reason, *counts in chunk:
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

    def unclosed_evidence(self, vantage: str, current: int) -> Evidence:
        """What this vantage stored for minutes that never closed (the process crashed, was
        killed, or restarts inside a minute), up to `current`: looked for after the minute
        it last closed, at most RECOVERY_MINUTES back (15 when it never closed one)."""
        with self._lock:
            row = self._db.execute(
                "SELECT closed_through FROM vantages WHERE name = ?", (vantage,)
            ).fetchone()
            closed_through = row[0] if row is not None else -1
            since = current - (RECOVERY_MINUTES if closed_through >= 0 else 15)
            since = max(since, closed_through + 1)
            rows = self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts a "
                "JOIN series s ON s.id = a.series_id "
                "LEFT JOIN series t ON t.target = s.target AND t.probe = '' "
                "LEFT JOIN minutes m ON m.series_id = t.id AND m.minute = a.minute "
                "WHERE a.vantage = ? AND a.minute >= ? AND a.minute <= ? AND m.minute IS NULL "
                "ORDER BY a.started_at, a.id",
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

    def vantage_evidence(self, vantage: str, start: int, end: int) -> Evidence:
        """A vantage's attempts (every target) and network rounds of minutes [start, end):
        what a restarted prober merges into the minutes it has not closed yet."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts a "
                "JOIN series s ON s.id = a.series_id "
                "WHERE a.vantage = ? AND a.minute >= ? AND a.minute < ? "
                "ORDER BY a.started_at, a.id",
                (vantage, start, end),
            ).fetchall()
            rounds = self._db.execute(
                "SELECT vantage, minute, all_failed FROM network_rounds "
                "WHERE vantage = ? AND minute >= ? AND minute < ?",
                (vantage, start, end),
            ).fetchall()
        return Evidence(
            [_attempt(row) for row in rows],
            [NetworkRound(v, m, bool(f)) for v, m, f in rounds],
        )

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]


class _Transaction:
    """One write transaction; keeps the running totals in step with the rows it adds."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._db = ledger._db
        self._verdicts: Counter[tuple[int, int]] = Counter()
        self._outcomes: Counter[tuple[int, int]] = Counter()

    def __enter__(self) -> _Transaction:
        ledger = self._ledger
        if ledger.readonly:
            raise LedgerError(f"{ledger.path}: opened read-only; nothing can be written")
        ledger._lock.acquire()
        try:
            ledger._reopen_if_refused()
            self._db = ledger._db
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            if _is_readonly_error(exc):
                ledger._reconnect = True
            ledger._lock.release()
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    self._flush_totals()
                    self._db.execute("COMMIT")
                except BaseException as failed:
                    self._abort(failed)
                    raise
            else:
                self._abort(exc)
        finally:
            self._ledger._lock.release()

    def _abort(self, exc: BaseException | None) -> None:
        if exc is not None and _is_readonly_error(exc):
            self._ledger._reconnect = True
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        # Series ids created in the rolled-back transaction do not exist any more.
        self._ledger._load_series()

    def insert_minute(self, sid: int, minute: int, verdict: Verdict, counts: OutcomeCounts) -> bool:
        cursor = self._db.execute(
            "INSERT INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                sid,
                minute,
                STATE_CODES[verdict.state],
                REASON_CODES[verdict.reason],
                *counts.as_tuple(),
            ),
        )
        if cursor.rowcount != 1:
            return False
        self._verdicts[(sid, STATE_CODES[verdict.state])] += 1
        return True

    def insert_many(self, sid: int, verdicts: Iterable[tuple[int, Verdict]]) -> int:
        added = 0
        for minute, verdict in verdicts:
            added += self.insert_minute(sid, minute, verdict, OutcomeCounts())
        return added

    def insert_attempt(self, sid: int, attempt: Attempt) -> None:
        self._db.execute(
            "INSERT INTO attempts (series_id, minute, started_at, duration, outcome, error_kind, "
            "error_code, http_status, detail, vantage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
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
            ),
        )

    def count_attempt(self, sid: int, attempt: Attempt) -> None:
        """Attempt totals count the attempts of closed minutes, with the outcome the verdict
        used: stored earlier or not, merged from two processes or not, each counts once."""
        self._outcomes[(sid, OUTCOME_CODES[attempt.outcome])] += 1

    def insert_pending(self, attempts: Iterable[Attempt], rounds: Iterable[NetworkRound]) -> None:
        series_id = self._ledger._series_id
        for attempt in attempts:
            self.insert_attempt(series_id(attempt.target, attempt.probe), attempt)
        self._db.executemany(
            "INSERT INTO network_rounds VALUES (?, ?, ?)",
            [(r.vantage, r.minute, int(r.all_failed)) for r in rounds],
        )

    def heartbeat(self, vantage: str, seen_at: float, closed_through: int | None) -> None:
        from .. import __version__

        self._db.execute(
            "INSERT INTO vantages (name, started_at, last_seen, closed_through, version) "
            "VALUES (?, ?, ?, coalesce(?, -1), ?) ON CONFLICT (name) DO UPDATE SET "
            "last_seen = max(last_seen, excluded.last_seen), "
            "closed_through = max(closed_through, excluded.closed_through), "
            "version = excluded.version",
            (vantage, seen_at, seen_at, closed_through, __version__),
        )

    def reclassify_network_failures(self, minute: int, vantage: str) -> None:
        """The network check failed in `minute`: the vantage's failures were its own."""
        failure, fault = OUTCOME_CODES[Outcome.FAILURE], OUTCOME_CODES[Outcome.PROBER_FAULT]
        self._db.execute(
            "UPDATE attempts SET outcome = ? WHERE vantage = ? AND minute = ? AND outcome = ?",
            (fault, vantage, minute, failure),
        )

    def _flush_totals(self) -> None:
        for table, counter in (
            ("verdict_totals", self._verdicts),
            ("attempt_totals", self._outcomes),
        ):
            if counter:
                self._db.executemany(
                    f"INSERT INTO {table} VALUES (?, ?, ?) "
                    "ON CONFLICT DO UPDATE SET count = count + excluded.count",
                    [(sid, code, n) for (sid, code), n in counter.items()],
                )


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]
