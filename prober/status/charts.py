"""Inline SVG charts, drawn on the server: no chart library, no script, and they render
(and print) with JavaScript off. Every text that goes into the SVG is escaped here; the
result is marked safe for the templates. Each chart has a <title> per mark for the pointer
and an aria-label for screen readers; the pages put a table beside each one.

State is carried by the height of a mark as well as its colour (failed full height,
maintenance 80%, available 55%, no data 35%), so the strips read without colour too."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from markupsafe import Markup, escape

NAMES = {
    "a": "available",
    "f": "failed",
    "m": "maintenance",
    "n": "no data",
    "-": "no data (no row)",
}
HEIGHT = {"f": 1.0, "m": 0.8, "a": 0.55, "n": 0.35, "-": 0.2}


def runs(states: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, letter) of each run of equal letters."""
    start = 0
    for i in range(1, len(states) + 1):
        if i == len(states) or states[i] != states[start]:
            yield start, i, states[start]
            start = i


def _clock(minute: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).astimezone(tz).strftime("%H:%M")


def _span(first: int, last: int, tz: tzinfo) -> str:
    if first == last:
        return _clock(first, tz)
    return f"{_clock(first, tz)}–{_clock(last, tz)}"


def _minutes(n: int) -> str:
    return "1 minute" if n == 1 else f"{n} minutes"


