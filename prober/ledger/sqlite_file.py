"""The ledger on SQLite: one file (WAL), the embedded default for a single prober.

What is SQLite's own lives here: opening the file (created and migrated for writing; for
reading: query_only, no migration, no pragma that writes, SQLite's read-only or immutable
mode where the user may not write the file or its folder), the PRAGMAs (WAL, synchronous
FULL, foreign keys), `application_id`/`user_version` as the schema's identity and version,
and reopening after SQLite refused a write on a file that was read-only. `SqliteFile`
offers store.py the same few calls as the PostgreSQL backend; sqlite3's own errors pass
through unchanged (the writer buffers on them, as on a full disk).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import LedgerError
from .chain import chain_existing

APPLICATION_ID = 0x494D5052  # "IMPR": marks the file as an im-prober ledger
LINK_COLUMNS = ("seq", "hash", "field_map")  # a chained row's place in its chain


class Links(Protocol):
    """What gives rows their chain columns as they are inserted (store.py's transaction)."""

    def add(self, row: Sequence[Any]) -> tuple[int, bytes, bytes]: ...

    def take_back(self, row: Sequence[Any]) -> None: ...

    def snapshot(self) -> object: ...

    def restore(self, snapshot: object) -> None: ...


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

# The hash chains (chain.py): each chained row's place in its chain, its hash and field
# map; each chain's newest row; the last row pruned from each attempt chain. The rows a
# ledger already holds are chained where the marker stands, before the indexes that keep
# two rows from one place.
CHAIN_EXISTING = "-- chain the rows already here"
_SCHEMA_V3 = f"""
ALTER TABLE minutes ADD COLUMN seq INTEGER;
ALTER TABLE minutes ADD COLUMN hash BLOB;
ALTER TABLE minutes ADD COLUMN field_map BLOB;
ALTER TABLE vantage_minutes ADD COLUMN seq INTEGER;
ALTER TABLE vantage_minutes ADD COLUMN hash BLOB;
ALTER TABLE vantage_minutes ADD COLUMN field_map BLOB;
ALTER TABLE attempts ADD COLUMN seq INTEGER;
ALTER TABLE attempts ADD COLUMN hash BLOB;
ALTER TABLE attempts ADD COLUMN field_map BLOB;
ALTER TABLE network_rounds ADD COLUMN seq INTEGER;
ALTER TABLE network_rounds ADD COLUMN hash BLOB;
ALTER TABLE network_rounds ADD COLUMN field_map BLOB;
CREATE TABLE chain_heads (
    tbl TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    vantage TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (tbl, series_id, vantage)
) WITHOUT ROWID;
CREATE TABLE chain_seals (
    tbl TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    vantage TEXT NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    minute INTEGER NOT NULL,
    sealed_at REAL NOT NULL,
    PRIMARY KEY (tbl, series_id, vantage)
) WITHOUT ROWID;
{CHAIN_EXISTING};
CREATE UNIQUE INDEX minutes_chain ON minutes (series_id, seq);
CREATE UNIQUE INDEX vantage_minutes_chain ON vantage_minutes (series_id, vantage, seq);
CREATE UNIQUE INDEX attempts_chain ON attempts (series_id, vantage, seq);
CREATE UNIQUE INDEX network_rounds_chain ON network_rounds (vantage, seq);
"""

# Index i upgrades a ledger from schema version i to i + 1.
MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3]


