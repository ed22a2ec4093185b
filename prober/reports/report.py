"""The SLA report of one service month, computed from the ledger, and its renderings."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .. import sla
from ..config.models import TargetBase as TargetConfig
from ..ledger.csv_cells import cells
from ..ledger.fleet import failing_vantages
from ..ledger.store import Ledger
from ..sla import Figures, Incident, ServiceMonth, State, epoch_minute

LOW_COVERAGE = Fraction(99, 100)


@dataclass(frozen=True)
class Report:
    target: str
    month: ServiceMonth
    figures: Figures
    complete: bool  # the month has ended
    objective: Fraction
    credit_ratio: Fraction
    credit_amount: Decimal | None
    currency: str | None
    claim: sla.ClaimWindow
    incidents: list[Incident]
    timezone: str
    as_of: datetime  # the instant the figures were computed for
    # per incident, the vantages whose attempts saw the target fail (from the ledger)
    incident_vantages: tuple[tuple[str, ...], ...] = ()

    @property
    def objective_met(self) -> bool:
        availability = self.figures.sla_availability
        return availability is None or availability >= self.objective

    @property
    def started(self) -> bool:
        return self.as_of >= self.month.start

    @property
    def progress(self) -> str:
        """What the heading says after the month's span."""
        if self.complete:
            return ""
        return " (in progress)" if self.started else " (not started yet)"

    @property
    def low_coverage(self) -> bool:
        coverage = self.figures.coverage
        return coverage is not None and coverage < LOW_COVERAGE


def build_report(
    ledger: Ledger, target: TargetConfig, month: ServiceMonth, now: datetime
) -> Report:
    end = report_end(month, now)
    counts = ledger.state_counts(target.name, month.start_minute, end)
    failed = ledger.minutes_in_state(target.name, State.APPARENT_FAILURE, month.start_minute, end)
    report = report_from_counts(target, month, now, counts, failed)
    seen = tuple(
        tuple(failing_vantages(ledger, target.name, i.start_minute, i.end_minute))
        for i in report.incidents
    )
    return replace(report, incident_vantages=seen)


def report_end(month: ServiceMonth, now: datetime) -> int:
    """The minute the report's figures stop before: the one in progress at `now`."""
    return min(epoch_minute(now), month.end_minute)


def report_from_counts(
    target: TargetConfig,
    month: ServiceMonth,
    now: datetime,
    counts: Mapping[State, int],
    failed: Iterable[int],
) -> Report:
    """The report from the month's minute counts by state before `report_end(month, now)`
    and its failed minutes: what `build_report` reads from the ledger, or what the status
    page holds in memory, so both give the same figures."""
    figures = sla.month_so_far(month, report_end(month, now), counts)
    total = figures.total
    availability = figures.sla_availability
    ratio = (
        sla.credit_ratio(availability, target.sla.tiers)
        if availability is not None
        else Fraction(0)
    )
    fee = target.sla.monthly_fee
    return Report(
        target=target.name,
        month=month,
        figures=figures,
        complete=total == month.minutes,
        objective=target.sla.objective_exact,
        credit_ratio=ratio,
        credit_amount=sla.credit_amount(fee, ratio) if fee is not None else None,
        currency=target.sla.currency,
        claim=sla.claim_window(month.last_day, sla.working_days_of(target.sla.holidays)),
        incidents=sla.find_incidents(failed),
        timezone=target.sla.timezone,
        as_of=now,
    )


def _local(minute: int, report: Report) -> str:
    return sla.minute_start(minute).astimezone(report.month.start.tzinfo).isoformat()


