"""A process that writes closed minutes in a loop ('ready' once the first is committed);
the crash test kills it mid-write.

Usage: python -m tests.ledger_writer LEDGER START_MINUTE
"""

from __future__ import annotations

import random
import sys

from prober.ledger.store import Ledger
from prober.records import Attempt, ClosedMinute
from prober.runtime.book import MinuteBook, TargetRules
from prober.sla import Outcome, Policy

PROBES = ("login", "send_c2c")


def decided(
    target: str, minute: int, probes: tuple[str, ...], attempts: list[Attempt]
) -> ClosedMinute:
    """The minute as the daemon's minute book decides it over these attempts (sla policy,
    no maintenance, no network check)."""
    book = MinuteBook()
    book.attempts[(target, minute)] = list(attempts)
    [closed] = book.decide(minute, [TargetRules(target, probes, Policy.SLA, ())])
    return closed


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
    return decided(target, minute, PROBES, attempts)


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    rng = random.Random(start)
    ledger = Ledger(path)
    minute = start
    while True:
        # Several targets per transaction, as the daemon's closer writes them.
        ledger.write_minutes([closed_minute(f"t{i}", minute, rng) for i in range(5)])
        if minute == start:
            # after the first commit, not before: on a loaded machine the kill could
            # otherwise come before any minute of this round was written
            print("ready", flush=True)
        minute += 1


if __name__ == "__main__":
    main()
