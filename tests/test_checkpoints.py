"""Checkpoints leave the machine: the file sink (a file per checkpoint, or appended lines), a
webhook (a real HTTP server on 127.0.0.1), a git repository the test makes (committed, and
pushed to a bare repository when configured); the daemon's job writes one at the daily time
and after a service month closes, and a sink that fails is logged and tried again later,
never raising and never showing a secret."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from prober.config.models import ConfigFile, load_config
from prober.logs import LOGGER_NAME
from prober.reports.signing import (
    HeadRecord,
    generate_key_pair,
    make_checkpoint,
    read_checkpoint,
    signing_key,
)
from prober.reports.stored_checkpoints import stored_checkpoints
from prober.runtime.checkpoints import (
    RETRY_EVERY,
    CheckpointJob,
    SinkError,
    deliver,
)

from .conftest import external_config

TOKEN = "webhook-token-4f1c9e"
HEADS = [HeadRecord("minutes", "box", "", "", 7, bytes(range(32)))]


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Receiver:
    """A webhook on 127.0.0.1: answers each POST with the next status of `statuses` (the
    last one repeats) and keeps what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else (
                    receiver.statuses[0]
                )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/checkpoints?src=prober"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver([200])
    yield found
    found.close()


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout.strip()


def configured(tmp_path: Path, sinks: str, *, anchor: str = "2026-01-01") -> ConfigFile:
    if not (tmp_path / "evidence.key").exists():
        generate_key_pair(tmp_path / "evidence.key")
    path = tmp_path / "config.yaml"
    path.write_text(
        external_config(anchor=anchor)
        + "vantage: here\n"
        + "evidence: {signing_key: {file: evidence.key}}\n"
        + "checkpoints:\n  at: '00:05'\n  sinks:\n"
        + "".join(f"    - {sink}\n" for sink in sinks.strip().splitlines())
    )
    return load_config(path)


def signed(config: ConfigFile, reason: str, now: datetime) -> str:
    key = signing_key(config)
    assert key is not None
    return make_checkpoint(
        key,
        HEADS,
        time=now,
        reason=reason,
        vantage=config.vantage,
        prober_version="test",
        config_sha256=config.digest,
    )


def test_the_file_sink_keeps_one_file_per_checkpoint_or_appends_lines(tmp_path: Path) -> None:
    config = configured(
        tmp_path, "{kind: file, path: out}\n{kind: file, path: all.jsonl, mode: append}"
    )
    texts = [signed(config, "daily", datetime(2026, 11, d, 0, 5, tzinfo=UTC)) for d in (29, 30)]
    for text in texts:
        for sink in config.config.checkpoints.sinks:
            deliver(sink, text, tmp_path)
    deliver(config.config.checkpoints.sinks[0], texts[1], tmp_path)  # a retry: same file
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [
        "checkpoint-20261129T000500Z-here-daily.json",
        "checkpoint-20261130T000500Z-here-daily.json",
    ]
    assert (tmp_path / "out" / files[1]).read_text() == texts[1]
    lines = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(read_checkpoint(line).heads == tuple(HEADS) for line in lines)
    # what the evidence command reads back: every stored one, each still verifiable
    stored = list(stored_checkpoints(config))
    assert len(stored) == 4
    assert {read_checkpoint(text).time.day for _, text in stored} == {29, 30}


def test_the_file_sink_never_overwrites_a_different_checkpoint(tmp_path: Path) -> None:
    config = configured(tmp_path, "{kind: file, path: out}")
    when = datetime(2026, 11, 30, 0, 5, tzinfo=UTC)
    sink = config.config.checkpoints.sinks[0]
    deliver(sink, signed(config, "daily", when), tmp_path)
    with pytest.raises(SinkError, match="exists with other content; not overwritten"):
        deliver(sink, signed(config, "daily", when).replace('"seq": 7', '"seq": 8'), tmp_path)


