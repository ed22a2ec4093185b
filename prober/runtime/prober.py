"""The runtime's life: start (record what was missed, restore the view, arm the clockwork),
stop (let attempts finish, close every ended minute), reload (apply a validated config
without disturbing unchanged targets) and readiness.

APScheduler runs the slow clock: planning the next minute at :50, the closer's 1 s tick,
hourly retention. The view, the stats and what to do with the target list (the daemon's
exposition) are handed in by the daemon; nothing here knows how they are shown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .. import __version__
from ..adapters import Adapter
from ..config.models import (
    MAX_CLOSE_GRACE,
    Config,
    ConfigFile,
    TargetBase,
    restart_only_changes,
)
from ..ledger import fleet as fleet_rows
from ..ledger.opening import display_location
from ..ledger.store import Ledger
from ..ledger.view import LedgerView
from ..logs import event
from ..sla import minute_iso
from ..stats import RuntimeStats
from .clock import Clock, SystemClock
from .clockwork import Clockwork
from .fleet import FleetCloser
from .netcheck import NetworkCheck
from .targets import TargetSet
from .writer import WRITE_ERRORS, MinuteWriter, Show

PLAN_AT_SECOND = 50  # the next minute is planned at :50, so its first attempts are not late
TICK_PHASE = 0.02  # seconds after each whole second that the closing tick runs

OnTargets = Callable[[Sequence[TargetBase]], None]


class Prober:
    def __init__(
        self,
        config_file: ConfigFile,
        ledger: Ledger,
        *,
        clock: Clock | None = None,
        view: LedgerView | None = None,
        stats: RuntimeStats | None = None,
        on_targets: OnTargets | None = None,
        show: Show | None = None,
        fleet: bool | None = None,
    ) -> None:
        """`on_targets`: told each target list (start, reload); `show`: told when a close
        is in the view, so the exposition renders it at once (writer.py)."""
        self.config_file = config_file
        # A fleet shares one PostgreSQL ledger; each prober decides as a vantage and one
        # closes the fleet's minutes (runtime/fleet.py).
        self.in_fleet = config_file.config.ledger.url is not None if fleet is None else fleet
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.view = view if view is not None else LedgerView()
        self.stats = stats if stats is not None else RuntimeStats()
        self.on_targets = on_targets or (lambda _targets: None)
        self.targets = TargetSet()
        self.writer = MinuteWriter(
            ledger,
            self.view,
            self.stats,
            self.clock,
            buffer_minutes=self.config.scheduler.write_buffer_minutes,
            verdict_of_missed=self.targets.verdict_of_missed,
            vantage=config_file.vantage,
            as_vantage=self.in_fleet,
        )
        if show is not None:
            self.writer.show = show
        self.clockwork = Clockwork(
            self.clock,
            self.stats,
            self.targets,
            self.writer,
            lambda: self.close_delay,
            config_file.vantage,
        )
        self.scheduler: AsyncIOScheduler | None = None
        self.fleet: FleetCloser | None = None
        self.stats.vantage = config_file.vantage
        if self.in_fleet:
            self.fleet = FleetCloser(
                ledger,
                self.view,
                self.stats,
                self.clock,
                settings=lambda: self.config.fleet,
                targets=lambda: self.config.targets,
                close_delay=lambda: self.close_delay,
            )
            self.writer.after_vantage_write = self.fleet.nudge
            self.writer.close_first = self.fleet.close_first
            self.fleet.show = self.writer.show

    @property
    def config(self) -> Config:
        return self.config_file.config

    @property
    def netcheck(self) -> NetworkCheck | None:
        return self.clockwork.netcheck

    @property
    def close_delay(self) -> float:
        """Minute m closes at its end plus this: the longest attempt timeout and the grace."""
        timeouts = [self.targets.largest_timeout()]
        if self.config.network_check is not None:
            timeouts.append(self.config.network_check.timeout)
        return max(timeouts) + self.config.scheduler.close_grace

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running and not self.clockwork.stopping

    # -- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock.wall()
        current = int(now // 60)
        self.targets.replace(self.probed(self.config_file), current)
        await self.writer.warn_of_future_rows(current)
        first_open = await self._take_back_unclosed(current)
        if self.in_fleet:
            self.stats.vantage_verdicts = await asyncio.to_thread(
                fleet_rows.vantage_totals, self.ledger, self.config_file.vantage
            )
            self.stats.vantage_moves += 1
            # Alive from now on: the fleet closer waits for this vantage's minutes.
            await self.writer.store_evidence(beat=True)
        else:  # in a fleet, the closer decides the minutes nobody observed
            await self.writer.record_missed(list(self.config.targets), first_open)
        calendars = {t.name: t.sla.calendar() for t in self.config.targets}
        await asyncio.to_thread(self.view.restore, self.ledger, calendars, now)
        self.on_targets(self.config.targets)
        self._build_network_check()
        self.stats.reload_timestamp = now
        clockwork = self.clockwork
        clockwork.next_close = first_open
        clockwork.planned_through = current - 1
        clockwork.plan(current, after=now)
        if now % 60 >= PLAN_AT_SECOND:
            clockwork.plan(current + 1)
        scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={"coalesce": True})
        every_minute = CronTrigger(second=PLAN_AT_SECOND, timezone=UTC)
        scheduler.add_job(clockwork.plan_next, every_minute, id="plan", misfire_grace_time=9)
        # On whole seconds (+20 ms, never a hair early): a minute whose attempts have all
        # finished by its end closes then, not up to a second later at a random phase.
        first_tick = datetime.fromtimestamp(int(time.time()) + 1 + TICK_PHASE, UTC)
        every_second = IntervalTrigger(seconds=1, start_date=first_tick, timezone=UTC)
        scheduler.add_job(clockwork.tick, every_second, id="close", misfire_grace_time=5)
        scheduler.add_job(self._prune, IntervalTrigger(hours=1), id="retention")
        if self.fleet is not None:
            scheduler.add_job(self.fleet.second, every_second, id="fleet", misfire_grace_time=5)
        scheduler.start()
        self.scheduler = scheduler
        # The cron job fires only at :50 from now on: plan what the time spent above passed.
        clockwork.catch_up(PLAN_AT_SECOND)
        event(
            logging.INFO,
            "prober started",
            targets=len(self.targets),
            ledger=display_location(self.config_file),
            version=__version__,
        )

    async def _take_back_unclosed(self, current: int) -> int:
        """Attempts this vantage stored for minutes that never closed (a crash, a kill, a
        restart inside a minute) go back into the minute book, so those minutes are decided
        over every attempt made in them. Returns the first minute left to close: minutes
        before it that have no row are recorded as missed."""
        try:
            found = await asyncio.to_thread(
                functools.partial(
                    self.ledger.unclosed_evidence,
                    self.config_file.vantage,
                    current,
                    as_vantage=self.in_fleet,
                )
            )
        except WRITE_ERRORS as exc:  # an unreadable ledger: /readyz and the writer say so
            event(logging.WARNING, "could not read unclosed attempts", error=str(exc))
            return current
        self.clockwork.book.restore(
            found.attempts, [(r.minute, r.all_failed) for r in found.rounds]
        )
        first = min((a.minute for a in found.attempts), default=current)
        if found.attempts:
            event(
                logging.INFO,
                "took back attempts of minutes that had not closed",
                attempts=len(found.attempts),
                since=minute_iso(first),
            )
        return min(first, current)

    def probed(self, config_file: ConfigFile) -> list[TargetBase]:
        """The targets this prober probes: all of them, or its shard's share."""
        return [t for t in config_file.config.targets if config_file.probes_target(t.name)]

    def _build_network_check(self) -> None:
        check = self.config.network_check
        self.clockwork.netcheck = NetworkCheck(check) if check is not None else None
        if check is None:
            self.stats.network_up = None

    async def stop(self) -> None:
        """Stop planning, let attempts in flight finish (up to their timeouts), close every
        minute that has ended, write them, release everything."""
        self.clockwork.stopping = True
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        await self.clockwork.wind_down()
        if self.fleet is not None:
            await self.fleet.finish()
        for runtime in self.targets.all():
            await runtime.adapter.aclose()
        if self.netcheck is not None:
            await self.netcheck.aclose()
        event(
            logging.INFO,
            "prober stopped",
            closed_through=minute_iso(self.clockwork.next_close - 1),
            unwritten_minutes=self.writer.unwritten,
        )

    async def _prune(self) -> None:
        await self.writer.prune(self.config.ledger.attempts_retention_days)

    # -- health --------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.running:
            return False, "scheduler not running"
        if not self.writer.ok:
            return False, "ledger not writable"
        # None may wait longer than a valid config allows (a timeout under 60 s plus the
        # largest close_grace), whatever the configured delay works out to.
        delay = min(self.close_delay, 60.0 + MAX_CLOSE_GRACE)
        overdue = self.clock.wall() - ((self.clockwork.next_close + 1) * 60 + delay)
        if overdue > 60:
            return False, f"no minute closed: minute closing is {overdue:.0f}s behind"
        return True, "ok"

    # -- reload --------------------------------------------------------------------------

    async def reload(self, new: ConfigFile) -> None:
        """Apply a new, already validated config. Targets whose config is unchanged keep
        running untouched; changed ones get a new adapter; removed ones finish their minutes."""
        old = self.config_file
        for setting in restart_only_changes(old, new):
            event(
                logging.WARNING,
                "this setting changes only at a restart; keeping the running value",
                setting=setting,
            )
        now = self.clock.wall()
        current = int(now // 60)
        clockwork = self.clockwork
        previous_check = clockwork.netcheck
        self.config_file = new
        change = self.targets.replace(self.probed(new), clockwork.planned_through)
        for adapter in change.replaced:
            self._close_later(adapter)
        self.writer.buffer_minutes = new.config.scheduler.write_buffer_minutes
        if change.added and not self.in_fleet:
            await self.writer.record_missed(change.added, current)
        for target in new.config.targets:
            self.view.track(target.name, target.sla.calendar())
        self.on_targets(new.config.targets)
        if new.config.network_check != old.config.network_check:
            if previous_check is not None:
                self._close_later(previous_check)
            self._build_network_check()
        # New and changed targets start at once: the rest of this minute and any minute
        # already planned ahead.
        network = clockwork.netcheck is not previous_check
        for minute in range(current, clockwork.planned_through + 1):
            clockwork.plan(minute, after=now, runtimes=change.renewed, network=network)
        self.stats.reload_timestamp = now
        event(
            logging.INFO,
            "configuration reloaded",
            targets=len(self.targets),
            added=len(change.added),
            removed=len(self.targets.retiring),
        )

    def _close_later(self, resource: Adapter | NetworkCheck) -> None:
        async def close() -> None:
            await asyncio.sleep(self.close_delay + 1)
            await resource.aclose()

        self.clockwork.spawn(close())
