"""Detection latency of a total outage: from the first failing attempt to (a) the minute's
verdict in im-prober's /metrics, (b) IMTargetFailingNow firing (from each attempt as it ends)
and (c) IMApparentFailure firing (from closed minutes) in a real Prometheus that scrapes
every 15 s and evaluates the shipped rules every 15 s.

One http target (1 login + 4 sends a minute, 5 s timeout) against a local server that starts
answering 503 at a minute boundary and keeps doing so. The floor for (a) is the end of the
first failed minute; the goal is the attempt timeout + 3 s after it. IMApparentFailure wants
two failed minutes (one failed minute in a quiet hour must not page), so (c) is about two
minutes plus closing, scrape and evaluation delays. IMTargetFailingNow wants every probe at
its streak threshold (the login's first failure, the sends' second): the goal for (b) is 45 s.

    python bench/detection_bench.py [--trials 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 5
sys.path.insert(0, str(ROOT / "bench"))
from daemon_bench import free_port, scrape, start_prometheus  # noqa: E402


class Switch:
    """A local target that answers 200 until told to fail; remembers the first 503."""

    def __init__(self) -> None:
        self.failing = False
        self.first_failure: float | None = None
        self.port = free_port()

    def start(self) -> None:
        async def handle(_request: web.Request) -> web.Response:
            if self.failing:
                if self.first_failure is None:
                    self.first_failure = time.time()
                return web.json_response({"ok": False}, status=503)
            return web.json_response({"ok": True})

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            await asyncio.Event().wait()

        threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
        time.sleep(0.5)


def failed_minutes(metrics_url: str) -> float:
    for line in scrape(metrics_url).splitlines():
        if line.startswith("im_minute_verdicts_total{") and 'state="apparent_failure"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def firing(prometheus: str) -> set[str]:
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=10) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def trial() -> tuple[float, float, float, float]:
    switch = Switch()
    switch.start()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        daemon_port = free_port()
        (folder / "config.yaml").write_text(
            "ledger: {path: ledger.sqlite3}\ntargets:\n"
            "  - name: im\n    kind: http\n"
            f"    http: {{base_url: 'http://127.0.0.1:{switch.port}', probes: "
            "{login: [{method: POST, url: /login}], send_c2c: [{method: POST, url: /send, "
            "expect_json: {ok: true}}]}}\n"
            f"    probes: {{login: {{attempts_per_minute: 1, timeout: {TIMEOUT}s}}, "
            f"send_c2c: {{attempts_per_minute: 4, timeout: {TIMEOUT}s}}}}\n"
            "    sla: {service_month_anchor: 2026-01-01}\n"
        )
        prometheus_config = yaml.safe_dump(
            {
                "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
                "rule_files": [str(ROOT / "deploy/prometheus/im-prober.rules.yml")],
                "scrape_configs": [
                    {
                        "job_name": "im-prober",
                        "static_configs": [{"targets": [f"127.0.0.1:{daemon_port}"]}],
                    }
                ],
            }
        )
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prober",
                "run",
                "-c",
                str(folder / "config.yaml"),
                "--web.listen-address",
                f"127.0.0.1:{daemon_port}",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        metrics_url = f"http://127.0.0.1:{daemon_port}/metrics"
        prometheus = None
        try:
            prometheus, prom_url = start_prometheus(folder, prometheus_config)
            # A healthy whole minute first, then the outage from the next boundary on.
            outage_at = (int(time.time() // 60) + 2) * 60
            time.sleep(outage_at - time.time())
            switch.failing = True
            first_minute_end = outage_at + 60
            verdict_at = now_at = alert_at = None
            while alert_at is None and time.time() < outage_at + 600:
                now = time.time()
                if verdict_at is None and failed_minutes(metrics_url) >= 1:
                    verdict_at = now
                alerts = firing(prom_url)
                if now_at is None and "IMTargetFailingNow" in alerts:
                    now_at = now
                if "IMApparentFailure" in alerts:
                    alert_at = now
                time.sleep(0.2 if verdict_at is None or now_at is None else 1.0)
            assert switch.first_failure is not None and verdict_at and now_at and alert_at
            return (
                verdict_at - first_minute_end,
                verdict_at - switch.first_failure,
                now_at - switch.first_failure,
                alert_at - switch.first_failure,
            )
        finally:
            for proc in [p for p in (prometheus, daemon) if p is not None]:
                proc.terminate()
                proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    print(
        "trial  verdict after minute end  verdict after 1st failure  "
        "IMTargetFailingNow after 1st failure  IMApparentFailure after 1st failure"
    )
    for n in range(args.trials):
        after_end, verdict, now, alert = trial()
        print(
            f"{n + 1:5d}  {after_end:22.1f} s  {verdict:23.1f} s  {now:34.1f} s  {alert:33.1f} s",
            flush=True,
        )
    print(f"goal for the verdict: within timeout + 3 s = {TIMEOUT + 3} s after the minute ends")
    print("goal for IMTargetFailingNow: within 45 s of the first failing attempt")


if __name__ == "__main__":
    main()
