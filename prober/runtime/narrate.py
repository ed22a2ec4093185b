"""What a person watching the daemon's log needs to see: one line per closed minute that is
not `available`, and one when a target's state changes (ok → failing → ok, or unobserved).

A healthy target is silent; an outage shows up as it happens, with the probes that failed and
the error kinds their attempts saw, so nobody has to grep /metrics to notice it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from ..logs import event
from ..records import ClosedMinute
from ..sla import Outcome, State, minute_iso


class Condition(StrEnum):
    """A target's condition as the last closed minute shows it."""

    OK = "ok"  # available
    FAILING = "failing"  # apparent_failure
    UNOBSERVED = "unobserved"  # no_data of any reason
    MAINTENANCE = "maintenance"


_CONDITION = {
    State.AVAILABLE: Condition.OK,
    State.APPARENT_FAILURE: Condition.FAILING,
    State.NO_DATA: Condition.UNOBSERVED,
    State.MAINTENANCE: Condition.MAINTENANCE,
}

# Keeps one line per event short even when many attempts failed differently.
MOST_KINDS = 4


def _failed_probes(item: ClosedMinute) -> str:
    return ",".join(sorted(p for p, (v, _) in item.probes.items() if v.state != State.AVAILABLE))


def _error_kinds(item: ClosedMinute) -> str:
    kinds = Counter(
        f"{a.outcome}/{a.error_kind}" if a.error_kind else str(a.outcome)
        for a in item.attempts
        if a.outcome != Outcome.SUCCESS
    )
    return ",".join(f"{kind}×{n}" for kind, n in kinds.most_common(MOST_KINDS))


class Narrator:
    """Remembers each target's last condition and since when, to say when it changes."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[Condition, int]] = {}

    def closed(self, minutes: Iterable[ClosedMinute]) -> None:
        for item in minutes:
            condition = _CONDITION[item.verdict.state]
            if condition is not Condition.OK:
                event(
                    logging.WARNING if condition is Condition.FAILING else logging.INFO,
                    "minute closed",
                    target=item.target,
                    minute=minute_iso(item.minute),
                    state=str(item.verdict.state),
                    reason=str(item.verdict.reason) or "-",
                    probes_not_available=_failed_probes(item) or "-",
                    outcomes=_error_kinds(item) or "-",
                )
            previous = self._last.get(item.target)
            if previous is not None and previous[0] is condition:
                continue
            self._last[item.target] = (condition, item.minute)
            if previous is None and condition is Condition.OK:
                continue  # the first minute of a healthy target is not news
            fields: dict[str, object] = {
                "target": item.target,
                "minute": minute_iso(item.minute),
                "was": str(previous[0]) if previous else "-",
            }
            if previous is not None:
                fields["for_minutes"] = item.minute - previous[1]
            event(
                logging.WARNING if condition is Condition.FAILING else logging.INFO,
                f"target is now {condition}",
                **fields,
            )
