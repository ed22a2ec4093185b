"""Run the real daemon as a subprocess and talk to it over HTTP, for end-to-end tests."""

from __future__ import annotations

import atexit
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from prober.runtime.plan import offsets

ROOT = Path(__file__).resolve().parents[1]
_started: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """A test that failed half-way must not leave a daemon running after the session."""
    for proc in _started:
        if proc.poll() is None:
            proc.kill()


def chat_target(
    name: str,
    base_url: str,
    timeout: float,
    *,
    sends: int = 4,
    password_env: str = "CHAT_PASSWORD",
    extra_http: str = "",
    sla: str = "{service_month_anchor: 2026-01-01}",
) -> str:
    """YAML of an `http` target for the chat service (tests/chat_app.py): log in with the
    password from the environment, send with the token. Indented to follow `targets:`."""
    return f"""\
  - name: {name}
    kind: http
    http:
      base_url: {base_url}
{extra_http}      variables: {{password: {{env: {password_env}}}}}
      probes:
        login:
          - {{method: POST, url: /login, json: {{user: probe, password: "{{password}}"}},
             extract: {{token: {{path: token, secret: true}}}}}}
        send_c2c:
          - {{method: POST, url: /send, headers: {{Authorization: "Bearer {{token}}"}},
             json: {{text: "probe {{uuid}}"}}, expect_json: {{ok: true}}}}
    probes:
      login: {{attempts_per_minute: 1, timeout: {timeout:g}s}}
      send_c2c: {{attempts_per_minute: {sends}, timeout: {timeout:g}s}}
    sla: {sla}
"""


def ping_target(name: str, base_url: str, password: str, timeout: float, sends: int) -> str:
    """YAML of an `http` target for the chat service that logs in and pings: the lightest
    target with two probes. Indented to follow `targets:`."""
    return f"""\
  - name: {name}
    kind: http
    http:
      base_url: {base_url}
      probes:
        login: [{{method: POST, url: /login, json: {{user: probe, password: "{password}"}}}}]
        send_c2c: [{{url: /ping}}]
    probes:
      login: {{attempts_per_minute: 1, timeout: {timeout:g}s}}
      send_c2c: {{attempts_per_minute: {sends}, timeout: {timeout:g}s}}
    sla: {{service_month_anchor: 2026-01-01}}
"""


def safe_name(candidates: list[str], timeout: float, send_c2c: int = 4) -> str:
    """A target name whose attempts all start well inside the minute, so flipping a
    service's mode exactly at a minute boundary cannot race an attempt."""
    for name in candidates:
        starts = offsets(name, "login", 1) + offsets(name, "send_c2c", send_c2c)
        if all(1.0 <= s <= 60 - timeout - 1.0 for s in starts):
            return name
    raise AssertionError("no candidate name with safe offsets")


# The modal kinds' cadence in the real-minute tests: one login and two of each send a minute.
MODAL_CADENCE = {"login": 1, "send_c2c": 2, "send_group": 2}


def modal_config(name: str, kind: str, settings: str, timeout: float, timezone: str) -> str:
    """A config of one `kind` target at MODAL_CADENCE; `settings` is the kind's own section
    (unindented YAML)."""
    section = textwrap.indent(textwrap.dedent(settings), "      ")
    return f"""\
ledger: {{path: ledger.sqlite3}}
targets:
  - name: {name}
    kind: {kind}
    {kind}:
{section}    probes:
      login: {{attempts_per_minute: 1, timeout: {timeout:g}s}}
      send_c2c: {{attempts_per_minute: 2, timeout: {timeout:g}s}}
      send_group: {{attempts_per_minute: 2, timeout: {timeout:g}s}}
    sla: {{service_month_anchor: 2026-01-01, timezone: {timezone}}}
"""


def modal_starts(name: str) -> list[float]:
    """Every attempt's start (seconds into the minute) of a target at MODAL_CADENCE."""
    return sorted(s for probe, n in MODAL_CADENCE.items() for s in offsets(name, probe, n))


