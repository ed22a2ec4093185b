"""Where the daemon's event-loop time goes: every callback the loop runs is timed in the
daemon's own process, and those that hold the loop longer than a threshold are reported by
what ran (the task's coroutine and where it stopped), beside the attempts' start lag.

The daemon probes N `http` targets (as bench/daemon_bench.py) while /metrics is scraped
every 15 s, as Prometheus would. After a warm-up, whole minutes are watched; the report
lists, per kind of callback, how many held the loop more than the threshold, their total
and longest time, and when in the minute (second) the longest ran.

    python bench/loop_watch.py [--targets 5000] [--minutes 1] [--threshold-ms 5] [--profile F]
                               [--ledger postgres]
    python bench/loop_watch.py --child OUT -- <arguments of `prober run`>   (internal)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_bench import (
    PASSWORD_ENV,
    ROOT,
    cpu_seconds,
    find_py_spy,
    free_port,
    histogram,
    pinned,
    quantile,
    rss_mb,
    scrape,
    settle,
    start_fast_server,
    start_postgres,
    use_postgres,
    write_config,
)


def _label(handle: object) -> str:
    """What a callback is: a task step as its coroutine and the coroutine it now awaits."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    get_coro = getattr(task, "get_coro", None)
    if get_coro is None:
        name = getattr(callback, "__qualname__", None) or type(callback).__name__
        return f"callback {name}"
    coro = get_coro()
    names = []
    while coro is not None and len(names) < 6:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        if code is None:
            break
        names.append(code.co_qualname)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return "task " + " > ".join(names) if names else "task ?"


