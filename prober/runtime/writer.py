"""The minute writer: closed minutes into the ledger, and what happens when it will not take
them.

Its rules, the trickiest in the runtime:
- Finished attempts and network-check rounds are stored within about a second (the closer's
  tick), before their minute closes: a crash loses at most that second, and a restart
  inside a minute merges what the earlier process stored. While the ledger refuses
  writes they wait in memory (at most MAX_PENDING_ATTEMPTS, the oldest dropped and counted)
  and go with the next minute write. One write at a time, so a minute never reaches the
  ledger before the attempts it was decided over.
- Closed minutes are written in one transaction per flush, then applied to the in-memory
  view (and told in the log). A minute already in the ledger is left as it is.
- A failed write keeps the minutes in memory, at most `buffer_minutes` closed minutes; the
  oldest pushed out of that buffer are remembered as ranges per target, not as rows.
- Minutes the prober missed while down (at start, or for a target added by a reload) are
  recorded as no_data/prober_down (maintenance inside a declared window); when the ledger
  refuses them they join those ranges too.
- Once a write succeeds, the ranges are recorded the same way, so the ledger never has a
  hole and nobody mistakes a minute nobody kept for an observed one.
- Every failed write counts in the stats and makes the ledger "not ok" (readiness) until a
  write succeeds; the error is logged at most once a minute (or when minutes are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from ..config.models import TargetBase
from ..errors import UserError
from ..ledger.fleet import write_vantage_minutes
from ..ledger.store import Ledger, NetworkRound, PendingEvidence
from ..ledger.view import LedgerView
from ..logs import event
from ..records import Attempt, ClosedMinute
from ..sla import OutcomeCounts, Verdict, minute_iso
from ..stats import RuntimeStats
from .clock import Clock
from .narrate import Narrator
from .targets import missed_minute_verdict

CHUNK = 200  # targets planned, minutes decided, applied or recorded between yields
# Unstored attempts kept while the ledger refuses writes: a few minutes of 10,000 targets at
# 4 attempts a minute, some tens of MB.
MAX_PENDING_ATTEMPTS = 200_000
HEARTBEAT = 5.0  # seconds between a fleet prober's heartbeats when it has nothing to store
# Seconds a fleet of one's vantage rows wait for /metrics to show the fleet's minute they
# follow: its render takes a fraction of a second alone, longer beside the vantage write
# (both Python, one GIL).
SHOWN_WITHIN = 3.0
WRITE_ERRORS = (sqlite3.Error, OSError, UserError)

Item = TypeVar("Item")


async def in_chunks(items: Sequence[Item]) -> AsyncIterator[Sequence[Item]]:
    """`items` CHUNK at a time, the event loop running what is due (attempts) after each:
    the fleet's minute of 10,000 targets decided at once held it for 130 ms (bench/README.md)."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
        await asyncio.sleep(0)


VerdictOfMissed = Callable[[str], Callable[[int], Verdict]]
# The fleet closer's shortcut for a fleet of one (runtime/fleet.py): True when it has
# written the evidence and the fleet's minutes, the vantage's own rows left to write.
CloseFirst = Callable[[list[ClosedMinute], PendingEvidence], Awaitable[bool]]
# The daemon's exposition: a close is in the view, show it now (wall time). Calling it
# starts the work (a future, not a coroutine: some callers do not await it); the future
# ends when the close is shown and never raises (it is cancelled only once the runtime has
# stopped). The runtime knows nothing of how.
Show = Callable[[float], asyncio.Future[None]]


def show_nothing(_now: float) -> asyncio.Future[None]:
    shown: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    shown.set_result(None)
    return shown


