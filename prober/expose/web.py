"""HTTP endpoints: /metrics, /healthz, /readyz and (when enabled) POST /-/reload, behind the
web config's basic auth when it has users."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from .metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from .webconfig import WebSecurity

Reload = Callable[[], Awaitable[tuple[bool, str]]]
# openmetrics? → the exposition, whole or in pieces, now or awaited (the daemon's renders
# slice by slice, holding the event loop at most a couple of ms at a time)
Rendered = bytes | list[bytes]
Render = Callable[[bool], Rendered | Awaitable[Rendered]]
# Bytes a scrape's body may queue in the transport before the writer waits for the socket:
# with asyncio's 64 KiB, a 33 MB body at 10,000 targets waits ~500 times for the busy loop.
WRITE_BUFFER = 1 << 20
Readiness = Callable[[], tuple[bool, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wants_openmetrics(accept: str) -> bool:
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip()
        if media == "application/openmetrics-text":
            return True
    return False


def make_app(
    render: Render,
    readiness: Readiness,
    reload: Reload | None,
    security_of: Callable[[], WebSecurity] | None = None,
    pages: Sequence[web.RouteDef] = (),
) -> web.Application:
    """The endpoints, given what they show: the daemon passes the exposition's renderer and
    the runtime's readiness, so this module knows neither. `pages` (the status page's
    routes) sit behind the same guard; they replace the plain index at /."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        security = security_of() if security_of is not None else None
        if security is None or security.is_open(request.path):
            return await handler(request)
        if await security.authorized(request.headers.get("Authorization")):
            return await handler(request)
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="im-prober", charset="UTF-8"'},
        )

    async def metrics(request: web.Request) -> web.StreamResponse:
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        rendered = render(openmetrics)
        if inspect.isawaitable(rendered):
            rendered = await rendered
        pieces = [rendered] if isinstance(rendered, bytes) else rendered
        # Written piece by piece (no joined copy of a body of tens of MB), with its length.
        response = web.StreamResponse()
        response.headers["Content-Type"] = (
            OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        )
        response.content_length = sum(len(piece) for piece in pieces)
        if request.transport is not None:
            request.transport.set_write_buffer_limits(high=WRITE_BUFFER)
        await response.prepare(request)
        if request.method != "HEAD":
            for piece in pieces:
                await response.write(piece)
        await response.write_eof()
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ready, why = readiness()
        return web.Response(text=why + "\n", status=200 if ready else 503)

    async def do_reload(_request: web.Request) -> web.Response:
        assert reload is not None
        ok, message = await reload()
        return web.Response(text=message + "\n", status=200 if ok else 500)

    async def index(_request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body><h1>im-prober</h1><p><a href='/metrics'>metrics</a> · "
            "<a href='/healthz'>healthz</a> · <a href='/readyz'>readyz</a></p></body></html>",
            content_type="text/html",
        )

    app = web.Application(middlewares=[guard])
    if not any(page.path == "/" for page in pages):
        app.router.add_get("/", index)
    app.router.add_routes(pages)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if reload is not None:
        app.router.add_post("/-/reload", do_reload)
    return app
