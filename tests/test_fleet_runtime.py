"""The fleet in-process, with a wall clock the test moves: two probers as vantages `a` and `b`
on one ledger (a SQLite file here; the PostgreSQL runs are in the end-to-end tests), each
closing its own minutes as a vantage, one closer turning them into the fleet's minute."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from prober.config.models import parse_config
from prober.expose.metrics import Exposition
from prober.ledger import fleet as fleet_rows
from prober.ledger.store import Ledger, PendingEvidence
from prober.logs import LOGGER_NAME
from prober.records import Attempt, ClosedMinute
from prober.runtime.prober import Prober
from prober.sla import Outcome, OutcomeCounts, Reason, State, Verdict, minute_iso

from .chat_app import free_port
from .ledger_backends import Backend
from .runtime_util import BASE, FakeClock


def config(backend: Backend, vantage: str, quorum: int = 1):
    closed = free_port()
    text = textwrap.dedent(f"""\
        vantage: {vantage}
        fleet: {{failure_quorum: {quorum}, close_deadline: 20s}}
        {backend.config_ledger("ledger")}
        targets:
          - name: t
            kind: http
            http: {{probes: {{login: [{{url: "http://127.0.0.1:{closed}/"}}]}}}}
            probes: {{login: {{attempts_per_minute: 1, timeout: 1s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
        """)
    path = backend.folder / f"{vantage}.yaml"
    path.write_text(text)
    return parse_config(text, path, environ={})


def fleet(backend: Backend, quorum: int = 1) -> tuple[dict[str, Prober], FakeClock]:
    clock = FakeClock(BASE + 5)
    probers = {
        name: Prober(config(backend, name, quorum), backend.open("ledger"), clock=clock, fleet=True)
        for name in ("a", "b")
    }
    return probers, clock


async def start(*probers: Prober) -> None:
    """Started, with the fleet closer's clock job taken out: the test ticks it itself."""
    for prober in probers:
        await prober.start()
        assert prober.scheduler is not None
        prober.scheduler.remove_job("fleet")


async def attempt(prober: Prober, outcome: Outcome, at: float) -> None:
    """An attempt this vantage finished (the target itself is not reached here)."""
    vantage = prober.config_file.vantage
    prober.writer.add_attempt(Attempt("t", "login", at, 0.1, outcome, vantage=vantage))
    prober.clockwork.book.attempts[("t", int(at // 60))].append(
        Attempt("t", "login", at, 0.1, outcome, vantage=vantage)
    )


STEPS = ("read", "decide", "write")  # the fleet close's, as logged


def _vantage_verdicts(shown: Exposition) -> dict[tuple[str, str, str], float]:
    text = shown.render(time.time()).decode()
    [family] = [f for f in parse_text(text) if f.name == "im_vantage_minute_verdicts"]
    return {
        (s.labels["target"], s.labels["vantage"], s.labels["state"]): s.value
        for s in family.samples
    }


def fleet_row(ledger: Ledger, minute: int) -> tuple[State, Reason] | None:
    for row in ledger.minute_rows("t", minute, minute + 1):
        if row.probe == "":
            return row.state, row.reason
    return None


# Before the close time (the end + timeout 1 s + grace 2 s) once every attempt of the minute
# has run, and after it.
@pytest.mark.parametrize("after_end", [0.5, 5.0])
def test_two_vantages_make_one_fleet_minute_once_both_closed_it(
    backend: Backend, after_end: float
) -> None:
    async def main() -> None:
        probers, clock = fleet(backend)
        a, b = probers["a"], probers["b"]
        await start(a, b)
        minute = int(BASE // 60)
        await attempt(a, Outcome.FAILURE, BASE + 10)  # a's path is bad
        await attempt(b, Outcome.SUCCESS, BASE + 12)  # b reaches the service
        for prober in (a, b):  # every attempt planned in the minute has run
            prober.clockwork.timers.clear()
            prober.clockwork.armed.clear()
        clock.now = (minute + 1) * 60 + after_end
        await b.writer.store_evidence(beat=True)  # b is alive
        await a.clockwork.close_due()
        assert a.fleet is not None and b.fleet is not None
        await a.fleet.tick()  # a leads (SQLite: every prober may; a tries first)
        ledger = a.ledger
        assert fleet_row(ledger, minute) is None  # b, alive, has not closed it yet
        shown = Exposition(b.view, b.stats, "test")  # what b's /metrics says of itself
        shown.configure(b.config.targets)
        assert _vantage_verdicts(shown)[("t", "b", "available")] == 0
        await b.clockwork.close_due()
        assert _vantage_verdicts(shown)[("t", "b", "available")] == 1  # not a stale render
        await a.fleet.tick()
        assert fleet_row(ledger, minute) == (State.AVAILABLE, Reason.NONE)
        per_vantage = fleet_rows.verdicts_of_minute(ledger, minute)[("t", "")]
        assert {v.vantage: v.verdict.state for v in per_vantage} == {
            "a": State.APPARENT_FAILURE,
            "b": State.AVAILABLE,
        }
        assert a.stats.fleet_closer == 1
        assert a.stats.vantage_verdicts[("t", "apparent_failure")] == 1
        assert b.stats.vantage_verdicts[("t", "available")] == 1
        assert a.view.verdicts[("t", "")][State.AVAILABLE] == 1  # the closer shows the fleet
        # ... and both vantages' attempts, as the ledger's totals count them
        counted = {k: {o: n for o, n in c.items() if n} for k, c in a.view.attempts.items()}
        assert counted == {k: dict(v) for k, v in ledger.attempt_totals().items()}
        assert counted[("t", "login")] == {Outcome.FAILURE: 1, Outcome.SUCCESS: 1}
        # a restarted vantage's counter goes on from the ledger's totals, not from 0
        again = Prober(a.config_file, backend.open("ledger"), clock=clock, fleet=True)
        await start(again)
        assert again.stats.vantage_verdicts[("t", "apparent_failure")] == 1
        await again.stop()
        for p in (a, b):
            await p.stop()

    asyncio.run(main())


def test_the_closer_closes_the_fleet_minute_as_soon_as_its_own_vantage_wrote_it(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """No waiting for the next second's tick: a fleet of one shows its verdict sooner. The
    two writes' times are logged at debug."""
    caplog.set_level(logging.DEBUG, LOGGER_NAME)

    async def main() -> None:
        clock = FakeClock(BASE + 5)
        alone = Prober(config(backend, "a"), backend.open("ledger"), clock=clock, fleet=True)
        await start(alone)
        assert alone.fleet is not None
        minute = int(BASE // 60)
        await alone.fleet.tick()  # it leads, from the minute it is in
        await attempt(alone, Outcome.FAILURE, BASE + 10)
        alone.clockwork.timers.clear()
        alone.clockwork.armed.clear()
        clock.now = (minute + 1) * 60 + 0.5
        await alone.fleet.tick()  # its own vantage has not closed the minute yet
        assert alone.stats.fleet_closer == 1 and fleet_row(alone.ledger, minute) is None
        await alone.clockwork.close_due()  # the vantage write, and with it the nudge
        await alone.fleet.finish()  # (the tick it began, awaited; no other tick ran)
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        assert alone.view.verdicts[("t", "")][State.APPARENT_FAILURE] == 1
        logged = {r.getMessage(): r.fields for r in caplog.records if r.levelno == logging.DEBUG}
        assert logged["minutes written"]["rows"] == 1 and logged["minutes written"]["seconds"] >= 0
        assert logged["fleet minute closed"]["minute"] == minute_iso(minute)
        assert all(logged["fleet minute closed"][f"{step}_seconds"] >= 0 for step in STEPS)
        await alone.stop()

    asyncio.run(main())


def test_a_vantage_that_never_closes_is_waited_for_until_the_deadline(backend: Backend) -> None:
    async def main() -> None:
        probers, clock = fleet(backend)
        a, b = probers["a"], probers["b"]
        await start(a, b)
        minute = int(BASE // 60)
        await attempt(a, Outcome.FAILURE, BASE + 10)
        clock.now = (minute + 1) * 60 + 5
        await b.writer.store_evidence(beat=True)  # b is alive, and has not closed the minute
        await a.clockwork.close_due()
        assert a.fleet is not None
        await a.fleet.tick()
        assert fleet_row(a.ledger, minute) is None  # b is alive and has not closed
        clock.now += 20  # the deadline (20 s after the close time) has passed
        await a.fleet.tick()
        assert fleet_row(a.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        for p in (a, b):
            await p.stop()

    asyncio.run(main())


def test_failures_from_fewer_vantages_than_the_quorum_are_below_quorum(backend: Backend) -> None:
    async def main() -> None:
        probers, clock = fleet(backend, quorum=2)
        a = probers["a"]
        await start(a)  # b never runs: only one vantage is alive
        minute = int(BASE // 60)
        await attempt(a, Outcome.FAILURE, BASE + 10)
        clock.now = (minute + 1) * 60 + 5
        await a.clockwork.close_due()
        assert a.fleet is not None
        await a.fleet.tick()
        assert fleet_row(a.ledger, minute) == (State.NO_DATA, Reason.BELOW_QUORUM)
        await a.stop()

    asyncio.run(main())


def test_a_new_closer_closes_what_the_old_one_left(backend: Backend) -> None:
    async def main() -> None:
        probers, clock = fleet(backend)
        a, b = probers["a"], probers["b"]
        await start(a, b)
        minute = int(BASE // 60)
        for p, outcome in ((a, Outcome.FAILURE), (b, Outcome.FAILURE)):
            await attempt(p, outcome, BASE + 10)
        clock.now = (minute + 3) * 60 + 5  # three minutes closed by both vantages ...
        for p in (a, b):
            await p.clockwork.close_due()
        assert b.fleet is not None
        await b.fleet.tick()  # ... and b, the closer now (a never led), catches up
        assert fleet_row(b.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        assert fleet_row(b.ledger, minute + 1) == (State.NO_DATA, Reason.PROBER_DOWN)
        assert b.fleet.next_close == minute + 3
        for p in (a, b):
            await p.stop()

    asyncio.run(main())


def test_a_fleet_prober_does_not_record_its_missed_minutes_as_the_fleets(backend: Backend) -> None:
    async def main() -> None:
        probers, _ = fleet(backend)
        a = probers["a"]
        minute = int(BASE // 60)
        a.ledger.store_evidence(
            PendingEvidence(
                "b",
                [Attempt("t", "login", BASE - 600, 0.1, Outcome.SUCCESS, vantage="b")],
                seen_at=BASE - 600,
            )
        )
        await a.start()
        assert (
            fleet_row(a.ledger, minute - 5) is None
        )  # a was down: it records nothing for the fleet
        await a.stop()

    asyncio.run(main())


def test_a_restarted_vantage_decides_its_unclosed_minute_though_the_fleet_closed_it(
    backend: Backend,
) -> None:
    async def main() -> None:
        probers, clock = fleet(backend)
        a = probers["a"]
        minute = int(BASE // 60)
        # a stored a success of `minute` and was killed; the closer wrote the fleet's row
        success = Attempt("t", "login", BASE + 10, 0.1, Outcome.SUCCESS, vantage="a")
        a.ledger.store_evidence(PendingEvidence("a", [success], seen_at=BASE + 10))
        ok = Verdict(State.AVAILABLE)
        a.ledger.write_minutes(
            [ClosedMinute("t", minute, ok, OutcomeCounts(1), {"login": (ok, OutcomeCounts(1))})]
        )
        clock.now = (minute + 2) * 60 + 5  # a is back two minutes later
        await start(a)
        await a.clockwork.close_due()
        mine = fleet_rows.verdicts_of_minute(a.ledger, minute)[("t", "")]
        assert [(v.vantage, v.verdict.state) for v in mine] == [("a", State.AVAILABLE)]
        await a.stop()

    asyncio.run(main())
