"""A line that repeats (same event, same cause) is let through a few times a minute, then only
counted; the event loop's own errors go through the same limit, one line each."""

from __future__ import annotations

import io
import json
import logging
import socket
import subprocess
import sys
import time

from prober.logs import HumanFormatter, JsonFormatter, RepeatLimiter

from .daemon_util import ROOT


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited_logger(name: str, formatter: logging.Formatter, limiter: RepeatLimiter):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(limiter)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_a_repeating_line_passes_a_few_times_then_says_how_many_were_suppressed() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(burst=3, interval=60, clock=clock)
    logger, out = limited_logger("test.limiter.human", HumanFormatter(), limiter)
    for n in range(1000):
        logger.warning(
            "accept failed on port %d", 9469 + n % 2, extra={"fields": {"error": "EMFILE"}}
        )
    assert len(out.getvalue().splitlines()) == 3
    clock.now += 61
    logger.warning("accept failed on port %d", 9469, extra={"fields": {"error": "EMFILE"}})
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert "accept failed on port 9469 (997 similar lines suppressed) error=EMFILE" in lines[-1]


def test_a_different_cause_is_a_different_line() -> None:
    limiter = RepeatLimiter(burst=2, interval=60, clock=FakeClock())
    logger, out = limited_logger("test.limiter.causes", HumanFormatter(), limiter)
    for _ in range(10):
        logger.error("probe failed", extra={"fields": {"target": "a", "error": "timeout"}})
        logger.error("probe failed", extra={"fields": {"target": "b", "error": "timeout"}})
        for exc in (ValueError("x"), KeyError("y")):
            try:
                raise exc
            except Exception:
                logger.exception("handler crashed")
    lines = out.getvalue().splitlines()
    assert sum("target=a" in line for line in lines) == 2
    assert sum("target=b" in line for line in lines) == 2
    assert sum("ValueError" in line for line in lines) == 2
    assert sum("KeyError" in line for line in lines) == 2


def test_flush_reports_what_no_later_line_has_and_json_carries_the_count() -> None:
    clock = FakeClock()
    limiter = RepeatLimiter(burst=1, interval=60, clock=clock)
    logger, out = limited_logger("test.limiter.json", JsonFormatter(), limiter)
    for _ in range(5):
        logger.warning("web port: refused a connection")
    (pending,) = limiter.flush()
    handler = logger.handlers[0]
    handler.emit(pending)
    first, flushed = (json.loads(line) for line in out.getvalue().splitlines())
    assert "suppressed" not in first
    assert flushed["msg"] == "web port: refused a connection"
    assert flushed["suppressed"] == 4
    assert limiter.flush() == []  # counted once


# asyncio's accept loop, out of descriptors, reports the error in a tight loop (and schedules
# more retries for each report): here with the daemon's logging set up as `run` sets it up.
FLOOD_CHILD = """
import asyncio, resource, sys
from prober import logs
resource.setrlimit(resource.RLIMIT_NOFILE, (40, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
logs.setup("human", "info")

async def main():
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(logs.loop_exception_handler)
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(4)
    logs.flush_suppressed()

asyncio.run(main())
"""


def test_the_event_loops_error_flood_is_a_few_lines_without_tracebacks() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", FLOOD_CHILD],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients = []
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        for _ in range(60):  # past the child's 40 descriptors
            sock = socket.socket()
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                break
            clients.append(sock)
            time.sleep(0.005)
        _, err = child.communicate(timeout=30)
    finally:
        for sock in clients:
            sock.close()
        child.kill()
    lines = err.splitlines()
    accept = [line for line in lines if "socket.accept() out of system resource" in line]
    assert accept, err[-2000:]
    assert "Too many open files" in accept[0]
    assert "Traceback" not in err
    assert len(lines) <= 10, f"{len(lines)} lines: {err[:2000]}"
    assert "similar lines suppressed" in accept[-1]