def test_the_webhook_gets_the_checkpoint_with_its_token(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECKPOINT_TOKEN", TOKEN)
    config = configured(
        tmp_path, f"{{kind: webhook, url: '{receiver.url}', token: {{env: CHECKPOINT_TOKEN}}}}"
    )
    text = signed(config, "manual", datetime(2026, 11, 30, 12, tzinfo=UTC))
    deliver(config.config.checkpoints.sinks[0], text, tmp_path)
    ((path, headers, body),) = receiver.received
    assert path == "/checkpoints?src=prober"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Content-Type"] == "application/json"
    assert read_checkpoint(body.decode()).reason == "manual"


def test_a_webhook_that_refuses_or_is_not_there_is_an_error_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECKPOINT_TOKEN", TOKEN)
    refusing = Receiver([503])
    try:
        gone = Receiver([200])
        gone.close()  # a port nobody listens on any more
        config = configured(
            tmp_path,
            f"{{kind: webhook, url: '{refusing.url}', token: {{env: CHECKPOINT_TOKEN}}}}\n"
            f"{{kind: webhook, url: '{gone.url}', token: {{env: CHECKPOINT_TOKEN}}, timeout: 2s}}",
        )
        text = signed(config, "daily", datetime(2026, 11, 30, tzinfo=UTC))
        first, second = config.config.checkpoints.sinks
        with pytest.raises(SinkError, match="answered HTTP 503, not 2xx") as refused:
            deliver(first, text, tmp_path)
        with pytest.raises(SinkError, match="no answer: ConnectError") as unreachable:
            deliver(second, text, tmp_path)
        assert TOKEN not in str(refused.value) + str(unreachable.value)
    finally:
        refusing.close()


@pytest.fixture
def no_git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """git as on a fresh machine: no user.name anywhere (the sink supplies one)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.mark.usefixtures("no_git_identity")
def test_the_git_sink_commits_each_checkpoint_and_pushes_when_asked(tmp_path: Path) -> None:
    remote = tmp_path / "customer.git"
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    clone = tmp_path / "clone"
    git("init", "-q", str(clone), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=clone)
    config = configured(tmp_path, "{kind: git, repo: clone, push: true, branch: audit}")
    sink = config.config.checkpoints.sinks[0]
    for day in (29, 30):
        deliver(sink, signed(config, "daily", datetime(2026, 11, day, 0, 5, tzinfo=UTC)), tmp_path)
    log = git("log", "--format=%s|%an", "audit", cwd=remote).splitlines()
    assert log == [
        "im-prober checkpoint 2026-11-30T00:05:00+00:00 (daily)|im-prober",
        "im-prober checkpoint 2026-11-29T00:05:00+00:00 (daily)|im-prober",
    ]
    names = git("ls-tree", "--name-only", "audit", "checkpoints/", cwd=remote).splitlines()
    assert names == [
        "checkpoints/checkpoint-20261129T000500Z-here-daily.json",
        "checkpoints/checkpoint-20261130T000500Z-here-daily.json",
    ]
    # the customer's copy verifies on its own
    stored = git("show", f"audit:{names[1]}", cwd=remote)
    assert read_checkpoint(stored + "\n").time.day == 30
    assert len(list(stored_checkpoints(config))) == 2


@pytest.mark.usefixtures("no_git_identity")
def test_a_git_sink_that_cannot_push_says_why_and_a_retry_pushes_without_a_second_commit(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone"
    git("init", "-q", str(clone), cwd=tmp_path)
    git("remote", "add", "origin", str(tmp_path / "not-yet.git"), cwd=clone)
    config = configured(tmp_path, "{kind: git, repo: clone, push: true, timeout: 20s}")
    sink = config.config.checkpoints.sinks[0]
    text = signed(config, "daily", datetime(2026, 11, 30, 0, 5, tzinfo=UTC))
    with pytest.raises(SinkError, match=r"git push failed \(128\): .*not-yet\.git"):
        deliver(sink, text, tmp_path)
    assert len(git("log", "--oneline", cwd=clone).splitlines()) == 1  # committed, not pushed
    git("init", "-q", "--bare", str(tmp_path / "not-yet.git"), cwd=tmp_path)
    deliver(sink, text, tmp_path)
    assert len(git("log", "--oneline", cwd=clone).splitlines()) == 1
    branch = git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone)
    assert git("log", "--format=%s", branch, cwd=tmp_path / "not-yet.git").endswith("(daily)")


def test_a_git_sink_that_is_not_a_repository_is_named_plainly(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    config = configured(tmp_path, "{kind: git, repo: plain}\n{kind: git, repo: nowhere}")
    text = signed(config, "daily", datetime(2026, 11, 30, tzinfo=UTC))
    plain, nowhere = config.config.checkpoints.sinks
    with pytest.raises(SinkError, match="not a git repository"):
        deliver(plain, text, tmp_path)
    with pytest.raises(SinkError, match="no such folder"):
        deliver(nowhere, text, tmp_path)


class Clock:
    def __init__(self, start: str) -> None:
        self.now = at(start)

    def __call__(self) -> float:
        return self.now


def job_for(config: ConfigFile, clock: Clock, made: list[str]) -> CheckpointJob:
    def make(reason: str, now: datetime) -> str:
        made.append(f"{reason} {now:%Y-%m-%dT%H:%M:%S}")
        return signed(config, reason, now)

    return CheckpointJob(lambda: config, make, close_delay=lambda: 3.0, clock=clock)


def test_the_job_writes_at_the_daily_time_and_once_a_service_month_has_closed(
    tmp_path: Path,
) -> None:
    config = configured(tmp_path, "{kind: file, path: out}")  # months start on the 1st, UTC
    clock = Clock("2026-11-29T12:00:00")
    made: list[str] = []
    job = job_for(config, clock, made)
    for instant in (
        "2026-11-29T12:01:00",  # starting is not a checkpoint
        "2026-11-30T00:04:59",
        "2026-11-30T00:05:00",  # daily
        "2026-11-30T00:06:00",
        "2026-12-01T00:00:07",  # the month's last minute closes at 00:00:03, settles 5 s
        "2026-12-01T00:00:08",  # month end
        "2026-12-01T00:01:00",
        "2026-12-01T00:05:30",  # daily
    ):
        clock.now = at(instant)
        job.run()
    assert made == [
        "daily 2026-11-30T00:05:00",
        "month_end 2026-12-01T00:00:08",
        "daily 2026-12-01T00:05:30",
    ]
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_a_month_end_is_each_targets_own(tmp_path: Path) -> None:
    # anchored on the 17th in UTC: the month ends at 17th 00:00, not on the 1st
    config = configured(tmp_path, "{kind: file, path: out}", anchor="2026-03-17")
    clock = Clock("2026-12-01T00:00:30")
    made: list[str] = []
    job = job_for(config, clock, made)
    for instant in ("2026-12-01T00:01:00", "2026-12-17T00:00:09"):
        clock.now = at(instant)
        job.run()
    assert made == ["month_end 2026-12-17T00:00:09"]


def test_a_failing_sink_is_logged_and_tried_again_later_while_the_others_get_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    monkeypatch.setenv("CHECKPOINT_TOKEN", TOKEN)
    flaky = Receiver([503, 503, 200])
    try:
        config = configured(
            tmp_path,
            f"{{kind: webhook, url: '{flaky.url}', token: {{env: CHECKPOINT_TOKEN}}}}\n"
            "{kind: file, path: out}",
        )
        clock = Clock("2026-11-29T12:00:00")
        made: list[str] = []
        job = job_for(config, clock, made)
        clock.now = at("2026-11-30T00:05:00")
        job.run()  # the webhook refuses; the file sink takes it
        assert len(list((tmp_path / "out").iterdir())) == 1
        assert len(flaky.received) == 1
        clock.now += 60
        job.run()  # not yet: failed sinks are tried every RETRY_EVERY
        assert len(flaky.received) == 1
        clock.now += RETRY_EVERY
        job.run()  # refused again
        clock.now += RETRY_EVERY
        job.run()  # taken
        assert len(flaky.received) == 3 and job.pending == {}
        assert made == ["daily 2026-11-30T00:05:00"]  # one checkpoint, sent until it arrived
        bodies = {body for _, _, body in flaky.received}
        assert len(bodies) == 1
    finally:
        flaky.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].getMessage() == "checkpoint not delivered; trying again later"
    assert warnings[0].fields["error"] == "answered HTTP 503, not 2xx"  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text and TOKEN not in json.dumps(
        [getattr(r, "fields", {}) for r in caplog.records], default=str
    )


def test_a_checkpoint_that_cannot_be_made_is_due_again_at_the_next_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER_NAME)
    config = configured(tmp_path, "{kind: file, path: out}")
    clock = Clock("2026-11-29T12:00:00")
    failures = [OSError("disk I/O error")]

    def make(reason: str, now: datetime) -> str:
        if failures:
            raise failures.pop()
        return signed(config, reason, now)

    job = CheckpointJob(lambda: config, make, close_delay=lambda: 3.0, clock=clock)
    clock.now = at("2026-11-30T00:05:00")
    job.run()  # never raises
    assert not (tmp_path / "out").exists()
    assert "could not make a checkpoint; trying at the next run" in caplog.text
    clock.now += 60
    job.run()
    assert [p.name for p in (tmp_path / "out").iterdir()] == [
        "checkpoint-20261130T000600Z-here-daily.json"
    ]


# -- ledger checkpoint / ledger verify --checkpoint, on a real chained ledger ---------------


def ledger_site(tmp_path: Path, failed: set[int] = frozenset()) -> tuple[Path, Path]:
    """A config with a key and a ledger of 30 closed minutes; `failed` of them failed."""
    from prober.ledger.store import Ledger
    from prober.records import Attempt
    from prober.sla import Outcome

    from .ledger_writer import decided

    config = tmp_path / "config.yaml"
    if not config.exists():
        generate_key_pair(tmp_path / "evidence.key")
        config.write_text(
            external_config() + "vantage: here\nevidence: {signing_key: {file: evidence.key}}\n"
        )
    start = int(at("2026-11-01T00:00:00") // 60)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    minutes = []
    for m in range(start, start + 30):
        outcome = Outcome.FAILURE if m - start in failed else Outcome.SUCCESS
        attempt = Attempt("box", "login", m * 60 + 5.5, 0.2, outcome, vantage="here")
        minutes.append(decided("box", m, ("login",), [attempt]))
    ledger.write_minutes(minutes)
    ledger.close()
    return config, tmp_path / "evidence.key.pub"


def test_ledger_verify_proves_the_ledger_still_extends_a_checkpoint(tmp_path: Path, capsys) -> None:
    from .cli_util import run

    config, public = ledger_site(tmp_path)
    out_file = tmp_path / "cp.json"
    code, out, err = run(capsys, "ledger", "checkpoint", "-c", str(config), "--out", str(out_file),
                         "--now", "2026-11-01T00:31:00Z")  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "checkpoint of 2026-11-01T00:31:00+00:00: 3 chain heads, signed by SHA256:" in out
    assert read_checkpoint(out_file.read_text()).reason == "manual"
    code, out, err = run(capsys, "ledger", "checkpoint", "-c", str(config), "--out", str(out_file))
    assert code == 2 and "cannot write: File exists" in err  # never over an earlier one
    code, out, err = run(capsys, "ledger", "verify", "-c", str(config), "--checkpoint",
                         str(out_file), "--key", str(public))  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "checkpoint of 2026-11-01T00:31Z (manual, here), 3 heads, signed by SHA256:" in out
    assert "(the key you trust)" in out
    assert "the ledger still extends checkpoint of 2026-11-01T00:31Z" in out


def test_a_ledger_written_anew_no_longer_extends_the_checkpoint(tmp_path: Path, capsys) -> None:
    from .cli_util import run

    config, public = ledger_site(tmp_path)
    out_file = tmp_path / "cp.json"
    code, _, err = run(capsys, "ledger", "checkpoint", "-c", str(config), "--out", str(out_file),
                       "--now", "2026-11-01T00:31:00Z")  # fmt: skip
    assert code == 0, err
    # the same minutes written again from scratch, one of them failed this time: every chain
    # links, but not through the hashes the checkpoint recorded
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    ledger_site(tmp_path, failed={12})
    code, out, err = run(capsys, "ledger", "verify", "-c", str(config), "--checkpoint",
                         str(out_file), "--key", str(public))  # fmt: skip
    assert code == 1, out + err
    assert (
        "BROKEN: the ledger no longer extends checkpoint of 2026-11-01T00:31Z: first head that "
        "does not hold: minutes of box (target level) seq 30"
    ) in out


def test_a_checkpoint_that_does_not_hold_is_refused_before_the_ledger_is_read(
    tmp_path: Path, capsys
) -> None:
    from .cli_util import run

    config, public = ledger_site(tmp_path)
    out_file = tmp_path / "cp.json"
    run(capsys, "ledger", "checkpoint", "-c", str(config), "--out", str(out_file))
    _, stranger = generate_key_pair(tmp_path / "stranger.key")
    code, _, err = run(capsys, "ledger", "verify", "-c", str(config), "--checkpoint",
                       str(out_file), "--key", str(tmp_path / "stranger.key.pub"))  # fmt: skip
    assert code == 2 and f"not by the key you trust ({stranger.fingerprint})" in err
    forged = tmp_path / "forged.json"
    forged.write_text(out_file.read_text().replace('"seq": 30', '"seq": 29'))
    code, _, err = run(capsys, "ledger", "verify", "-c", str(config), "--checkpoint", str(forged))
    assert code == 2 and "forged.json: not a valid checkpoint: the signature does not hold" in err
    code, _, err = run(capsys, "ledger", "verify", "-c", str(config), "--key", str(public))
    assert code == 2 and "give --checkpoint FILE too" in err


# -- the daemon -----------------------------------------------------------------------------


def daemon_config(tmp_path: Path, at_time: str) -> Path:
    generate_key_pair(tmp_path / "evidence.key")
    config = tmp_path / "config.yaml"
    config.write_text(
        external_config()
        + "vantage: here\nevidence: {signing_key: {file: evidence.key}}\n"
        + f"checkpoints:\n  at: '{at_time}'\n  sinks: [{{kind: file, path: checkpoints}}]\n"
    )
    return config


def test_a_signing_key_that_is_not_one_stops_the_daemon_at_start(tmp_path: Path) -> None:
    import sys

    from .daemon_util import ROOT

    config = daemon_config(tmp_path, "00:05")
    (tmp_path / "evidence.key").write_text("not-a-key-but-a-secret\n")
    result = subprocess.run(
        [sys.executable, "-m", "prober", "run", "-c", str(config),
         "--web.listen-address", "127.0.0.1:0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "evidence.signing_key (file:evidence.key): not a PEM private key" in result.stderr
    assert "not-a-key-but-a-secret" not in result.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("e2e-checkpoints")
def test_the_daemon_writes_the_daily_checkpoint_at_its_time(tmp_path: Path) -> None:
    import time

    from .chat_app import free_port
    from .daemon_util import Daemon, next_minute

    # the daily time is the next whole minute at least 15 s away; the job runs at :30
    minute = next_minute(time.time() + 15)
    at_time = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%H:%M")
    daemon = Daemon(daemon_config(tmp_path, at_time), free_port()).start()
    try:
        folder = tmp_path / "checkpoints"
        deadline = minute * 60 + 60

        def delivered() -> list[Path]:  # not the temporary file the write renames
            found = folder.iterdir() if folder.exists() else []
            return sorted(f for f in found if not f.name.startswith("."))

        while time.time() < deadline and not delivered():
            time.sleep(0.5)
        files = delivered()
        assert len(files) == 1, daemon.log.read_text()
        stamp = datetime.fromtimestamp(minute * 60 + 30, tz=UTC).strftime("%Y%m%dT%H%M")
        assert files[0].name.startswith(f"checkpoint-{stamp}") and files[0].name.endswith(
            "-here-daily.json"
        )
        found = read_checkpoint(files[0].read_text())
        public = (tmp_path / "evidence.key.pub").read_text()
        assert found.public_key.pem == public
        assert {h.table for h in found.heads} >= {"minutes", "attempts"}
        assert "checkpoint delivered" in daemon.log.read_text()
    finally:
        assert daemon.stop() == 0
