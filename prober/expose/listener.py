"""The web port's listener. It accepts connections itself, instead of leaving that to
`loop.create_server`, so that it can bound them:

- at most `max_connections` are open at once (never more than a quarter of the process's
  descriptor limit, so the probes always keep descriptors). When a new one would be one too
  many, the connection waiting longest for its request is closed to make room, if it has
  waited long enough to have sent one (`SILENT_EVICT_AFTER` when it has sent nothing at all,
  `EVICT_AFTER` when it has sent part of one or is mid-TLS-handshake): a flood of idle
  connections cannot lock a scraper out. When there is none, the new one is answered 503
  and closed at once (a burst cannot push out connections that had no time to speak yet);
- a connection has `request_timeout` seconds to deliver a complete request head (TLS
  handshake included), counted from when it opened or from the end of its previous response;
  otherwise it is closed. A request being answered is never cut short: a long scrape of a
  big /metrics takes as long as it takes (once the response is handed to the transport, a
  client that reads none of what is left for `request_timeout` is dropped);
- accepting that fails for lack of descriptors or memory pauses for a second and says so in
  one line (asyncio's own accept loop logs the error in a tight loop instead).

The connections themselves are aiohttp's: each accepted socket is handed to the runner's
protocol, wrapped in a thin protocol that keeps the count and the timer.

aiohttp logs a malformed request (a header line too long, a bad character) with a traceback
whose message quotes the request's bytes, credentials included; `BadRequestLog` turns that
into one line naming only the error's type.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..logs import event

# Descriptor trouble: accept again after a pause rather than at once, which would only fail
# again (and log again) in a tight loop.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_PAUSE = 1.0
# Accepted per readiness event, so a flood cannot hold the loop away from the probes.
ACCEPT_BATCH = 64
# Deep enough that a burst of connections is queued by the kernel (which costs no
# descriptor) rather than dropped, which would delay a scraper's connect by a SYN retransmit.
BACKLOG = 1024
# Of the descriptor limit, the share the web port may hold.
DESCRIPTOR_SHARE = 4
# How long a connection waiting for its request is safe from being closed to make room. A
# client sends its request (or TLS hello) as soon as it is connected, so a plain connection
# that has not sent a byte in a quarter of a second is idle; one that has sent part of a
# request, or is in its TLS handshake, gets a second (a few round trips).
SILENT_EVICT_AFTER = 0.25
EVICT_AFTER = 1.0

BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connection_cap(configured: int) -> int:
    """`configured`, or a quarter of the descriptor limit when that is less."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft // DESCRIPTOR_SHARE))


