"""The daemon loads its config in a child process (prober/config/isolated.py): the result must
be the in-process load's, secrets included and redacted in the daemon, and every failure one
clear error."""

from __future__ import annotations

import pickle
import secrets as random_secrets
from pathlib import Path

import pytest

from prober.config import isolated
from prober.config.models import ConfigError, load_config
from prober.config.secrets import Secret, redact
from prober.errors import UserError

TARGET = """\
ledger: {{path: ledger.sqlite3}}
targets:
  - name: a
    kind: http
    http:
      base_url: 'http://127.0.0.1:1'
      headers: {{Authorization: {{file: '{secret}'}}}}
      probes: {{login: [{{url: /}}]}}
    probes: {{login: {{attempts_per_minute: 2, timeout: 3s}}}}
    sla: {{service_month_anchor: 2026-01-01, timezone: Asia/Shanghai}}
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def test_the_child_loads_what_the_daemon_would_have_loaded_secrets_included(tmp_path) -> None:
    value = "pw-" + random_secrets.token_hex(12)  # known to no one in this process yet
    (tmp_path / "pw").write_text(value)
    path = write(tmp_path, TARGET.format(secret=tmp_path / "pw"))
    assert redact(f"x {value} y") == f"x {value} y"
    loaded = isolated.load_config_isolated(path)
    # The daemon's copy of the secret is a Secret, and redacted from now on.
    header = loaded.config.targets[0].http.headers["Authorization"]  # type: ignore[attr-defined]
    assert isinstance(header, Secret) and header.reveal() == value
    assert value not in redact(f"x {value} y")
    here = load_config(path)
    assert loaded.config == here.config
    assert (loaded.path, loaded.vantage, loaded.shard) == (
        here.path,
        here.vantage,
        here.shard,
    )


def test_equal_parts_of_targets_arrive_as_one_object_and_the_config_is_unchanged(
    tmp_path,
) -> None:
    (tmp_path / "pw").write_text("pw-long-enough")
    one = TARGET.format(secret=tmp_path / "pw")
    head, target = one.split("targets:\n")
    targets = [target.replace("name: a", f"name: {n}") for n in "abc"]
    targets[2] = targets[2].replace("Asia/Shanghai", "UTC")  # c has an SLA of its own
    path = write(tmp_path, head + "targets:\n" + "".join(targets))
    loaded = isolated.load_config_isolated(path)
    a, b, c = loaded.config.targets
    assert a.sla is b.sla and a.probes is b.probes and a.http is b.http
    assert c.sla is not a.sla and c.sla.timezone == "UTC" and c.probes is a.probes
    here = load_config(path)
    assert loaded.config == here.config and loaded.digest == here.digest


def test_a_bad_config_gives_the_same_error_naming_file_line_and_field(tmp_path) -> None:
    path = write(tmp_path, TARGET.format(secret=tmp_path / "pw").replace("3s", "3 parsecs"))
    (tmp_path / "pw").write_text("pw-long-enough")
    with pytest.raises(ConfigError) as in_process:
        load_config(path)
    with pytest.raises(UserError) as in_child:
        isolated.load_config_isolated(path)
    assert str(in_child.value) == str(in_process.value)
    assert f"{path}:9: targets[0].probes.login.timeout" in str(in_child.value)


def test_a_missing_file_and_a_dead_child_are_one_clear_error(tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match="config file not found"):
        isolated.load_config_isolated(tmp_path / "nowhere.yaml")
    path = write(tmp_path, "ledger: {path: l.sqlite3}\ntargets: []\n")
    monkeypatch.setattr(isolated.sys, "executable", "/bin/false")
    with pytest.raises(UserError, match=r"config loader failed \(exit status 1\)"):
        isolated.load_config_isolated(path)


def test_secrets_still_refuse_ordinary_pickling() -> None:
    with pytest.raises(TypeError, match="not to be pickled"):
        pickle.dumps(Secret("pw-long-enough", "test"))
