"""Hash-chain benchmark: `ledger verify` over a year of one target, and what chaining costs
the ledger's writes.

1. verify: a ledger of one target with three probes over `--days` (default a year): the
   minutes of the target and each probe, one network round a minute, and `--attempts`
   attempts a minute per probe (default 31: ~51.5 million rows in all), every row chained
   with the ledger's own encoder; then `chain.verify` of the whole ledger in a child
   process (rows/s, seconds, the peak RSS of the process and of its largest worker). The
   baseline, in the same run: fetching the same rows in the same order with no hashing
   (one process): the least any check must pay. `--realistic` also builds and verifies the
   default deployment's year (1 attempt a minute per probe: ~4.2 million rows).
2. write cost (`--write`): the ledger's hot writes at `--targets` (default 5,000): a
   minute's attempts stored as they end (`store_evidence`), then its closing batch
   (`write_minutes`), on SQLite and on a real PostgreSQL, by the code before the chains
   (`--before`, a git revision, its `prober/` exported to a temp folder) and by this tree,
   alternating, in child processes; medians of wall and CPU.

    python bench/chain_bench.py [--days 365] [--attempts 31] [--realistic] [--write]
        [--targets 5000] [--db bench/out/chain.sqlite3]

The ledgers are built once and reused while their size parameters match (the full size
takes a while and ~15 GB of disk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prober.ledger import chain  # noqa: E402
from prober.ledger.store import Ledger  # noqa: E402

START = 29_462_400  # 2026-01-01T00:00Z as an epoch minute
PROBES = ("login", "send_c2c", "group")
_ATTEMPT_INDEXES = (
    "CREATE INDEX attempts_by_minute ON attempts (series_id, minute)",
    "CREATE INDEX attempts_by_start ON attempts (started_at)",
    "CREATE INDEX attempts_by_vantage_minute ON attempts (vantage, minute)",
    "CREATE UNIQUE INDEX attempts_chain ON attempts (series_id, vantage, seq)",
)


def _size_file(path: Path) -> Path:
    return path.with_name(path.name + ".size.json")


def build(path: Path, days: int, per_minute: int) -> float:
    """Build the ledger (indexes made after the rows, as a bulk load does); seconds taken."""
    wanted = {"days": days, "attempts": per_minute, "schema": 3}
    size = _size_file(path)
    if path.exists() and size.exists() and json.loads(size.read_text()) == wanted:
        return 0.0
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    Ledger(path).close()  # the schema
    t0 = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # building only; the product writes with FULL
    for name in ("attempts_by_minute", "attempts_by_start", "attempts_by_vantage_minute"):
        db.execute(f"DROP INDEX {name}")
    db.execute("DROP INDEX attempts_chain")
    series = [("t", "")] + [("t", p) for p in PROBES]
    for sid, (target, probe) in enumerate(series, 1):
        db.execute("INSERT INTO series (id, target, probe) VALUES (?, ?, ?)", (sid, target, probe))
    heads: dict[tuple[str, int, str], tuple[int, bytes]] = {}
    link = chain.row_link

    def chained(table: str, sid: int, vantage: str, fields: tuple) -> tuple:
        key = (table, sid, vantage)
        seq, prev = heads.get(key, (0, b""))
        names = series[sid - 1] if sid else ("", "")
        ck = chain.ChainKey(table, names[0], names[1], vantage)
        if not seq:
            prev = chain.genesis(ck)
        seq += 1
        digest, fields_map = link(ck, prev, seq, fields)
        heads[key] = (seq, digest)
        return (seq, digest, fields_map)

    minutes = days * 1440
    day = 1440
    for first in range(START, START + minutes, day):
        db.execute("BEGIN")
        minute_rows, attempt_rows, rounds = [], [], []
        for minute in range(first, first + day):
            failed = minute % 997 == 0  # a failed minute now and then
            for k in range(per_minute):
                for p, probe in enumerate(PROBES, 2):
                    bad = failed and probe == "login"
                    fields = (
                        minute, minute * 60 + k * (60 / per_minute) + 0.25 * p, 0.05 + k * 1e-4,
                        1 if bad else 0, "timeout" if bad else "", None, 504 if bad else 200,
                        "gateway timed out" if bad else "",
                    )  # fmt: skip
                    attempt_rows.append(
                        (p, *fields, "bench", *chained("attempts", p, "bench", fields))
                    )
            counts = (0, per_minute) if failed else (per_minute, 0)
            for sid in range(1, 5):
                total = 3 * per_minute if sid == 1 else per_minute
                ok = not (failed and sid in (1, 2))
                fields = (minute, 0 if ok else 1, 0, *((total, 0) if ok else counts), 0, 0, 0)
                minute_rows.append((sid, *fields, *chained("minutes", sid, "", fields)))
            fields = (minute, 0)
            rounds.append(("bench", *fields, *chained("network_rounds", 0, "bench", fields)))
        db.executemany(
            "INSERT INTO minutes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", minute_rows
        )
        db.executemany(
            "INSERT INTO attempts (series_id, minute, started_at, duration, outcome, error_kind, "
            "error_code, http_status, detail, vantage, seq, hash, field_map) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            attempt_rows,
        )
        db.executemany(
            "INSERT INTO network_rounds (vantage, minute, all_failed, seq, hash, field_map) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rounds,
        )
        db.execute("COMMIT")
    db.executemany(
        "INSERT INTO chain_heads VALUES (?, ?, ?, ?, ?)",
        [(*key, *head) for key, head in heads.items()],
    )
    for statement in _ATTEMPT_INDEXES:
        db.execute(statement)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size.write_text(json.dumps(wanted))
    return time.perf_counter() - t0


def rows_of(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            t: db.execute(f"SELECT max(rowid) FROM {t}").fetchone()[0] or 0
            if t in ("attempts", "network_rounds")
            else db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in chain.TABLES
        }
    finally:
        db.close()


_VERIFY_CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from prober.ledger import chain
from prober.ledger.store import Ledger
with Ledger(sys.argv[2], readonly=True) as ledger:
    t0 = time.perf_counter()
    result = chain.verify(ledger)
    seconds = time.perf_counter() - t0
print(json.dumps({
    "ok": result.ok, "rows": sum(result.rows.values()), "seconds": seconds,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "first": result.first.describe() if result.first else None,
}))
"""

