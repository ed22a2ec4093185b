"""The clockwork, in the order it works: plan each minute's attempts, fire each at its time,
collect its outcome in the minute book, close each minute as soon as every attempt planned
in it has finished (at the latest once its last attempt has had its time), and hand the
closed minutes to the writer.

Attempts are planned a minute at a time, since one scheduler job per attempt costs as much
CPU as the attempt (docs/decisions.md): each planned attempt is one small entry in the
clockwork's own heap, ordered by the event loop's clock, and one loop timer at a time wakes
for the earliest. (An event-loop timer per attempt made ten objects each — handle, context,
closure and its cells — and the 20,000 armed at :50 for 5,000 targets set off the garbage
collector's full passes, up to a second each: bench/README.md.) Planning and closing go in
chunks of targets with a yield between them, so attempts due now start on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from ..adapters import Adapter, ProbeContext
from ..logs import event
from ..records import ClosedMinute
from ..sla import minute_iso
from ..stats import RuntimeStats
from .attempt import run_attempt
from .book import MinuteBook
from .clock import Clock, StepDetector
from .netcheck import NetworkCheck
from .plan import Planned, ProbePlan
from .targets import TargetRuntime, TargetSet
from .writer import CHUNK, MinuteWriter, in_chunks

STALL_LIMIT = 10.0  # seconds a minute may wait past its close time for attempts in flight


class Armed:
    """One planned attempt waiting for its time: its plan, its planned wall-clock time and
    when it is due on the loop's clock (what a timer of its own would have used)."""

    __slots__ = ("at", "cancelled", "due", "owner", "plan")

    def __init__(
        self, due: float, at: float, plan: ProbePlan, owner: TargetRuntime | NetworkCheck
    ) -> None:
        self.due = due
        self.at = at
        self.plan = plan
        self.owner = owner
        self.cancelled = False

    def __lt__(self, other: Armed) -> bool:
        return self.due < other.due

    def cancel(self) -> None:
        self.cancelled = True


