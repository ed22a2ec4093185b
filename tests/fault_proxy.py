"""A TCP proxy in front of a local service that can turn into a blackhole: one vantage's
path to the service goes bad while another's stays fine (connections are accepted, and
then nothing gets through either way, as when a route silently drops packets)."""

from __future__ import annotations

import asyncio
import contextlib

from .chat_app import free_port
from .loop_thread import LoopThread


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._thread = LoopThread("fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        async def listen() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

        self._thread.start(listen)
        return self

    def set_blackhole(self, on: bool) -> None:
        self.blackhole = on  # read by every pump at each chunk

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        self._thread.stop(close)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            if self.blackhole:
                continue  # dropped: the other side waits for an answer that never comes
            writer.write(chunk)
            await writer.drain()
