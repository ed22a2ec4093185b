"""The shipped Prometheus rules: promtool accepts them, their unit tests pass (fires,
silent on one failed minute in a quiet hour, resolves; the per-attempt page within 45 s,
never on one failed attempt), and every im_* series they use is one the daemon exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from fractions import Fraction
from pathlib import Path

import pytest

from prober.expose.metrics import Exposition, TargetInfo
from prober.ledger.view import LedgerView
from prober.sla import DEFAULT_TIERS, ServiceCalendar, State
from prober.stats import RuntimeStats

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
MINUTE = 29_671_200  # 2026-06-01T00:00Z, inside a service month of the anchor below


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: make test installs Debian's prometheus package")
    return found


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES / "im-prober.rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "tests",
    [
        "im-prober.rules.test.yml",  # the minute-verdict rules, a minute a step
        "im-prober.rules.failing-now.test.yml",  # the per-attempt page, 15 s a step
    ],
)
def test_promtool_unit_tests_pass(tests: str) -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", tests],
        cwd=RULES,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_use_only_series_the_daemon_exposes() -> None:
    view = LedgerView()
    view.track("t", ServiceCalendar(date(2026, 1, 1), "UTC"))
    view.targets["t"].add(MINUTE, State.AVAILABLE)
    process = RuntimeStats(network_up=1)
    process.saw_certificate("t", "login", 2_000_000_000.0)  # shown only for targets over TLS
    exposition = Exposition(view, process, "test")
    exposition.set_targets([TargetInfo("t", ("login",), Fraction(99, 100), DEFAULT_TIERS, (4,))])
    text = exposition.render(MINUTE * 60 + 90).decode()
    exposed = set(re.findall(r"^(im_[a-z_]+?)(?:_bucket|_sum|_count)?[{ ]", text, re.M))
    used = set(re.findall(r"\b(im_[a-z_]+)\b", (RULES / "im-prober.rules.yml").read_text()))
    used = {u for u in used if not u.startswith("im_minutes_failed")}  # recording-rule names
    assert used and used <= exposed, used - exposed