_FETCH_CHILD = """
import json, resource, sqlite3, sys, time
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
db.text_factory = bytes
t0 = time.perf_counter()
rows = 0
queries = [
    ("SELECT seq, minute, state, reason, success, failure, client_error, throttled, "
     "prober_fault, hash FROM minutes WHERE series_id = ? AND seq >= 1 ORDER BY seq", (s,))
    for s in range(1, 5)
] + [
    ("SELECT seq, minute, started_at, duration, outcome, error_kind, error_code, http_status, "
     "detail, hash FROM attempts WHERE series_id = ? AND vantage = 'bench' AND seq >= 1 "
     "ORDER BY seq", (s,))
    for s in range(2, 5)
] + [("SELECT seq, minute, all_failed, hash FROM network_rounds WHERE vantage = 'bench' "
      "AND seq >= 1 ORDER BY seq", ())]
for sql, params in queries:
    cursor = db.execute(sql, params)
    while chunk := cursor.fetchmany(5000):
        rows += len(chunk)
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def verify_run(path: Path, label: str, repeat: int) -> None:
    rows = rows_of(path)
    print(f"\n{label}: {path} ({sum(rows.values()):,} rows: {rows})")
    fetch = [child(_FETCH_CHILD, str(path)) for _ in range(repeat)]
    runs = [child(_VERIFY_CHILD, str(ROOT), str(path)) for _ in range(repeat)]
    assert all(r["ok"] for r in runs), runs
    base = statistics.median(f["seconds"] for f in fetch)
    secs = statistics.median(r["seconds"] for r in runs)
    total = runs[0]["rows"]
    print(f"  baseline, bare fetch in chain order, 1 process: {base:8.1f} s "
          f"({total / base:,.0f} rows/s)")  # fmt: skip
    print(
        f"  verify, {os.cpu_count()} workers:                   {secs:8.1f} s "
        f"({total / secs:,.0f} rows/s, {secs / base:.2f}x baseline); "
        f"peak RSS {max(r['rss_mb'] for r in runs):.0f} MB (verify), "
        f"{max(r['worker_rss_mb'] for r in runs):.0f} MB (largest worker)"
    )
    print(f"  runs: {[round(r['seconds'], 1) for r in runs]}")


# -- write cost --------------------------------------------------------------------------

_WRITE_CHILD = """
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import prober
from prober.ledger.store import Ledger, PendingEvidence
from prober.records import Attempt, ClosedMinute
from prober.sla import Outcome, OutcomeCounts, State, Verdict
location, password = sys.argv[2], sys.argv[3] or None
targets, repeats = int(sys.argv[4]), int(sys.argv[5])
ok = Verdict(State.AVAILABLE)
ledger = Ledger(location, password=password)
store, close = [], []
base = 29_500_000
for i in range(repeats + 1):
    minute = base + i
    closed, attempts = [], []
    for t in range(targets):
        mine = [Attempt(f"t{t:04d}", "send", minute * 60 + k * 15 + 1, 0.1, Outcome.SUCCESS,
                        vantage="bench") for k in range(4)]
        attempts += mine
        probes = {"send": (ok, OutcomeCounts(4)), "login": (ok, OutcomeCounts())}
        closed.append(ClosedMinute(f"t{t:04d}", minute, ok, OutcomeCounts(4), probes, mine))
    w, c = time.perf_counter(), time.process_time()
    ledger.store_evidence(PendingEvidence("bench", attempts, [], time.time()))
    w2, c2 = time.perf_counter(), time.process_time()
    ledger.write_minutes(closed, PendingEvidence("bench", [], [], time.time()))
    w3, c3 = time.perf_counter(), time.process_time()
    if i:
        store.append(((w2 - w) * 1000, (c2 - c) * 1000))
        close.append(((w3 - w2) * 1000, (c3 - c2) * 1000))