def safe_modal_name(
    prefix: str, tries: int, timeout: float, *, switch_at_30: bool, after_30_too: bool = False
) -> str:
    """A target name at MODAL_CADENCE whose attempts start well clear of :00, so a switch at
    a minute boundary cannot race an attempt. With `switch_at_30` (a fault proxy also
    switches mid-minute) they are clear of :30 as well, some start before it, and with
    `after_30_too` some after it."""
    for i in range(tries):
        name = f"{prefix}-{i}"
        points = modal_starts(name)
        if not switch_at_30:
            if all(1 <= s <= 60 - timeout - 1 for s in points):
                return name
            continue
        clear = all(1 <= s <= 27 or 32 <= s <= 60 - timeout - 1 for s in points)
        if (
            clear
            and any(s <= 27 for s in points)
            and (any(s >= 32 for s in points) or not after_30_too)
        ):
            return name
    raise AssertionError("no name with safe offsets")


def follow_timeline(m0: int, timeline: list[tuple[float, Callable[[], object]]]) -> None:
    """At each (seconds after minute m0 starts, switch) of `timeline`, in order, switch."""
    for at, switch in timeline:
        wait_until(m0 * 60 + at)
        switch()


def five_minutes(
    daemon: Daemon, timeline: list[tuple[float, Callable[[], object]]], timeout: float
) -> dict[str, object]:
    """Start `daemon`, switch along `timeline` from the next minute (M0) on, and once M4
    has closed take /metrics, stop the daemon and read its log."""
    daemon.start()
    m0 = next_minute()
    follow_timeline(m0, timeline)
    wait_until((m0 + 5) * 60 + timeout + 2 + 3)  # M4 has closed
    observed: dict[str, object] = {"m0": m0, "metrics": daemon.metrics()}
    observed["stop"] = daemon.stop()
    observed["log"] = daemon.log.read_text()
    return observed


def cli(config: Path, *args: str) -> str:
    """What `im-prober <args> -c <config>` prints, run as its own process (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "prober", *args, "-c", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def exported_minutes(config: Path, *args: str) -> dict[int, tuple[str, str]]:
    """The target-level rows of `im-prober ledger export <args>`: epoch minute → (state,
    reason)."""
    rows = {}
    for line in cli(config, "ledger", "export", *args).splitlines()[1:]:
        _, probe, minute, state, reason = line.split(",")
        if probe == "":
            stamp = time.strptime(minute, "%Y-%m-%dT%H:%M:%SZ")
            rows[(int(time.mktime(stamp)) - time.timezone) // 60] = (state, reason)
    return rows


def five_states(observed: dict, *export_args: str) -> list[tuple[str, str]]:
    """(state, reason) of minutes M0 to M4 of a five_minutes run, as the ledger has them."""
    rows = exported_minutes(observed["config"], *export_args)
    return [rows[observed["m0"] + k] for k in range(5)]


def run_in_foreground(
    config: Path, listen: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`im-prober run` as its own process, for a daemon expected to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "prober", "run", "-c", str(config), "--web.listen-address", listen],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Kill `proc` at exit if the test did not stop it."""
    _started.append(proc)
    return proc


def wait_until(instant: float) -> None:
    delay = instant - time.time()
    if delay > 0:
        time.sleep(delay)


def next_minute(after: float | None = None) -> int:
    """The epoch minute that starts next."""
    return int((after if after is not None else time.time()) // 60) + 1


class Daemon:
    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        *,
        args: tuple[str, ...] = (),
        tls: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.args = args
        self.tls = tls  # client context when the daemon serves HTTPS
        self.headers = headers or {}  # sent with every request (basic auth)
        self.log = config.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Daemon:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prober",
                "run",
                "-c",
                str(self.config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        _started.append(self.proc)
        # Generous: on a busy CI machine a cold start of the interpreter alone can take
        # seconds; how fast it comes up is measured in bench/, not here.
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited: {self.log.read_text()}")
            try:
                self.get("/healthz")
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("daemon did not come up")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def get(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 5
    ) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path, headers={**self.headers, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.tls) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def post(self, path: str) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path, data=b"", method="POST", headers=self.headers
        )
        try:
            # A reload answers once done: seconds on a busy machine (the config loads in a
            # child process).
            with urllib.request.urlopen(request, timeout=30, context=self.tls) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics_names(self) -> set[str]:
        """Every sample name in /metrics (histograms as their _bucket/_sum/_count)."""
        _, text = self.get("/metrics")
        return {
            sample.name
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        _, text = self.get("/metrics")
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


def sample(metrics: dict, name: str, **labels: str) -> float | None:
    return metrics.get((name, tuple(sorted(labels.items()))))
