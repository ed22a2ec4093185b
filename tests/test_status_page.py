"""The status page without a browser: its routes served by a real aiohttp server on
127.0.0.1, over a real ledger holding a generated month (tests/status_util.py). The
browser runs against the real daemon in test_status_page_browser.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import time
import zipfile
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web

from prober.config.models import load_config
from prober.expose.web import make_app
from prober.expose.webconfig import WebConfigFile, WebSecurity
from prober.ledger.store import Ledger
from prober.ledger.view import LedgerView
from prober.logs import LOGGER_NAME
from prober.reports.report import report_from_counts
from prober.sla import State, minute_iso
from prober.status.model import claim_state
from prober.status.views import StatusPage

from .cli_util import run
from .status_util import HOSTILE_DETAIL, TIMEZONE, History, write_history

PROBES = ("login", "send_c2c")


def config_text(anchor: date, *, public: bool = False) -> str:
    return f"""\
ledger: {{path: ledger.sqlite3}}
status_page: {{public: {str(public).lower()}}}
targets:
  - name: chat
    kind: external
    external: {{command: ["true"]}}
    probes: {{login: {{timeout: 2s}}, send_c2c: {{timeout: 2s}}}}
    sla: {{service_month_anchor: {anchor}, timezone: {TIMEZONE}, monthly_fee: "1200.00", currency: USD}}
