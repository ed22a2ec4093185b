"""The daemon's life: load, start, serve, reload on SIGHUP or POST /-/reload, stop on
SIGTERM/SIGINT having closed every finished minute.

It composes the parts and nothing reaches back up: the in-memory view and the runtime stats
are made here and handed to both the runtime (which fills them) and the exposition (which
renders them); the web app gets the renderer and the readiness check as plain callables."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import signal
import sys
from pathlib import Path

from . import __version__
from .adapters import preload
from .config.isolated import load_config_isolated
from .config.models import ConfigFile, parse_listen_address
from .errors import UserError
from .expose.listener import WebServer
from .expose.metrics import Exposition
from .expose.web import make_app
from .expose.webconfig import WebSecurity, load_cert_chain, load_web_config
from .ledger.lock import LedgerLock, VantageLock
from .ledger.opening import ledger_password, open_ledger
from .ledger.view import LedgerView
from .logs import event, flush_suppressed, loop_exception_handler
from .reports.signing import checkpoint_of, signing_key
from .runtime.checkpoints import CheckpointJob
from .runtime.prober import Prober
from .stats import RuntimeStats
from .status.views import StatusPage


class QuietCollector:
    """Keeps the cyclic garbage collector from holding up the attempts on the event loop.

    Measured at 5,000 targets (bench/README.md): with the default thresholds the collector
    ran ~19 young passes a second, a middle pass of ~13 ms every half second and a full pass
    over every object (0.4-0.9 s) several times a minute, while finding no cyclic garbage at
    all (healthy or all-failing targets: everything is freed by reference counting). So:
    what start made (configuration, targets, the view) is frozen out of the passes; middle
    passes come after 3 young ones, not 10, so each walks fewer objects; and a full pass
    only after 10,000 middle ones (tens of minutes), when what has lived long is walked
    again. Young cyclic garbage is still collected as before."""

    THRESHOLDS = (700, 3, 10_000)  # young objects, young passes, middle passes

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*self.THRESHOLDS)


class HeapTrim:
    """Hands the C allocator's free pages back to the system once a minute.

    Objects over 512 bytes (a rendering's chunks, response buffers) come from glibc's
    malloc, which keeps what they free inside its heap for reuse: measured at 5,000
    targets, 9-11 MB of it sat unused between renderings, and `malloc_trim(0)` gave it back
    in 1-2 ms (bench/README.md, "Scale"). Where the C library has no malloc_trim it does
    nothing."""

    EVERY = 60.0

    def __init__(self) -> None:
        try:
            trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None
        else:
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            self._trim = trim

    @property
    def available(self) -> bool:
        return self._trim is not None

    def once(self) -> None:
        if self._trim is not None:
            self._trim(0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.EVERY)
            await asyncio.to_thread(self.once)  # ctypes lets go of the GIL meanwhile


# While a worker thread computes (the ledger writer building and hashing 10,000 minute rows),
# the event loop gives up the GIL at every socket call and waits up to the switch interval
# (5 ms by default) to get it back, so attempts due then start late. Measured at 10,000
# targets (bench/README.md, one run each): exact p99 start lag 43.7 ms at 5 ms, 20.9 ms at
# 0.5 ms; CPU per attempt 1,039 and 1,054 us, within the runs' noise.
SWITCH_INTERVAL = 0.0005


class Daemon:
    def __init__(
        self,
        config_path: Path,
        listen_override: str | None = None,
        web_config_override: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.listen_override = listen_override
        self.web_config_override = web_config_override
        self.prober: Prober | None = None
        self.stats = RuntimeStats()
        self.security: WebSecurity | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.collector = QuietCollector()

    async def reload(self) -> tuple[bool, str]:
        """Load and apply the config again. Never raises: SIGHUP runs this as a bare task,
        so every failure, whatever its cause, keeps the running config, logs one line and
        sets im_config_last_reload_successful to 0."""
        async with self._reload_lock:
            assert self.prober is not None
            try:
                new: ConfigFile = await asyncio.to_thread(load_config_isolated, self.config_path)
                await asyncio.to_thread(preload, {t.kind for t in new.config.targets})
                security = await asyncio.to_thread(load_web_config, self._web_config_path(new))
                await asyncio.to_thread(signing_key, new)  # a bad key is refused now
                self._adopt_tls(security)
                await self.prober.reload(new)
                self.security = security
            except UserError as exc:
                error = str(exc)
            except Exception as exc:  # a bug or exhaustion (MemoryError): not the user's text
                # Only the type: the message of an unexpected error may quote the config.
                error = f"internal error while reloading: {type(exc).__name__}"
            else:
                self.stats.reload_successful = 1
                return True, "reloaded"
            self.stats.reload_successful = 0
            event(
                logging.ERROR,
                "reload failed; the running configuration stays",
                error=error.replace("\n", " | "),
            )
            return False, f"reload failed: {error}"

    def _web_config_path(self, config: ConfigFile) -> Path | None:
        return self.web_config_override or config.web_config_path

    def _adopt_tls(self, new: WebSecurity) -> None:
        """The listener keeps its TLS context: a reload rotates the certificate and key in
        it; turning TLS on or off needs a restart."""
        assert self.security is not None
        old = self.security.tls
        if (old is None) != (new.tls is None):
            raise UserError(
                "turning TLS on or off (tls_server_config) needs a restart, not a reload"
            )
        if old is not None and new.source is not None:
            tls = new.settings.tls_server_config
            assert tls is not None
            # load_web_config already loaded the files into a fresh context, so a bad pair
            # is refused before the live context is touched.
            load_cert_chain(old, new.source, tls)
            new.tls = old

    async def run(self) -> int:
        # The loop's own errors (a task that died, a callback that raised) as
        # one rate-limited line each, not a traceback per occurrence.
        asyncio.get_running_loop().set_exception_handler(loop_exception_handler)
        config = await asyncio.to_thread(load_config_isolated, self.config_path)
        await asyncio.to_thread(preload, {t.kind for t in config.config.targets})
        self.security = await asyncio.to_thread(load_web_config, self._web_config_path(config))
        await asyncio.to_thread(signing_key, config)  # a bad key stops the start, not a checkpoint
        address = self.listen_override or config.config.web.listen_address
        try:
            host, port = parse_listen_address(address)
        except ValueError as exc:
            raise UserError(f"--web.listen-address: {exc}") from None
        # One daemon per ledger: refused here, before the ledger is opened or migrated. The
        # lock lives as long as this object (the process); the kernel drops it on any exit.
        # A PostgreSQL ledger is shared by a fleet: one daemon per vantage name instead.
        url = config.config.ledger.url
        if url is None:
            self.ledger_lock = await asyncio.to_thread(LedgerLock.acquire, config.ledger_path)
        else:
            self.ledger_lock = await asyncio.to_thread(
                VantageLock.acquire, url, ledger_password(config), config.vantage, 10.0
            )
        ledger = await asyncio.to_thread(open_ledger, config)
        view = LedgerView()
        exposition = Exposition(view, self.stats, __version__)
        self.prober = prober = Prober(
            config,
            ledger,
            view=view,
            stats=self.stats,
            on_targets=exposition.configure,
            show=exposition.show,
        )
        loop = asyncio.get_running_loop()
        await prober.start()
        assert prober.scheduler is not None
        CheckpointJob(
            lambda: prober.config_file,
            lambda reason, now: checkpoint_of(ledger, prober.config_file, reason, now),
            close_delay=lambda: prober.close_delay,
            clock=prober.clock.wall,
        ).schedule(prober.scheduler)
        status = StatusPage(
            view,
            lambda: prober.config_file,
            network_up=lambda: self.stats.network_up,
            version=__version__,
            clock=prober.clock.wall,
        )
        app = make_app(
            lambda openmetrics: exposition.render_pieces(
                prober.clock.wall(), openmetrics=openmetrics
            ),
            prober.readiness,
            self.reload if config.config.web.enable_lifecycle else None,
            lambda: self.security,
            pages=status.routes(),
        )
        web_settings = config.config.web
        server = WebServer(
            app,
            host,
            port,
            max_connections=web_settings.max_connections,
            request_timeout=web_settings.request_timeout,
            tls=self.security.tls,
        )
        try:
            await server.start()
        except OSError as exc:
            await prober.stop()
            await status.close()
            ledger.close()
            raise UserError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        event(
            logging.INFO,
            "listening",
            address=address,
            tls=self.security.tls is not None,
            basic_auth=self.security.auth_required,
            max_connections=server.listener.max_connections,
        )
        self.collector.start()
        sys.setswitchinterval(SWITCH_INTERVAL)
        # The ledger's families rendered again soon after each minute closes, off the scrape.
        rendering = loop.create_task(exposition.keep_ready(prober.clock.wall))
        # The status page reads what no longer changes once, in its own threads, now.
        warming = loop.create_task(status.warm())
        trimming = loop.create_task(HeapTrim().run())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        await self._stop.wait()
        event(logging.INFO, "stopping: finishing attempts in flight and closing minutes")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await prober.stop()
        await server.stop()
        warming.cancel()
        rendering.cancel()
        exposition.close()
        trimming.cancel()
        await status.close()
        await asyncio.to_thread(ledger.close)
        flush_suppressed()
        return 0


def run(
    config_path: Path, listen_override: str | None = None, web_config: Path | None = None
) -> int:
    return asyncio.run(Daemon(config_path, listen_override, web_config).run())