def _float(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _exact(value: Fraction | None) -> str | None:
    return None if value is None else f"{value.numerator}/{value.denominator}"


def _percent_number(ratio: Fraction) -> int | float:
    percent = ratio * 100
    return int(percent) if percent.denominator == 1 else float(percent)


def as_dict(report: Report) -> dict[str, Any]:
    f = report.figures
    return {
        "target": report.target,
        "service_month": {
            "start": report.month.start.isoformat(),
            "end": report.month.end.isoformat(),
        },
        "complete": report.complete,
        "minutes": {
            "total": f.total,
            "available": f.available,
            "apparent_failure": f.apparent_failure,
            "maintenance": f.maintenance,
            "no_data": f.no_data,
        },
        "sla_availability": _float(f.sla_availability),
        "sla_availability_exact": _exact(f.sla_availability),
        "measured_availability": _float(f.measured_availability),
        "coverage": _float(f.coverage),
        "objective": float(report.objective),
        "objective_met": report.objective_met,
        "credit_percent": _percent_number(report.credit_ratio),
        "credit_amount": None if report.credit_amount is None else str(report.credit_amount),
        "currency": report.currency,
        "claim_window": {
            "opens": report.claim.opens.isoformat(),
            "closes": report.claim.closes.isoformat(),
        },
        "incidents": [
            {
                "start": _local(i.start_minute, report),
                "end": _local(i.end_minute, report),
                "minutes": i.minutes,
                "vantages": list(_vantages_of(report, n)),
            }
            for n, i in enumerate(report.incidents)
        ],
    }


def _vantages_of(report: Report, n: int) -> tuple[str, ...]:
    seen = report.incident_vantages
    return seen[n] if n < len(seen) else ()


def render_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2) + "\n"


def _pct(value: Fraction | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{float(value * 100):.{digits}f}%"


def headline(report: Report) -> str:
    f = report.figures
    so_far = "" if report.complete else " so far"
    availability = _pct(f.sla_availability)
    if not report.started:
        return f"NO DATA: the service month starts {report.month.start:%Y-%m-%d %H:%M}"
    if f.total == 0:
        return "NO DATA: no minute of the service month has ended yet"
    if report.objective_met:
        objective = _pct(report.objective, 2)
        return f"MET{so_far}: SLA availability {availability} ≥ objective {objective}"
    credit = f"{_percent_number(report.credit_ratio)}% credit"
    if report.credit_amount is not None:
        credit += f" = {report.credit_amount} {report.currency or ''}".rstrip()
    return (
        f"MISSED{so_far}: SLA availability {availability} < objective "
        f"{_pct(report.objective, 2)} → {credit}"
    )


def claim_status(report: Report) -> str | None:
    """Where today stands in the claim window, once a missed month has ended."""
    today = report.as_of.astimezone(report.month.start.tzinfo).date()
    if report.objective_met or not report.complete:
        return None
    if today < report.claim.opens:
        return f"a claim can be filed from {report.claim.opens}"
    if today <= report.claim.closes:
        return f"the window is OPEN: file by {report.claim.closes}"
    return "the window has CLOSED"


def render_text(report: Report) -> str:
    f = report.figures
    month = report.month
    span = f"{month.start:%Y-%m-%d %H:%M} – {month.end:%Y-%m-%d %H:%M} {report.timezone}"
    availability = _pct(f.sla_availability)
    lines = [
        f"im-prober SLA report — target {report.target}",
        f"Service month {span}{report.progress}",
        "",
        headline(report),
        "",
        f"  minutes elapsed        {f.total:>8}",
        f"  available              {f.available:>8}",
        f"  apparent failure       {f.apparent_failure:>8}",
        f"  maintenance            {f.maintenance:>8}",
        f"  no data                {f.no_data:>8}",
        "",
        f"  SLA availability       {availability}   (1 - failed/elapsed"
        f" = 1 - {f.apparent_failure}/{f.total})",
        f"  measured availability  {_pct(f.measured_availability)}   (available / observed)",
        f"  coverage               {_pct(f.coverage, 2)}   (observed / outside maintenance)",
    ]
    if report.low_coverage:
        lines += [
            "",
            f"  WARNING: coverage is {_pct(f.coverage, 2)}, below 99%: {f.no_data} minutes were",
            "  not observed. The SLA formula does not count them as failures; check the prober's",
            "  uptime and network before relying on this month's figure.",
        ]
    lines += ["", f"Incidents ({len(report.incidents)}):"]
    if not report.incidents:
        lines.append("  none")
    for n, incident in enumerate(report.incidents):
        start = sla.minute_start(incident.start_minute).astimezone(month.start.tzinfo)
        end = sla.minute_start(incident.end_minute).astimezone(month.start.tzinfo)
        seen = _vantages_of(report, n)
        from_ = f"  seen from {', '.join(seen)}" if seen else ""
        lines.append(f"  {start:%Y-%m-%d %H:%M} – {end:%H:%M}  {incident.minutes:>5} min{from_}")
    lines += [
        "",
        f"Credit claim window: {report.claim.opens} to {report.claim.closes} "
        f"(through the provider's support tickets)",
    ]
    status = claim_status(report)
    if status is not None:
        lines.append(f"  {status}")
    return "\n".join(lines) + "\n"


def render_csv(report: Report) -> str:
    data = as_dict(report)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["key", "value"])
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                writer.writerow(cells([f"{key}.{sub}", item]))
        elif key == "incidents":
            for n, incident in enumerate(value):
                writer.writerow(
                    cells(
                        [
                            f"incident.{n}",
                            f"{incident['start']}/{incident['end']}/{incident['minutes']}",
                        ]
                    )
                )
        else:
            writer.writerow(cells([key, value]))
    return out.getvalue()


