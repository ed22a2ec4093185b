"""Strict config: errors name file, field and line; secrets only by reference, redacted."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import jsonschema
import pytest
import yaml

from prober.cli import main
from prober.config.models import ConfigError, load_config
from prober.config.secrets import Secret, redact
from prober.config.yamlsource import load_yaml
from prober.errors import UserError

from .conftest import BASE_TARGET

ROOT = Path(__file__).resolve().parents[1]


def errors_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_example_and_sample_configs_are_valid(monkeypatch) -> None:
    monkeypatch.setenv("TENCENT_IM_SECRET_KEY", "an-example-secret-key")
    monkeypatch.setenv("CHAT_PROBE_PASSWORD", "an-example-password")
    monkeypatch.setenv("IM_SDK_KEY", "an-example-sdk-key")
    monkeypatch.setenv("MATRIX_PROBE_PASSWORD", "an-example-matrix-password")
    monkeypatch.setenv("MATRIX_PEER_PASSWORD", "an-example-peer-password")
    monkeypatch.setenv("XMPP_PROBE_PASSWORD", "an-example-xmpp-password")
    monkeypatch.setenv("XMPP_PEER_PASSWORD", "an-example-xmpp-peer-password")
    example = load_config(ROOT / "config" / "example.yaml").config
    target = example.targets[0]
    assert target.sla.objective_exact == Fraction(99, 100)
    assert [t.credit for t in target.sla.tiers] == [
        Fraction(1, 10),
        Fraction(1, 5),
        Fraction(3, 10),
    ]
    assert len(target.windows) == 2
    assert load_config(ROOT / "config" / "sample.yaml").config.targets[0].name == "demo"


def test_defaults(demo_config: Path) -> None:
    config = load_config(demo_config)
    target = config.config.targets[0]
    assert config.config.ledger.attempts_retention_days == 120
    assert target.sla.objective == Decimal("0.99")
    assert target.sla.holidays == "CN"
    assert target.sla.policy == "sla"
    assert target.probes["send_c2c"].spacing == 15
    assert target.sla.monthly_fee == Decimal("1200.00")
    assert config.ledger_path == demo_config.parent / "ledger.sqlite3"


def test_unknown_key_is_reported_at_its_line(write_config) -> None:
    path = write_config(
        "targets:\n" + BASE_TARGET.replace("timeout: 10s}", "timeout: 10s, retries: 3}", 1)
    )
    assert errors_of(path) == f"{path}:10: targets[0].probes.login.retries: unknown key"


def test_several_errors_each_with_line_and_path(write_config) -> None:
    text = "ledger: {attempts_retention_days: 30}\ntargets:\n" + BASE_TARGET
    text = text.replace("Asia/Shanghai", "Asia/Shangai").replace(
        "attempts_per_minute: 4, timeout: 10s", "attempts_per_minute: 4, timeout: 15s"
    )
    message = errors_of(write_config(text))
    lines = message.splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(
        ":1: ledger.attempts_retention_days: must be at least 92 days: attempts are the evidence "
        "of a claim, which may be filed until 60 days after a service month ends"
    )
    assert (
        ":12: targets[0].probes.send_c2c: timeout 15s must be shorter than the spacing" in lines[1]
    )
    assert ":15: targets[0].sla.timezone: unknown timezone 'Asia/Shangai'" in lines[2]


def test_missing_key_points_at_the_enclosing_mapping(write_config) -> None:
    path = write_config(
        "targets:\n" + BASE_TARGET.replace("      service_month_anchor: 2026-03-17\n", "")
    )
    assert errors_of(path) == (
        f"{path}:12: targets[0].sla.service_month_anchor: required key is missing"
    )


def test_duplicate_keys_and_yaml_syntax(write_config) -> None:
    path = write_config("targets:\n" + BASE_TARGET + "    kind: matrix\n")
    assert "duplicate key 'kind' (first on line 3)" in errors_of(path)
    assert ":17:" in errors_of(path)
    broken = write_config("targets:\n  - name: [unclosed\n")
    assert errors_of(broken).startswith(f"{broken}:")
    assert "invalid YAML" in errors_of(broken)


def test_names_sections_and_unique_targets(write_config) -> None:
    bad_name = write_config("targets:\n" + BASE_TARGET.replace("name: demo", "name: Demo Target"))
    assert "targets[0].name: String should match pattern" in errors_of(bad_name)
    twice = write_config("targets:\n" + BASE_TARGET + BASE_TARGET)
    assert "target name 'demo' is used twice" in errors_of(twice)
    wrong_section = write_config(
        "targets:\n" + BASE_TARGET.replace("    http:\n", "    matrix: {}\n    http:\n")
    )
    assert "kind is http, so section(s) matrix do not belong" in errors_of(wrong_section)


def test_maintenance_windows(write_config) -> None:
    text = (
        "targets:\n"
        + BASE_TARGET
        + (
            "    maintenance:\n"
            "      - {start: 2026-12-01T04:00:00+08:00, end: 2026-12-01T02:00:00+08:00}\n"
            "      - {start: 2026-12-01T02:00:00, end: 2026-12-01T04:00:00+08:00}\n"
            "      - {every: [sun, funday], at: '02:00', duration: 2h}\n"
            "      - {every: day, at: 02:30, duration: 1h}\n"
        )
    )
    lines = errors_of(write_config(text)).splitlines()
    assert len(lines) == 3
    assert ":18: targets[0].maintenance[0]: end must be after start" in lines[0]
    assert ":19: targets[0].maintenance[1].start: Input should have timezone info" in lines[1]
    assert lines[2].endswith(
        ":20: targets[0].maintenance[2].every: must be `day` or a list of weekdays from mon, "
        "tue, wed, thu, fri, sat, sun"
    )


def test_secrets_come_only_from_references(write_config, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CANARY_PASSWORD", "canary-env-7f3a9c")
    (tmp_path / "token.txt").write_text("canary-file-51be0d\n")
    text = "targets:\n" + BASE_TARGET.replace(
        "    http:\n",
        "    http:\n      variables: {password: {env: CANARY_PASSWORD}, token: {file: token.txt}}\n",
    )
    config = load_config(write_config(text))
    section = config.config.targets[0].http.variables
    assert isinstance(section["password"], Secret)
    assert section["password"].reveal() == "canary-env-7f3a9c"
    assert section["token"].reveal() == "canary-file-51be0d"
    printed = json.dumps(config.redacted())
    assert "canary" not in printed
    assert "<secret from env:CANARY_PASSWORD>" in printed
    assert "<secret from file:token.txt>" in printed
    assert "canary" not in repr(section) and "canary" not in config.digest
    assert redact("Authorization: Bearer canary-file-51be0d") == "Authorization: Bearer <redacted>"


def test_unresolvable_secret_is_a_clear_error(write_config) -> None:
    text = "targets:\n" + BASE_TARGET.replace(
        "    http:\n",
        "    http:\n      variables: {password: {env: NOT_SET_ANYWHERE}, key: {file: missing.key}}\n",
    )
    lines = errors_of(write_config(text)).splitlines()
    assert len(lines) == 2
    assert lines[1].endswith(
        ":5: targets[0].http.variables.password: environment variable NOT_SET_ANYWHERE is not set"
    )
    assert ":5: targets[0].http.variables.key: secret file missing.key cannot be read" in lines[0]


def test_check_config_prints_redacted_and_exits_zero(write_config, monkeypatch, capsys) -> None:
    monkeypatch.setenv("CANARY_PASSWORD", "canary-env-a81c44")
    path = write_config(
        "targets:\n"
        + BASE_TARGET.replace(
            "    http:\n", "    http:\n      variables: {password: {env: CANARY_PASSWORD}}\n"
        )
    )
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "canary" not in out
    printed = yaml.safe_load(out)
    assert (
        printed["targets"][0]["http"]["variables"]["password"]
        == "<secret from env:CANARY_PASSWORD>"
    )
    assert printed["targets"][0]["probes"]["login"]["timeout"] == "10s"


def test_check_config_errors_exit_two_without_traceback(write_config, capsys) -> None:
    path = write_config("targets: []\n")
    assert main(["check-config", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("im-prober: error: ")
    assert "Traceback" not in err
    assert main(["check-config", "-c", str(path.parent / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_schema_accepts_the_example(capsys) -> None:
    assert main(["config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    example = load_yaml((ROOT / "config" / "example.yaml").read_text()).data
    jsonschema.validate(json.loads(json.dumps(example, default=str)), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"targets": [], "bogus": 1}, schema)


def test_unknown_target_is_a_user_error(demo_config: Path) -> None:
    with pytest.raises(UserError, match="no target named 'nope'"):
        load_config(demo_config).config.target("nope")


def test_yes_no_on_off_stay_words() -> None:
    data = load_yaml("a: off\nb: NO\nc: yes\nd: true\ne: False\n").data
    assert data == {"a": "off", "b": "NO", "c": "yes", "d": True, "e": False}


# -- bounds: every number, duration and amount is checked before anything uses it ----------


def with_sla(extra: str) -> str:
    return "targets:\n" + BASE_TARGET.replace(
        "      currency: USD\n", "      currency: USD\n" + extra
    )


def test_booleans_are_never_taken_for_numbers(write_config) -> None:
    text = "scheduler: {write_buffer_minutes: true}\ntargets:\n" + BASE_TARGET.replace(
        "attempts_per_minute: 1,", "attempts_per_minute: true,"
    ).replace(
        "      base_url: http://127.0.0.1:9\n",
        "      base_url: http://127.0.0.1:9\n      max_redirects: false\n",
    ).replace("json: {user: probe}}", "json: {user: probe}, expect_status: [true]}")
    text = text.replace("      currency: USD\n", "      currency: USD\n      objective: true\n")
    path = write_config(text)
    assert errors_of(path).splitlines() == [
        f"{path}:1: scheduler.write_buffer_minutes: expected a number, not true/false",
        f"{path}:7: targets[0].http.max_redirects: expected a number, not true/false",
        f"{path}:9: targets[0].http.probes.login[0].expect_status[0]: expected a number, not true/false",
        f"{path}:12: targets[0].probes.login.attempts_per_minute: expected a number, not true/false",
        f"{path}:19: targets[0].sla.objective: expected a number, not true/false",
    ]
    # booleans stay booleans where the field says so, and in free-form variables
    fine = "targets:\n" + BASE_TARGET.replace(
        "      base_url: http://127.0.0.1:9\n",
        "      base_url: http://127.0.0.1:9\n      tls_verify: false\n"
        "      variables: {flag: true, count: 3}\n",
    )
    section = load_config(write_config(fine)).config.targets[0].http
    assert section.tls_verify is False and section.variables == {"flag": True, "count": 3}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30d", "must be at most 1m"),
        ("61s", "must be at most 1m"),
        ("100000000000000000000d", "a duration must be at most 366d"),
        ("1.0e+20", "a duration must be at most 366d"),
        (".inf", "a duration must be at most 366d"),
        (".nan", "not NaN"),
        ("0.0001s", "a duration must be at least 1ms"),
    ],
)
def test_close_grace_and_every_duration_are_bounded(write_config, value, message) -> None:
    path = write_config(f"scheduler: {{close_grace: {value}}}\ntargets:\n" + BASE_TARGET)
    error = errors_of(path)
    assert error.startswith(f"{path}:1: scheduler.close_grace: ") and error.endswith(message)


def test_a_nan_timeout_or_window_is_refused_not_compared(write_config) -> None:
    text = "targets:\n" + BASE_TARGET.replace("timeout: 10s}", "timeout: .nan}", 1)
    text += "    maintenance:\n      - {every: day, at: '02:00', duration: .nan}\n"
    path = write_config(text)
    lines = errors_of(path).splitlines()
    assert lines[0] == (
        f"{path}:10: targets[0].probes.login.timeout: a duration must be like 500ms, 10s, 5m, "
        "2h or 1d, not NaN"
    )
    assert lines[1].startswith(f"{path}:18: targets[0].maintenance[0].duration: ")


def test_readiness_fails_when_no_minute_closes_whatever_the_delay(tmp_path: Path) -> None:
    """The closer is judged against the longest delay a valid config allows, so even a
    delay that slipped past validation cannot keep /readyz at ok while nothing is written."""
    import asyncio

    from prober.config.models import parse_config
    from prober.ledger.store import Ledger
    from prober.runtime.prober import Prober

    class Clock:
        now = 29_930_000 * 60 + 5.0

        def wall(self) -> float:
            return self.now

        def monotonic(self) -> float:
            return self.now

    text = "ledger: {path: ledger.sqlite3}\ntargets:\n" + BASE_TARGET
    config = parse_config(text, tmp_path / "config.yaml")
    scheduler = config.config.scheduler.model_copy(update={"close_grace": 30 * 86400.0})
    config.config = config.config.model_copy(update={"scheduler": scheduler})

    async def main_() -> list[tuple[bool, str]]:
        clock = Clock()
        prober = Prober(config, Ledger(tmp_path / "ledger.sqlite3"), clock=clock)
        await prober.start()
        seen = [prober.readiness()]
        clock.now += 5 * 60  # five minutes end, none closes: the delay is 30 days
        seen.append(prober.readiness())
        prober.clockwork.timers.clear()
        await asyncio.wait_for(prober.stop(), 30)
        return seen

    ready, later = asyncio.run(main_())
    assert ready == (True, "ok")
    assert later[0] is False and "minute closing is" in later[1]


def test_credit_tiers_must_not_contradict_each_other(write_config) -> None:
    same = write_config(
        with_sla(
            "      credit_tiers:\n        - {below: 0.99, credit: 0.1}\n"
            "        - {below: 0.99, credit: 0.2}\n"
        )
    )
    assert errors_of(same) == (
        f"{same}:19: targets[0].sla.credit_tiers[1].below: two credit tiers have below 0.99 "
        "(first on line 18)"
    )
    worse_gets_less = write_config(
        with_sla(
            "      credit_tiers:\n        - {below: 0.99, credit: 0.3}\n"
            "        - {below: 0.95, credit: 0.2}\n"
        )
    )
    assert errors_of(worse_gets_less) == (
        f"{worse_gets_less}:19: targets[0].sla.credit_tiers[1].credit: the tier below 0.95 "
        "(credit 0.2) gives less than the milder tier below 0.99 (credit 0.3): a worse month "
        "cannot earn a smaller credit (that tier is on line 18)"
    )
    above = write_config(with_sla("      credit_tiers:\n        - {below: 0.995, credit: 0.1}\n"))
    assert errors_of(above) == (
        f"{above}:18: targets[0].sla.credit_tiers[0].below: below 0.995 is above the objective "
        "0.99: a month that meets the objective would earn a credit"
    )
    lower_objective = write_config(with_sla("      objective: 0.95\n"))
    assert errors_of(lower_objective).startswith(
        f"{lower_objective}:17: targets[0].sla.objective: the objective 0.95 is below the "
        "default credit tier below 0.99 (credit 0.10)"
    )
    ordered = with_sla(
        "      objective: 0.999\n      credit_tiers:\n        - {below: 0.95, credit: 0.25}\n"
        "        - {below: 0.999, credit: 0.1}\n        - {below: 0.99, credit: 0.25}\n"
    )
    assert len(load_config(write_config(ordered)).config.targets[0].sla.tiers) == 3


@pytest.mark.parametrize(
    ("fee", "message"),
    [
        ('"1e26"', "must be smaller than 1,000,000,000,000"),
        ("1000000000000", "must be smaller than 1,000,000,000,000"),
        ('"1200.00001"', "at most 4 decimal places"),
        ('"1e-999999999"', "at most 6 decimal places"),
        ("-5", "monthly_fee cannot be negative"),
        ('"' + "9" * 50 + '"', "at most 40 characters"),
    ],
)
def test_monthly_fee_is_bounded(write_config, fee, message) -> None:
    path = write_config("targets:\n" + BASE_TARGET.replace('"1200.00"', fee))
    where = "targets[0].sla" if "negative" in message else "targets[0].sla.monthly_fee"
    assert errors_of(path).startswith(f"{path}:")
    assert f": {where}: " in errors_of(path) and message in errors_of(path)


def test_objective_with_a_huge_exponent_is_refused_at_load(write_config) -> None:
    path = write_config(with_sla('      objective: "1e-999999999"\n'))
    assert errors_of(path) == f"{path}:17: targets[0].sla.objective: at most 6 decimal places"


def test_report_with_the_largest_fee_on_a_failed_month(write_config, capsys) -> None:
    from datetime import datetime

    from prober.ledger.store import Ledger
    from prober.records import ClosedMinute
    from prober.sla import OutcomeCounts, State, Verdict, epoch_minute

    path = write_config(
        "ledger: {path: ledger.sqlite3}\ntargets:\n"
        + BASE_TARGET.replace('"1200.00"', '"999999999999.9999"')
    )
    ledger = Ledger(path.parent / "ledger.sqlite3")
    # 600 failed minutes in the service month [Apr 17, May 17) Shanghai: 98.6%, a 10% credit
    start = epoch_minute(datetime.fromisoformat("2026-04-17T00:00:00+08:00"))
    ledger.write_minutes(
        [
            ClosedMinute("demo", m, Verdict(State.APPARENT_FAILURE), OutcomeCounts(failure=1))
            for m in range(start, start + 600)
        ]
    )
    ledger.close()
    argv = ["report", "-c", str(path), "--target", "demo", "--month", "2026-04"]
    assert main([*argv, "--format", "json", "--now", "2026-06-10T00:00:00Z"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["minutes"]["apparent_failure"] == 600
    assert report["credit_amount"] == "100000000000.0000"
    assert main([*argv, "--now", "2026-06-10T00:00:00Z"]) == 0
    assert "= 100000000000.0000 USD" in capsys.readouterr().out


def test_retention_days_have_an_upper_bound(write_config) -> None:
    path = write_config(
        "ledger: {attempts_retention_days: 1000000000000000000000}\ntargets:\n" + BASE_TARGET
    )
    assert errors_of(path).startswith(f"{path}:1: ledger.attempts_retention_days: ")


def test_an_impossible_anchor_names_file_line_and_field(write_config) -> None:
    path = write_config("targets:\n" + BASE_TARGET.replace("2026-03-17", "2026-02-30"))
    message = errors_of(path)
    assert message.startswith(f"{path}:13: targets[0].sla.service_month_anchor: ")
    assert "day value is outside expected range" in message
    far = write_config("targets:\n" + BASE_TARGET.replace("2026-03-17", "0001-01-01"))
    assert errors_of(far) == (
        f"{far}:13: targets[0].sla.service_month_anchor: must be in the years 2000–2199"
    )


def test_a_duplicate_target_is_reported_at_the_duplicate(write_config) -> None:
    path = write_config(
        "targets:\n" + BASE_TARGET + BASE_TARGET.replace("demo", "other") + BASE_TARGET
    )
    assert errors_of(path) == (
        f"{path}:32: targets[2].name: target name 'demo' is used twice (first on line 2)"
    )


def test_each_number_field_is_guarded_against_booleans_once() -> None:
    from prober.config.fields import _not_a_boolean
    from prober.config.models import Config

    def guards(node, found):
        if isinstance(node, dict):
            function = node.get("function")
            if isinstance(function, dict) and function.get("function") is _not_a_boolean:
                found.append(node["schema"])
            for value in node.values():
                guards(value, found)
        elif isinstance(node, list):
            for value in node:
                guards(value, found)
        return found

    guarded = guards(Config.__pydantic_core_schema__, [])
    assert guarded, "no number field is guarded"
    # nested models were wrapped again by every model containing them (50 guards, 31 doubled)
    assert all(schema["type"] in ("int", "float", "decimal") for schema in guarded)
