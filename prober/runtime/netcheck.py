"""The network check (SLA 4.11): reference endpoints outside the provider. Any HTTP answer,
whatever its status, shows the prober's network works; only when every reference fails to
answer is the network considered down.

A reference the prober could not even try, because its own host was out of descriptors,
memory or ports, says nothing about the network. A round in which no reference could be tried
is therefore not counted as "network down" on its own account: it repeats the last round that
did observe the network (up when there was none yet). Calling every such round down would
turn the minute's genuine provider failures (attempts that did get a socket) into
`prober_fault` and hide real downtime; the attempts that hit the same limit need no help, as
they record themselves as `prober_fault`/`local_resources` and never count against the
provider. Repeating the last observation also leaves `im_prober_network_up` where it was.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..adapters.base import local_resource_error
from ..adapters.transport import LazySession
from ..config.models import NetworkCheckConfig
from ..logs import event
from ..sla import minute_iso
from ..stats import RuntimeStats
from .book import MinuteBook
from .plan import probe_plan

NETWORK = "__network__"  # the plan's name: rounds are spread like a target's attempts


class NetworkCheck:
    def __init__(self, config: NetworkCheckConfig) -> None:
        self.config = config
        self.plan = probe_plan(NETWORK, "check", config.attempts_per_minute, config.timeout)
        self._http = LazySession(max_connections=len(config.urls) + 1)
        self._last_down = False  # the last round that observed the network

    async def _reachable(self, url: str) -> bool | None:
        """True when it answered, False when it did not, None when it could not be tried."""
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await self._http.session.get(url, headers={"User-Agent": "im-prober"})
                response.release()
                return True
        except Exception as exc:
            if local_resource_error(exc):
                return None
            if isinstance(exc, aiohttp.ClientError | OSError | TimeoutError):
                return False
            raise

    async def network_down(self) -> bool | None:
        """One round: True when every reference that could be tried failed to answer, False
        when one answered, None when the prober's own resources let it try none."""
        results = await asyncio.gather(*(self._reachable(u) for u in self.config.urls))
        if any(results):
            return False
        if all(r is None for r in results):
            return None
        return True

    async def all_failed(self) -> bool:
        """One round as the minute book counts it: an untried round repeats the last one
        that observed the network."""
        down = await self.network_down()
        if down is not None:
            self._last_down = down
        return self._last_down

    async def round_into(self, minute: int, book: MinuteBook, stats: RuntimeStats) -> bool:
        """One round of `minute`, recorded in the book (for the verdict) and the stats;
        returns whether every reference failed."""
        all_failed = await self.all_failed()
        book.network_round(minute, all_failed)
        was = stats.network_up
        stats.network_up = 0 if all_failed else 1
        if was is not None and was != stats.network_up:
            event(
                logging.WARNING if all_failed else logging.INFO,
                "network check: every reference failed"
                if all_failed
                else "network check: references reachable again",
                minute=minute_iso(minute),
            )
        return all_failed

    async def aclose(self) -> None:
        await self._http.aclose()
