"""Closing minutes from gathered attempts: network check, maintenance, policies, late
attempts, attempts attributed by their start."""

from __future__ import annotations

from datetime import UTC, datetime

from prober.records import Attempt
from prober.runtime.book import MinuteBook, TargetRules
from prober.sla import OneOffWindow, Outcome, Policy, Reason, State, Verdict

M = 29_500_000  # an epoch minute
RULES = TargetRules("t", ("login", "send_c2c"), Policy.SLA, ())


def attempt(probe: str, outcome: Outcome, second: float = 10.0, minute: int = M) -> Attempt:
    return Attempt("t", probe, minute * 60 + second, 0.1, outcome)


def feed(book: MinuteBook, *attempts: Attempt) -> None:
    for a in attempts:
        book.started(a.minute)
        assert book.finished(a, a.minute)


def test_verdicts_and_counts_of_a_closed_minute() -> None:
    book = MinuteBook()
    feed(
        book,
        attempt("login", Outcome.SUCCESS),
        attempt("send_c2c", Outcome.FAILURE),
        attempt("send_c2c", Outcome.FAILURE, 40),
    )
    [closed] = book.close(M, [RULES])
    assert closed.verdict == Verdict(State.AVAILABLE)
    assert closed.counts.as_tuple() == (1, 2, 0, 0, 0)
    assert closed.probes["login"][0] == Verdict(State.AVAILABLE)
    assert closed.probes["send_c2c"][0] == Verdict(State.APPARENT_FAILURE)
    assert len(closed.attempts) == 3


def test_a_minute_with_no_attempt_is_prober_down_for_every_probe() -> None:
    [closed] = MinuteBook().close(M, [RULES])
    assert closed.verdict == Verdict(State.NO_DATA, Reason.PROBER_DOWN)
    assert {p: v for p, (v, _) in closed.probes.items()} == {
        "login": Verdict(State.NO_DATA, Reason.PROBER_DOWN),
        "send_c2c": Verdict(State.NO_DATA, Reason.PROBER_DOWN),
    }


def test_failed_network_check_turns_failures_into_prober_faults() -> None:
    book = MinuteBook()
    feed(book, attempt("login", Outcome.FAILURE), attempt("send_c2c", Outcome.CLIENT_ERROR))
    book.network_round(M, True)
    [closed] = book.close(M, [RULES])
    assert closed.verdict == Verdict(State.NO_DATA, Reason.PROBER_NETWORK)
    assert [a.outcome for a in closed.attempts] == [Outcome.PROBER_FAULT, Outcome.CLIENT_ERROR]


def test_one_working_network_round_keeps_failures_counted() -> None:
    book = MinuteBook()
    feed(book, attempt("login", Outcome.FAILURE))
    book.network_round(M, True)
    book.network_round(M, False)
    [closed] = book.close(M, [RULES])
    assert closed.verdict == Verdict(State.APPARENT_FAILURE)


def test_maintenance_and_strict_policy() -> None:
    start = datetime.fromtimestamp(M * 60, UTC)
    window = OneOffWindow(start, datetime.fromtimestamp((M + 1) * 60, UTC))
    rules = TargetRules("t", ("login", "send_c2c"), Policy.STRICT, (window,))
    book = MinuteBook()
    feed(
        book,
        attempt("login", Outcome.FAILURE),
        attempt("login", Outcome.SUCCESS, 20, M + 1),
        attempt("send_c2c", Outcome.FAILURE, 30, M + 1),
    )
    [in_window] = book.close(M, [rules])
    assert in_window.verdict == Verdict(State.MAINTENANCE)
    assert in_window.attempts  # kept as evidence
    [after] = book.close(M + 1, [rules])
    assert after.verdict == Verdict(State.APPARENT_FAILURE)  # strict: send failed


def test_attempts_belong_to_the_minute_they_started_in_and_late_ones_are_refused() -> None:
    book = MinuteBook()
    planned_minute = M
    late = attempt("login", Outcome.SUCCESS, 0.5, M + 1)  # planned at :59.9, started at :00.5
    book.started(planned_minute)
    assert book.busy(M)
    assert book.finished(late, planned_minute)
    assert not book.busy(M)
    [m_closed] = book.close(M, [RULES])
    assert m_closed.verdict.state is State.NO_DATA
    book.started(M)
    assert not book.finished(attempt("login", Outcome.SUCCESS, 5, M), M)  # M is closed
    [next_closed] = book.close(M + 1, [RULES])
    assert next_closed.verdict == Verdict(State.AVAILABLE)


def test_attempts_of_a_removed_target_are_forgotten() -> None:
    book = MinuteBook()
    feed(book, Attempt("gone", "login", M * 60 + 1, 0.1, Outcome.SUCCESS))
    assert book.close(M, [RULES])[0].target == "t"
    assert not book.attempts
