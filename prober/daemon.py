"""The daemon's life: load, start, serve, reload on SIGHUP or POST /-/reload, stop on
SIGTERM/SIGINT having closed every finished minute."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from .config import ConfigFile, load_config, parse_listen_address
from .errors import UserError
from .ledger import Ledger
from .logs import event
from .scheduler import Prober
from .web import make_app


class Daemon:
    def __init__(self, config_path: Path, listen_override: str | None = None) -> None:
        self.config_path = config_path
        self.listen_override = listen_override
        self.prober: Prober | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()

    async def reload(self) -> tuple[bool, str]:
        async with self._reload_lock:
            assert self.prober is not None
            try:
                new: ConfigFile = await asyncio.to_thread(load_config, self.config_path)
                await self.prober.reload(new)
            except UserError as exc:
                self.prober.process.reload_successful = 0
                event(
                    logging.ERROR,
                    "reload failed; the running configuration stays",
                    error=str(exc).replace("\n", " | "),
                )
                return False, f"reload failed: {exc}"
            self.prober.process.reload_successful = 1
            return True, "reloaded"

    async def run(self) -> int:
        config = await asyncio.to_thread(load_config, self.config_path)
        address = self.listen_override or config.config.web.listen_address
        try:
            host, port = parse_listen_address(address)
        except ValueError as exc:
            raise UserError(f"--web.listen-address: {exc}") from None
        ledger = await asyncio.to_thread(Ledger, config.ledger_path)
        self.prober = prober = Prober(config, ledger)
        loop = asyncio.get_running_loop()
        await prober.start()
        app = make_app(lambda: prober, self.reload if config.config.web.enable_lifecycle else None)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await prober.stop()
            ledger.close()
            await runner.cleanup()
            raise UserError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        event(logging.INFO, "listening", address=address)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        await self._stop.wait()
        event(logging.INFO, "stopping: finishing attempts in flight and closing minutes")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await prober.stop()
        await runner.cleanup()
        await asyncio.to_thread(ledger.close)
        return 0


def run(config_path: Path, listen_override: str | None = None) -> int:
    return asyncio.run(Daemon(config_path, listen_override).run())