def strip(states: str, since: int, tz: tzinfo, label: str) -> Markup:
    """One row of minute cells (the overview's last 90 minutes, a probe's last 24 hours)."""
    n = len(states)
    height = 20
    gap = 0.18 if n <= 120 else 0.0
    parts = [
        f'<svg class="strip" viewBox="0 0 {n} {height}" preserveAspectRatio="none" '
        f'role="img" aria-label="{escape(label)}">'
    ]
    for start, end, letter in runs(states):
        h = HEIGHT[letter] * height
        title = (
            f"{_span(since + start, since + end - 1, tz)} {NAMES[letter]} ({_minutes(end - start)})"
        )
        parts.append(
            f'<g class="s-{"e" if letter == "-" else letter}"><title>{escape(title)}</title>'
        )
        if gap:
            parts.extend(
                f'<rect x="{x + gap / 2:.2f}" y="{height - h:.1f}" width="{1 - gap:.2f}" '
                f'height="{h:.1f}"/>'
                for x in range(start, end)
            )
        else:
            parts.append(
                f'<rect x="{start}" y="{height - h:.1f}" width="{end - start}" height="{h:.1f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def day_grid(states: str, since: int, tz: tzinfo, label: str) -> Markup:
    """The last 24 hours minute by minute: a row per clock hour, a column per minute."""
    cell, gap, left, top = 12, 2, 46, 14
    first_hour = since // 60
    last_hour = (since + len(states) - 1) // 60
    rows = last_hour - first_hour + 1
    width = left + 60 * cell
    height = top + rows * cell
    parts = [
        f'<svg class="grid" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    ]
    for col in range(0, 60, 15):
        parts.append(f'<text class="axis" x="{left + col * cell}" y="10">:{col:02d}</text>')
    for r in range(rows):
        hour = first_hour + r
        y = top + r * cell
        parts.append(
            f'<text class="axis" x="0" y="{y + cell - 3}">{escape(_clock(hour * 60, tz))}</text>'
        )
        lo = max(0, hour * 60 - since)
        hi = min(len(states), (hour + 1) * 60 - since)
        for start, end, letter in runs(states[lo:hi]):
            a, b = since + lo + start, since + lo + end
            x = left + (a % 60) * cell
            title = f"{_span(a, b - 1, tz)} {NAMES[letter]} ({_minutes(b - a)})"
            parts.append(
                f'<rect class="s-{"e" if letter == "-" else letter}" x="{x}" y="{y}" '
                f'width="{(b - a) * cell - gap}" height="{cell - gap}">'
                f"<title>{escape(title)}</title></rect>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def month_bars(days: Sequence[dict[str, Any]], label: str) -> Markup:
    """The service month day by day: each day's failed, no-data and maintenance minutes as a
    stacked bar (a day without any is a short green mark), and a square for its worst state."""
    n = len(days)
    slot, bar, chart_h, top = 24, 16, 110, 8
    width = n * slot
    height = top + chart_h + 34
    peak = max([60, *(d["apparent_failure"] + d["no_data"] + d["maintenance"] for d in days)])
    scale = chart_h / peak
    parts = [
        f'<svg class="bars" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
    ]
    base = top + chart_h
    for i, day in enumerate(days):
        x = i * slot + (slot - bar) / 2
        date = day["date"]
        if not day["elapsed"]:
            parts.append(
                f'<rect class="future" x="{x}" y="{base - 6}" width="{bar}" height="6">'
                f"<title>{escape(date)}: not yet</title></rect>"
            )
        else:
            availability = day["sla_availability"]
            title = (
                f"{date}: {day['apparent_failure']} failed, {day['no_data']} no data, "
                f"{day['maintenance']} maintenance, {day['available']} available of "
                f"{day['elapsed']} minutes; SLA availability {availability * 100:.3f}%"
            )
            parts.append(f"<g><title>{escape(title)}</title>")
            parts.append(
                f'<rect class="hit" x="{i * slot}" y="{top}" width="{slot}" height="{chart_h}"/>'
            )
            y = base
            stack = (
                ("f", day["apparent_failure"]),
                ("n", day["no_data"]),
                ("m", day["maintenance"]),
            )
            drawn = False
            for letter, minutes in stack:
                if not minutes:
                    continue
                h = max(3.0, minutes * scale)
                y -= h
                parts.append(
                    f'<rect class="s-{letter}" x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}"/>'
                )
                drawn = True
            if not drawn:
                parts.append(f'<rect class="s-a" x="{x}" y="{base - 4}" width="{bar}" height="4"/>')
            worst = next((letter for letter, m in stack if m), "a")
            parts.append(
                f'<rect class="s-{worst}" x="{x}" y="{base + 6}" width="{bar}" height="8" rx="2"/>'
            )
            parts.append("</g>")
        day_of_month = int(date[8:10])
        if n <= 16 or day_of_month % 2 == 1 or i == 0:
            parts.append(
                f'<text class="axis" x="{i * slot + slot / 2}" y="{base + 28}" '
                f'text-anchor="middle">{day_of_month}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exponent:
            return step * exponent
    return 10 * exponent


def latency_chart(series: Sequence[dict[str, Any]], tz: tzinfo, label: str) -> Markup:
    """A probe's hourly p50 (line) and p95 (band to the p50) over 7 days."""
    n = len(series)
    step, left, top, chart_h = 4, 44, 8, 100
    width = left + n * step
    height = top + chart_h + 20
    peak = _nice_ceiling(max([1.0, *(s["p95_ms"] or 0 for s in series)]))

    def y(ms: float) -> float:
        return top + chart_h - ms / peak * chart_h

    parts = [
        f'<svg class="latency" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(label)}">'
    ]
    for fraction in (0, 0.5, 1):
        ms = peak * fraction
        parts.append(
            f'<line class="rule" x1="{left}" x2="{width}" y1="{y(ms):.1f}" y2="{y(ms):.1f}"/>'
            f'<text class="axis" x="{left - 4}" y="{y(ms) + 3:.1f}" text-anchor="end">'
            f"{_ms(ms)}</text>"
        )
    # contiguous runs of hours with attempts: one band and one line each
    segment: list[tuple[float, float, float]] = []
    segments = []
    for i, s in enumerate(series):
        if s["p50_ms"] is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append((left + i * step + step / 2, y(s["p50_ms"]), y(s["p95_ms"])))
    if segment:
        segments.append(segment)
    for seg in segments:
        upper = " ".join(f"{x:.1f},{p95:.1f}" for x, _p50, p95 in seg)
        lower = " ".join(f"{x:.1f},{p50:.1f}" for x, p50, _p95 in reversed(seg))
        parts.append(f'<polygon class="p95" points="{upper} {lower}"/>')
        if len(seg) == 1:
            x, p50, _ = seg[0]
            parts.append(f'<circle class="p50dot" cx="{x:.1f}" cy="{p50:.1f}" r="1.5"/>')
        else:
            line = " ".join(f"{x:.1f},{p50:.1f}" for x, p50, _p95 in seg)
            parts.append(f'<polyline class="p50" points="{line}"/>')
    for i, s in enumerate(series):
        hour = datetime.fromisoformat(s["hour"].replace("Z", "+00:00")).astimezone(tz)
        if hour.hour == 0:
            x = left + i * step
            parts.append(
                f'<line class="rule day" x1="{x}" x2="{x}" y1="{top}" y2="{top + chart_h}"/>'
                f'<text class="axis" x="{x + 2}" y="{height - 6}">{hour:%a %d}</text>'
            )
        if s["p50_ms"] is not None:
            title = (
                f"{hour:%a %d %H}:00 — p50 {_ms(s['p50_ms'])}, p95 {_ms(s['p95_ms'])}, "
                f"{s['attempts']} attempts"
            )
            parts.append(
                f'<rect class="hit" x="{left + i * step}" y="{top}" width="{step}" '
                f'height="{chart_h}"><title>{escape(title)}</title></rect>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _ms(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.3g} s"
    return f"{value:.3g} ms"


# Small icons beside each state's word: the state reads without colour, and in high contrast.
_ICONS = {
    "available": '<polyline points="3,8.5 6.5,12 13,4.5"/>',
    "apparent_failure": (
        '<line x1="4" y1="4" x2="12" y2="12"/><line x1="12" y1="4" x2="4" y2="12"/>'
    ),
    "maintenance": '<line x1="6" y1="4" x2="6" y2="12"/><line x1="10" y1="4" x2="10" y2="12"/>',
    "no_data": '<circle cx="8" cy="8" r="4.5"/><line x1="5" y1="11" x2="11" y2="5"/>',
}


def state_icon(state: str) -> Markup:
    shape = _ICONS.get(state, _ICONS["no_data"])
    return Markup(
        f'<svg class="icon" viewBox="0 0 16 16" aria-hidden="true" focusable="false">{shape}</svg>'
    )
