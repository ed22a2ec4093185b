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
from prober.config import ConfigError, load_config
from prober.errors import UserError
from prober.secrets import Secret, redact
from prober.yamlsource import load_yaml

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
