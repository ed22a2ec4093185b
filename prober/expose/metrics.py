"""Prometheus exposition, rendered from the in-memory ledger view, in the text format or
OpenMetrics.

Rendering is hand-written rather than prometheus_client's generic path because a prober
with 10,000 targets exposes ~400,000 lines. Three things keep a scrape from holding up the
attempts on the same event loop:
- the ledger-derived families change only when minutes close, so they are rendered once per
  change of the view (at once when the runtime says a close is in the view, `show`, else by
  `keep_ready` once the view has stopped changing) and served from that rendering until the
  next one is complete;
- each probe's live lines (duration histogram, failure streak, last success) change only
  when one of its attempts ends, so only the probes in `RuntimeStats.moved` are rendered
  again (by `keep_ready` every REFRESH_EVERY while something scrapes, else by the scrape)
  and a scrape joins them;
- what is rendered goes in slices of targets with yields to the event loop between them:
  after every slice for the ledger families (rendered when nobody waits), and for a
  scrape's own part once a slice ends HOLD (2 ms) after the loop last ran, counted over the
  whole scrape (`render_pieces`, the web path); so an attempt due meanwhile starts nearly
  on time. `render` does the same work at once (tests, tools).
Each family's lines come from one %-format template per line shape, filled in C, not an
f-string per line: a duration histogram's 15 lines cost ~5 µs instead of ~40.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition

from .. import sla
from ..config.models import TargetBase
from ..ledger.store import TARGET_LEVEL
from ..ledger.view import WINDOWS, LedgerView
from ..logs import event
from ..sla import Outcome, State
from ..stats import DURATION_BUCKETS, Histogram, RuntimeStats

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

SLICE = 100  # targets rendered between two chances to yield to the event loop
HOLD = 0.002  # seconds a render may hold the event loop before it lets the loop run
REFRESH_EVERY = 0.25  # seconds between keep_ready's looks at the view
SCRAPED_WITHIN = 120.0  # seconds: keep_ready renders live lines ahead while scrapes come

# Columns of a probe's live slot, rendered together when its attempts move them.
DURATIONS, FAILURES, LAST_SUCCESS = 0, 1, 2
log = logging.getLogger(__name__)

# A family's header as (name, kind, help): written out per format when served.
Header = tuple[str, str, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int | Fraction) -> str:
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def header(name: str, kind: str, help_: str, openmetrics: bool) -> str:
    base = name[: -len("_total")] if openmetrics and kind == "counter" else name
    return f"# HELP {base} {help_}\n# TYPE {base} {kind}\n"


def _template(line: str, values: Iterable[str]) -> str:
    """One line per value, `line` holding `{value}` where the value's text goes and `%s`
    where the caller's arguments go (the labels, then the sample)."""
    return "".join(line.replace("{value}", value) for value in values)


def _histogram_template(name: str, buckets: Sequence[float], labelled: bool) -> str:
    """A histogram's lines with `%s` for the labels (when `labelled`) and the figures, in
    the order of `_histogram_args`."""
    les = [*(repr(b) for b in buckets), "+Inf"]
    if labelled:
        lines = [f'{name}_bucket{{%s,le="{le}"}} %s\n' for le in les]
        lines += [f"{name}_sum{{%s}} %s\n", f"{name}_count{{%s}} %s\n"]
    else:
        lines = [f'{name}_bucket{{le="{le}"}} %s\n' for le in les]
        lines += [f"{name}_sum %s\n", f"{name}_count %s\n"]
    return "".join(lines)


def _histogram_args(histogram: Histogram, labels: str | None) -> tuple[object, ...]:
    cumulative = list(accumulate(histogram.counts))
    total = histogram.sum
    figures = [*cumulative, repr(total) if math.isfinite(total) else _number(total), cumulative[-1]]
    if labels is None:
        return tuple(figures)
    args: list[object] = [labels, 0] * len(figures)
    args[1::2] = figures
    return tuple(args)


