"""The minute writer's failure rules, on a real SQLite ledger whose writes are switched off
and on: what is kept, what is pushed out and how it comes back, and that the ledger never
ends up with a hole."""

from __future__ import annotations

import asyncio
import sqlite3
import textwrap
from pathlib import Path

import pytest

from prober.config.models import TargetBase, parse_config
from prober.ledger.store import Ledger
from prober.ledger.view import LedgerView
from prober.logs import LOGGER_NAME
from prober.records import Attempt, ClosedMinute
from prober.runtime.book import MinuteBook
from prober.runtime.targets import TargetSet
from prober.runtime.writer import MinuteWriter
from prober.sla import Outcome, Reason, State
from prober.stats import RuntimeStats

from .runtime_util import FakeClock

M = 29_930_000  # an epoch minute (2026-11-27T17:20Z): the maintenance window below holds M+2..M+3
WINDOW = "2026-11-27T17:22:00Z"


class SwitchableLedger(Ledger):
    """The real ledger, whose minute writes fail (as a full disk makes them) while off."""

    failing = False

    def write_minutes(self, closed, pending=None):  # type: ignore[override]
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        return super().write_minutes(closed, pending)

    def store_evidence(self, evidence):  # type: ignore[override]
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        return super().store_evidence(evidence)

    def record_gap(self, *args, **kwargs):  # type: ignore[override]
        if self.failing:
            raise sqlite3.OperationalError("attempt to write a readonly database")
        return super().record_gap(*args, **kwargs)


def target(tmp_path: Path) -> TargetBase:
    from prober.sla import minute_iso

    assert minute_iso(M + 2) == WINDOW
    text = textwrap.dedent(f"""\
        targets:
          - name: t
            kind: http
            http: {{probes: {{login: [{{url: "http://127.0.0.1:9/"}}]}}}}
            probes: {{login: {{timeout: 1s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
            maintenance: [{{start: "{WINDOW}", end: "2026-11-27T17:24:00Z"}}]
        """)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return parse_config(text, path).config.targets[0]


def closed(t: TargetBase, minute: int, outcome: Outcome = Outcome.SUCCESS) -> list[ClosedMinute]:
    book = MinuteBook()
    book.started(minute)
    book.finished(Attempt("t", "login", minute * 60 + 5, 0.1, outcome), minute)
    return book.close(minute, TargetSet.build([t]).rules_for(minute))


def make(tmp_path: Path, buffer: int = 60) -> tuple[MinuteWriter, SwitchableLedger, TargetBase]:
    t = target(tmp_path)
    ledger = SwitchableLedger(tmp_path / "ledger.sqlite3")
    view = LedgerView()
    view.track("t", t.sla.calendar())
    targets = TargetSet.build([t])
    writer = MinuteWriter(
        ledger,
        view,
        RuntimeStats(),
        FakeClock(M * 60),
        buffer_minutes=buffer,
        verdict_of_missed=targets.verdict_of_missed,
    )
    return writer, ledger, t


def states(ledger: Ledger) -> dict[int, tuple[State, Reason]]:
    return {r.minute: (r.state, r.reason) for r in ledger.minute_rows("t") if r.probe == ""}


def test_a_failed_write_keeps_the_minutes_and_writes_them_when_the_ledger_works(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        writer, ledger, t = make(tmp_path)
        ledger.failing = True
        await writer.write(closed(t, M))
        await writer.write(closed(t, M + 1, Outcome.FAILURE))
        assert not writer.ok and writer.stats.ledger_write_errors == 2
        assert writer.unwritten == 2 and states(ledger) == {}
        ledger.failing = False
        await writer.flush()
        assert writer.ok and writer.unwritten == 0
        assert states(ledger) == {
            M: (State.AVAILABLE, Reason.NONE),
            M + 1: (State.APPARENT_FAILURE, Reason.NONE),
        }
        assert writer.view.targets["t"].last_closed == M + 1

    asyncio.run(main())


def test_minutes_pushed_out_of_the_buffer_come_back_as_unobserved_or_maintenance(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        writer, ledger, t = make(tmp_path, buffer=2)
        ledger.failing = True
        for minute in range(M, M + 6):
            await writer.write(closed(t, minute))
        # the newest two are kept whole; the four before them are remembered as a range
        assert [c[0].minute for c in writer.pending] == [M + 4, M + 5]
        assert writer.dropped == {"t": (("login",), M, M + 4)}
        ledger.failing = False
        await writer.flush()
        assert writer.dropped == {} and writer.unwritten == 0
        assert states(ledger) == {
            M: (State.NO_DATA, Reason.PROBER_DOWN),
            M + 1: (State.NO_DATA, Reason.PROBER_DOWN),
            M + 2: (State.MAINTENANCE, Reason.NONE),  # inside the declared window
            M + 3: (State.MAINTENANCE, Reason.NONE),
            M + 4: (State.AVAILABLE, Reason.NONE),
            M + 5: (State.AVAILABLE, Reason.NONE),
        }

    asyncio.run(main())


def test_missed_minutes_the_ledger_refuses_at_start_are_kept_and_recorded_later(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        writer, ledger, t = make(tmp_path)
        await writer.write(closed(t, M - 1))  # the ledger's newest minute before the gap
        ledger.failing = True
        await writer.record_missed([t], M + 4)
        assert not writer.ok and writer.dropped == {"t": (("login",), M, M + 4)}
        ledger.failing = False
        await writer.write(closed(t, M + 4))
        got = states(ledger)
        assert sorted(got) == list(range(M - 1, M + 5))  # no hole
        assert got[M] == (State.NO_DATA, Reason.PROBER_DOWN)
        assert got[M + 2] == (State.MAINTENANCE, Reason.NONE)

    asyncio.run(main())


def test_a_minute_already_in_the_ledger_is_left_as_it_was(tmp_path: Path) -> None:
    async def main() -> None:
        writer, ledger, t = make(tmp_path)
        await writer.write(closed(t, M, Outcome.FAILURE))
        await writer.write(closed(t, M, Outcome.SUCCESS))
        assert states(ledger) == {M: (State.APPARENT_FAILURE, Reason.NONE)}

    asyncio.run(main())


def test_a_failing_ledger_is_logged_once_a_minute_not_once_a_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        writer, ledger, t = make(tmp_path)
        ledger.failing = True
        for minute in range(M, M + 5):
            await writer.write(closed(t, minute))
        writer.clock.now += 61  # type: ignore[attr-defined]
        await writer.flush()

    caplog.set_level("ERROR", LOGGER_NAME)
    asyncio.run(main())
    failures = [r for r in caplog.records if r.getMessage().startswith("ledger write failed")]
    assert len(failures) == 2
