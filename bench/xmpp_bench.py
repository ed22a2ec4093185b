"""XMPP client libraries against a local Prosody (Debian's `prosody`): CPU and wall time
per login and per send, client side, for

- `bare`: a minimal hand-written asyncio client (TCP, STARTTLS, SASL PLAIN, bind, close;
  a send is one message and an IQ ping on an open stream): the protocol's floor;
- `slixmpp`: the prober's own `xmpp` adapter (its `login` and `send_c2c` probes);
- `aioxmpp`: the same exchanges with aioxmpp, when it is importable (it is not a
  dependency: run this bench with a Python that has it to include it).

All in one run against one server. CPU is this process's (`time.process_time`), so the
server's share is not in it.

    python bench/xmpp_bench.py [--rounds 100]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from prober.adapters import ProbeContext
from prober.adapters.xmpp import XmppAdapter
from prober.sla import Outcome
from tests.prosody_fixture import (
    DOMAIN,
    PASSWORD,
    Prosody,
    accounts,
    section,
)

HEADER = (
    f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)


class Bare:
    """Just enough XMPP to log in and send: reads until a pattern shows up."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.buffer = b""

    async def until(self, pattern: bytes) -> bytes:
        while not re.search(pattern, self.buffer):
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        found, self.buffer = self.buffer, b""
        return found

    def send(self, text: str) -> None:
        self.writer.write(text.encode())

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.send(HEADER)
        await self.until(b"</stream:features>")
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.until(b"<proceed")
        await self.writer.start_tls(self.context, server_hostname=DOMAIN)
        self.send(HEADER)
        await self.until(b"</stream:features>")
        plain = base64.b64encode(f"\0probe\0{PASSWORD}".encode()).decode()
        self.send(
            f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"
        )
        await self.until(b"<success")
        self.send(HEADER)
        await self.until(b"</stream:features>")
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>bare-{uuid.uuid4().hex[:8]}</resource></bind></iq>"
        )
        await self.until(b"</iq>")

    async def message(self, to: str) -> None:
        token = uuid.uuid4().hex
        self.send(
            f"<message to='{to}' type='chat' id='{token}'><body>bench {token}</body></message>"
        )
        self.send(f"<iq type='get' to='{DOMAIN}' id='p{token}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await self.until(f"id='p{token}'".encode())

    async def close(self) -> None:
        self.send("</stream:stream>")
        with_timeout = asyncio.wait_for(self.until(b"</stream:stream>"), 1)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await with_timeout
        self.writer.close()


async def measure(rounds: int, step: Callable[[int], Awaitable[None]]) -> tuple[float, float]:
    """(median wall ms, mean CPU ms) per call of `step`."""
    walls = []
    cpu0 = time.process_time()
    for i in range(rounds):
        t0 = time.perf_counter()
        await step(i)
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / rounds
    return statistics.median(walls) * 1000, cpu * 1000


async def bench_bare(server: Prosody, rounds: int) -> dict[str, tuple[float, float]]:
    context = ssl.create_default_context(cafile=str(server.ca.path))

    async def login(_: int) -> None:
        client = Bare(server.c2s_port, context)
        await client.open()
        await client.close()

    kept = Bare(server.c2s_port, context)
    await kept.open()

    async def send(_: int) -> None:
        await kept.message(f"probe-peer@{DOMAIN}")

    out = {"login": await measure(rounds, login), "send": await measure(rounds, send)}
    await kept.close()
    return out


async def bench_slixmpp(server: Prosody, rounds: int) -> dict[str, tuple[float, float]]:
    adapter = XmppAdapter("bench", section(server), 10.0)

    def probe(name: str) -> Callable[[int], Awaitable[None]]:
        async def run(i: int) -> None:
            result = await adapter.attempt(ProbeContext("bench", name, 10.0, time.time(), f"{i}"))
            assert result.outcome is Outcome.SUCCESS, result

        return run

    await probe("send_c2c")(0)  # the kept session is opened outside the measurement
    try:
        return {
            "login": await measure(rounds, probe("login")),
            "send": await measure(rounds, probe("send_c2c")),
        }
    finally:
        await adapter.aclose()


async def bench_aioxmpp(server: Prosody, rounds: int) -> dict[str, tuple[float, float]] | None:
    try:
        import aioxmpp
        import aioxmpp.ping
    except ImportError:
        return None

    jid = aioxmpp.JID.fromstr(f"probe@{DOMAIN}")

    def context_factory() -> object:
        import OpenSSL.SSL

        context = OpenSSL.SSL.Context(OpenSSL.SSL.TLS_CLIENT_METHOD)
        context.load_verify_locations(str(server.ca.path))
        context.set_verify(OpenSSL.SSL.VERIFY_PEER, lambda *_: True)
        return context

    def client() -> aioxmpp.PresenceManagedClient:
        metadata = aioxmpp.make_security_layer(PASSWORD)._replace(
            ssl_context_factory=context_factory
        )
        return aioxmpp.PresenceManagedClient(
            jid,
            metadata,
            override_peer=[("127.0.0.1", server.c2s_port, aioxmpp.connector.STARTTLSConnector())],
        )

    async def login(_: int) -> None:
        async with client().connected():
            pass

    kept = client()
    async with kept.connected() as stream:

        async def send(_: int) -> None:
            message = aioxmpp.Message(
                to=aioxmpp.JID.fromstr(f"probe-peer@{DOMAIN}"), type_=aioxmpp.MessageType.CHAT
            )
            message.body[None] = f"bench {uuid.uuid4().hex}"
            await stream.send(message)
            await aioxmpp.ping.ping(kept, aioxmpp.JID.fromstr(DOMAIN))

        sent = await measure(rounds, send)
    return {"login": await measure(rounds, login), "send": sent}


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = accounts(Prosody(Path(folder) / "prosody")).start()
        try:
            rows = {
                "bare": await bench_bare(server, rounds),
                "slixmpp": await bench_slixmpp(server, rounds),
                "aioxmpp": await bench_aioxmpp(server, rounds),
            }
        finally:
            server.stop()
    print(f"{rounds} rounds each; wall = median ms, CPU = mean ms of this process")
    print(f"{'client':10} {'login wall':>11} {'login CPU':>10} {'send wall':>10} {'send CPU':>9}")
    for name, row in rows.items():
        if row is None:
            print(f"{name:10} (not importable here)")
            continue
        (lw, lc), (sw, sc) = row["login"], row["send"]
        print(f"{name:10} {lw:11.2f} {lc:10.2f} {sw:10.2f} {sc:9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    asyncio.run(main(parser.parse_args().rounds))