"""


@pytest.fixture(scope="module")
def month(tmp_path_factory) -> tuple[Path, History, float]:
    folder = tmp_path_factory.mktemp("status")
    now = time.time()
    history = write_history(folder / "ledger.sqlite3", "chat", PROBES, now)
    (folder / "config.yaml").write_text(config_text(history.anchor))
    (folder / "public.yaml").write_text(config_text(history.anchor, public=True))
    return folder, history, now


Call = Callable[..., Awaitable[tuple[int, dict[str, str], bytes]]]


def serve(
    config: Path, now: float, scenario: Callable[[Call], Awaitable[Any]], users: dict | None = None
) -> Any:
    """Run `scenario(get)` against the daemon's own web app with the status page mounted,
    on a real socket; `get(path, auth=None)` returns (status, headers, body)."""
    config_file = load_config(config)

    async def main() -> Any:
        view = LedgerView()
        with Ledger(config_file.ledger_path, readonly=True) as ledger:
            calendars = {t.name: t.sla.calendar() for t in config_file.config.targets}
            view.restore(ledger, calendars, now)
        page = StatusPage(view, lambda: config_file, network_up=lambda: None, version="test")
        security = WebSecurity(None, WebConfigFile(basic_auth_users=users or {}))
        app = make_app(lambda _om: b"", lambda: (True, "ok"), None, lambda: security, page.routes())
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as session:

            async def get(path: str, auth: str | None = None):
                headers = {"Authorization": auth} if auth else {}
                async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                    return r.status, dict(r.headers), await r.read()

            try:
                return await scenario(get)
            finally:
                await page.close()
                await runner.cleanup()

    return asyncio.run(main())


def fetch(config: Path, now: float, *paths: str) -> list[tuple[int, dict[str, str], bytes]]:
    async def scenario(get: Call):
        return [await get(p) for p in paths]

    return serve(config, now, scenario)


def cli_report(capsys, config: Path, *args: str) -> dict:
    code, out, err = run(capsys, "report", "-c", str(config), "--target", "chat", *args)
    assert code == 0, err
    return json.loads(out)


def test_the_overview_figures_are_the_reports_for_the_same_instant(month, capsys) -> None:
    folder, history, now = month
    [(status, _, body)] = fetch(folder / "config.yaml", now, "/api/v1/targets")
    assert status == 200
    chat = json.loads(body)["targets"][0]
    assert chat["as_of"] == minute_iso(history.end_minute)
    report = cli_report(capsys, folder / "config.yaml", "--format", "json", "--now", chat["as_of"])
    report.pop("incidents")
    figures = {k: v for k, v in chat["month"].items() if k in report}
    assert figures == report
    assert report["minutes"]["apparent_failure"] == len(
        [m for m in history.failed if m >= chat_month_start(report)]
    )
    allowed = chat["month"]["downtime_allowed_minutes"]
    assert (
        chat["month"]["downtime_budget_minutes"] == allowed - report["minutes"]["apparent_failure"]
    )
    assert chat["state"] == "available"
    assert len(chat["recent"]["states"]) == 90


def chat_month_start(report: dict) -> int:
    return int(datetime.fromisoformat(report["service_month"]["start"]).timestamp()) // 60


def test_the_target_page_figures_are_the_reports_and_the_days_add_up(month, capsys) -> None:
    folder, history, now = month
    [(status, _, body)] = fetch(folder / "config.yaml", now, "/api/v1/targets/chat")
    assert status == 200
    page = json.loads(body)
    report = cli_report(capsys, folder / "config.yaml", "--format", "json", "--now", page["as_of"])
    incidents = report.pop("incidents")
    assert {k: v for k, v in page["month"].items() if k in report} == report
    assert page["incident_count"] == len(incidents)
    newest = page["incidents"][0]
    assert (newest["start"], newest["minutes"]) == (incidents[-1]["start"], 12)
    assert newest["probes"] == list(PROBES)
    assert newest["error_kinds"] == {"login": {"http_5xx": 12}, "send_c2c": {"timeout": 12}}
    days = [d for d in page["days"] if d["elapsed"]]
    for key in ("available", "apparent_failure", "maintenance", "no_data"):
        assert sum(d[key] for d in days) == report["minutes"][key], key
    assert sum(d["elapsed"] for d in days) == report["minutes"]["total"]
    gap_day = next(d for d in days if d["no_data"] >= len(history.gap))
    assert gap_day["start"] <= minute_iso(history.gap.start)


def test_the_24_hours_have_the_failed_minutes_where_the_ledger_has_them(month) -> None:
    folder, history, now = month
    [(_, _, body)] = fetch(folder / "config.yaml", now, "/api/v1/targets/chat")
    day = json.loads(body)["last_24h"]
    since = history.end_minute - 1440
    assert day["since"] == minute_iso(since)
    failed = {since + i for i, letter in enumerate(day["states"]) if letter == "f"}
    assert failed == {m for m in history.failed if m >= since}
    # the outage 3 hours ago is among them (the history's random blips may fall in the last
    # 24 hours too when the service month began less than a day ago)
    assert set(history.recent_outage) <= failed
    for probe in PROBES:
        assert {since + i for i, c in enumerate(day["probes"][probe]) if c == "f"} == failed


def test_the_claim_window_says_open_closes_in_or_closed(month) -> None:
    folder, _history, _now = month
    target = load_config(folder / "config.yaml").config.target("chat")
    calendar = target.sla.calendar()
    june = calendar.month(0)
    failed = {State.APPARENT_FAILURE: 1000, State.AVAILABLE: june.minutes - 1000}
    ended = datetime.fromtimestamp(june.end_minute * 60 + 60, UTC)
    report = report_from_counts(target, june, ended, failed, ())
    opens, closes = report.claim.opens, report.claim.closes
    assert claim_state(report, opens - timedelta(days=3))["text"] == f"opens {opens} (in 3 days)"
    assert (
        claim_state(report, opens)["text"]
        == f"open: closes in {(closes - opens).days} days ({closes})"
    )
    assert (
        claim_state(report, closes - timedelta(days=1))["text"]
        == f"open: closes in 1 day ({closes})"
    )
    assert claim_state(report, closes)["text"] == f"open: closes today ({closes})"
    assert claim_state(report, closes + timedelta(days=1))["text"] == f"closed on {closes}"
    met = report_from_counts(target, june, ended, {State.AVAILABLE: june.minutes}, ())
    assert claim_state(met, opens)["status"] == "not_needed"
    ten_minutes_in = datetime.fromtimestamp(june.start_minute * 60 + 600, UTC)
    running = report_from_counts(target, june, ten_minutes_in, {State.APPARENT_FAILURE: 10}, ())
    assert claim_state(running, opens)["status"] == "in_progress"


def test_a_hostile_detail_is_escaped_wherever_it_is_shown(month) -> None:
    folder, history, now = month
    minute = minute_iso(history.recent_outage.start)
    [(status, headers, body), (api_status, _, api)] = fetch(
        folder / "config.yaml",
        now,
        f"/targets/chat/minutes/{minute}",
        f"/api/v1/targets/chat/minutes/{minute}",
    )
    assert status == api_status == 200
    text = body.decode()
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in text
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    details = [a["detail"] for a in json.loads(api)["attempts"]]
    assert HOSTILE_DETAIL in details


def test_public_mode_shows_figures_but_no_attempts_error_kinds_or_evidence(month) -> None:
    folder, history, now = month
    minute = minute_iso(history.recent_outage.start)
    answers = fetch(
        folder / "public.yaml",
        now,
        "/api/v1/targets/chat",
        "/targets/chat",
        f"/targets/chat/minutes/{minute}",
        f"/api/v1/targets/chat/minutes/{minute}",
        f"/targets/chat/evidence/{datetime.now(UTC):%Y-%m}.zip",
    )
    (api_status, _, api), (page_status, _, page) = answers[:2]
    assert api_status == page_status == 200
    data = json.loads(api)
    assert data["public"] is True and data["incidents"]
    assert all("error_kinds" not in i for i in data["incidents"])
    assert data["month"]["sla_availability"] is not None
    html = page.decode()
    assert "/minutes/" not in html and "evidence" not in html and "http_5xx" not in html
    assert [status for status, _, _ in answers[2:]] == [404, 404, 404]


def test_the_evidence_download_is_the_pack_with_sums_that_verify(month) -> None:
    folder, history, now = month
    previous = datetime.fromtimestamp(history.first_minute * 60, UTC).astimezone()
    label = f"{datetime.fromtimestamp(history.first_minute * 60 + 86400, UTC):%Y-%m}"
    [(status, headers, body)] = fetch(
        folder / "config.yaml", now, f"/targets/chat/evidence/{label}.zip"
    )
    assert status == 200, (previous, body[:200])
    assert headers["Content-Type"] == "application/zip"
    assert f'filename="evidence-chat-{label}.zip"' in headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(body)) as pack:
        names = pack.namelist()
        files = {n.split("/", 1)[1]: pack.read(n) for n in names}
    assert all(n.startswith(f"evidence-chat-{label}/") for n in names)
    sums = files.pop("SHA256SUMS").decode().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in sums)
    assert set(listed) == set(files)
    for name, digest in listed.items():
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    report = json.loads(files["report.json"])
    assert report["minutes"]["apparent_failure"] == len(history.previous_outage)
    assert report["objective_met"] is False


def test_bad_ranges_unknown_targets_and_months_get_one_clear_error(month) -> None:
    folder, _history, now = month
    answers = fetch(
        folder / "config.yaml",
        now,
        "/api/v1/targets/chat/minutes?since=yesterday",
        "/api/v1/targets/chat/minutes?since=2026-01-01T00:00:00Z&until=2026-03-01T00:00:00Z",
        "/api/v1/targets/chat/minutes?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "/api/v1/targets/nope",
        "/targets/nope",
        "/api/v1/targets/chat/report?month=2026-13",
        "/api/v1/targets/chat/report?month=1999-01",
        "/targets/chat/minutes/not-a-minute",
        "/static/../config.yaml",
    )
    statuses = [status for status, _, _ in answers]
    assert statuses == [400, 400, 400, 404, 404, 400, 404, 400, 404]
    errors = [json.loads(body)["error"] for _, _, body in answers[:8]]
    assert "is not an ISO-8601 time" in errors[0]
    assert "at most 10080 minutes" in errors[1]
    assert "until must be later than since" in errors[2]
    assert errors[3] == errors[4] == "no target named 'nope'"
    assert "expected YYYY-MM" in errors[5]
    assert "before the service month anchor" in errors[6]


def test_the_minutes_api_gives_each_minute_with_its_probes(month) -> None:
    folder, history, now = month
    start = history.recent_outage.start - 2
    since, until = minute_iso(start), minute_iso(start + 5)
    [(status, _, body)] = fetch(
        folder / "config.yaml", now, f"/api/v1/targets/chat/minutes?since={since}&until={until}"
    )
    assert status == 200
    rows = json.loads(body)["minutes"]
    assert [r["state"] for r in rows] == ["available"] * 2 + ["apparent_failure"] * 3
    assert rows[2]["probes"] == {"login": "apparent_failure", "send_c2c": "apparent_failure"}


def test_the_page_and_its_api_need_the_same_password_as_metrics(month) -> None:
    folder, _history, now = month
    users = {"ops": bcrypt.hashpw(b"wall-screen", bcrypt.gensalt(4)).decode()}
    good = "Basic " + base64.b64encode(b"ops:wall-screen").decode()
    bad = "Basic " + base64.b64encode(b"ops:guess").decode()
    paths = [
        "/",
        "/targets/chat",
        "/api/v1/targets",
        "/api/v1/targets/chat/report",
        "/static/status.css",
    ]

    async def scenario(get: Call):
        return (
            [(await get(p))[0] for p in paths],
            [(await get(p, bad))[0] for p in paths],
            [(await get(p, good))[0] for p in paths],
        )

    anonymous, wrong, right = serve(folder / "config.yaml", now, scenario, users)
    assert anonymous == wrong == [401] * len(paths)
    assert right == [200] * len(paths)


def test_the_report_downloads_are_the_reports_own_renderings(month, capsys) -> None:
    folder, history, now = month
    label = f"{datetime.fromtimestamp(history.first_minute * 60 + 86400, UTC):%Y-%m}"
    (json_status, _, as_json), (html_status, headers, as_html) = fetch(
        folder / "config.yaml",
        now,
        f"/targets/chat/report/{label}.json",
        f"/targets/chat/report/{label}.html",
    )
    assert json_status == html_status == 200
    code, out, _ = run(
        capsys,
        "report",
        "-c",
        str(folder / "config.yaml"),
        "--target",
        "chat",
        "--month",
        label,
        "--format",
        "json",
    )
    assert code == 0 and json.loads(as_json) == json.loads(out)
    assert (
        b"im-prober SLA report" in as_html
        and "script-src" not in headers["Content-Security-Policy"]
    )


def test_warming_up_reads_the_ended_months_and_whole_hours_before_anyone_asks(
    month, caplog: pytest.LogCaptureFixture
) -> None:
    """... and says when it is done (a benchmark's measured minutes wait for that line)."""
    caplog.set_level(logging.INFO, LOGGER_NAME)
    folder, _history, now = month
    config_file = load_config(folder / "config.yaml")

    async def main() -> tuple[int, int, int, int]:
        view = LedgerView()
        with Ledger(config_file.ledger_path, readonly=True) as ledger:
            calendars = {t.name: t.sla.calendar() for t in config_file.config.targets}
            view.restore(ledger, calendars, now)
        page = StatusPage(view, lambda: config_file, network_up=lambda: None, version="test")
        cold = (len(page._cache.months), page._cache.known_hours())
        await page.warm()
        warm = (len(page._cache.months), page._cache.known_hours())
        await page.close()
        return (*cold, *warm)

    cold_months, cold_hours, warm_months, warm_hours = asyncio.run(main())
    assert (cold_months, cold_hours) == (0, 0)
    assert warm_months >= 1  # the previous months' reports, kept
    assert warm_hours >= 24  # whole hours of attempt latency, kept for good
    [done] = [r for r in caplog.records if r.getMessage() == "status page caches warm"]
    assert done.fields["targets"] == len(config_file.config.targets) > 0


def test_a_warm_up_that_cannot_read_the_ledger_stops_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(date(2026, 1, 1)))  # no ledger.sqlite3 beside it
    config_file = load_config(config)

    async def main() -> None:
        page = StatusPage(LedgerView(), lambda: config_file, network_up=lambda: None, version="t")
        await page.warm()
        await page.close()

    asyncio.run(main())
    [stopped] = [r for r in caplog.records if r.getMessage().startswith("status page warm")]
    assert stopped.levelno == logging.WARNING and stopped.getMessage().endswith("stopped")
    assert "cannot be read" in stopped.fields["error"]


