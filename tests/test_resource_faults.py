"""The prober's own host running out (descriptors, ephemeral ports, memory) is the prober's
fault, never the provider's: every kind's real attempt, the network check, and the runtime's
and probe-once's catch-all record `prober_fault`/`local_resources` for it, while a refused
connection is still the provider's `failure`.

The exhaustion is real: the soft descriptor limit is lowered to just above what is open and
the rest are taken (then both undone), ephemeral ports are used up in a network namespace of
their own, and memory runs out on an allocation the machine cannot make.

Descriptors run out in a spawned child process that runs nothing but the test's body
(tests/child_process.py): in the pytest process the servers' threads keep closing and
accepting sockets, which would free a descriptor for the "starved" attempt or make a server's
accept fail. The servers stay here; the child talks to them over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from prober.adapters import ProbeContext, Result
from prober.adapters.base import INTERNAL, LOCAL_RESOURCES, Adapter, Section
from prober.adapters.external import ExternalAdapter, ExternalSection
from prober.adapters.http import HttpAdapter, HttpSection
from prober.adapters.matrix import MatrixAdapter, MatrixSection
from prober.adapters.tencent_im import TencentImAdapter, TencentSection
from prober.adapters.transport import local_resource_error
from prober.adapters.xmpp import XmppAdapter, XmppSection
from prober.config.models import NetworkCheckConfig, parse_config
from prober.config.secrets import Secret
from prober.ledger.store import Ledger
from prober.runtime.attempt import run_attempt as record_attempt
from prober.runtime.netcheck import NetworkCheck
from prober.runtime.plan import Planned
from prober.runtime.probe_once import _one
from prober.runtime.prober import Prober
from prober.setup.tencent import setup
from prober.sla import Outcome, Reason, State

from .chat_app import ChatServer, free_port
from .child_process import Isolated, isolated
from .prosody_fixture import (  # noqa: F401 - the session fixture
    DOMAIN,
    PASSWORD,
    PEER_PASSWORD,
    Prosody,
    prosody_server,
)
from .runtime_util import BASE, FakeClock
from .tencent_emulator import TencentEmulator

TIMEOUT = 3.0
SPARE = 32  # descriptors between the highest one open and the lowered limit, all then taken
REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def descriptors_used_up() -> Iterator[None]:
    """While inside, this process cannot open one more descriptor (EMFILE), for real."""
    assert isolated(), "only in the isolated child: elsewhere other threads free descriptors"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    limit = highest + 1 + SPARE
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _limit_kept(body: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        return body(*args)
    finally:
        after = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
        assert after == before


@pytest.fixture(scope="module")
def child() -> Iterator[Isolated]:
    isolated_child = Isolated()
    yield isolated_child
    isolated_child.close()


def starved(child: Isolated, body: Callable[..., Any], *args: Any) -> Any:
    """`body(*args)` in the isolated child, its descriptor limit checked as restored after."""
    return child.run(_limit_kept, body, args)


@pytest.fixture(scope="module")
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def emulator() -> Iterator[TencentEmulator]:
    server = TencentEmulator().start()
    setup("tc", tencent_section(where(server)))  # the probe accounts, so a healthy login succeeds
    yield server
    server.stop()


def assert_prober_fault(result: Result) -> None:
    assert result.outcome is Outcome.PROBER_FAULT, result
    assert result.error_kind == LOCAL_RESOURCES, result


async def attempt(adapter: Adapter, probe: str) -> Result:
    context = ProbeContext(adapter.target, probe, TIMEOUT, time.time(), "a1")
    async with asyncio.timeout(TIMEOUT):
        return (await adapter.attempt(context)).cleaned()


async def starved_then_healthy(adapter: Adapter, probe: str) -> tuple[Result, Result]:
    """The attempt with no descriptor left, then the same attempt once they are back: the
    second one shows the service was healthy all along."""
    try:
        with descriptors_used_up():
            starved = await attempt(adapter, probe)
        healthy = await attempt(adapter, probe)
    finally:
        await adapter.aclose()
    return starved, healthy


def http_adapter(base_url: str) -> HttpAdapter:
    section = HttpSection.model_validate(
        {"base_url": base_url, "probes": {"ping": [{"url": "/ping"}]}}
    )
    return HttpAdapter("chat", section, TIMEOUT)


def matrix_adapter(homeserver: str) -> MatrixAdapter:
    section = MatrixSection.model_validate(
        {
            "homeserver": homeserver,
            "user": "@probe:localhost",
            "password": Secret("probe-password", "env:MATRIX_PASSWORD"),
        }
    )
    return MatrixAdapter("mx", section, TIMEOUT)


def where(emulator: TencentEmulator) -> tuple[int, str, str]:
    """What a section needs of the emulator, plain enough to hand to the child."""
    return emulator.sdkappid, emulator.key, emulator.domain


def tencent_section(at: tuple[int, str, str], **extra: Any) -> TencentSection:
    sdkappid, key, domain = at
    return TencentSection.model_validate(
        {
            "sdkappid": sdkappid,
            "secret_key": Secret(key, "env:TENCENT_KEY"),
            "domain": domain,
            "scheme": "http",
            "group_id": "im-prober-group",
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def homeserver(port: int):
    """Just enough of a Matrix homeserver for a password login."""

    async def login(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "access_token": "syt_probe_token",
                "user_id": body["identifier"]["user"],
                "device_id": body["device_id"],
            }
        )

    app = web.Application()
    app.router.add_post("/_matrix/client/v3/login", login)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# -- every kind's transport ------------------------------------------------------------


def _http_starved(url: str) -> tuple[Result, Result]:
    return asyncio.run(starved_then_healthy(http_adapter(url), "ping"))


def test_an_http_attempt_with_no_free_descriptor_is_the_probers_fault(
    child: Isolated, chat: ChatServer
) -> None:
    without, healthy = starved(child, _http_starved, chat.url)
    assert_prober_fault(without)
    assert "Too many open files" in without.detail
    assert healthy.outcome is Outcome.SUCCESS


def _matrix_starved() -> tuple[Result, Result]:
    async def main() -> tuple[Result, Result]:
        async with homeserver(free_port()) as url:
            return await starved_then_healthy(matrix_adapter(url), "login")

    return asyncio.run(main())


def test_a_matrix_login_with_no_free_descriptor_is_the_probers_fault(child: Isolated) -> None:
    without, healthy = starved(child, _matrix_starved)
    assert_prober_fault(without)
    assert healthy.outcome is Outcome.SUCCESS


def _tencent_starved(at: tuple[int, str, str]) -> tuple[Result, Result]:
    adapter = TencentImAdapter("tc", tencent_section(at), TIMEOUT)
    return asyncio.run(starved_then_healthy(adapter, "login"))


def test_a_tencent_call_with_no_free_descriptor_is_the_probers_fault(
    child: Isolated, emulator: TencentEmulator
) -> None:
    emulator.set_fault()
    without, healthy = starved(child, _tencent_starved, where(emulator))
    assert_prober_fault(without)
    assert healthy.outcome is Outcome.SUCCESS


def _external_starved() -> tuple[Result, Result]:
    section = ExternalSection.model_validate({"command": [sys.executable, "-c", "pass"]})
    return asyncio.run(starved_then_healthy(ExternalAdapter("ext", section, TIMEOUT), "login"))


def test_an_external_command_that_cannot_be_spawned_for_lack_of_descriptors_is_the_probers_fault(
    child: Isolated,
) -> None:
    without, healthy = starved(child, _external_starved)
    assert_prober_fault(without)
    assert without.detail.startswith(f"cannot start {sys.executable}")
    assert healthy.outcome is Outcome.SUCCESS


def xmpp_adapter(at: tuple[int, str | None]) -> XmppAdapter:
    """The probe accounts of the test Prosody; `at` is its c2s port and CA file."""
    port, ca_file = at
    section = XmppSection.model_validate(
        {
            "jid": f"probe@{DOMAIN}",
            "password": Secret(PASSWORD, "env:XMPP_PASSWORD"),
            "host": "127.0.0.1",
            "port": port,
            "ca_file": ca_file,
            "peer_jid": f"probe-peer@{DOMAIN}",
            "peer_password": Secret(PEER_PASSWORD, "env:XMPP_PEER_PASSWORD"),
        }
    )
    return XmppAdapter("xm", section, TIMEOUT)


def xmpp_at(prosody: Prosody) -> tuple[int, str]:
    return prosody.c2s_port, str(prosody.ca.path)


def _xmpp_starved(at: tuple[int, str]) -> list[tuple[str, str, str]]:
    """The runtime's record (its run_attempt) of xmpp attempts with and without descriptors:
    (probe, outcome/kind, detail) each."""

    async def main() -> list[tuple[str, str, str]]:
        adapter, done = xmpp_adapter(at), []

        async def run(probe: str, starve: bool) -> None:
            context = ProbeContext(adapter.target, probe, TIMEOUT, time.time(), "a1")
            with descriptors_used_up() if starve else contextlib.nullcontext():
                record = await record_attempt(adapter, context)
            done.append((probe, f"{record.outcome}/{record.error_kind}", record.detail))

        try:
            # before any session: even the CA file cannot be read to build the TLS context
            await run("login", starve=True)
            await run("login", starve=False)
            # the TLS context is built (and shared): now the socket cannot be made
            for probe in ("login", "send_c2c", "ping"):
                await run(probe, starve=True)
            await run("send_c2c", starve=False)
            # a kept session needs no new descriptor: it goes on working
            await run("send_c2c", starve=True)
        finally:
            await adapter.aclose()
        return done

    return asyncio.run(main())


def test_an_xmpp_attempt_with_no_free_descriptor_is_the_probers_fault(
    child: Isolated, prosody: Prosody
) -> None:
    done = starved(child, _xmpp_starved, xmpp_at(prosody))
    fault, ok = "prober_fault/local_resources", "success/"
    assert [(probe, seen) for probe, seen, _ in done] == [
        ("login", fault),
        ("login", ok),
        ("login", fault),
        ("send_c2c", fault),
        ("ping", fault),
        ("send_c2c", ok),
        ("send_c2c", ok),
    ], done
    for _, seen, detail in done:
        assert seen == ok or "Too many open files" in detail, detail


def test_an_external_command_that_does_not_exist_is_still_a_config_error(tmp_path: Path) -> None:
    section = ExternalSection.model_validate({"command": [str(tmp_path / "no-such-probe")]})
    result = asyncio.run(attempt(ExternalAdapter("ext", section, TIMEOUT), "login"))
    assert (result.outcome, result.error_kind) == (Outcome.CLIENT_ERROR, "config")


@pytest.mark.parametrize("kind", ["http", "matrix", "tencent_im", "xmpp"])
def test_a_refused_connection_is_still_the_providers_failure(kind: str, emulator) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    adapters = {
        "xmpp": lambda: (xmpp_adapter((int(closed.rsplit(":", 1)[1]), None)), "login"),
        "http": lambda: (http_adapter(closed), "ping"),
        "matrix": lambda: (matrix_adapter(closed), "login"),
        "tencent_im": lambda: (
            TencentImAdapter(
                "tc",
                tencent_section(where(emulator), domain=closed.removeprefix("http://")),
                TIMEOUT,
            ),
            "login",
        ),
    }

    async def main() -> Result:
        adapter, probe = adapters[kind]()
        try:
            return await attempt(adapter, probe)
        finally:
            await adapter.aclose()

    result = asyncio.run(main())
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "connect")


def _ports_exhausted_child() -> None:
    """Run by the test below inside a network namespace of its own (only a loopback): the
    ephemeral port range narrowed to two ports, both held, then the http attempt."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    chat = ChatServer().start()  # its port is taken before the range narrows
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range")
    wide = ports.read_text()
    ports.write_text("40000 40001\n")
    held: list[socket.socket] = []
    while True:
        sock = socket.socket()
        try:
            sock.connect(("127.0.0.1", chat.port))
        except OSError as exc:
            sock.close()
            assert exc.errno == errno.EADDRNOTAVAIL, exc
            break
        held.append(sock)

    async def main() -> dict[str, str]:
        adapter = http_adapter(chat.url)
        try:
            starved = await attempt(adapter, "ping")
            for sock in held:
                sock.close()
            ports.write_text(wide)
            healthy = await attempt(adapter, "ping")
        finally:
            await adapter.aclose()
        return {
            "starved": f"{starved.outcome}/{starved.error_kind}",
            "detail": starved.detail,
            "healthy": str(healthy.outcome),
        }

    print(json.dumps(asyncio.run(main())))
    chat.stop()


