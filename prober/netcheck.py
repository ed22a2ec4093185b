"""The network check (SLA 4.11): reference endpoints outside the provider. Any HTTP answer,
whatever its status, shows the prober's network works; only when every reference fails to
answer is the network considered down."""

from __future__ import annotations

import asyncio

import aiohttp

from .adapters.transport import LazySession
from .config import NetworkCheckConfig


class NetworkCheck:
    def __init__(self, config: NetworkCheckConfig) -> None:
        self.config = config
        self._http = LazySession(max_connections=len(config.urls) + 1)

    async def _reachable(self, url: str) -> bool:
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await self._http.session.get(url, headers={"User-Agent": "im-prober"})
                response.release()
                return True
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def all_failed(self) -> bool:
        results = await asyncio.gather(*(self._reachable(u) for u in self.config.urls))
        return not any(results)

    async def aclose(self) -> None:
        await self._http.aclose()
