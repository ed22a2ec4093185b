"""What the status page shows, as plain JSON-ready dicts: the same dicts are the JSON API
and the templates' input, so the page and the API can never disagree.

Figures come from the report's own functions (`report_from_counts`, `build_report`,
`as_dict`), so they equal `im-prober report --format json --now <as_of>` for the same
target and month. The overview reads only the in-memory view (a snapshot taken on the event
loop); the target page reads the ledger in ranges of its indexes, in a worker thread."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any

from .. import sla
from ..config.models import TargetBase
from ..config.secrets import redact
from ..ledger.codes import STATE_CODES, STATES_BY_CODE
from ..ledger.store import TARGET_LEVEL
from ..ledger.view import LedgerView
from ..reports.report import Report, as_dict, build_report, report_from_counts
from ..sla import ServiceMonth, State, minute_iso
from ..sla.months import local_midnight
from .reads import StatusLedger

STRIP_MINUTES = 90  # the overview's strip
DAY_MINUTES = 1440  # the target page's minute grid
LATENCY_HOURS = 7 * 24
PREVIOUS_MONTHS = 12
INCIDENTS_SHOWN = 50
# A month that has ended changes only by `ledger import`; its figures are kept this long
# (reading a month's rows is the page's dearest read: ~10 ms a month on a large ledger).
MONTH_CACHE_SECONDS = 3600.0

EMPTY = 255  # a minute without a row (the view's and this module's marker)
# One letter a minute in the JSON strips: short enough for 1,440 minutes per series.
LETTERS = {
    STATE_CODES[State.AVAILABLE]: "a",
    STATE_CODES[State.APPARENT_FAILURE]: "f",
    STATE_CODES[State.MAINTENANCE]: "m",
    STATE_CODES[State.NO_DATA]: "n",
    EMPTY: "-",
}
# The same as a bytes.translate table (a code with no letter shows as no row).
_LETTER_TABLE = bytes(ord(LETTERS.get(code, "-")) for code in range(256))
_F = STATE_CODES[State.APPARENT_FAILURE]
_UNKNOWN: Any = object()  # an hour not read yet (None is an hour without attempts)
_M = STATE_CODES[State.MAINTENANCE]


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the overview: from the in-memory view ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """What the overview needs of one target, copied from the view on the event loop (the
    view changes there; the page is built in a thread)."""

    config: TargetBase
    last_closed: int | None
    recent: bytes  # state codes of the STRIP_MINUTES minutes ending at last_closed
    month: ServiceMonth | None  # the service month at as_of
    counts: dict[State, int] = field(default_factory=dict)

    @property
    def as_of(self) -> float:
        """The instant the figures describe: the end of the newest closed minute (the
        daemon's "so far", as in /metrics)."""
        return (self.last_closed + 1) * 60.0 if self.last_closed is not None else 0.0


def snapshot(view: LedgerView, targets: Sequence[TargetBase], now: float) -> list[TargetSnapshot]:
    """Run on the event loop: a few hundred bytes per target, no ledger read."""
    out = []
    for target in targets:
        tv = view.targets.get(target.name)
        last = tv.last_closed if tv is not None else None
        if tv is None or last is None:
            month = target.sla.calendar().month_containing(datetime.fromtimestamp(now, UTC))
            out.append(TargetSnapshot(target, None, bytes([EMPTY]) * STRIP_MINUTES, month))
            continue
        recent = bytes(tv.ring.code_at(m) for m in range(last - STRIP_MINUTES + 1, last + 1))
        tally = tv.current_month((last + 1) * 60.0)
        month = tally.month if tally is not None else None
        counts = dict(tally.counts) if tally is not None else {}
        out.append(TargetSnapshot(target, last, recent, month, counts))
    return out


def month_figures(report: Report) -> dict[str, Any]:
    """The report's JSON dict, without incidents, plus the downtime budget."""
    data = as_dict(report)
    data.pop("incidents")
    allowed = sla.downtime_budget_seconds(report.objective, report.month.minutes) // 60
    data["downtime_allowed_minutes"] = allowed
    data["downtime_budget_minutes"] = allowed - report.figures.apparent_failure
    data["month"] = f"{report.month.start:%Y-%m}"
    return data


def current_state(code: int | None) -> str:
    if code is None or code == EMPTY:
        return "no_data"
    return str(STATES_BY_CODE[code])


def target_summary(snap: TargetSnapshot) -> dict[str, Any]:
    target = snap.config
    month = None
    if snap.month is not None and snap.last_closed is not None:
        now = datetime.fromtimestamp(snap.as_of, UTC)
        month = month_figures(report_from_counts(target, snap.month, now, snap.counts, ()))
    return {
        "name": target.name,
        "kind": target.kind,
        "state": current_state(snap.recent[-1] if snap.last_closed is not None else None),
        "last_closed_minute": minute_iso(snap.last_closed) if snap.last_closed else None,
        "as_of": iso(snap.as_of) if snap.last_closed is not None else None,
        "month": month,
        "recent": {
            "since": minute_iso(snap.last_closed - STRIP_MINUTES + 1)
            if snap.last_closed is not None
            else None,
            "states": "".join(LETTERS[c] for c in snap.recent),
        },
    }


def overview(snaps: Sequence[TargetSnapshot], *, network_up: int | None, now: float) -> dict:
    targets = [target_summary(s) for s in snaps]
    counts = {
        state: sum(1 for t in targets if t["state"] == state)
        for state in ("available", "apparent_failure", "maintenance", "no_data")
    }
    return {
        "generated_at": iso(now),
        "network_up": None if network_up is None else bool(network_up),
        "failing": [t["name"] for t in targets if t["state"] == "apparent_failure"],
        "counts": counts,
        "targets": targets,
    }


# -- the target page: from the ledger --------------------------------------------------------


def claim_state(report: Report, today: date) -> dict[str, Any]:
    """Where `today` (in the contract's timezone) stands in the month's claim window."""
    opens, closes = report.claim.opens, report.claim.closes
    base = {"opens": opens.isoformat(), "closes": closes.isoformat()}
    if not report.complete:
        return {**base, "status": "in_progress", "text": "month in progress"}
    if report.objective_met:
        return {**base, "status": "not_needed", "text": "no claim: objective met"}
    if today < opens:
        days = (opens - today).days
        return {**base, "status": "not_open", "text": f"opens {opens} (in {plural(days, 'day')})"}
    if today <= closes:
        days = (closes - today).days
        when = "closes today" if days == 0 else f"closes in {plural(days, 'day')}"
        return {**base, "status": "open", "text": f"open: {when} ({closes})"}
    return {**base, "status": "closed", "text": f"closed on {closes}"}


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank of a sorted, non-empty sequence."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def letters(rows: list[tuple[int, int]], since: int, count: int) -> str:
    cells = bytearray([EMPTY]) * count
    for minute, code in rows:
        if since <= minute < since + count:
            cells[minute - since] = code
    return cells.translate(_LETTER_TABLE).decode("ascii")


@dataclass
class ProbeHours:
    """One probe's whole hours, read once: hours `known_from`..`final_through` are final;
    only those that had attempts have figures (an empty hour costs nothing to keep)."""

    known_from: int
    final_through: int
    figures: dict[int, tuple[int, float, float]] = field(default_factory=dict)

    def forget_before(self, hour: int) -> None:
        if self.known_from < hour:
            self.known_from = hour
            for old in [h for h in self.figures if h < hour]:
                del self.figures[old]


@dataclass
class HistoryCache:
    """What does not change once its time has passed: a whole hour's latency figures and an
    ended month's report. Bounded: hours older than the window are dropped, months expire.

    Pruning walks the whole cache at most once an hour (hours) or a minute (months): a page
    build asks for it every time, and thousands of builds in a warm-up made a walk per build
    quadratic in targets."""

    hours: dict[tuple[str, str], ProbeHours] = field(default_factory=dict)
    months: dict[tuple[str, int, str], tuple[float, Report]] = field(default_factory=dict)
    pruned_hour: int = 0
    pruned_months_at: float = 0.0

    def prune(self, oldest_hour: int) -> None:
        if oldest_hour > self.pruned_hour:
            self.pruned_hour = oldest_hour
            for key in [k for k, e in self.hours.items() if e.final_through < oldest_hour]:
                del self.hours[key]
        now = time.monotonic()
        if now - self.pruned_months_at >= 60.0:
            self.pruned_months_at = now
            for key in [k for k, (t, _r) in self.months.items() if now - t > MONTH_CACHE_SECONDS]:
                del self.months[key]

    def known_hours(self) -> int:
        """How many whole hours are kept, over all probes."""
        return sum(e.final_through - e.known_from + 1 for e in self.hours.values())


class TargetPage:
    """Builds one target's page from the ledger (in a worker thread)."""

    def __init__(self, ledger: StatusLedger, cache: HistoryCache) -> None:
        self.ledger = ledger
        self.cache = cache

    def build(
        self, target: TargetBase, last_closed: int | None, *, public: bool, now: float
    ) -> dict[str, Any]:
        end = last_closed + 1 if last_closed is not None else int(now // 60)
        as_of = end * 60.0
        as_of_dt = datetime.fromtimestamp(as_of, UTC)
        calendar = target.sla.calendar()
        month = calendar.month_containing(as_of_dt)
        probes = list(target.probes)
        today = datetime.fromtimestamp(now, UTC).astimezone(target.sla.zone).date()
        page: dict[str, Any] = {
            "name": target.name,
            "kind": target.kind,
            "timezone": target.sla.timezone,
            "public": public,
            "as_of": iso(as_of),
            "generated_at": iso(now),
            "state": "no_data",
            "probes": probes,
        }
        day_rows = self.ledger.codes(target.name, TARGET_LEVEL, end - DAY_MINUTES, end)
        if day_rows and day_rows[-1][0] == end - 1:
            page["state"] = current_state(day_rows[-1][1])
        page["last_24h"] = {
            "since": minute_iso(end - DAY_MINUTES),
            "states": letters(day_rows, end - DAY_MINUTES, DAY_MINUTES),
            "probes": {
                p: letters(
                    self.ledger.codes(target.name, p, end - DAY_MINUTES, end),
                    end - DAY_MINUTES,
                    DAY_MINUTES,
                )
                for p in probes
            },
        }
        page["month"] = None
        page["days"] = []
        page["incidents"] = []
        page["incident_count"] = 0
        if month is not None:
            report = build_report(self.ledger, target, month, as_of_dt)
            page["month"] = {**month_figures(report), "claim": claim_state(report, today)}
            page["days"] = self.days(target.name, month, end)
            page["incident_count"] = len(report.incidents)
            page["incidents"] = self.incidents(target, report, probes, public=public)
        page["latency"] = self.latency(target.name, probes, end)
        page["previous_months"] = self.previous_months(target, calendar, month, now, today)
        return page

    def days(self, name: str, month: ServiceMonth, end: int) -> list[dict[str, Any]]:
        """The month day by day (local days of the contract's timezone)."""
        tz = month.start.tzinfo
        starts: list[int] = []
        day = month.start.date()
        while (start := sla.epoch_minute(local_midnight(day, tz))) < month.end_minute:  # type: ignore[arg-type]
            starts.append(start)
            day += timedelta(days=1)
        stops = [*starts[1:], month.end_minute]
        failed = [0] * len(starts)
        maintenance = [0] * len(starts)
        no_data = [0] * len(starts)
        for minute, code in self.ledger.unavailable(name, month.start_minute, end):
            index = bisect.bisect_right(starts, minute) - 1
            counter = failed if code == _F else maintenance if code == _M else no_data
            counter[index] += 1
        out = []
        for i, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            elapsed = max(0, min(stop, end) - start)
            available = 0
            if elapsed:
                rows = self.ledger.row_count(name, start, start + elapsed)
                available = rows - failed[i] - maintenance[i] - no_data[i]
            figures = sla.Figures(elapsed, available, failed[i], maintenance[i])
            availability = figures.sla_availability
            out.append(
                {
                    "date": sla.minute_start(start).astimezone(tz).date().isoformat(),
                    "start": minute_iso(start),
                    "minutes": stop - start,
                    "elapsed": elapsed,
                    "available": figures.available,
                    "apparent_failure": figures.apparent_failure,
                    "maintenance": figures.maintenance,
                    "no_data": figures.no_data,
                    "sla_availability": None if availability is None else float(availability),
                }
            )
        return out

    def incidents(
        self, target: TargetBase, report: Report, probes: list[str], *, public: bool
    ) -> list[dict[str, Any]]:
        month = report.month
        shown = list(reversed(report.incidents))[:INCIDENTS_SHOWN]
        if not shown:
            return []
        end = month.start_minute + report.figures.total
        failed_by_probe = {
            p: self.ledger.minutes_in_state(
                target.name, State.APPARENT_FAILURE, month.start_minute, end, probe=p
            )
            for p in probes
        }
        tz = month.start.tzinfo
        out = []
        for incident in shown:
            which = [
                p
                for p, minutes in failed_by_probe.items()
                if _any_in(minutes, incident.start_minute, incident.end_minute)
            ]
            item: dict[str, Any] = {
                "start": sla.minute_start(incident.start_minute).astimezone(tz).isoformat(),
                "end": sla.minute_start(incident.end_minute).astimezone(tz).isoformat(),
                "minutes": incident.minutes,
                "first_minute": minute_iso(incident.start_minute),
                "probes": which,
            }
            out.append(item)
        if not public:
            # one grouped read per probe over the span shown, not one per incident
            kinds = self.ledger.failure_kinds(
                target.name, probes, shown[-1].start_minute, shown[0].end_minute
            )
            for incident, item in zip(shown, out, strict=True):
                item["error_kinds"] = _kinds_within(
                    kinds, incident.start_minute, incident.end_minute
                )
        return out

    def latency(self, name: str, probes: list[str], end: int) -> dict[str, list[dict[str, Any]]]:
        """p50/p95 of each probe's attempts per hour over 7 days. A whole hour is read once
        and kept; only the hour in progress is read at every build."""
        last_hour = (end - 1) // 60
        first_hour = last_hour - LATENCY_HOURS + 1
        self.cache.prune(first_hour)
        out: dict[str, list[dict[str, Any]]] = {}
        for probe in probes:
            kept = self.cache.hours.get((name, probe))
            if kept is not None:
                kept.forget_before(first_hour)
            hours: dict[int, Any] = {
                h: kept.figures.get(h)
                if kept is not None and kept.known_from <= h <= kept.final_through
                else _UNKNOWN
                for h in range(first_hour, last_hour + 1)
            }
            missing = [h for h, figures in hours.items() if figures is _UNKNOWN]
            if missing:
                by_hour: dict[int, list[float]] = {}
                for minute, seconds in self.ledger.durations(name, probe, missing[0] * 60, end):
                    by_hour.setdefault(minute // 60, []).append(seconds)
                if kept is None or missing[0] != kept.final_through + 1:
                    kept = ProbeHours(known_from=missing[0], final_through=missing[0] - 1)
                for h in range(missing[0], last_hour + 1):
                    values = sorted(by_hour.get(h, ()))
                    hours[h] = (
                        (len(values), percentile(values, 0.5), percentile(values, 0.95))
                        if values
                        else None
                    )
                    if (h + 1) * 60 <= end and h == kept.final_through + 1:  # a whole hour: final
                        kept.final_through = h
                        if hours[h] is not None:
                            kept.figures[h] = hours[h]
                if kept.final_through >= kept.known_from:
                    self.cache.hours[(name, probe)] = kept
            out[probe] = [
                {
                    "hour": minute_iso(h * 60),
                    "attempts": figures[0] if figures else 0,
                    "p50_ms": round(figures[1] * 1000, 1) if figures else None,
                    "p95_ms": round(figures[2] * 1000, 1) if figures else None,
                }
                for h, figures in hours.items()
            ]
        return out

    def previous_months(
        self,
        target: TargetBase,
        calendar: sla.ServiceCalendar,
        month: ServiceMonth | None,
        now: float,
        today: date,
    ) -> list[dict[str, Any]]:
        first = self.ledger.first_minute(target.name)
        if first is None or month is None:
            return []
        key_sla = target.sla.model_dump_json()
        out = []
        for index in range(month.index - 1, max(-1, month.index - 1 - PREVIOUS_MONTHS), -1):
            previous = calendar.month(index)
            if previous.end_minute <= first:
                break
            key = (target.name, previous.start_minute, key_sla)
            cached = self.cache.months.get(key)
            if cached is None:
                # an ended month's figures from one count of its rows (its incidents are
                # in its report): the report's own function, as build_report calls it
                counts = self.ledger.state_counts(
                    target.name, previous.start_minute, previous.end_minute
                )
                as_of = datetime.fromtimestamp(now, UTC)
                report = report_from_counts(target, previous, as_of, counts, ())
                self.cache.months[key] = (time.monotonic(), report)
            else:
                report = cached[1]
            data = month_figures(report)
            data["claim"] = claim_state(report, today)
            out.append(data)
        return out


def _kinds_within(
    kinds: dict[str, list[tuple[int, str, int]]], start: int, stop: int
) -> dict[str, dict[str, int]]:
    """probe → error kind → failed attempts in minutes [start, stop)."""
    out: dict[str, dict[str, int]] = {}
    for probe, rows in kinds.items():
        i = bisect.bisect_left(rows, (start,))
        while i < len(rows) and rows[i][0] < stop:
            _minute, kind, n = rows[i]
            found = out.setdefault(probe, {})
            found[kind] = found.get(kind, 0) + n
            i += 1
    return out


def _any_in(ordered: list[int], start: int, stop: int) -> bool:
    i = bisect.bisect_left(ordered, start)
    return i < len(ordered) and ordered[i] < stop


def credit_text(ratio: Fraction) -> str:
    return "no credit" if ratio == 0 else f"{ratio * 100:g}% credit"


# -- minutes: the API's rows and one minute's attempts ---------------------------------------

MAX_SPAN_MINUTES = 7 * DAY_MINUTES  # one minutes request at most (7 days x 4 series)


def minutes_range(
    ledger: StatusLedger, target: TargetBase, since: int, until: int
) -> dict[str, Any]:
    """The target's minutes in [since, until), with each probe's verdict."""
    series = {
        p: {row.minute: row for row in ledger.minute_states(target.name, p, since, until)}
        for p in [TARGET_LEVEL, *target.probes]
    }
    rows = []
    for minute, row in series[TARGET_LEVEL].items():
        rows.append(
            {
                "minute": minute_iso(minute),
                "state": str(row.state),
                "reason": str(row.reason),
                "probes": {
                    p: str(series[p][minute].state) for p in target.probes if minute in series[p]
                },
            }
        )
    return {
        "target": target.name,
        "since": minute_iso(since),
        "until": minute_iso(until),
        "minutes": rows,
    }


def minute_detail(ledger: StatusLedger, target: TargetBase, minute: int) -> dict[str, Any]:
    """One minute: its verdicts and the attempts behind them (never in public mode)."""
    verdicts = {}
    for probe in [TARGET_LEVEL, *target.probes]:
        found = ledger.minute_states(target.name, probe, minute, minute + 1)
        if found:
            verdicts[probe or "target"] = {
                "state": str(found[0].state),
                "reason": str(found[0].reason),
            }
    attempts = [
        {
            "probe": a.probe,
            "started_at": datetime.fromtimestamp(a.started_at, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "duration_ms": round(a.duration * 1000, 1),
            "outcome": str(a.outcome),
            "error_kind": a.error_kind,
            "error_code": a.error_code,
            "http_status": a.http_status,
            "detail": redact(a.detail),
        }
        for a in ledger.minute_attempts(target.name, minute)
    ]
    tz = target.sla.zone
    return {
        "target": target.name,
        "minute": minute_iso(minute),
        "local_minute": sla.minute_start(minute).astimezone(tz).isoformat(),
        "verdicts": verdicts,
        "attempts": attempts,
    }


def minute_of(text: str | None) -> int | None:
    """The epoch minute of one of this module's ISO minutes."""
    if text is None:
        return None
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()) // 60


def hour_table(states: str, since: int, tz: tzinfo) -> list[dict[str, Any]]:
    """The 24-hour grid as a table, a row per clock hour: the chart's text alternative."""
    rows: dict[int, dict[str, Any]] = {}
    for offset, letter in enumerate(states):
        minute = since + offset
        row = rows.get(minute // 60)
        if row is None:
            start = sla.minute_start(minute // 60 * 60).astimezone(tz)
            row = rows[minute // 60] = {
                "hour": f"{start:%Y-%m-%d %H:00}",
                "a": 0,
                "f": 0,
                "m": 0,
                "n": 0,
            }
        row["n" if letter == "-" else letter] += 1
    return list(rows.values())
