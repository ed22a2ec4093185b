"""The web port under hostile clients: connections that send nothing or half a request are
closed after `web.request_timeout`, at most `web.max_connections` are open at once, a
malformed request is logged without its bytes, and (for real, on the daemon with 256
descriptors) a flood of idle connections costs the probes nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import resource
import selectors
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from aiohttp import web

from prober.config.models import ConfigError, WebConfig, load_config
from prober.expose.listener import EVICT_AFTER, WebServer
from prober.expose.web import make_app
from prober.expose.webconfig import load_web_config
from prober.logs import HumanFormatter

from .certs import CA
from .chat_app import ChatServer, free_port
from .daemon_util import ROOT, Daemon, chat_target, next_minute, safe_name, track, wait_until

GET = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


RELEASE = web.AppKey("release", asyncio.Event)


def sample_app() -> web.Application:
    release = asyncio.Event()

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def held(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="released")

    async def big(_request: web.Request) -> web.Response:
        return web.Response(body=b"m" * 8_000_000)

    app = web.Application()
    app[RELEASE] = release
    app.router.add_get("/ok", ok)
    app.router.add_get("/held", held)
    app.router.add_get("/big", big)
    return app


@contextlib.asynccontextmanager
async def serving(
    app: web.Application | None = None,
    *,
    max_connections: int = 64,
    request_timeout: float = 1.0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[WebServer, int]]:
    server = WebServer(
        app if app is not None else sample_app(),
        "127.0.0.1",
        0,
        max_connections=max_connections,
        request_timeout=request_timeout,
        tls=tls,
    )
    await server.start()
    try:
        yield server, server.listener.ports[0]
    finally:
        await server.stop()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (reading what it sends)."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def test_a_connection_that_sends_nothing_or_half_a_request_is_closed() -> None:
    async def scenario() -> None:
        async with serving(request_timeout=1.0) as (_server, port):
            silent = await connect(port)
            half_line = await connect(port)
            half_line[1].write(b"GET /o")
            half_head = await connect(port)
            half_head[1].write(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: te")
            whole = await connect(port)
            whole[1].write(GET)
            assert (await response(whole[0])).endswith(b"ok")
            for reader, _ in (silent, half_line, half_head):
                assert await closed_within(reader, 4), "still open long after request_timeout"

    asyncio.run(scenario())


def test_a_kept_alive_connection_that_stalls_in_its_next_request_is_closed() -> None:
    async def scenario() -> None:
        async with serving(request_timeout=1.0) as (_server, port):
            reader, writer = await connect(port)
            for _ in range(3):  # keep-alive works: three requests on one connection
                writer.write(GET)
                assert (await response(reader)).endswith(b"ok")
                await asyncio.sleep(0.5)
            writer.write(b"GET /ok HTTP/1.1\r\nHost: 1")
            assert await closed_within(reader, 4)

    asyncio.run(scenario())


def test_a_long_response_to_a_slow_reader_is_not_cut_short() -> None:
    """The timeout is for the request arriving, not for the response: a big /metrics read
    slowly (here for longer than request_timeout) arrives whole."""

    async def scenario() -> None:
        async with serving(request_timeout=1.0) as (_server, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=65536)
            writer.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n")[0]
            received, started = 0, time.monotonic()
            while received < 8_000_000:
                chunk = await reader.read(65536)
                assert chunk, f"closed after {received} bytes"
                received += len(chunk)
                await asyncio.sleep(0.02)  # a slow reader: 8 MB take several seconds
            assert received == 8_000_000
            assert time.monotonic() - started > 1.0  # it did outlast request_timeout

    asyncio.run(scenario())


def test_a_client_leaving_mid_response_is_not_an_error(caplog) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with serving() as (server, port):
            for _ in range(3):
                reader, writer = await connect(port)
                writer.write(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                await reader.read(1000)
                writer.transport.abort()
            await asyncio.sleep(0.5)
            assert server.listener.open_connections == 0

    asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_past_max_connections_the_longest_waiting_one_makes_room() -> None:
    async def scenario() -> None:
        # A long request_timeout: whatever closes here closes to make room.
        async with serving(max_connections=4, request_timeout=30) as (server, port):
            idle = [await connect(port) for _ in range(4)]
            await asyncio.sleep(EVICT_AFTER + 0.2)
            assert server.listener.open_connections == 4
            scraper = await connect(port)
            scraper[1].write(GET)
            assert (await response(scraper[0])).endswith(b"ok")
            assert await closed_within(idle[0][0], 2)  # the one waiting longest went
            # A burst: the three idle ones left make room, then nobody has waited long
            # enough, and the rest are refused at once.
            burst = [await connect(port) for _ in range(20)]
            await asyncio.sleep(0.2)
            assert server.listener.open_connections == 4
            for reader, _ in idle[1:]:
                assert await closed_within(reader, 2)
            async with asyncio.timeout(2):
                assert (await burst[-1][0].read()).startswith(b"HTTP/1.1 503 ")
            scraper[1].write(GET)  # kept alive, and still served
            assert (await response(scraper[0])).endswith(b"ok")

    asyncio.run(scenario())


def test_when_every_connection_is_busy_a_new_one_is_refused_at_once() -> None:
    async def scenario() -> None:
        app = sample_app()
        async with serving(app, max_connections=2, request_timeout=30) as (server, port):
            busy = [await connect(port) for _ in range(2)]
            for _, writer in busy:
                writer.write(b"GET /held HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await asyncio.sleep(0.3)
            reader, _ = await connect(port)
            async with asyncio.timeout(2):
                answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 503 ") and answer.endswith(
                b"too many connections\n"
            )
            assert server.listener.open_connections == 2
            app[RELEASE].set()
            for reader, _ in busy:
                assert (await response(reader)).endswith(b"released")

    asyncio.run(scenario())


def test_the_cap_is_never_more_than_a_quarter_of_the_descriptor_limit() -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "from prober.expose.listener import connection_cap\n"
        "print(connection_cap(1000), connection_cap(10))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["64", "10"]


def test_a_tls_connection_that_never_says_hello_is_closed_and_counted(tmp_path: Path) -> None:
    ca = CA(tmp_path)
    leaf = ca.issue("server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    client = ssl.create_default_context(cafile=str(ca.path))

    async def scenario() -> None:
        async with serving(max_connections=2, request_timeout=3.0, tls=context) as (server, port):
            silent = [await connect(port) for _ in range(2)]
            await asyncio.sleep(EVICT_AFTER + 0.2)
            assert server.listener.open_connections == 2  # mid-handshake, and counted
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            writer.write(GET)
            assert (await response(reader)).endswith(b"ok")
            for silent_reader, _ in silent:  # one made room, the other timed out
                assert await closed_within(silent_reader, 4)

    asyncio.run(scenario())


# -- malformed requests in the log ----------------------------------------------------------

HUGE_PASSWORD = "Zq7-" * 1750  # 7,000 characters


def secured_app(tmp_path: Path) -> web.Application:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users: {{ops: '{hashed}'}}\n")
    security = load_web_config(tmp_path / "web.yml")
    return make_app(lambda _om: b"", lambda: (True, "ok"), None, lambda: security)


def test_a_malformed_request_is_logged_without_its_bytes(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    credentials = base64.b64encode(f"ops:{HUGE_PASSWORD}".encode()).decode()
    header_7000 = base64.b64encode(b"ops:" + b"k" * 5246).decode()  # 7,000 characters
    assert len(header_7000) == 7000
    requests = {
        # past aiohttp's 8190-byte field: LineTooLong, whose message quotes the value
        "too long": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n\r\n",
        # a control character: BadHttpMessage, whose message quotes the line
        "bad char": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials[:600]}\x01\r\n\r\n",
        # a 7,000-character header within the limit reaches the basic-auth check
        "7000": f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {header_7000}\r\n\r\n",
    }
    statuses = {}

    async def scenario() -> None:
        async with serving(secured_app(tmp_path)) as (_server, port):
            for name, raw in requests.items():
                reader, writer = await connect(port)
                writer.write(raw.encode())
                statuses[name] = (await reader.readuntil(b"\r\n")).split()[1]
                writer.close()
            await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert statuses == {"too long": b"400", "bad char": b"400", "7000": b"401"}
    text = "\n".join(HumanFormatter().format(record) for record in caplog.records)
    for secret in (credentials[:24], credentials[100:124], header_7000[:24], header_7000[-24:]):
        assert secret not in text
    assert "Traceback" not in text
    rejected = [
        r
        for r in caplog.records
        if r.getMessage().startswith("web port: rejected a malformed request from ")
    ]
    assert {r.fields["error"] for r in rejected} == {"LineTooLong", "BadHttpMessage"}
    assert all(r.levelno == logging.WARNING and r.fields["status"] == 400 for r in rejected)


# -- the real daemon, 256 descriptors, flooded ----------------------------------------------

FLOOD_IDLE = 300
FLOOD_HALF = 20
DESCRIPTORS = 256
REQUEST_TIMEOUT = 5  # the default
TIMEOUT = 2  # per attempt of the chat target
CLOSED = TIMEOUT + 2 + 4  # seconds after a minute's end by which it is surely written


class LimitedDaemon(Daemon):
    """The daemon started with RLIMIT_NOFILE lowered in the child."""

    def start(self) -> LimitedDaemon:
        def lower() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))

        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "prober", "run", "-c", str(self.config)),
                *("--web.listen-address", f"127.0.0.1:{self.port}"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=lower,
        )
        track(self.proc)
        deadline = time.time() + 60  # as Daemon.start: generous on a busy machine
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(OSError):
                self.get("/healthz")
                return self
            time.sleep(0.1)
        raise AssertionError("daemon did not come up")


def open_wave(port: int) -> list[socket.socket]:
    """FLOOD_IDLE + FLOOD_HALF connections, started without blocking (a server that stopped
    accepting must not stall the test)."""
    socks = []
    for _ in range(FLOOD_IDLE + FLOOD_HALF):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        socks.append(sock)
    return socks


HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/pl"
CONNECT_WITHIN = 8  # a burst past the listen backlog waits for SYN retransmits (1 s, 3 s, 7 s)


def watch_wave(socks: list[socket.socket]) -> list[float | None]:
    """For each socket, the seconds from its connection being established to the server
    closing it; None when it never connected, or was still open REQUEST_TIMEOUT + 3 s
    after. The last FLOOD_HALF send half a request as soon as they are connected."""
    half = set(socks[FLOOD_IDLE:])
    connected: dict[socket.socket, float] = {}
    closed: dict[socket.socket, float | None] = {}
    started = time.monotonic()
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_WRITE)
        while len(closed) < len(socks):
            now = time.monotonic()
            waiting = [s for s in socks if s not in closed]
            if all(
                (s in connected and now > connected[s] + REQUEST_TIMEOUT + 3)
                or (s not in connected and now > started + CONNECT_WITHIN)
                for s in waiting
            ):
                break
            for key, events in selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                now = time.monotonic()
                if events & selectors.EVENT_WRITE:
                    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        selector.unregister(sock)  # refused: never connected
                        closed[sock] = None
                        continue
                    connected[sock] = now
                    if sock in half:
                        with contextlib.suppress(OSError):
                            sock.send(HALF_REQUEST)
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed[sock] = now - connected[sock]
                    selector.unregister(sock)
    return [closed.get(sock) for sock in socks]


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape_during_the_wave(daemon: Daemon, waves: list[dict]) -> None:
    """/metrics while the wave's connections are held (once they have waited long enough
    to make room), and the daemon's descriptors then."""
    time.sleep(EVICT_AFTER + 0.5)
    try:
        status: int | str = daemon.get("/metrics")[0]
    except OSError as exc:
        status = repr(exc)
    assert daemon.proc is not None
    waves.append({"metrics": status, "descriptors": open_descriptors(daemon.proc.pid)})


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    """One daemon run (about two minutes): flooded from start until a whole minute M has
    passed under the flood, wave after wave."""
    folder = tmp_path_factory.mktemp("flood")
    chat = ChatServer().start()
    name = safe_name([f"flooded-{i}" for i in range(50)], TIMEOUT)
    config = folder / "config.yaml"
    # max_connections far above what 256 descriptors allow: the daemon must lower it. A
    # new connection for every attempt: each one needs a descriptor while the flood is on.
    config.write_text(
        "ledger: {path: ledger.sqlite3}\nweb: {max_connections: 1000}\ntargets:\n"
        + chat_target(name, chat.url, TIMEOUT, extra_http="      fresh_connection: true\n")
    )
    daemon = LimitedDaemon(config, free_port(), env={"CHAT_PASSWORD": chat.password}).start()
    assert daemon.proc is not None
    minute = next_minute()
    waves: list[dict] = []
    try:
        while time.time() < (minute + 1) * 60:
            socks = open_wave(daemon.port)
            scrape = threading.Thread(target=scrape_during_the_wave, args=(daemon, waves))
            scrape.start()
            delays = watch_wave(socks)
            scrape.join()
            for sock in socks:
                sock.close()
            waves[-1]["delays"] = delays
        wait_until((minute + 1) * 60 + CLOSED)
        code = daemon.stop()
    finally:
        chat.stop()
        if daemon.proc.poll() is None:
            daemon.proc.kill()
    with sqlite3.connect(f"file:{folder / 'ledger.sqlite3'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT probe, state, success, failure, client_error, throttled, prober_fault "
            "FROM minute_rows WHERE target = ? AND minute = ?",
            (name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(minute * 60))),
        ).fetchall()
        kinds = db.execute(
            "SELECT a.error_kind, a.detail FROM attempts a JOIN series s ON s.id = a.series_id "
            "WHERE s.target = ? AND a.minute = ? AND a.error_kind != ''",
            (name, minute),
        ).fetchall()
    return {
        "waves": waves,
        "rows": {probe: row for probe, *row in rows},
        "kinds": kinds,
        "log": daemon.log.read_text(),
        "code": code,
    }


