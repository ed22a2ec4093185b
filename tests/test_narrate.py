"""The log a person watches: silent while healthy, one line per minute that is not available,
one line when a target's condition changes."""

from __future__ import annotations

import logging

import pytest

from prober.logs import LOGGER_NAME
from prober.records import Attempt
from prober.runtime.book import MinuteBook, TargetRules
from prober.runtime.narrate import Narrator
from prober.sla import Outcome, Policy

M = 29_500_000
RULES = TargetRules("chat", ("login", "send_c2c"), Policy.SLA, ())


def close(*outcomes: tuple[str, Outcome, str], minute: int = M):
    book = MinuteBook()
    for probe, outcome, kind in outcomes:
        book.started(minute)
        book.finished(Attempt("chat", probe, minute * 60 + 5, 0.1, outcome, kind), minute)
    return book.close(minute, [RULES])


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict]]:
    return [
        (r.getMessage(), getattr(r, "fields", {})) for r in caplog.records if r.name == LOGGER_NAME
    ]


def test_a_healthy_target_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    narrator = Narrator()
    for n in range(3):
        narrator.closed(
            close(("login", Outcome.SUCCESS, ""), ("send_c2c", Outcome.SUCCESS, ""), minute=M + n)
        )
    assert lines(caplog) == []


def test_an_outage_is_told_as_it_starts_each_minute_and_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    narrator = Narrator()
    narrator.closed(close(("login", Outcome.SUCCESS, ""), minute=M))
    narrator.closed(
        close(
            ("login", Outcome.FAILURE, "connect"),
            ("send_c2c", Outcome.FAILURE, "timeout"),
            minute=M + 1,
        )
    )
    narrator.closed(close(("login", Outcome.FAILURE, "connect"), minute=M + 2))
    narrator.closed(close(("login", Outcome.SUCCESS, ""), minute=M + 3))
    told = lines(caplog)
    assert [message for message, _ in told] == [
        "minute closed",
        "target is now failing",
        "minute closed",
        "target is now ok",
    ]
    first = told[0][1]
    assert first["state"] == "apparent_failure"
    assert first["probes_not_available"] == "login,send_c2c"
    assert set(first["outcomes"].split(",")) == {"failure/connect×1", "failure/timeout×1"}
    assert told[1][1]["was"] == "ok"
    assert told[3][1] | {} == {
        "target": "chat",
        "minute": told[3][1]["minute"],
        "was": "failing",
        "for_minutes": 2,
    }


def test_only_excluded_outcomes_are_told_as_unobserved_with_their_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    Narrator().closed(close(("login", Outcome.CLIENT_ERROR, "auth")))
    told = lines(caplog)
    assert told[0][0] == "minute closed"
    assert told[0][1]["reason"] == "excluded_only"
    assert told[0][1]["outcomes"] == "client_error/auth×1"
    assert told[1][0] == "target is now unobserved"
