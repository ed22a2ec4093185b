"""`im-prober demo`: the README's first command. Starts a throwaway Synapse on 127.0.0.1,
puts a fault proxy in front of it, provisions the probe accounts and rooms, writes a config
and runs the real daemon against it in the foreground. Ctrl-C stops everything.

`kill -USR1 <pid>` (or `make outage`) makes the homeserver unreachable for the next whole
minute, so an apparent failure shows up in /metrics and in the report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import textwrap
import time
from datetime import UTC, date, datetime
from pathlib import Path

from .. import logs
from ..daemon import Daemon
from ..errors import UserError
from ..logs import event
from ..setup.matrix import provision
from .homeserver import Homeserver, HomeserverError, free_port
from .proxy import FaultProxy

TARGET = "matrix-demo"


def _secret_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path


def demo_anchor(workdir: Path) -> str:
    """The demo's purchase date: the UTC day of its first run, kept in the work folder, so
    its service month starts today (not months ago) and stays put across restarts."""
    path = workdir / "service-month-anchor"
    try:
        return date.fromisoformat(path.read_text().strip()).isoformat()
    except (OSError, ValueError):
        today = datetime.now(UTC).date().isoformat()
        path.write_text(today + "\n")
        return today


def write_config(
    workdir: Path, proxy_url: str, user: str, peer: str, direct: str, group: str, listen: str
) -> Path:
    config = workdir / "config.yaml"
    anchor = demo_anchor(workdir)
    config.write_text(
        textwrap.dedent(f"""\
        # Written by `im-prober demo`: a throwaway Synapse behind a fault proxy.
        ledger: {{path: ledger.sqlite3}}
        web: {{listen_address: "{listen}", enable_lifecycle: true}}
        targets:
          - name: {TARGET}
            kind: matrix
            matrix:
              homeserver: {proxy_url}
              user: "{user}"
              password: {{file: secrets/probe-password}}
              peer_user: "{peer}"
              peer_password: {{file: secrets/peer-password}}
              direct_room: "{direct}"
              group_room: "{group}"
              verify_delivery: true
            probes:
              login: {{attempts_per_minute: 1, timeout: 5s}}
              send_c2c: {{attempts_per_minute: 2, timeout: 5s}}
              send_group: {{attempts_per_minute: 2, timeout: 5s}}
            sla:
              service_month_anchor: {anchor}
              timezone: UTC
              monthly_fee: "100.00"
              currency: USD
        """)
    )
    return config


async def _outage_next_minute(proxy: FaultProxy) -> None:
    wall = time.time()
    start = (int(wall // 60) + 1) * 60
    event(
        logging.WARNING,
        "demo: the homeserver will be unreachable for the next whole minute",
        starting=time.strftime("%H:%M:%SZ", time.gmtime(start)),
    )
    await asyncio.sleep(start - wall)
    await proxy.switch("refuse")
    await asyncio.sleep(start + 60 - time.time())
    await proxy.switch("pass")
    event(logging.INFO, "demo: the homeserver is reachable again")


async def _run(workdir: Path, listen: str, server: Homeserver) -> int:
    secrets_dir = workdir / "secrets"
    password = (secrets_dir / "probe-password").read_text().strip()
    peer_password = (secrets_dir / "peer-password").read_text().strip()
    proxy = FaultProxy(server.port)
    try:
        await proxy.open()
        done = await asyncio.to_thread(
            provision,
            server.url,
            user="probe",
            password=password,
            peer="probe-peer",
            peer_password=peer_password,
            shared_secret=server.shared_secret,
        )
        config = write_config(
            workdir, proxy.url, done.user, done.peer_user, done.direct_room, done.group_room, listen
        )
        (workdir / "demo.pid").write_text(f"{os.getpid()}\n")
        print(
            textwrap.dedent(f"""
            im-prober demo is running (Ctrl-C stops it and the homeserver).
              status:    http://{listen}/   (open it in a browser)
              metrics:   http://{listen}/metrics
              ready:     http://{listen}/readyz
              report:    .venv/bin/im-prober report -c {config} --target {TARGET}
              ledger:    .venv/bin/im-prober ledger export -c {config}
              outage:    make outage   (or: kill -USR1 {os.getpid()}) — the homeserver fails
                         for the next whole minute; watch the status page turn red
            The demo's service month began at 00:00 UTC on its first day; the minutes before
            the demo started are unobserved, so the report's coverage starts low and it
            warns about it (under the SLA's formula an unobserved minute is not a failure, so
            the report shows how much was observed). Coverage grows as the demo runs.
            """),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        outages: set[asyncio.Task[None]] = set()

        def outage() -> None:
            task = loop.create_task(_outage_next_minute(proxy))
            outages.add(task)
            task.add_done_callback(outages.discard)

        loop.add_signal_handler(signal.SIGUSR1, outage)
        code = await Daemon(config).run()
        for task in outages:
            task.cancel()
        return code
    finally:
        await proxy.close()
        (workdir / "demo.pid").unlink(missing_ok=True)


def main(workdir: Path, listen: str | None = None) -> int:
    logs.setup("human", "info")
    listen = listen or f"127.0.0.1:{_port_or_free(9469)}"
    workdir = workdir.resolve()
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.chmod(0o700)
    for name in ("probe-password", "peer-password"):
        _secret_file(secrets_dir, name)
    # Started from the main thread: the homeserver is tied to this process and dies with it.
    server = Homeserver(workdir / "synapse", relaxed=True)
    print(f"starting a throwaway Synapse homeserver on {server.url} ...", flush=True)
    try:
        server.start()
    except HomeserverError as exc:
        raise UserError(f"demo: {exc}") from None
    try:
        return asyncio.run(_run(workdir, listen, server))
    except KeyboardInterrupt:
        return 130
    finally:
        server.stop()
        print("demo stopped: daemon, proxy and homeserver are down.", flush=True)


def _port_or_free(preferred: int) -> int:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()
