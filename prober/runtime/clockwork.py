"""The prober at run time: plans every minute's attempts, runs them, closes minutes into
verdicts, writes the ledger and keeps the metrics view current.

APScheduler owns the clockwork (planning the next minute, the closer's tick, retention);
individual attempts are timer callbacks on the event loop, planned a minute at a time, since
one scheduler job per attempt costs as much CPU as the attempt itself (PERF_NOTES.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .. import __version__, sla
from ..adapters import REGISTRY, Adapter, ProbeContext
from ..adapters import base as adapter_base
from ..config.models import MAX_CLOSE_GRACE, Config, ConfigFile, TargetBase
from ..errors import UserError
from ..expose.metrics import Exposition, Process, TargetInfo
from ..ledger.store import Ledger
from ..ledger.view import LedgerView
from ..logs import event
from ..records import Attempt, ClosedMinute
from ..sla import OutcomeCounts, Reason, State, Verdict, minute_iso
from .book import MinuteBook, TargetRules
from .clock import Clock, StepDetector, SystemClock
from .narrate import Narrator
from .netcheck import NetworkCheck
from .plan import Planned, ProbePlan, probe_plan

PLAN_AT_SECOND = 50  # the next minute is planned at :50, so its first attempts are not late
STALL_LIMIT = 10.0  # seconds a minute may wait past its close time for attempts in flight
NETWORK = "__network__"
CHUNK = 200  # targets handled between yields to the event loop when planning and closing


class UnsupportedKind(UserError):
    pass


def build_adapter(target: TargetBase) -> Adapter:
    adapter_class = REGISTRY.get(target.kind)
    if adapter_class is None:
        raise UnsupportedKind(
            f"target {target.name}: kind {target.kind} is not supported by this version"
        )
    return adapter_class(target.name, target.section, target.largest_timeout)


@dataclass
class TargetRuntime:
    config: TargetBase
    adapter: Adapter
    plans: tuple[ProbePlan, ...]
    rules: TargetRules

    @classmethod
    def build(cls, target: TargetBase) -> TargetRuntime:
        plans = tuple(
            probe_plan(target.name, name, probe.attempts_per_minute, probe.timeout)
            for name, probe in target.probes.items()
        )
        rules = TargetRules(target.name, tuple(target.probes), target.sla.policy, target.windows)
        return cls(target, build_adapter(target), plans, rules)


def target_info(target: TargetBase) -> TargetInfo:
    return TargetInfo(
        target.name, tuple(target.probes), target.sla.objective_exact, target.sla.tiers
    )


class Prober:
    def __init__(self, config_file: ConfigFile, ledger: Ledger, *, clock: Clock | None = None):
        self.config_file = config_file
        self.ledger = ledger
        self.clock = clock or SystemClock()
        self.steps = StepDetector(self.clock)
        self.book = MinuteBook()
        self.view = LedgerView()
        self.narrator = Narrator()
        self.process = Process()
        self.exposition = Exposition(self.view, self.process, __version__)
        self.targets: dict[str, TargetRuntime] = {}
        self.retiring: dict[str, tuple[TargetRules, int]] = {}
        self.netcheck: NetworkCheck | None = None
        self.network_plan: ProbePlan | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers: set[asyncio.TimerHandle] = set()
        self.pending: list[list[ClosedMinute]] = []
        # Minutes pushed out of the full write buffer: target → (probes, first, end). Once
        # the ledger takes writes again they are recorded as no_data/prober_down, so the
        # ledger has no hole and nobody mistakes them for observed minutes.
        self.dropped: dict[str, tuple[tuple[str, ...], int, int]] = {}
        self.planned_through = -1
        self.next_close = 0
        self.ledger_ok = True
        self.last_write_error_logged = 0.0
        self._close_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._run_id = uuid.uuid4().hex[:8]  # attempt ids: unique per run, cheap per attempt
        self._attempt_ids = itertools.count(1)

    # -- settings derived from the config ------------------------------------------------

    @property
    def config(self) -> Config:
        return self.config_file.config

    @property
    def close_delay(self) -> float:
        timeouts = [t.config.largest_timeout for t in self.targets.values()]
        if self.config.network_check is not None:
            timeouts.append(self.config.network_check.timeout)
        return max(timeouts, default=0.0) + self.config.scheduler.close_grace

    def _verdict_of_gap(self, target: TargetBase) -> Callable[[int], Verdict]:
        windows = target.windows
        down = Verdict(State.NO_DATA, Reason.PROBER_DOWN)
        maintenance = Verdict(State.MAINTENANCE)

        def verdict_of(minute: int) -> Verdict:
            return maintenance if sla.in_maintenance(minute, windows) else down

        return verdict_of

    # -- start and stop ------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock.wall()
        current = int(now // 60)
        for target in self.config.targets:
            self.targets[target.name] = TargetRuntime.build(target)
        future = await asyncio.to_thread(self.ledger.future_rows, current)
        if future:
            event(
                logging.WARNING,
                "the ledger holds minutes that have not ended yet (an import?); they are "
                "ignored: not the newest closed minute, not part of the month so far",
                targets=",".join(sorted(future)),
                rows=sum(future.values()),
            )
        unrecorded = await asyncio.to_thread(self._record_gaps, list(self.config.targets), current)
        if unrecorded:
            self._record_gaps_later(unrecorded, current)
        calendars = {t.name: t.sla.calendar() for t in self.config.targets}
        await asyncio.to_thread(self.view.restore, self.ledger, calendars, now)
        self.exposition.set_targets(target_info(t) for t in self.config.targets)
        self._build_network_check()
        self.process.reload_timestamp = now
        self.next_close = current
        self.planned_through = current - 1
        self._plan(current, after=now)
        if now % 60 >= PLAN_AT_SECOND:
            self._plan(current + 1)
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self._plan_next,
            CronTrigger(second=PLAN_AT_SECOND, timezone=UTC),
            id="plan",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=9,
        )
        scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=1),
            id="close",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=5,
        )
        scheduler.add_job(
            self._prune, IntervalTrigger(hours=1), id="retention", coalesce=True, max_instances=1
        )
        scheduler.start()
        self.scheduler = scheduler
        event(
            logging.INFO,
            "prober started",
            targets=len(self.targets),
            ledger=str(self.config_file.ledger_path),
            version=__version__,
        )

    def _record_gaps(
        self, targets: list[TargetBase], current: int
    ) -> list[tuple[TargetBase, int, Exception]]:
        """Record the minutes each target missed before `current` (rows at or after it are
        not taken for the newest closed minute). Returns the gaps the ledger refused to take
        (target, first missed minute, error): a read-only or failing ledger must not stop
        the prober from starting."""
        unrecorded: list[tuple[TargetBase, int, Exception]] = []
        for target in targets:
            last = self.ledger.last_closed_minute(target.name, before=current)
            if last is None or last + 1 >= current:
                continue
            try:
                recorded = self.ledger.record_gap(
                    target.name,
                    list(target.probes),
                    last + 1,
                    current,
                    self._verdict_of_gap(target),
                )
            except (sqlite3.Error, OSError, UserError) as exc:
                unrecorded.append((target, last + 1, exc))
                continue
            if recorded:
                event(
                    logging.WARNING,
                    "recorded minutes missed while the prober was down",
                    target=target.name,
                    minutes=recorded,
                    since=minute_iso(last + 1),
                )
        return unrecorded

    def _record_gaps_later(
        self, unrecorded: list[tuple[TargetBase, int, Exception]], current: int
    ) -> None:
        """The ledger refused the gaps at start: count it as the write failure it is (not
        ready, the error metric) and hand the gaps to the write buffer's dropped-minutes
        ranges, which are recorded as no_data/prober_down once the ledger takes writes."""
        for target, first, _exc in unrecorded:
            known = self.dropped.get(target.name)
            if known is not None:
                first = min(first, known[1])
            self.dropped[target.name] = (tuple(target.probes), first, current)
        self._write_failed(unrecorded[0][2])
        event(
            logging.WARNING,
            "minutes missed while the prober was down are kept in memory until the ledger "
            "takes writes",
            targets=len(unrecorded),
            minutes=sum(current - first for _target, first, _exc in unrecorded),
        )

    def _build_network_check(self) -> None:
        check = self.config.network_check
        self.netcheck = NetworkCheck(check) if check is not None else None
        self.network_plan = (
            probe_plan(NETWORK, "check", check.attempts_per_minute, check.timeout)
            if check is not None
            else None
        )
        if check is None:
            self.process.network_up = None

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running and not self._stopping

    async def stop(self) -> None:
        """Stop planning, let attempts in flight finish (up to their timeouts), close every
        minute that has ended, write them, release everything."""
        self._stopping = True
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.close_delay + 1)
        for task in list(self.tasks):
            task.cancel()
        if self._close_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._close_task
        await self._close_due(final=True)
        for runtime in self.targets.values():
            await runtime.adapter.aclose()
        if self.netcheck is not None:
            await self.netcheck.aclose()
        event(
            logging.INFO,
            "prober stopped",
            closed_through=minute_iso(self.next_close - 1),
            unwritten_minutes=sum(len(b) for b in self.pending),
        )

    # -- planning ------------------------------------------------------------------------

    async def _plan_next(self) -> None:
        step = self.steps.check()
        if step:
            self.process.clock_steps += 1
            event(
                logging.WARNING,
                "wall clock stepped",
                seconds=round(step, 3),
                note="minutes without attempts become no_data; attempts for closed minutes "
                "are discarded and counted",
            )
        minute = int(self.clock.wall() // 60) + 1
        if minute <= self.planned_through:
            return
        self.planned_through = minute
        runtimes = list(self.targets.values())
        # In chunks, so attempts due now are not held up by planning thousands of others.
        for start in range(0, max(len(runtimes), 1), CHUNK):
            self._plan(minute, runtimes=runtimes[start : start + CHUNK], network=start == 0)
            await asyncio.sleep(0)

    def _plan(
        self,
        minute: int,
        after: float = float("-inf"),
        runtimes: list[TargetRuntime] | None = None,
        network: bool = True,
    ) -> None:
        loop = asyncio.get_running_loop()
        now = self.clock.wall()
        for runtime in self.targets.values() if runtimes is None else runtimes:
            for plan in runtime.plans:
                for planned in plan.attempts_in(minute, after):
                    self._arm(loop, planned, now, self._launch, runtime)
        if network and self.network_plan is not None and self.netcheck is not None:
            for planned in self.network_plan.attempts_in(minute, after):
                self._arm(loop, planned, now, self._launch_network, self.netcheck)
        if runtimes is None:
            self.planned_through = max(self.planned_through, minute)

    def _arm(
        self, loop: asyncio.AbstractEventLoop, planned: Planned, now: float, func, owner
    ) -> None:
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self.timers.discard(timer)  # type: ignore[arg-type]
            func(planned, owner)

        timer = loop.call_later(max(0.0, planned.at - now), fire)
        self.timers.add(timer)

    def _late(self, planned: Planned) -> bool:
        lag = self.clock.wall() - planned.at
        self.process.lag.observe(max(lag, 0.0))
        if lag > planned.spacing / 2:
            self.process.misfires += 1
            event(
                logging.WARNING,
                "attempt skipped: could not start near its planned time",
                target=planned.target,
                probe=planned.probe,
                late_seconds=round(lag, 3),
            )
            return True
        return False

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _launch(self, planned: Planned, runtime: TargetRuntime) -> None:
        # A reload may have replaced or removed the target since this attempt was planned.
        if self._stopping or self.targets.get(planned.target) is not runtime:
            return
        if self._late(planned):
            return
        self.book.started(planned.minute)
        self._spawn(self._attempt(planned, runtime.adapter))

    async def _attempt(self, planned: Planned, adapter: Adapter) -> None:
        context = ProbeContext(
            planned.target,
            planned.probe,
            planned.timeout,
            planned.at,
            f"{self._run_id}-{next(self._attempt_ids)}",
        )
        started = self.clock.wall()
        t0 = self.clock.monotonic()
        try:
            async with asyncio.timeout(planned.timeout):
                result = await adapter.attempt(context)
        except TimeoutError:
            result = adapter_base.failure(
                adapter_base.TIMEOUT, f"no answer within {planned.timeout:g}s"
            )
        except asyncio.CancelledError:
            self.book.abandoned(planned.minute)
            raise
        except Exception as exc:
            result = adapter_base.unexpected_error(exc)
            if result.error_kind == adapter_base.INTERNAL:  # a bug: its traceback helps
                logging.getLogger(__name__).exception("adapter error")
        duration = self.clock.monotonic() - t0
        result = result.cleaned()
        attempt = Attempt(
            planned.target,
            planned.probe,
            started,
            duration,
            result.outcome,
            result.error_kind,
            result.error_code,
            result.http_status,
            result.detail,
        )
        self.process.observe_duration(planned.target, planned.probe, duration)
        if not self.book.finished(attempt, planned.minute):
            self.process.discarded_attempts += 1
            event(
                logging.WARNING,
                "attempt finished after its minute closed; not counted",
                target=attempt.target,
                probe=attempt.probe,
                minute=minute_iso(attempt.minute),
                outcome=str(attempt.outcome),
            )

    def _launch_network(self, planned: Planned, check: NetworkCheck) -> None:
        if self._stopping or self.netcheck is not check or self._late(planned):
            return
        self._spawn(self._network_round(planned.minute, check))

    async def _network_round(self, minute: int, check: NetworkCheck) -> None:
        all_failed = await check.all_failed()
        self.book.network_round(minute, all_failed)
        was = self.process.network_up
        self.process.network_up = 0 if all_failed else 1
        if was is not None and was != self.process.network_up:
            event(
                logging.WARNING if all_failed else logging.INFO,
                "network check: every reference failed"
                if all_failed
                else "network check: references reachable again",
                minute=minute_iso(minute),
            )

    # -- closing minutes -----------------------------------------------------------------

    async def _tick(self) -> None:
        if self._close_task is None or self._close_task.done():
            self._close_task = asyncio.get_running_loop().create_task(self._close_due())

    def _rules_for(self, minute: int) -> list[TargetRules]:
        rules = [r.rules for r in self.targets.values()]
        for name, (retired_rules, last) in list(self.retiring.items()):
            if minute <= last:
                rules.append(retired_rules)
            else:
                del self.retiring[name]
        return rules

    async def _close_due(self, final: bool = False) -> None:
        now = self.clock.wall()
        delay = self.close_delay
        # minute m closes at (m + 1) * 60 + delay; at shutdown every minute that has ended
        newest = int(now // 60) - 1 if final else int((now - delay) // 60) - 1
        closed_any = False
        while self.next_close <= newest:
            minute = self.next_close
            overdue = now - ((minute + 1) * 60 + delay)
            if not final and self.book.busy(minute) and overdue < STALL_LIMIT:
                break  # attempts of this minute still running: give them a moment
            rules = self._rules_for(minute)
            closed: list[ClosedMinute] = []
            for start in range(0, len(rules), CHUNK):
                closed += self.book.decide(minute, rules[start : start + CHUNK])
                await asyncio.sleep(0)
            self.book.seal(minute)
            self.pending.append(closed)
            self.next_close += 1
            closed_any = True
        if closed_any or self.pending:
            await self._flush()

    def _remember_dropped(self, dropped: list[list[ClosedMinute]]) -> None:
        for closed in dropped:
            for item in closed:
                known = self.dropped.get(item.target)
                if known is None:
                    self.dropped[item.target] = (tuple(item.probes), item.minute, item.minute + 1)
                else:
                    probes, first, end = known
                    self.dropped[item.target] = (
                        probes,
                        min(first, item.minute),
                        max(end, item.minute + 1),
                    )

    def _dropped_batches(self) -> list[ClosedMinute]:
        """The dropped minutes as prober_down rows, at most CHUNK at a time."""
        down = Verdict(State.NO_DATA, Reason.PROBER_DOWN)
        batch: list[ClosedMinute] = []
        for target, (probes, first, end) in self.dropped.items():
            for minute in range(first, end):
                batch.append(
                    ClosedMinute(
                        target,
                        minute,
                        down,
                        OutcomeCounts(),
                        {p: (down, OutcomeCounts()) for p in probes},
                    )
                )
                if len(batch) >= CHUNK:
                    return batch
        return batch

    async def _record_dropped(self) -> None:
        recorded = 0
        while self.dropped:
            batch = self._dropped_batches()
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
            "minutes dropped from the full write buffer recorded as no_data/prober_down",
            minutes=recorded,
        )

    async def _flush(self) -> None:
        batch = [item for closed in self.pending for item in closed]
        if not batch and not self.dropped:
            self.pending.clear()
            return
        try:
            written = await asyncio.to_thread(self.ledger.write_minutes, batch) if batch else []
        except (sqlite3.Error, OSError, UserError) as exc:
            self._write_failed(exc)
            return
        if not self.ledger_ok:
            event(logging.INFO, "ledger writable again", written_minutes=len(self.pending))
        self.ledger_ok = True
        self.pending.clear()
        for start in range(0, len(written), CHUNK):
            self.view.apply(written[start : start + CHUNK])
            self.narrator.closed(written[start : start + CHUNK])
            await asyncio.sleep(0)
        if self.dropped:
            try:
                await self._record_dropped()
            except (sqlite3.Error, OSError, UserError) as exc:
                self._write_failed(exc)

    def _write_failed(self, exc: Exception) -> None:
        self.process.ledger_write_errors += 1
        self.ledger_ok = False
        limit = self.config.scheduler.write_buffer_minutes
        dropped = self.pending[:-limit] if len(self.pending) > limit else []
        self.pending = self.pending[-limit:]
        self._remember_dropped(dropped)
        now = self.clock.wall()
        if now - self.last_write_error_logged > 60 or dropped:
            self.last_write_error_logged = now
            event(
                logging.ERROR,
                "ledger write failed; closed minutes kept in memory",
                error=f"{type(exc).__name__}: {exc}",
                buffered_minutes=len(self.pending),
                dropped_minutes=len(dropped),
            )

    async def _prune(self) -> None:
        days = self.config.ledger.attempts_retention_days
        cutoff = self.clock.wall() - days * 86400
        with contextlib.suppress(sqlite3.Error, OSError):
            removed = await asyncio.to_thread(self.ledger.prune_attempts, cutoff)
            if removed:
                event(logging.INFO, "pruned old attempts", attempts=removed, retention_days=days)

    # -- health --------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        if not self.running:
            return False, "scheduler not running"
        if not self.ledger_ok:
            return False, "ledger not writable"
        # A minute closes close_delay after it ends. Whatever that works out to, none may
        # wait longer than a valid config allows (a timeout under 60s plus close_grace):
        # a prober that has closed no minute for longer than that is not ready.
        delay = min(self.close_delay, 60.0 + MAX_CLOSE_GRACE)
        overdue = self.clock.wall() - ((self.next_close + 1) * 60 + delay)
        if overdue > 60:
            return False, f"no minute closed: minute closing is {overdue:.0f}s behind"
        return True, "ok"

    # -- reload --------------------------------------------------------------------------

    async def reload(self, new: ConfigFile) -> None:
        """Apply a new, already validated config. Targets whose config is unchanged keep
        running untouched; changed ones get a new adapter; removed ones finish their minutes."""
        old = self.config_file
        if new.ledger_path != old.ledger_path:
            event(logging.WARNING, "ledger.path changes need a restart; keeping the old ledger")
        # The web config file is re-read by the daemon on reload; the listener is not.
        if new.config.web.model_copy(update={"config_file": None}) != old.config.web.model_copy(
            update={"config_file": None}
        ):
            event(
                logging.WARNING,
                "listen_address/enable_lifecycle changes need a restart; keeping the old ones",
            )
        now = self.clock.wall()
        current = int(now // 60)
        fresh: dict[str, TargetRuntime] = {}
        added: list[TargetBase] = []
        for target in new.config.targets:
            runtime = self.targets.get(target.name)
            if runtime is not None and runtime.config == target:
                fresh[target.name] = runtime
                continue
            fresh[target.name] = TargetRuntime.build(target)
            if runtime is None:
                added.append(target)
        for name, runtime in self.targets.items():
            if fresh.get(name) is not runtime:
                if name not in fresh:
                    self.retiring[name] = (runtime.rules, self.planned_through)
                self._close_later(runtime.adapter)
        previous, previous_check = self.targets, self.netcheck
        self.config_file = new
        self.targets = fresh
        if added:
            await asyncio.to_thread(self._record_gaps, added, current)
        for target in new.config.targets:
            self.view.track(target.name, target.sla.calendar())
        self.exposition.set_targets(target_info(t) for t in new.config.targets)
        if new.config.network_check != old.config.network_check:
            if self.netcheck is not None:
                self._close_later(self.netcheck)
            self._build_network_check()
        # New and changed targets start at once: the rest of this minute and any minute
        # already planned ahead.
        renewed = [r for n, r in fresh.items() if r is not previous.get(n)]
        network_renewed = self.netcheck is not previous_check
        for minute in range(current, self.planned_through + 1):
            self._plan(minute, after=now, runtimes=renewed, network=network_renewed)
        self.process.reload_timestamp = now
        event(
            logging.INFO,
            "configuration reloaded",
            targets=len(fresh),
            added=len(added),
            removed=len(self.retiring),
        )

    def _close_later(self, resource: Adapter | NetworkCheck) -> None:
        async def close() -> None:
            await asyncio.sleep(self.close_delay + 1)
            await resource.aclose()

        self._spawn(close())