def child(out: Path, threshold: float, argv: list[str]) -> int:
    import asyncio.events

    # (start, wall seconds, CPU seconds of the loop's thread, what ran)
    records: list[tuple[float, float, float, str]] = []
    run = asyncio.events.Handle._run
    clock, cpu = time.perf_counter, time.thread_time

    def timed(self: asyncio.events.Handle) -> None:
        t0, c0 = clock(), cpu()
        run(self)
        spent, used = clock() - t0, cpu() - c0
        if spent > threshold or used > threshold:
            # the label after the step: where the task stopped (or finished)
            records.append((time.time() - spent, spent, used, _label(self)))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]
    # the cyclic garbage collector's passes: (start, wall seconds, CPU seconds, generation,
    # objects a full pass walked, objects frozen out of the passes)
    collections: list[tuple[float, float, float, int, int, int]] = []
    began = [0.0, 0.0, 0]

    def collector(phase: str, info: dict[str, int]) -> None:
        full = info["generation"] == 2
        if phase == "start":
            # (counting walks the objects: only for the rare full passes)
            began[2] = len(gc.get_objects(generation=2)) if full else 0
            began[0], began[1] = clock(), cpu()
        else:
            spent, used = clock() - began[0], cpu() - began[1]
            frozen = gc.get_freeze_count() if full else 0
            collections.append(
                (time.time() - spent, spent, used, info["generation"], began[2], frozen)
            )

    gc.callbacks.append(collector)

    lags: list[tuple[float, float]] = []  # (when, seconds late) of every attempt started

    def dump() -> None:
        out.write_text(
            json.dumps({"callbacks": records, "collections": collections, "lags": list(lags)})
        )

    # Written once, as the daemon exits (the watch stops it with SIGTERM). A thread that
    # dumped everything every 5 s held the GIL for tens of ms each time as the lists grew,
    # and made the attempts due meanwhile late: the watch measured itself.
    sys.path.insert(0, str(ROOT))  # this tree's package, as `python -m prober` from ROOT
    # experiments with the collector's thresholds (the daemon sets its own at start)
    if os.environ.get("BENCH_GC_THRESHOLDS"):
        from prober.daemon import QuietCollector

        thresholds = tuple(map(int, os.environ["BENCH_GC_THRESHOLDS"].split(",")))
        QuietCollector.THRESHOLDS = thresholds  # type: ignore[assignment]
    # experiments with the GIL's switch interval (how long a thread that wants the GIL waits
    # before asking the holder to let go; CPython's default is 5 ms)
    if os.environ.get("BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("BENCH_NO_STATUS_WARM"):
        import prober.status.views as views

        async def skipped(self: object) -> None:
            pass

        views.StatusPage.warm = skipped  # type: ignore[method-assign]
    from prober.runtime import clockwork

    late = clockwork.Clockwork._late

    def noted(self: clockwork.Clockwork, planned: clockwork.Planned) -> bool:
        now = time.time()
        lags.append((now, now - planned.at))
        return late(self, planned)

    clockwork.Clockwork._late = noted  # type: ignore[method-assign]
    from prober.cli import main

    try:
        return main(["run", *argv])
    finally:
        dump()


def watch(
    targets: int, minutes: int, threshold_ms: float, profile: Path | None, ledger: str
) -> None:
    py_spy = find_py_spy()
    if profile is not None and py_spy is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    # the server and the cluster stopped however the run ends, even before the daemon starts
    with contextlib.ExitStack() as started:
        _watch(targets, minutes, threshold_ms, profile, ledger, py_spy, started)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait()


def _watch(
    targets: int,
    minutes: int,
    threshold_ms: float,
    profile: Path | None,
    ledger: str,
    py_spy: str | None,
    started: contextlib.ExitStack,
) -> None:
    server, url = start_fast_server()
    started.callback(_stop, server)
    cluster = start_postgres() if ledger == "postgres" else None
    if cluster is not None:
        started.callback(cluster.stop)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_PROBER_")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "config.yaml"
        write_config(config, targets, url)
        if cluster is not None:
            use_postgres(config, cluster.url(cluster.create_database("loop_watch")))
            env[PASSWORD_ENV] = cluster.password
        out = folder / "slow.json"
        web = free_port()
        base = f"http://127.0.0.1:{web}"
        proc = subprocess.Popen(
            [
                *pinned(0),
                sys.executable,
                __file__,
                "--child",
                str(out),
                "--threshold-ms",
                str(threshold_ms),
                "--",
                "-c",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{web}",
                "--log-level",
                "info",  # for the warm-up's end (settle)
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "log", "w"),  # noqa: SIM115
        )
        try:
            deadline = time.time() + 180
            while True:
                try:
                    scrape(base + "/healthz")
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError((folder / "log").read_text()) from None
                    time.sleep(0.2)
            settled = settle(proc.pid, folder / "log")
            start_at = (int(time.time() // 60) + 2) * 60 + 1
            time.sleep(max(0.0, start_at - time.time()))
            text0 = scrape(base + "/metrics")
            cpu0, t0 = cpu_seconds(proc.pid), time.time()
            spy = None
            if profile is not None:  # py-spy's samples of every thread, the watched minutes
                spy = subprocess.Popen(
                    [
                        *(py_spy, "record", "--threads", "--nonblocking", "--format", "raw"),
                        *("--rate", "200", "--duration", str(minutes * 60)),
                        *("-o", str(profile), "--pid", str(proc.pid)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            scrapes: list[float] = []
            while time.time() < t0 + minutes * 60:
                s0 = time.perf_counter()
                try:
                    body = scrape(base + "/metrics")
                except OSError as exc:  # reported, not fatal: the lag figures still stand
                    print(f"scrape failed after {time.perf_counter() - s0:.1f} s: {exc!r}")
                    if py_spy is not None:  # what the daemon is doing instead
                        dump = [py_spy, "dump", "--nonblocking", "--pid", str(proc.pid)]
                        print(subprocess.run(dump, capture_output=True, text=True).stdout)
                    if proc.poll() is not None:
                        raise RuntimeError((folder / "log").read_text()[-3000:]) from None
                scrapes.append(time.perf_counter() - s0)
                time.sleep(max(0.0, 15 - (time.perf_counter() - s0)))
            text1 = scrape(base + "/metrics")
            log = (folder / "log").read_text()
            cpu1, t1 = cpu_seconds(proc.pid), time.time()
            rss = rss_mb(proc.pid)
            if spy is not None:
                spy.wait(60)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
        dumped = json.loads(out.read_text())
        records = [r for r in dumped["callbacks"] if t0 <= r[0] <= t1]
        collections = [c for c in dumped["collections"] if t0 <= c[0] <= t1]
        lags = sorted(late for at, late in dumped["lags"] if t0 <= at <= t1)
    lag0, _ = histogram(text0, "im_scheduler_lag_seconds")
    lag1, _ = histogram(text1, "im_scheduler_lag_seconds")
    attempts = (
        histogram(text1, "im_probe_duration_seconds")[1]
        - (histogram(text0, "im_probe_duration_seconds")[1])
    )
    print(f"start-up threads busy for {settled:.0f} s after /healthz answered")
    if log.strip():
        print("daemon log (tail):", log[-1500:], sep="\n")
    print(
        f"{targets} targets, {t1 - t0:.0f} s watched: {attempts / (t1 - t0):.1f} attempts/s, "
        f"CPU {(cpu1 - cpu0) / attempts * 1e6:.0f} µs/attempt, RSS {rss:.0f} MB, lag p50/p99 "
        f"{quantile(lag1, lag0, 0.5) * 1e3:.0f}/{quantile(lag1, lag0, 0.99) * 1e3:.0f} ms, "
        f"scrape ms {' '.join(f'{s * 1e3:.0f}' for s in scrapes)} ({body.count(chr(10))} lines)"
    )
    if lags:
        at = [lags[min(len(lags) - 1, int(q * len(lags)))] * 1e3 for q in (0.5, 0.99, 0.999)]
        print(
            f"start lag, exact, of {len(lags):,} attempts: p50 {at[0]:.1f} ms, p99 {at[1]:.1f} ms, "
            f"p99.9 {at[2]:.1f} ms, max {lags[-1] * 1e3:.1f} ms"
        )
        # when in the minute the late ones started: a cluster points at what held them
        late = [at for at, lag in dumped["lags"] if t0 <= at <= t1 and lag > 0.02]
        by_second: dict[int, int] = defaultdict(int)
        for at in late:
            by_second[int(at % 60)] += 1
        busiest = sorted(by_second.items(), key=lambda kv: -kv[1])[:8]
        print(
            f"attempts over 20 ms late: {len(late):,}; by second of the minute (most first): "
            + ", ".join(f":{second:02d} {count}" for second, count in busiest)
        )
    for generation in (0, 1, 2):
        passes = [c for c in collections if c[3] == generation]
        if passes:
            print(
                f"garbage collections of generation {generation}: {len(passes)}, wall total "
                f"{sum(c[1] for c in passes) * 1e3:.0f} ms, longest "
                f"{max(c[1] for c in passes) * 1e3:.1f} ms; CPU longest "
                f"{max(c[2] for c in passes) * 1e3:.1f} ms"
            )
    for at, spent, used, _generation, walked, frozen in (c for c in collections if c[3] == 2):
        print(
            f"  full pass at +{at - t0:.0f} s: {spent * 1e3:.0f} ms ({used * 1e3:.0f} ms CPU) "
            f"over {walked:,} objects ({frozen:,} frozen out)"
        )
    # by the CPU a callback used: what the code costs the loop on a core of its own; by
    # wall time: that plus being descheduled (other processes on the core) or waiting for
    # the GIL (the process's other threads)
    for column, title in ((2, "CPU time"), (1, "wall time")):
        groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for record in records:
            if record[column] > threshold_ms / 1000:
                groups[record[3]].append((record[column], record[0]))
        print(f"callbacks holding the loop > {threshold_ms:g} ms, by {title}:")
        print("  count  total ms  max ms  at second  what")
        for label, runs in sorted(groups.items(), key=lambda kv: -sum(s for s, _ in kv[1])):
            longest = max(runs)
            print(
                f"  {len(runs):5d}  {sum(s for s, _ in runs) * 1e3:8.0f}  {longest[0] * 1e3:6.0f}"
                f"  {longest[1] % 60:9.1f}  {label}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--minutes", type=int, default=1)
    parser.add_argument("--threshold-ms", type=float, default=5.0)
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks to this file")
    parser.add_argument(
        "--no-status-warm", action="store_true", help="skip the status page's start-up reads"
    )
    parser.add_argument(
        "--switch-interval", type=float, help="the daemon's sys.setswitchinterval (seconds)"
    )
    parser.add_argument("--ledger", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--child", type=Path)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        rest = rest[1:] if rest[:1] == ["--"] else rest
        raise SystemExit(child(args.child, args.threshold_ms / 1000, rest))
    if args.no_status_warm:
        os.environ["BENCH_NO_STATUS_WARM"] = "1"
    if args.switch_interval is not None:
        os.environ["BENCH_SWITCH_INTERVAL"] = str(args.switch_interval)
    watch(args.targets, args.minutes, args.threshold_ms, args.profile, args.ledger)


if __name__ == "__main__":
    main()
