"""`probe-once`: one attempt of every probe, now, printed as a table — what an operator runs
while setting a target up."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

from ..adapters import Adapter, ProbeContext, Result
from ..config.models import TargetBase
from ..sla import Outcome
from .attempt import run_attempt
from .targets import build_adapter


@dataclass(frozen=True)
class Row:
    target: str
    probe: str
    result: Result
    duration: float


async def _one(adapter: Adapter, target: str, probe: str, timeout: float) -> Row:
    context = ProbeContext(target, probe, timeout, time.time(), uuid.uuid4().hex[:16])
    attempt = await run_attempt(adapter, context)
    result = Result(
        attempt.outcome,
        attempt.error_kind,
        attempt.error_code,
        attempt.http_status,
        attempt.detail,
        attempt.tls_not_after,
    )
    return Row(target, probe, result, attempt.duration)


async def _target(target: TargetBase) -> list[Row]:
    adapter = build_adapter(target)
    try:
        return [
            await _one(adapter, target.name, name, probe.timeout)
            for name, probe in target.probes.items()
        ]
    finally:
        await adapter.aclose()


async def probe_all(targets: list[TargetBase]) -> list[Row]:
    results = await asyncio.gather(*(_target(t) for t in targets))
    return [row for rows in results for row in rows]


def render(rows: list[Row]) -> str:
    header = ("TARGET", "PROBE", "OUTCOME", "MS", "ERROR", "HTTP", "DETAIL")
    table = [header] + [
        (
            r.target,
            r.probe,
            str(r.result.outcome),
            f"{r.duration * 1000:.0f}",
            r.result.error_kind + (f" {r.result.error_code}" if r.result.error_code else ""),
            str(r.result.http_status or ""),
            r.result.detail,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def all_succeeded(rows: list[Row]) -> bool:
    return all(r.result.outcome is Outcome.SUCCESS for r in rows)
