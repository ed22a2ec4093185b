"""Checkpoints leave the machine: the daemon's daily and month-end checkpoint job, and the
sinks a signed checkpoint goes to — a file (one per checkpoint in a folder, or appended
lines), a webhook (HTTP POST), a git repository the customer controls (a commit, pushed if
configured).

The document itself (every chain's head, signed) is made by the callable the daemon hands
in (`reports.signing`): the runtime never imports the reports. A sink that fails is logged
and tried again at the next run; nothing here stops the daemon or touches a minute.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from ..config.checkpoints import (
    CheckpointsConfig,
    FileSink,
    GitSink,
    Sink,
    WebhookSink,
    sink_path,
)
from ..config.models import ConfigFile
from ..config.secrets import Secret, redact, resolve_references
from ..logs import event

# A failed sink is tried again at most this often (each run is a minute).
RETRY_EVERY = 300.0
# After a month ends, its last minute closes `close_delay` later; the checkpoint waits this
# much more, so that minute is among the heads.
MONTH_END_SETTLE = 5.0
MAX_GIT_OUTPUT = 64 << 10

MakeCheckpoint = Callable[[str, datetime], str]


class SinkError(Exception):
    """A sink that did not take a checkpoint, said in words (never a secret)."""


def describe(sink: Sink, base_dir: Path) -> str:
    """How logs and messages name a sink: its path, or the webhook's origin (never its
    query, never a token)."""
    if isinstance(sink, WebhookSink):
        parts = httpx.URL(sink.url)
        port = f":{parts.port}" if parts.port else ""
        return f"webhook {parts.scheme}://{parts.host}{port}"
    if isinstance(sink, GitSink):
        return f"git {sink_path(sink.repo, base_dir)}"
    return f"file {sink_path(sink.path, base_dir)}"


def file_name(time: datetime, vantage: str, reason: str) -> str:
    """checkpoint-20261130T000500Z-<vantage>-daily.json: sorts by time; in a fleet each
    prober's checkpoints sit side by side."""
    stamp = time.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"checkpoint-{stamp}-{vantage}-{reason}.json"


@dataclass(frozen=True)
class Document:
    text: str
    time: datetime
    vantage: str
    reason: str

    @property
    def name(self) -> str:
        return file_name(self.time, self.vantage, self.reason)


def as_document(text: str) -> Document:
    """The fields of a checkpoint the sinks need (name, time), from the text made by
    `reports.signing.make_checkpoint`."""
    body = json.loads(text)
    when = datetime.fromisoformat(body["time"].replace("Z", "+00:00"))
    return Document(text, when, body["vantage"], body["reason"])


# -- sinks ---------------------------------------------------------------------------------