class _Connection(asyncio.Protocol):
    """One accepted connection: forwards everything to aiohttp's protocol, and closes the
    connection when its request does not arrive in time."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self._listener = listener
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.attach: asyncio.Task[None] | None = None
        self.busy = 0  # requests being answered
        self._unsent = -1  # bytes waiting to be sent when the timer last fired
        self._released = False
        self._timer: asyncio.TimerHandle | None = None
        self.waiting_since = asyncio.get_running_loop().time()
        self.heard = False  # a byte arrived since it started waiting
        self._arm()

    # -- the timer -----------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            self._listener.request_timeout, self._expired
        )

    def _expired(self) -> None:
        self._timer = None
        if self.busy or self._released or self.transport is None:
            # Busy: the timer starts again when the response ends. No transport yet: the TLS
            # handshake is still going, and its own timeout (the same) ends it.
            return
        unsent = self.transport.get_write_buffer_size()
        if unsent and unsent != self._unsent:
            # The end of a response is still being sent and the client reads it: wait.
            self._unsent = unsent
            self._arm()
            return
        # Nothing sent in time, half a request, or a response the client stopped reading.
        # abort, not close: a TLS close would wait up to 30 s for the peer's close_notify.
        self.transport.abort()

    def request_started(self) -> None:
        self.busy += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_ended(self) -> None:
        self.busy -= 1
        if not self.busy and not self._released:
            self._unsent = -1
            self.waiting_since = asyncio.get_running_loop().time()
            self.heard = False
            self._listener.waiting_again(self)
            self._arm()

    @property
    def waiting(self) -> bool:
        """Waiting for a request: neither answering one nor still sending a response."""
        if self.busy:
            return False
        return self.transport is None or not self.transport.get_write_buffer_size()

    def evictable(self, now: float) -> bool:
        silent = self.transport is not None and not self.heard
        return now - self.waiting_since >= (SILENT_EVICT_AFTER if silent else EVICT_AFTER)

    def close(self) -> None:
        """Close at once, wherever the connection is (also mid-handshake)."""
        if self.transport is not None:
            self.transport.abort()
        elif self.attach is not None:
            self.attach.cancel()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._listener.released(self)

    # -- asyncio.Protocol, forwarded -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._listener.attached(self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        self._inner.connection_lost(exc)


class Listener:
    """Accepts on the bound sockets and keeps every connection within the bounds."""

    def __init__(
        self,
        protocol: Callable[[], asyncio.Protocol],
        *,
        max_connections: int,
        request_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._protocol = protocol
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._tls = tls
        self._sockets: list[socket.socket] = []
        self._paused: list[asyncio.TimerHandle] = []
        # In the order they started waiting for a request (at accept, at a response's end).
        self._open: OrderedDict[_Connection, None] = OrderedDict()
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def bind(self, host: str, port: int) -> None:
        """Listen on every address `host` names (as `loop.create_server` does)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(BACKLOG)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self._sockets]

    async def close(self) -> None:
        """Stop accepting; connections still mid-handshake are dropped (the runner's
        cleanup closes the others)."""
        for handle in self._paused:
            handle.cancel()
        self._close_sockets()
        attaching = [c.attach for c in self._open if c.transport is None and c.attach]
        for task in attaching:
            task.cancel()
        await asyncio.gather(*attaching, return_exceptions=True)

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._sockets.clear()

    # -- accepting -----------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._pause(sock, exc)
                return
            conn.setblocking(False)
            if len(self._open) >= self.max_connections and not self._make_room():
                self._refuse(conn)
                continue
            self._serve(conn)

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())
        event(
            logging.WARNING if exc.errno in RESOURCE_ERRNOS else logging.ERROR,
            "web port: cannot accept connections; trying again in a second",
            error=exc.strerror or str(exc),
        )

        def resume() -> None:
            self._paused.remove(handle)
            if sock.fileno() >= 0:
                loop.add_reader(sock.fileno(), self._accept, sock)

        handle = loop.call_later(ACCEPT_PAUSE, resume)
        self._paused.append(handle)

    def _make_room(self) -> bool:
        """Close the connection waiting longest for its request among those that have
        waited long enough, if there is one."""
        now = asyncio.get_running_loop().time()
        oldest = None
        # In the order they started waiting: past the first one too young to go even if
        # silent, every later one is younger still.
        for connection in self._open:
            if now - connection.waiting_since < SILENT_EVICT_AFTER:
                break
            if connection.waiting and connection.evictable(now):
                oldest = connection
                break
        if oldest is None:
            return False
        # Counted out now: its descriptor is closed by the time the loop comes round again.
        oldest.close()
        oldest.release()
        event(
            logging.WARNING,
            "web port: web.max_connections are open; closed the one waiting longest",
            max_connections=self.max_connections,
        )
        return True

    def _refuse(self, conn: socket.socket) -> None:
        if self._tls is None:
            with contextlib.suppress(OSError):
                conn.send(BUSY_RESPONSE)
        conn.close()
        event(
            logging.WARNING,
            "web port: web.max_connections are open and none can go; refused a connection",
            max_connections=self.max_connections,
        )

    def _serve(self, conn: socket.socket) -> None:
        connection = _Connection(self, self._protocol())
        self._open[connection] = None
        connection.attach = asyncio.get_running_loop().create_task(self._attach(connection, conn))

    async def _attach(self, connection: _Connection, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: connection,
                conn,
                ssl=self._tls,
                ssl_handshake_timeout=self.request_timeout if self._tls else None,
            )
        except OSError:
            # A failed TLS handshake (ssl.SSLError is an OSError) or one too slow: the loop
            # has closed the transport.
            conn.close()
            connection.release()
        except BaseException:  # cancelled (listener closed, room made) or a bug: counted out
            conn.close()
            connection.release()
            raise
        finally:
            connection.attach = None

    # -- bookkeeping, from the connections -----------------------------------------------

    def attached(self, connection: _Connection) -> None:
        assert connection.transport is not None
        self._by_transport[connection.transport] = connection

    def waiting_again(self, connection: _Connection) -> None:
        self._open.move_to_end(connection)

    def released(self, connection: _Connection) -> None:
        self._open.pop(connection, None)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy from a complete request head to the response's last
        byte handed to the transport (the response is finished here for that)."""
        connection = self._by_transport.get(request.transport)  # type: ignore[arg-type]
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            response = await handler(request)
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                pass  # the client left; aiohttp finds out again when it finishes, quietly
            return response
        finally:
            connection.request_ended()


class BadRequestLog(logging.Filter):
    """On aiohttp's server logger: a request aiohttp could not parse is logged as one
    warning with the peer and the error's type, never the error's text (which quotes the
    offending bytes: a header's value, a password) nor a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            # The peer goes into the message's arguments, not the fields: the repeat limiter
            # keys on the fields, and a flood from many addresses is still one kind of line.
            record.msg = "web port: rejected a malformed request from %s"
            record.args = (str(peer),)
            record.exc_info = None
            record.exc_text = None
            record.fields = {"error": type(exc).__name__, "status": exc.code}
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_bad_requests() -> None:
    """Install `BadRequestLog` on the loggers aiohttp's server writes to (once)."""
    for name in ("aiohttp.server", "aiohttp.web"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, BadRequestLog) for f in logger.filters):
            logger.addFilter(BadRequestLog())


class WebServer:
    """An aiohttp application served through a `Listener`: `start()`, then `stop()`."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        max_connections: int,
        request_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.listener = Listener(
            self._protocol,
            max_connections=connection_cap(max_connections),
            request_timeout=request_timeout,
            tls=tls,
        )
        # First, so that time spent in the other middlewares (basic auth) counts as busy.
        app.middlewares.insert(0, self.listener.middleware)
        quiet_bad_requests()

    def _protocol(self) -> asyncio.Protocol:
        server = self._runner.server
        assert server is not None, "start() first"
        return server()

    async def start(self) -> None:
        await self._runner.setup()
        try:
            await self.listener.bind(self._host, self._port)
        except OSError:
            await self._runner.cleanup()
            raise

    async def stop(self) -> None:
        await self.listener.close()
        await self._runner.cleanup()
