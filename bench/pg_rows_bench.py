"""A minute's rows into PostgreSQL at fleet scale: the statements a close of N targets sends,
timed one by one against a durable local cluster (tests/postgres_fixture.py), same run.

- insert: N `vantage_minutes`-shaped rows (primary key, minute index, chain index), new every
  minute, by the unnest INSERT ... ON CONFLICT DO NOTHING RETURNING the ledger used before,
  and by COPY, which it now tries first (`PostgresConnection._copy_if_all_new`);
- heads: the 2N chain heads of such a close read and moved in one UPDATE each, with the
  table's default fillfactor and with 50 (room on each page for HOT updates);
- staged: through the ledger's own `PostgresConnection` on a real ledger's tables, the 2N
  heads of a close read, then moved, and 2N running totals added, with their rows sent as
  parameter arrays and by COPY into a temporary table (`STAGE_ROWS`, `_rows_source`): the
  prober's CPU (the process's) and the wall time of each minute's transaction.

Medians over the minutes, wall time of each statement (client and server); a commit between.

    python bench/pg_rows_bench.py [--rows 10000] [--minutes 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.postgres_fixture

import psycopg

from prober.ledger import postgres
from prober.ledger.store import Ledger
from tests.postgres_fixture import PostgresCluster

COLUMNS = (
    "series_id, vantage, minute, state, reason, success, failure, client_error, throttled, "
    "prober_fault, seq, hash, field_map"
)
TYPES = ("int", "text", "int", "smallint", "smallint", *("int",) * 5, "bigint", "bytea", "bytea")
TABLE = """CREATE TABLE vm (
    series_id integer NOT NULL, vantage text NOT NULL, minute integer NOT NULL,
    state smallint NOT NULL, reason smallint NOT NULL DEFAULT 0,
    success integer NOT NULL DEFAULT 0, failure integer NOT NULL DEFAULT 0,
    client_error integer NOT NULL DEFAULT 0, throttled integer NOT NULL DEFAULT 0,
    prober_fault integer NOT NULL DEFAULT 0, seq bigint, hash bytea, field_map bytea,
    PRIMARY KEY (series_id, minute, vantage))"""
HEADS = """CREATE TABLE h (tbl text NOT NULL, series_id integer NOT NULL, vantage text NOT NULL,
    seq bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (tbl, series_id, vantage))"""


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms (max {max(values) * 1e3:.0f})"


def inserts(conn: psycopg.Connection, rows: int, minutes: int, mode: str) -> list[float]:
    conn.execute("DROP TABLE IF EXISTS vm")
    conn.execute(TABLE)
    conn.execute("CREATE INDEX vm_by_minute ON vm (minute)")
    conn.execute("CREATE UNIQUE INDEX vm_chain ON vm (series_id, vantage, seq)")
    arrays = ", ".join(f"%b::{t}[]" for t in TYPES)
    times = []
    for minute in range(1, minutes + 1):
        batch = [
            (i, "local", minute, 0, 0, 4, 0, 0, 0, 0, minute, os.urandom(32), os.urandom(12))
            for i in range(rows)
        ]
        with conn.transaction():
            start = time.perf_counter()
            if mode == "unnest":
                conn.execute(
                    f"INSERT INTO vm ({COLUMNS}) SELECT * FROM unnest({arrays}) "
                    "ON CONFLICT DO NOTHING RETURNING minute",
                    [list(column) for column in zip(*batch, strict=True)],
                ).fetchall()
            else:
                with conn.cursor() as cur, cur.copy(f"COPY vm ({COLUMNS}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
            times.append(time.perf_counter() - start)
    return times


def heads(
    conn: psycopg.Connection, rows: int, minutes: int, fillfactor: int
) -> tuple[list[float], list[float], tuple]:
    conn.execute("DROP TABLE IF EXISTS h")
    conn.execute(f"{HEADS} WITH (fillfactor = {fillfactor})")
    keys = [
        ("attempts" if i < rows else "vantage_minutes", i % rows, "local") for i in range(2 * rows)
    ]
    key_arrays = [[k[i] for k in keys] for i in range(3)]
    conn.execute(
        "INSERT INTO h SELECT t, s, v, 0, '\\x00' FROM unnest(%b::text[], %b::int[], %b::text[]) "
        "AS k(t, s, v)",
        key_arrays,
    )
    reads, updates = [], []
    for minute in range(1, minutes + 1):
        hashes = [os.urandom(32) for _ in keys]
        with conn.transaction():
            start = time.perf_counter()
            conn.execute(
                "SELECT h.seq, h.hash FROM h, unnest(%b::text[], %b::int[], %b::text[]) "
                "AS k(t, s, v) WHERE h.tbl = k.t AND h.series_id = k.s AND h.vantage = k.v",
                key_arrays,
            ).fetchall()
            middle = time.perf_counter()
            conn.execute(
                "UPDATE h SET seq = u.seq, hash = u.hash FROM unnest(%b::text[], %b::int[], "
                "%b::text[], %b::bigint[], %b::bytea[]) AS u(t, s, v, seq, hash) "
                "WHERE h.tbl = u.t AND h.series_id = u.s AND h.vantage = u.v",
                [*key_arrays, [minute] * len(keys), hashes],
            )
            reads.append(middle - start)
            updates.append(time.perf_counter() - middle)
    hot = conn.execute(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'h'"
    ).fetchone()
    return reads, updates, hot


def staged(url: str, password: str, rows: int, minutes: int) -> None:
    """The ledger's heads and totals statements, rows as arrays against rows by COPY."""
    with Ledger(url, password=password) as ledger:
        db: postgres.PostgresConnection = ledger._db  # type: ignore[assignment]
        db.execute(
            "INSERT INTO series (id, target, probe) SELECT g, 't' || g, '' "
            "FROM generate_series(1, ?) g",
            (2 * rows,),
        )
        keys = [("minutes", sid, "") for sid in range(1, 2 * rows + 1)]
        figures: dict[str, tuple[list[float], list[float]]] = {}
        for minute in range(1, 2 * minutes + 1):
            # alternating, so both see the same tables as they grow
            mode = "arrays" if minute % 2 else "copy"
            postgres.STAGE_ROWS = 10**9 if mode == "arrays" else 1_000
            heads = [(*k, minute, os.urandom(32)) for k in keys]
            counts = [(k[1], 1, 1) for k in keys]
            cpu, wall = time.process_time(), time.perf_counter()
            db.begin_write()
            db.lock_heads(keys, lambda _key: b"")
            db.write_heads(heads)
            db.add_counts("verdict_totals", ("series_id", "state"), ("int", "smallint"), counts)
            db.execute("COMMIT")
            if minute > 2:  # the first of each: the heads and totals are inserted, not moved
                took = figures.setdefault(mode, ([], []))
                took[0].append(time.process_time() - cpu)
                took[1].append(time.perf_counter() - wall)
        for mode, (cpus, walls) in figures.items():
            print(
                f"{2 * rows} heads read and moved, {2 * rows} totals added, rows as {mode}: "
                f"prober CPU {ms(cpus)}, wall {ms(walls)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="targets in the minute")
    parser.add_argument("--minutes", type=int, default=10)
    args = parser.parse_args()
    cluster = PostgresCluster(durable=True).start()
    try:
        sizes = (args.rows, args.minutes)
        url = cluster.url(cluster.create_database("rows"))
        with psycopg.connect(url, password=cluster.password, autocommit=True) as conn:
            for mode in ("unnest", "copy", "unnest", "copy"):  # twice: the order's effect
                times = inserts(conn, args.rows, args.minutes, mode)
                print(f"insert {args.rows} rows by {mode}: {ms(times)}")
            for fillfactor in (100, 50):
                reads, updates, hot = heads(conn, args.rows, args.minutes, fillfactor)
                print(
                    f"{2 * args.rows} heads, fillfactor {fillfactor}: read {ms(reads)}, "
                    f"update {ms(updates)}; updated / of them HOT: {hot[0]} / {hot[1]}"
                )
        staged(cluster.url(cluster.create_database("staged")), cluster.password, *sizes)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
