"""The fleet's part of the ledger: each prober's verdicts as a vantage, the probers'
heartbeats, and the closer's lease (one prober at a time writes the fleet's minutes).

Rows here sit beside the fleet's own (`minutes`): `vantage_minutes` and `vantage_totals` per
(series, vantage), `vantages` one row per prober. The SQL is the subset SQLite and
PostgreSQL share, as in store.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..records import ClosedMinute
from ..sla import Outcome, OutcomeCounts, Verdict
from .codes import OUTCOME_CODES, REASON_CODES, REASONS_BY_CODE, STATE_CODES, STATES_BY_CODE
from .sqlite_file import SqliteFile
from .store import Ledger, PendingEvidence

FLEET_LEAD_LOCK = 0x494D5046  # the fleet closer's advisory lock key ("IMPF")


@dataclass(frozen=True, slots=True)
class VantageSeen:
    """A prober of the fleet as the ledger last heard of it."""

    name: str
    started_at: float
    last_seen: float
    closed_through: int  # the newest minute it closed as a vantage (-1: none yet)
    version: str


@dataclass(frozen=True, slots=True)
class VantageVerdict:
    vantage: str
    verdict: Verdict
    counts: OutcomeCounts


# vantage_minutes' columns as a bulk insert sends them (PostgreSQL's types, for its arrays)
_VANTAGE_COLUMNS = (
    "series_id", "vantage", "minute", "state", "reason",
    "success", "failure", "client_error", "throttled", "prober_fault",
    "seq", "hash", "field_map",
)  # fmt: skip
_VANTAGE_TYPES = ("int", "text", "int", "smallint", "smallint", *("int",) * 5, "bigint")
_VANTAGE_TYPES += ("bytea", "bytea")


def write_vantage_minutes(
    ledger: Ledger, closed: Sequence[ClosedMinute], pending: PendingEvidence
) -> list[ClosedMinute]:
    """A fleet prober's closed minutes, as its vantage's verdicts, with the evidence it has
    not stored yet and its heartbeat, in one transaction; a row already there stays."""
    vantage = pending.vantage
    with ledger._transaction() as tx:
        tx.prepare_chains(
            tx.pending_chains(pending.attempts, pending.rounds)
            + [
                ("vantage_minutes", ledger._series_id(item.target, probe), vantage)
                for item in closed
                for probe in ("", *item.probes)
            ]
        )
        tx.insert_pending(pending.attempts, pending.rounds)
        tx.heartbeat(vantage, pending.seen_at, max((c.minute for c in closed), default=None))
        written, totals = _insert_all_new(ledger, tx, closed, vantage)
        if written is None:  # some minute was there already (a restart): row by row
            written, totals = _insert_row_by_row(ledger, tx, closed, vantage)
        moved: set[int] = set()
        for item in written:
            # Attempt totals count the fleet's minutes (their summed counts, written once by
            # the closer), not each vantage's, so they count no attempt twice and agree with
            # the closer's view.
            if item.network_failed and item.minute not in moved:
                moved.add(item.minute)
                tx.reclassify_network_failures(item.minute, vantage)
        if totals:  # one statement on PostgreSQL (row by row it took 0.6 s at 10,000)
            tx._db.add_counts(
                "vantage_totals",
                ("series_id", "vantage", "state"),
                ("int", "text", "smallint"),
                [(sid, vantage, code, n) for (sid, code), n in sorted(totals.items())],
            )
    return written


def write_fleet_alone(
    ledger: Ledger,
    minute: int,
    closed: Sequence[ClosedMinute],
    pending: PendingEvidence,
    *,
    alive_since: float,
    decide: Callable[[dict[tuple[str, str], list[VantageVerdict]]], list[ClosedMinute]],
) -> list[ClosedMinute] | None:
    """When this vantage is the fleet's only one for `minute` (of which `closed` are its
    verdicts): the evidence it has not stored yet and the fleet's minutes `decide` makes of
    its verdicts, in one transaction, before its own rows (`write_vantage_minutes`, next),
    so the fleet's verdict does not wait for them. Returns the fleet's minutes written.

    Nothing is written (None) when another vantage has a heartbeat since `alive_since` (the
    closer waits for it) or any vantage has a verdict of the minute (another's: the closer
    counts it; this one's: a restart, and the closer reads what the ledger holds). Should
    the prober die before its own rows, the minute is one it stored attempts of and did not
    close: at restart it is decided again from them, as after any crash inside a close."""
    vantage = pending.vantage
    with ledger._transaction() as tx:
        # Before any chain is locked: with other vantages about, the vantage write must not
        # wait on a lock it does not need (an import holding the minutes').
        if _not_alone(ledger, vantage, minute, alive_since):
            return None
        fleet = decide(
            {
                (item.target, probe): [VantageVerdict(vantage, verdict, counts)]
                for item in closed
                for probe, verdict, counts in _rows_of(item)
            }
        )
        tx.prepare_chains(ledger.minute_chains(tx, fleet, pending))
        # the evidence as store_evidence stores it: the heartbeat says nothing closed yet
        tx.insert_pending(pending.attempts, pending.rounds)
        tx.heartbeat(vantage, pending.seen_at, None)
        if any(item.network_failed for item in closed):
            # as the vantage write does: the minute's failures were this prober's own
            tx.reclassify_network_failures(minute, vantage)
        return ledger.write_minutes_in(tx, fleet)


def _not_alone(ledger: Ledger, vantage: str, minute: int, alive_since: float) -> bool:
    """Another vantage alive since `alive_since`, or any with a verdict of `minute` (indexed)."""
    row = ledger._db.execute(
        "SELECT EXISTS (SELECT 1 FROM vantages WHERE name <> ? AND last_seen >= ?) "
        "OR EXISTS (SELECT 1 FROM vantage_minutes WHERE minute = ?)",
        (vantage, alive_since, minute),
    ).fetchone()
    return bool(row[0])


Totals = Counter[tuple[int, int]]  # (series id, state code): verdicts added


def _rows_of(item: ClosedMinute) -> list[tuple[str, Verdict, OutcomeCounts]]:
    """The minute's rows: the target's verdict first, then each probe's."""
    return [("", item.verdict, item.counts), *((p, v, c) for p, (v, c) in item.probes.items())]


def _fields(item: ClosedMinute, verdict: Verdict, counts: OutcomeCounts) -> tuple:
    return (
        item.minute,
        STATE_CODES[verdict.state],
        REASON_CODES[verdict.reason],
        *counts.as_tuple(),
    )


def _insert_all_new(
    ledger: Ledger, tx: Any, closed: Sequence[ClosedMinute], vantage: str
) -> tuple[list[ClosedMinute] | None, Totals]:
    """The usual case, every row new: linked in order and sent in one bulk insert. (Row by
    row, a PostgreSQL round trip each, a minute of 10,000 targets took 14 s to write, 6.5 s
    of it the prober's CPU; in bulk 2.1-2.4 s: bench/README.md.) When a row was there
    already, all of it is undone and None returned."""
    heads = tx.heads_snapshot()
    rows, totals = [], Counter()
    for item in closed:
        for probe, verdict, counts in _rows_of(item):
            sid = ledger._series_id(item.target, probe)
            fields = _fields(item, verdict, counts)
            rows.append(
                (sid, vantage, *fields, *tx.link(("vantage_minutes", sid, vantage), fields))
            )
            totals[(sid, STATE_CODES[verdict.state])] += 1
    db = tx._db
    db.execute("SAVEPOINT vantage_rows")
    added = db.insert_new("vantage_minutes", _VANTAGE_COLUMNS, _VANTAGE_TYPES, rows, "minute")
    if len(added) == len(rows):
        db.execute("RELEASE SAVEPOINT vantage_rows")
        return list(closed), totals
    db.execute("ROLLBACK TO SAVEPOINT vantage_rows")
    db.execute("RELEASE SAVEPOINT vantage_rows")
    tx.restore_heads(heads)
    return None, Counter()


def _insert_row_by_row(
    ledger: Ledger, tx: Any, closed: Sequence[ClosedMinute], vantage: str
) -> tuple[list[ClosedMinute], Totals]:
    """Each row on its own, so a minute decided before (a restart) is left as it was and
    only rows added advance a chain."""
    written: list[ClosedMinute] = []
    totals: Totals = Counter()
    db = tx._db
    for item in closed:
        first = True
        for probe, verdict, counts in _rows_of(item):
            sid = ledger._series_id(item.target, probe)
            chain = ("vantage_minutes", sid, vantage)
            fields = _fields(item, verdict, counts)
            cursor = db.execute(
                f"INSERT INTO vantage_minutes ({', '.join(_VANTAGE_COLUMNS)}) VALUES "
                f"({', '.join('?' * len(_VANTAGE_COLUMNS))}) "
                "ON CONFLICT (series_id, minute, vantage) DO NOTHING",
                (sid, vantage, *fields, *tx.link(chain, fields)),
            )
            if cursor.rowcount != 1:
                tx.unlink(chain)  # there already: only rows added advance a chain
                if first:
                    break  # decided before (a restart): leave the minute as it was
                continue
            if first:
                written.append(item)
                first = False
            totals[(sid, STATE_CODES[verdict.state])] += 1
    return written, totals


def try_lead(ledger: Ledger) -> bool:
    """Become (or stay) the fleet's one closer. PostgreSQL: a session advisory lock, let go
    the moment this connection ends (the process dies, the network drops), so another
    prober takes over at its next try. A SQLite ledger has one prober: it always leads."""
    with ledger._lock:
        if isinstance(ledger._db, SqliteFile):
            return True
        row = ledger._db.execute("SELECT pg_try_advisory_lock(?)", (FLEET_LEAD_LOCK,)).fetchone()
    return bool(row[0])


def first_vantage_minute(ledger: Ledger, since: int) -> int | None:
    """The oldest minute at or after `since` that some vantage decided (indexed)."""
    with ledger._lock:
        row = ledger._db.execute(
            "SELECT min(minute) FROM vantage_minutes WHERE minute >= ?", (since,)
        ).fetchone()
    return row[0]


def vantages(ledger: Ledger) -> list[VantageSeen]:
    with ledger._lock:
        rows = ledger._db.execute(
            "SELECT name, started_at, last_seen, closed_through, version FROM vantages "
            "ORDER BY name"
        ).fetchall()
    return [VantageSeen(*row) for row in rows]


def verdicts_of_minute(ledger: Ledger, minute: int) -> dict[tuple[str, str], list[VantageVerdict]]:
    """Every vantage's verdict of `minute`, per (target, probe)."""
    with ledger._lock:
        rows = ledger._db.execute(
            "SELECT s.target, s.probe, v.vantage, v.state, v.reason, v.success, v.failure, "
            "v.client_error, v.throttled, v.prober_fault FROM vantage_minutes v "
            "JOIN series s ON s.id = v.series_id WHERE v.minute = ?",
            (minute,),
        ).fetchall()
    found: dict[tuple[str, str], list[VantageVerdict]] = {}
    for target, probe, vantage, state, reason, *counts in rows:
        verdict = Verdict(STATES_BY_CODE[state], REASONS_BY_CODE[reason])
        found.setdefault((target, probe), []).append(
            VantageVerdict(vantage, verdict, OutcomeCounts(*counts))
        )
    return found


def vantage_totals(ledger: Ledger, vantage: str) -> Counter[tuple[str, str]]:
    """One vantage's target-level verdicts so far, per (target, state): the running totals
    its counter restarts from, so a restart is not a counter reset."""
    with ledger._lock:
        rows = ledger._db.execute(
            "SELECT s.target, v.state, v.count FROM vantage_totals v "
            "JOIN series s ON s.id = v.series_id WHERE v.vantage = ? AND s.probe = ''",
            (vantage,),
        ).fetchall()
    return Counter({(t, STATES_BY_CODE[state].value): n for t, state, n in rows})


def failing_vantages(ledger: Ledger, target: str, start: int, end: int) -> list[str]:
    """The vantages that saw the target fail in minutes [start, end), from the attempts
    they stored (a single prober's too: its attempts carry its vantage; attempts stored
    before vantages were recorded have none)."""
    failure = OUTCOME_CODES[Outcome.FAILURE]
    with ledger._lock:
        rows = ledger._db.execute(
            "SELECT DISTINCT a.vantage FROM attempts a JOIN series s ON s.id = a.series_id "
            "WHERE s.target = ? AND a.minute >= ? AND a.minute < ? AND a.outcome = ? "
            "AND a.vantage <> '' ORDER BY a.vantage",
            (target, start, end, failure),
        ).fetchall()
    return [row[0] for row in rows]
