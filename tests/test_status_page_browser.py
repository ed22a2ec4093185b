"""The status page in a real browser (Debian's headless Chromium, tests/browser.py) against
the real daemon: a ledger holding a generated month (an outage, maintenance, a prober-down
gap; tests/status_util.py) plus the live minutes of a chat service and of a target whose
every answer is hostile HTML, behind basic auth. One daemon run serves every test here
(they run in file order, in one xdist group), about two to three minutes in all, most of
it waiting for the live outage (the second test)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import bcrypt
import pytest

from prober.sla import minute_iso

from .browser import DESKTOP, PHONE, SCREENSHOTS, chromium
from .chat_app import ChatServer, free_port
from .daemon_util import (
    Daemon,
    chat_target,
    cli,
    exported_minutes,
    follow_timeline,
    next_minute,
    safe_name,
)
from .status_util import TIMEZONE, write_history

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("e2e-status")]

TIMEOUT = 2.0
REFRESH = 5
USER, PASSWORD = "wall", "screen-password"
HOSTILE = "<script>alert(1)</script><b>bold</b>"


def hostile_target() -> str:
    """An `external` target failing every minute, its detail HTML with a script."""
    report = json.dumps({"outcome": "failure", "error_kind": "evil", "detail": HOSTILE})
    command = json.dumps([sys.executable, "-c", f"print({report!r}); raise SystemExit(1)"])
    return f"""\
  - name: hostile
    kind: external
    external: {{command: {command}}}
    probes: {{login: {{attempts_per_minute: 1, timeout: 2s}}}}
    sla: {{service_month_anchor: 2026-01-01}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("status-e2e")
    chat = ChatServer().start()
    name = safe_name(["chat", *(f"chat-{i}" for i in range(40))], TIMEOUT, send_c2c=2)
    history = write_history(folder / "ledger.sqlite3", name, ("login", "send_c2c"), time.time())
    sla = (
        f'{{service_month_anchor: {history.anchor}, timezone: {TIMEZONE}, monthly_fee: "1200.00", '
        "currency: USD}"
    )
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    (folder / "web.yaml").write_text(f"basic_auth_users:\n  {USER}: {hashed}\n")
    config = folder / "config.yaml"
    text = (
        "ledger: {path: ledger.sqlite3}\n"
        "web: {enable_lifecycle: true, config_file: web.yaml}\n"
        f"status_page: {{refresh: {REFRESH}s}}\n"
        "targets:\n" + chat_target(name, chat.url, TIMEOUT, sends=2, sla=sla) + hostile_target()
    )
    config.write_text(text)
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    daemon = Daemon(
        config, free_port(), env={"CHAT_PASSWORD": chat.password}, headers={"Authorization": auth}
    )
    daemon.start()
    deadline = time.time() + 20
    while daemon.get("/readyz")[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    with chromium() as browser:
        yield {
            "daemon": daemon,
            "chat": chat,
            "name": name,
            "history": history,
            "config": config,
            "browser": browser,
        }
    daemon.stop()
    chat.stop()


def page_of(site, path: str, *, viewport=DESKTOP, scheme: str = "light"):
    context = site["browser"].new_context(
        viewport=viewport,
        color_scheme=scheme,
        http_credentials={"username": USER, "password": PASSWORD},
        accept_downloads=True,
    )
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(site["daemon"].url + path)
    return page


def report_json(site, *args: str) -> dict:
    return json.loads(
        cli(site["config"], "report", "--target", site["name"], "--format", "json", *args)
    )


def pct(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def budget(report: dict) -> tuple[int, int]:
    start = datetime.fromisoformat(report["service_month"]["start"])
    end = datetime.fromisoformat(report["service_month"]["end"])
    minutes = int((end - start).total_seconds()) // 60
    allowed = int(minutes * (1 - report["objective"]) + 1e-9)
    return allowed - report["minutes"]["apparent_failure"], allowed


def test_without_the_password_the_page_and_the_api_are_refused(site) -> None:
    daemon = site["daemon"]
    for path in ("/", f"/targets/{site['name']}", "/api/v1/targets", "/metrics"):
        assert daemon.get(path, headers={"Authorization": ""})[0] == 401, path
        assert daemon.get(path)[0] == 200, path


def test_an_outage_shows_on_the_open_page_within_one_refresh(site) -> None:
    name, chat = site["name"], site["chat"]
    page = page_of(site, "/")
    page.evaluate("window.stillTheSamePage = true")
    m0 = next_minute()
    follow_timeline(m0, [(0.0, lambda: chat.set_mode("5xx")), (60.0, lambda: chat.set_mode("ok"))])
    card = page.locator(f"li.card[data-target='{name}']")
    # the minute closes about TIMEOUT + 2 s grace + a tick after it ends; then one refresh
    card.and_(page.locator(".is-apparent_failure")).wait_for(
        timeout=(TIMEOUT + 4 + REFRESH + 3) * 1000
    )
    seen = time.time() - (m0 + 1) * 60
    assert seen <= TIMEOUT + 4 + REFRESH + 3
    assert page.evaluate("window.stillTheSamePage") is True  # refreshed in place, not reloaded
    assert card.get_attribute("data-as-of") == minute_iso(m0 + 1)
    assert name in page.locator(".banner.failing").inner_text()
    ledger = exported_minutes(site["config"], "--target", name, "--since", minute_iso(m0))
    assert ledger[m0] == ("apparent_failure", "")


def test_the_overview_shows_the_reports_figures(site) -> None:
    page = page_of(site, "/")
    card = page.locator(f"li.card[data-target='{site['name']}']")
    as_of = card.get_attribute("data-as-of")
    report = report_json(site, "--now", as_of)
    assert card.locator(".main-figure dd").inner_text() == pct(report["sla_availability"])
    figures = card.locator(".figures").inner_text()
    assert f"{pct(report['objective'], 2)} MET" in figures.replace("\n", " ")
    assert (
        "no credit" if not report["credit_percent"] else f"{report['credit_percent']}% credit"
    ) in figures
    left, allowed = budget(report)
    assert f"{left} of {allowed} min" in figures
    assert pct(report["coverage"], 2) in figures
    # the hostile target fails every minute (one has closed since the outage test): the
    # banner names it, in words and not only in red
    banner = page.locator(".banner.failing")
    assert "failing" in banner.inner_text() and "hostile" in banner.inner_text()
    assert page.locator("li.card[data-target='hostile'] .pill").inner_text() == "Failing"
    assert page.dialogs == []


def test_the_target_page_shows_the_month_the_24_hours_and_the_claim_window(site) -> None:
    name, history = site["name"], site["history"]
    page = page_of(site, f"/targets/{name}")
    as_of = page.locator(".title-row").get_attribute("data-as-of")
    report = report_json(site, "--now", as_of)
    tiles = page.locator(".tiles").inner_text()
    assert pct(report["sla_availability"]) in tiles
    assert pct(report["measured_availability"]) in tiles
    counts = page.locator(".counts").inner_text()
    for label, key in (
        ("elapsed", "total"),
        ("available", "available"),
        ("failed", "apparent_failure"),
        ("maintenance", "maintenance"),
        ("no data", "no_data"),
    ):
        assert re.search(rf"{label} {report['minutes'][key]}\b", counts), (label, counts)
    assert page.locator(".incidents tbody tr").count() == len(report["incidents"])

    # the 24 hours: failed cells exactly where the ledger has failed minutes
    grid = page.locator("#last-24h")
    since = grid.get_attribute("data-since")
    states = grid.get_attribute("data-states")
    start = int(datetime.fromisoformat(since.replace("Z", "+00:00")).timestamp()) // 60
    ledger = exported_minutes(site["config"], "--target", name, "--since", since, "--until", as_of)
    failed_in_ledger = {m for m, (state, _) in ledger.items() if state == "apparent_failure"}
    assert {start + i for i, c in enumerate(states) if c == "f"} == failed_in_ledger
    assert set(history.recent_outage) <= failed_in_ledger
    titles = grid.locator("svg rect.s-f title").all_text_contents()
    drawn = sum(int(re.search(r"\((\d+) minutes?\)", t).group(1)) for t in titles)
    assert drawn == len(failed_in_ledger)
    tz = ZoneInfo(TIMEZONE)
    first = datetime.fromtimestamp(history.recent_outage.start * 60, tz).strftime("%H:%M")
    assert any(t.startswith(first) for t in titles), (first, titles)

    # the previous month: missed, 10% credit, and where today stands in its claim window
    row = page.locator("table.months tbody tr").first
    label = f"{datetime.fromtimestamp(history.first_minute * 60 + 86400, tz):%Y-%m}"
    previous = report_json(site, "--month", label)
    assert previous["objective_met"] is False
    opens = date.fromisoformat(previous["claim_window"]["opens"])
    closes = date.fromisoformat(previous["claim_window"]["closes"])
    today = datetime.now(tz).date()
    if today < opens:
        n = (opens - today).days
        expected = f"opens {opens} (in {n} day{'s' if n != 1 else ''})"
    elif today < closes:
        n = (closes - today).days
        expected = f"open: closes in {n} day{'s' if n != 1 else ''} ({closes})"
    else:
        expected = f"closed on {closes}" if today > closes else f"open: closes today ({closes})"
    assert row.locator("td.claim").inner_text().splitlines()[0] == expected
    assert (
        f"{previous['credit_percent']}% credit = {previous['credit_amount']} USD"
        in row.inner_text()
    )
    assert "MISSED" in row.inner_text().upper()


def test_the_evidence_download_unpacks_and_its_sums_verify(site, tmp_path) -> None:
    page = page_of(site, f"/targets/{site['name']}")
    with page.expect_download() as caught:
        page.locator("table.months tbody tr").first.get_by_role(
            "link", name=re.compile("evidence")
        ).click()
    download = caught.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    with zipfile.ZipFile(target) as pack:
        pack.extractall(tmp_path)
    folder = tmp_path / target.stem
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = {n for n in os.listdir(folder) if n not in ("SHA256SUMS", "SHA256SUMS.sig")}
    assert checked.stdout.count(": OK") == len(listed) >= 11  # the reports and the chain
    failed = json.loads((folder / "failed_minutes.json").read_text())["minutes"]
    assert len(failed) == len(site["history"].previous_outage)


def test_a_hostile_targets_detail_is_shown_as_text(site) -> None:
    # its first failed minute must have closed (a loaded machine closes minutes later)
    deadline = time.time() + 120
    while json.loads(site["daemon"].get("/api/v1/targets/hostile")[1]).get("incident_count", 0) < 1:
        assert time.time() < deadline, "no closed failed minute of the hostile target"
        time.sleep(1)
    page = page_of(site, "/targets/hostile")
    page.get_by_role("link", name=re.compile("first minute")).first.click()
    page.wait_for_selector("table.attempts")
    cell = page.locator("td.detail").first
    assert cell.inner_text() == HOSTILE
    assert cell.locator("script, b").count() == 0
    assert page.locator("main script").count() == 0
    assert page.dialogs == []


def test_screenshots_of_both_pages_light_and_dark_desktop_and_phone(site) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            for kind, path in (("overview", "/"), ("target", f"/targets/{site['name']}")):
                page = page_of(site, path, viewport=viewport, scheme=scheme)
                # the layout fits the screen: nothing scrolls sideways
                width = page.evaluate("document.documentElement.scrollWidth")
                assert width <= viewport["width"], (kind, size, width)
                out = SCREENSHOTS / f"{kind}-{scheme}-{size}.png"
                page.screenshot(path=out, full_page=True)
                assert out.stat().st_size > 10_000
                page.context.close()


def test_public_mode_after_a_reload_hides_attempts_and_evidence(site) -> None:
    daemon, config = site["daemon"], site["config"]
    config.write_text(
        config.read_text().replace(
            f"status_page: {{refresh: {REFRESH}s}}", "status_page: {public: true, refresh: 5s}"
        )
    )
    assert daemon.post("/-/reload") == (200, "reloaded\n")
    page = page_of(site, f"/targets/{site['name']}")
    html = page.content()
    assert "evidence" not in html and "/minutes/" not in html and "http_5xx" not in html
    assert page.locator(".tiles").inner_text() != ""
    minute = minute_iso(site["history"].recent_outage.start)
    assert daemon.get(f"/targets/{site['name']}/minutes/{minute}")[0] == 404
    assert daemon.get(f"/api/v1/targets/{site['name']}/minutes/{minute}")[0] == 404
    later = datetime.now() + timedelta(days=0)
    assert daemon.get(f"/targets/{site['name']}/evidence/{later:%Y-%m}.zip")[0] == 404
