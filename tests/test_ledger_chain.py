"""The ledger's hash chains: every row the ledger writes is chained (on both backends), a
clean ledger verifies, and each kind of edit made behind the ledger's back — with the real
`sqlite3` tool, or plain SQL on PostgreSQL — is caught and named: which chain, which
minute, what is wrong, the field where one can be named."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.errors import LedgerError
from prober.ledger import chain, postgres, store
from prober.ledger.chain import ChainKey, Head
from prober.ledger.fleet import verdicts_of_minute, write_vantage_minutes
from prober.ledger.store import Ledger, MinuteRow, NetworkRound, PendingEvidence
from prober.records import Attempt, ClosedMinute
from prober.sla import Outcome, State, Verdict

from .cli_util import run
from .ledger_backends import Backend
from .ledger_writer import decided

ROOT = Path(__file__).resolve().parents[1]
M = 29_000_000  # an epoch minute in 2025 (2025-02-19T21:20Z)
PROBES = ("login", "send")
FAILED = M + 3  # the one failed minute of `fill`
MINUTES = 12
SQLITE3 = shutil.which("sqlite3")


def attempts_of(minute: int, *, failed: bool = False, vantage: str = "v1") -> list[Attempt]:
    out = []
    for i, probe in enumerate(PROBES):
        for k in range(2):
            bad = failed and probe == "login"
            out.append(
                Attempt(
                    "a",
                    probe,
                    minute * 60 + 1.25 + 20 * k + i,
                    0.1 + 0.01 * k,
                    Outcome.FAILURE if bad else Outcome.SUCCESS,
                    "timeout" if bad else "",
                    None,
                    504 if bad else 200,
                    "gateway 'timed out' — détail" if bad else "",
                    vantage=vantage,
                )
            )
    return out


def fill(ledger: Ledger, start: int = M, count: int = MINUTES, *, vantage: str = "v1") -> None:
    """Minutes written the way the daemon writes them: each attempt and network round
    stored as it ends, then the minute closed with what is still pending."""
    for minute in range(start, start + count):
        attempts = attempts_of(minute, failed=minute == FAILED, vantage=vantage)
        ledger.store_evidence(
            PendingEvidence(vantage, attempts, [NetworkRound(vantage, minute, False)], 1.0)
        )
        ledger.write_minutes(
            [decided("a", minute, PROBES, attempts)], PendingEvidence(vantage, [], [], 2.0)
        )


def verified(backend: Backend, name: str = "l", **kwargs) -> chain.VerifyResult:
    with backend.open(name, readonly=True) as ledger:
        return chain.verify(ledger, **kwargs)


def sid_of(backend: Backend, probe: str = "", name: str = "l") -> int:
    db = backend.raw(name)
    try:
        return db.execute(
            "SELECT id FROM series WHERE target = 'a' AND probe = ?", (probe,)
        ).fetchone()[0]
    finally:
        db.close()


def tamper(backend: Backend, *statements: str, name: str = "l") -> None:
    """Edit the ledger behind its back: the real `sqlite3` tool on a file, plain SQL (as
    psql would send it) on PostgreSQL."""
    location = backend.location(name)
    if isinstance(location, Path):
        assert SQLITE3 is not None, "the sqlite3 command-line tool (make system-deps)"
        done = subprocess.run(
            [SQLITE3, str(location), ";\n".join(statements) + ";"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return
    db = backend.raw(name)
    try:
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


def blob(backend: Backend, data: bytes) -> str:
    """A bytes literal in the backend's SQL."""
    return f"'\\x{data.hex()}'::bytea" if backend.is_postgres else f"x'{data.hex()}'"


def breaks_of(result: chain.VerifyResult) -> str:
    return "\n".join(b.describe() for b in result.breaks)


# -- what the ledger writes is chained, and verifies -----------------------------------------


