"""The exposition as a scraper reads it: the hand-written families and the standard
`process_*`/`python_info` series together, valid in both formats (prometheus_client's own
parsers and `promtool check metrics`)."""

from __future__ import annotations

import subprocess
from datetime import date
from fractions import Fraction

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from prober.expose.metrics import Exposition, TargetInfo
from prober.ledger.view import LedgerView
from prober.sla import DEFAULT_TIERS, ServiceCalendar, State
from prober.stats import RuntimeStats

from .test_prometheus_rules import MINUTE, promtool


def exposition() -> Exposition:
    view = LedgerView()
    view.track("t", ServiceCalendar(date(2026, 1, 1), "UTC"))
    view.targets["t"].add(MINUTE, State.APPARENT_FAILURE)
    stats = RuntimeStats()
    stats.observe_duration("t", "login", 0.2)
    result = Exposition(view, stats, "test")
    result.set_targets([TargetInfo("t", ("login",), Fraction(99, 100), DEFAULT_TIERS)])
    return result


def test_the_standard_process_series_stand_beside_the_ledger_families() -> None:
    text = exposition().render(MINUTE * 60 + 90).decode()
    parsed = list(parse_text(text))
    assert len(parsed) == len({f.name for f in parsed}), "a family is exposed twice"
    families = {f.name: f for f in parsed}
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    assert families["process_open_fds"].samples[0].value >= 3
    assert families["python_info"].samples[0].labels["implementation"]
    assert families["im_sla_downtime_seconds"].samples[0].value == 60


def test_openmetrics_ends_once_and_parses() -> None:
    text = exposition().render(MINUTE * 60 + 90, openmetrics=True).decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    names = {f.name for f in parse_om(text)}
    assert {"process_cpu_seconds", "python_info", "im_probe_attempts"} <= names


def test_promtool_accepts_the_whole_exposition() -> None:
    body = exposition().render(MINUTE * 60 + 90)
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
