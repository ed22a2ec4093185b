"""The status page's routes: HTML views, the JSON API behind them, the report and the
evidence pack downloads. The daemon mounts them on its one web app, behind the same guard
(TLS, basic auth) as /metrics.

Nothing here may delay an attempt: the view is copied on the event loop (a few hundred bytes
a target), and everything else — ledger reads, figures, templates — runs on a small pool of
its own (two threads, so a flood of page requests cannot take the loop's default pool, which
the ledger writer uses). Built pages are kept until the view changes (a minute closes)."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
import sqlite3
import tempfile
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from ..config.models import ConfigFile, TargetBase
from ..errors import LedgerError, UserError
from ..ledger.minute_csv import parse_instant
from ..ledger.opening import ledger_location, ledger_password
from ..ledger.view import LedgerView
from ..logs import event
from ..reports.evidence import write_evidence
from ..reports.report import Report, build_report, render_html, render_json
from ..reports.signing import signing_key
from ..reports.stored_checkpoints import stored_checkpoints
from ..sla import ServiceMonth
from . import charts, model
from .reads import StatusLedger

T = TypeVar("T")
WARM_REST = 3.0  # seconds of rest per second of warm-up build
MONTH = re.compile(r"(\d{4})-(\d{2})")
# The page's own files and scripts only; the SVG is inline markup, not script.
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The report's HTML page is self-contained (its style inline) and has no script.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
STATIC = {
    "status.css": "text/css",
    "status.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}

STATE_TEXT = {
    "available": "Available",
    "apparent_failure": "Failing",
    "maintenance": "Maintenance",
    "no_data": "No data",
}


def _pct(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def _when(text: str | None, timezone: str = "UTC") -> str:
    """An ISO instant as local 'YYYY-MM-DD HH:MM' in `timezone`."""
    if not text:
        return "—"
    from zoneinfo import ZoneInfo

    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return instant.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def _clock(text: str | None, timezone: str = "UTC") -> str:
    """An ISO instant as 'HH:MM ZONE' in `timezone` (e.g. 19:55 CST)."""
    if not text:
        return "—"
    from zoneinfo import ZoneInfo

    instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return instant.astimezone(ZoneInfo(timezone)).strftime("%H:%M %Z")


def _credit(percent: float) -> str:
    return "no credit" if not percent else f"{percent:g}% credit"


def make_environment() -> Environment:
    env = Environment(
        loader=PackageLoader("prober.status", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pct=_pct, when=_when, clock=_clock, credit=_credit, state_text=STATE_TEXT.get
    )
    env.globals.update(icon=charts.state_icon)
    return env


class StatusPage:
    def __init__(
        self,
        view: LedgerView,
        config_of: Callable[[], ConfigFile],
        *,
        network_up: Callable[[], int | None],
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.view = view
        self.config_of = config_of
        self.network_up = network_up
        self.version = version
        self.clock = clock
        self.env = make_environment()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="status-page")
        self._ledger: StatusLedger | None = None
        self._cache = model.HistoryCache()
        self._built: dict[tuple[Any, ...], tuple[int, bytes]] = {}
        self._evidence_slot = asyncio.Semaphore(1)
        self._static = {
            name: (resources.files(__package__) / "static" / name).read_bytes() for name in STATIC
        }

    # -- wiring ---------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.overview_page),
            web.get("/targets/{name}", self.target_page),
            web.get("/targets/{name}/minutes/{minute}", self.minute_page),
            web.get("/targets/{name}/report/{month}.html", self.report_html),
            web.get("/targets/{name}/report/{month}.json", self.report_json),
            web.get("/targets/{name}/evidence/{month}.zip", self.evidence_zip),
            web.get("/api/v1/targets", self.api_targets),
            web.get("/api/v1/targets/{name}", self.api_target),
            web.get("/api/v1/targets/{name}/minutes", self.api_minutes),
            web.get("/api/v1/targets/{name}/minutes/{minute}", self.api_minute),
            web.get("/api/v1/targets/{name}/report", self.api_report),
            web.get("/static/{file}", self.static),
        ]

    async def warm(self) -> None:
        """Read, once and in the page's own threads, what does not change any more (ended
        months, whole hours of latency) for every target, so the first view of a target
        page costs what later ones do. Started with the daemon; the ledger's trouble only
        leaves the cache cold."""
        targets = list(self.config_of().config.targets)
        began = time.monotonic()
        for target in targets:
            last, public = self._last_closed(target.name), self.public
            started = time.monotonic()
            try:
                await self._in_pool(self._target_data, target, last, public)
            except (LedgerError, sqlite3.Error) as exc:
                error = f"the ledger cannot be read: {exc}"
                event(logging.WARNING, "status page warm-up stopped", error=error)
                return
            # A build holds the GIL; resting three times as long between builds keeps the
            # warm-up to a quarter of a core, so the attempt clock is not kept waiting.
            await asyncio.sleep(min(1.0, WARM_REST * (time.monotonic() - started)))
        # (Also when a benchmark's measured minutes may begin: bench/daemon_bench.py, settle.)
        event(
            logging.INFO,
            "status page caches warm",
            targets=len(targets),
            seconds=round(time.monotonic() - began, 1),
        )

    async def close(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            await self._run(ledger.close)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """_in_pool for a request: the ledger's trouble as the response."""
        try:
            return await self._in_pool(fn, *args)
        except (LedgerError, sqlite3.Error) as exc:
            # The ledger's own trouble (a disk error, a file being replaced): the page says
            # so in one line; the probes go on regardless.
            raise _error(web.HTTPServiceUnavailable, f"the ledger cannot be read: {exc}") from None

    def _ledger_ready(self) -> StatusLedger:
        """In a worker: the page's read-only connection, opened on first use."""
        if self._ledger is None:
            config = self.config_of()
            self._ledger = StatusLedger(ledger_location(config), ledger_password(config))
        return self._ledger

    # -- what every view needs ------------------------------------------------------------

    @property
    def public(self) -> bool:
        return self.config_of().config.status_page.public

    def _target(self, request: web.Request) -> TargetBase:
        name = request.match_info["name"]
        for target in self.config_of().config.targets:
            if target.name == name:
                return target
        raise _not_found(f"no target named {name!r}")

    def _last_closed(self, name: str) -> int | None:
        tv = self.view.targets.get(name)
        return tv.last_closed if tv is not None else None

    def _as_of(self, name: str) -> datetime:
        last = self._last_closed(name)
        if last is None:
            return datetime.fromtimestamp(self.clock(), UTC)
        return datetime.fromtimestamp((last + 1) * 60, UTC)

    def _page(self, template: str, page: str, **context: Any) -> bytes:
        settings = self.config_of().config.status_page
        return (
            self.env.get_template(template)
            .render(
                page=page,
                version=self.version,
                refresh=int(settings.refresh),
                public=settings.public,
                **context,
            )
            .encode()
        )

    async def _cached(self, key: tuple[Any, ...], build: Callable[[], bytes]) -> bytes:
        """A built page, kept until the view changes or the config is reloaded."""
        stamp = self.view.generation
        key = (*key, id(self.config_of()))
        found = self._built.get(key)
        if found is not None and found[0] == stamp:
            return found[1]
        body = await self._run(build)
        if len(self._built) > 256:
            self._built.clear()
        self._built[key] = (stamp, body)
        return body

    # -- the overview ---------------------------------------------------------------------

    def _overview_data(self) -> tuple[dict[str, Any], list[model.TargetSnapshot]]:
        snaps = model.snapshot(self.view, self.config_of().config.targets, self.clock())
        return {"network_up": self.network_up(), "now": self.clock()}, snaps

    async def api_targets(self, _request: web.Request) -> web.Response:
        extra, snaps = self._overview_data()
        data = await self._run(functools.partial(model.overview, snaps, **extra))
        return _json(data)

    async def overview_page(self, request: web.Request) -> web.Response:
        if request.path != "/":
            raise _not_found("no such page")
        extra, snaps = self._overview_data()

        def build() -> bytes:
            data = model.overview(snaps, **extra)
            strips = {}
            for snap, item in zip(snaps, data["targets"], strict=True):
                since = model.minute_of(item["recent"]["since"])
                strips[item["name"]] = charts.strip(
                    item["recent"]["states"],
                    since if since is not None else 0,
                    snap.config.sla.zone,
                    f"{item['name']}: the last {model.STRIP_MINUTES} minutes",
                )
            zones = {s.config.name: s.config.sla.timezone for s in snaps}
            return self._page("overview.html", "overview", data=data, strips=strips, zones=zones)

        return _html(await self._cached(("overview",), build))

    # -- one target -----------------------------------------------------------------------

    def _target_data(
        self, target: TargetBase, last_closed: int | None, public: bool
    ) -> dict[str, Any]:
        """In a worker; `last_closed` was read from the view on the loop."""
        builder = model.TargetPage(self._ledger_ready(), self._cache)
        return builder.build(target, last_closed, public=public, now=self.clock())

    async def api_target(self, request: web.Request) -> web.Response:
        target = self._target(request)
        last = self._last_closed(target.name)
        return _json(await self._run(self._target_data, target, last, self.public))

    async def target_page(self, request: web.Request) -> web.Response:
        target = self._target(request)
        last, public = self._last_closed(target.name), self.public

        def build() -> bytes:
            data = self._target_data(target, last, public)
            tz = target.sla.zone
            day = data["last_24h"]
            since = model.minute_of(day["since"]) or 0
            figures = {
                "grid": charts.day_grid(
                    day["states"], since, tz, f"{target.name}: the last 24 hours, minute by minute"
                ),
                "probes": {
                    p: charts.strip(s, since, tz, f"{p}: the last 24 hours")
                    for p, s in day["probes"].items()
                },
                "latency": {
                    p: charts.latency_chart(
                        s, tz, f"{p}: attempt latency p50 and p95 per hour, 7 days"
                    )
                    for p, s in data["latency"].items()
                },
                "bars": charts.month_bars(
                    data["days"], f"{target.name}: the service month day by day"
                ),
                "hours": model.hour_table(day["states"], since, tz),
            }
            return self._page("target.html", "target", data=data, charts=figures)

        return _html(await self._cached(("target", target.name), build))

    # -- one minute (never in public mode: attempts carry the targets' own texts) ---------

    def _minute(self, request: web.Request) -> tuple[TargetBase, int]:
        if self.public:
            raise _not_found("attempt details are not shown on a public status page")
        target = self._target(request)
        text = request.match_info["minute"]
        try:
            instant = parse_instant(text)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        return target, int(instant.timestamp()) // 60

    async def api_minute(self, request: web.Request) -> web.Response:
        target, minute = self._minute(request)
        return _json(await self._run(model.minute_detail, self._ledger_ready(), target, minute))

    async def minute_page(self, request: web.Request) -> web.Response:
        target, minute = self._minute(request)

        def build() -> bytes:
            data = model.minute_detail(self._ledger_ready(), target, minute)
            return self._page("minute.html", "minute", data=data, timezone=target.sla.timezone)

        return _html(await self._run(build))

    # -- the minutes API ------------------------------------------------------------------

    async def api_minutes(self, request: web.Request) -> web.Response:
        target = self._target(request)
        end = int(self._as_of(target.name).timestamp()) // 60
        try:
            until = _minute_param(request, "until", end)
            since = _minute_param(request, "since", until - 60)
        except ValueError as exc:
            raise _bad_request(str(exc)) from None
        if until <= since:
            raise _bad_request("until must be later than since")
        if until - since > model.MAX_SPAN_MINUTES:
            raise _bad_request(
                f"at most {model.MAX_SPAN_MINUTES} minutes (7 days) per request; "
                "page through longer spans"
            )
        data = await self._run(model.minutes_range, self._ledger_ready(), target, since, until)
        return _json(data)

    # -- reports and evidence -------------------------------------------------------------

    def _month(self, target: TargetBase, text: str | None) -> ServiceMonth:
        calendar = target.sla.calendar()
        if text is None:
            found = calendar.month_containing(self._as_of(target.name))
            if found is None:
                raise _not_found(f"the first service month starts on {calendar.first_day}")
            return found
        match = MONTH.fullmatch(text)
        if not match or not 1 <= int(match.group(2)) <= 12:
            raise _bad_request(f"month {text[:20]!r}: expected YYYY-MM, e.g. 2026-04")
        try:
            return calendar.month_starting_in(int(match.group(1)), int(match.group(2)))
        except ValueError as exc:
            raise _not_found(f"month {text}: {exc}") from None

    def _report(self, target: TargetBase, month: ServiceMonth, as_of: datetime) -> Report:
        return build_report(self._ledger_ready(), target, month, as_of)

    async def api_report(self, request: web.Request) -> web.Response:
        target = self._target(request)
        month = self._month(target, request.query.get("month"))
        report = await self._run(self._report, target, month, self._as_of(target.name))
        return web.Response(
            text=render_json(report),
            content_type="application/json",
            headers={**_HEADERS, "X-As-Of": report.as_of.isoformat()},
        )

    async def report_json(self, request: web.Request) -> web.Response:
        target = self._target(request)
        month = self._month(target, request.match_info["month"])
        report = await self._run(self._report, target, month, self._as_of(target.name))
        return web.Response(
            text=render_json(report), content_type="application/json", headers=_HEADERS
        )

    async def report_html(self, request: web.Request) -> web.Response:
        target = self._target(request)
        month = self._month(target, request.match_info["month"])
        report = await self._run(self._report, target, month, self._as_of(target.name))
        return web.Response(
            text=render_html(report),
            content_type="text/html",
            headers={**_HEADERS, "Content-Security-Policy": REPORT_CSP},
        )

    async def evidence_zip(self, request: web.Request) -> web.Response:
        if self.public:
            raise _not_found("evidence is not offered on a public status page")
        target = self._target(request)
        month = self._month(target, request.match_info["month"])
        config = self.config_of()
        async with self._evidence_slot:  # one pack at a time: each reads a month of attempts
            try:
                body = await self._run(self._pack, target, month, self._as_of(target.name), config)
            except UserError as exc:  # the signing key went missing since the start
                raise _error(web.HTTPServiceUnavailable, str(exc)) from None
        name = f"evidence-{target.name}-{month.start:%Y-%m}"
        return web.Response(
            body=body,
            content_type="application/zip",
            headers={**_HEADERS, "Content-Disposition": f'attachment; filename="{name}.zip"'},
        )

    def _pack(
        self, target: TargetBase, month: ServiceMonth, as_of: datetime, config: ConfigFile
    ) -> bytes:
        """The pack `im-prober evidence` writes, in a folder inside a zip: signed with the
        configured key, carrying the stored checkpoint that covers the month."""
        report = self._report(target, month, as_of)
        folder_name = f"evidence-{target.name}-{month.start:%Y-%m}"
        with tempfile.TemporaryDirectory(prefix="im-prober-evidence-") as tmp:
            folder = Path(tmp) / folder_name
            write_evidence(
                self._ledger_ready(),
                report,
                folder,
                config_digest=config.digest,
                key=signing_key(config),
                checkpoints=stored_checkpoints(config),
            )
            out = io.BytesIO()
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as pack:
                for path in sorted(folder.iterdir()):
                    pack.write(path, f"{folder_name}/{path.name}")
        return out.getvalue()

    # -- files ----------------------------------------------------------------------------

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        if name not in STATIC:
            raise _not_found("no such file")
        return web.Response(
            body=self._static[name],
            content_type=STATIC[name],
            headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
        )


_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _html(body: bytes, status: int = 200) -> web.Response:
    return web.Response(
        body=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**_HEADERS, "Content-Security-Policy": CSP},
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=_HEADERS,
    )


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(
        text=json.dumps({"error": message}) + "\n",
        content_type="application/json",
        headers=_HEADERS,
    )


def _not_found(message: str) -> web.HTTPException:
    return _error(web.HTTPNotFound, message)


def _bad_request(message: str) -> web.HTTPException:
    return _error(web.HTTPBadRequest, message)


def _minute_param(request: web.Request, key: str, default: int) -> int:
    text = request.query.get(key)
    if text is None:
        return default
    if len(text) > 40:
        raise ValueError(f"{key}: too long")
    return int(parse_instant(text).timestamp()) // 60