_HTML_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;max-width:46rem;margin:2rem auto;color:#222}"
    "h1{font-size:1.3rem}table{border-collapse:collapse;margin:.5rem 0 1.2rem}"
    "td,th{padding:.2rem .8rem;border-bottom:1px solid #ddd;text-align:left}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}"
    ".met{color:#166534}.missed{color:#b91c1c}.warn{background:#fef3c7;padding:.5rem}"
    "footer{color:#666;font-size:.85rem}"
)


def render_html(report: Report) -> str:
    """One self-contained page (no scripts, no external assets) to attach to a claim."""
    e = html.escape
    f = report.figures
    month = report.month
    span = f"{month.start:%Y-%m-%d %H:%M} – {month.end:%Y-%m-%d %H:%M} {report.timezone}"
    verdict_class = "met" if report.objective_met else "missed"
    rows = [
        ("minutes elapsed", f.total),
        ("available", f.available),
        ("apparent failure", f.apparent_failure),
        ("maintenance", f.maintenance),
        ("no data", f.no_data),
    ]
    figures = [
        ("SLA availability (1 − failed / elapsed)", _pct(f.sla_availability)),
        ("measured availability (available / observed)", _pct(f.measured_availability)),
        ("coverage (observed / outside maintenance)", _pct(f.coverage, 2)),
        ("objective", _pct(report.objective, 2)),
        (
            "credit",
            f"{_percent_number(report.credit_ratio)}%"
            + (
                f" = {report.credit_amount} {report.currency or ''}".rstrip()
                if report.credit_amount is not None
                else ""
            ),
        ),
    ]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>SLA report {e(report.target)} {month.start:%Y-%m-%d}</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        f"<h1>im-prober SLA report — target {e(report.target)}</h1>",
        f"<p>Service month {e(span)}{e(report.progress)}</p>",
        f'<p class="{verdict_class}"><strong>{e(headline(report))}</strong></p>',
        "<table><tr><th>minutes</th><th></th></tr>",
        *(f'<tr><td>{e(k)}</td><td class="n">{v}</td></tr>' for k, v in rows),
        "</table><table>",
        *(f'<tr><td>{e(k)}</td><td class="n">{e(v)}</td></tr>' for k, v in figures),
        "</table>",
    ]
    if report.low_coverage:
        parts.append(
            f'<p class="warn">Coverage is {e(_pct(f.coverage, 2))}, below 99%: {f.no_data} '
            "minutes were not observed. The SLA formula does not count them as failures.</p>"
        )
    parts.append(f"<h2>Incidents ({len(report.incidents)})</h2>")
    if report.incidents:
        parts.append("<table><tr><th>start</th><th>end</th><th>minutes</th></tr>")
        for incident in report.incidents:
            parts.append(
                f"<tr><td>{e(_local(incident.start_minute, report))}</td>"
                f"<td>{e(_local(incident.end_minute, report))}</td>"
                f'<td class="n">{incident.minutes}</td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append("<p>none</p>")
    status = claim_status(report)
    parts += [
        "<h2>Credit claim window</h2>",
        f"<p>{report.claim.opens} to {report.claim.closes} (through the provider's support "
        f"tickets){'; ' + e(status) if status else ''}</p>",
        f"<footer>Computed {e(report.as_of.isoformat())} from the im-prober ledger.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "csv": render_csv, "html": render_html}
