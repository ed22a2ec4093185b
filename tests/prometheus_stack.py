"""Debian's real Prometheus and Alertmanager on 127.0.0.1 for the tests, and a webhook that
records what Alertmanager sends."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

from .chat_app import free_port
from .daemon_util import ROOT, track
from .loop_thread import LoopThread

RULES = ROOT / "deploy" / "prometheus" / "im-prober.rules.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


def binary(*names: str) -> str:
    for name in names:
        if found := shutil.which(name):
            return found
    raise AssertionError(f"none of {names} is installed (make system-deps installs them)")


def poll(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Call `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Server:
    """A server binary run as a child process, its log in its folder."""

    def __init__(self, folder: Path, name: str, args: list[str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.log = folder / f"{name}.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str) -> None:
        handle = self.log.open("ab")
        self.proc = track(
            subprocess.Popen(self.args, stdout=handle, stderr=subprocess.STDOUT, cwd=self.folder)
        )
        poll(
            f"{self.args[0]} ready",
            lambda: self._ready(ready_path),
            timeout=60,
            every=0.3,
        )

    def _ready(self, path: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.args[0]} exited: {self.log.read_text()[-3000:]}")
        try:
            return httpx.get(self.url + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Prometheus(Server):
    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(folder, "prometheus", [])
        self.args = [
            binary("prometheus"),
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]

    def start(self, ready_path: str = "/-/ready") -> None:
        super().start(ready_path)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{promql}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/api/v1/alerts", timeout=10).json()
        return [
            a
            for a in response["data"]["alerts"]
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]


class Alertmanager(Server):
    """Alertmanager with the shipped routing; every receiver's URL replaced by `webhook`."""

    def __init__(self, folder: Path, webhook: str) -> None:
        config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
        for receiver in config["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = f"{webhook}/{receiver['name']}"
        (folder / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(folder, "alertmanager", [])
        self.args = [
            binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port
        ]

    def start(self, ready_path: str = "/-/ready") -> None:
        super().start(ready_path)


class Webhook:
    """Records each notification Alertmanager posts, by receiver (the URL's last part)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._thread = LoopThread("webhook")
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Webhook:
        self._thread.start(self._start)
        return self

    async def _start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.received.append((request.match_info["receiver"], json.loads(await request.read())))
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/{receiver}", receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        self._thread.stop(cleanup)

    def alerts(self, receiver: str) -> list[dict[str, Any]]:
        return [
            alert
            for name, payload in list(self.received)
            if name == receiver
            for alert in payload.get("alerts", [])
        ]