def _check_readable(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(16)
    except OSError as exc:
        raise LedgerError(f"{path}: cannot open the ledger: {exc.strerror or exc}") from None
    if header and header != b"SQLite format 3\x00":
        raise LedgerError(f"{path}: not an im-prober ledger (not an SQLite file)")


def is_readonly_error(exc: BaseException) -> bool:
    """SQLite refused a write because its file, or the file's folder, is read-only."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(exc)


def split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


class SqliteFile:
    """The ledger's SQLite file, opened (and for writing, migrated) at construction."""

    def __init__(
        self,
        path: str | Path,
        migrations: Sequence[str],
        *,
        create: bool = True,
        readonly: bool = False,
        created_by: str = "",
    ) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.readonly = readonly
        self._migrations = list(migrations)
        self._version = len(self._migrations)
        self._created_by = created_by
        self._reconnect = False  # set when SQLite refused a write: reopen before the next one
        # rows chained by the migration to schema 3, per table (None: no such migration)
        self.chained: dict[str, int] | None = None
        # Chain heads as this connection last read or wrote them, good while no other
        # connection has written (`PRAGMA data_version`): read in the write transaction.
        self._heads: dict[tuple[str, int, str], tuple[int, bytes]] | None = None
        self._heads_version = -1
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
        try:
            self._db = self._connect_readonly() if readonly else self._connect()
        except sqlite3.DatabaseError as exc:
            if readonly:
                raise LedgerError(f"{self.path}: cannot read the ledger: {exc}") from None
            if is_readonly_error(exc):
                raise LedgerError(
                    f"{self.path}: the ledger's schema must be written, but the file (or its "
                    "folder) is read-only"
                ) from None
            raise LedgerError(f"{self.path}: cannot use the ledger: {exc}") from None

    # -- what store.py calls ---------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def stream(self, sql: str, params: Sequence[Any] = (), size: int = 5000) -> Iterator[tuple]:
        cursor = self._db.execute(sql, params)
        while chunk := cursor.fetchmany(size):
            yield from chunk

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    def insert_new(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
        returning: str,
        links: Links | None = None,
    ) -> list[tuple]:
        """Insert the rows that are not there yet (ON CONFLICT DO NOTHING); the `returning`
        columns of those inserted. (`types` are PostgreSQL's; SQLite needs none.) With
        `links`, each row gets its chain columns just before it is inserted, and gives
        them back when it was there already: only rows added advance a chain."""
        names = list(columns)
        conflict = ""
        if links is not None:
            # Only the row's own key may conflict: a clash of seq would be a forked chain.
            names += LINK_COLUMNS
            conflict = f" ({columns[0]}, {columns[1]})"
        sql = (
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT{conflict} DO NOTHING RETURNING {returning}"
        )
        execute = self._db.execute
        out: list[tuple] = []
        if links is None:
            for row in rows:
                out += execute(sql, row).fetchall()
            return out
        # Most batches are all new (the minutes just closed): linked in order and inserted
        # in one executemany; when some row was there already, undone and done row by row.
        if len(rows) > 1:
            heads = links.snapshot()
            linked = [(*row, *links.add(row)) for row in rows]
            execute("SAVEPOINT new_rows")
            cursor = self._db.executemany(sql.rpartition(" RETURNING ")[0], linked)
            if cursor.rowcount == len(rows):
                execute("RELEASE new_rows")
                picks = [names.index(c.strip()) for c in returning.split(",")]
                return [tuple(row[i] for i in picks) for row in linked]
            execute("ROLLBACK TO new_rows")
            execute("RELEASE new_rows")
            links.restore(heads)
        for row in rows:
            extra = links.add(row)
            added = execute(sql, (*row, *extra)).fetchall()
            if added:
                out += added
            else:
                links.take_back(row)
        return out

    def lock_heads(
        self, keys: Sequence[tuple[str, int, str]], genesis_of: Callable[[tuple], bytes]
    ) -> dict[tuple[str, int, str], tuple[int, bytes]]:
        """The heads of these chains (in the write transaction, BEGIN IMMEDIATE: no other
        writer until it ends); chains without a row yet are left out. Read from the table
        once, then kept while no other connection writes the file."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if self._heads is None or version != self._heads_version:
            self._heads = {
                (t, sid, v): (seq, digest)
                for t, sid, v, seq, digest in self._db.execute(
                    "SELECT tbl, series_id, vantage, seq, hash FROM chain_heads"
                )
            }
            self._heads_version = version
        heads = self._heads
        return {k: heads[k] for k in keys if k in heads}

    def write_heads(self, rows: Sequence[tuple[str, int, str, int, bytes]]) -> None:
        self._db.executemany(
            "INSERT INTO chain_heads (tbl, series_id, vantage, seq, hash) VALUES "
            "(?, ?, ?, ?, ?) ON CONFLICT (tbl, series_id, vantage) DO UPDATE SET "
            "seq = excluded.seq, hash = excluded.hash",
            rows,
        )

    def heads_committed(self, heads: dict[tuple[str, int, str], tuple[int, bytes]]) -> None:
        """The transaction that moved these heads committed: keep them."""
        if self._heads is not None:
            self._heads.update(heads)

    def add_counts(
        self, table: str, keys: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Add each row's last column (`count`) to the running total of its keys."""
        self._db.executemany(
            f"INSERT INTO {table} VALUES ({', '.join('?' * (len(keys) + 1))}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET count = {table}.count + excluded.count",
            rows,
        )

    def insert_all(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Insert every row (no conflict expected): attempts, network rounds."""
        self._db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            rows,
        )

    def begin_write(self) -> None:
        """BEGIN IMMEDIATE, after reopening the file if SQLite refused an earlier write."""
        try:
            self._reopen_if_refused()
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self.write_failed(exc)
            raise

    def write_failed(self, exc: BaseException | None) -> None:
        """A write was refused: a connection SQLite opened while the file was read-only
        stays read-only, so the next write opens the file afresh (it may be writable now)."""
        if exc is not None and is_readonly_error(exc):
            self._reconnect = True

    def close(self) -> None:
        self._db.close()

    # -- opening and migrations ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            version = self._check_version(db, readonly=False)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed minute survives power loss too; one fsync per closing batch.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            if version < self._version:
                self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

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
            if not (is_readonly_error(exc) or "unable to open" in str(exc)):
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
        check_version(self.where, version, self._version, readonly=readonly, empty=not has_tables)
        return version

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, self._version):
                for statement in split_sql(self._migrations[step]):
                    if statement == CHAIN_EXISTING:
                        self.chained = chain_existing(db.execute, db.executemany)
                    else:
                        db.execute(statement)
            if version == 0:
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute("INSERT INTO meta VALUES ('created_by', ?)", (self._created_by,))
            db.execute(f"PRAGMA user_version = {self._version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _reopen_if_refused(self) -> None:
        if not self._reconnect:
            return
        old = self._db
        self._db = self._connect()  # on failure the old connection stays, good for reading
        old.close()
        self._reconnect = False
        self._heads = None  # data_version counts per connection


def check_version(where: str, version: int, current: int, *, readonly: bool, empty: bool) -> None:
    """Refuse a ledger this version cannot use: a newer schema always; for reading, one that
    would need a migration first (or is no ledger yet). Shared by both backends."""
    if version > current:
        raise LedgerError(
            f"{where}: written by a newer im-prober (ledger schema {version}); this "
            f"version reads schema {current} or older. Upgrade im-prober."
        )
    if readonly and version < current:
        if version == 0 and empty:
            raise LedgerError(
                f"{where}: an empty database, not a ledger yet (the daemon or "
                "`ledger import` creates one)"
            )
        raise LedgerError(
            f"{where}: ledger schema {version} is older than this version's "
            f"{current}; upgrade it first (`im-prober ledger migrate -c CONFIG`, "
            "or start the daemon) with write access to the ledger"
        )
