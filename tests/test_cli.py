"""The report, evidence and ledger commands end to end on a real ledger file."""

from __future__ import annotations

import csv
import gzip
import io
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from prober.ledger.store import Ledger
from prober.records import Attempt, ClosedMinute
from prober.sla import Outcome, OutcomeCounts, State, Verdict, epoch_minute

from .cli_util import digest, on_demo, run
from .conftest import BASE_TARGET

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI = ZoneInfo("Asia/Shanghai")


def minute(text: str) -> int:
    return epoch_minute(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI))


@pytest.fixture
def april_ledger(demo_config: Path) -> Path:
    """Service month [2026-04-17, 2026-05-17) Shanghai: 30 days, 43,200 minutes, with
    433 failed minutes (just below 99%), 60 maintenance minutes and 100 unobserved ones."""
    ledger = Ledger(demo_config.parent / "ledger.sqlite3")
    start = minute("2026-04-17T00:00")
    outage = range(minute("2026-04-20T10:00"), minute("2026-04-20T10:00") + 400)
    blip = range(minute("2026-05-01T08:00"), minute("2026-05-01T08:33"))
    maintenance = range(minute("2026-05-03T02:00"), minute("2026-05-03T03:00"))
    down = range(minute("2026-05-10T00:00"), minute("2026-05-10T01:40"))
    items = []
    for m in range(start, start + 43_200):
        if m in down:
            continue
        if m in outage or m in blip:
            attempt = Attempt(
                "demo",
                "send_c2c",
                m * 60 + 3,
                10.0,
                Outcome.FAILURE,
                "timeout",
                None,
                None,
                "no answer within 10s",
            )
            items.append(
                ClosedMinute(
                    "demo",
                    m,
                    Verdict(State.APPARENT_FAILURE),
                    OutcomeCounts(failure=1),
                    {},
                    [attempt],
                )
            )
        elif m in maintenance:
            items.append(ClosedMinute("demo", m, Verdict(State.MAINTENANCE), OutcomeCounts()))
        else:
            items.append(ClosedMinute("demo", m, Verdict(State.AVAILABLE), OutcomeCounts(1)))
    ledger.write_minutes(items)
    ledger.record_gap("demo", [], down.start, down.stop)
    ledger.close()
    return demo_config


def test_report_json_contract(april_ledger: Path, capsys) -> None:
    code, out, err = on_demo(
        capsys,
        april_ledger,
        "report",
        "--month",
        "2026-04",
        "--format",
        "json",
        "--now",
        "2026-06-10T00:00:00+08:00",
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["target"] == "demo"
    assert report["service_month"] == {
        "start": "2026-04-17T00:00:00+08:00",
        "end": "2026-05-17T00:00:00+08:00",
    }
    assert report["minutes"] == {
        "total": 43_200,
        "available": 42_607,
        "apparent_failure": 433,
        "maintenance": 60,
        "no_data": 100,
    }
    assert report["sla_availability_exact"] == "42767/43200"  # 1 - 433/43200
    assert report["sla_availability"] == pytest.approx(1 - 433 / 43_200)
    assert report["measured_availability"] == pytest.approx(42_607 / 43_040)
    assert report["coverage"] == pytest.approx(43_040 / 43_140)
    assert report["objective"] == 0.99 and report["objective_met"] is False
    assert report["credit_percent"] == 10
    assert report["credit_amount"] == "120.00" and report["currency"] == "USD"
    assert report["claim_window"] == {"opens": "2026-06-06", "closes": "2026-07-15"}
    assert report["incidents"] == [
        {
            "start": "2026-04-20T10:00:00+08:00",
            "end": "2026-04-20T16:40:00+08:00",
            "minutes": 400,
            "vantages": [],  # attempts of this generated month carry no vantage
        },
        {
            "start": "2026-05-01T08:00:00+08:00",
            "end": "2026-05-01T08:33:00+08:00",
            "minutes": 33,
            "vantages": [],
        },
    ]


def test_report_month_in_progress_counts_elapsed_minutes(april_ledger: Path, capsys) -> None:
    code, out, _ = on_demo(
        capsys,
        april_ledger,
        "report",
        "--format",
        "json",
        "--now",
        "2026-04-20T10:10:30+08:00",
    )
    report = json.loads(out)
    assert code == 0
    assert report["service_month"]["start"] == "2026-04-17T00:00:00+08:00"
    assert report["minutes"]["total"] == 3 * 1440 + 10 * 60 + 10
    assert report["minutes"]["apparent_failure"] == 10
    assert report["complete"] is False


def test_text_report_reads_first_and_warns_on_low_coverage(april_ledger: Path, capsys) -> None:
    code, out, _ = on_demo(
        capsys,
        april_ledger,
        "report",
        "--month",
        "2026-04",
        "--now",
        "2026-06-10T00:00:00Z",
    )
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[3] == "MISSED: SLA availability 98.9977% < objective 99.00% → 10% credit = 120.00 USD"
    )
    assert "WARNING" not in out  # coverage 99.77%
    assert "the window is OPEN: file by 2026-07-15" in out
    # a month with most minutes unobserved warns loudly
    code, out, _ = on_demo(
        capsys,
        april_ledger,
        "report",
        "--month",
        "2026-05",
        "--now",
        "2026-05-18T00:00:00+08:00",
    )
    assert code == 0 and "WARNING: coverage is 0.00%, below 99%" in out


