"""The fleet closer: with several probers on one PostgreSQL ledger, each closes its own
minutes as a vantage, and one of them at a time (the holder of the ledger's lease) turns
the vantages' verdicts into the fleet's: once the minute has ended and every vantage that
is alive has closed it (vantages close a minute as soon as its attempts have finished), or
`close_deadline` after the minute's latest close time, whichever comes first. A prober
that is not the closer keeps trying for the lease every couple of seconds, so when the
closer dies another takes over and closes what is due, including what the dead one left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from .. import sla
from ..config.models import FleetConfig, TargetBase
from ..ledger import fleet as fleet_rows
from ..ledger.store import Ledger, PendingEvidence
from ..ledger.view import LedgerView
from ..logs import event
from ..records import ClosedMinute
from ..sla import OutcomeCounts, minute_iso
from ..stats import RuntimeStats
from .clock import Clock
from .writer import WRITE_ERRORS, Show, in_chunks, show_nothing

ALIVE_WITHIN = 15.0  # seconds since a vantage's last heartbeat that it still counts as alive
LEAD_RETRY = 2.0  # seconds between tries for the lease by a prober that is not the closer
LOOK_BACK = 24 * 60  # minutes a new closer goes back for fleet minutes nobody closed


class FleetCloser:
    def __init__(
        self,
        ledger: Ledger,
        view: LedgerView,
        stats: RuntimeStats,
        clock: Clock,
        *,
        settings: Callable[[], FleetConfig],
        targets: Callable[[], Sequence[TargetBase]],
        close_delay: Callable[[], float],
    ) -> None:
        self.ledger = ledger
        self.view = view
        self.stats = stats
        self.clock = clock
        self.settings = settings
        self.targets = targets
        self.close_delay = close_delay
        self.show: Show = show_nothing  # the daemon's exposition, as the writer's
        self.leading = False
        self.next_close = 0  # the first fleet minute not closed yet (while leading)
        self._last_try = float("-inf")
        self._ticking: asyncio.Task[None] | None = None
        # _start_tick runs one tick task at a time; the lock also keeps a direct call of
        # tick() (tests, a future caller) from closing a minute beside that task
        self._one_tick = asyncio.Lock()
        self._stopped = False
        self.stats.fleet_closer = 0

    async def second(self) -> None:
        """The scheduler's job each second: one tick at a time, in a task of its own (a slow
        ledger never holds up the scheduler); its trouble is logged, never fatal."""
        self._start_tick()

    def _start_tick(self) -> None:
        if self._stopped or (self._ticking is not None and not self._ticking.done()):
            return
        self._ticking = asyncio.get_running_loop().create_task(self._guarded_tick())

    def nudge(self) -> None:
        """This prober has just written its vantage's minutes: while it closes the fleet's,
        look at once instead of at the next second (a fleet of one then waits for no
        tick: by arithmetic half a second on average, too little to show in one bench run)."""
        if self.leading:
            self._start_tick()

    async def finish(self) -> None:
        """At stop, after the last vantage write: the tick under way (its nudge may have
        begun one) ends before the ledger closes; none begins after."""
        self._stopped = True
        if self._ticking is not None:
            await self._ticking

    async def _guarded_tick(self) -> None:
        try:
            await self.tick()
        except WRITE_ERRORS as exc:
            self._step_down()
            event(logging.WARNING, "fleet closing failed; trying again", error=str(exc))

    async def tick(self) -> None:
        async with self._one_tick:
            await self._tick()

    async def _tick(self) -> None:
        now = self.clock.wall()
        if not self.leading:
            if now - self._last_try < LEAD_RETRY:
                return
            self._last_try = now
            if not await asyncio.to_thread(fleet_rows.try_lead, self.ledger):
                return
            await self._take_over(now)
        await self.close_due(now)

    async def _take_over(self, now: float) -> None:
        targets = self.targets()
        current = int(now // 60)
        calendars = {t.name: t.sla.calendar() for t in targets}
        await asyncio.to_thread(self.view.restore, self.ledger, calendars, now)
        lasts = [self.view.targets[t.name].last_closed for t in targets]
        closed = [m for m in lasts if m is not None]
        # From the oldest target's next minute; for a target the fleet never closed a minute
        # of, from the oldest minute a vantage decided; a fresh fleet from the minute it is in.
        first = min(closed) + 1 if closed else current
        if len(closed) < len(lasts):
            oldest = await asyncio.to_thread(
                fleet_rows.first_vantage_minute, self.ledger, current - LOOK_BACK
            )
            if oldest is not None:
                first = min(first, oldest)
        self.next_close = max(first, current - LOOK_BACK)
        self.leading = True
        self.stats.fleet_closer = 1
        event(
            logging.INFO,
            "this prober now closes the fleet's minutes",
            since=minute_iso(self.next_close),
        )

    async def close_first(self, batch: list[ClosedMinute], evidence: PendingEvidence) -> bool:
        """The writer's hook before its vantage write. When this prober closes the fleet's
        minutes and is the only vantage of the minute due next (none other alive, none with
        a verdict of it), the fleet's minutes are decided from the verdicts in hand and
        written, with the evidence, before the vantage's own rows: a fleet of one shows its
        verdict after one write, not after two and a read. True when it wrote them."""
        now = self.clock.wall()
        minute = self.next_close
        if (
            self._stopped
            or not self.leading
            or any(item.minute != minute for item in batch)
            or now < (minute + 1) * 60
        ):
            return False
        # A tick under way (the fleet's job runs on the same second as the close) ends
        # first; it cannot close this minute, whose vantage rows are not written yet, but
        # for its deadline, which the check below sees.
        async with self._one_tick:
            if self._stopped or not self.leading or self.next_close != minute:
                return False
            targets = list(self.targets())
            began = time.monotonic()
            try:
                written = await asyncio.to_thread(
                    fleet_rows.write_fleet_alone,
                    self.ledger,
                    minute,
                    batch,
                    evidence,
                    alive_since=now - ALIVE_WITHIN,
                    decide=lambda rows: self.decide(minute, rows, targets),
                )
            except WRITE_ERRORS:
                self._step_down()  # as a failed tick
                raise
            if written is None:
                return False  # the vantage write, then the tick, as for several vantages
            event(
                logging.DEBUG,
                "fleet minute closed before its vantage's",
                minute=minute_iso(minute),
                seconds=round(time.monotonic() - began, 3),
            )
            await self._closed(written)
            return True

    def _step_down(self) -> None:
        """A write failed: a lost connection took the lease with it, so take over afresh
        once the ledger answers."""
        self.leading = False
        self.stats.fleet_closer = 0

    async def _closed(self, written: list[ClosedMinute]) -> None:
        """The fleet minute `next_close` is in the ledger: into the view, and on to the next.
        (The fleet's minutes carry the vantages' summed counts: attempt totals, in the ledger
        and in the view, count those; a vantage row written after the deadline is kept as
        evidence but counts nowhere, like an attempt after its minute.)"""
        async for chunk in in_chunks(written):
            self.view.apply(chunk)
        self.next_close += 1
        self.show(self.clock.wall())

    def _closable(self, minute: int, now: float, seen: list[fleet_rows.VantageSeen]) -> bool:
        if now < (minute + 1) * 60:
            return False
        close_at = (minute + 1) * 60 + self.close_delay()  # the vantages' latest close
        if now >= close_at + self.settings().close_deadline:
            return True
        alive = [v for v in seen if now - v.last_seen <= ALIVE_WITHIN]
        if now < close_at and not alive:
            return False  # nobody to wait for yet is not everybody done
        return all(v.closed_through >= minute for v in alive)

    async def close_due(self, now: float) -> None:
        if not self.leading:
            return
        seen = await asyncio.to_thread(fleet_rows.vantages, self.ledger)
        while self._closable(self.next_close, now, seen):
            minute = self.next_close
            began = time.monotonic()
            rows = await asyncio.to_thread(fleet_rows.verdicts_of_minute, self.ledger, minute)
            read = time.monotonic()
            # In chunks, as the vantage's own close: 10,000 targets at once held the loop
            # for 130 ms, and the attempts due meanwhile started that late (bench/README.md).
            decided: list[ClosedMinute] = []
            async for targets in in_chunks(self.targets()):
                decided += self.decide(minute, rows, targets)
            made = time.monotonic()
            written = await asyncio.to_thread(self.ledger.write_minutes, decided)
            event(
                logging.DEBUG,
                "fleet minute closed",
                minute=minute_iso(minute),
                read_seconds=round(read - began, 3),
                decide_seconds=round(made - read, 3),
                write_seconds=round(time.monotonic() - made, 3),
            )
            await self._closed(written)

    def decide(
        self,
        minute: int,
        rows: dict[tuple[str, str], list[fleet_rows.VantageVerdict]],
        targets: Sequence[TargetBase],
    ) -> list[ClosedMinute]:
        quorum = self.settings().failure_quorum
        closed = []
        for target in targets:
            maintenance = sla.in_maintenance(minute, target.windows)
            verdict, counts = _union(rows.get((target.name, "")), maintenance, quorum)
            probes = {
                p: _union(rows.get((target.name, p)), maintenance, quorum) for p in target.probes
            }
            closed.append(ClosedMinute(target.name, minute, verdict, counts, probes))
        return closed


def _union(
    seen: list[fleet_rows.VantageVerdict] | None, maintenance: bool, quorum: int
) -> tuple[sla.Verdict, OutcomeCounts]:
    seen = seen or []
    verdict = sla.decide_fleet((v.verdict for v in seen), maintenance=maintenance, quorum=quorum)
    total = OutcomeCounts()
    for v in seen:
        total = total + v.counts
    return verdict, total
