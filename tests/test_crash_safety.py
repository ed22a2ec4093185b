"""SIGKILL the real daemon over and over (more than 30 times, several of them while a minute
is being written) and restart it each time: the ledger must stay whole.

Checked after the run: `PRAGMA integrity_check`; every minute of every series exactly once
and contiguous; no minute written in half (a minute's attempt counts match its attempt rows;
the running totals match the rows); at most the minute in flight lost per kill, recorded as
no_data/prober_down; and the exported counters never went backwards across restarts.
"""

from __future__ import annotations

import calendar
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from .chat_app import ChatServer, free_port
from .daemon_util import Daemon, next_minute, ping_target, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-crash")]

TIMEOUT = 2
CLOSE_DELAY = TIMEOUT + 2  # largest timeout + default close grace
TARGETS = 40  # enough rows that writing a minute takes a measurable moment
MINUTES = 5
KILLS_PER_MINUTE = 7  # one aimed at the minute's write, the rest at random moments
KILLS = 30  # at least; a busy machine restarts slower, so it may take a minute or two more
EXTRA_MINUTES = 2
COUNTERS = ("im_minute_verdicts_total", "im_probe_attempts_total", "im_probe_minute_verdicts_total")


def config_text(chat: ChatServer) -> str:
    targets = "".join(
        ping_target(f"t{i:02d}", chat.url, chat.password, TIMEOUT, sends=3) for i in range(TARGETS)
    )
    return "ledger: {path: ledger.sqlite3}\ntargets:\n" + targets


def kill_during_write(daemon: Daemon, wal: Path, deadline: float) -> str:
    """SIGKILL as soon as the WAL is written to (a minute's transaction is being written), or
    at `deadline` if it is not. Its size alone does not show it: after a checkpoint SQLite
    writes the WAL over from its start, and the file keeps its size."""
    assert daemon.proc is not None

    def stamp() -> tuple[int, int]:
        try:
            status = wal.stat()
        except FileNotFoundError:
            return (0, 0)
        return (status.st_size, status.st_mtime_ns)

    before = stamp()
    while time.time() < deadline:
        if stamp() != before:
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(10)
            return "during write"
        time.sleep(0.0005)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    return "at deadline"


