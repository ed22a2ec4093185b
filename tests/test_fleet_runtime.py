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
from prober.ledger import chain
from prober.ledger import fleet as fleet_rows
from prober.ledger.store import Ledger, PendingEvidence
from prober.logs import LOGGER_NAME
from prober.records import Attempt, ClosedMinute
from prober.runtime import fleet as fleet_runtime
from prober.runtime.prober import Prober
from prober.runtime.writer import Show
from prober.sla import Outcome, OutcomeCounts, Reason, State, Verdict, minute_iso

from .chat_app import free_port
from .ledger_backends import Backend
from .runtime_util import BASE, FakeClock


def config(backend: Backend, vantage: str, quorum: int = 1, ledger: str = "ledger"):
    closed = free_port()
    text = textwrap.dedent(f"""\
        vantage: {vantage}
        fleet: {{failure_quorum: {quorum}, close_deadline: 20s}}
        {backend.config_ledger(ledger)}
        targets:
          - name: t
            kind: http
            http: {{probes: {{login: [{{url: "http://127.0.0.1:{closed}/"}}]}}}}
            probes: {{login: {{attempts_per_minute: 1, timeout: 1s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
        """)
    path = backend.folder / f"{vantage}-{ledger}.yaml"
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


async def leading_alone(
    backend: Backend,
    outcome: Outcome = Outcome.FAILURE,
    ledger: str = "ledger",
    shortcut: bool = True,
    show: Show | None = None,
) -> tuple[Prober, FakeClock, int]:
    """Vantage `a` on its own and the fleet's closer, with one attempt (`outcome`) in the
    minute it started in and nothing of that minute left to run; returns that minute.
    `shortcut=False`: without the fleet-of-one write (vantage write, then the tick);
    `show`: the exposition's, as the daemon hands it in."""
    clock = FakeClock(BASE + 5)
    alone = Prober(
        config(backend, "a", ledger=ledger),
        backend.open(ledger),
        clock=clock,
        fleet=True,
        show=show,
    )
    if not shortcut:
        alone.writer.close_first = None
    await start(alone)
    assert alone.fleet is not None
    await alone.fleet.tick()  # it leads, from the minute it is in
    assert alone.fleet.leading and alone.stats.fleet_closer == 1
    await attempt(alone, outcome, BASE + 10)
    alone.clockwork.timers.clear()
    alone.clockwork.armed.clear()
    return alone, clock, int(BASE // 60)


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


def _what_a_fleet_of_one_keeps(prober: Prober, minute: int) -> dict[str, object]:
    """Everything the fleet's close leaves behind: the fleet's and the vantage's rows, the
    running totals, and what the view shows."""
    ledger = prober.ledger
    return {
        "rows": list(ledger.minute_rows("t")),
        "vantage": fleet_rows.verdicts_of_minute(ledger, minute),
        "verdict_totals": ledger.verdict_totals(),
        "attempt_totals": ledger.attempt_totals(),
        "shown": (dict(prober.view.verdicts), dict(prober.view.attempts)),
        "last_closed": prober.view.targets["t"].last_closed,
        "verified": chain.verify(ledger).ok,
    }


@pytest.mark.parametrize("outcome", [Outcome.FAILURE, Outcome.SUCCESS])
def test_a_fleet_of_one_writes_the_fleet_minute_before_its_vantage_rows(
    backend: Backend, caplog: pytest.LogCaptureFixture, outcome: Outcome
) -> None:
    """The closer that is the minute's only vantage decides the fleet's minute from the
    verdicts in hand and writes it first, its vantage's rows after (no read of rows just
    written, no tick to wait for), and leaves exactly what the two steps leave: vantage
    write, then the closer's tick over the ledger's rows. The writes' times are logged at
    debug."""
    caplog.set_level(logging.DEBUG, LOGGER_NAME)
    minute = int(BASE // 60)
    expected = State.APPARENT_FAILURE if outcome is Outcome.FAILURE else State.AVAILABLE

    async def close_one_minute(ledger: str, shortcut: bool) -> dict[str, object]:
        alone, clock, _ = await leading_alone(backend, outcome, ledger, shortcut)
        assert alone.fleet is not None
        clock.now = (minute + 1) * 60 + 0.5
        await alone.fleet.tick()  # its own vantage has not closed the minute yet
        assert fleet_row(alone.ledger, minute) is None
        caplog.clear()
        await alone.clockwork.close_due()  # the vantage write (and the closer's nudge)
        if shortcut:  # no tick has run: the writer's hook closed the fleet's minute
            assert fleet_row(alone.ledger, minute) == (expected, Reason.NONE)
        await alone.fleet.finish()  # (the tick the nudge began, awaited)
        assert fleet_row(alone.ledger, minute) == (expected, Reason.NONE)
        assert alone.fleet.next_close == minute + 1
        kept = _what_a_fleet_of_one_keeps(alone, minute)
        logged = {r.getMessage(): r.fields for r in caplog.records if r.levelno == logging.DEBUG}
        assert logged["minutes written"]["rows"] == 1 and logged["minutes written"]["seconds"] >= 0
        if shortcut:
            assert "fleet minute closed" not in logged
            assert logged["fleet minute closed before its vantage's"]["minute"] == minute_iso(
                minute
            )
            assert logged["fleet minute closed before its vantage's"]["seconds"] >= 0
        else:
            assert "fleet minute closed before its vantage's" not in logged
            assert logged["fleet minute closed"]["minute"] == minute_iso(minute)
            assert all(logged["fleet minute closed"][f"{step}_seconds"] >= 0 for step in STEPS)
        await alone.stop()
        return kept

    async def main() -> None:
        in_one = await close_one_minute("one", shortcut=True)
        in_two = await close_one_minute("two", shortcut=False)
        assert in_one == in_two
        assert in_one["verified"] is True
        assert in_one["shown"][0][("t", "")][expected] == 1

    asyncio.run(main())


def test_a_fleet_of_one_whose_vantage_rows_fail_after_the_fleet_minute_stores_nothing_twice(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evidence went in with the fleet's minute; the vantage's rows then fail (a full
    disk, a dropped connection): they are written at the next try, and the attempt is
    stored and counted once."""
    from prober.runtime import writer as writer_module

    real = writer_module.write_vantage_minutes
    refused = []

    def fails_once(ledger, batch, evidence):
        if not refused:
            refused.append(len(evidence.attempts))
            raise OSError("no space left on device")
        return real(ledger, batch, evidence)

    monkeypatch.setattr(writer_module, "write_vantage_minutes", fails_once)

    async def main() -> None:
        alone, clock, minute = await leading_alone(backend)
        clock.now = (minute + 1) * 60 + 0.5
        await alone.clockwork.close_due()
        assert refused == [0]  # the vantage write had no evidence left to store
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        assert not alone.writer.ok and alone.writer.unwritten == 1
        assert fleet_rows.verdicts_of_minute(alone.ledger, minute) == {}
        assert chain.verify(alone.ledger).ok  # the fleet's counts are its stored attempts'
        await alone.writer.flush()  # the next try
        assert alone.writer.ok and alone.writer.unwritten == 0
        mine = fleet_rows.verdicts_of_minute(alone.ledger, minute)[("t", "")]
        assert [(v.vantage, v.verdict.state) for v in mine] == [("a", State.APPARENT_FAILURE)]
        assert len(alone.ledger.attempts_in("t", minute, minute + 1)) == 1
        assert alone.ledger.attempt_totals()[("t", "login")] == {Outcome.FAILURE: 1}
        assert chain.verify(alone.ledger).ok
        await alone.stop()

    asyncio.run(main())


def test_a_fleet_of_one_takes_the_shortcut_when_its_tick_runs_on_the_same_second(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """The fleet's job and the close run on the same whole second: the close waits for the
    tick under way, then writes the fleet's minute first all the same."""
    caplog.set_level(logging.DEBUG, LOGGER_NAME)

    async def main() -> None:
        alone, clock, minute = await leading_alone(backend)
        assert alone.fleet is not None
        clock.now = (minute + 1) * 60 + 0.02
        caplog.clear()
        await asyncio.gather(alone.fleet.tick(), alone.clockwork.close_due())
        messages = [r.getMessage() for r in caplog.records]
        assert "fleet minute closed before its vantage's" in messages
        assert "fleet minute closed" not in messages
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        await alone.stop()

    asyncio.run(main())


def failed_minutes_shown(scraped: list[bytes]) -> float:
    """t's fleet minutes that /metrics counts as apparent failures."""
    [family] = [f for f in parse_text(b"".join(scraped).decode()) if f.name == "im_minute_verdicts"]
    return sum(
        s.value
        for s in family.samples
        if s.labels == {"target": "t", "state": "apparent_failure"} and s.name.endswith("_total")
    )


def test_a_fleet_of_one_shows_the_fleet_minute_before_it_writes_its_vantage_rows(
    backend: Backend,
) -> None:
    """The render of the fleet's minute for /metrics and the vantage write are both Python
    on one GIL: the vantage rows wait until the minute is shown (no keep_ready running here:
    the closer's `show` rendered it). The render is made to take 0.2 s longer, far more
    than the vantage write of one target."""
    shown: list[Exposition] = []
    when_shown: list[dict] = []

    def show(now: float) -> asyncio.Task[None]:
        async def slowly() -> None:
            await shown[0].show(now)
            await asyncio.sleep(0.2)
            when_shown.append(fleet_rows.verdicts_of_minute(alone.ledger, minute))

        return asyncio.get_running_loop().create_task(slowly())

    async def main() -> None:
        nonlocal alone, minute
        alone, clock, minute = await leading_alone(backend, show=show)
        shown.append(Exposition(alone.view, alone.stats, "test"))
        shown[0].configure(alone.config.targets)
        now = (minute + 1) * 60 + 0.5
        assert failed_minutes_shown(await shown[0].render_pieces(now)) == 0
        clock.now = now
        await alone.clockwork.close_due()
        assert when_shown and when_shown[0] == {}  # shown, the vantage's rows not written yet
        mine = fleet_rows.verdicts_of_minute(alone.ledger, minute)[("t", "")]
        assert [v.vantage for v in mine] == ["a"]  # ... and written after
        assert failed_minutes_shown(await shown[0].render_pieces(now)) == 1
        await alone.stop()

    alone: Prober
    minute: int
    asyncio.run(main())


def test_a_fleet_minute_closed_by_the_tick_is_shown_at_once(backend: Backend) -> None:
    """Without the shortcut (other vantages about), the tick's close is rendered for
    /metrics as soon as it is in the view, as the vantage's own close is without a fleet."""
    shown: list[Exposition] = []

    async def main() -> None:
        alone, clock, minute = await leading_alone(
            backend, shortcut=False, show=lambda now: shown[0].show(now)
        )
        shown.append(Exposition(alone.view, alone.stats, "test"))
        shown[0].configure(alone.config.targets)
        now = (minute + 1) * 60 + 0.5
        assert failed_minutes_shown(await shown[0].render_pieces(now)) == 0
        clock.now = now
        await alone.clockwork.close_due()
        assert alone.fleet is not None
        await alone.fleet.finish()  # the tick the vantage write's nudge began
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        for _ in range(1000):
            if failed_minutes_shown(await shown[0].render_pieces(now)) == 1:
                break
            await asyncio.sleep(0)
        assert failed_minutes_shown(await shown[0].render_pieces(now)) == 1
        await alone.stop()

    asyncio.run(main())


def test_a_fleet_of_one_s_vantage_rows_wait_for_the_render_a_bounded_time(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A render that never ends (a stuck loop callback, a bug) holds the vantage's rows
    only SHOWN_WITHIN."""
    from prober.runtime import writer as writer_module

    monkeypatch.setattr(writer_module, "SHOWN_WITHIN", 0.05)

    def never(_now: float):
        return asyncio.get_running_loop().create_future()

    async def main() -> None:
        alone, clock, minute = await leading_alone(backend, show=never)
        clock.now = (minute + 1) * 60 + 0.5
        began = time.monotonic()
        await alone.clockwork.close_due()
        assert 0.05 <= time.monotonic() - began < 2.0
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        mine = fleet_rows.verdicts_of_minute(alone.ledger, minute)[("t", "")]
        assert [v.vantage for v in mine] == ["a"]
        await alone.stop()

    asyncio.run(main())


@pytest.mark.parametrize("shortcut", [True, False], ids=["fleet_of_one", "by_the_tick"])
def test_a_rendering_that_fails_is_logged_and_the_minute_is_still_written(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shortcut: bool,
) -> None:
    """A bug in rendering the ledger families for /metrics costs the scrape's figures, never
    the ledger: the fleet's minute and the vantage's rows are written, nothing is left
    pending, each failure is logged once, the renderings ahead of scrapes do not retry it
    every REFRESH_EVERY, and no task's exception goes unretrieved."""
    from prober.expose import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "REFRESH_EVERY", 0.01)
    renderings: list[float] = []

    def broken(_self: Exposition, now: float, _out: list) -> object:
        renderings.append(now)
        raise RuntimeError("a rendering bug")
        yield  # a generator, as the real block is

    monkeypatch.setattr(Exposition, "_ledger_block", broken)
    shown: list[Exposition] = []
    unretrieved: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, c: unretrieved.append(c))
        alone, clock, minute = await leading_alone(
            backend, shortcut=shortcut, show=lambda now: shown[0].show(now)
        )
        shown.append(Exposition(alone.view, alone.stats, "test"))
        shown[0].configure(alone.config.targets)
        ahead = asyncio.get_running_loop().create_task(shown[0].keep_ready(clock.wall))
        clock.now = (minute + 1) * 60 + 0.5
        with caplog.at_level(logging.ERROR):
            await alone.clockwork.close_due()
            assert alone.fleet is not None
            await alone.fleet.finish()
            await asyncio.sleep(0.3)  # some thirty looks of keep_ready at the failed view
            assert 1 <= len(renderings) <= 3  # the close's, and keep_ready's once, not thirty
            tried = len(renderings)
            alone.view.generation += 1  # the view changes (as a close would): tried again
            await asyncio.sleep(0.2)
            assert len(renderings) == tried + 1
        assert not ahead.done()  # it goes on
        ahead.cancel()
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        mine = fleet_rows.verdicts_of_minute(alone.ledger, minute)[("t", "")]
        assert [v.vantage for v in mine] == ["a"]
        assert alone.writer.ok and alone.writer.unwritten == 0
        await alone.stop()
        shown[0].close()

    asyncio.run(main())
    import gc

    gc.collect()  # an unretrieved task exception is reported when the task is collected
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.exc_info for r in errors)
    assert len({id(r.exc_info[1]) for r in errors if r.exc_info}) == len(errors)  # each once
    assert unretrieved == []


def test_a_failed_fleet_write_of_a_fleet_of_one_gives_up_the_closers_role(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As after a failed tick: a lost connection took the lease with it, so the prober
    tries for it afresh; the minutes wait in the writer."""

    def refused(*_args, **_kwargs):
        raise OSError("connection lost")

    async def main() -> None:
        alone, clock, minute = await leading_alone(backend)
        assert alone.fleet is not None
        clock.now = (minute + 1) * 60 + 0.5
        monkeypatch.setattr(fleet_rows, "write_fleet_alone", refused)
        await alone.clockwork.close_due()
        assert not alone.fleet.leading and alone.stats.fleet_closer == 0
        assert not alone.writer.ok and alone.writer.unwritten == 1
        assert fleet_row(alone.ledger, minute) is None
        monkeypatch.undo()
        await alone.writer.flush()  # not leading: the vantage write alone
        await alone.fleet.tick()  # leads again, and closes the minute from the ledger
        assert fleet_row(alone.ledger, minute) == (State.APPARENT_FAILURE, Reason.NONE)
        assert len(alone.ledger.attempts_in("t", minute, minute + 1)) == 1
        await alone.stop()

    asyncio.run(main())


@pytest.mark.parametrize("other", ["alive", "decided"])
def test_a_closer_with_another_vantage_of_the_minute_does_not_close_it_alone(
    backend: Backend, other: str
) -> None:
    """b is alive and has not closed the minute (the closer waits for it), or b closed it
    and has gone quiet since (the closer counts its verdict): a's vantage write leaves the
    fleet's minute to the tick, which makes it of both verdicts."""

    async def main() -> None:
        probers, clock = fleet(backend)
        a, b = probers["a"], probers["b"]
        await start(a, b)
        assert a.fleet is not None
        minute = int(BASE // 60)
        await a.fleet.tick()  # a leads
        await attempt(a, Outcome.FAILURE, BASE + 10)  # a's path is bad
        await attempt(b, Outcome.SUCCESS, BASE + 12)  # b reaches the service
        for prober in (a, b):
            prober.clockwork.timers.clear()
            prober.clockwork.armed.clear()
        clock.now = (minute + 1) * 60 + 0.5
        if other == "alive":
            await b.writer.store_evidence(beat=True)
        else:
            await b.clockwork.close_due()
            clock.now += fleet_runtime.ALIVE_WITHIN + 1  # b's last heartbeat is old now
        await a.clockwork.close_due()
        assert fleet_row(a.ledger, minute) is None  # alone, a would say apparent_failure
        assert a.fleet.next_close == minute
        if other == "alive":
            await b.clockwork.close_due()
        await a.fleet.tick()
        assert fleet_row(a.ledger, minute) == (State.AVAILABLE, Reason.NONE)
        assert {v.vantage for v in fleet_rows.verdicts_of_minute(a.ledger, minute)[("t", "")]} == {
            "a",
            "b",
        }
        for p in (a, b):
            await p.stop()

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


# leading: a closes the minute in its vantage write (a fleet of one), else at its tick
@pytest.mark.parametrize("leading", [False, True])
def test_failures_from_fewer_vantages_than_the_quorum_are_below_quorum(
    backend: Backend, leading: bool
) -> None:
    async def main() -> None:
        probers, clock = fleet(backend, quorum=2)
        a = probers["a"]
        await start(a)  # b never runs: only one vantage is alive
        assert a.fleet is not None
        if leading:
            await a.fleet.tick()
        minute = int(BASE // 60)
        await attempt(a, Outcome.FAILURE, BASE + 10)
        clock.now = (minute + 1) * 60 + 5
        await a.clockwork.close_due()
        if leading:  # closed with the vantage's minute, before any tick
            assert fleet_row(a.ledger, minute) == (State.NO_DATA, Reason.BELOW_QUORUM)
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
