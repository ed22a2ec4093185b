"""A process that writes closed minutes in a loop; the crash test kills it mid-write.

Usage: python -m tests.ledger_writer LEDGER START_MINUTE
"""

from __future__ import annotations

import random
import sys

from prober.ledger.store import Ledger
from prober.records import Attempt, ClosedMinute
from prober.sla import Outcome, OutcomeCounts, decide, decide_target

PROBES = ("login", "send_c2c")


def closed_minute(target: str, minute: int, rng: random.Random) -> ClosedMinute:
    attempts = []
    for probe in PROBES:
        for i in range(rng.randint(0, 4)):
            outcome = rng.choice(list(Outcome))
            attempts.append(
                Attempt(
                    target,
                    probe,
                    minute * 60 + i * 15 + rng.random(),
                    rng.random(),
                    outcome,
                    "timeout" if outcome is Outcome.FAILURE else "",
                    None,
                    None,
                    "x" * 50,
                )
            )
    per_probe = {p: OutcomeCounts.of([a.outcome for a in attempts if a.probe == p]) for p in PROBES}
    return ClosedMinute(
        target=target,
        minute=minute,
        verdict=decide_target(per_probe),
        counts=OutcomeCounts.of([a.outcome for a in attempts]),
        probes={p: (decide(c), c) for p, c in per_probe.items()},
        attempts=attempts,
    )


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    rng = random.Random(start)
    ledger = Ledger(path)
    minute = start
    print("ready", flush=True)
    while True:
        # Several targets per transaction, as the daemon's closer writes them.
        ledger.write_minutes([closed_minute(f"t{i}", minute, rng) for i in range(5)])
        minute += 1


if __name__ == "__main__":
    main()