def test_every_row_the_ledger_writes_is_chained_and_the_ledger_verifies(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger)
        ledger.record_gap("a", PROBES, M + MINUTES, M + MINUTES + 3)
        # an old month imported later appends to the chains (insertion order, not minutes)
        ledger.import_rows((i, MinuteRow("a", "", M - 100 + i, State.AVAILABLE)) for i in range(5))
        # tools and imports store a minute's attempts with it (no pending evidence)
        extra = attempts_of(M + 50, vantage="tool")
        ledger.write_minutes([decided("a", M + 50, PROBES, extra)])
        # a fleet prober's verdicts as its vantage, and the closer's fleet minute
        vantage_attempts = attempts_of(M + 60, vantage="v2")
        item = decided("a", M + 60, PROBES, vantage_attempts)
        write_vantage_minutes(ledger, [item], PendingEvidence("v2", vantage_attempts, [], 3.0))
        fleet = ClosedMinute("a", M + 60, item.verdict, item.counts, item.probes, ())
        ledger.write_minutes([fleet], PendingEvidence("v1", [], [], 4.0))
    result = verified(backend)
    assert result.ok, breaks_of(result)
    db = backend.raw()
    try:
        for table in chain.TABLES:
            assert result.rows[table] == db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert db.execute(f"SELECT count(*) FROM {table} WHERE seq IS NULL").fetchone()[0] == 0
        # seq counts rows in the order they were written: the import came after the fill
        [(seq,)] = db.execute(
            "SELECT seq FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.target = 'a' AND s.probe = '' AND m.minute = ?",
            (M - 100,),
        ).fetchall()
        assert seq == MINUTES + 3 + 1
    finally:
        db.close()
    assert result.chains == {
        "minutes": 3,  # the target and its two probes
        "vantage_minutes": 3,
        "attempts": 6,  # two probes x vantages v1, tool, v2
        "network_rounds": 1,
    }
    with backend.open(readonly=True) as ledger:
        heads = {h.key: h for h in chain.heads(ledger)}
    assert heads[ChainKey("minutes", "a")].seq == MINUTES + 3 + 5 + 1 + 1


def test_a_minute_already_in_the_ledger_does_not_advance_its_chain(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger, count=3)
        before = chain.heads(ledger)
        again = decided("a", M, PROBES, [])
        assert ledger.write_minutes([again, again]) == []
        assert ledger.record_gap("a", PROBES, M, M + 3) == 0
        result = ledger.import_rows([(1, MinuteRow("a", "", M, State.AVAILABLE))])
        assert (result.added, result.unchanged) == (0, 1)
        assert chain.heads(ledger) == before
    assert verified(backend).ok


def test_a_vantage_batch_with_a_minute_already_there_writes_only_the_new_ones(
    backend: Backend,
) -> None:
    """Vantage verdicts go in one bulk insert; when a minute of the batch was decided before
    (a restarted vantage), that is undone and the batch goes row by row: the old minute
    stays as it was, the chains advance by the new rows only and the ledger verifies."""
    with backend.open() as ledger:
        first = [decided("a", M + m, PROBES, []) for m in range(2)]
        assert write_vantage_minutes(ledger, first, PendingEvidence("v2", [], [], 1.0)) == first
        heads = {h.key: h.seq for h in chain.heads(ledger)}
        failed = decided("a", M + 1, PROBES, attempts_of(M + 1, failed=True, vantage="v2"))
        later = decided("a", M + 2, PROBES, [])
        written = write_vantage_minutes(ledger, [failed, later], PendingEvidence("v2", [], [], 2.0))
        assert written == [later]
        grown = {h.key: h.seq for h in chain.heads(ledger)}
        keys = [k for k in grown if k.table == "vantage_minutes"]
        assert len(keys) == 1 + len(PROBES)
        assert all(grown[k] == heads[k] + 1 for k in keys)  # one row each: M + 2's
        rows = verdicts_of_minute(ledger, M + 1)[("a", "")]
    assert {v.verdict.state for v in rows} == {first[1].verdict.state}  # as it was
    result = verified(backend)
    assert result.ok, breaks_of(result)


def test_a_series_id_a_rolled_back_write_gave_back_is_chained_under_its_new_name(
    backend: Backend,
) -> None:
    with backend.open() as ledger:
        fill(ledger, count=1)
        # no 64-bit integer: the transaction fails after it made series b's ids
        bad = Attempt("b", "login", M * 60 + 1, 0.1, Outcome.FAILURE, "x", 2**70)
        with pytest.raises(Exception, match=r"format|out of range|int"):
            ledger.write_minutes([decided("b", M, ("login",), [bad])])
        good = [Attempt("c", "login", M * 60 + 1, 0.1, Outcome.SUCCESS, vantage="v1")]
        ledger.write_minutes([decided("c", M, ("login",), good)])
    result = verified(backend)
    assert result.ok, breaks_of(result)
    assert result.chains["minutes"] == 3 + 2


