"""A small chat-like HTTP service for the tests, with switches for every fault the prober
must classify: refuse, hang, slow, 5xx, 429, 401, malformed JSON, huge body, reset.

It runs in a thread with its own event loop, so a test can drive a real daemon (another
process) against it and flip faults at exact times.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import socket
from dataclasses import dataclass, field

from aiohttp import web

from .loop_thread import LoopThread

MODES = {
    "ok",
    "refuse",
    "hang",
    "slow",
    "5xx",
    "429",
    "401",
    "malformed",
    "huge",
    "reset",
    "5xx_but_one",
    "nested",
    "bad_utf8",
    "redirect_loop",
    "big_headers",
}


# Ports for the servers the tests start. Asking the kernel for port 0 and letting it go races:
# another worker's server (a Prosody, say) or any outgoing connection can take the same port
# before the intended server binds it. Each xdist worker therefore draws from a slice of its
# own, below the kernel's ephemeral range, so neither can hand the port out meanwhile.
_PORT_BASE = 20_000
_PORT_SLICE = 400
_PORT_SLICES = 30  # workers gw0..gw28, and slice 29 for a run without xdist


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else -1
    index = index % (_PORT_SLICES - 1) if index >= 0 else _PORT_SLICES - 1
    start = _PORT_BASE + index * _PORT_SLICE
    return range(start, start + _PORT_SLICE)


_ports = _port_slice()
# A random start, so a run right after another does not meet its sockets in TIME_WAIT.
_next_port = itertools.cycle(
    itertools.chain(_ports[(offset := random.randrange(len(_ports))) :], _ports[:offset])
)


def free_port() -> int:
    """A port of this worker's slice that nothing holds now (bound and let go to check)."""
    for _ in range(len(_ports)):
        port = next(_next_port)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_ports.start}-{_ports.stop - 1}")


@dataclass
class ChatServer:
    port: int = field(default_factory=free_port)
    mode: str = "ok"
    slow_seconds: float = 1.0
    password: str = "correct-horse-battery"
    requests: int = 0
    messages: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    _thread: LoopThread = field(default_factory=lambda: LoopThread("chat-server"))
    _tokens: itertools.count = field(default_factory=lambda: itertools.count(1))
    _spared: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control, from the test's thread ----------------------------------------------

    def start(self) -> ChatServer:
        self._thread.start(self._start)
        return self

    def stop(self) -> None:
        self._thread.stop(self._cleanup)

    def set_mode(self, mode: str) -> None:
        assert mode in MODES, mode
        self._thread.call(self._switch(mode))

    # -- inside the server's loop ------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/login", self._login)
        app.router.add_post("/send", self._send)
        app.router.add_get("/ping", self._ping)
        app.router.add_get("/loop", self._loop_redirect)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _switch(self, mode: str) -> None:
        if mode == "refuse" and self.mode != "refuse" and self._site is not None:
            await self._site.stop()  # nobody listens: connections are refused
        elif mode != "refuse" and self.mode == "refuse":
            await self._listen()
        self._spared = False
        self.mode = mode

    async def _fault(self, request: web.Request) -> web.StreamResponse | None:
        self.requests += 1
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if mode == "5xx":
            return web.json_response({"error": "internal"}, status=503)
        if mode == "5xx_but_one":
            if self._spared:
                return web.json_response({"error": "internal"}, status=503)
            self._spared = True
        if mode == "429":
            return web.json_response({"error": "slow down"}, status=429)
        if mode == "401":
            return web.json_response({"error": "unauthorized"}, status=401)
        if mode == "malformed":
            return web.Response(text='{"ok": tru', content_type="application/json")
        if mode == "nested":
            return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")
        if mode == "bad_utf8":
            return web.Response(body=b'{"ok": "\xff\xfe"}', content_type="application/json")
        if mode == "big_headers":
            response = web.json_response({"ok": True})
            response.headers["X-Filler"] = "x" * 200_000
            return response
        if mode == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            chunk = b" " * 65536
            for _ in range(1000):  # 64 MiB, more than any bound
                await response.write(chunk)
            return response
        if mode == "reset":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 1000
            await response.prepare(request)
            await response.write(b'{"ok": true, "pad": "')
            assert request.transport is not None
            request.transport.abort()
            return response
        if mode == "redirect_loop":
            raise web.HTTPFound("/loop")
        return None

    async def _login(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        body = await request.json()
        if body.get("password") != self.password:
            return web.json_response({"error": "bad password"}, status=401)
        return web.json_response({"token": f"tok-{next(self._tokens):06d}-secret", "ok": True})

    async def _send(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        if fault is not None:
            return fault
        if not request.headers.get("Authorization", "").startswith("Bearer tok-"):
            return web.json_response({"error": "no token"}, status=401)
        body = await request.json()
        self.messages.append(json.dumps(body))
        return web.json_response({"ok": True, "id": len(self.messages)})

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault(request)
        return fault if fault is not None else web.Response(text="pong")

    async def _loop_redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")
