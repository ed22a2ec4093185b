"""Fleet benchmark (issue 13): two probers on one PostgreSQL ledger against one on SQLite.

In one run, at the same time (the same minutes, so the machine's noise hits both sides):
- baseline: one daemon with a SQLite ledger, N `http` targets x 4 attempts a minute;
- fleet: two daemons, vantages `a` and `b`, with the same targets on one real PostgreSQL
  (Debian's, started durable on 127.0.0.1 by tests/postgres_fixture.py).
All three probe one fast local server. The daemons are pinned to CPU 0, the server and
PostgreSQL to CPU 1. After a warm-up of at least one whole minute it measures whole minutes:
- CPU (user + system from /proc) per attempt of each daemon, attempts counted from the
  ledgers by minute, and the ratio fleet prober / SQLite prober (goal <= 1.3x); the
  database server's own CPU beside it;
- the verdict's delay after each minute ends: when the `minutes` rows of every target for
  that minute are in the ledger (polled every 0.2 s), minus the minute's end (fleet goal:
  attempt timeout + close grace + 5 s);
- then the take-over time: SIGKILL the daemon showing `im_fleet_closer 1`, time until the
  other shows 1 (goal <= 10 s); the killed one is restarted and the round repeated; at the
  end every fleet minute from the first measured one on must be there for every target.

    python bench/fleet_bench.py [--targets 1000] [--minutes 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.postgres_fixture
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from daemon_bench import (  # noqa: E402
    cpu_seconds,
    free_port,
    pinned,
    rss_mb,
    scrape,
    start_fast_server,
    write_config,
)

from tests.postgres_fixture import PostgresCluster  # noqa: E402

TIMEOUT = 5.0  # the attempt timeout write_config gives every target
CLOSE_GRACE = 2.0  # the daemon's default scheduler.close_grace
PASSWORD_ENV = "IM_PROBER_TEST_PG_PASSWORD"
POLL = 0.2  # seconds between looks at the ledgers (verdicts) and at /metrics (closer)
# Seconds into a minute at which each take-over round kills the closer: spread over the
# minute, the last one while the closer is writing the previous minute's fleet verdicts.
KILL_AT = (20.0, 45.0, 8.5)
CLOSER = re.compile(r"^im_fleet_closer (\S+)$", re.MULTILINE)


@dataclass
class Daemon:
    name: str
    config: Path
    env: dict[str, str]
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> Daemon:
        self.port = free_port()  # a fresh port: the killed process's may linger
        self.proc = subprocess.Popen(
            [
                *pinned(0),
                sys.executable,
                "-m",
                "prober",
                "run",
                "-c",
                str(self.config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "a"),  # noqa: SIM115
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                scrape(f"http://127.0.0.1:{self.port}/healthz")
                return
            except OSError:
                if time.time() > deadline or (self.proc and self.proc.poll() is not None):
                    raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}") from None
                time.sleep(POLL)

    def closer(self) -> float | None:
        """`im_fleet_closer` on /metrics; None while the daemon does not answer."""
        try:
            found = CLOSER.search(scrape(f"http://127.0.0.1:{self.port}/metrics"))
        except OSError:
            return None
        return float(found.group(1)) if found else None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def postgres_cpu(postmaster: int) -> float:
    """CPU seconds of the whole server: the postmaster, its reaped children (backends that
    ended) and its live children."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == postmaster:
            ticks += sum(int(f) for f in stat[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def pin_tree(pid: int, cpu: int) -> None:
    """Pin a running server and its children (PostgreSQL forks backends from the
    postmaster, which they inherit the pinning from)."""
    if (os.cpu_count() or 1) < 2:
        return
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    for each in pids:
        try:
            os.sched_setaffinity(each, {cpu})
        except OSError:
            continue


class VerdictWatch(threading.Thread):
    """Polls a ledger for the minutes [first, last]: when every target's `minutes` row of a
    minute is there, its delay after the minute's end."""

    def __init__(self, count: Callable[[int], int], targets: int, first: int, last: int) -> None:
        super().__init__(daemon=True)
        self.count, self.targets, self.first, self.last = count, targets, first, last
        self.delays: dict[int, float] = {}
        self.stop_at = (last + 1) * 60 + 120

    def run(self) -> None:
        minute = self.first
        while minute <= self.last and time.time() < self.stop_at:
            end = (minute + 1) * 60
            if time.time() < end:
                time.sleep(min(POLL, end - time.time()))
                continue
            try:
                found = self.count(minute)
            except (sqlite3.Error, psycopg.Error):
                found = 0  # a busy moment: look again
            if found >= self.targets:
                self.delays[minute] = time.time() - end
                minute += 1
                continue
            time.sleep(POLL)


def sqlite_counter(path: Path) -> tuple[Callable[[int], int], Callable[[str], object]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=10)
    lock = threading.Lock()

    def query(sql: str, *args: object) -> list[tuple]:
        with lock:
            return db.execute(sql, args).fetchall()

    def count(minute: int) -> int:
        return query(
            "SELECT count(*) FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.probe = '' AND m.minute = ?",
            minute,
        )[0][0]

    return count, query  # type: ignore[return-value]


def postgres_counter(
    cluster: PostgresCluster, database: str
) -> tuple[Callable[[int], int], Callable[..., list[tuple]]]:
    db = psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        user=cluster.role,
        password=cluster.password,
        dbname=database,
        autocommit=True,
    )
    lock = threading.Lock()

    def query(sql: str, *args: object) -> list[tuple]:
        with lock:
            return db.execute(sql.replace("?", "%s"), args).fetchall()

    def count(minute: int) -> int:
        return query(
            "SELECT count(*) FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.probe = '' AND m.minute = ?",
            minute,
        )[0][0]

    return count, query


ATTEMPTS = (
    "SELECT vantage, count(*), sum(CASE WHEN outcome = 0 THEN 1 ELSE 0 END) FROM attempts "
    "WHERE minute >= ? AND minute < ? GROUP BY vantage"
)


def until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.time()
    while not condition():
        if time.time() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(POLL)
    return time.time() - started


def fmt_delays(delays: dict[int, float]) -> str:
    return ", ".join(f"{d:.1f}" for _, d in sorted(delays.items()))


def run(targets: int, minutes: int, rounds: int, server: str, folder: Path) -> None:
    cluster = PostgresCluster(durable=True)
    daemons: dict[str, Daemon] = {}
    try:
        cluster.start()
        database = cluster.create_database("fleet_bench")
        pin_tree(cluster.pid or 0, 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IM_PROBER_")}
        env[PASSWORD_ENV] = cluster.password
        for name in ("sqlite", "a", "b"):
            (folder / name).mkdir()
            config = folder / name / "config.yaml"
            write_config(config, targets, server)
            if name != "sqlite":
                text = config.read_text()
                head = "ledger: {path: ledger.sqlite3}\n"
                assert text.startswith(head), "daemon_bench.write_config changed"
                config.write_text(
                    f"vantage: {name}\n"
                    f"ledger: {{url: '{cluster.url(database)}', "
                    f"password: {{env: {PASSWORD_ENV}}}}}\n" + text[len(head) :]
                )
            daemons[name] = Daemon(name, config, env, folder / name / "log")
        base, a, b = daemons["sqlite"], daemons["a"], daemons["b"]
        for daemon in daemons.values():
            daemon.start()
        for daemon in daemons.values():
            daemon.wait_healthy()
        pin_tree(cluster.pid or 0, 1)  # the backends the probers opened
        first = int(time.time() // 60) + 2  # after at least one whole minute of warm-up
        last = first + minutes - 1
        print(f"warming up; measuring minutes {first}..{last} (UTC minute numbers)", flush=True)
        base_count, base_query = sqlite_counter(folder / "sqlite" / "ledger.sqlite3")
        fleet_count, fleet_query = postgres_counter(cluster, database)
        watches = {
            "sqlite": VerdictWatch(base_count, targets, first, last),
            "fleet": VerdictWatch(fleet_count, targets, first, last),
        }
        for watch in watches.values():
            watch.start()
        until(first * 60 + 1)
        closer_at_start = {n: daemons[n].closer() for n in ("a", "b")}
        cpu0 = {n: cpu_seconds(d.pid) for n, d in daemons.items()}
        pg0 = postgres_cpu(cluster.pid or 0)
        until((last + 1) * 60 + 1)
        cpu1 = {n: cpu_seconds(d.pid) for n, d in daemons.items()}
        pg1 = postgres_cpu(cluster.pid or 0)
        closer_at_end = {n: daemons[n].closer() for n in ("a", "b")}
        rss = {n: rss_mb(d.pid) for n, d in daemons.items()}
        for watch in watches.values():
            watch.join(timeout=max(0.0, watch.stop_at - time.time()))
        time.sleep(2)  # the last minute's attempts are stored by its close, long done
        base_attempts = base_query(ATTEMPTS, first, last + 1)
        fleet_attempts = {v: (n, ok) for v, n, ok in fleet_query(ATTEMPTS, first, last + 1)}
        base.stop()
        attempts = {
            "sqlite": sum(n for _, n, _ in base_attempts),
            "a": fleet_attempts.get("a", (0, 0))[0],
            "b": fleet_attempts.get("b", (0, 0))[0],
        }
        successes = {
            "sqlite": sum(ok for _, _, ok in base_attempts),
            "a": fleet_attempts.get("a", (0, 0))[1],
            "b": fleet_attempts.get("b", (0, 0))[1],
        }
        per = {n: (cpu1[n] - cpu0[n]) / max(attempts[n], 1) for n in daemons}
        fleet_mean = (cpu1["a"] - cpu0["a"] + cpu1["b"] - cpu0["b"]) / max(
            attempts["a"] + attempts["b"], 1
        )
        pg_per = (pg1 - pg0) / max(attempts["a"] + attempts["b"], 1)

        # -- take-over ------------------------------------------------------------------
        takeovers: list[tuple[str, float, float]] = []
        for i in range(rounds):
            holders = [d for d in (a, b) if d.closer() == 1]
            if len(holders) != 1:
                raise RuntimeError(f"expected one closer, found {[d.name for d in holders]}")
            holder = holders[0]
            other = b if holder is a else a
            kill_at = KILL_AT[i % len(KILL_AT)]
            now = time.time()
            moment = (now // 60) * 60 + kill_at
            if moment < now + 1:
                moment += 60
            until(moment)
            killed = time.time()
            holder.kill()
            wait_for(lambda o=other: o.closer() == 1, 60, f"{other.name} takes over")
            took = time.time() - killed
            takeovers.append((holder.name, killed % 60, took))
            print(
                f"round {i + 1}: killed {holder.name} at :{killed % 60:04.1f}, "
                f"{other.name} closer after {took:.2f} s",
                flush=True,
            )
            holder.start()
            holder.wait_healthy()
            wait_for(lambda h=holder: h.closer() == 0, 60, f"{holder.name} back as a follower")
        # Every fleet minute from the first measured one through the minute of the last
        # kill must be there, once, for every target.
        through = int(time.time() // 60)
        until((through + 1) * 60 + TIMEOUT + CLOSE_GRACE)
        wait_for(lambda: fleet_count(through) >= targets, 90, f"fleet minute {through} closed")
        rows = fleet_query(
            "SELECT m.minute, count(*) FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.probe = '' AND m.minute >= ? AND m.minute <= ? GROUP BY m.minute",
            first,
            through,
        )
        complete = dict(rows)
        missing = [m for m in range(first, through + 1) if complete.get(m, 0) != targets]
        states = fleet_query(
            "SELECT m.state, count(*) FROM minutes m JOIN series s ON s.id = m.series_id "
            "WHERE s.probe = '' AND m.minute >= ? AND m.minute <= ? GROUP BY m.state",
            first,
            through,
        )
    finally:
        for daemon in daemons.values():
            daemon.stop()
        cluster.stop()

    # -- report ---------------------------------------------------------------------------
    expected = targets * 4 * minutes
    print()
    print(
        f"{targets} targets x 4 attempts/min, {minutes} whole minutes, all daemons at once "
        f"(attempt timeout {TIMEOUT:g} s, close grace {CLOSE_GRACE:g} s)"
    )
    print("daemon             attempts (ok)     CPU s   µs/attempt  x SQLite  RSS MB")
    for name, label in (("sqlite", "SQLite prober"), ("a", "fleet a"), ("b", "fleet b")):
        role = ""
        if name != "sqlite":
            role = " (closer)" if closer_at_start[name] == 1 == closer_at_end[name] else ""
        print(
            f"{label + role:17s}  {attempts[name]:6d}/{expected} ({successes[name]:6d})"
            f"  {cpu1[name] - cpu0[name]:6.1f}  {per[name] * 1e6:10.0f}"
            f"  {per[name] / per['sqlite']:7.2f}x  {rss[name]:6.0f}"
        )
    print(
        f"fleet, both        {attempts['a'] + attempts['b']:6d}              "
        f"{fleet_mean * 1e6:18.0f}  {fleet_mean / per['sqlite']:7.2f}x  (goal <= 1.3x)"
    )
    print(
        f"PostgreSQL server  {pg1 - pg0:6.1f} s CPU, {pg_per * 1e6:.0f} µs per fleet attempt; "
        f"fleet a + b + server {(fleet_mean + pg_per) * 1e6:.0f} µs/attempt "
        f"({(fleet_mean + pg_per) / per['sqlite']:.2f}x)"
    )
    goal = TIMEOUT + CLOSE_GRACE + 5
    for name, watch in watches.items():
        seen = watch.delays
        worst = max(seen.values()) if seen else float("nan")
        print(
            f"verdict delay after the minute's end, {name}: {fmt_delays(seen)} s "
            f"(max {worst:.1f} s{f'; goal <= {goal:g} s' if name == 'fleet' else ''}; "
            f"{len(seen)}/{minutes} minutes)"
        )
    times = [t for _, _, t in takeovers]
    if times:
        print(
            "take-over after SIGKILL of the closer: "
            + ", ".join(f"{t:.2f} s (killed {n} at :{s:04.1f})" for n, s, t in takeovers)
            + f"; max {max(times):.2f} s, median {statistics.median(times):.2f} s (goal <= 10 s)"
        )
    state_names = {0: "available", 1: "apparent_failure", 2: "maintenance", 3: "no_data"}
    print(
        f"fleet minutes {first}..{through}: "
        + ("all complete" if not missing else f"INCOMPLETE {missing}")
        + " — "
        + ", ".join(f"{state_names.get(s, s)} {n}" for s, n in sorted(states))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="take-over rounds")
    args = parser.parse_args()

    server, url = start_fast_server()
    try:
        time.sleep(1.5)
        with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
            run(args.targets, args.minutes, args.rounds, url, Path(tmp))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
