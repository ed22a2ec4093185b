"""The in-memory view's 30-day minute ring: memory of a LedgerView of N targets, each with
30 days of minutes, and the CPU of `put`, for the one-byte-a-minute ring the view used to
keep (copied here) against the paged two-bit ring it keeps now, in the same run.

    python bench/view_bench.py [--targets 5000 10000] [--repeat 7]

Memory is measured in a fresh child process per ring and size (the parent's heap would
hide a second measurement): VmRSS from /proc before and after the view is built, and, in
a second child, the bytes tracemalloc traces for the same build. Each target is filled
with the same 30 days of minutes: one ring is filled minute by minute through
`TargetView.add` (what a restore does), and every target's ring is a copy of it. Two
months: "mixed" (a few failed and row-less minutes every day, a night of maintenance: no
day holds one value, so no page is shared) and "healthy" (every minute available: every
day but the newest is the one shared page).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.byte_ring

from prober.ledger.codes import STATE_CODES
from prober.ledger.store import TARGET_LEVEL
from prober.ledger.view import RING, LedgerView, MinuteRing, MonthTally
from prober.sla import Outcome, ServiceCalendar, State
from tests.byte_ring import ByteRing

_EMPTY = 255
_A = STATE_CODES[State.AVAILABLE]
_F = STATE_CODES[State.APPARENT_FAILURE]
PROBES = ("login", "send_c2c")
START = 29_500_000  # a minute in 2026


RINGS = {"old": ByteRing, "new": MinuteRing}
ARRAYS = {"old": ("states",), "new": ("days", "recent")}


def month_of_states(seed: int = 1) -> list[State]:
    """30 days of target-level verdicts: mostly available, a few failed minutes, a night of
    maintenance, a few minutes without data."""
    rng = random.Random(seed)
    weights = {State.AVAILABLE: 0.985, State.APPARENT_FAILURE: 0.005, State.NO_DATA: 0.004}
    states = rng.choices(list(weights), list(weights.values()), k=RING)
    states[20_000:20_240] = [State.MAINTENANCE] * 240
    return states


MONTHS = {"mixed": month_of_states, "healthy": lambda: [State.AVAILABLE] * RING}


def copy_ring(kind: str, template: MinuteRing | ByteRing) -> MinuteRing | ByteRing:
    ring = RINGS[kind]()
    if kind == "old":
        ring.states[:] = template.states  # in place: the ring's own buffer
    else:  # its own copy of each page the template owns; shared pages stay shared
        for name in ARRAYS[kind]:
            pages = getattr(template, name)
            setattr(ring, name, [p if type(p) is bytes else bytearray(p) for p in pages])
    ring.head = template.head
    ring.available = dict(template.available)
    ring.failed = dict(template.failed)
    return ring


def build_view(kind: str, n: int, month: str) -> LedgerView:
    calendar = ServiceCalendar(date(2026, 1, 1), "UTC")
    view = LedgerView()
    view.track("template", calendar)
    template = view.targets.pop("template")
    template.ring = RINGS[kind]()  # type: ignore[assignment]
    for i, state in enumerate(MONTHS[month]()):
        template.add(START + i, state)
    assert template.month is not None
    for t in range(n):
        name = f"target-{t:05d}"
        view.track(name, calendar)
        tv = view.targets[name]
        tv.ring = copy_ring(kind, template.ring)  # type: ignore[assignment]
        tv.last_closed = template.last_closed
        tv.month = MonthTally(template.month.month, Counter(template.month.counts))
        for probe in (TARGET_LEVEL, *PROBES):
            view.verdicts[(name, probe)] = Counter({State.AVAILABLE: 40_000, State.NO_DATA: 9})
        for probe in PROBES:
            view.attempts[(name, probe)] = Counter({Outcome.SUCCESS: 170_000, Outcome.FAILURE: 9})
    return view


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(kind: str, n: int, month: str, traced: bool) -> None:
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else vm_rss()
    view = build_view(kind, n, month)
    after = tracemalloc.get_traced_memory()[0] if traced else vm_rss()
    ring = next(iter(view.targets.values())).ring
    print(json.dumps({"bytes": after - before, "ring_arrays": ring_bytes(kind, ring)}))


def ring_bytes(kind: str, ring: MinuteRing | ByteRing) -> int:
    """Bytes of the arrays the ring holds of its own (not the pages it shares)."""
    if kind == "old":
        return len(ring.states)
    pages = [p for name in ARRAYS[kind] for p in getattr(ring, name)]
    return sum(len(p) for p in pages if type(p) is bytearray)


def measure_memory(kind: str, n: int, month: str, traced: bool) -> dict[str, int]:
    args = [sys.executable, __file__, "--child", kind, str(n), month]
    args += ["--traced"] if traced else []
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def filled_ring(kind: str, states: list[int]) -> MinuteRing | ByteRing:
    ring = RINGS[kind]()
    for i, code in enumerate(states):
        ring.put(START + i, code)
    return ring


def cpu_once(kind: str, rings: int, minutes: int, states: list[int]) -> dict[str, float]:
    """s of CPU per put: the daemon's case (`rings` rings filled with 30 days, each one
    minute forward, `minutes` times over), late rows (an import into the last day of a
    filled ring, every minute already there) and a restore (30 days into an empty ring)."""
    template = filled_ring(kind, states)
    pool = [copy_ring(kind, template) for _ in range(rings)]
    t0 = time.process_time()
    for k in range(minutes):
        minute, code = START + RING + k, states[k]
        for ring in pool:
            ring.put(minute, code)
    steady = (time.process_time() - t0) / (rings * minutes)
    t0 = time.process_time()
    for ring in pool[:3]:
        for late_minute in range(START + RING - 1440, START + RING):
            ring.put(late_minute, _F)
    late = (time.process_time() - t0) / (3 * 1440)
    t0 = time.process_time()
    filled_ring(kind, states)
    fill = (time.process_time() - t0) / len(states)
    return {"steady": steady, "late": late, "fill": fill}


def cpu_per_put(rings: int, minutes: int, repeat: int) -> dict[str, dict[str, float]]:
    """Medians in µs; old and new alternate, so the machine's load falls on both."""
    states = [STATE_CODES[s] for s in month_of_states()]
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for _ in range(repeat):
        for kind in runs:
            runs[kind].append(cpu_once(kind, rings, minutes, states))
    return {
        kind: {case: statistics.median(r[case] for r in got) * 1e6 for case in got[0]}
        for kind, got in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[5000, 10000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--child", nargs=3, metavar=("RING", "TARGETS", "MONTH"), help=argparse.SUPPRESS
    )
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.traced)
        return
    print(
        "| targets | month | ring | RSS delta MB | traced MB | bytes / target (traced) "
        "| ring's own arrays B |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.targets:
        for month, kind in (("mixed", "old"), ("mixed", "new"), ("healthy", "new")):
            rss = measure_memory(kind, n, month, traced=False)
            traced = measure_memory(kind, n, month, traced=True)
            print(
                f"| {n:,} | {month} | {kind} | {rss['bytes'] / 2**20:.1f} "
                f"| {traced['bytes'] / 2**20:.1f} | {traced['bytes'] // n:,} "
                f"| {rss['ring_arrays']:,} |",
                flush=True,
            )
    print()
    cpu = cpu_per_put(1000, 60, args.repeat)
    print("| put | old µs | new µs | new / old |")
    print("| --- | --- | --- | --- |")
    for case in ("steady", "late", "fill"):
        old, new = cpu["old"][case], cpu["new"][case]
        print(f"| {case} | {old:.2f} | {new:.2f} | {new / old:.2f}× |")


if __name__ == "__main__":
    main()
