"""A real daemon SIGKILLed in the middle of a minute and started again within it: the minute
is decided over both processes' attempts. Attempts are stored as they end, so the success
the first process saw before the kill makes the minute available, though every attempt of
the second process fails."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import Daemon, chat_target, next_minute, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-crash")]

TIMEOUT = 2
CLOSE_DELAY = TIMEOUT + 2


def stored(ledger, minute: int) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Outcome code -> attempts stored for `minute` (0 success, 1 failure)."""
    if not ledger.exists():
        return {}
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
        try:
            return dict(
                db.execute(
                    "SELECT outcome, count(*) FROM attempts WHERE minute = ? GROUP BY outcome",
                    (minute,),
                ).fetchall()
            )
        except sqlite3.OperationalError:
            return {}


def test_a_restart_inside_a_minute_merges_both_processes_attempts(tmp_path) -> None:
    chat = ChatServer().start()
    config = tmp_path / "config.yaml"
    ledger = tmp_path / "ledger.sqlite3"
    config.write_text(
        "ledger: {path: ledger.sqlite3}\ntargets:\n"
        + chat_target("svc", chat.url, TIMEOUT, sends=6)
    )
    env = {"CHAT_PASSWORD": chat.password}
    port = free_port()
    daemons = [Daemon(config, port, env).start()]
    try:
        m0 = next_minute()
        wait_until(m0 * 60)
        # the first process stores a success of m0 within about a second of it ending ...
        deadline = m0 * 60 + 40
        while stored(ledger, m0).get(0, 0) < 1:
            assert time.time() < deadline, "no success of the minute stored in time"
            time.sleep(0.2)
        first = daemons[0]
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # ... and dies in the middle of the minute
        first.proc.wait(10)
        killed_at = time.time()
        chat.set_mode("5xx")  # from now on every attempt fails
        daemons.append(Daemon(config, port, env).start())
        assert time.time() < (m0 + 1) * 60 - 5, "restarted too late to test a merge"
        wait_until((m0 + 1) * 60 + CLOSE_DELAY + 3)
        assert daemons[1].stop(timeout=30) == 0
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.proc.kill()
        chat.stop()
    with sqlite3.connect(ledger) as db:
        state, reason, success, failure = db.execute(
            "SELECT m.state, m.reason, m.success, m.failure FROM minutes m "
            "JOIN series s ON s.id = m.series_id WHERE s.target = 'svc' AND s.probe = '' "
            "AND m.minute = ?",
            (m0,),
        ).fetchone()
        after = db.execute(
            "SELECT count(*) FROM attempts WHERE minute = ? AND started_at > ? AND outcome = 1",
            (m0, killed_at),
        ).fetchone()[0]
    assert after >= 1, "the second process made no attempt in the minute"
    assert (state, reason) == (0, 0)  # available: the first process's success counts
    assert success >= 1 and failure >= after
    log = (tmp_path / "daemon.log").read_text()
    assert "took back attempts of minutes that had not closed" in log
