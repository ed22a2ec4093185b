"""Status page benchmark: 50 targets with a year of minutes in the ledger (and the last
31 days of per-probe rows, 7 days of attempts for the latency chart), the overview and a
target page built from scratch on every request, over HTTP from the daemon's own web app.

Each request first marks the view as changed, so nothing built earlier is reused (a page
is otherwise kept until the next minute closes: a wall screen refreshing every 15 s is
served from that). Cold figures (the first target page after start, which reads 7 days of
attempts and 12 ended months) are reported apart. While the pages are requested, a timer
on the same event loop measures how late it fires: what an attempt planned then would see.

    python bench/status_bench.py [--targets 50] [--days 365] [--requests 60]
        [--db bench/out/status.sqlite3]

The ledger file is built once and reused while its size parameters match (about 30 s and
900 MB at the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
from aiohttp import web

from prober.config.models import parse_config
from prober.expose.web import make_app
from prober.expose.webconfig import WebConfigFile, WebSecurity
from prober.ledger.codes import OUTCOME_CODES, REASON_CODES, STATE_CODES
from prober.ledger.store import Ledger
from prober.ledger.view import LedgerView
from prober.sla import Outcome, Reason, State
from prober.status.views import StatusPage

PROBES = ("login", "send_c2c", "send_group")


def config_text(path: Path, targets: int, anchor: date) -> str:
    lines = [f"ledger: {{path: {path.name}}}", "targets:"]
    for t in range(targets):
        lines += [
            f"  - name: t{t:02d}",
            "    kind: external",
            '    external: {command: ["true"]}',
            "    probes: {login: {}, send_c2c: {}, send_group: {}}",
            f"    sla: {{service_month_anchor: {anchor}, timezone: Asia/Shanghai, "
            'monthly_fee: "1000", currency: USD}',
        ]
    return "\n".join(lines) + "\n"


def build(path: Path, targets: int, days: int, end: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    Ledger(path).close()  # the schema, as the daemon creates it
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")  # building only; the product writes with FULL
    start = end - days * 1440
    probe_start = end - 31 * 1440
    attempt_start = end - 7 * 1440
    ok, bad = STATE_CODES[State.AVAILABLE], STATE_CODES[State.APPARENT_FAILURE]
    no_data, down = STATE_CODES[State.NO_DATA], REASON_CODES[Reason.PROBER_DOWN]
    success, failure = OUTCOME_CODES[Outcome.SUCCESS], OUTCOME_CODES[Outcome.FAILURE]
    rng = random.Random(7)
    sid = 0
    for t in range(targets):
        db.execute("BEGIN")
        failed: set[int] = set()
        for _ in range(days // 2):  # a short outage every other day
            first = rng.randrange(start, end)
            failed.update(range(first, first + rng.randint(1, 20)))

        def state(m: int, failed: set[int] = failed) -> tuple[int, int]:
            if m in failed:
                return bad, 0
            return (no_data, down) if m % 4999 == 0 else (ok, 0)

        series = []
        for probe in ("", *PROBES):
            sid += 1
            db.execute("INSERT INTO series VALUES (?, ?, ?)", (sid, f"t{t:02d}", probe))
            series.append(sid)
            since = start if probe == "" else probe_start
            db.executemany(
                "INSERT INTO minutes (series_id, minute, state, reason) VALUES (?, ?, ?, ?)",
                ((sid, m, *state(m)) for m in range(since, end)),
            )
        db.executemany(
            "INSERT INTO attempts (series_id, minute, started_at, duration, outcome) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                (s, m, m * 60 + 5.0, 0.05 + rng.random() * 0.2, failure if m in failed else success)
                for m in range(attempt_start, end)
                for s in series[1:]
            ),
        )
        db.execute("COMMIT")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('bench', ?)", (f"{targets}x{days}@{end}",))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ordered):6.1f} ms   p95 {p95:6.1f} ms   (n={len(ordered)})"


async def measure(config_path: Path, requests: int) -> None:
    config = parse_config(config_path.read_text(), config_path)
    view = LedgerView()
    now = time.time()
    with Ledger(config.ledger_path, readonly=True) as ledger:
        t0 = time.perf_counter()
        view.restore(ledger, {t.name: t.sla.calendar() for t in config.config.targets}, now)
        print(f"view restored in {time.perf_counter() - t0:.1f} s (the daemon's start)")
    page = StatusPage(
        view, lambda: config, network_up=lambda: 1, version="bench", clock=lambda: now
    )
    security = WebSecurity(None, WebConfigFile())
    app = make_app(lambda _om: b"", lambda: (True, "ok"), None, lambda: security, page.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    lateness: list[float] = []
    running = True

    async def ticker() -> None:
        # a timer every 10 ms, as the clockwork arms one per attempt
        loop = asyncio.get_running_loop()
        while running:
            planned = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lateness.append((loop.time() - planned) * 1000)

    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> float:
            view.generation += 1  # nothing built earlier may be reused
            t = time.perf_counter()
            async with session.get(base + path) as response:
                body = await response.read()
                assert response.status == 200, (path, response.status, body[:200])
            return (time.perf_counter() - t) * 1000

        tick = asyncio.create_task(ticker())
        first_overview = await get("/")
        # as the daemon does at start: read what no longer changes (12 ended months, 7 days
        # of whole hours of attempts) once, in the page's threads
        t0 = time.perf_counter()
        await page.warm()
        warm_seconds = time.perf_counter() - t0
        lateness.clear()
        names = [t.name for t in config.config.targets]
        cold = [await get(f"/targets/{name}") for name in names]
        overview = [await get("/") for _ in range(requests)]
        target = [await get(f"/targets/{names[i % len(names)]}") for i in range(requests)]
        await get("/")
        cached_t = time.perf_counter()
        async with session.get(base + "/") as response:  # the view unchanged since
            await response.read()
        cached = (time.perf_counter() - cached_t) * 1000
        api = [await get("/api/v1/targets") for _ in range(requests)]
        running = False
        await tick
    await page.close()
    await runner.cleanup()
    print(
        f"overview (50 targets)     {stats(overview)}   first after start {first_overview:.0f} ms"
    )
    print(f"target page               {stats(target)}")
    print(f"warm-up after start       {warm_seconds:.1f} s in the page's threads")
    print(f"target page, first view   {stats(cold)}")
    print(f"/api/v1/targets           {stats(api)}")
    print(f"overview, unchanged view  {cached:.1f} ms (served as built)")
    late = sorted(lateness)
    print(
        f"a 10 ms timer on the loop meanwhile: median {statistics.median(late):.2f} ms late, "
        f"p99 {late[int(0.99 * len(late))]:.2f} ms, max {late[-1]:.2f} ms (n={len(late)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--db", type=Path, default=Path("bench/out/status.sqlite3"))
    args = parser.parse_args()
    end = int(time.time() // 60)
    key = f"{args.targets}x{args.days}"
    found = None
    if args.db.exists():
        with sqlite3.connect(args.db) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'bench'").fetchone()
            found = row[0] if row else None
    if found is None or not found.startswith(key + "@"):
        t0 = time.perf_counter()
        build(args.db, args.targets, args.days, end)
        print(f"built {args.db} in {time.perf_counter() - t0:.0f} s")
    else:
        end = int(found.split("@")[1])
    # a purchase date a year and a bit back, so 12 ended months lie in the ledger
    anchor = (datetime.fromtimestamp(end * 60, UTC) - timedelta(days=365 + 10)).date()
    anchor = anchor.replace(day=min(anchor.day, 28))
    config_path = args.db.with_suffix(".yaml")
    config_path.write_text(config_text(args.db, args.targets, anchor))
    print(f"ledger {args.db}: {args.db.stat().st_size / 1e6:.0f} MB, {key} days of minutes")
    asyncio.run(measure(config_path, args.requests))


if __name__ == "__main__":
    main()