class Clockwork:
    def __init__(
        self,
        clock: Clock,
        stats: RuntimeStats,
        targets: TargetSet,
        writer: MinuteWriter,
        close_delay: Callable[[], float],
        vantage: str = "",
    ) -> None:
        self.clock = clock
        self.vantage = vantage
        self.stats = stats
        self.targets = targets
        self.writer = writer
        self.close_delay = close_delay
        self.netcheck: NetworkCheck | None = None
        self.book = MinuteBook()
        self.steps = StepDetector(clock)
        self.timers: list[Armed] = []  # a heap by `due`: every attempt armed, not yet fired
        # per minute: how many of `timers` belong to it (attempts and network rounds), so a
        # minute can close once none is left to fire and none is running
        self.armed: defaultdict[int, int] = defaultdict(int)
        self._wakeup: asyncio.TimerHandle | None = None  # the loop timer for the earliest
        self._wakeup_due = float("inf")
        self.tasks: set[asyncio.Task[None]] = set()
        self.planned_through = -1  # the last minute whose attempts are armed
        self.next_close = 0  # the first minute not closed yet
        self.stopping = False
        self._close_task: asyncio.Task[None] | None = None
        self._one_close = asyncio.Lock()  # the tick's close, a last attempt's, a direct call
        self._run_id = uuid.uuid4().hex[:8]  # attempt ids: unique per run, cheap per attempt
        self._attempt_ids = itertools.count(1)

    # -- plan ----------------------------------------------------------------------------

    async def plan_next(self) -> None:
        """The scheduler's job at :50: arm the next minute's attempts."""
        step = self.steps.check()
        if step:
            self.stats.clock_steps += 1
            event(
                logging.WARNING,
                "wall clock stepped",
                seconds=round(step, 3),
                note="minutes without attempts become no_data; attempts for closed minutes "
                "are discarded and counted",
            )
        now = self.clock.wall()
        minute = int(now // 60) + 1
        if minute <= self.planned_through:
            return
        if self.planned_through < minute - 1:
            # The job missed a minute (the loop was held up past its grace): the rest of the
            # minute it is now is planned too, not left without attempts.
            self.plan(minute - 1, after=now)
        self.planned_through = minute
        runtimes = self.targets.all()
        # In chunks, so attempts due now are not held up by planning thousands of others.
        for start in range(0, max(len(runtimes), 1), CHUNK):
            self.plan(minute, runtimes=runtimes[start : start + CHUNK], network=start == 0)
            await asyncio.sleep(0)

    def catch_up(self, plan_at_second: float) -> None:
        """Arm what a slow start left unplanned: the rest of the minute it is now and, past
        the planning second, the next one. A start that crosses :50 or a minute boundary
        (thousands of targets to restore on a loaded machine) would otherwise leave a whole
        minute without attempts until the next :50, and that minute would read no_data."""
        now = self.clock.wall()
        current = int(now // 60)
        if current > self.planned_through:
            self.plan(current, after=now)
        if now % 60 >= plan_at_second and current + 1 > self.planned_through:
            self.plan(current + 1)

    def plan(
        self,
        minute: int,
        after: float = float("-inf"),
        runtimes: Iterable[TargetRuntime] | None = None,
        network: bool = True,
    ) -> None:
        """Arm the attempts of `minute` planned after `after` (all targets by default)."""
        loop = asyncio.get_running_loop()
        # planned wall-clock times become due times on the loop's clock, as call_later does
        # (what is already past is due now)
        earliest = loop.time()
        shift = earliest - self.clock.wall()
        timers, push = self.timers, heapq.heappush
        armed_before = len(timers)
        base = minute * 60
        for runtime in self.targets.all() if runtimes is None else runtimes:
            for plan in runtime.plans:
                for offset in plan.offsets:
                    at = base + offset
                    if at >= after:
                        push(timers, Armed(max(earliest, at + shift), at, plan, runtime))
        if network and self.netcheck is not None:
            plan = self.netcheck.plan
            for offset in plan.offsets:
                at = base + offset
                if at >= after:
                    push(timers, Armed(max(earliest, at + shift), at, plan, self.netcheck))
        self.armed[minute] += len(timers) - armed_before
        if runtimes is None:
            self.planned_through = max(self.planned_through, minute)
        self._rearm(loop)

    def _rearm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One loop timer, for the earliest armed attempt."""
        if not self.timers:
            return
        due = self.timers[0].due
        if self._wakeup is not None:
            if self._wakeup_due <= due:
                return
            self._wakeup.cancel()
        self._wakeup_due = due
        self._wakeup = loop.call_at(due, self._fire_due)

    def _fire_due(self) -> None:
        self._wakeup, self._wakeup_due = None, float("inf")
        loop = asyncio.get_running_loop()
        # what is due within a millisecond goes now (the loop itself runs a timer as soon as
        # it is due within its clock's resolution)
        now = loop.time() + 0.001
        timers = self.timers
        while timers and timers[0].due <= now:
            armed = heapq.heappop(timers)
            self._disarmed(int(armed.at // 60))
            if armed.cancelled:
                continue
            plan = armed.plan
            planned = Planned(armed.at, plan.target, plan.probe, plan.timeout, plan.spacing)
            if isinstance(armed.owner, NetworkCheck):
                self._launch_network(planned, armed.owner)
            else:
                self._launch(planned, armed.owner)
        self._rearm(loop)

    def _disarmed(self, minute: int) -> None:
        left = self.armed[minute] - 1
        if left > 0:
            self.armed[minute] = left
        else:
            del self.armed[minute]

    # -- fire ----------------------------------------------------------------------------

    def _late(self, planned: Planned) -> bool:
        """An attempt more than half its spacing late is skipped (and counted)."""
        lag = self.clock.wall() - planned.at
        self.stats.lag.observe(max(lag, 0.0))
        if lag <= planned.spacing / 2:
            return False
        self.stats.misfires += 1
        event(
            logging.WARNING,
            "attempt skipped: could not start near its planned time",
            target=planned.target,
            probe=planned.probe,
            late_seconds=round(lag, 3),
        )
        return True

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _launch(self, planned: Planned, runtime: TargetRuntime) -> None:
        # A reload may have replaced or removed the target since this attempt was planned.
        if self.stopping or self.targets.current(planned.target) is not runtime:
            return
        if self._late(planned):
            return
        self.book.started(planned.minute)
        self.spawn(self.attempt(planned, runtime.adapter))

    def _launch_network(self, planned: Planned, check: NetworkCheck) -> None:
        if self.stopping or self.netcheck is not check or self._late(planned):
            return
        self.book.started(planned.minute)  # the minute waits for its round like an attempt
        self.spawn(self._network_round(planned.minute, check))

    async def _network_round(self, minute: int, check: NetworkCheck) -> None:
        try:
            all_failed = await check.round_into(minute, self.book, self.stats)
        finally:
            self.book.abandoned(minute)
        if not self.book.is_closed(minute):
            self.writer.add_round(minute, all_failed)
            self._ran(minute)

    # -- collect -------------------------------------------------------------------------

    async def attempt(self, planned: Planned, adapter: Adapter) -> None:
        attempt_id = f"{self._run_id}-{next(self._attempt_ids)}"
        context = ProbeContext(
            planned.target, planned.probe, planned.timeout, planned.at, attempt_id
        )
        try:
            attempt = await run_attempt(adapter, context, self.clock, self.vantage)
        except asyncio.CancelledError:
            self.book.abandoned(planned.minute)
            raise
        self.stats.observe_duration(planned.target, planned.probe, attempt.duration)
        self.stats.saw_attempt(attempt)  # the paging streak moves now, not at the close
        self.stats.saw_certificate(planned.target, planned.probe, attempt.tls_not_after)
        if self.book.finished(attempt, planned.minute):
            self.writer.add_attempt(attempt)  # stored at the next tick, within a second
            self._ran(planned.minute)
        else:
            self.stats.discarded_attempts += 1
            event(
                logging.WARNING,
                "attempt finished after its minute closed; not counted",
                target=attempt.target,
                probe=attempt.probe,
                minute=minute_iso(attempt.minute),
                outcome=str(attempt.outcome),
            )

    # -- close ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """The scheduler's job every second: close what is due, one closer at a time."""
        self._start_close()

    def _start_close(self) -> None:
        if self._close_task is None or self._close_task.done():
            self._close_task = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        await self.close_due()
        await self.writer.store_evidence()

    def _ran(self, minute: int) -> None:
        """An attempt or round of `minute` is over: when the minute has ended and nothing of
        it is left to run, it closes now, not at the next second's tick."""
        if not self.stopping and minute < self.clock.wall() // 60 and self.finished(minute):
            self._start_close()

    def finished(self, minute: int) -> bool:
        """Every attempt and network round planned in `minute` has run: none armed, none
        running, so its verdict can no longer change. (What an earlier minute left armed or
        running when it closed is refused by the closed book; it does not hold this one.)"""
        return (
            minute <= self.planned_through
            and minute not in self.armed
            and not self.book.running(minute)
        )

    async def close_due(self, final: bool = False) -> None:
        async with self._one_close:
            await self._close_due(final)

    async def _close_due(self, final: bool) -> None:
        now = self.clock.wall()
        delay = self.close_delay()
        # Minute m closes once it has ended and all its attempts have finished, at the latest
        # at (m + 1) * 60 + delay (an attempt still running then gets STALL_LIMIT more); at
        # shutdown every minute that has ended closes.
        ended = int(now // 60) - 1
        closed_any = False
        while self.next_close <= ended:
            minute = self.next_close
            overdue = now - ((minute + 1) * 60 + delay)
            waiting = overdue < 0 or (self.book.busy(minute) and overdue < STALL_LIMIT)
            if not final and waiting and not self.finished(minute):
                break  # attempts of this minute still to run: give them their time
            rules = self.targets.rules_for(minute)
            closed: list[ClosedMinute] = []
            async for chunk in in_chunks(rules):
                closed += self.book.decide(minute, chunk)
            self.book.seal(minute)
            self.writer.add(closed)
            self.next_close += 1
            closed_any = True
        if closed_any or self.writer.pending:
            await self.writer.flush()

    async def wind_down(self) -> None:
        """No new attempts; those in flight finish (up to their timeouts); every minute that
        has ended is closed and written."""
        self.stopping = True
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.armed.clear()
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup, self._wakeup_due = None, float("inf")
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.close_delay() + 1)
        for task in list(self.tasks):
            task.cancel()
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task
        await self.close_due(final=True)
        # The minute still running was not closed: what it has so far is stored, for the
        # next start to take back.
        await self.writer.store_evidence()