_ATTEMPTS = _template('im_probe_attempts_total{%s,outcome="{value}"} %s\n', Outcome)
_VERDICTS = _template('im_minute_verdicts_total{%s,state="{value}"} %s\n', State)
_PROBE_VERDICTS = _template('im_probe_minute_verdicts_total{%s,state="{value}"} %s\n', State)
_VANTAGE_VERDICTS = _template('im_vantage_minute_verdicts_total{%s,state="{value}"} %s\n', State)
_HISTOGRAM_TEMPLATES: dict[tuple[str, tuple[float, ...], bool], str] = {}


def _histogram_text(name: str, histogram: Histogram, labels: str | None) -> str:
    key = (name, histogram.buckets, labels is not None)
    template = _HISTOGRAM_TEMPLATES.get(key)
    if template is None:
        template = _HISTOGRAM_TEMPLATES[key] = _histogram_template(*key)
    return template % _histogram_args(histogram, labels)


_OUTCOMES = tuple(Outcome)
_STATES = tuple(State)
_STATE_VALUES = tuple(s.value for s in State)
_WINDOW_NAMES = tuple(WINDOWS)


def _interleave(label: str, values: list[object]) -> tuple[object, ...]:
    args: list[object] = [label, 0] * len(values)
    args[1::2] = values
    return tuple(args)


def _run(slices: Iterator[None]) -> None:
    """Render every slice at once."""
    for _ in slices:
        pass


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _run_yielding(slices: Iterator[None], *, every_slice: bool = False) -> None:
    """Render slice by slice, letting the event loop run what is due once HOLD seconds have
    passed since this last let it run: a slice is often a fraction of a millisecond, and on
    a busy loop each turn given away costs the render a whole round of the loop's other
    callbacks. `every_slice`: after each slice (a render nobody waits for)."""
    hold = 0.0 if every_slice else HOLD
    resumed = time.perf_counter()
    for _ in slices:
        if time.perf_counter() - resumed >= hold:
            await asyncio.sleep(0)
            resumed = time.perf_counter()


class _Lines:
    """A family's samples, turned into bytes a slice at a time: joining a whole family's
    lines in one step held the loop for tens of ms at 10,000 targets."""

    __slots__ = ("chunks", "lines")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.lines: list[str] = []

    def cut(self) -> None:
        if self.lines:
            self.chunks.append("".join(self.lines).encode())
            self.lines = []

    def done(self) -> list[bytes]:
        """The samples, in the slices' pieces (written out as they are, not joined)."""
        self.cut()
        return self.chunks


@dataclass(frozen=True)
class _LedgerText:
    """The ledger-derived families as rendered for one generation of the view and one
    target list: headers (per format) and samples (the same in both formats)."""

    generation: int
    targets: list[TargetInfo]
    parts: list[bytes | Header]

    def pieces(self, openmetrics: bool) -> list[bytes]:
        return [
            part if isinstance(part, bytes) else header(*part, openmetrics).encode()
            for part in self.parts
        ]


@dataclass(frozen=True)
class TargetInfo:
    """What metrics need of a configured target."""

    name: str
    probes: tuple[str, ...]
    objective: Fraction
    tiers: tuple[sla.CreditTier, ...]
    # each probe's configured cadence, in the order of `probes` (empty: not known)
    attempts_per_minute: tuple[int, ...] = ()


def target_info(target: TargetBase) -> TargetInfo:
    return TargetInfo(
        target.name,
        tuple(target.probes),
        target.sla.objective_exact,
        target.sla.tiers,
        tuple(p.attempts_per_minute for p in target.probes.values()),
    )


