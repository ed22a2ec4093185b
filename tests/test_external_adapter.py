"""The external kind: exit codes and one-line JSON reports, timeouts that kill the whole
process group and leave no zombie, bounded output, secrets passed only by environment."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from prober.adapters import ProbeContext
from prober.adapters.external import ExternalAdapter, ExternalSection, parse_report
from prober.config.secrets import Secret
from prober.sla import Outcome


def adapter_for(script: str, tmp_path: Path, **extra) -> ExternalAdapter:
    path = tmp_path / "probe.py"
    path.write_text(script)
    section = ExternalSection.model_validate({"command": [sys.executable, str(path)], **extra})
    return ExternalAdapter("ext", section, 5.0)


def run_attempt(adapter: ExternalAdapter, timeout: float = 5.0, probe: str = "login"):
    async def main():
        context = ProbeContext("ext", probe, timeout, time.time(), "id-1")
        try:
            async with asyncio.timeout(timeout):
                return await adapter.attempt(context)
        except TimeoutError:
            return None

    return asyncio.run(main())


def test_exit_zero_is_success_and_context_is_in_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    script = (
        "import os\n"
        f"open({str(out)!r}, 'w').write(os.environ['IM_PROBER_PROBE'] + ' ' + "
        "os.environ['IM_PROBER_TARGET'] + ' ' + os.environ['SDK_KEY'])\n"
    )
    adapter = adapter_for(script, tmp_path, env={"SDK_KEY": Secret("sdk-key-canary", "env:X")})
    result = run_attempt(adapter, probe="send_c2c")
    assert result.outcome is Outcome.SUCCESS
    assert out.read_text() == "send_c2c ext sdk-key-canary"


@pytest.mark.parametrize(
    ("stdout", "code", "outcome", "kind"),
    [
        (
            '{"outcome": "client_error", "error_kind": "bad_login", "detail": "no such user"}',
            1,
            Outcome.CLIENT_ERROR,
            "bad_login",
        ),
        ('{"outcome": "throttled"}', 2, Outcome.THROTTLED, "external"),
        ('{"outcome": "success"}', 3, Outcome.FAILURE, "external"),  # non-zero is never success
        ("plain text", 1, Outcome.FAILURE, "exit_status"),
        ('{"outcome": "weird", "error_kind": "Bad Kind!"}', 1, Outcome.FAILURE, "external"),
        ("[1, 2]", 1, Outcome.FAILURE, "exit_status"),
    ],
)
def test_reports(tmp_path: Path, stdout: str, code: int, outcome: Outcome, kind: str) -> None:
    script = f"import sys\nprint({stdout!r})\nsys.exit({code})\n"
    result = run_attempt(adapter_for(script, tmp_path))
    assert (result.outcome, result.error_kind) == (outcome, kind)
    assert parse_report(stdout.encode(), code).outcome is outcome


def test_timeout_kills_the_whole_group_and_reaps(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(60)\n"
    )
    t0 = time.monotonic()
    result = run_attempt(adapter_for(script, tmp_path), timeout=1.5)
    assert result is None and time.monotonic() - t0 < 3
    time.sleep(0.2)
    command, grandchild = map(int, pids.read_text().split())
    assert _state(command) is None, "the command was not killed and reaped"
    # its own child died with the group (whoever reaps orphans may not have yet)
    assert _state(grandchild) in (None, "Z")


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def test_output_is_bounded(tmp_path: Path) -> None:
    script = "import sys\nsys.stdout.write('x' * 50_000_000)\nsys.exit(1)\n"
    adapter = adapter_for(script, tmp_path, max_output_bytes=4096)
    result = run_attempt(adapter)
    assert (result.outcome, result.error_kind) == (Outcome.FAILURE, "exit_status")


def test_missing_program_is_a_client_error(tmp_path: Path) -> None:
    section = ExternalSection.model_validate({"command": [str(tmp_path / "nope")]})
    result = run_attempt(ExternalAdapter("ext", section, 5.0))
    assert (result.outcome, result.error_kind) == (Outcome.CLIENT_ERROR, "config")


def test_environment_is_minimal_unless_inherited(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("UNRELATED_SECRET", "should-not-leak")
    out = tmp_path / "seen"
    script = f"import os\nopen({str(out)!r}, 'w').write(os.environ.get('UNRELATED_SECRET', '-'))\n"
    run_attempt(adapter_for(script, tmp_path))
    assert out.read_text() == "-"
    run_attempt(adapter_for(script, tmp_path, inherit_env=True))
    assert out.read_text() == "should-not-leak"
