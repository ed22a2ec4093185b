"""Ledger benchmark: a year of minutes for 100 targets (~52.6 million target-level rows),
then the monthly report of one target and the start-up restore of running totals.

Figures are medians of repeated runs, each shown with the ratio to a baseline measured in the
same run: a bare SQLite count over the same month's rows (the least any report must touch).

    python bench/ledger_bench.py [--targets 100] [--days 365] [--db bench/out/ledger.sqlite3]

The ledger file is built once and reused while its size parameters match (building the full
size takes a few minutes and about 1.5 GB of disk).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import time
from datetime import UTC, date, datetime
from pathlib import Path

from prober.config.models import SLAConfig, TargetConfig
from prober.ledger.codes import REASON_CODES, STATE_CODES
from prober.ledger.store import Ledger
from prober.reports.report import build_report
from prober.sla import ServiceCalendar
from prober.sla.types import Reason, State

ANCHOR = date(2025, 1, 1)


def build(path: Path, targets: int, days: int) -> None:
    if path.exists():
        path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    Ledger(path).close()  # creates the schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # building only; the product writes with FULL
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) // 60
    minutes = days * 1440
    rng = random.Random(1)
    available = STATE_CODES[State.AVAILABLE]
    failed = STATE_CODES[State.APPARENT_FAILURE]
    no_data = STATE_CODES[State.NO_DATA]
    down = REASON_CODES[Reason.PROBER_DOWN]
    t0 = time.perf_counter()
    for t in range(targets):
        db.execute("BEGIN")
        db.execute("INSERT INTO series (id, target, probe) VALUES (?, ?, '')", (t + 1, f"t{t:03d}"))
        bad = set()
        for _ in range(days // 3):  # a short outage every few days
            first = rng.randrange(minutes)
            bad.update(range(first, first + rng.randint(1, 30)))
        rows = (
            (
                t + 1,
                start + i,
                failed if i in bad else (no_data if i % 9973 == 0 else available),
                down if i % 9973 == 0 and i not in bad else 0,
                0 if i in bad else 4,
                4 if i in bad else 0,
            )
            for i in range(minutes)
        )
        db.executemany(
            "INSERT INTO minutes (series_id, minute, state, reason, success, failure) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.execute(
            "INSERT INTO verdict_totals SELECT series_id, state, count(*) FROM minutes "
            "WHERE series_id = ? GROUP BY state",
            (t + 1,),
        )
        db.execute("COMMIT")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('bench', ?)", (f"{targets}x{days}",))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    print(f"built {targets} x {minutes} rows in {time.perf_counter() - t0:.0f} s")


def median_time(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--db", type=Path, default=Path("bench/out/ledger.sqlite3"))
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    stamp = f"{args.targets}x{args.days}"
    current = None
    if args.db.exists():
        try:
            db = sqlite3.connect(args.db)
            current = db.execute("SELECT value FROM meta WHERE key = 'bench'").fetchone()
            db.close()
        except sqlite3.Error:
            current = None
    if current is None or current[0] != stamp:
        build(args.db, args.targets, args.days)
    size = args.db.stat().st_size
    print(f"ledger: {args.db} ({size / 2**30:.2f} GiB, {args.targets} targets x {args.days} days)")

    target = TargetConfig(
        name="t042" if args.targets > 42 else "t000",
        kind="http",
        http={},
        probes={"login": {"attempts_per_minute": 1, "timeout": 10}},
        sla=SLAConfig(service_month_anchor=ANCHOR, timezone="Asia/Shanghai"),
    )
    month = ServiceCalendar(ANCHOR, "Asia/Shanghai").month_starting_in(2025, 7)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    raw = sqlite3.connect(args.db)
    (sid,) = raw.execute("SELECT id FROM series WHERE target = ?", (target.name,)).fetchone()

    def baseline() -> None:
        raw.execute(
            "SELECT count(*) FROM minutes WHERE series_id = ? AND minute >= ? AND minute < ?",
            (sid, month.start_minute, month.end_minute),
        ).fetchone()

    ledger = Ledger(args.db, create=False)

    def report() -> None:
        build_report(ledger, target, month, now)

    def restore() -> None:
        with Ledger(args.db, create=False) as fresh:
            fresh.verdict_totals()
            fresh.attempt_totals()
            for t in range(args.targets):
                fresh.last_closed_minute(f"t{t:03d}")

    report()  # warm the page cache the same way for all three
    base = median_time(baseline, args.repeat)
    report_s = median_time(report, args.repeat)
    restore_s = median_time(restore, args.repeat)
    result = build_report(ledger, target, month, now)
    print(
        f"month {month.start:%Y-%m-%d}..{month.end:%Y-%m-%d}: {result.figures.total} minutes, "
        f"{result.figures.apparent_failure} failed, {len(result.incidents)} incidents"
    )
    print(f"baseline  bare count over the month   {base * 1000:8.2f} ms  (1.0x)")
    print(
        f"report    one target, one month        {report_s * 1000:8.2f} ms  "
        f"({report_s / base:.1f}x baseline; goal < 200 ms)"
    )
    print(
        f"restore   open + totals + last minutes {restore_s * 1000:8.2f} ms  "
        f"({restore_s / base:.1f}x baseline; goal < 2000 ms)"
    )


if __name__ == "__main__":
    main()
