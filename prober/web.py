"""HTTP endpoints: /metrics, /healthz, /readyz and (when enabled) POST /-/reload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .metrics import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from .scheduler import Prober

Reload = Callable[[], Awaitable[tuple[bool, str]]]


def wants_openmetrics(accept: str) -> bool:
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip()
        if media == "application/openmetrics-text":
            return True
    return False


def make_app(prober_of: Callable[[], Prober], reload: Reload | None) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        prober = prober_of()
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        body = prober.exposition.render(prober.clock.wall(), openmetrics=openmetrics)
        response = web.Response(body=body)
        response.headers["Content-Type"] = (
            OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        )
        return response

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        ready, why = prober_of().readiness()
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

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if reload is not None:
        app.router.add_post("/-/reload", do_reload)
    return app