def test_an_http_attempt_with_every_ephemeral_port_in_use_is_the_probers_fault() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) for a network namespace")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here (needs root): {probe.stderr}")
    code = "from tests.test_resource_faults import _ports_exhausted_child as c; c()"
    run = subprocess.run(
        [unshare, "--net", sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["starved"] == "prober_fault/local_resources", seen
    assert "Cannot assign requested address" in seen["detail"]
    assert seen["healthy"] == "success"


# -- the network check ------------------------------------------------------------------


def network_check(url: str) -> NetworkCheck:
    return NetworkCheck(NetworkCheckConfig(urls=[url], timeout=TIMEOUT))


def _round_untried(url: str) -> tuple[bool | None, bool, bool]:
    async def main() -> tuple[bool | None, bool, bool]:
        check = network_check(url)
        try:
            with descriptors_used_up():
                untried = await check.network_down()
                counted = await check.all_failed()
            after = await check.all_failed()
        finally:
            await check.aclose()
        return untried, counted, after

    return asyncio.run(main())


def test_a_network_round_that_could_not_open_a_socket_is_not_network_down(
    child: Isolated, chat: ChatServer
) -> None:
    assert starved(child, _round_untried, chat.url + "/ping") == (None, False, False)


def _round_untried_after_observed() -> tuple[bool, bool | None, bool]:
    async def main() -> tuple[bool, bool | None, bool]:
        check = network_check(f"http://127.0.0.1:{free_port()}/")  # really unreachable
        try:
            observed = await check.all_failed()
            with descriptors_used_up():
                untried = await check.network_down()
                counted = await check.all_failed()
        finally:
            await check.aclose()
        return observed, untried, counted

    return asyncio.run(main())


def test_an_untried_network_round_repeats_the_last_round_that_was_observed(
    child: Isolated,
) -> None:
    assert starved(child, _round_untried_after_observed) == (True, None, True)


# -- the runtime: what the minute becomes ----------------------------------------------


@contextlib.asynccontextmanager
async def started_prober(
    tmp_path: Path, chat_url: str, *, network: bool
) -> AsyncIterator[tuple[Prober, FakeClock, Ledger]]:
    """A started Prober whose timers are cancelled (the test runs the minute's attempts
    itself), stopped when the block ends."""
    closed = free_port()
    check = f"network_check: {{urls: ['{chat_url}/ping'], timeout: 1s}}" if network else ""
    text = textwrap.dedent(f"""\
        ledger: {{path: ledger.sqlite3}}
        {check}
        targets:
          - name: t
            kind: http
            http:
              probes:
                login: [{{url: "{chat_url}/ping"}}]
                send_c2c: [{{url: "http://127.0.0.1:{closed}/"}}]
            probes:
              login: {{attempts_per_minute: 1, timeout: 1s}}
              send_c2c: {{attempts_per_minute: 1, timeout: 1s}}
            sla: {{service_month_anchor: 2026-01-01}}
        """)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    clock = FakeClock(BASE + 5)
    prober = Prober(parse_config(text, path), ledger, clock=clock)
    await prober.start()
    for timer in list(prober.clockwork.timers):
        timer.cancel()
    try:
        yield prober, clock, ledger
    finally:
        await prober.stop()


async def run_attempt(prober: Prober, clock: FakeClock, probe: str) -> None:
    planned = Planned(clock.now, "t", probe, 1.0, 60.0)
    prober.clockwork.book.started(planned.minute)
    await prober.clockwork.attempt(planned, prober.targets.current("t").adapter)


async def close_minute(prober: Prober, clock: FakeClock, ledger: Ledger, minute: int):
    clock.now = (minute + 1) * 60 + 10
    await prober.clockwork.close_due()
    [row] = [r for r in ledger.minute_rows("t") if r.probe == "" and r.minute == minute]
    kinds = {
        a.probe: (a.outcome, a.error_kind) for a in ledger.attempts_in("t", minute, minute + 1)
    }
    return (row.state, row.reason), kinds


def _minute_with_login_starved(tmp_path: Path, chat_url: str):
    async def main():
        async with started_prober(tmp_path, chat_url, network=False) as (prober, clock, ledger):
            with descriptors_used_up():
                await run_attempt(prober, clock, "login")
            return await close_minute(prober, clock, ledger, BASE // 60)

    return asyncio.run(main())


def test_a_healthy_service_is_not_an_apparent_failure_when_the_prober_has_no_descriptors(
    child: Isolated, tmp_path: Path, chat: ChatServer
) -> None:
    verdict, kinds = starved(child, _minute_with_login_starved, tmp_path, chat.url)
    assert verdict == (State.NO_DATA, Reason.PROBER_NETWORK)  # never apparent_failure
    assert kinds == {"login": (Outcome.PROBER_FAULT, LOCAL_RESOURCES)}


def _minute_with_a_refusal_beside_starved_ones(tmp_path: Path, chat_url: str):
    async def main():
        async with started_prober(tmp_path, chat_url, network=True) as (prober, clock, ledger):
            with descriptors_used_up():
                assert prober.netcheck is not None
                await prober.netcheck.round_into(BASE // 60, prober.clockwork.book, prober.stats)
                await run_attempt(prober, clock, "login")
            await run_attempt(prober, clock, "send_c2c")  # refused: the provider's failure
            return await close_minute(prober, clock, ledger, BASE // 60)

    return asyncio.run(main())


def test_a_real_failure_beside_a_starved_attempt_and_network_round_still_counts(
    child: Isolated, tmp_path: Path, chat: ChatServer
) -> None:
    verdict, kinds = starved(child, _minute_with_a_refusal_beside_starved_ones, tmp_path, chat.url)
    # the untried round is no evidence the network was down: the refusal counts (rule 3)
    assert verdict == (State.APPARENT_FAILURE, Reason.NONE)
    assert kinds == {
        "login": (Outcome.PROBER_FAULT, LOCAL_RESOURCES),
        "send_c2c": (Outcome.FAILURE, "connect"),
    }


# -- exceptions that escape an adapter --------------------------------------------------


class Starving(Adapter):
    """An adapter whose own code runs out of something (or has a bug) and lets it escape."""

    kind: ClassVar[str] = "starving"
    section_model: ClassVar[type[Section]] = Section
    probes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, what: str) -> None:
        super().__init__("t", Section(), TIMEOUT)
        self.what = what

    async def attempt(self, context: ProbeContext) -> Result:
        if self.what == "descriptors":
            with descriptors_used_up():
                os.open(os.devnull, os.O_RDONLY)  # EMFILE, raised by the kernel
        elif self.what == "memory":
            bytearray(1 << 60)  # more than the address space: a real MemoryError
        else:
            {}["a bug"]  # a KeyError, as a bug would raise
        raise AssertionError("unreachable")


ESCAPES = [("descriptors", LOCAL_RESOURCES), ("memory", LOCAL_RESOURCES), ("bug", INTERNAL)]


def _runtime_records(what: str, tmp_path: Path, chat_url: str) -> tuple[Outcome, str]:
    async def main():
        async with started_prober(tmp_path, chat_url, network=False) as (prober, clock, _):
            planned = Planned(clock.now, "t", "login", 1.0, 60.0)
            prober.clockwork.book.started(planned.minute)
            await prober.clockwork.attempt(planned, Starving(what))
            return prober.clockwork.book.attempts[("t", planned.minute)]

    [recorded] = asyncio.run(main())
    return recorded.outcome, recorded.error_kind


@pytest.mark.parametrize(("what", "kind"), ESCAPES)
def test_the_runtime_names_what_ran_out_when_it_escapes_an_adapter(
    what: str, kind: str, child: Isolated, tmp_path: Path, chat: ChatServer
) -> None:
    recorded = starved(child, _runtime_records, what, tmp_path, chat.url)
    assert recorded == (Outcome.PROBER_FAULT, kind)


def _probe_once_shows(what: str) -> tuple[Outcome, str]:
    row = asyncio.run(_one(Starving(what), "t", "login", TIMEOUT))
    return row.result.outcome, row.result.error_kind


@pytest.mark.parametrize(("what", "kind"), ESCAPES)
def test_probe_once_shows_the_same_as_the_runtime_when_it_escapes_an_adapter(
    what: str, kind: str, child: Isolated
) -> None:
    assert starved(child, _probe_once_shows, what) == (Outcome.PROBER_FAULT, kind)


def _raised_from(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        raise exc from cause
    except BaseException as raised:
        return raised


def test_a_local_cause_anywhere_in_the_chain_is_local_but_one_refusal_in_a_group_is_not() -> None:
    emfile = OSError(errno.EMFILE, "Too many open files")
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert local_resource_error(_raised_from(RuntimeError("wrapped"), emfile))
    assert local_resource_error(ExceptionGroup("both addresses", [emfile, MemoryError()]))
    # one address refused: the provider answered, whatever happened on the other
    assert not local_resource_error(ExceptionGroup("both addresses", [emfile, refused]))
    assert not local_resource_error(_raised_from(TimeoutError(), refused))