def test_report_csv(april_ledger: Path, capsys) -> None:
    code, out, _ = on_demo(
        capsys,
        april_ledger,
        "report",
        "--month",
        "2026-04",
        "--format",
        "csv",
        "--now",
        "2026-06-10T00:00:00Z",
    )
    rows = dict(csv.reader(io.StringIO(out)))
    assert code == 0
    assert rows["minutes.apparent_failure"] == "433"
    assert rows["credit_percent"] == "10"
    assert rows["claim_window.opens"] == "2026-06-06"


def test_report_html_is_one_self_contained_page(april_ledger: Path, capsys) -> None:
    code, out, _ = on_demo(
        capsys,
        april_ledger,
        "report",
        "--month",
        "2026-04",
        "--format",
        "html",
        "--now",
        "2026-06-10T00:00:00Z",
    )
    assert code == 0
    assert out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>")
    assert "<script" not in out and "http://" not in out and "https://" not in out
    assert 'class="missed"' in out and "MISSED" in out
    assert '<td class="n">433</td>' in out  # apparent-failure minutes, as in the CSV
    assert "the window is OPEN: file by 2026-07-15" in out
    assert "&lt; objective" in out  # text is escaped


def test_evidence_pack_has_every_failed_minute_and_checksums(april_ledger: Path, capsys, tmp_path):
    out_dir = tmp_path / "evidence"
    code, _, err = on_demo(
        capsys,
        april_ledger,
        "evidence",
        "--month",
        "2026-04",
        "--out",
        str(out_dir),
        "--now",
        "2026-06-10T00:00:00Z",
    )
    assert (code, err) == (0, "")
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["failed_minutes"] == 433
    assert summary["failed_minutes_without_attempts"] == 0
    assert len(summary["config_sha256"]) == 64
    for name, expected in summary["files"].items():
        assert digest(out_dir / name) == expected
    evidence = json.loads((out_dir / "failed_minutes.json").read_text())
    assert len(evidence["minutes"]) == 433
    first = evidence["minutes"][0]
    assert first["minute"] == "2026-04-20T02:00:00Z"
    assert first["attempts"][0]["outcome"] == "failure"
    assert first["attempts"][0]["started_at"] == "2026-04-20T02:00:03.000Z"
    with (out_dir / "attempts.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 433
    sums = (out_dir / "SHA256SUMS").read_text().splitlines()
    assert len(sums) == len(summary["files"]) + 1


def test_export_import_round_trip(april_ledger: Path, capsys, write_config, tmp_path) -> None:
    code, exported, _ = on_demo(
        capsys,
        april_ledger,
        "ledger",
        "export",
        "--since",
        "2026-04-20T09:58:00+08:00",
        "--until",
        "2026-04-20T02:03:00Z",
    )
    assert code == 0
    assert exported.splitlines() == [
        "target,probe,minute,state,reason",
        "demo,,2026-04-20T01:58:00Z,available,",
        "demo,,2026-04-20T01:59:00Z,available,",
        "demo,,2026-04-20T02:00:00Z,apparent_failure,",
        "demo,,2026-04-20T02:01:00Z,apparent_failure,",
        "demo,,2026-04-20T02:02:00Z,apparent_failure,",
    ]
    code, everything, _ = run(capsys, "ledger", "export", "-c", str(april_ledger))
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = other_dir / "config.yaml"
    other.write_text("ledger: {path: copy.sqlite3}\ntargets:\n" + BASE_TARGET)
    csv_path = tmp_path / "all.csv.gz"
    csv_path.write_bytes(gzip.compress(everything.encode()))
    code, out, err = run(capsys, "ledger", "import", "-c", str(other), str(csv_path))
    assert (code, err) == (0, "")
    assert "43200 minute rows added" in out
    code, again, _ = run(capsys, "ledger", "export", "-c", str(other))
    assert again == everything
    code, out, _ = run(capsys, "ledger", "import", "-c", str(other), str(csv_path))
    assert "0 minute rows added, 43200 already present" in out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("target,probe,minute,state\n", ":1: the header must be target,probe,minute,state,reason"),
        ("target,probe,minute,state,reason\ndemo,,2026-04-17T00:00:00Z,up,\n", ":2: state 'up'"),
        (
            "target,probe,minute,state,reason\ndemo,,2026-04-17T00:00:30Z,available,\n",
            ":2: '2026-04-17T00:00:30Z' is not the start of a minute",
        ),
        (
            "target,probe,minute,state,reason\nghost,,2026-04-17T00:00:00Z,available,\n",
            ":2: target 'ghost' is not in the config",
        ),
        (
            "target,probe,minute,state,reason\ndemo,,2026-04-17T00:00:00,available,\n",
            "has no UTC offset",
        ),
        (
            "target,probe,minute,state,reason\ndemo,,2026-04-17T00:01:00Z,no_data,\n",
            "no_data needs a reason",
        ),
        (
            "target,probe,minute,state,reason\ndemo,,2026-04-16T16:00:00Z,apparent_failure,\n",
            "line 2: demo/- at 2026-04-16T16:00:00Z is apparent_failure in the file but available",
        ),
    ],
)
def test_bad_imports_change_nothing(april_ledger: Path, capsys, tmp_path, body, message) -> None:
    ledger_path = april_ledger.parent / "ledger.sqlite3"
    before = digest(ledger_path)
    bad = tmp_path / "bad.csv"
    good_rows = "".join(f"demo,,2026-03-{d:02d}T00:00:00Z,available,\n" for d in range(1, 20))
    bad.write_text(body if "header" in message else body + good_rows)
    code, out, err = run(capsys, "ledger", "import", "-c", str(april_ledger), str(bad))
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert digest(ledger_path) == before