def test_an_import_beside_the_daemon_never_forks_a_chain(backend: Backend) -> None:
    """Two connections extend the same chains, in turn and at once (`ledger import` while
    the daemon runs; on PostgreSQL a second closer): each reads the heads inside its write
    transaction, so neither writes from a head the other has moved."""
    daemon, importer = backend.open(), backend.open()
    try:
        fill(daemon, count=2)
        importer.import_rows(
            (i, MinuteRow("a", "", M - 500 + i, State.AVAILABLE)) for i in range(3)
        )
        fill(daemon, M + 2, 2)  # the daemon's cached heads are stale now: it must re-read them
        errors: list[BaseException] = []

        def imports() -> None:
            try:
                for n in range(20):
                    importer.import_rows([(1, MinuteRow("a", "", M - 400 + n, State.AVAILABLE))])
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=imports)
        thread.start()
        for minute in range(M + 4, M + 24):
            daemon.record_gap("a", PROBES, minute, minute + 1)
        thread.join(60)
        assert not errors
    finally:
        daemon.close()
        importer.close()
    result = verified(backend)
    assert result.ok, breaks_of(result)
    assert result.rows["minutes"] == 3 * 24 + 3 + 20


def test_the_runtime_writer_path_verifies(tmp_path: Path) -> None:
    """The daemon's own writer (no daemon): attempts stored as they end, a network-failed
    minute whose failures become prober_fault, writes refused and retried, minutes pushed
    out of the buffer recorded as a gap, and the hourly retention."""
    from prober.ledger.view import LedgerView
    from prober.runtime.book import MinuteBook, TargetRules
    from prober.runtime.writer import MinuteWriter
    from prober.sla import Policy
    from prober.stats import RuntimeStats

    from .runtime_util import FakeClock

    class Switchable(Ledger):
        failing = False

        def write_minutes(self, closed, pending=None):  # type: ignore[override]
            if self.failing:
                raise sqlite3.OperationalError("database or disk is full")
            return super().write_minutes(closed, pending)

    ledger = Switchable(tmp_path / "l.sqlite3")
    clock = FakeClock(M * 60)
    writer = MinuteWriter(
        ledger,
        LedgerView(),
        RuntimeStats(),
        clock,
        buffer_minutes=2,
        verdict_of_missed=lambda _t: lambda _m: Verdict(State.NO_DATA),
        vantage="v1",
    )
    rules = [TargetRules("a", PROBES, Policy.SLA, ())]

    async def main() -> None:
        book = MinuteBook()
        for minute in range(M, M + 8):
            clock.now = minute * 60 + 59
            for attempt in attempts_of(minute, failed=minute in (M + 1, M + 2)):
                book.started(minute)
                book.finished(attempt, minute)
                writer.add_attempt(attempt)
            writer.add_round(minute, minute == M + 1)  # M + 1: the prober's network failed
            book.network_round(minute, minute == M + 1)
            await writer.store_evidence()
            ledger.failing = minute in (M + 3, M + 4, M + 5)
            await writer.write(book.close(minute, rules))
        ledger.failing = False
        await writer.flush()

    asyncio.run(main())
    assert writer.unwritten == 0 and not writer.dropped
    assert {a.outcome for a in ledger.attempts_in("a", M + 1, M + 2)} == {
        Outcome.PROBER_FAULT,
        Outcome.SUCCESS,
    }
    result = chain.verify(ledger)
    assert result.ok, breaks_of(result)
    assert result.reclassified == 2
    assert ledger.prune_attempts((M + 2) * 60 + 30) == 3 * 4
    ledger.close()
    with Ledger(tmp_path / "l.sqlite3", readonly=True) as reader:
        result = chain.verify(reader)
    assert result.ok, breaks_of(result)
    assert result.reclassified == 0 and result.rows["attempts"] == 5 * 4


# -- the retention seal, the migration, the network check -----------------------------------


def test_a_pruned_ledger_verifies_from_its_seals(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger)
        removed = ledger.prune_attempts((M + 5) * 60, now=123.0)
        assert removed == 5 * len(attempts_of(M))
        assert ledger.prune_attempts((M + 5) * 60) == 0  # nothing more: the seal stays put
    result = verified(backend)
    assert result.ok, breaks_of(result)
    assert result.rows["attempts"] == (MINUTES - 5) * 4
    db = backend.raw()
    try:
        seals = db.execute(
            "SELECT s.probe, c.seq, c.minute, c.sealed_at FROM chain_seals c "
            "JOIN series s ON s.id = c.series_id ORDER BY 1"
        ).fetchall()
    finally:
        db.close()
    assert seals == [("login", 10, M + 4, 123.0), ("send", 10, M + 4, 123.0)]
    # The seal keeps what is left checkable: a deletion after it is still caught.
    tamper(
        backend, f"DELETE FROM attempts WHERE minute = {M + 7} AND started_at < {(M + 7) * 60 + 2}"
    )
    result = verified(backend)
    assert not result.ok
    assert "missing" in breaks_of(result) and f"{M + 7}" not in breaks_of(result)
    # A whole chain pruned (its head is its seal) verifies too.
    with backend.open() as ledger:
        ledger.prune_attempts((M + 100) * 60)
    assert verified(backend).ok