def _write_new(path: Path, text: str) -> None:
    """The whole file or none: written beside, synced, then linked into place (never over
    an existing file). The same document already there is success (a retry)."""
    if path.exists():
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except (OSError, UnicodeDecodeError):
            pass
        raise SinkError(f"{path} exists with other content; not overwritten")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        with os.fdopen(os.open(temporary, flags, 0o644), "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _deliver_file(sink: FileSink, document: Document, base_dir: Path) -> None:
    target = sink_path(sink.path, base_dir)
    try:
        if sink.mode == "folder":
            target.mkdir(parents=True, exist_ok=True)
            _write_new(target / document.name, document.text)
            return
        line = json.dumps(json.loads(document.text), sort_keys=True, separators=(",", ":"))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(target, flags, 0o644), "a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise SinkError(f"cannot write {exc.filename or target}: {exc.strerror or exc}") from None


def _reveal(secret: Secret, base_dir: Path) -> str:
    """A secret's value; one loaded by name only (a command that reads no secrets) is read
    now through the same loader."""
    try:
        return secret.reveal()
    except RuntimeError:
        kind, _, name = secret.source.partition(":")
        found, problems = resolve_references({kind: name}, base_dir)
        if problems:
            raise SinkError(f"token: {problems[0][1]}") from None
        assert isinstance(found, Secret)
        return found.reveal()


def _deliver_webhook(sink: WebhookSink, document: Document, base_dir: Path) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "im-prober"}
    if sink.token is not None:
        headers["Authorization"] = f"Bearer {_reveal(sink.token, base_dir)}"
    try:
        with httpx.Client(timeout=sink.timeout, trust_env=False, follow_redirects=False) as client:
            response = client.post(sink.url, content=document.text.encode(), headers=headers)
    except httpx.HTTPError as exc:
        # The exception's text may hold the URL; its kind says enough.
        raise SinkError(f"no answer: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise SinkError(f"answered HTTP {response.status_code}, not 2xx")


_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


def _git(repo: Path, timeout: float, *args: str, check: bool = True) -> tuple[int, str]:
    """One git command, bounded: no prompt for credentials, the whole process group
    stopped at the timeout, output capped. Returns (exit code, last output line)."""
    environment = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        "LC_ALL": "C",
    }
    try:
        process = subprocess.Popen(
            ["git", "-C", str(repo), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    except OSError as exc:
        raise SinkError(f"cannot run git: {exc.strerror or exc}") from None
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise SinkError(f"git {args[0]} did not finish in {timeout:g}s; stopped") from None
    lines = output[-MAX_GIT_OUTPUT:].decode("utf-8", "replace").strip().splitlines()
    # git's own complaint when there is one; its hints follow it
    said = next(
        (x for x in lines if x.startswith(("fatal:", "error:"))), lines[-1] if lines else ""
    )
    said = _USERINFO.sub(r"\1", redact(said.strip()))[:300]
    if check and process.returncode != 0:
        raise SinkError(f"git {args[0]} failed ({process.returncode}): {said or 'no output'}")
    return process.returncode, said


def _deliver_git(sink: GitSink, document: Document, base_dir: Path) -> None:
    repo = sink_path(sink.repo, base_dir)
    if not repo.is_dir():
        raise SinkError("no such folder (clone the customer's repository there)")
    code, _ = _git(repo, sink.timeout, "rev-parse", "--show-toplevel", check=False)
    if code != 0:
        raise SinkError("not a git repository (git clone or git init it first)")
    folder = repo / sink.folder
    relative = f"{sink.folder}/{document.name}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_new(folder / document.name, document.text)
    except OSError as exc:
        raise SinkError(f"cannot write {exc.filename or folder}: {exc.strerror or exc}") from None
    _git(repo, sink.timeout, "add", "--", relative)
    staged, _ = _git(repo, sink.timeout, "diff", "--cached", "--quiet", "--", relative, check=False)
    if staged == 1:  # not committed yet (a retry after a failed push finds it committed)
        identity: list[str] = []
        for key, value in (("user.name", "im-prober"), ("user.email", "im-prober@localhost")):
            if _git(repo, sink.timeout, "config", "--get", key, check=False)[0] != 0:
                identity += ["-c", f"{key}={value}"]
        message = f"im-prober checkpoint {document.time.isoformat()} ({document.reason})"
        _git(repo, sink.timeout, *identity, "commit", "--no-verify", "-q", "-m", message,
             "--", relative)  # fmt: skip
    if sink.push:
        branch = sink.branch or _git(repo, sink.timeout, "rev-parse", "--abbrev-ref", "HEAD")[1]
        _git(repo, sink.timeout, "push", "-q", sink.remote, f"HEAD:refs/heads/{branch}")


def deliver(sink: Sink, text: str, base_dir: Path) -> None:
    """Give one checkpoint to one sink; SinkError says why it did not take it."""
    document = as_document(text)
    if isinstance(sink, FileSink):
        _deliver_file(sink, document, base_dir)
    elif isinstance(sink, WebhookSink):
        _deliver_webhook(sink, document, base_dir)
    else:
        _deliver_git(sink, document, base_dir)


def deliver_all(settings: CheckpointsConfig, text: str, base_dir: Path) -> dict[str, str]:
    """Every sink in turn; returns the failed ones: name → why."""
    failed: dict[str, str] = {}
    for sink in settings.sinks:
        try:
            deliver(sink, text, base_dir)
        except SinkError as exc:
            failed[describe(sink, base_dir)] = str(exc)
    return failed


# -- the daemon's job ------------------------------------------------------------------------


def _at_on(day: date, settings: CheckpointsConfig) -> datetime:
    return datetime.combine(day, settings.at, tzinfo=UTC)


def latest_daily(now: datetime, settings: CheckpointsConfig) -> datetime:
    """The newest daily checkpoint time at or before `now`."""
    today = _at_on(now.date(), settings)
    return today if today <= now else today - timedelta(days=1)


class CheckpointJob:
    """Run every minute by the daemon's scheduler: writes a checkpoint when the daily time
    has come, or when a target's service month has closed since the last run, and tries
    failed sinks again (at most every RETRY_EVERY). Starting is not a checkpoint: the first
    daily one comes at the next `at`."""

    def __init__(
        self,
        config: Callable[[], ConfigFile],
        make: MakeCheckpoint,
        *,
        close_delay: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.make = make
        self.close_delay = close_delay
        self.clock = clock
        now = self._now()
        self.settled_through = now - timedelta(seconds=self._settle())
        settings = self.config().config.checkpoints
        self.daily_done = latest_daily(now, settings) if settings is not None else now
        # sink name → the newest checkpoint it has not taken yet
        self.pending: dict[str, str] = {}
        self.last_retry = 0.0
        self._busy = threading.Lock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _settle(self) -> float:
        return self.close_delay() + MONTH_END_SETTLE

    def due(self, now: datetime) -> tuple[str | None, datetime]:
        """The reason a checkpoint is due at `now` (None: none is), and the instant through
        which month ends are then accounted for."""
        config = self.config()
        settings = config.config.checkpoints
        settled = now - timedelta(seconds=self._settle())
        if settings is None:
            return None, settled
        if settings.month_end:
            for target in config.config.targets:
                month = target.sla.calendar().month_containing(settled)
                if month is not None and self.settled_through < month.start <= settled:
                    return "month_end", settled
        if latest_daily(now, settings) > self.daily_done:
            return "daily", settled
        return None, settled

    def run(self) -> None:
        """One run (in a worker thread: the sinks block). Never raises."""
        if not self._busy.acquire(blocking=False):
            return  # the previous run is still delivering
        try:
            self._run()
        except Exception as exc:  # a bug must not stop the scheduler's job
            event(logging.ERROR, "checkpoint run failed", error=type(exc).__name__)
        finally:
            self._busy.release()

    def _run(self) -> None:
        now = self._now()
        config = self.config()
        settings = config.config.checkpoints
        reason, settled = self.due(now)
        if settings is None:
            self.pending.clear()
            return
        base_dir = config.path.parent
        names = {describe(s, base_dir): s for s in settings.sinks}
        if reason is not None:
            try:
                text = self.make(reason, now)
            except Exception as exc:  # the ledger unreadable: due again at the next run
                event(
                    logging.WARNING,
                    "could not make a checkpoint; trying at the next run",
                    error=redact(str(exc))[:300] or type(exc).__name__,
                )
                return
            self.settled_through = settled
            self.daily_done = latest_daily(now, settings)
            # A newer checkpoint extends every older one: it replaces what was pending.
            self.pending = dict.fromkeys(names, text)
        elif not self.pending or self.clock() - self.last_retry < RETRY_EVERY:
            return
        self.last_retry = self.clock()
        for name, text in list(self.pending.items()):
            sink = names.get(name)
            if sink is None:  # removed by a reload
                del self.pending[name]
                continue
            try:
                deliver(sink, text, base_dir)
            except SinkError as exc:
                event(
                    logging.WARNING,
                    "checkpoint not delivered; trying again later",
                    sink=name,
                    error=str(exc),
                )
                continue
            del self.pending[name]
            event(logging.INFO, "checkpoint delivered", sink=name, reason=reason or "retry")

    async def tick(self) -> None:
        await asyncio.to_thread(self.run)

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """Every minute at :30, between the closer's work at the minute's start and the
        planning at :50. Runs with no `checkpoints` configured too (a reload may add it)."""
        scheduler.add_job(
            self.tick,
            CronTrigger(second=30, timezone=UTC),
            id="checkpoints",
            misfire_grace_time=30,
        )