def test_user_errors(demo_config: Path, capsys) -> None:
    code, _, err = run(
        capsys, "report", "-c", str(demo_config), "--target", "demo", "--month", "2026-04"
    )
    assert code == 2 and "no ledger here" in err
    code, _, err = run(
        capsys, "report", "-c", str(demo_config), "--target", "demo", "--month", "2026-4"
    )
    assert code == 2 and "expected YYYY-MM" in err
    code, _, err = run(
        capsys, "report", "-c", str(demo_config), "--target", "demo", "--month", "2025-12"
    )
    assert code == 2 and "before the service month anchor 2026-03-17" in err
    code, _, err = run(capsys, "report", "-c", str(demo_config), "--target", "nope")
    assert code == 2 and "no target named 'nope'" in err
    code, _, err = run(capsys, "report", "-c", str(demo_config))
    assert code == 2 and "--target" in err


def test_not_a_ledger_via_cli(write_config, capsys) -> None:
    path = write_config("ledger: {path: notes.txt}\ntargets:\n" + BASE_TARGET)
    (path.parent / "notes.txt").write_text("not a database at all, just some text\n")
    code, _, err = run(capsys, "report", "-c", str(path), "--target", "demo", "--month", "2026-04")
    assert code == 2 and "not an im-prober ledger" in err


def test_console_entry_points(demo_config: Path) -> None:
    for command in ([sys.executable, "-m", "prober", "--version"],):
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
        assert done.returncode == 0 and done.stdout.startswith("im-prober ")
    done = subprocess.run(
        [sys.executable, "-m", "prober", "report", "-c", str(demo_config), "--target", "demo"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_gap_rows_show_as_no_data(april_ledger: Path, capsys) -> None:
    _, out, _ = run(
        capsys,
        "ledger",
        "export",
        "-c",
        str(april_ledger),
        "--since",
        "2026-05-10T00:00:00+08:00",
        "--until",
        "2026-05-10T00:01:00+08:00",
    )
    assert out.splitlines()[1] == "demo,,2026-05-09T16:00:00Z,no_data,prober_down"
