"""The `external` kind: run the user's own command (e.g. a script using a vendor's SDK).

Exit 0 is a success. Otherwise the first line of stdout may be JSON:
`{"outcome": "...", "error_kind": "...", "detail": "..."}`; without it the attempt is a
`failure`. The command runs in its own process group, is killed with the group at the
timeout and always reaped; its output is read up to a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from ..config.fields import SecretRef
from ..config.secrets import Secret
from ..sla import Outcome
from . import base

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")


class ExternalSection(base.Section):
    command: list[str] | None = Field(None, description="argv of the command (no shell)")
    commands: dict[str, list[str]] = Field(
        default_factory=dict, description="per-probe argv, overriding `command`"
    )
    env: dict[str, SecretRef | str] = Field(default_factory=dict)
    inherit_env: bool = Field(False, description="pass the whole environment, not just PATH etc.")
    workdir: Path | None = None
    max_output_bytes: int = Field(65536, ge=1024, le=16 << 20)

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("command needs at least the program")
        return value


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
        # keep draining past the limit so the child never blocks on a full pipe
    return bytes(kept)


def parse_report(stdout: bytes, returncode: int) -> base.Result:
    if returncode == 0:
        return base.Result.ok()
    first = stdout.split(b"\n", 1)[0].strip()
    fallback = base.failure("exit_status", f"exit status {returncode}")
    if not first.startswith(b"{"):
        return fallback
    try:
        report = json.loads(first)
    except (ValueError, RecursionError):
        return fallback
    if not isinstance(report, dict):
        return fallback
    try:
        outcome = Outcome(report.get("outcome", "failure"))
    except ValueError:
        outcome = Outcome.FAILURE
    if outcome is Outcome.SUCCESS:  # a non-zero exit is never a success
        outcome = Outcome.FAILURE
    kind = report.get("error_kind")
    kind = kind if isinstance(kind, str) and _KIND.match(kind) else "external"
    detail = report.get("detail")
    detail = detail if isinstance(detail, str) else f"exit status {returncode}"
    return base.Result(outcome, kind, detail=detail)


class ExternalAdapter(base.Adapter):
    kind: ClassVar[str] = "external"
    section_model: ClassVar[type[base.Section]] = ExternalSection
    probes: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, target: str, section: base.Section, timeout: float) -> None:
        super().__init__(target, section, timeout)
        assert isinstance(section, ExternalSection)
        self.config: ExternalSection = section

    @classmethod
    def probe_problems(cls, section: base.Section, probes: list[str]) -> list[str]:
        assert isinstance(section, ExternalSection)
        return [
            f"probe {p} has no command (set `command` or `commands.{p}`)"
            for p in probes
            if section.command is None and p not in section.commands
        ]

    def _environment(self, context: base.ProbeContext) -> dict[str, str]:
        source = (
            os.environ
            if self.config.inherit_env
            else {k: v for k, v in os.environ.items() if k in _INHERITED}
        )
        env = dict(source)
        for key, value in self.config.env.items():
            env[key] = value.reveal() if isinstance(value, Secret) else value
        env.update(
            {
                "IM_PROBER_TARGET": context.target,
                "IM_PROBER_PROBE": context.probe,
                "IM_PROBER_TIMEOUT": f"{context.timeout:g}",
                "IM_PROBER_ATTEMPT_ID": context.attempt_id,
                "IM_PROBER_PLANNED_AT": f"{context.planned_at:.3f}",
            }
        )
        return env

    async def attempt(self, context: base.ProbeContext) -> base.Result:
        argv = self.config.commands.get(context.probe) or self.config.command
        assert argv is not None  # checked at config load
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=self._environment(context),
                cwd=self.config.workdir,
                start_new_session=True,  # its own process group: killed whole at the timeout
            )
        except Exception as exc:
            # fork() refused (EAGAIN, ENOMEM), no descriptors for the pipes (EMFILE), no
            # thread for the child watcher: the prober's host, not the command or the service
            if base.local_resource_error(exc):
                return base.local_resource_fault(exc, f"cannot start {argv[0]}")
            if isinstance(exc, OSError):  # no such program, not executable, bad workdir
                return base.client_error(
                    base.CONFIG, f"cannot run {argv[0]}: {exc.strerror or exc}"
                )
            raise
        try:
            assert process.stdout is not None
            stdout = await _read_bounded(process.stdout, self.config.max_output_bytes)
            returncode = await process.wait()
        except BaseException:
            _kill_group(process)
            with contextlib.suppress(ProcessLookupError):
                # Reap it even when cancelled, so no zombie is left behind.
                await asyncio.shield(process.wait())
            raise
        finally:
            _kill_group(process)  # children it left behind
        return parse_report(stdout, returncode)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
