"""Matrix benchmark against a local Synapse (relaxed limits): latency of login and send
through the prober's adapter against the same requests made by a bare httpx loop (the
prober's overhead per attempt, median and p99), and Synapse's sustained sends/s.

    python bench/matrix_bench.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from prober.adapters import ProbeContext
from prober.adapters.matrix import MatrixAdapter, MatrixSection
from prober.config.secrets import Secret
from prober.demo.homeserver import Homeserver
from prober.setup.matrix import provision
from prober.sla import Outcome

PASSWORD = "bench-password-1"
PEER_PASSWORD = "bench-password-2"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def prober_latencies(section: MatrixSection, rounds: int) -> dict[str, list[float]]:
    adapter = MatrixAdapter("bench", section, 10.0)
    out: dict[str, list[float]] = {"login": [], "send_group": []}
    try:
        for i in range(rounds):
            for probe in out:
                context = ProbeContext("bench", probe, 10.0, time.time(), f"b{i}")
                t0 = time.perf_counter()
                result = await adapter.attempt(context)
                out[probe].append(time.perf_counter() - t0)
                assert result.outcome is Outcome.SUCCESS, result
    finally:
        await adapter.aclose()
    return out


async def bare_latencies(server: str, user: str, room: str, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"login": [], "send_group": []}
    async with httpx.AsyncClient(base_url=server) as client:
        token = ""
        for _ in range(rounds):
            t0 = time.perf_counter()
            response = await client.post(
                "/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": PASSWORD,
                    "device_id": "BARE",
                },
            )
            token = response.json()["access_token"]
            out["login"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            response = await client.put(
                f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                json={"msgtype": "m.notice", "body": "bench"},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            out["send_group"].append(time.perf_counter() - t0)
    return out


async def sends_per_second(server: str, user: str, room: str, seconds: float) -> float:
    async with httpx.AsyncClient(base_url=server, limits=httpx.Limits(max_connections=8)) as c:
        token = (
            await c.post(
                "/_matrix/client/v3/login",
                json={
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": PASSWORD,
                },
            )
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        sent = 0
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                response = await c.put(
                    f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{uuid.uuid4().hex}",
                    json={"msgtype": "m.notice", "body": "load"},
                    headers=headers,
                )
                response.raise_for_status()
                sent += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(8)))
        return sent / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Homeserver(Path(tmp), relaxed=True).start()
        try:
            setup = provision(
                server.url,
                user="probe",
                password=PASSWORD,
                peer="peer",
                peer_password=PEER_PASSWORD,
                shared_secret=server.shared_secret,
            )
            section = MatrixSection.model_validate(
                {
                    "homeserver": server.url,
                    "user": setup.user,
                    "password": Secret(PASSWORD, "bench"),
                    "group_room": setup.group_room,
                }
            )
            bare = asyncio.run(
                bare_latencies(server.url, setup.user, setup.group_room, args.rounds)
            )
            ours = asyncio.run(prober_latencies(section, args.rounds))
            print(
                f"{'request':10} {'bare httpx p50/p99 ms':>22} {'prober p50/p99 ms':>20} "
                f"{'overhead p50 ms':>16}"
            )
            for probe in ("login", "send_group"):
                b, o = bare[probe], ours[probe]
                print(
                    f"{probe:10} {pct(b, 0.5):10.1f} / {pct(b, 0.99):<9.1f} "
                    f"{pct(o, 0.5):8.1f} / {pct(o, 0.99):<9.1f} {pct(o, 0.5) - pct(b, 0.5):12.1f}"
                )
            rate = asyncio.run(sends_per_second(server.url, setup.user, setup.group_room, 20))
            print(f"Synapse sustained sends/s (8 concurrent, relaxed limits): {rate:.0f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