def test_with_a_signing_key_the_downloaded_pack_is_signed_and_verifies(month, capsys) -> None:
    """The page's pack is the command's: signed with the configured key, and `evidence
    verify` on the unpacked folder proves it with only the public key."""
    folder, history, now = month
    code, _out, err = run(capsys, "keygen", str(folder / "evidence.key"))
    assert code == 0, err
    signed = folder / "signed.yaml"
    signed.write_text(
        config_text(history.anchor) + "evidence: {signing_key: {file: evidence.key}}\n"
    )
    label = f"{datetime.fromtimestamp(history.first_minute * 60 + 86400, UTC):%Y-%m}"
    [(status, _headers, body)] = fetch(signed, now, f"/targets/chat/evidence/{label}.zip")
    assert status == 200, body[:200]
    unpacked = folder / "unpacked"
    with zipfile.ZipFile(io.BytesIO(body)) as pack:
        pack.extractall(unpacked)
    [pack_dir] = unpacked.iterdir()
    assert (pack_dir / "SHA256SUMS.sig").exists()
    code, out, err = run(
        capsys, "evidence", "verify", str(pack_dir), "--key", str(folder / "evidence.key.pub")
    )
    assert code == 0, out + err
    assert "BROKEN" not in out
    assert "signed by key SHA256:" in out and ", the key you trust" in out
