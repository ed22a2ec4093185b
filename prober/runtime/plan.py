"""Where in each minute every attempt goes: spread evenly, staggered across targets.

Probe p of target t with n attempts a minute runs at offsets s + k·(60/n) seconds, k < n,
where s is fixed per (t, p) by a hash, so targets do not all fire at second 0 and a target
keeps its rhythm across restarts. s keeps a margin from both ends of its slot: an attempt
belongs to the minute it starts in, and one planned at second 59.95 that starts a few
milliseconds late would land in the next minute and leave its own without an attempt.

s lies on a grid of GRID seconds, so targets of the same cadence share start instants: at
1,000 targets × 4 a minute about seven attempts start together ten times a second instead of
one at a time 67 times a second. Each wake-up of an idle event loop costs far more CPU than
the request it starts (a bare aiohttp request paced at 67 a second: 1,282 µs of CPU; in
bursts of seven at the same rate: 370 µs; bench/wakeup_bench.py); a tenth of a second of phase
changes nothing an SLA minute counts.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Planned:
    at: float  # wall clock, epoch seconds
    target: str
    probe: str
    timeout: float
    spacing: float

    @property
    def minute(self) -> int:
        return int(self.at // 60)


EDGE_MARGIN = 1.0  # seconds kept free at each end of a slot (less for very short slots)
GRID = 0.1  # seconds between the instants a stagger may take


def stagger(target: str, probe: str, spacing: float) -> float:
    fraction = zlib.crc32(f"{target}\0{probe}".encode()) / 2**32
    margin = min(EDGE_MARGIN, spacing / 4)
    steps = int((spacing - 2 * margin) / GRID + 1e-9)  # grid instants after the first
    return margin + round(int(fraction * (steps + 1)) * GRID, 3)  # fraction < 1


def offsets(target: str, probe: str, per_minute: int) -> list[float]:
    spacing = 60.0 / per_minute
    first = stagger(target, probe, spacing)
    return [first + k * spacing for k in range(per_minute)]


@dataclass(frozen=True, slots=True)
class ProbePlan:
    target: str
    probe: str
    offsets: tuple[float, ...]
    timeout: float
    spacing: float

    def attempts_in(self, minute: int, after: float = float("-inf")) -> list[Planned]:
        base = minute * 60
        return [
            Planned(base + o, self.target, self.probe, self.timeout, self.spacing)
            for o in self.offsets
            if base + o >= after
        ]


def probe_plan(target: str, probe: str, per_minute: int, timeout: float) -> ProbePlan:
    return ProbePlan(
        target, probe, tuple(offsets(target, probe, per_minute)), timeout, 60.0 / per_minute
    )
