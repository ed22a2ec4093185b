"""im-prober against blackbox_exporter driven by its normal caller, a real Prometheus, on the
same machine in the same run, probing the same fast local HTTP target at the same total rate.

For each N, N targets at 4 attempts a minute each (N/15 attempts a second):
  im-prober:  N `http` targets, POST /send with a JSON body, expect {"ok": true}
  blackbox:   Debian's prometheus-blackbox-exporter, module http_post with the same body and
              a body regexp, scraped at /probe by Debian's prometheus: N scrape targets
              every 15 s
Measured over whole minutes after a warm-up: CPU seconds per 1,000 attempts (blackbox's
plus Prometheus's for the second), RSS, and the p99 start lag (im-prober: its scheduler lag
histogram; Prometheus: its scrape-interval p99 minus the interval).

    python bench/blackbox_bench.py [--targets 1000 5000] [--minutes 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml
from daemon_bench import (
    cpu_seconds,
    free_port,
    pinned,
    rss_mb,
    run_one,
    scrape,
    start_fast_server,
    start_prometheus,
)

BLACKBOX_MODULE = {
    "modules": {
        "im_send": {
            "prober": "http",
            "timeout": "5s",
            "http": {
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
                "body": '{"text": "bench"}',
                "valid_status_codes": [200],
                "fail_if_body_not_matches_regexp": ['"ok": true'],
                "preferred_ip_protocol": "ip4",
            },
        }
    }
}


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while True:
        try:
            scrape(url)
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.2)


def query(prometheus: str, promql: str) -> float:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=30) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def interval_p99(prometheus: str) -> float:
    """Prometheus's own p99 of the time between scrapes of a target (its /metrics, as it
    does not scrape itself here): how late scrapes, and so probes, start."""
    for line in scrape(f"{prometheus}/metrics").splitlines():
        if line.startswith("prometheus_target_interval_length_seconds{") and (
            'interval="15s"' in line and 'quantile="0.99"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def run_blackbox(targets: int, minutes: int, server: str) -> dict[str, float]:
    exporter_bin = shutil.which("prometheus-blackbox-exporter") or shutil.which("blackbox_exporter")
    if not exporter_bin:
        raise SystemExit("needs Debian's prometheus-blackbox-exporter")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "blackbox.yml").write_text(yaml.safe_dump(BLACKBOX_MODULE))
        exporter_port = free_port()
        urls = [f"{server}/send?t={i}" for i in range(targets)]
        prometheus_config = yaml.safe_dump(
            {
                "global": {"scrape_interval": "15s", "scrape_timeout": "10s"},
                "scrape_configs": [
                    {
                        "job_name": "blackbox",
                        "metrics_path": "/probe",
                        "params": {"module": ["im_send"]},
                        "static_configs": [{"targets": urls}],
                        "relabel_configs": [
                            {
                                "source_labels": ["__address__"],
                                "target_label": "__param_target",
                            },
                            {"source_labels": ["__param_target"], "target_label": "instance"},
                            {
                                "target_label": "__address__",
                                "replacement": f"127.0.0.1:{exporter_port}",
                            },
                        ],
                    }
                ],
            }
        )
        exporter = subprocess.Popen(
            [
                *pinned(0),
                exporter_bin,
                f"--config.file={folder / 'blackbox.yml'}",
                f"--web.listen-address=127.0.0.1:{exporter_port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        prometheus = None
        try:
            wait_http(f"http://127.0.0.1:{exporter_port}/metrics", exporter)
            prometheus, prom_url = start_prometheus(folder, prometheus_config, cpu=0)
            time.sleep(75)  # every target scraped several times: steady state
            scrapes0 = query(prom_url, "sum(count_over_time(probe_success[10y]))")
            cpu0 = cpu_seconds(exporter.pid) + cpu_seconds(prometheus.pid)
            t0 = time.time()
            time.sleep(minutes * 60)
            cpu1 = cpu_seconds(exporter.pid) + cpu_seconds(prometheus.pid)
            t1 = time.time()
            scrapes1 = query(prom_url, "sum(count_over_time(probe_success[10y]))")
            attempts = scrapes1 - scrapes0
            failed = query(prom_url, "count(probe_success == 0) or vector(0)")
            lag_p99 = interval_p99(prom_url) - 15
            return {
                "attempts_per_s": attempts / (t1 - t0),
                "cpu_us_per_attempt": (cpu1 - cpu0) / attempts * 1e6,
                "exporter_rss_mb": rss_mb(exporter.pid),
                "prometheus_rss_mb": rss_mb(prometheus.pid),
                "lag_p99_ms": lag_p99 * 1000,
                "failed_targets": failed,
            }
        finally:
            for proc in [p for p in (prometheus, exporter) if p is not None]:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--minutes", type=int, default=2)
    args = parser.parse_args()
    server, url = start_fast_server()
    try:
        time.sleep(1.5)
        print(
            "targets  attempts/s  tool                         CPU µs/attempt  "
            "CPU s/1000  RSS MB        p99 start lag ms",
            flush=True,
        )
        for n in args.targets:
            ours = run_one(n, args.minutes, url)
            theirs = run_blackbox(n, args.minutes, url)
            ratio = ours["cpu_us_per_attempt"] / theirs["cpu_us_per_attempt"]
            ours_rss = f"{ours['rss_mb']:.0f}"
            theirs_rss = f"{theirs['exporter_rss_mb']:.0f}+{theirs['prometheus_rss_mb']:.0f}"
            for tool, row, rss in (
                ("im-prober", ours, ours_rss),
                ("blackbox_exporter+prometheus", theirs, theirs_rss),
            ):
                cpu = row["cpu_us_per_attempt"]
                print(
                    f"{n:7d}  {row['attempts_per_s']:10.1f}  {tool:28} {cpu:14.0f}  "
                    f"{cpu / 1000:10.2f}  {rss:12}  {row['lag_p99_ms']:8.0f}",
                    flush=True,
                )
            print(
                f"         im-prober CPU per attempt = {ratio:.2f}x blackbox+prometheus "
                f"(blackbox failed targets: {theirs['failed_targets']:.0f})",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
