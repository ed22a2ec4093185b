"""A process of its own for test bodies that nothing else may disturb, e.g. one that takes
every descriptor: in the pytest process the servers of module fixtures (threads of their
own) and what earlier tests left behind keep closing and accepting sockets, so a descriptor
can come free, or be taken, in the middle of the test.

Each body gets a fresh spawned interpreter (not a fork of the threads above, and not one an
earlier body used: what a body leaves, e.g. the thread pycares destroys resolver channels in,
closing their sockets, could act during the next one). The body runs in its only thread;
it and its arguments and result travel by pickle, so a body is a module-level function.
Servers the body talks to stay in the test process.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

_inside = False


def isolated() -> bool:
    """Whether this code runs as an isolated body (in the child, nothing else running)."""
    return _inside


def _run(body: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    global _inside
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:  # a thread running beside the body is the disturbance this process avoids
        raise RuntimeError(f"the isolated process has other threads: {others}")
    _inside = True
    try:
        return body(*args)
    finally:
        _inside = False


class Isolated:
    """Runs bodies one by one, each in a new child (the next is spawned while the test
    process goes on, as spawning and importing take most of a second)."""

    def __init__(self) -> None:
        self._pool = ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1
        )

    def run(self, body: Callable[..., Any], *args: Any, timeout: float = 60.0) -> Any:
        """`body(*args)` in the child; its exception, if any, is raised here."""
        return self._pool.submit(_run, body, args).result(timeout)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
