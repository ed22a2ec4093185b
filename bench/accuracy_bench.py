"""Accuracy: the SLA month by hand vs im-prober's verdicts vs the usual blackbox_exporter
estimate `avg_over_time(probe_success[30d])`, over the same fault timelines.

A 30-day service month (2026-09-01 .. 2026-10-01 UTC, 43,200 minutes), one fault story per
run, everything else healthy:

  flap          24 h in which each attempt fails with probability 1/2
  gap_outage    a 6 h outage, and a 2 h outage while the Prometheus that drives blackbox
                was down (no samples)
  prober_down   the prober itself down for 3 h while the service worked
  maintenance   an 8 h notified maintenance window in which the service was down
  own_network   the prober's own network down for 10 h (every attempt fails, the
                provider is fine)

Each side sees the same per-attempt outcomes:
  * by hand: the SLA's definition applied directly to the timeline (a minute fails only if
    every attempt in it failed through the provider's fault, outside maintenance; minutes
    with no observation are not failures; availability = 1 - failed / minutes).
  * im-prober: its own verdict code (prober.sla: decide_target with the network check and
    maintenance flags, count_states, credit_ratio), 1 login + 4 sends a minute.
  * blackbox: one probe every 15 s, written as OpenMetrics, loaded into a real Prometheus
    TSDB with `promtool tsdb create-blocks-from openmetrics`, queried with
    `avg_over_time(probe_success[30d])` at the month's end by Debian's prometheus.

    python bench/accuracy_bench.py
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from daemon_bench import start_prometheus

from prober.sla import Outcome, OutcomeCounts, count_states, credit_ratio
from prober.sla.verdicts import decide_target

START = 1_788_220_800  # 2026-09-01T00:00:00Z
MINUTES = 30 * 24 * 60
HOUR = 60
SENDS = 4  # send attempts a minute, besides one login

# A story: per minute, (provider fails each attempt with probability p, maintenance,
# own network down, prober down, prometheus down).
Minute = tuple[float, bool, bool, bool, bool]


def story(name: str) -> Callable[[int], Minute]:
    def at(start_hour: float, hours: float) -> Callable[[int], bool]:
        first = int(start_hour * HOUR)
        return lambda m: first <= m < first + int(hours * HOUR)

    if name == "flap":
        window = at(200, 24)
        return lambda m: (0.5 if window(m) else 0.0, False, False, False, False)
    if name == "gap_outage":
        seen, unseen = at(100, 6), at(400, 2)
        return lambda m: (1.0 if seen(m) or unseen(m) else 0.0, False, False, False, unseen(m))
    if name == "prober_down":
        down = at(300, 3)
        return lambda m: (0.0, False, False, down(m), down(m))
    if name == "maintenance":
        window = at(500, 8)
        return lambda m: (1.0 if window(m) else 0.0, window(m), False, False, False)
    if name == "own_network":
        window = at(600, 10)
        return lambda m: (0.0, False, window(m), False, False)
    raise ValueError(name)


STORIES = ["flap", "gap_outage", "prober_down", "maintenance", "own_network"]


def attempts(minute: Minute, n: int, rng: random.Random) -> list[bool]:
    """Success of each of n attempts in a minute, as the network sees it from the prober."""
    p_fail, _maintenance, own_network, _down, _ = minute
    if own_network:
        return [False] * n
    return [rng.random() >= p_fail for _ in range(n)]


def by_hand(minutes: list[Minute], outcomes: list[list[bool]]) -> tuple[Fraction, int]:
    failed = 0
    for (_p, maintenance, own_network, prober_down, _), results in zip(
        minutes, outcomes, strict=True
    ):
        if maintenance or own_network or prober_down:
            continue  # excluded or unobserved: not a failure under the SLA
        if results and not any(results):
            failed += 1
    return 1 - Fraction(failed, MINUTES), failed


def im_prober(minutes: list[Minute], outcomes: list[list[bool]]) -> Fraction:
    states = []
    for (_p, maintenance, own_network, prober_down, _), results in zip(
        minutes, outcomes, strict=True
    ):
        if prober_down:
            continue  # no row until the gap is recorded: no_data/prober_down
        login = OutcomeCounts.of([Outcome.SUCCESS if results[0] else Outcome.FAILURE])
        sends = OutcomeCounts.of([Outcome.SUCCESS if r else Outcome.FAILURE for r in results[1:]])
        verdict = decide_target(
            {"login": login, "send_c2c": sends},
            maintenance=maintenance,
            network_failed=own_network,  # every reference endpoint failed too
        )
        states.append(verdict.state)
    figures = count_states(states, MINUTES)
    assert figures.sla_availability is not None
    return figures.sla_availability


def blackbox_samples(minutes: list[Minute], rng: random.Random) -> list[tuple[int, int]]:
    samples = []
    for m, minute in enumerate(minutes):
        _p, _maint, _net, prober_down, prometheus_down = minute
        if prober_down or prometheus_down:
            continue  # no scrape, no sample
        for k, ok in enumerate(attempts(minute, 4, rng)):
            samples.append((START + m * 60 + k * 15, 1 if ok else 0))
    return samples


def prometheus_estimates(series: dict[str, list[tuple[int, int]]]) -> dict[str, float]:
    promtool = shutil.which("promtool")
    if not promtool:
        raise SystemExit("needs Debian's prometheus package (promtool, prometheus)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "probe_success.om"
        with source.open("w") as out:
            out.write("# HELP probe_success Displays whether or not the probe was a success\n")
            out.write("# TYPE probe_success gauge\n")
            for name, samples in series.items():
                for at, value in samples:
                    out.write(f'probe_success{{story="{name}"}} {value} {at}\n')
            out.write("# EOF\n")
        tsdb = folder / "tsdb"
        subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
            check=True,
            capture_output=True,
        )
        proc, base = start_prometheus(
            folder, "global: {}\n", flags=("--storage.tsdb.retention.time=100y",)
        )
        try:
            end = START + MINUTES * 60
            params = {"query": "avg_over_time(probe_success[30d])", "time": str(end)}
            with urllib.request.urlopen(
                base + "/api/v1/query?" + urllib.parse.urlencode(params), timeout=60
            ) as response:
                result = json.load(response)["data"]["result"]
            return {r["metric"]["story"]: float(r["value"][1]) for r in result}
        finally:
            proc.terminate()
            proc.wait(30)


def tier(availability: float | Fraction) -> str:
    ratio = credit_ratio(Fraction(availability))
    return f"{int(ratio * 100)}%"


def main() -> None:
    rows = []
    series = {}
    for name in STORIES:
        rng = random.Random(name)
        plan = story(name)
        minutes = [plan(m) for m in range(MINUTES)]
        outcomes = [[] if minute[3] else attempts(minute, 1 + SENDS, rng) for minute in minutes]
        truth, failed = by_hand(minutes, outcomes)
        ours = im_prober(minutes, outcomes)
        series[name] = blackbox_samples(minutes, rng)
        rows.append((name, truth, failed, ours))
    estimates = prometheus_estimates(series)
    print(
        "story         SLA by hand (failed min)   credit | im-prober        credit | "
        "blackbox avg_over_time  credit"
    )
    for name, truth, failed, ours in rows:
        theirs = estimates[name]
        print(
            f"{name:12}  {float(truth) * 100:9.4f}% ({failed:5d})        {tier(truth):>4} | "
            f"{float(ours) * 100:9.4f}%  {tier(ours):>6} | "
            f"{theirs * 100:9.4f}%              {tier(theirs):>4}"
        )


if __name__ == "__main__":
    main()