class StandardSeries:
    """The `process_*` and `python_info` series every exporter has, from prometheus_client's
    own collectors (a handful of lines read from /proc at each scrape), rendered after the
    hand-written families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def render(self, openmetrics: bool) -> str:
        if not openmetrics:
            return text_exposition(self.registry).decode()
        text = openmetrics_exposition(self.registry).decode()
        return text.removesuffix("# EOF\n")  # the exposition ends once, after everything


class Exposition:
    """The ledger-derived families from the in-memory view (rendered once per change of it)
    and the process's own from the runtime's stats (per-probe lines rendered once per move
    of the probe, the rest at every scrape)."""

    def __init__(self, view: LedgerView, stats: RuntimeStats, version: str) -> None:
        self.view = view
        self.stats = stats
        self.version = version
        self.targets: list[TargetInfo] = []
        self._ledger: _LedgerText | None = None
        self._ledger_task: asyncio.Task[None] | None = None
        self._showing: set[asyncio.Task[None]] = set()  # show()'s, kept till done
        self._standard = StandardSeries()
        self._config_samples: bytes | None = None
        self._vantage_lines: tuple[int, list[bytes]] | None = None  # (vantage_moves, lines)
        # per configured (target, probe), in order: its lines of the duration histogram, of
        # the failure streak and of the last success, each rendered again only after the
        # probe's attempts moved them (`RuntimeStats.moved`), so a scrape mostly joins
        self._live_slots: list[list[bytes]] = []
        self._live_index: dict[tuple[str, str], int] = {}
        self._live_stale: set[int] = set()  # slots to render before they are served
        self._served_at = float("-inf")  # monotonic time of the latest render_pieces
        # label text made once per target list: each target's, each (target, probe)'s
        self._target_labels: list[str] = []
        self._probe_keys: list[tuple[str, str]] = []
        self._probe_labels: list[str] = []

    def set_targets(self, targets: Iterable[TargetInfo]) -> None:
        self.targets = list(targets)
        self._ledger = None
        self._config_samples = None
        self._vantage_lines = None
        self._target_labels = [f'target="{_escape(t.name)}"' for t in self.targets]
        self._probe_keys = [(t.name, probe) for t in self.targets for probe in t.probes]
        self._probe_labels = [
            f'target="{_escape(target)}",probe="{_escape(probe)}"'
            for target, probe in self._probe_keys
        ]
        # all rendered afresh (a reload is rare; the labels may have changed)
        self._live_slots = [[b"", b"", b""] for _ in self._probe_keys]
        self._live_index = {key: i for i, key in enumerate(self._probe_keys)}
        self._live_stale = set(range(len(self._probe_keys)))
        self.stats.keep_streaks(set(self._probe_keys))

    def configure(self, targets: Iterable[TargetBase]) -> None:
        """The configured targets, at start and after each reload (the runtime's hook)."""
        self.set_targets(target_info(t) for t in targets)

    # -- the whole exposition ----------------------------------------------------------

    def render(self, now: float, *, openmetrics: bool = False) -> bytes:
        """Everything at once, as of now."""
        pieces: list[bytes] = []
        if self._shows_ledger():
            ledger = self._ledger
            if (
                ledger is None
                or ledger.generation != self.view.generation
                or ledger.targets is not self.targets
            ):
                ledger = self._ledger = self._render_ledger(now)
            pieces += ledger.pieces(openmetrics)
        for block in self._live_blocks(openmetrics, pieces):
            _run(block)
        return b"".join(pieces)

    async def render_pieces(self, now: float, *, openmetrics: bool = False) -> list[bytes]:
        """The same bytes as `render`, in pieces, rendered slice by slice with the event loop
        running in between. The ledger-derived families are the latest complete rendering
        for the configured targets: a scrape does not wait for the one `keep_ready` begins
        after a close (at 10,000 targets that took seconds, the loop being busiest then);
        the next scrape has the new figures. Only with no rendering for these targets yet
        (start, reload) does a scrape wait for one."""
        self._served_at = time.monotonic()
        pieces: list[bytes] = []
        if self._shows_ledger():
            ledger = self._ledger
            if ledger is None or ledger.targets is not self.targets:
                ledger = await self._ledger_since(self.view.generation, now)
            pieces += ledger.pieces(openmetrics)
        await _run_yielding(itertools.chain(*self._live_blocks(openmetrics, pieces)))
        return pieces

    async def keep_ready(self, clock: Callable[[], float]) -> None:
        """Between scrapes: render the ledger-derived families again soon after the view has
        changed (a minute closed) and stopped changing, and, while something scrapes, the
        live lines of the probes whose attempts moved them; so a scrape finds nearly
        everything rendered."""
        seen = self.view.generation
        # the view's generation and the targets a rendering failed on: tried again once
        # either changes, not every REFRESH_EVERY (targets by identity, as the cache has them)
        failed: tuple[int, object] | None = None
        while True:
            await asyncio.sleep(REFRESH_EVERY)
            try:
                generation = self.view.generation
                if not self._shows_ledger():
                    # a fleet prober that stopped closing: should it close again, its
                    # first scrape waits for a fresh rendering, not this term's last one
                    self._ledger = None
                ledger = self._ledger
                stale = ledger is None or ledger.generation != generation
                tried = failed is not None and failed[0] == generation and failed[1] is self.targets
                if stale and generation == seen and self._shows_ledger() and not tried:
                    try:
                        await self._ledger_since(generation, clock())
                    except Exception:  # logged by the rendering
                        failed = (generation, self.targets)
                seen = generation
                if time.monotonic() - self._served_at < SCRAPED_WITHIN:
                    await _run_yielding(self._refresh_live())
            except Exception:  # a scrape renders on its own; this must not stop for good
                log.exception("rendering the exposition ahead of scrapes failed")

    def show(self, now: float) -> asyncio.Future[None]:
        """The runtime has put a close into the view: render the ledger families for it now
        (keep_ready would first wait for the view to stop changing, a quarter to half a
        second). The future ends once a rendering of the view as it is now is stored, ready
        to serve. It never raises: a failed rendering is logged, and the runtime's write and
        close go on (it is cancelled only by `close`, once the runtime has stopped)."""
        loop = asyncio.get_running_loop()
        if not self._shows_ledger():  # a fleet's vantage: what it shows is rendered live
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        task = loop.create_task(self._show(self.view.generation, now))
        self._showing.add(task)
        task.add_done_callback(self._showing.discard)
        return task

    async def _show(self, generation: int, now: float) -> None:
        with contextlib.suppress(Exception):  # logged by the rendering, once for all waiting
            await self._ledger_since(generation, now)

    def close(self) -> None:
        """Stop the renderings under way (the daemon is stopping)."""
        for task in (*self._showing, self._ledger_task):
            if task is not None:
                task.cancel()

    def _shows_ledger(self) -> bool:
        # In a fleet only the closer shows the fleet's figures, so Prometheus sums no
        # minute twice; every prober shows its own vantage's verdicts.
        return self.stats.fleet_closer != 0

    def _live_blocks(self, om: bool, out: list[bytes]) -> list[Iterator[None]]:
        return [
            self._fleet_block(om, out),
            self._config_block(om, out),
            self._streak_block(om, out),
            self._process_block(om, out),
            self._standard_block(om, out),
        ]

    # -- from the ledger (rendered once per change of the view) --------------------------

    async def _ledger_since(self, generation: int, now: float) -> _LedgerText:
        """The ledger families rendered from the view at `generation` or later: the one at
        hand, the one being rendered if it began late enough, or a new one; one rendering
        at a time."""
        while True:
            ledger = self._ledger
            if (
                ledger is not None
                and ledger.generation >= generation
                and ledger.targets is self.targets
            ):
                return ledger
            task = self._ledger_task
            if task is None or task.done():
                task = self._ledger_task = asyncio.get_running_loop().create_task(
                    self._render_ledger_yielding(now)
                )
                # (its failure is logged by the rendering; retrieved here should every
                # waiter be cancelled first, as only at stop)
                task.add_done_callback(_retrieved)
            await asyncio.shield(task)

    async def _render_ledger_yielding(self, now: float) -> None:
        targets, generation = self.targets, self.view.generation
        parts: list[bytes | Header] = []
        began = time.monotonic()
        # After every slice: no scrape waits for this one (it serves the previous rendering
        # meanwhile), and at a close, when the loop is busiest, the attempts go first.
        try:
            await _run_yielding(self._ledger_block(now, parts), every_slice=True)
        except Exception:
            log.exception("rendering the ledger families failed")
            raise
        if self.targets is targets:  # not replaced by a reload meanwhile
            self._ledger = _LedgerText(generation, targets, parts)
            # (at debug: how long the rendering took, for whoever tunes a large prober)
            event(
                logging.DEBUG,
                "ledger families rendered",
                targets=len(targets),
                seconds=round(time.monotonic() - began, 3),
            )

    def _render_ledger(self, now: float) -> _LedgerText:
        generation = self.view.generation
        parts: list[bytes | Header] = []
        _run(self._ledger_block(now, parts))
        return _LedgerText(generation, self.targets, parts)

    def _sliced(
        self,
        out: list[bytes | Header],
        header: Header,
        samples: Callable[[int, TargetBase, list[str]], None],
        targets: list[TargetInfo],
    ) -> Iterator[None]:
        """One family, its samples added target by target by `samples(i, target, lines)`,
        cut into slices of SLICE targets with a chance to yield between."""
        out.append(header)
        lines = _Lines()
        for i, t in enumerate(targets):
            samples(i, t, lines.lines)
            if i % SLICE == SLICE - 1:
                lines.cut()
                yield
        out.extend(lines.done())

    def _ledger_block(self, now: float, out: list[bytes | Header]) -> Iterator[None]:
        view = self.view
        # bound once: a reload during the render must not mix two target lists (the render
        # is then thrown away, see _render_ledger_yielding)
        targets, labels = self.targets, self._target_labels
        # Probe-level families take the probes' labels in order, target by target.
        attempt_labels, verdict_labels = iter(self._probe_labels), iter(self._probe_labels)

        def attempts(_i: int, t: TargetBase, lines: list[str]) -> None:
            for probe in t.probes:
                counts = view.attempts.get((t.name, probe), {})
                values: list[object] = [counts.get(o, 0) for o in _OUTCOMES]
                lines.append(_ATTEMPTS % _interleave(next(attempt_labels), values))

        def verdicts(i: int, t: TargetBase, lines: list[str]) -> None:
            counts = view.verdicts.get((t.name, TARGET_LEVEL), {})
            values = [counts.get(s, 0) for s in _STATES]
            lines.append(_VERDICTS % _interleave(labels[i], values))

        def probe_verdicts(_i: int, t: TargetBase, lines: list[str]) -> None:
            for probe in t.probes:
                counts = view.verdicts.get((t.name, probe), {})
                values = [counts.get(s, 0) for s in _STATES]
                lines.append(_PROBE_VERDICTS % _interleave(next(verdict_labels), values))

        def availability(i: int, t: TargetBase, lines: list[str]) -> None:
            target_view = view.targets.get(t.name)
            if target_view is None:
                return
            available, failed = target_view.ring.available, target_view.ring.failed
            for window in _WINDOW_NAMES:
                a = available[window]
                observed = a + failed[window]
                if observed:
                    # float(Fraction(a, a + f)) is a / (a + f), correctly rounded
                    lines.append(
                        f'im_availability_ratio{{{labels[i]},window="{window}"}} {a / observed!r}\n'
                    )

        def last_closed(i: int, t: TargetBase, lines: list[str]) -> None:
            target_view = view.targets.get(t.name)
            if target_view is not None and target_view.last_closed is not None:
                lines.append(
                    f"im_last_closed_minute_timestamp_seconds{{{labels[i]}}} "
                    f"{target_view.last_closed * 60}\n"
                )

        yield from self._sliced(
            out,
            (
                "im_probe_attempts_total",
                "counter",
                "Attempts by outcome (from the ledger; continues across restarts).",
            ),
            attempts,
            targets,
        )
        yield from self._sliced(
            out,
            (
                "im_minute_verdicts_total",
                "counter",
                "Closed minutes by SLA verdict (from the ledger).",
            ),
            verdicts,
            targets,
        )
        yield from self._sliced(
            out,
            (
                "im_probe_minute_verdicts_total",
                "counter",
                "Closed minutes by verdict of each probe alone (from the ledger).",
            ),
            probe_verdicts,
            targets,
        )
        yield from self._sliced(
            out,
            (
                "im_availability_ratio",
                "gauge",
                "Measured availability A/(A+F) over rolling windows of closed minutes.",
            ),
            availability,
            targets,
        )
        yield from self._month_block(now, out, targets, labels)
        yield from self._sliced(
            out,
            (
                "im_last_closed_minute_timestamp_seconds",
                "gauge",
                "Start of the newest minute written to the ledger (Unix time).",
            ),
            last_closed,
            targets,
        )

    def _month_block(
        self, now: float, out: list[bytes | Header], targets: list[TargetInfo], labels: list[str]
    ) -> Iterator[None]:
        families = {
            "im_sla_availability_ratio": (
                "SLA availability 1-F/T of the current service month so far."
            ),
            "im_sla_coverage_ratio": (
                "Observed share (A+F)/(T-M) of the current service month so far."
            ),
            "im_sla_downtime_seconds": "Failed minutes of the current service month, in seconds.",
            "im_sla_downtime_budget_remaining_seconds": (
                "Failed time the whole service month may still have and meet the objective."
            ),
            "im_sla_credit_ratio": (
                "Credit owed for the current service month so far (share of the fee)."
            ),
        }
        availabilities, coverages, downtimes, budgets, credits = (
            samples := [_Lines() for _ in families]
        )
        for i, t in enumerate(targets):
            if i % SLICE == SLICE - 1:
                for lines in samples:
                    lines.cut()
                yield
            target_view = self.view.targets.get(t.name)
            if target_view is None:
                continue
            tally = target_view.current_month(now)
            if tally is None:
                continue
            month = tally.month
            end = target_view.last_closed + 1 if target_view.last_closed is not None else 0
            figures = sla.month_so_far(month, end, tally.counts)
            label = f"{{{labels[i]}}}"
            availability = figures.sla_availability
            if availability is not None:
                availabilities.lines.append(
                    f"im_sla_availability_ratio{label} {_number(availability)}\n"
                )
                ratio = sla.credit_ratio(availability, t.tiers)
                credits.lines.append(f"im_sla_credit_ratio{label} {_number(ratio)}\n")
            if figures.coverage is not None:
                coverages.lines.append(
                    f"im_sla_coverage_ratio{label} {_number(figures.coverage)}\n"
                )
            downtimes.lines.append(f"im_sla_downtime_seconds{label} {figures.downtime_seconds}\n")
            budget = sla.downtime_budget_seconds(t.objective, month.minutes)
            budgets.lines.append(
                f"im_sla_downtime_budget_remaining_seconds{label} "
                f"{budget - figures.downtime_seconds}\n"
            )
        for (name, help_), lines in zip(families.items(), samples, strict=True):
            out.append((name, "gauge", help_))
            out.extend(lines.done())

    # -- rendered for each scrape (the live lines once per move), in slices -------------

    def _fleet_block(self, om: bool, out: list[bytes]) -> Iterator[None]:
        p = self.stats
        if p.fleet_closer is None:
            return
        head = [
            header(
                "im_fleet_closer",
                "gauge",
                "1 while this prober closes the fleet's minutes (one prober at a time).",
                om,
            ),
            f"im_fleet_closer {p.fleet_closer}\n",
            header(
                "im_vantage_minute_verdicts_total",
                "counter",
                "Minutes this prober decided as a vantage, by verdict (from the ledger).",
                om,
            ),
        ]
        out.append("".join(head).encode())
        # The per-target lines change only when this vantage closes a minute: rendered then,
        # not at every scrape (10,000 targets' took ~25 ms of each in a py-spy profile).
        moves, cached = p.vantage_moves, self._vantage_lines
        targets, labels = self.targets, self._target_labels
        if cached is not None and cached[0] == moves:
            out.extend(cached[1])
            return
        vantage = _escape(p.vantage)
        verdicts = p.vantage_verdicts
        lines = _Lines()
        for i, t in enumerate(targets):
            label = f'{labels[i]},vantage="{vantage}"'
            values: list[object] = [verdicts.get((t.name, s), 0) for s in _STATE_VALUES]
            lines.lines.append(_VANTAGE_VERDICTS % _interleave(label, values))
            if i % SLICE == SLICE - 1:
                lines.cut()
                yield
        rendered = lines.done()
        if self.targets is targets:  # (a reload meanwhile: its own lines next time)
            self._vantage_lines = (moves, rendered)
        out.extend(rendered)

    def _config_block(self, om: bool, out: list[bytes]) -> Iterator[None]:
        """From the configuration: changes only with the target list."""
        if self._config_samples is None:
            lines = []
            for t in self.targets:
                for probe, cadence in zip(t.probes, t.attempts_per_minute, strict=False):
                    lines.append(
                        f'im_probe_attempts_per_minute{{target="{_escape(t.name)}",'
                        f'probe="{_escape(probe)}"}} {cadence}\n'
                    )
            self._config_samples = "".join(lines).encode()
        out.append(
            header(
                "im_probe_attempts_per_minute",
                "gauge",
                "Attempts a minute each probe is configured to make (IMTargetFailingNow "
                "derives its threshold from it).",
                om,
            ).encode()
        )
        out.append(self._config_samples)
        return
        yield

    def _refresh_live(self) -> Iterator[None]:
        """Render the live slots again of the probes whose attempts moved them since the
        last look, and of those never rendered; SLICE * 2 slots between two chances to
        yield. When it ends, every slot of `self._live_slots` is rendered (a reload while
        it was paused makes it start again on the new slots)."""
        stats = self.stats
        while True:
            slots, index, stale = self._live_slots, self._live_index, self._live_stale
            moved, stats.moved = stats.moved, set()
            for key in moved:
                i = index.get(key)
                if i is not None:
                    stale.add(i)
            keys, labels = self._probe_keys, self._probe_labels
            durations, streaks = stats.durations, stats.streaks
            rendered = 0
            while stale:
                i = stale.pop()
                key, label = keys[i], labels[i]
                histogram = durations.get(key)
                if histogram is None:  # no attempt yet: an empty histogram, shown all the same
                    histogram = durations[key] = Histogram(DURATION_BUCKETS)
                streak = streaks.get(key)
                if streak is None:
                    failures, last_success = 0, "0"
                else:
                    failures, last_success = streak.failures, _number(streak.last_success)
                slots[i] = [
                    _histogram_text("im_probe_duration_seconds", histogram, label).encode(),
                    f"im_probe_consecutive_failures{{{label}}} {failures}\n".encode(),
                    f"im_probe_last_success_timestamp_seconds{{{label}}} {last_success}\n".encode(),
                ]
                rendered += 1
                if rendered % (SLICE * 2) == 0:
                    yield
            if self._live_slots is slots:
                return

    def _live_lines(self, column: int, out: list[bytes]) -> Iterator[None]:
        """One column of the live slots, every configured probe's in order, brought up to
        date first, into `out` in pieces of SLICE * 10 probes (joining 10,000 probes'
        histograms at once held the loop for tens of ms while the writer wanted the GIL)."""
        yield from self._refresh_live()
        slots = self._live_slots  # all rendered: no yield since the refresh ended
        step = SLICE * 10
        for start in range(0, len(slots), step):
            out.append(b"".join([slot[column] for slot in slots[start : start + step]]))
            yield

    def _streak_block(self, om: bool, out: list[bytes]) -> Iterator[None]:
        """Each attempt as it ends (not when its minute closes)."""
        out.append(
            header(
                "im_probe_consecutive_failures",
                "gauge",
                "Failed attempts in a row, updated as each attempt ends; a success resets "
                "it, excluded outcomes (client_error, throttled, prober_fault) leave it.",
                om,
            ).encode()
        )
        yield from self._live_lines(FAILURES, out)
        out.append(
            header(
                "im_probe_last_success_timestamp_seconds",
                "gauge",
                "When the probe's latest successful attempt ended (Unix time); 0 until the "
                "first since this process started.",
                om,
            ).encode()
        )
        yield from self._live_lines(LAST_SUCCESS, out)

    def _process_block(self, om: bool, out: list[bytes]) -> Iterator[None]:
        """This process's own figures."""
        p = self.stats
        out.append(
            header(
                "im_probe_duration_seconds",
                "histogram",
                "Duration of attempts (monotonic clock), since this process started.",
                om,
            ).encode()
        )
        yield from self._live_lines(DURATIONS, out)
        rest = [
            header(
                "im_scheduler_lag_seconds",
                "histogram",
                "How late attempts started against their planned time.",
                om,
            ),
            _histogram_text("im_scheduler_lag_seconds", p.lag, None),
        ]
        for name, help_, value in (
            (
                "im_ledger_write_errors_total",
                "Failed ledger writes (closed minutes are kept in memory and retried).",
                p.ledger_write_errors,
            ),
            (
                "im_scheduler_misfires_total",
                "Attempts skipped because they could not start near their planned time.",
                p.misfires,
            ),
            (
                "im_attempts_discarded_total",
                "Attempts that finished after their minute had closed (clock step or stall).",
                p.discarded_attempts,
            ),
            (
                "im_attempts_unstored_total",
                "Finished attempts never stored: the ledger refused writes past the buffer.",
                p.dropped_attempts,
            ),
            (
                "im_clock_steps_total",
                "Wall-clock steps noticed against the monotonic clock.",
                p.clock_steps,
            ),
        ):
            rest.append(header(name, "counter", help_, om))
            rest.append(f"{name} {value}\n")
        if p.network_up is not None:
            rest.append(
                header(
                    "im_prober_network_up",
                    "gauge",
                    "1 when a reference endpoint answered in the last network check.",
                    om,
                )
            )
            rest.append(f"im_prober_network_up {p.network_up}\n")
        rest.append(
            header(
                "im_config_last_reload_successful",
                "gauge",
                "1 when the last configuration (re)load succeeded.",
                om,
            )
        )
        rest.append(f"im_config_last_reload_successful {p.reload_successful}\n")
        rest.append(
            header(
                "im_config_last_reload_success_timestamp_seconds",
                "gauge",
                "When the configuration was last loaded successfully (Unix time).",
                om,
            )
        )
        rest.append(
            f"im_config_last_reload_success_timestamp_seconds {_number(p.reload_timestamp)}\n"
        )
        expiries: list[str] = []
        if p.tls_not_after:  # only targets reached over TLS have one
            for i, t in enumerate(self.targets):
                expiry = p.earliest_certificate_expiry(t.name, t.probes)
                if expiry is not None:
                    expiries.append(
                        f"im_probe_tls_cert_expiry_timestamp_seconds{{{self._target_labels[i]}}} "
                        f"{_number(expiry)}\n"
                    )
                if i % SLICE == SLICE - 1:
                    yield
        if expiries:
            rest.append(
                header(
                    "im_probe_tls_cert_expiry_timestamp_seconds",
                    "gauge",
                    "Earliest notAfter (Unix time) of the leaf certificates the target's "
                    "probes last saw; only targets reached over TLS.",
                    om,
                )
            )
            rest.extend(expiries)
        rest.append(header("im_prober_build_info", "gauge", "The running im-prober's version.", om))
        rest.append(f'im_prober_build_info{{version="{_escape(self.version)}"}} 1\n')
        out.append("".join(rest).encode())

    def _standard_block(self, om: bool, out: list[bytes]) -> Iterator[None]:
        out.append(self._standard.render(om).encode())
        if om:
            out.append(b"# EOF\n")
        return
        yield
