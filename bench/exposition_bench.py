"""The cost of one /metrics rendering: im-prober's hand-written exposition against
prometheus_client rendering the same families and samples through a custom collector (the
way an exporter serves values it reads from elsewhere), in the same run.

    python bench/exposition_bench.py [--targets 100 1000 5000 10000] [--repeat 7]

Both sides render every sample from scratch (the daemon renders its ledger block once per
change of the view; that is bypassed here so the comparison is of rendering alone). Then,
for the daemon's own path (`render_pieces`, slice by slice on an event loop): the CPU of a
scrape with the ledger block ready (what a scrape costs between two minute closes), and the
longest slice, i.e. the longest the event loop is held at once (wall time, with an idle
loop).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Iterator
from fractions import Fraction
from functools import partial

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from prober import sla
from prober.expose.metrics import Exposition, TargetInfo
from prober.ledger.store import TARGET_LEVEL
from prober.ledger.view import WINDOWS, LedgerView
from prober.sla import Outcome, State
from prober.stats import DURATION_BUCKETS, RuntimeStats

PROBES = ("login", "send_c2c", "send_group")
NOW = 29_500_000 * 60.0


def build(n: int) -> tuple[LedgerView, RuntimeStats, list[TargetInfo]]:
    view = LedgerView()
    process = RuntimeStats()
    targets = []
    for i in range(n):
        name = f"target-{i:05d}"
        targets.append(TargetInfo(name, PROBES, Fraction(99, 100), ()))
        for probe in PROBES:
            view.attempts[(name, probe)] = {o: 1000 + i for o in Outcome}
            view.verdicts[(name, probe)] = {s: 500 + i for s in State}
            for k in range(8):
                process.observe_duration(name, probe, 0.01 * (k + 1))
        view.verdicts[(name, TARGET_LEVEL)] = {s: 500 + i for s in State}
    return view, process, targets


class SameFamilies(Collector):
    """The families im-prober exposes, with the same samples, via prometheus_client."""

    def __init__(self, view: LedgerView, process: RuntimeStats, targets: list[TargetInfo]) -> None:
        self.view, self.process, self.targets = view, process, targets

    def collect(self) -> Iterator[object]:
        attempts = CounterMetricFamily(
            "im_probe_attempts", "Attempts by outcome.", labels=["target", "probe", "outcome"]
        )
        verdicts = CounterMetricFamily(
            "im_minute_verdicts", "Closed minutes by verdict.", labels=["target", "state"]
        )
        probe_verdicts = CounterMetricFamily(
            "im_probe_minute_verdicts", "Per probe.", labels=["target", "probe", "state"]
        )
        durations = HistogramMetricFamily(
            "im_probe_duration_seconds", "Durations.", labels=["target", "probe"]
        )
        availability = GaugeMetricFamily(
            "im_availability_ratio", "Measured availability.", labels=["target", "window"]
        )
        month = [
            GaugeMetricFamily(name, "Month so far.", labels=["target"])
            for name in (
                "im_sla_availability_ratio",
                "im_sla_coverage_ratio",
                "im_sla_downtime_seconds",
                "im_sla_downtime_budget_remaining_seconds",
                "im_sla_credit_ratio",
            )
        ]
        for t in self.targets:
            for probe in t.probes:
                counts = self.view.attempts[(t.name, probe)]
                for outcome in Outcome:
                    attempts.add_metric([t.name, probe, str(outcome)], counts[outcome])
                pv = self.view.verdicts[(t.name, probe)]
                for state in State:
                    probe_verdicts.add_metric([t.name, probe, str(state)], pv[state])
                histogram = self.process.durations[(t.name, probe)]
                cumulative, buckets = 0, []
                for bound, count in zip(
                    (*DURATION_BUCKETS, float("inf")), histogram.counts, strict=True
                ):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                durations.add_metric([t.name, probe], buckets, histogram.sum)
            tv = self.view.verdicts[(t.name, TARGET_LEVEL)]
            for state in State:
                verdicts.add_metric([t.name, str(state)], tv[state])
            for window in WINDOWS:
                availability.add_metric([t.name, window], 0.999)
            for family in month:
                family.add_metric([t.name], 0.5)
        yield from (attempts, verdicts, probe_verdicts, durations, availability, *month)


def hand_written(view: LedgerView, process: RuntimeStats, targets: list[TargetInfo]) -> bytes:
    exposition = Exposition(view, process, "bench")
    exposition.set_targets(targets)
    return exposition.render(NOW)  # a fresh Exposition: nothing cached


def served(view: LedgerView, process: RuntimeStats, targets: list[TargetInfo], repeat: int):
    """The daemon's path: CPU of a scrape with the ledger block ready, and the longest time
    the loop is held between two yields (over one scrape with the block to render and
    `repeat` with it ready)."""

    async def main() -> tuple[float, float, float]:
        exposition = Exposition(view, process, "bench")
        exposition.set_targets(targets)
        longest = 0.0
        last = time.perf_counter()
        stop = False

        async def ticker() -> None:  # wakes at every chance the loop gives it
            nonlocal longest, last
            while not stop:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest = max(longest, now - last)
                last = now

        tick = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        c0 = time.process_time()
        await exposition.render_pieces(NOW)  # renders the ledger block
        first = time.process_time() - c0
        times = []
        for _ in range(repeat):
            for histogram in process.durations.values():  # every histogram has changed
                histogram.observe(0.02)
            c0 = time.process_time()
            await exposition.render_pieces(NOW)
            times.append(time.process_time() - c0)
        stop = True
        await tick
        return first, statistics.median(times), longest

    return asyncio.run(main())


def timed(func, repeat: int) -> tuple[float, bytes]:
    times, body = [], b""
    for _ in range(repeat):
        t0 = time.process_time()
        body = func()
        times.append(time.process_time() - t0)
    return statistics.median(times), body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[100, 1000, 5000, 10000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    assert sla  # the month families above mirror prober.sla's figures
    print(
        "| targets | lines (ours / theirs) | im-prober ms | prometheus_client ms | ratio "
        "| µs/line (ours / theirs) | served: first / ready ms | longest slice ms |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in args.targets:
        view, process, targets = build(n)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SameFamilies(view, process, targets))
        ours, our_body = timed(partial(hand_written, view, process, targets), args.repeat)
        theirs, their_body = timed(partial(generate_latest, registry), args.repeat)
        lines = our_body.count(b"\n")
        their_lines = their_body.count(b"\n")
        first, ready, longest = served(view, process, targets, args.repeat)
        print(
            f"| {n:,} | {lines:,} / {their_lines:,} | {ours * 1e3:.1f} | {theirs * 1e3:.1f} | "
            f"{theirs / ours:.1f}× | {ours / lines * 1e6:.2f} / {theirs / their_lines * 1e6:.2f} "
            f"| {first * 1e3:.0f} / {ready * 1e3:.0f} | {longest * 1e3:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