class MinuteWriter:
    def __init__(
        self,
        ledger: Ledger,
        view: LedgerView,
        stats: RuntimeStats,
        clock: Clock,
        *,
        buffer_minutes: int,
        verdict_of_missed: VerdictOfMissed,
        vantage: str = "",
        as_vantage: bool = False,
    ) -> None:
        self.ledger = ledger
        self.vantage = vantage
        # A fleet prober writes its verdicts as its vantage's; the fleet closer writes the
        # fleet's (runtime/fleet.py), which are what the view shows.
        self.as_vantage = as_vantage
        self._last_beat = float("-inf")
        self.evidence = PendingEvidence(vantage)  # finished, not stored yet
        self._one_write = asyncio.Lock()
        self.view = view
        self.stats = stats
        self.clock = clock
        self.buffer_minutes = buffer_minutes
        self.verdict_of_missed = verdict_of_missed
        self.narrator = Narrator()
        self.after_vantage_write: Callable[[], None] = lambda: None  # the fleet closer's nudge
        self.close_first: CloseFirst | None = None
        self.show: Show = show_nothing
        self.pending: list[list[ClosedMinute]] = []
        # target → (probes, first, end): minutes nobody kept, recorded once writes work
        self.dropped: dict[str, tuple[tuple[str, ...], int, int]] = {}
        self.ok = True
        self._last_error_logged = float("-inf")

    @property
    def unwritten(self) -> int:
        return sum(len(batch) for batch in self.pending)

    # -- minutes missed while the prober was down -----------------------------------------

    async def warn_of_future_rows(self, current: int) -> None:
        future = await asyncio.to_thread(self.ledger.future_rows, current)
        if future:
            event(
                logging.WARNING,
                "the ledger holds minutes that have not ended yet (an import?); they are "
                "ignored: not the newest closed minute, not part of the month so far",
                targets=",".join(sorted(future)),
                rows=sum(future.values()),
            )

    async def record_missed(self, targets: list[TargetBase], current: int) -> None:
        """Record the minutes each target missed before `current`; a ledger that refuses
        them (read-only, full) must not stop the prober: they wait with the dropped ones."""
        refused = await asyncio.to_thread(self._record_gaps, targets, current)
        if not refused:
            return
        for target, first, _exc in refused:
            self._remember(target.name, tuple(target.probes), first, current)
        self._write_failed(refused[0][2])
        event(
            logging.WARNING,
            "minutes missed while the prober was down are kept in memory until the ledger "
            "takes writes",
            targets=len(refused),
            minutes=sum(current - first for _target, first, _exc in refused),
        )

    def _record_gaps(
        self, targets: list[TargetBase], current: int
    ) -> list[tuple[TargetBase, int, Exception]]:
        refused: list[tuple[TargetBase, int, Exception]] = []
        for target in targets:
            # rows at or after `current` (a bad import) are not the newest closed minute
            last = self.ledger.last_closed_minute(target.name, before=current)
            if last is None or last + 1 >= current:
                continue
            try:
                recorded = self.ledger.record_gap(
                    target.name,
                    list(target.probes),
                    last + 1,
                    current,
                    missed_minute_verdict(target),
                )
            except WRITE_ERRORS as exc:
                refused.append((target, last + 1, exc))
                continue
            if recorded:
                event(
                    logging.WARNING,
                    "recorded minutes missed while the prober was down",
                    target=target.name,
                    minutes=recorded,
                    since=minute_iso(last + 1),
                )
        return refused

    # -- attempts, as they end ---------------------------------------------------------------

    def add_attempt(self, attempt: Attempt) -> None:
        self.evidence.attempts.append(attempt)

    def add_round(self, minute: int, all_failed: bool) -> None:
        self.evidence.rounds.append(NetworkRound(self.vantage, minute, all_failed))

    async def store_evidence(self, *, beat: bool = False) -> None:
        """Store what has finished since the last call (the closer's tick, every second).
        While writes fail it waits for the next minute write, which retries it anyway.
        `beat`: write the heartbeat now even with nothing to store (a fleet prober's start)."""
        if not self.ok:
            return
        idle = not (self.evidence.attempts or self.evidence.rounds)
        # A fleet prober's heartbeat says it is alive even while it has nothing to store.
        quiet = not self.as_vantage or self.clock.wall() - self._last_beat < HEARTBEAT
        if idle and quiet and not beat:
            return
        self._last_beat = self.clock.wall()
        async with self._one_write:
            batch = self._take_evidence()
            try:
                await asyncio.to_thread(self.ledger.store_evidence, batch)
            except WRITE_ERRORS as exc:
                self._give_back(batch)
                self._write_failed(exc)

    def _take_evidence(self) -> PendingEvidence:
        batch, self.evidence = self.evidence, PendingEvidence(self.vantage)
        batch.seen_at = self.clock.wall()
        return batch

    def _give_back(self, batch: PendingEvidence) -> None:
        """A write failed: its evidence goes back in front of what finished meanwhile."""
        attempts = batch.attempts + self.evidence.attempts
        over = len(attempts) - MAX_PENDING_ATTEMPTS
        if over > 0:
            self.stats.dropped_attempts += over
            attempts = attempts[over:]
        self.evidence = PendingEvidence(self.vantage, attempts, batch.rounds + self.evidence.rounds)

    # -- closed minutes ---------------------------------------------------------------------

    def add(self, closed: list[ClosedMinute]) -> None:
        """A minute's closed targets, written at the next flush."""
        self.pending.append(closed)

    async def write(self, closed: list[ClosedMinute]) -> None:
        self.add(closed)
        await self.flush()

    async def flush(self) -> None:
        async with self._one_write:
            await self._flush()

    async def _flush(self) -> None:
        batch = [item for closed in self.pending for item in closed]
        if not batch and not self.dropped:
            self.pending.clear()
            return
        written: list[ClosedMinute] = []
        if batch:
            evidence = self._take_evidence()
            attempts = len(evidence.attempts)
            try:
                # (once the fleet's minutes took the evidence, a failure gives back none)
                evidence = await self._fleet_first(batch, evidence)
                began = time.monotonic()
                written = await asyncio.to_thread(self._write_minutes, batch, evidence)
            except WRITE_ERRORS as exc:
                self._give_back(evidence)
                self._write_failed(exc)
                return
            # (at debug: where a close's time goes, for whoever tunes a large prober)
            event(
                logging.DEBUG,
                "minutes written",
                rows=len(batch),
                attempts=attempts,
                seconds=round(time.monotonic() - began, 3),
            )
        if not self.ok:
            event(logging.INFO, "ledger writable again", written_minutes=len(self.pending))
        self.ok = True
        self.pending.clear()
        if self.as_vantage:
            if written:
                for item in written:
                    self.stats.vantage_verdicts[(item.target, item.verdict.state.value)] += 1
                self.stats.vantage_moves += 1
                self.after_vantage_write()
            written = []  # the fleet closer shows and tells the fleet's minutes
        async for chunk in in_chunks(written):
            self.view.apply(chunk)
            self.narrator.closed(chunk)
        if written:
            self.show(self.clock.wall())  # started, not awaited: the rendering has its task
        if self.dropped:
            try:
                await self._record_dropped()
            except WRITE_ERRORS as exc:
                self._write_failed(exc)

    async def _fleet_first(
        self, batch: list[ClosedMinute], evidence: PendingEvidence
    ) -> PendingEvidence:
        """In a fleet of one, the fleet's minutes go first, with the evidence (the closer's
        `close_first`): returns the evidence left for the minutes' own write."""
        if self.close_first is not None and await self.close_first(batch, evidence):
            # The fleet's minute is in the view: its rendering goes first, not beside the
            # vantage rows' (bench/README.md, session 32). The rows wait, bounded.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.show(self.clock.wall())), SHOWN_WITHIN)
            return PendingEvidence(self.vantage, seen_at=evidence.seen_at)
        return evidence

    def _write_minutes(
        self, batch: list[ClosedMinute], evidence: PendingEvidence
    ) -> list[ClosedMinute]:
        if self.as_vantage:
            return write_vantage_minutes(self.ledger, batch, evidence)
        return self.ledger.write_minutes(batch, evidence)

    def _write_failed(self, exc: Exception) -> None:
        self.stats.ledger_write_errors += 1
        self.ok = False
        limit = self.buffer_minutes
        pushed_out = self.pending[:-limit] if len(self.pending) > limit else []
        self.pending = self.pending[-limit:]
        for closed in pushed_out:
            for item in closed:
                self._remember(item.target, tuple(item.probes), item.minute, item.minute + 1)
        now = self.clock.wall()
        if now - self._last_error_logged > 60 or pushed_out:
            self._last_error_logged = now
            event(
                logging.ERROR,
                "ledger write failed; closed minutes kept in memory",
                error=f"{type(exc).__name__}: {exc}",
                buffered_minutes=len(self.pending),
                dropped_minutes=len(pushed_out),
            )

    # -- minutes nobody kept ----------------------------------------------------------------

    def _remember(self, target: str, probes: tuple[str, ...], first: int, end: int) -> None:
        known = self.dropped.get(target)
        if known is not None:
            first, end = min(first, known[1]), max(end, known[2])
            probes = known[0]
        self.dropped[target] = (probes, first, end)

    def _dropped_batch(self) -> list[ClosedMinute]:
        """The next CHUNK of remembered minutes as rows: prober_down, or maintenance inside
        a window the target declares."""
        batch: list[ClosedMinute] = []
        for target, (probes, first, end) in self.dropped.items():
            verdict_of = self.verdict_of_missed(target)
            for minute in range(first, end):
                verdict = verdict_of(minute)
                batch.append(
                    ClosedMinute(
                        target,
                        minute,
                        verdict,
                        OutcomeCounts(),
                        {p: (verdict, OutcomeCounts()) for p in probes},
                    )
                )
                if len(batch) >= CHUNK:
                    return batch
        return batch

    async def _record_dropped(self) -> None:
        recorded = 0
        while self.dropped:
            batch = self._dropped_batch()
            written = await asyncio.to_thread(self.ledger.write_minutes, batch)
            self.view.apply(written)
            recorded += len(written)
            for item in batch:  # shrink each range from its start
                probes, _, end = self.dropped[item.target]
                if item.minute + 1 >= end:
                    del self.dropped[item.target]
                else:
                    self.dropped[item.target] = (probes, item.minute + 1, end)
            await asyncio.sleep(0)
        event(
            logging.WARNING,
            "minutes nobody could keep (write buffer full, or missed while the ledger was "
            "not writable) recorded as no_data/prober_down",
            minutes=recorded,
        )

    # -- retention ------------------------------------------------------------------------

    async def prune(self, retention_days: int) -> None:
        cutoff = self.clock.wall() - retention_days * 86400
        with contextlib.suppress(*WRITE_ERRORS):
            removed = await asyncio.to_thread(self.ledger.prune_attempts, cutoff)
            if removed:
                event(
                    logging.INFO,
                    "pruned old attempts",
                    attempts=removed,
                    retention_days=retention_days,
                )
