"""The status page's reads of the ledger: its own read-only connection (WAL lets it read
while the daemon writes, and it never waits on the writer's lock), plus the few range
queries only the page needs. Every query is a range of a primary key or index —
minutes by (series_id, minute), attempts by (series_id, minute) — never a table scan."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..ledger.codes import OUTCOME_CODES, REASONS_BY_CODE, STATE_CODES, STATES_BY_CODE
from ..ledger.store import TARGET_LEVEL, Ledger
from ..records import Attempt
from ..sla import Outcome, Reason, State

_FAILURE = OUTCOME_CODES[Outcome.FAILURE]
_PROBER_FAULT = OUTCOME_CODES[Outcome.PROBER_FAULT]
_AVAILABLE = STATE_CODES[State.AVAILABLE]
# A series asked for and not known is looked up again at most this often: a new target's
# first rows appear after a reload, and a missing one must not cost a query per request.
_SERIES_RETRY = 5.0


@dataclass(frozen=True, slots=True)
class MinuteState:
    minute: int
    state: State
    reason: Reason


class StatusLedger(Ledger):
    """The ledger opened read-only for the page."""

    def __init__(self, location: str | Path, password: str | None = None) -> None:
        self._series_checked = 0.0
        super().__init__(location, readonly=True, password=password)

    def _existing_series(self, target: str, probe: str = TARGET_LEVEL) -> int | None:
        found = self._series.get((target, probe))
        if found is None and time.monotonic() - self._series_checked > _SERIES_RETRY:
            # Series created by the daemon after this connection read them.
            with self._lock:
                self._load_series()
            self._series_checked = time.monotonic()
            found = self._series.get((target, probe))
        return found

    def first_minute(self, target: str) -> int | None:
        """The target's oldest row (how far back its months go)."""
        sid = self._existing_series(target)
        if sid is None:
            return None
        with self._lock:
            return self._db.execute(
                "SELECT min(minute) FROM minutes WHERE series_id = ?", (sid,)
            ).fetchone()[0]

    def codes(self, target: str, probe: str, since: int, until: int) -> list[tuple[int, int]]:
        """(minute, state code) of one series in [since, until)."""
        sid = self._existing_series(target, probe)
        if sid is None:
            return []
        with self._lock:
            return self._db.execute(
                "SELECT minute, state FROM minutes WHERE series_id = ? AND minute >= ? "
                "AND minute < ? ORDER BY minute",
                (sid, since, until),
            ).fetchall()

    def unavailable(self, target: str, since: int, until: int) -> list[tuple[int, int]]:
        """(minute, state code) of the target-level rows in [since, until) that are not
        available: few in a good month; SQLite filters the range itself."""
        sid = self._existing_series(target)
        if sid is None:
            return []
        with self._lock:
            return self._db.execute(
                "SELECT minute, state FROM minutes WHERE series_id = ? AND minute >= ? "
                "AND minute < ? AND state != ? ORDER BY minute",
                (sid, since, until, _AVAILABLE),
            ).fetchall()

    def row_count(self, target: str, since: int, until: int) -> int:
        sid = self._existing_series(target)
        if sid is None:
            return 0
        with self._lock:
            return self._db.execute(
                "SELECT count(*) FROM minutes WHERE series_id = ? AND minute >= ? AND minute < ?",
                (sid, since, until),
            ).fetchone()[0]

    def minute_states(self, target: str, probe: str, since: int, until: int) -> list[MinuteState]:
        """One series' rows in [since, until) with their reasons (the minutes API)."""
        sid = self._existing_series(target, probe)
        if sid is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT minute, state, reason FROM minutes WHERE series_id = ? AND minute >= ? "
                "AND minute < ? ORDER BY minute",
                (sid, since, until),
            ).fetchall()
        return [MinuteState(m, STATES_BY_CODE[s], REASONS_BY_CODE[r]) for m, s, r in rows]

    def failure_kinds(
        self, target: str, probes: list[str], since: int, until: int
    ) -> dict[str, list[tuple[int, str, int]]]:
        """probe → (minute, error kind, failed attempts) in minutes [since, until), in
        minute order."""
        out: dict[str, list[tuple[int, str, int]]] = {}
        for probe in probes:
            sid = self._existing_series(target, probe)
            if sid is None:
                continue
            with self._lock:
                rows = self._db.execute(
                    "SELECT minute, error_kind, count(*) FROM attempts WHERE series_id = ? "
                    "AND minute >= ? AND minute < ? AND outcome = ? "
                    "GROUP BY minute, error_kind ORDER BY minute",
                    (sid, since, until, _FAILURE),
                ).fetchall()
            if rows:
                out[probe] = [(m, kind or "unknown", n) for m, kind, n in rows]
        return out

    def durations(self, target: str, probe: str, since: int, until: int) -> list[tuple[int, float]]:
        """(minute, seconds) of a probe's attempts in [since, until), the prober's own
        faults left out: its trouble is not the provider's latency."""
        sid = self._existing_series(target, probe)
        if sid is None:
            return []
        with self._lock:
            return self._db.execute(
                "SELECT minute, duration FROM attempts WHERE series_id = ? AND minute >= ? "
                "AND minute < ? AND outcome != ?",
                (sid, since, until, _PROBER_FAULT),
            ).fetchall()

    def minute_attempts(self, target: str, minute: int) -> list[Attempt]:
        return self.attempts_in(target, minute, minute + 1)
