"""Daemon benchmark: N `http` targets, 4 attempts a minute each, against a fast local server.

For each N it starts the real daemon (pinned to CPU 0; the server runs on CPU 1), lets it
warm up, then measures over whole minutes: attempts/s, CPU per attempt, RSS, scheduler lag
(p50/p99 from the lag histogram) and, in two more minutes outside the CPU window, how long
after a minute's end all its verdicts are in /metrics and how long a scrape takes (one every
2 s for a minute, the minute's close among them: median, p90, max, and the three
slowest with the second of the minute each began at). Two baselines,
measured in the same run on the daemon's core: a bare aiohttp keep-alive client sending the
same requests in a loop (the cost of one HTTP exchange on a busy loop), and the same client
sending them at the daemon's rate, one request per wake-up of its event loop (what an
evenly spread prober would pay with nothing around the request). It also counts, over the
measured minutes, the attempts skipped for starting late (`im_scheduler_misfires_total`) and
the minutes recorded `no_data` (a prober that keeps up has none).

`--ledger sqlite postgres` runs every size on both ledgers, one after the other: the
PostgreSQL one is a durable cluster of Debian's PostgreSQL on 127.0.0.1 (tests/
postgres_fixture.py), pinned to CPU 1 with the server, and the daemon on it is a fleet of
one (it decides as a vantage and closes the fleet's minutes). The last column is the
figure's ratio to SQLite's at the same size.

`--profile DIR` samples the daemon with py-spy (every thread, 100 a second, without
stopping it) over the measured minutes and keeps the collapsed stacks in DIR
(LEDGER-TARGETS.txt; `python bench/profile_summary.py FILE` says where the time goes). The
sampler runs on CPU 1, but reading the daemon's memory is not free: take the CPU figures
from a run without it.

    python bench/daemon_bench.py [--targets 1 100 1000 5000] [--minutes 2]
                                 [--ledger sqlite postgres] [--keep-logs DIR] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.postgres_fixture import PostgresCluster

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each of the process's threads but its main one."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        if int(task.name) == pid:
            continue
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        times[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return times


WARM_DONE = ("status page caches warm", "status page warm-up stopped")


def settle(pid: int, log: Path | None = None, limit: float = 1800.0) -> float:
    """Wait until the status page's start-up warm-up (it reads every target once in its own
    threads, competing with the event loop for the GIL) has said it ended in `log` (the
    daemon's, at level info; None: no warm-up) and no worker thread of the daemon is busy;
    returns the seconds waited. (Thread CPU alone is not enough: on PostgreSQL a build
    mostly waits for the server, and warm-up went on, unseen, into the measured minutes.)"""
    start = time.time()
    before = thread_cpu(pid)
    quiet = 0
    while time.time() - start < limit:
        time.sleep(5)
        now = thread_cpu(pid)
        busiest = max((now[t] - before.get(t, 0.0) for t in now), default=0.0)
        before = now
        quiet = quiet + 1 if busiest < 0.5 else 0  # under 10 % of a core
        warm = log is None or any(line in log.read_text() for line in WARM_DONE)
        if quiet >= 2 and warm:
            break
    return time.time() - start


def find_py_spy() -> str | None:
    """py-spy in the environment of this Python (a venv not on PATH), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() > 1 else []


def start_fast_server() -> tuple[subprocess.Popen[bytes], str]:
    """bench/fast_server.py on a free port, pinned to CPU 1; the process and its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [*pinned(1), sys.executable, str(ROOT / "bench" / "fast_server.py"), str(port)]
    )
    return server, f"http://127.0.0.1:{port}"


def start_prometheus(
    folder: Path, config: str, *, cpu: int | None = None, flags: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's prometheus with `config` (YAML text) in `folder`, once it is ready; returns
    the process and its base URL."""
    binary = shutil.which("prometheus")
    if not binary:
        raise SystemExit("needs Debian's prometheus package")
    (folder / "prometheus.yml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(pinned(cpu) if cpu is not None else []),
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            scrape(url + "/-/ready")
            return proc, url
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("prometheus did not become ready") from None
            time.sleep(0.3)


def write_config(path: Path, targets: int, server: str) -> None:
    lines = ["ledger: {path: ledger.sqlite3}", "targets:"]
    for i in range(targets):
        lines += [
            f"  - name: t{i:05d}",
            "    kind: http",
            f"    http: {{base_url: '{server}', probes: {{send_c2c: [{{method: POST, url: /send, "
            "json: {text: 'bench {uuid}'}, expect_json: {ok: true}}]}}",
            "    probes: {send_c2c: {attempts_per_minute: 4, timeout: 5s}}",
            "    sla: {service_month_anchor: 2026-01-01}",
        ]
    path.write_text("\n".join(lines) + "\n")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def histogram(text: str, name: str) -> tuple[list[tuple[float, float]], float]:
    buckets, count = [], 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == f"{name}_count":
                count += sample.value
    return sorted(buckets), count


def attempts_done(text: str) -> float:
    return histogram(text, "im_probe_duration_seconds")[1]


def quantile(
    buckets: list[tuple[float, float]], before: list[tuple[float, float]], q: float
) -> float:
    """Upper bound of the bucket holding quantile q of the observations between two scrapes."""
    earlier = dict(before)
    deltas = [(le, value - earlier.get(le, 0.0)) for le, value in buckets]
    total = deltas[-1][1]
    for le, cumulative in deltas:
        if total and cumulative >= q * total:
            return le
    return float("nan")


def counter_total(text: str, name: str, where: str = "") -> float:
    """The sum of a family's samples (those whose line contains `where`), by a plain scan."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in "{ " and where in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def verdicts_so_far(text: str) -> float:
    """Every minute verdict exported (im_minute_verdicts_total summed over its series), read
    with a plain scan: the client library's parser takes seconds on 10,000 targets."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("im_minute_verdicts_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def verdict_delay(metrics_url: str, targets: int) -> float:
    """Seconds from the end of a minute until all `targets` verdicts for it are in /metrics,
    polled every 0.25 s (the whole window is outside the CPU measurement)."""
    boundary = (int(time.time() // 60) + 1) * 60
    time.sleep(max(0.0, boundary - 3 - time.time()))
    before = verdicts_so_far(scrape(metrics_url))
    time.sleep(max(0.0, boundary - time.time()))
    while time.time() < boundary + 60:
        if verdicts_so_far(scrape(metrics_url)) >= before + targets:
            return time.time() - boundary
        time.sleep(0.25)
    return float("nan")


def scrapes_over_a_minute(
    metrics_url: str, every: float = 2.0
) -> tuple[list[tuple[float, float]], str]:
    """Each scrape's second of the minute it began at and the seconds it took, one every
    `every` s for a minute (the minute's close among them, as for a Prometheus scraping at
    any phase), and the last body."""
    times, body, end = [], "", time.time() + 60
    while time.time() < end:
        began, s0 = time.time() % 60, time.perf_counter()
        body = scrape(metrics_url)
        times.append((began, time.perf_counter() - s0))
        time.sleep(max(0.0, every - (time.perf_counter() - s0)))
    return times, body


def baseline(server: str, requests: int) -> float:
    """CPU seconds per request of a bare aiohttp keep-alive client (the daemon's own HTTP
    stack, with nothing around it)."""
    import aiohttp

    async def main() -> None:
        async with aiohttp.ClientSession(server) as session:
            for _ in range(requests):
                async with session.post("/send", json={"text": "bench"}) as response:
                    await response.json()

    return on_core(0, main, requests)


def paced_baseline(server: str, rate: float, seconds: float = 30.0, burst: int = 1) -> float:
    """CPU seconds per request of the same bare aiohttp client sending `rate` requests a
    second at evenly spaced instants, `burst` at each, each in its own task (what a prober
    does, minus the prober), on the daemon's core. An event loop woken for one request
    pays far more CPU per request than one kept busy by a loop of them."""
    import aiohttp

    total = int(rate * seconds) // burst * burst

    async def main() -> None:
        async with aiohttp.ClientSession(server) as session:

            async def one() -> None:
                async with session.post("/send", json={"text": "bench"}) as response:
                    await response.json()

            loop = asyncio.get_running_loop()
            start, tasks = loop.time(), set()
            for i in range(0, total, burst):
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                for _ in range(burst):
                    task = asyncio.create_task(one())
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)

    return on_core(0, main, total)


def on_core(cpu: int, main: Callable[[], Coroutine[Any, Any, None]], requests: int) -> float:
    """CPU seconds per request of `main`, run with this process pinned to `cpu` (the
    daemon's), the affinity restored after."""
    before = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu})
    try:
        start = resource.getrusage(resource.RUSAGE_SELF)
        asyncio.run(main())
        end = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.sched_setaffinity(0, before)
    return (end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime) / requests


# The daemon without the status page's start-up warm-up (which reads every target once in
# the page's threads), to measure the rest apart from it: `--no-status-warm`.
WITHOUT_WARM = (
    "import sys\n"
    "import prober.status.views as views\n"
    "async def skipped(self): pass\n"
    "views.StatusPage.warm = skipped\n"
    "from prober.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


PASSWORD_ENV = "IM_PROBER_BENCH_PG_PASSWORD"


def use_postgres(config: Path, url: str) -> None:
    """Point a config of write_config at a PostgreSQL ledger (a fleet of one, vantage
    "bench"); the password comes from the environment variable PASSWORD_ENV."""
    text = config.read_text()
    head = "ledger: {path: ledger.sqlite3}\n"
    assert text.startswith(head)
    config.write_text(
        f"vantage: bench\nledger: {{url: '{url}', password: {{env: {PASSWORD_ENV}}}}}\n"
        + text[len(head) :]
    )


def start_postgres() -> PostgresCluster:
    """A durable PostgreSQL cluster on 127.0.0.1 (tests/postgres_fixture.py), pinned to
    CPU 1 with the fast server."""
    sys.path.insert(0, str(ROOT))
    from fleet_bench import pin_tree

    from tests.postgres_fixture import PostgresCluster

    cluster = PostgresCluster(durable=True).start()
    pin_tree(cluster.pid or 0, 1)
    return cluster


def run_one(
    targets: int,
    minutes: int,
    server: str,
    *,
    status_warm: bool = True,
    postgres: tuple[str, str] | None = None,
    keep_log: Path | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """One daemon run; `postgres` is (ledger URL, password) for a PostgreSQL ledger;
    `keep_log`: run the daemon at debug (the close's write times) and keep its log there;
    `profile`: py-spy's collapsed stacks of the measured minutes to this file."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        write_config(config, targets, server)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IM_PROBER_")}
        if postgres is not None:
            use_postgres(config, postgres[0])
            env[PASSWORD_ENV] = postgres[1]
        port = free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        proc = subprocess.Popen(
            [
                *pinned(0),
                sys.executable,
                *(["-m", "prober"] if status_warm else ["-c", WITHOUT_WARM]),
                "run",
                "-c",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log-level",
                "debug" if keep_log else "info",  # info: for the warm-up's end (settle)
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "log", "w"),  # noqa: SIM115
        )
        try:
            deadline = time.time() + 120
            while True:
                try:
                    scrape(f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError((Path(tmp) / "log").read_text()) from None
                    time.sleep(0.2)
            settled = settle(proc.pid, Path(tmp) / "log" if status_warm else None)
            # warm up to the start of a whole minute after the first full minute
            start_at = (int(time.time() // 60) + 2) * 60 + 1
            time.sleep(max(0.0, start_at - time.time()))
            text0 = scrape(metrics_url)
            cpu0, t0 = cpu_seconds(proc.pid), time.time()
            spy = None
            if profile is not None:
                py_spy = find_py_spy()
                assert py_spy is not None  # checked by main
                spy = subprocess.Popen(
                    [
                        *pinned(1),
                        *(py_spy, "record", "--threads", "--nonblocking", "--format", "raw"),
                        *("--rate", "100", "--duration", str(minutes * 60)),
                        *("-o", str(profile), "--pid", str(proc.pid)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            time.sleep(minutes * 60)
            text1 = scrape(metrics_url)
            cpu1, t1 = cpu_seconds(proc.pid), time.time()
            if spy is not None:
                spy.wait(60)
            verdict_s = verdict_delay(metrics_url, targets)
            scrapes, body = scrapes_over_a_minute(metrics_url)
            scrape_times = [took for _, took in scrapes]
            slow = sorted(scrapes, key=lambda scraped: -scraped[1])[:3]
            lag0, _ = histogram(text0, "im_scheduler_lag_seconds")
            lag1, _ = histogram(text1, "im_scheduler_lag_seconds")
            attempts = attempts_done(text1) - attempts_done(text0)
            skipped = counter_total(text1, "im_scheduler_misfires_total") - counter_total(
                text0, "im_scheduler_misfires_total"
            )
            no_data = counter_total(
                text1, "im_minute_verdicts_total", 'state="no_data"'
            ) - counter_total(text0, "im_minute_verdicts_total", 'state="no_data"')
            return {
                "targets": targets,
                "attempts_per_s": attempts / (t1 - t0),
                "cpu_us_per_attempt": (cpu1 - cpu0) / attempts * 1e6,
                "rss_mb": rss_mb(proc.pid),
                "lag_p50_ms": quantile(lag1, lag0, 0.5) * 1000,
                "lag_p99_ms": quantile(lag1, lag0, 0.99) * 1000,
                "scrape_ms": statistics.median(scrape_times) * 1000,
                "scrape_p90_ms": statistics.quantiles(scrape_times, n=10)[-1] * 1000,
                "scrape_max_ms": max(scrape_times) * 1000,
                "scrape_lines": body.count("\n"),
                # the three slowest, with the second of the minute each began at
                "scrape_slowest": ", ".join(f"{t * 1e3:.0f} ms at :{at:04.1f}" for at, t in slow),
                "settle_s": settled,
                "verdict_s": verdict_s,
                "skipped": skipped,
                "no_data_minutes": no_data,
            }
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            if keep_log is not None:
                shutil.copyfile(Path(tmp) / "log", keep_log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 100, 1000, 5000])
    parser.add_argument("--minutes", type=int, default=2)
    parser.add_argument(
        "--no-status-warm", action="store_true", help="skip the status page's start-up reads"
    )
    parser.add_argument("--ledger", nargs="+", choices=["sqlite", "postgres"], default=["sqlite"])
    parser.add_argument(
        "--keep-logs",
        type=Path,
        metavar="DIR",
        help="run the daemon at debug and keep each run's log in DIR (LEDGER-TARGETS.log)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy's collapsed stacks of the measured minutes in DIR (LEDGER-TARGETS.txt)",
    )
    args = parser.parse_args()
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
    if args.profile:
        if find_py_spy() is None:
            raise SystemExit("--profile needs py-spy: pip install py-spy")
        args.profile.mkdir(parents=True, exist_ok=True)
    cluster = None
    if "postgres" in args.ledger:
        cluster = start_postgres()
    server, url = start_fast_server()
    try:
        time.sleep(1.5)
        base = baseline(url, 3000)
        print(
            f"baseline: bare aiohttp keep-alive request in a loop {base * 1e6:.0f} µs CPU "
            "(1.0x); paced: the same request at the daemon's rate, one per wake-up"
        )
        print(
            "ledger   targets  attempts/s  CPU µs/attempt (x baseline, x paced)  RSS MB  "
            "lag p50/p99 ms  scrape ms p50/p90/max (lines)  verdict s  skipped  no_data  "
            "CPU/RSS/verdict x sqlite"
        )
        for n in args.targets:
            paced = paced_baseline(url, n * 4 / 60)
            print(f"paced baseline at {n * 4 / 60:.1f} requests/s: {paced * 1e6:.0f} µs CPU")
            results: dict[str, dict[str, Any]] = {}
            for ledger in args.ledger:
                postgres = None
                if ledger == "postgres":
                    assert cluster is not None
                    database = cluster.create_database("daemon_bench")
                    postgres = (cluster.url(database), cluster.password)
                r = run_one(
                    n,
                    args.minutes,
                    url,
                    status_warm=not args.no_status_warm,
                    postgres=postgres,
                    keep_log=args.keep_logs / f"{ledger}-{n}.log" if args.keep_logs else None,
                    profile=args.profile / f"{ledger}-{n}.txt" if args.profile else None,
                )
                results[ledger] = r
                sqlite = results.get("sqlite")
                ratios = (
                    f"{r['cpu_us_per_attempt'] / sqlite['cpu_us_per_attempt']:.2f} / "
                    f"{r['rss_mb'] / sqlite['rss_mb']:.2f} / "
                    f"{r['verdict_s'] / sqlite['verdict_s']:.2f}"
                    if sqlite is not None and ledger != "sqlite"
                    else "-"
                )
                print(
                    f"{ledger:8s} {n:7d}  {r['attempts_per_s']:10.1f}  "
                    f"{r['cpu_us_per_attempt']:8.0f} "
                    f"({r['cpu_us_per_attempt'] / (base * 1e6):4.1f}x, "
                    f"{r['cpu_us_per_attempt'] / (paced * 1e6):4.2f}x)      "
                    f"{r['rss_mb']:6.0f}  {r['lag_p50_ms']:5.0f} / {r['lag_p99_ms']:<5.0f}    "
                    f"{r['scrape_ms']:4.0f} / {r['scrape_p90_ms']:4.0f} / "
                    f"{r['scrape_max_ms']:4.0f} "
                    f"({r['scrape_lines']})  {r['verdict_s']:9.1f}  "
                    f"{r['skipped']:7.0f}  {r['no_data_minutes']:7.0f}  {ratios}",
                    flush=True,
                )
                print(f"{'':17s}slowest scrapes: {r['scrape_slowest']}", flush=True)
    finally:
        server.terminate()
        server.wait()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
