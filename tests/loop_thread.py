"""An event loop in a thread of its own, for the local servers the tests drive from outside
(the chat service, the Tencent emulator)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, setup: Callable[[], Awaitable[Any]]) -> None:
        """Run `setup()` in the new loop and return once it has finished."""
        ready = threading.Event()

        def main() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(setup())
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True, name=self.name)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{self.name} did not start")

    def call(self, coroutine: Awaitable[Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    def stop(self, cleanup: Callable[[], Awaitable[Any]]) -> None:
        """Run `cleanup()`, end every task still pending (e.g. handlers told to hang), stop."""

        async def finish() -> None:
            await cleanup()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        assert self.loop is not None
        self.call(finish())
        self.loop.call_soon_threadsafe(self.loop.stop)
        assert self._thread is not None
        self._thread.join(10)