ledger.close()
med = lambda xs, k: statistics.median(x[k] for x in xs)
print(json.dumps({"store": [med(store, 0), med(store, 1)],
                  "close": [med(close, 0), med(close, 1)]}))
"""


def write_cost(before: str, targets: int, repeats: int, rounds: int) -> None:
    from tests.postgres_fixture import PostgresCluster

    folder = Path(tempfile.mkdtemp(prefix="chain-bench-"))
    old = folder / "before"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", before, "prober"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    cluster = PostgresCluster(durable=True).start()
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for n in range(rounds):
            for code, label in ((str(old), "before"), (str(ROOT), "chained")):
                for backend in ("SQLite", "PostgreSQL"):
                    if backend == "SQLite":
                        location, password = str(folder / f"{label}-{n}.sqlite3"), ""
                    else:
                        location = cluster.url(cluster.create_database())
                        password = cluster.password
                    out = child(_WRITE_CHILD, code, location, password, str(targets), str(repeats))
                    results.setdefault((backend, label), []).append(out)
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"\nwrite cost, a minute of {targets:,} targets x 4 attempts (medians of {repeats} "
        f"minutes x {rounds} alternating runs): ms wall / ms CPU"
    )
    print(f"{'':28} {'store_evidence':>22} {'write_minutes':>22}")
    for backend in ("SQLite", "PostgreSQL"):
        for label in ("before", "chained"):
            runs = results[(backend, label)]
            store = [statistics.median(r["store"][k] for r in runs) for k in (0, 1)]
            close = [statistics.median(r["close"][k] for r in runs) for k in (0, 1)]
            print(
                f"{backend + ' ' + label:28} {store[0]:12.1f} / {store[1]:7.1f} "
                f"{close[0]:12.1f} / {close[1]:7.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--attempts", type=int, default=31, help="attempts a minute per probe")
    parser.add_argument("--db", default=str(ROOT / "bench" / "out" / "chain.sqlite3"))
    parser.add_argument("--repeat", type=int, default=3, help="verify runs (median)")
    parser.add_argument("--realistic", action="store_true", help="also 1 attempt a minute")
    parser.add_argument("--no-verify", action="store_true", help="skip the 52M-row verify")
    parser.add_argument("--write", action="store_true", help="measure the write cost")
    parser.add_argument("--targets", type=int, default=5000)
    parser.add_argument("--before", default="fadcaed^", help="git revision before the chains")
    parser.add_argument("--write-repeats", type=int, default=5)
    parser.add_argument("--write-rounds", type=int, default=2)
    args = parser.parse_args()
    path = Path(args.db)
    if not args.no_verify:
        took = build(path, args.days, args.attempts)
        if took:
            print(f"built {path} in {took:.0f} s")
        verify_run(
            path, f"{args.days} days, {args.attempts} attempts a minute per probe", args.repeat
        )
    if args.realistic:
        small = path.with_name("chain-realistic.sqlite3")
        took = build(small, args.days, 1)
        if took:
            print(f"built {small} in {took:.0f} s")
        verify_run(small, f"{args.days} days, 1 attempt a minute per probe", args.repeat)
    if args.write:
        write_cost(args.before, args.targets, args.write_repeats, args.write_rounds)


if __name__ == "__main__":
    main()