@pytest.mark.slow
@pytest.mark.xdist_group("web-flood")
def test_every_flood_connection_is_closed_within_a_few_seconds(flood) -> None:
    assert len(flood["waves"]) >= 8
    for n, wave in enumerate(flood["waves"]):
        delays = wave["delays"]
        still = [i for i, delay in enumerate(delays) if delay is None]
        assert not still, (
            f"wave {n}: {still} not closed in time (or never connected)\n{flood['log']}"
        )
        assert max(delays) <= REQUEST_TIMEOUT + 3


@pytest.mark.slow
@pytest.mark.xdist_group("web-flood")
def test_metrics_answer_and_descriptors_stay_free_during_the_flood(flood) -> None:
    assert [w["metrics"] for w in flood["waves"]] == [200] * len(flood["waves"])
    # the web port holds at most a quarter of the 256: the rest stays for the probes
    assert max(w["descriptors"] for w in flood["waves"]) < DESCRIPTORS // 2
    assert "max_connections=64" in flood["log"]


@pytest.mark.slow
@pytest.mark.xdist_group("web-flood")
def test_the_flooded_minute_is_available_with_no_failed_attempt(flood) -> None:
    rows = flood["rows"]
    assert rows[""][0] == "available", (rows, flood["kinds"])
    success, failure, *_excluded, prober_fault = rows[""][1:]
    assert (success, failure, prober_fault) == (5, 0, 0), (rows, flood["kinds"])
    assert flood["kinds"] == []


@pytest.mark.slow
@pytest.mark.xdist_group("web-flood")
def test_the_log_stays_small_under_the_flood(flood) -> None:
    lines = flood["log"].splitlines()
    assert flood["code"] == 0
    assert len(lines) < 60, "\n".join(lines[:80])
    assert len(flood["log"]) < 20_000
    assert "Traceback" not in flood["log"]
    assert any("similar lines suppressed" in line for line in lines)


def test_web_settings_are_bounded_and_described(write_config) -> None:
    schema = WebConfig.model_json_schema()["properties"]
    assert schema["max_connections"]["default"] == 64 and schema["max_connections"]["description"]
    assert schema["request_timeout"]["default"] == 5.0 and schema["request_timeout"]["description"]
    for bad in (
        "max_connections: 0",
        "max_connections: true",
        "request_timeout: 0.1s",
        "request_timeout: 1h",
    ):
        key = bad.split(":")[0]
        path = write_config(f"web: {{{bad}}}\ntargets: []\n")
        with pytest.raises(ConfigError, match=rf"{path}:1: web\.{key}: "):
            load_config(path)
