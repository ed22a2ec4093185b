"""The runtime's closing logic with a wall clock the test moves: clock steps forward and
back, the network check, storage failures with the bounded in-memory buffer."""

from __future__ import annotations

import asyncio
import heapq
import textwrap
from datetime import timedelta
from pathlib import Path

from prober.config.models import parse_config
from prober.ledger.store import Ledger, NetworkRound, PendingEvidence
from prober.records import Attempt
from prober.runtime.plan import Planned
from prober.runtime.prober import Prober
from prober.sla import Outcome, Reason, State

from .chat_app import free_port
from .runtime_util import BASE, FakeClock


def make(
    tmp_path: Path, network: bool = False, buffer: int = 60
) -> tuple[Prober, FakeClock, Ledger]:
    closed = free_port()
    text = textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        scheduler: {{write_buffer_minutes: {buffer}}}
        {f"network_check: {{urls: ['http://127.0.0.1:{closed}/'], timeout: 1s}}" if network else ""}
        targets:
          - name: t
            kind: http
            http: {{probes: {{login: [{{url: "http://127.0.0.1:{closed}/"}}]}}}}
            probes: {{login: {{attempts_per_minute: 1, timeout: 1s}}}}
            sla: {{service_month_anchor: 2026-01-01}}
        """)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    config = parse_config(text, path)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    clock = FakeClock(BASE + 5)
    return Prober(config, ledger, clock=clock), clock, ledger


async def attempt_now(prober: Prober, clock: FakeClock, minute: int) -> None:
    """One attempt of t's login at the fake clock's time, through the clockwork (the
    target's port is closed: it fails)."""
    planned = Planned(clock.now, "t", "login", 1.0, 60.0)
    prober.clockwork.book.started(minute)
    await prober.clockwork.attempt(planned, prober.targets.current("t").adapter)


def rows(ledger: Ledger) -> dict[int, tuple[State, Reason]]:
    return {r.minute: (r.state, r.reason) for r in ledger.minute_rows("t") if r.probe == ""}


def break_writes(ledger: Ledger, error: OSError) -> dict[str, bool]:
    """Make the ledger's minute writes raise `error` while the returned switch is on."""
    real_write = ledger.write_minutes
    failing = {"on": True}

    def write(batch, pending=None):
        if failing["on"]:
            raise error
        return real_write(batch, pending)

    ledger.write_minutes = write  # type: ignore[method-assign]
    return failing


def test_forward_clock_step_closes_every_skipped_minute_as_no_data(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        await prober.start()
        start = int(BASE // 60)
        clock.now += 300  # the wall clock jumps five minutes ahead
        await prober.clockwork.plan_next()
        await prober.clockwork.close_due()
        got = rows(ledger)
        # now is 5 min 5 s past the start: minutes start..start+4 have ended and closed
        assert sorted(got) == list(range(start, start + 5))
        assert all(v == (State.NO_DATA, Reason.PROBER_DOWN) for v in got.values())
        assert prober.stats.clock_steps == 1
        await prober.stop()

    asyncio.run(main())


def test_attempt_for_a_closed_minute_is_discarded_and_counted(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        await prober.start()
        start = int(BASE // 60)
        clock.now = (start + 2) * 60 + 10
        await prober.clockwork.close_due()
        assert prober.clockwork.next_close == start + 2
        # the wall clock steps back into the closed minute; an attempt started there is late
        clock.now = start * 60 + 30
        await attempt_now(prober, clock, start)
        assert prober.stats.discarded_attempts == 1
        assert rows(ledger)[start] == (State.NO_DATA, Reason.PROBER_DOWN)
        await prober.stop()

    asyncio.run(main())


def test_failed_network_check_excludes_the_minute(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path, network=True)
        await prober.start()
        minute = int(BASE // 60)
        await attempt_now(prober, clock, minute)  # refused: a failure
        assert prober.netcheck is not None
        await prober.netcheck.round_into(minute, prober.clockwork.book, prober.stats)
        assert prober.stats.network_up == 0
        clock.now = (minute + 1) * 60 + 10
        await prober.clockwork.close_due()
        assert rows(ledger)[minute] == (State.NO_DATA, Reason.PROBER_NETWORK)
        [attempt] = ledger.attempts_in("t", minute, minute + 1)
        assert attempt.outcome is Outcome.PROBER_FAULT and attempt.error_kind == "connect"
        await prober.stop()

    asyncio.run(main())


def test_unwritable_ledger_buffers_minutes_and_writes_them_later(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        await prober.start()
        minute = int(BASE // 60)
        failing = break_writes(ledger, OSError(28, "No space left on device"))  # disk full
        clock.now = (minute + 3) * 60 + 10
        await prober.clockwork.close_due()
        assert prober.stats.ledger_write_errors == 1
        assert not prober.readiness()[0]
        assert sum(len(b) for b in prober.writer.pending) == 3
        failing["on"] = False  # space again
        clock.now += 60
        await prober.clockwork.close_due()
        assert prober.writer.ok and not prober.writer.pending
        assert sorted(rows(ledger)) == [minute, minute + 1, minute + 2, minute + 3]
        assert prober.view.verdicts[("t", "")][State.NO_DATA] == 4
        await prober.stop()

    asyncio.run(main())


def test_minutes_beyond_the_buffer_are_recorded_as_prober_down_when_storage_returns(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path, buffer=2)
        await prober.start()
        minute = int(BASE // 60)
        failing = break_writes(ledger, OSError(30, "Read-only file system"))
        for step in range(1, 6):  # minutes minute .. minute+4 close while the disk is gone
            clock.now = (minute + step) * 60 + 10
            await prober.clockwork.close_due()
        assert sum(len(b) for b in prober.writer.pending) == 2  # bounded: the newest two
        assert prober.writer.dropped == {"t": (("login",), minute, minute + 3)}
        assert prober.stats.ledger_write_errors == 5
        kept = {
            i.minute: (i.verdict.state, i.verdict.reason) for c in prober.writer.pending for i in c
        }
        assert sorted(kept) == [minute + 3, minute + 4]
        failing["on"] = False
        clock.now += 1
        await prober.clockwork.close_due()
        assert prober.writer.ok and not prober.writer.pending and not prober.writer.dropped
        got = rows(ledger)
        assert sorted(got) == list(range(minute, minute + 5))
        down = (State.NO_DATA, Reason.PROBER_DOWN)
        assert [got[m] for m in range(minute, minute + 3)] == [down] * 3
        assert {m: got[m] for m in kept} == kept  # the buffered two, as decided
        probe_rows = [r for r in ledger.minute_rows("t") if r.probe == "login"]
        assert len(probe_rows) == 5
        assert prober.view.verdicts[("t", "")][State.NO_DATA] == 5
        await prober.stop()

    asyncio.run(main())


def slow_restore(prober: Prober, clock: FakeClock, seconds: float) -> None:
    """Make the start's restore of the view take `seconds` of wall time."""
    real_restore = prober.view.restore

    def restore(*args, **kwargs):
        clock.now += seconds
        return real_restore(*args, **kwargs)

    prober.view.restore = restore  # type: ignore[method-assign]


def test_a_start_that_passes_the_planning_second_still_plans_the_next_minute(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, _ = make(tmp_path)
        minute = int(BASE // 60)
        clock.now = minute * 60 + 45
        slow_restore(prober, clock, 10)  # ready at :55, after the :50 job's moment
        await prober.start()
        assert prober.clockwork.planned_through == minute + 1
        assert prober.clockwork.timers  # the next minute's attempt is armed
        await prober.stop()

    asyncio.run(main())


def test_a_start_that_crosses_a_minute_plans_the_rest_of_the_new_minute(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, _ = make(tmp_path)
        minute = int(BASE // 60)
        clock.now = minute * 60 + 40
        slow_restore(prober, clock, 30)  # began in one minute, ready 10 s into the next
        await prober.start()
        assert prober.clockwork.planned_through == minute + 1
        assert prober.clockwork.timers  # armed: the attempts of minute+1 after the start
        await prober.stop()

    asyncio.run(main())


def test_a_finished_attempt_is_stored_with_its_vantage_at_the_next_tick(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        await prober.start()
        minute = int(BASE // 60)
        await attempt_now(prober, clock, minute)
        assert ledger.attempts_in("t", minute, minute + 1) == []  # not yet: batched
        await prober.clockwork._tick()
        [stored] = ledger.attempts_in("t", minute, minute + 1)
        assert stored.vantage == prober.config_file.vantage and stored.outcome is Outcome.FAILURE
        assert rows(ledger) == {}  # the minute itself is not closed
        clock.now = (minute + 1) * 60 + 10
        await prober.clockwork.close_due()
        assert rows(ledger) == {minute: (State.APPARENT_FAILURE, Reason.NONE)}
        assert len(ledger.attempts_in("t", minute, minute + 1)) == 1  # stored once
        assert ledger.attempt_totals() == {("t", "login"): {Outcome.FAILURE: 1}}
        await prober.stop()

    asyncio.run(main())


def earlier_process_stored(ledger: Ledger, vantage: str, *attempts: Attempt) -> None:
    """What a process of `vantage` stored before it was killed (its minutes never closed)."""
    ledger.store_evidence(PendingEvidence(vantage, list(attempts), seen_at=BASE))


def test_a_restart_inside_a_minute_decides_it_over_both_processes_attempts(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        minute = int(BASE // 60)
        vantage = prober.config_file.vantage
        success = Attempt("t", "login", minute * 60 + 2, 0.1, Outcome.SUCCESS, vantage=vantage)
        earlier_process_stored(ledger, vantage, success)
        elsewhere = Attempt("t", "login", minute * 60 + 3, 0.1, Outcome.SUCCESS, vantage="other")
        earlier_process_stored(ledger, "other", elsewhere)  # not this vantage's to take
        clock.now = minute * 60 + 30  # restarted within the same minute
        await prober.start()
        await attempt_now(prober, clock, minute)  # fails
        clock.now = (minute + 1) * 60 + 10
        await prober.clockwork.close_due()
        assert rows(ledger)[minute] == (State.AVAILABLE, Reason.NONE)
        [written] = [r for r in ledger.minute_rows("t") if r.probe == ""]
        assert (written.counts.success, written.counts.failure) == (1, 1)
        # each attempt stored once, and counted once in the totals
        assert (
            len([a for a in ledger.attempts_in("t", minute, minute + 1) if a.vantage == vantage])
            == 2
        )
        assert ledger.attempt_totals()[("t", "login")] == {Outcome.SUCCESS: 1, Outcome.FAILURE: 1}
        await prober.stop()

    asyncio.run(main())


def test_minutes_a_killed_process_left_unclosed_are_decided_from_what_it_stored(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path)
        minute = int(BASE // 60)
        vantage = prober.config_file.vantage
        failed = Attempt(
            "t", "login", minute * 60 + 2, 0.1, Outcome.FAILURE, "timeout", vantage=vantage
        )
        earlier_process_stored(ledger, vantage, failed)
        clock.now = (minute + 4) * 60 + 20  # back four minutes later
        await prober.start()
        clock.now += 1
        await prober.clockwork.close_due()
        got = rows(ledger)
        assert got[minute] == (State.APPARENT_FAILURE, Reason.NONE)  # what it saw, kept
        down = (State.NO_DATA, Reason.PROBER_DOWN)
        assert [got[m] for m in range(minute + 1, minute + 4)] == [down] * 3
        assert prober.view.verdicts[("t", "")][State.APPARENT_FAILURE] == 1
        await prober.stop()

    asyncio.run(main())


def test_a_network_round_stored_before_a_restart_still_excuses_the_minutes_failures(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger = make(tmp_path, network=True)
        minute = int(BASE // 60)
        vantage = prober.config_file.vantage
        failed = Attempt(
            "t", "login", minute * 60 + 2, 0.1, Outcome.FAILURE, "connect", vantage=vantage
        )
        ledger.store_evidence(
            PendingEvidence(vantage, [failed], [NetworkRound(vantage, minute, True)], BASE)
        )
        clock.now = minute * 60 + 50
        await prober.start()
        clock.now = (minute + 1) * 60 + 10
        await prober.clockwork.close_due()
        assert rows(ledger)[minute] == (State.NO_DATA, Reason.PROBER_NETWORK)
        [stored] = ledger.attempts_in("t", minute, minute + 1)
        assert stored.outcome is Outcome.PROBER_FAULT  # the stored row follows the verdict
        await prober.stop()

    asyncio.run(main())


def test_a_planning_job_that_missed_a_minute_plans_the_rest_of_the_current_one(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, _ = make(tmp_path)
        await prober.start()
        minute = int(BASE // 60)
        assert prober.clockwork.planned_through == minute
        for timer in prober.clockwork.timers:
            timer.cancel()
        prober.clockwork.timers.clear()
        # :50 of `minute` passed unplanned (a stalled loop); attempts keep a second off each
        # edge of their slot, so minute + 1's one attempt is still ahead at :00.5
        clock.now = (minute + 1) * 60 + 0.5
        await prober.clockwork.plan_next()
        assert prober.clockwork.planned_through == minute + 2
        assert len(prober.clockwork.timers) == 2  # minute + 1's attempt and minute + 2's
        await prober.stop()

    asyncio.run(main())


async def started_with_next_minute_planned(
    tmp_path: Path, network: bool = False
) -> tuple[Prober, FakeClock, Ledger, int]:
    """A started prober whose :50 job has armed the next minute m's attempts; returns m."""
    prober, clock, ledger = make(tmp_path, network=network)
    await prober.start()
    m = int(BASE // 60) + 1
    clock.now = (m - 1) * 60 + 50
    await prober.clockwork.plan_next()
    return prober, clock, ledger, m


async def fire(prober: Prober, clock: FakeClock, minute: int, network: bool) -> None:
    """Fire `minute`'s armed target attempts (or its network rounds) as the loop timer does,
    at their planned time, and leave them running."""
    from prober.runtime.netcheck import NetworkCheck

    clockwork = prober.clockwork
    chosen = [
        a
        for a in clockwork.timers
        if a.at // 60 == minute and isinstance(a.owner, NetworkCheck) is network
    ]
    assert chosen
    for armed in chosen:
        armed.due = 0.0
    heapq.heapify(clockwork.timers)
    clock.now = max(a.at for a in chosen)
    clockwork._fire_due()
    await asyncio.sleep(0)  # started at that time: an attempt belongs to the minute it starts in


def test_a_minute_closes_as_soon_as_every_attempt_planned_in_it_has_finished(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger, m = await started_with_next_minute_planned(tmp_path)
        clockwork = prober.clockwork
        assert clockwork.armed[m] == 1
        just_after = (m + 1) * 60 + 0.5  # before the fixed close at the end + 1 s + 2 s
        clock.now = just_after
        await clockwork.close_due()
        assert m not in rows(ledger)  # its attempt has not run: it waits
        await fire(prober, clock, m, network=False)
        clock.now = just_after
        assert clockwork.book.busy(m)
        await clockwork.close_due()
        assert m not in rows(ledger)  # its attempt is running: it waits
        await asyncio.gather(*clockwork.tasks)
        await clockwork.close_due()
        assert rows(ledger)[m] == (State.APPARENT_FAILURE, Reason.NONE)
        [attempt] = ledger.attempts_in("t", m, m + 1)
        assert attempt.error_kind == "connect"
        await prober.stop()

    asyncio.run(main())


def test_an_ended_minute_closes_when_its_last_attempt_finishes_not_at_the_next_tick(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger, m = await started_with_next_minute_planned(tmp_path)
        clockwork = prober.clockwork
        assert prober.scheduler is not None
        prober.scheduler.remove_job("close")  # no tick: only the attempt's end can close it
        await fire(prober, clock, m, network=False)
        clock.now = (m + 1) * 60 + 0.5  # the minute ends while its one attempt runs
        await asyncio.gather(*clockwork.tasks)
        assert clockwork._close_task is not None
        await clockwork._close_task
        assert rows(ledger)[m] == (State.APPARENT_FAILURE, Reason.NONE)
        await prober.stop()

    asyncio.run(main())


def test_the_closing_tick_runs_just_after_each_whole_second(tmp_path: Path) -> None:
    """A minute whose attempts all finished before its end closes 20 ms after it, whatever
    second of the clock the daemon started at."""

    async def main() -> None:
        prober, _clock, _ledger = make(tmp_path)
        await prober.start()
        assert prober.scheduler is not None
        job = prober.scheduler.get_job("close")
        assert job.trigger.interval == timedelta(seconds=1)
        assert job.next_run_time.microsecond == 20_000
        await prober.stop()

    asyncio.run(main())


def test_an_attempt_that_never_fired_holds_its_minute_only_until_the_fixed_close(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        prober, clock, ledger, m = await started_with_next_minute_planned(tmp_path)
        clock.now = (m + 1) * 60 + 2.9  # end + timeout 1 s + grace 2 s is 3 s
        await prober.clockwork.close_due()
        assert m not in rows(ledger)
        clock.now = (m + 1) * 60 + 3.1  # a held-up loop never fired it
        await prober.clockwork.close_due()
        assert rows(ledger)[m][0] is State.NO_DATA
        await prober.stop()

    asyncio.run(main())


def test_a_network_round_to_run_or_running_holds_its_minute(tmp_path: Path) -> None:
    async def main() -> None:
        prober, clock, ledger, m = await started_with_next_minute_planned(tmp_path, network=True)
        clockwork = prober.clockwork
        await fire(prober, clock, m, network=False)
        await asyncio.gather(*clockwork.tasks)
        clock.now = (m + 1) * 60 + 0.5
        await clockwork.close_due()
        assert m not in rows(ledger)  # the round is still armed
        await fire(prober, clock, m, network=True)
        clock.now = (m + 1) * 60 + 0.5
        await clockwork.close_due()
        assert m not in rows(ledger)  # the round is running
        await asyncio.gather(*clockwork.tasks)
        await clockwork.close_due()
        # the reference was down: the target's refused attempt does not count
        assert rows(ledger)[m] == (State.NO_DATA, Reason.PROBER_NETWORK)
        await prober.stop()

    asyncio.run(main())
