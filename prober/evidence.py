"""The evidence pack of a service month: every failed minute with the attempts behind it,
plus a summary with checksums, ready to attach to a credit claim."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, sla
from .attempts import Attempt
from .errors import UserError
from .ledger import Ledger
from .report import Report, as_dict, render_html, render_text
from .secrets import redact
from .sla import State, minute_iso

ATTEMPT_FIELDS = [
    "minute",
    "probe",
    "started_at",
    "duration_ms",
    "outcome",
    "error_kind",
    "error_code",
    "http_status",
    "detail",
]


def _iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _attempt_record(attempt: Attempt) -> dict[str, Any]:
    return {
        "minute": minute_iso(attempt.minute),
        "probe": attempt.probe,
        "started_at": _iso(attempt.started_at),
        "duration_ms": round(attempt.duration * 1000, 1),
        "outcome": str(attempt.outcome),
        "error_kind": attempt.error_kind,
        "error_code": attempt.error_code,
        "http_status": attempt.http_status,
        "detail": redact(attempt.detail),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_evidence(
    ledger: Ledger, report: Report, out_dir: Path, *, config_digest: str
) -> dict[str, str]:
    """Write the pack into `out_dir`; returns file name → SHA-256."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{out_dir}: cannot create the evidence folder: {exc.strerror or exc}"
        ) from None
    month = report.month
    end = month.start_minute + report.figures.total
    failed = ledger.minutes_in_state(report.target, State.APPARENT_FAILURE, month.start_minute, end)
    failed_set = set(failed)
    by_minute: dict[int, list[Attempt]] = defaultdict(list)
    for attempt in ledger.attempts_in(report.target, month.start_minute, end):
        if attempt.minute in failed_set:
            by_minute[attempt.minute].append(attempt)

    minutes = [
        {
            "minute": minute_iso(m),
            "local_minute": sla.minute_start(m).astimezone(month.start.tzinfo).isoformat(),
            "state": str(State.APPARENT_FAILURE),
            "attempts": [_attempt_record(a) for a in by_minute.get(m, [])],
        }
        for m in failed
    ]
    files: dict[str, str] = {}

    def put(name: str, text: str) -> None:
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        files[name] = _sha256(path)

    put(
        "failed_minutes.json",
        json.dumps({"target": report.target, "minutes": minutes}, indent=2) + "\n",
    )
    with (out_dir / "failed_minutes.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["minute", "local_minute", "attempts", "failures"])
        for item in minutes:
            attempts = item["attempts"]
            writer.writerow(
                [
                    item["minute"],
                    item["local_minute"],
                    len(attempts),
                    sum(1 for a in attempts if a["outcome"] == "failure"),
                ]
            )
    files["failed_minutes.csv"] = _sha256(out_dir / "failed_minutes.csv")
    with (out_dir / "attempts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ATTEMPT_FIELDS, lineterminator="\n")
        writer.writeheader()
        for item in minutes:
            for attempt in item["attempts"]:
                writer.writerow({k: "" if v is None else v for k, v in attempt.items()})
    files["attempts.csv"] = _sha256(out_dir / "attempts.csv")
    put("report.txt", render_text(report))
    put("report.json", json.dumps(as_dict(report), indent=2) + "\n")
    put("report.html", render_html(report))

    missing = sum(1 for m in failed if not by_minute.get(m))
    summary = {
        "target": report.target,
        "service_month": {"start": month.start.isoformat(), "end": month.end.isoformat()},
        "failed_minutes": len(failed),
        "failed_minutes_without_attempts": missing,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "prober_version": __version__,
        "config_sha256": config_digest,
        "files": dict(sorted(files.items())),
    }
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    lines = [f"{digest}  {name}" for name, digest in sorted(files.items())]
    lines.append(f"{_sha256(summary_path)}  summary.json")
    (out_dir / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {**files, "summary.json": _sha256(summary_path)}