def _schema_2(backend: Backend, name: str) -> None:
    """A ledger as im-prober wrote it before the chains (schema 2), with rows of each kind."""
    db = backend.raw(name)
    steps = postgres.MIGRATIONS[:2] if backend.is_postgres else store._MIGRATIONS[:2]
    for step in steps:
        for statement in store._split_sql(step):
            db.execute(statement)
    if backend.is_postgres:
        db.execute("INSERT INTO meta VALUES ('application', 'im-prober'), ('schema_version', '2')")
    else:
        db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
        db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO series (target, probe) VALUES ('a', ''), ('a', 'login')")
    for i in range(5):
        minute = M + 10 - 2 * i  # written out of minute order: chained in minute order
        db.execute(
            "INSERT INTO minutes (series_id, minute, state, success) VALUES (1, ?, 0, 1), "
            "(2, ?, 0, 1)",
            (minute, minute),
        )
        db.execute(
            "INSERT INTO attempts (series_id, minute, started_at, duration, outcome, detail, "
            "vantage) VALUES (2, ?, ?, 0.5, 0, ?, 'v1')",
            (minute, minute * 60 + 3.5, f"old {i}"),
        )
        db.execute("INSERT INTO network_rounds VALUES ('v1', ?, 0)", (minute,))
        db.execute(
            "INSERT INTO vantage_minutes (series_id, vantage, minute, state, success) "
            "VALUES (1, 'v1', ?, 0, 1)",
            (minute,),
        )
    db.close()


