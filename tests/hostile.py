"""A hostile HTTP server on raw TCP, for the faults a well-behaved framework will not send:
headers or bodies trickled a byte at a time, an endless body, thousands of headers, a
compression bomb, a JSON nesting bomb, invalid UTF-8, a redirect loop, and TLS listeners with
an expired certificate, a certificate for another host and one from an unknown CA.

Each behaviour is a path: GET /slow-headers, /slow-body, /endless, /many-headers, /gzip-bomb,
/nesting-bomb, /bad-utf8, /redirect-loop, /ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from pathlib import Path

from .certs import CA
from .chat_app import free_port
from .loop_thread import LoopThread


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    zeros = b"\0" * (1 << 20)
    parts = [compressor.compress(zeros) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


GZIP_BOMB = _gzip_bomb(1 << 30)  # 1 GiB of zeros in about 1 MiB


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    # One response per connection: the client must not reuse a socket this server closes.
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers] + ["", ""]
    return "\r\n".join(lines).encode()


class HostileServer:
    def __init__(self, folder: Path) -> None:
        self.ca = CA(folder, name="hostile CA")
        self.folder = folder
        self.port = free_port()
        self.tls_ports: dict[str, int] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._thread = LoopThread("hostile")
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tls_url(self, kind: str) -> str:
        return f"https://127.0.0.1:{self.tls_ports[kind]}"

    def start(self) -> HostileServer:
        self._thread.start(self._start)
        return self

    def stop(self) -> None:
        async def cleanup() -> None:
            for server in self._servers:
                server.close()
            for server in self._servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)

        self._thread.stop(cleanup)

    def _tls(self, kind: str) -> ssl.SSLContext:
        if kind == "expired":
            leaf = self.ca.issue("expired", expired=True)
        elif kind == "wrong_host":
            leaf = self.ca.issue("wrong-host", host="other.example")
        else:  # unknown_ca: a CA the client was never told about
            leaf = CA(self.folder, name="unknown CA").issue("unknown")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(leaf.cert, leaf.key)
        return context

    async def _start(self) -> None:
        self._servers.append(await asyncio.start_server(self._serve, "127.0.0.1", self.port))
        for kind in ("expired", "wrong_host", "unknown_ca"):
            port = free_port()
            self.tls_ports[kind] = port
            self._servers.append(
                await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=self._tls(kind))
            )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            path = request.split(b" ", 2)[1].decode()
            await self._respond(path, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _respond(self, path: str, writer: asyncio.StreamWriter) -> None:
        if path == "/slow-headers":
            writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:  # a header that never ends, one byte at a time
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
        if path == "/slow-body":
            writer.write(
                _head(
                    "200 OK", [("Content-Type", "application/json"), ("Content-Length", "100000")]
                )
            )
            writer.write(b'{"ok": true, "pad": "')
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
        if path == "/endless":
            writer.write(
                _head(
                    "200 OK",
                    [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")],
                )
            )
            chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
            while True:
                writer.write(chunk)
                await writer.drain()
        if path == "/many-headers":
            headers = [(f"X-Filler-{i}", "x" * 100) for i in range(20_000)]
            writer.write(_head("200 OK", [*headers, ("Content-Length", "2")]) + b"{}")
            await writer.drain()
            return
        if path == "/gzip-bomb":
            writer.write(
                _head(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "gzip"),
                        ("Content-Length", str(len(GZIP_BOMB))),
                    ],
                )
            )
            writer.write(GZIP_BOMB)
            await writer.drain()
            return
        if path == "/nesting-bomb":
            body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # 600 kB, 100,000 deep
            writer.write(
                _head(
                    "200 OK",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                + body
            )
            await writer.drain()
            return
        if path == "/bad-utf8":
            body = b'{"ok": "\xc3\x28\xff"}'
            writer.write(
                _head(
                    "200 OK",
                    [
                        ("Content-Type", "application/json; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                + body
            )
            await writer.drain()
            return
        if path == "/redirect-loop":
            writer.write(
                _head("302 Found", [("Location", "/redirect-loop"), ("Content-Length", "0")])
            )
            await writer.drain()
            return
        body = b'{"ok": true}'
        writer.write(
            _head(
                "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
            )
            + body
        )
        await writer.drain()
