"""A fast local HTTP target for the benchmarks: answers every request with a small JSON body.

python bench/fast_server.py PORT
"""

from __future__ import annotations

import sys

from aiohttp import web

BODY = b'{"ok": true, "id": 1}'


async def handle(_request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