def test_a_schema_2_ledger_is_chained_from_its_first_row_by_the_migration(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    _schema_2(backend, "old")
    with pytest.raises(LedgerError, match="ledger schema 2 is older"):
        backend.open("old", readonly=True)  # read commands explain, as before
    with caplog.at_level(logging.INFO, logger="im_prober"), backend.open("old") as ledger:
        assert ledger.chained == {
            "minutes": 10,
            "vantage_minutes": 5,
            "attempts": 5,
            "network_rounds": 5,
        }
        fill(ledger, M + 20, 2)  # the chains go on from the migrated heads
    [line] = [r for r in caplog.records if "chained" in r.getMessage()]
    assert line.fields == {  # type: ignore[attr-defined]
        "minutes": 10,
        "vantage_minutes": 5,
        "attempts": 5,
        "network_rounds": 5,
    }
    result = verified(backend, "old")
    assert result.ok, breaks_of(result)
    db = backend.raw("old")
    try:
        order = db.execute(
            "SELECT minute FROM minutes WHERE series_id = 1 AND seq <= 5 ORDER BY seq"
        ).fetchall()
    finally:
        db.close()
    assert [m for (m,) in order] == [M + 2, M + 4, M + 6, M + 8, M + 10]
    with backend.open("old") as ledger:
        assert ledger.chained is None  # migrated once


def test_a_reclassified_failure_verifies_and_a_forged_one_is_caught(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger, count=FAILED - M)  # up to the failed minute
        attempts = attempts_of(FAILED, failed=True)
        ledger.store_evidence(
            PendingEvidence("v1", attempts, [NetworkRound("v1", FAILED, True)], 1.0)
        )
        item = decided("a", FAILED, PROBES, attempts)
        item.network_failed = True
        ledger.write_minutes([item], PendingEvidence("v1", [], [], 2.0))
        # a failed minute the network check passed: its failures are the provider's
        later = attempts_of(FAILED + 1, failed=True)
        ledger.store_evidence(
            PendingEvidence("v1", later, [NetworkRound("v1", FAILED + 1, False)], 3.0)
        )
        ledger.write_minutes(
            [decided("a", FAILED + 1, PROBES, later)], PendingEvidence("v1", [], [], 4.0)
        )
    result = verified(backend)
    assert result.ok, breaks_of(result)
    assert result.reclassified == 2
    # The same change where the network check did not fail is the ledger's edit, not its own.
    tamper(backend, f"UPDATE attempts SET outcome = 4 WHERE minute = {FAILED + 1} AND outcome = 1")
    result = verified(backend)
    assert not result.ok and result.reclassified == 2
    [found] = result.breaks
    assert (found.key.table, found.minute, found.field) == ("attempts", FAILED + 1, "outcome")
    assert "no failed network check of vantage v1" in found.problem


# -- each kind of edit behind the ledger's back is caught and named ------------------------


@dataclass(frozen=True)
class Edit:
    name: str
    statements: Callable[[Backend, dict[str, int]], list[str]]
    table: str  # the first break's
    probe: str
    minute: int | None
    field: str | None
    words: str


def _ids(backend: Backend) -> dict[str, int]:
    db = backend.raw()
    try:
        ids = {p or "target": i for i, p in db.execute("SELECT id, probe FROM series").fetchall()}
        ids["head"] = db.execute(
            "SELECT seq FROM chain_heads WHERE tbl = 'minutes' AND series_id = ?", (ids["target"],)
        ).fetchone()[0]
        ids["first_failure"] = db.execute(
            "SELECT min(id) FROM attempts WHERE minute = ? AND outcome = 1", (FAILED,)
        ).fetchone()[0]
    finally:
        db.close()
    return ids


EDITS = [
    Edit(
        "edit a minute's state",
        lambda b, ids: [
            f"UPDATE minutes SET state = 0 WHERE series_id = {ids['login']} AND minute = {FAILED}"
        ],
        "minutes", "login", FAILED, "state", "edited",
    ),
    Edit(
        "edit an attempt's detail",
        lambda b, ids: [
            f"UPDATE attempts SET detail = 'all fine' WHERE id = {ids['first_failure']}"
        ],
        "attempts", "login", FAILED, "detail", "edited",
    ),
    Edit(
        "delete a minute",
        lambda b, ids: [f"DELETE FROM minutes WHERE series_id = {ids['target']} AND minute = {M + 5}"],
        "minutes", "", M + 4, None, "row seq 6 is missing (deleted, after minute",
    ),
    Edit(
        "delete an attempt",
        lambda b, ids: [
            "DELETE FROM attempts WHERE id = (SELECT min(id) FROM attempts WHERE minute = "
            f"{M + 6} AND series_id = {ids['send']})"
        ],
        "minutes", "send", M + 6, "success", "counts 2 attempts but the ledger holds 1",
    ),
    Edit(
        "insert a forged minute",
        lambda b, ids: [
            f"INSERT INTO minutes (series_id, minute, state) VALUES ({ids['target']}, {M + 30}, 0)"
        ],
        "minutes", "", M + 30, None, "a row outside its chain",
    ),
    Edit(
        "append a forged minute past the head",
        lambda b, ids: [
            "INSERT INTO minutes (series_id, minute, state, seq, hash, field_map) VALUES "
            f"({ids['target']}, {M + 30}, 0, {ids['head'] + 1}, {blob(b, bytes(32))}, "
            f"{blob(b, bytes(8))})"
        ],
        "minutes", "", M + 30, None, "beyond the chain's head",
    ),
    Edit(
        "reorder two minutes (swap their seq)",
        lambda b, ids: [
            f"UPDATE minutes SET seq = -1 WHERE series_id = {ids['login']} AND seq = 4",
            f"UPDATE minutes SET seq = 4 WHERE series_id = {ids['login']} AND seq = 5",
            f"UPDATE minutes SET seq = 5 WHERE series_id = {ids['login']} AND seq = -1",
        ],
        "minutes", "login", M + 4, "seq", "rows seq 4 and 5 are swapped",
    ),
    Edit(
        "swap two minutes' contents",
        lambda b, ids: [
            f"UPDATE minutes SET state = 9 WHERE series_id = {ids['login']} AND minute = {M + 2}",
            f"UPDATE minutes SET state = 0, failure = 0, success = 2 WHERE series_id = "
            f"{ids['login']} AND minute = {FAILED}",
            f"UPDATE minutes SET state = 1, failure = 2, success = 0 WHERE series_id = "
            f"{ids['login']} AND minute = {M + 2}",
        ],
        "minutes", "login", M + 2, "state, success, failure", "edited",
    ),
    Edit(
        "drop the attempts behind a failed minute",
        lambda b, ids: [f"DELETE FROM attempts WHERE minute = {FAILED} AND outcome = 1"],
        "minutes", "login", FAILED, "failure", "counts 2 attempts but the ledger holds 0",
    ),
    Edit(
        "move a minute to another series",
        lambda b, ids: [
            f"UPDATE minutes SET series_id = {ids['send']}, minute = {M + 40}, seq = 1000 "
            f"WHERE series_id = {ids['login']} AND minute = {M + 7}"
        ],
        "minutes", "login", M + 6, None, "row seq 8 is missing",
    ),
    Edit(
        "truncate the tail",
        lambda b, ids: [f"DELETE FROM minutes WHERE series_id = {ids['target']} AND minute >= {M + 9}"],
        "minutes", "", M + 8, None, "the newest rows (seq 10..12) are missing: the chain's tail",
    ),
    Edit(
        "replace the head row's hash",
        lambda b, ids: [
            f"UPDATE minutes SET hash = {blob(b, bytes(32))} WHERE series_id = {ids['target']} "
            f"AND seq = {ids['head']}"
        ],
        "minutes", "", M + MINUTES - 1, None, "its hash does not follow from the row before",
    ),
]  # fmt: skip


@pytest.mark.parametrize("edit", EDITS, ids=[e.name for e in EDITS])
def test_an_edit_behind_the_ledgers_back_is_caught_and_named(backend: Backend, edit: Edit) -> None:
    with backend.open() as ledger:
        fill(ledger)
    assert verified(backend).ok
    tamper(backend, *edit.statements(backend, _ids(backend)))
    result = verified(backend)
    assert not result.ok
    first = result.first
    assert first is not None
    expected = (edit.table, edit.probe, edit.minute, edit.field)
    assert (first.key.table, first.key.probe, first.minute, first.field) == expected, breaks_of(
        result
    )
    assert edit.words in first.problem, first.describe()


def test_attempts_dropped_and_their_chain_rewritten_are_caught_by_the_minutes_counts(
    backend: Backend,
) -> None:
    """Someone who deletes a failed minute's attempts and recomputes the rest of the attempt
    chain (seq, hashes and head, with the published encoding) leaves every attempt link
    intact; the minute's counts still say how many attempts it was decided over."""
    with backend.open() as ledger:
        fill(ledger)
    login = sid_of(backend, "login")
    tamper(backend, f"DELETE FROM attempts WHERE minute = {FAILED} AND series_id = {login}")
    db = backend.raw()
    try:
        key = ChainKey("attempts", "a", "login", "v1")
        rows = db.execute(
            "SELECT id, minute, started_at, duration, outcome, error_kind, error_code, "
            f"http_status, detail FROM attempts WHERE series_id = {login} ORDER BY seq"
        ).fetchall()
        prev = chain.genesis(key)
        for seq, (row_id, *fields) in enumerate(rows, 1):
            prev, fields_map = chain.row_link(key, prev, seq, fields)
            db.execute(
                "UPDATE attempts SET seq = ?, hash = ?, field_map = ? WHERE id = ?",
                (-seq, prev, fields_map, row_id),
            )
        db.execute(f"UPDATE attempts SET seq = -seq WHERE series_id = {login}")
        db.execute(
            "UPDATE chain_heads SET seq = ?, hash = ? WHERE tbl = 'attempts' AND series_id = ?",
            (len(rows), prev, login),
        )
        if not backend.is_postgres:
            db.commit()
    finally:
        db.close()
    result = verified(backend)
    [found] = result.breaks
    assert (found.key, found.minute, found.field) == (
        ChainKey("minutes", "a", "login"),
        FAILED,
        "failure",
    )


def test_a_checkpoint_catches_a_tail_cut_together_with_its_head(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger)
        checkpoint = chain.heads(ledger)
    target = sid_of(backend)
    tamper(
        backend,
        f"DELETE FROM minutes WHERE series_id = {target} AND seq > 10",
        f"UPDATE chain_heads SET seq = 10, hash = (SELECT hash FROM minutes WHERE series_id = "
        f"{target} AND seq = 10) WHERE tbl = 'minutes' AND series_id = {target}",
    )
    assert verified(backend).ok  # the chain alone cannot tell: it is whole, only shorter
    result = verified(backend, checkpoints=checkpoint)
    [found] = result.breaks
    assert found.key == ChainKey("minutes", "a") and found.seq == MINUTES
    assert "the chain now ends at seq 10: its tail was cut" in found.problem
    forged = [Head(h.key, h.seq, bytes(32)) if h.key.table == "attempts" else h for h in checkpoint]
    assert any("rewritten" in b.problem for b in verified(backend, checkpoints=forged).breaks)


def test_verify_in_worker_processes_finds_what_one_process_finds(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backend.open() as ledger:
        fill(ledger, count=40)
    monkeypatch.setattr(chain, "PIECE", 7)  # chains in pieces, each with its first row's link
    monkeypatch.setattr(chain, "INLINE_ROWS", 0)
    clean = verified(backend, workers=2)
    assert clean.ok and clean.rows == verified(backend, workers=1).rows
    login, target = sid_of(backend, "login"), sid_of(backend)
    tamper(
        backend, f"UPDATE minutes SET reason = 2 WHERE minute = {M + 16} AND series_id = {login}"
    )
    tamper(backend, f"DELETE FROM minutes WHERE minute = {M + 21} AND series_id = {target}")
    parallel, alone = verified(backend, workers=2), verified(backend, workers=1)
    assert parallel.breaks == alone.breaks and len(parallel.breaks) == 2
    assert {(b.minute, b.field) for b in parallel.breaks} == {
        (M + 16, "reason"),
        (M + 20, None),  # the target level: its seq 22 missing after minute M + 20
    }


def test_verify_of_a_target_and_a_time_range_checks_those_rows_and_their_edges(
    backend: Backend,
) -> None:
    with backend.open() as ledger:
        fill(ledger)
    whole = verified(backend, target="a", since=M + 4, until=M + 8)
    assert whole.ok and whole.rows["minutes"] == 3 * (4 + 2)  # the range, a row either side
    assert whole.chains["network_rounds"] == 0
    # every row of the range deleted: the rows either side still show the gap
    tamper(backend, f"DELETE FROM minutes WHERE minute >= {M + 4} AND minute < {M + 8}")
    result = verified(backend, target="a", since=M + 4, until=M + 8)
    assert not result.ok and len(result.breaks) == 3
    assert all("rows seq 5..8 are missing" in b.problem for b in result.breaks)
    assert verified(backend, target="a", since=M + 10).ok  # outside it nothing is wrong


# -- the command ---------------------------------------------------------------------------


def test_ledger_verify_says_what_it_checked_and_exits_0_1_or_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "ledger: {path: l.sqlite3}\ntargets:\n  - name: a\n    kind: external\n"
        "    external: {command: ['true']}\n    probes: {login: {timeout: 1s}, send: {timeout: 1s}}\n"
        "    sla: {service_month_anchor: 2025-01-01}\n"
    )
    code, out, err = run(capsys, "ledger", "verify", "-c", str(config))
    assert code == 2 and "no ledger here" in err
    with Ledger(tmp_path / "l.sqlite3") as ledger:
        fill(ledger)
    code, out, err = run(capsys, "ledger", "verify", "-c", str(config))
    assert (code, err) == (0, "")
    assert "  minutes: 3 chains, 36 rows checked" in out
    assert "  attempts: 2 chains, 48 rows checked" in out
    assert out.rstrip().endswith("ledger verified: every chain intact")
    assert re.search(r"checked 96 rows in \d+\.\d s", out)
    os_mode = (tmp_path / "l.sqlite3").stat().st_mode
    (tmp_path / "l.sqlite3").chmod(0o444)  # read-only open: a file one may only read works
    try:
        assert run(capsys, "ledger", "verify", "-c", str(config), "--target", "a")[0] == 0
    finally:
        (tmp_path / "l.sqlite3").chmod(os_mode)
    tamper(
        Backend("sqlite", tmp_path), f"UPDATE attempts SET duration = 9.5 WHERE minute = {M + 2}"
    )
    code, out, err = run(capsys, "ledger", "verify", "-c", str(config))
    assert code == 1 and err == ""
    assert (
        "BROKEN: attempts of a/login from vantage v1, minute 2025-02-19T21:22:00Z, seq 5: "
        "the stored duration differs from what was chained (edited) (field: duration)"
    ) in out
    assert "  also broken: attempts of a/send from vantage v1" in out
    assert out.rstrip().endswith("ledger broken: 2 broken chains")
    for flags, words in (
        (["--since", "yesterday"], "'yesterday' is not an ISO-8601 time"),
        (["--target", "nobody"], "--target nobody: the ledger holds no rows"),
    ):
        code, out, err = run(capsys, "ledger", "verify", "-c", str(config), *flags)
        assert code == 2 and words in err, err


def test_ledger_migrate_says_how_many_rows_it_chained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend("sqlite", tmp_path)
    _schema_2(backend, "ledger")
    config = tmp_path / "config.yaml"
    config.write_text(
        "ledger: {path: ledger.sqlite3}\ntargets:\n  - name: a\n    kind: external\n"
        "    external: {command: ['true']}\n    probes: {login: {timeout: 1s}}\n"
        "    sla: {service_month_anchor: 2025-01-01}\n"
    )
    code, out, _err = run(capsys, "ledger", "verify", "-c", str(config))
    assert code == 2
    code, out, _err = run(capsys, "ledger", "migrate", "-c", str(config))
    assert code == 0
    assert (
        "chained the rows already in the ledger, each chain from its first row: 10 minutes, "
        "5 vantage_minutes, 5 attempts, 5 network_rounds"
    ) in out
    assert run(capsys, "ledger", "verify", "-c", str(config))[0] == 0


# -- segments and the encoding, for readers of evidence packs -------------------------------


def test_a_segment_checks_with_the_pure_functions_alone(backend: Backend) -> None:
    with backend.open() as ledger:
        fill(ledger)
        segments = chain.segment(ledger, "a", M + 2, M + 6)
    assert {s.key.table for s in segments} == {"minutes", "attempts", "network_rounds"}
    for part in segments:
        assert chain.check_segment(part.key, part.rows, part.prev, first_seq=part.first_seq) is None
    [login] = [s for s in segments if s.key == ChainKey("attempts", "a", "login", "v1")]
    assert [r[2] for r in login.rows] == [m for m in range(M + 2, M + 6) for _ in range(2)]
    row = list(login.rows[3])
    row[9] = "edited"
    broken = chain.check_segment(login.key, [*login.rows[:3], tuple(row)], login.prev)
    assert broken is not None and broken.seq == login.first_seq + 3
    as_mapping = [
        {"seq": r[0], "hash": r[1], **dict(zip(chain.FIELD_NAMES["attempts"], r[2:], strict=True))}
        for r in login.rows
    ]
    assert chain.check_segment(login.key, as_mapping, login.prev) is None
    gap = chain.check_segment(login.key, login.rows[1:], login.prev, first_seq=login.first_seq)
    assert gap is not None and "rows are missing" in gap.problem


def test_the_encoding_is_the_one_docs_evidence_md_describes() -> None:
    """The worked example in docs/evidence.md, byte for byte."""
    text = (ROOT / "docs" / "evidence.md").read_text(encoding="utf-8")
    key = ChainKey("attempts", "a", "login", "v1")
    fields = (29_000_003, 1_740_000_181.25, 0.1, 1, "timeout", None, 504, "gw")
    encoded = chain.encode(key, 1, fields)
    digest = chain.link(chain.genesis(key), encoded)
    assert (
        chain.genesis(key)
        == hashlib.sha256(b"im-prober ledger chain v1\x00" + chain.key_bytes(key)).digest()
    )
    for value in (encoded.hex(), chain.genesis(key).hex(), digest.hex()):
        assert value in text.replace("\n", "").replace(" ", ""), value
    assert chain.field_map("attempts", fields).hex() in text


_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_texts = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=1, max_value=2**62),
    minute=_ints,
    floats=st.tuples(st.floats(allow_nan=False), st.floats(allow_nan=False)),
    codes=st.tuples(_ints, st.none() | _ints, st.none() | _ints),
    texts=st.tuples(_texts, _texts),
    names=st.tuples(_texts, _texts, _texts),
)
def test_the_fast_encoders_write_exactly_the_reference_encoding(
    seq, minute, floats, codes, texts, names
) -> None:
    attempt = (minute, *floats, codes[0], texts[0], codes[1], codes[2], texts[1])
    for table, fields in (
        ("attempts", attempt),
        ("minutes", (minute, *codes[:1], 0, 1, 2, 3, 4, 5)),
        ("vantage_minutes", (minute, 1, 2, 3, 4, 5, 6, 7)),
        ("network_rounds", (minute, 1)),
    ):
        key = ChainKey(table, *names)
        reference = (
            chain.key_bytes(key)
            + chain.field_encoding("i", seq)
            + b"".join(
                chain.field_encoding(kind, value)
                for (_name, kind), value in zip(chain.FIELDS[table], fields, strict=True)
            )
        )
        assert chain.encode(key, seq, fields) == reference
        prev = hashlib.sha256(reference).digest()
        assert chain.row_link(key, prev, seq, fields) == (
            chain.link(prev, reference),
            chain.field_map(table, fields),
        )
