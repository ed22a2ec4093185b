"""The ledger: minutes written once with their attempts, totals in step, gaps, safe opening,
crash safety, and imports that change nothing unless all is well."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from prober.errors import LedgerError
from prober.ledger import postgres, store
from prober.ledger.store import (
    SCHEMA_VERSION,
    ImportConflict,
    Ledger,
    MinuteRow,
    NetworkRound,
    PendingEvidence,
)
from prober.records import Attempt, ClosedMinute
from prober.sla import Outcome, OutcomeCounts, Reason, State, Verdict

from .ledger_backends import Backend
from .ledger_writer import closed_minute

ROOT = Path(__file__).resolve().parents[1]
M0 = 29_000_000  # an epoch minute in 2025


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(backend: Backend) -> list[tuple]:
    db = backend.raw()
    rows = db.execute("SELECT * FROM minute_rows ORDER BY 1, 2, 3").fetchall()
    rows += db.execute("SELECT * FROM verdict_totals ORDER BY 1, 2").fetchall()
    db.close()
    return rows


def test_minutes_are_written_once_with_their_attempts(backend: Backend) -> None:
    ledger = backend.open()
    attempt = Attempt("a", "login", M0 * 60 + 1.5, 0.2, Outcome.FAILURE, "timeout", None, 504, "gw")
    item = ClosedMinute(
        "a",
        M0,
        Verdict(State.APPARENT_FAILURE),
        OutcomeCounts(failure=1),
        {"login": (Verdict(State.APPARENT_FAILURE), OutcomeCounts(failure=1))},
        [attempt],
    )
    assert ledger.write_minutes([item]) == [item]
    assert ledger.write_minutes([item]) == []  # already there: nothing doubles
    assert ledger.attempts_in("a", M0, M0 + 1) == [attempt]
    assert ledger.verdict_totals() == {
        ("a", ""): {State.APPARENT_FAILURE: 1},
        ("a", "login"): {State.APPARENT_FAILURE: 1},
    }
    assert ledger.attempt_totals() == {("a", "login"): {Outcome.FAILURE: 1}}
    assert ledger.last_closed_minute("a") == M0
    assert ledger.last_closed_minute("unknown") is None
    assert ledger.minutes_in_state("a", State.APPARENT_FAILURE, M0, M0 + 5) == [M0]


def test_gap_minutes_become_prober_down_unless_in_maintenance(backend: Backend) -> None:
    ledger = backend.open()
    ledger.write_minutes([ClosedMinute("a", M0, Verdict(State.AVAILABLE), OutcomeCounts(1))])

    def verdict_of(minute: int) -> Verdict:
        if minute == M0 + 2:
            return Verdict(State.MAINTENANCE)
        return Verdict(State.NO_DATA, Reason.PROBER_DOWN)

    # the range overlaps the already written minute, which stays as it was
    assert ledger.record_gap("a", ["login"], M0, M0 + 4, verdict_of) == 3
    counts = ledger.state_counts("a", M0, M0 + 10)
    assert counts[State.AVAILABLE] == 1
    assert counts[State.MAINTENANCE] == 1
    assert counts[State.NO_DATA] == 2
    assert ledger.state_counts("a", M0, M0 + 10, probe="login")[State.NO_DATA] == 3
    rows = list(ledger.minute_rows("a", since=M0 + 1, until=M0 + 2))
    assert rows == [
        MinuteRow("a", "", M0 + 1, State.NO_DATA, Reason.PROBER_DOWN),
        MinuteRow("a", "login", M0 + 1, State.NO_DATA, Reason.PROBER_DOWN),
    ]
    assert ledger.record_gap("a", [], M0 + 5, M0 + 5) == 0


def test_totals_match_the_rows_after_many_writes(backend: Backend) -> None:
    ledger = backend.open()
    rng = random.Random(7)
    for m in range(M0, M0 + 300, 3):
        ledger.write_minutes([closed_minute(t, m + i, rng) for t in ("x", "y") for i in range(3)])
    ledger.close()
    assert_totals_consistent(backend)


def assert_totals_consistent(backend: Backend, name: str = "l") -> None:
    assert backend.integrity(name) == "ok"
    db = backend.raw(name)
    counted = dict(
        ((sid, state), n)
        for sid, state, n in db.execute(
            "SELECT series_id, state, count(*) FROM minutes GROUP BY 1, 2"
        )
    )
    totals = {(sid, state): n for sid, state, n in db.execute("SELECT * FROM verdict_totals")}
    assert counted == totals
    attempts = dict(
        ((sid, o), n)
        for sid, o, n in db.execute(
            "SELECT series_id, outcome, count(*) FROM attempts GROUP BY 1, 2"
        )
    )
    assert attempts == {(s, o): n for s, o, n in db.execute("SELECT * FROM attempt_totals")}
    # every target minute has its probe minutes and exactly the attempts it counted
    rows = db.execute(
        "SELECT s.target, m.minute, m.success + m.failure + m.client_error + m.throttled "
        "+ m.prober_fault FROM minutes m JOIN series s ON s.id = m.series_id WHERE s.probe = ''"
    ).fetchall()
    for target, minute, expected in rows:
        (found,) = db.execute(
            "SELECT count(*) FROM attempts a JOIN series s ON s.id = a.series_id "
            "WHERE s.target = ? AND a.minute = ?",
            (target, minute),
        ).fetchone()
        assert found == expected, (target, minute)
        (probe_rows,) = db.execute(
            "SELECT count(*) FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.target = ? AND s.probe != '' AND m.minute = ?",
            (target, minute),
        ).fetchone()
        assert probe_rows == 2
    db.close()


def test_killed_writer_leaves_whole_minutes_only(tmp_path: Path) -> None:
    path = tmp_path / "crash.sqlite3"
    rng = random.Random(11)
    last = []
    for round_ in range(8):
        start = M0 + round_ * 1_000_000
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ledger_writer", str(path), str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert_totals_consistent(Backend("sqlite", tmp_path), "crash")
        with Ledger(path) as ledger:
            closed = ledger.last_closed_minute("t0")
        assert closed is not None and closed >= start
        last.append(closed)
    assert len(set(last)) == len(last)


def test_not_a_ledger_is_refused_and_left_untouched(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database\n" * 10)
    before = file_digest(text)
    with pytest.raises(LedgerError, match="not an im-prober ledger"):
        Ledger(text)
    assert file_digest(text) == before

    other = tmp_path / "other.sqlite3"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE stuff (x)")
    db.commit()
    db.close()
    before = file_digest(other)
    with pytest.raises(LedgerError, match="another application's file"):
        Ledger(other)
    assert file_digest(other) == before


def test_a_schema_1_ledger_is_upgraded_in_place_keeping_every_row(backend: Backend) -> None:
    db = backend.raw("old")
    if backend.is_postgres:
        for statement in store._split_sql(postgres.MIGRATIONS[0]):
            db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('application', 'im-prober'), ('schema_version', '1')")
    else:
        for statement in store._split_sql(store._MIGRATIONS[0]):
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {store.APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO series (target, probe) VALUES ('a', ''), ('a', 'login')")
    db.execute(
        "INSERT INTO minutes (series_id, minute, state) VALUES (1, ?, 1), (2, ?, 1)", (M0, M0)
    )
    db.execute(
        "INSERT INTO attempts (series_id, minute, started_at, duration, outcome, error_kind) "
        "VALUES (2, ?, ?, 0.5, 1, 'timeout')",
        (M0, M0 * 60 + 3),
    )
    db.execute("INSERT INTO verdict_totals VALUES (1, 1, 1), (2, 1, 1)")
    db.close()
    ledger = backend.open("old")
    db = backend.raw("old")
    if backend.is_postgres:
        version = db.schema_version()[0]
    else:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION
    assert [(r.target, r.probe, r.state) for r in ledger.minute_rows()] == [
        ("a", "", State.APPARENT_FAILURE),
        ("a", "login", State.APPARENT_FAILURE),
    ]
    [attempt] = ledger.attempts_in("a", M0, M0 + 1)
    assert (attempt.outcome, attempt.error_kind, attempt.vantage) == (
        Outcome.FAILURE,
        "timeout",
        "",
    )
    assert ledger.verdict_totals()[("a", "")] == {State.APPARENT_FAILURE: 1}


def test_attempts_stored_before_their_minute_come_back_for_their_vantage_only(
    backend: Backend,
) -> None:
    ledger = backend.open()
    mine = Attempt("a", "login", M0 * 60 + 5, 0.1, Outcome.SUCCESS, vantage="here")
    other = Attempt("a", "login", M0 * 60 + 6, 0.1, Outcome.FAILURE, "connect", vantage="there")
    later = Attempt("a", "login", (M0 + 1) * 60 + 5, 0.1, Outcome.FAILURE, vantage="here")
    round_ = NetworkRound("here", M0, False)
    ledger.store_evidence(PendingEvidence("here", [mine, other, later], [round_], M0 * 60 + 70))
    found = ledger.unclosed_evidence("here", M0)
    assert found.attempts == [mine] and found.rounds == [round_]
    assert ledger.unclosed_evidence("here", M0 + 1).attempts == [mine, later]
    # totals count the attempts of closed minutes, once each: none is closed yet
    assert ledger.attempt_totals() == {}
    # once M0 has its row, only the later minute's attempt is left to take back
    ok = Verdict(State.AVAILABLE)
    ledger.write_minutes(
        [ClosedMinute("a", M0, ok, OutcomeCounts(1), {"login": (ok, OutcomeCounts(1))})]
    )
    assert ledger.unclosed_evidence("here", M0 + 1).attempts == [later]


def test_a_minute_whose_network_check_failed_turns_its_stored_failures_into_prober_faults(
    backend: Backend,
) -> None:
    ledger = backend.open()
    stored = Attempt("a", "login", M0 * 60 + 5, 0.1, Outcome.FAILURE, "connect", vantage="v")
    elsewhere = Attempt("a", "login", M0 * 60 + 5, 0.1, Outcome.FAILURE, "connect", vantage="w")
    for attempt in (stored, elsewhere):
        ledger.store_evidence(PendingEvidence(attempt.vantage, [attempt], seen_at=M0 * 60 + 6))
    unstored = Attempt("a", "login", M0 * 60 + 35, 0.1, Outcome.FAILURE, "timeout", vantage="v")
    down = Verdict(State.NO_DATA, Reason.PROBER_NETWORK)
    decided = [replace(a, outcome=Outcome.PROBER_FAULT) for a in (stored, unstored)]
    item = ClosedMinute(
        "a",
        M0,
        down,
        OutcomeCounts(prober_fault=2),
        {"login": (down, OutcomeCounts(prober_fault=2))},
        decided,
        network_failed=True,
    )
    pending = PendingEvidence("v", [unstored], [NetworkRound("v", M0, True)])
    assert ledger.write_minutes([item], pending) == [item]
    outcomes = sorted((a.vantage, a.outcome) for a in ledger.attempts_in("a", M0, M0 + 1))
    assert outcomes == [
        ("v", Outcome.PROBER_FAULT),
        ("v", Outcome.PROBER_FAULT),
        ("w", Outcome.FAILURE),  # another vantage's network was fine
    ]
    # the minute's own attempts, as decided (w's minute is not closed: not counted yet)
    assert ledger.attempt_totals() == {("a", "login"): {Outcome.PROBER_FAULT: 2}}
    # the round was stored with the minute, and the minute is closed: nothing to take back
    db = backend.raw()
    assert db.execute("SELECT vantage, minute, all_failed FROM network_rounds").fetchall() == [
        ("v", M0, 1)
    ]
    db.close()
    assert ledger.unclosed_evidence("v", M0 + 1).rounds == []


def test_newer_schema_is_refused(backend: Backend) -> None:
    backend.open().close()
    db = backend.raw()
    if backend.is_postgres:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    else:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = backend.snapshot()
    for readonly in (False, True):
        with pytest.raises(
            LedgerError, match=f"newer im-prober \\(ledger schema {SCHEMA_VERSION + 1}\\)"
        ):
            backend.open(readonly=readonly)
    assert backend.snapshot() == before


def test_missing_ledger_for_reading(backend: Backend) -> None:
    with pytest.raises(LedgerError, match=r"no ledger (here|in this database)"):
        backend.open("absent", create=False)
    with pytest.raises(LedgerError, match=r"no ledger here|an empty database, not a ledger yet"):
        backend.open("absent", readonly=True)
    if backend.is_postgres:
        assert backend.raw("absent").schema_version() == (0, False)  # nothing was created
    else:
        assert not backend.location("absent").exists()


def test_import_is_idempotent_and_refuses_conflicts_whole(backend: Backend) -> None:
    ledger = backend.open()
    rows = [(i + 2, MinuteRow("a", "", M0 + i, State.AVAILABLE)) for i in range(10)]
    assert ledger.import_rows(rows).added == 10
    again = ledger.import_rows(rows)
    assert (again.added, again.unchanged) == (0, 10)
    before = dump(backend)
    conflicting = [
        (2, MinuteRow("a", "", M0 + 20, State.AVAILABLE)),  # new, would be added
        (3, MinuteRow("a", "", M0 + 4, State.APPARENT_FAILURE)),  # contradicts the ledger
    ]
    with pytest.raises(
        ImportConflict, match=r"line 3: .* apparent_failure in the file but available"
    ):
        ledger.import_rows(conflicting)
    assert dump(backend) == before
    inner = [
        (2, MinuteRow("a", "", M0 + 30, State.AVAILABLE)),
        (9, MinuteRow("a", "", M0 + 30, State.NO_DATA, Reason.PROBER_DOWN)),
    ]
    with pytest.raises(ImportConflict, match=r"line 9: .* contradicts line 2"):
        ledger.import_rows(inner)
    assert dump(backend) == before
    # the series cache survived the rollback: later writes still work
    ledger.write_minutes([ClosedMinute("b", M0, Verdict(State.AVAILABLE), OutcomeCounts(1))])
    assert ledger.last_closed_minute("b") == M0


def test_prune_keeps_minutes(backend: Backend) -> None:
    ledger = backend.open()
    rng = random.Random(3)
    ledger.write_minutes([closed_minute("a", M0 + i, rng) for i in range(20)])
    minutes_before = ledger.state_counts("a", M0, M0 + 20)
    ledger.prune_attempts(before=(M0 + 10) * 60)
    assert all(a.minute >= M0 + 10 for a in ledger.attempts_in("a", M0, M0 + 20))
    assert ledger.state_counts("a", M0, M0 + 20) == minutes_before


def test_a_ledger_opened_read_only_reads_and_never_writes(backend: Backend) -> None:
    with backend.open() as ledger:
        ledger.write_minutes([ClosedMinute("a", M0, Verdict(State.AVAILABLE), OutcomeCounts(1))])
    before = backend.snapshot()
    with backend.open(readonly=True) as reader:
        assert reader.last_closed_minute("a") == M0
        assert reader.state_counts("a", M0, M0 + 1)[State.AVAILABLE] == 1
        with pytest.raises(LedgerError, match="opened read-only"):
            reader.write_minutes(
                [ClosedMinute("a", M0 + 1, Verdict(State.AVAILABLE), OutcomeCounts(1))]
            )
        with pytest.raises(LedgerError, match="opened read-only"):
            reader.record_gap("a", [], M0 + 1, M0 + 5)
        with pytest.raises(LedgerError, match="opened read-only"):
            reader.store_evidence(
                PendingEvidence("v", [Attempt("a", "login", M0 * 60 + 70, 0.1, Outcome.SUCCESS)])
            )
    assert backend.snapshot() == before
    if not backend.is_postgres:
        assert sorted(os.listdir(backend.folder)) == ["l.sqlite3"]  # no -wal/-shm left behind


def test_rows_at_or_after_a_minute_are_not_the_last_closed_one(backend: Backend) -> None:
    ledger = backend.open()
    ledger.write_minutes(
        [ClosedMinute("a", M0 + i, Verdict(State.AVAILABLE), OutcomeCounts(1)) for i in range(3)]
    )
    ledger.import_rows([(2, MinuteRow("a", "", M0 + 1000, State.APPARENT_FAILURE))])
    assert ledger.last_closed_minute("a") == M0 + 1000
    assert ledger.last_closed_minute("a", before=M0 + 10) == M0 + 2
    assert ledger.future_rows(M0 + 10) == {"a": 1}
    assert ledger.future_rows(M0 + 1001) == {}
    assert [m for m, _ in ledger.state_codes("a", M0, until=M0 + 10)] == [M0, M0 + 1, M0 + 2]
    ledger.close()


def test_stored_evidence_of_minutes_never_closed_comes_back_and_heartbeats_only_advance(
    backend: Backend,
) -> None:
    ledger = backend.open()
    first = Attempt("a", "login", M0 * 60 + 5, 0.1, Outcome.SUCCESS, vantage="v")
    ledger.store_evidence(PendingEvidence("v", [first], [NetworkRound("v", M0, False)], 1000.0))
    closed = ClosedMinute("a", M0, Verdict(State.AVAILABLE), OutcomeCounts(1), {}, [first])
    assert ledger.write_minutes([closed], PendingEvidence("v", [], [], 1060.0)) == [closed]
    # the process stored a later minute's attempts, then died before closing it
    later = Attempt("a", "login", (M0 + 1) * 60 + 5, 0.1, Outcome.FAILURE, "timeout", vantage="v")
    ledger.store_evidence(PendingEvidence("v", [later], [NetworkRound("v", M0 + 1, True)], 1070.0))
    ledger.store_evidence(PendingEvidence("v", [], [], 1065.0))  # a late, older heartbeat
    ledger.close()
    again = backend.open()
    found = again.unclosed_evidence("v", M0 + 2)
    assert found.attempts == [later]  # not the closed minute's
    assert found.rounds == [NetworkRound("v", M0 + 1, True)]
    assert again.unclosed_evidence("w", M0 + 2).attempts == []
    db = backend.raw()
    assert db.execute("SELECT name, last_seen, closed_through FROM vantages").fetchall() == [
        ("v", 1070.0, M0)
    ]
    assert again.integrity_check() == "ok"
