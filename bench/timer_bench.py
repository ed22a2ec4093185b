"""The clockwork's choice, measured: firing N no-op attempts every 15 s as one APScheduler
job each, against the same firings as plain event-loop timers planned a minute at a time
(what the runtime does), in the same run. CPU per firing, user + system.

    python bench/timer_bench.py [--jobs 1000] [--seconds 45]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

SPACING = 15.0


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def noop(counter: list[int]) -> None:
    counter[0] += 1


async def with_apscheduler(jobs: int, seconds: float) -> tuple[float, int]:
    fired = [0]
    scheduler = AsyncIOScheduler(timezone=UTC)
    start = datetime.now(UTC) + timedelta(seconds=1)
    for i in range(jobs):  # staggered across the spacing, as attempts are
        scheduler.add_job(
            noop,
            IntervalTrigger(
                seconds=SPACING, start_date=start + timedelta(seconds=SPACING * i / jobs)
            ),
            args=[fired],
            misfire_grace_time=5,
        )
    scheduler.start()
    await asyncio.sleep(1)
    t0, before = cpu(), fired[0]
    await asyncio.sleep(seconds)
    used, runs = cpu() - t0, fired[0] - before
    scheduler.shutdown(wait=False)
    return used, runs


async def with_timers(jobs: int, seconds: float) -> tuple[float, int]:
    fired = [0]
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds + 1
    tasks: set[asyncio.Task[None]] = set()

    def launch() -> None:  # as the clockwork does: a task per attempt, kept until done
        task = loop.create_task(noop(fired))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def plan() -> None:  # a minute's firings at a time, like Clockwork.plan_next
        base = loop.time() + 1
        while base < stop:
            for k in range(int(60 / SPACING)):
                for i in range(jobs):
                    loop.call_at(base + k * SPACING + SPACING * i / jobs, launch)
            await asyncio.sleep(max(0.0, base + 60 - 10 - loop.time()))
            base += 60

    planner = loop.create_task(plan())
    await asyncio.sleep(1)
    t0, before = cpu(), fired[0]
    await asyncio.sleep(seconds)
    used, runs = cpu() - t0, fired[0] - before
    planner.cancel()
    return used, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=45)
    args = parser.parse_args()
    results = {}
    for name, run in (("loop timers", with_timers), ("APScheduler job each", with_apscheduler)):
        used, runs = asyncio.run(run(args.jobs, args.seconds))
        results[name] = used / max(runs, 1) * 1e6
        print(f"{name}: {runs} firings, {used:.2f} s CPU, {results[name]:.0f} µs per firing")
    ratio = results["APScheduler job each"] / results["loop timers"]
    print(f"APScheduler job each / loop timers: {ratio:.1f}×  ({time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