def counters(daemon: Daemon) -> dict:
    return {key: value for key, value in daemon.metrics().items() if key[0] in COUNTERS}


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    chat = ChatServer().start()
    config = folder / "config.yaml"
    config.write_text(config_text(chat))
    ledger = folder / "ledger.sqlite3"
    wal = folder / "ledger.sqlite3-wal"
    rng = random.Random(20261127)
    # The minute the first start falls in is not probed whole either (the daemon may come
    # up only in the next one): it may be recorded as prober_down like a kill's.
    started_minute = int(time.time() // 60)
    daemon = Daemon(config, free_port()).start()
    kills: list[tuple[float, str]] = []
    backwards: list[str] = []
    seen: dict = counters(daemon)

    def restart() -> None:
        daemon.start()
        now = counters(daemon)
        for key, value in seen.items():
            if now.get(key, 0) < value:
                backwards.append(f"{key}: {value} -> {now.get(key)}")
        seen.update(now)

    first = next_minute()
    for minute in range(first, first + MINUTES + EXTRA_MINUTES):
        if minute >= first + MINUTES and len(kills) >= KILLS:
            break
        # Aim at the moment the previous minute is written (its close tick).
        close_at = minute * 60 + CLOSE_DELAY
        wait_until(close_at - 0.3)
        how = kill_during_write(daemon, wal, close_at + 1.5)
        kills.append((time.time(), how))
        restart()
        # Then random moments through the rest of the minute: each one a random while after
        # the restart before it came up, so a busy machine's slow restarts move the kills
        # later instead of losing them.
        last_moment = (minute + 1) * 60 - 1
        wait_until(close_at + rng.uniform(1.0, 3.0))
        for _ in range(KILLS_PER_MINUTE - 1):
            if time.time() >= last_moment:
                break
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(10)
            kills.append((time.time(), "random"))
            restart()
            wait_until(min(last_moment, time.time() + rng.uniform(0.5, 4.0)))
    # A last, clean minute, then a graceful stop.
    end = next_minute()
    wait_until(end * 60 + CLOSE_DELAY + 3)
    stop_code = daemon.stop()
    chat.stop()
    during = sum(1 for _, how in kills if how == "during write")
    print(f"\n{len(kills)} SIGKILLs, {during} of them while the WAL was growing")
    return {
        "ledger": ledger,
        "kills": kills,
        "backwards": backwards,
        "stop_code": stop_code,
        "first": first,
        "started_minute": started_minute,
        "end": end,
        "log": daemon.log.read_text(),
    }


def test_at_least_30_kills_some_during_a_write(crashed):
    kills = crashed["kills"]
    assert len(kills) >= KILLS
    assert sum(1 for _, how in kills if how == "during write") >= 3
    assert crashed["stop_code"] == 0


def test_the_ledger_passes_integrity_check(crashed):
    with sqlite3.connect(crashed["ledger"]) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


def test_every_minute_once_and_contiguous(crashed):
    with sqlite3.connect(crashed["ledger"]) as db:
        series = db.execute("SELECT id, target, probe FROM series").fetchall()
        assert len(series) == TARGETS * 3  # target level + login + send_c2c
        for sid, target, probe in series:
            minutes = [
                m
                for (m,) in db.execute(
                    "SELECT minute FROM minutes WHERE series_id = ? ORDER BY minute", (sid,)
                )
            ]
            assert len(minutes) == len(set(minutes))
            assert minutes == list(range(minutes[0], minutes[-1] + 1)), (target, probe)
            assert minutes[-1] >= crashed["end"] - 1, (target, probe)  # the last ended minute


def test_no_minute_is_written_in_half(crashed):
    with sqlite3.connect(crashed["ledger"]) as db:
        # A probe minute's counts are exactly its attempt rows.
        mismatched = db.execute(
            """
            SELECT s.target, s.probe, m.minute,
                   m.success + m.failure + m.client_error + m.throttled + m.prober_fault,
                   (SELECT count(*) FROM attempts a
                     WHERE a.series_id = m.series_id AND a.minute = m.minute)
            FROM minutes m JOIN series s ON s.id = m.series_id
            WHERE s.probe != ''
            """
        ).fetchall()
        assert [row for row in mismatched if row[3] != row[4]] == []
        # Every target minute has its per-probe minutes, written in the same transaction.
        orphans = db.execute(
            """
            SELECT s.target, m.minute FROM minutes m JOIN series s ON s.id = m.series_id
            WHERE s.probe = '' AND (
              SELECT count(*) FROM minutes p JOIN series ps ON ps.id = p.series_id
              WHERE ps.target = s.target AND ps.probe != '' AND p.minute = m.minute) != 2
            """
        ).fetchall()
        assert orphans == []
        # The running totals are the rows, exactly.
        assert counts(db, "SELECT * FROM verdict_totals WHERE count > 0") == counts(
            db, "SELECT series_id, state, count(*) FROM minutes GROUP BY series_id, state"
        )
        # Attempt totals count the attempts of closed minutes (attempts are stored as they
        # end, so the minute in flight at the last stop has rows not counted yet).
        assert counts(db, "SELECT * FROM attempt_totals WHERE count > 0") == counts(
            db,
            "SELECT a.series_id, a.outcome, count(*) FROM attempts a WHERE EXISTS ("
            "SELECT 1 FROM minutes m WHERE m.series_id = a.series_id AND m.minute = a.minute) "
            "GROUP BY a.series_id, a.outcome",
        )


def counts(db: sqlite3.Connection, sql: str) -> dict[tuple[int, int], int]:
    """(series, state or outcome) → count, from a query yielding those three columns."""
    return {(sid, code): count for sid, code, count in db.execute(sql)}


def test_at_most_the_minute_in_flight_is_lost_per_kill(crashed):
    kill_minutes = [int(at // 60) for at, _ in crashed["kills"]]
    with sqlite3.connect(crashed["ledger"]) as db:
        rows = db.execute(
            "SELECT target, minute, state, reason FROM minute_rows WHERE probe = ''"
        ).fetchall()
    states = Counter((state, reason) for _, _, state, reason in rows)
    # The service worked throughout: every minute is available or lost to a kill.
    assert set(states) <= {("available", ""), ("no_data", "prober_down")}, states
    lost_by_target: dict[str, list[int]] = {}
    for target, minute_iso, state, _ in rows:
        if state == "no_data":
            minute = calendar.timegm(time.strptime(minute_iso, "%Y-%m-%dT%H:%M:%SZ")) // 60
            lost_by_target.setdefault(target, []).append(minute)
    for target, lost in lost_by_target.items():
        # Each kill loses at most one minute (the one being closed or probed) ...
        assert len(lost) <= len(kill_minutes), target
        # ... and only a minute at or just before a kill.
        for minute in lost:
            assert minute == crashed["started_minute"] or any(
                k - 1 <= minute <= k for k in kill_minutes
            ), (target, minute)


def test_counters_never_went_backwards(crashed):
    assert crashed["backwards"] == []


def test_each_restart_recorded_the_gap_or_resumed(crashed):
    assert crashed["log"].count("prober started") == len(crashed["kills"]) + 1
    assert "Traceback" not in crashed["log"]


def test_wal_is_checkpointed_on_a_clean_stop(crashed):
    wal = Path(str(crashed["ledger"]) + "-wal")
    assert not wal.exists() or os.path.getsize(wal) == 0
