"""The ledger and its files against hostile or careless use: future and implausible minutes,
spreadsheet formulas in CSV cells, read-only ledgers (for the commands and the daemon), two
daemons on one ledger, compression bombs, evidence folders that are not empty."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from prober.config.models import parse_config
from prober.ledger.store import SCHEMA_VERSION, Ledger, MinuteRow
from prober.records import Attempt, ClosedMinute
from prober.reports.chain_files import FILES as CHAIN_FILES
from prober.runtime.prober import Prober
from prober.sla import Outcome, OutcomeCounts, Reason, State, Verdict, minute_iso

from .chat_app import free_port
from .cli_util import digest, on_demo, run
from .conftest import BASE_TARGET, external_config
from .daemon_util import ROOT, Daemon, cli, run_in_foreground, sample
from .ledger_backends import Backend
from .runtime_util import BASE, FakeClock

MARCH_1 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()) // 60
HEADER = "target,probe,minute,state,reason\n"


def now_minute() -> int:
    return int(time.time() // 60)


def available(target: str, minute: int) -> ClosedMinute:
    return ClosedMinute(target, minute, Verdict(State.AVAILABLE), OutcomeCounts(1))


def failed(target: str, minute: int, detail: str = "no answer", kind: str = "timeout"):
    attempt = Attempt(
        target, "login", minute * 60 + 3, 1.0, Outcome.FAILURE, kind, None, None, detail
    )
    return ClosedMinute(
        target,
        minute,
        Verdict(State.APPARENT_FAILURE),
        OutcomeCounts(failure=1),
        {"login": (Verdict(State.APPARENT_FAILURE), OutcomeCounts(failure=1))},
        [attempt],
    )


@pytest.fixture
def march_ledger(backend: Backend, write_config) -> Path:
    """The demo config on either backend, its ledger with an hour of available minutes on
    2026-03-01."""
    config = write_config(backend.config_ledger() + "\ntargets:\n" + BASE_TARGET)
    with backend.open("ledger") as ledger:
        ledger.write_minutes([available("demo", MARCH_1 + i) for i in range(60)])
    return config


# -- read-only files, as the tests (root) can make them ------------------------------------


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` cannot be written, even by root (chattr +i), until the block ends."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a file immutable here (chattr +i): {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


@contextlib.contextmanager
def read_only_view(folder: Path, view: Path) -> Iterator[Path]:
    """`folder` seen through a read-only bind mount at `view` (nothing in it can be written
    or created there, even by root), until the block ends."""
    view.mkdir()
    done = subprocess.run(
        f"mount --bind '{folder}' '{view}' && mount -o remount,bind,ro '{view}'",
        shell=True,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        subprocess.run(["umount", str(view)], check=False, capture_output=True)
        pytest.skip(f"cannot bind-mount a folder read-only here: {done.stderr.strip()}")
    try:
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


# -- case 2: minutes that have not ended ---------------------------------------------------


def test_import_refuses_minutes_that_have_not_ended_naming_their_lines(
    march_ledger: Path, backend: Backend, capsys, tmp_path: Path
) -> None:
    before = backend.snapshot("ledger")
    tomorrow = minute_iso(now_minute() + 1440)
    current = minute_iso(now_minute())
    bad = tmp_path / "future.csv"
    bad.write_text(
        HEADER
        + "demo,,2026-03-02T00:00:00Z,available,\n"
        + f"demo,,{tomorrow},apparent_failure,\n"
        + f"demo,,{current},available,\n"
    )
    code, out, err = run(capsys, "ledger", "import", "-c", str(march_ledger), str(bad))
    assert code == 2 and out == ""
    assert f"future.csv:3: minute {tomorrow} has not ended yet" in err
    assert f"future.csv:4: minute {current} has not ended yet" in err
    assert backend.snapshot("ledger") == before


def test_a_future_row_is_not_the_newest_closed_minute_and_the_month_agrees_with_report(
    tmp_path: Path,
) -> None:
    # The current service month began yesterday at 00:00 UTC, so the minutes below are in it.
    anchor = (datetime.now(UTC).date() - timedelta(days=1)).replace(year=2025, month=1)
    config = tmp_path / "config.yaml"
    config.write_text(external_config(timeout="5s", anchor=anchor))
    start = now_minute()
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        ledger.write_minutes(
            [
                failed("box", start - 10 + i) if i < 3 else available("box", start - 10 + i)
                for i in range(10)
            ]
        )
        # What an import let in before it checked: a failed minute tomorrow.
        ledger.import_rows([(2, MinuteRow("box", "", start + 1440, State.APPARENT_FAILURE))])
    daemon = Daemon(config, free_port()).start()
    try:
        metrics = daemon.metrics()
    finally:
        assert daemon.stop() == 0
    last = sample(metrics, "im_last_closed_minute_timestamp_seconds", target="box")
    assert last is not None and (start - 1) * 60 <= last <= time.time() - 60
    assert sample(metrics, "im_sla_downtime_seconds", target="box") == 180
    # The same month from `report`, as of the end of the daemon's newest closed minute.
    now = datetime.fromtimestamp(last + 60, UTC).isoformat()
    report = json.loads(cli(config, "report", "--target", "box", "--format", "json", "--now", now))
    assert report["minutes"]["apparent_failure"] * 60 == 180
    assert sample(metrics, "im_sla_availability_ratio", target="box") == pytest.approx(
        report["sla_availability"]
    )
    assert sample(metrics, "im_sla_coverage_ratio", target="box") == pytest.approx(
        report["coverage"]
    )
    log = daemon.log.read_text()
    assert "the ledger holds minutes that have not ended yet" in log and "rows=1" in log


# -- case 8 (ledger parts): implausible minutes, unknown probes, bombs ------------------------


def test_import_refuses_minutes_before_2000_and_export_writes_four_digit_years(
    march_ledger: Path, backend: Backend, capsys, tmp_path: Path
) -> None:
    from prober.ledger.minute_csv import parse_minute

    bad = tmp_path / "old.csv"
    bad.write_text(HEADER + "demo,,0001-01-01T00:00:00Z,available,\n")
    code, _, err = run(capsys, "ledger", "import", "-c", str(march_ledger), str(bad))
    assert code == 2 and "old.csv:2: minute 0001-01-01T00:00:00Z is before 2000-01-01" in err
    # A ledger that let such a row in (an older version did) still exports it readably.
    year_one = int(datetime(1, 1, 1, tzinfo=UTC).timestamp()) // 60
    with backend.open("ledger") as ledger:
        ledger.import_rows([(2, MinuteRow("demo", "", year_one, State.AVAILABLE))])
    code, out, _ = run(
        capsys, "ledger", "export", "-c", str(march_ledger), "--until", "2000-01-01T00:00:00Z"
    )
    assert code == 0 and out.splitlines() == [
        HEADER.strip(),
        "demo,,0001-01-01T00:00:00Z,available,",
    ]
    assert parse_minute("0001-01-01T00:00:00Z") == year_one


def test_import_refuses_a_probe_the_config_does_not_have(
    march_ledger: Path, backend: Backend, capsys, tmp_path: Path
) -> None:
    before = backend.snapshot("ledger")
    bad = tmp_path / "probes.csv"
    bad.write_text(
        HEADER
        + "demo,login,2026-03-02T00:00:00Z,available,\n"
        + "demo,send_group,2026-03-02T00:00:00Z,available,\n"
    )
    code, _, err = run(capsys, "ledger", "import", "-c", str(march_ledger), str(bad))
    assert code == 2
    assert "probes.csv:3: target demo has no probe 'send_group' in the config" in err
    assert ":2:" not in err  # login is one of demo's probes
    assert backend.snapshot("ledger") == before


def _limited_memory() -> None:
    limit = 1024 * 1024 * 1024  # 1 GiB of address space: a 4 GiB bomb cannot be held
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        (b"\n", "more than 1,000,000 rows; import it in pieces"),
        (b"0", "bomb.csv.gz:2: line longer than 4096 characters"),
    ],
)
def test_a_gzip_bomb_ends_in_one_clear_error_within_bounded_memory(
    march_ledger: Path, backend: Backend, tmp_path: Path, unit: bytes, message: str
) -> None:
    before = backend.snapshot("ledger")
    # 4 MiB of gzip members, each 1 MiB once inflated: 4 GiB of text.
    member = gzip.compress(unit * 1024 * 1024, compresslevel=9)
    bomb = tmp_path / "bomb.csv.gz"
    with bomb.open("wb") as out:
        out.write(gzip.compress(HEADER.encode()))
        for _ in range(4096):
            out.write(member)
    done = subprocess.run(
        [sys.executable, "-m", "prober", "ledger", "import", "-c", str(march_ledger), str(bomb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited_memory,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert backend.snapshot("ledger") == before


# -- case 4: spreadsheet formulas ---------------------------------------------------------


def test_csv_cells_neutralise_formulas_and_read_back_exactly() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    from prober.ledger.csv_cells import FORMULA_STARTS, cell, plain

    assert cell("=cmd|' /C calc'!A0") == "'=cmd|' /C calc'!A0"
    assert cell("-demo") == "'-demo" and cell("demo") == "demo" and cell(None) == ""
    assert cell(-5) == "'-5" and cell(42) == "42"

    @given(st.text(max_size=20))
    def round_trip(text: str) -> None:
        written = cell(text)
        assert not written.startswith(FORMULA_STARTS)
        assert plain(written) == text

    round_trip()


def test_every_csv_the_prober_writes_neutralises_formula_cells(
    write_config, capsys, tmp_path: Path
) -> None:
    # A target named like a negative number, an attempt whose detail is a DDE formula.
    config = write_config(
        "ledger: {path: ledger.sqlite3}\ntargets:\n"
        + BASE_TARGET.replace("name: demo", "name: -demo")
    )
    with Ledger(config.parent / "ledger.sqlite3") as ledger:
        ledger.write_minutes(
            [
                available("-demo", MARCH_1 + 24 * 60 * 20),
                failed("-demo", MARCH_1 + 24 * 60 * 20 + 1, "=cmd|' /C calc'!A0", "@kind"),
            ]
        )
    out_dir = tmp_path / "pack"
    common = ("-c", str(config), "--target=-demo", "--month", "2026-03")
    code, _, err = run(
        capsys, "evidence", *common, "--out", str(out_dir), "--now", "2026-06-10T00:00:00Z"
    )
    assert (code, err) == (0, "")
    with (out_dir / "attempts.csv").open(newline="") as handle:
        [attempt] = list(csv.DictReader(handle))
    assert attempt["detail"] == "'=cmd|' /C calc'!A0"
    assert attempt["error_kind"] == "'@kind"
    raw = (out_dir / "attempts.csv").read_text() + (out_dir / "failed_minutes.csv").read_text()
    for line in raw.splitlines():
        for value in next(csv.reader([line])):
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), line

    code, out, _ = run(
        capsys, "report", *common, "--format", "csv", "--now", "2026-06-10T00:00:00Z"
    )
    assert code == 0 and dict(csv.reader(io.StringIO(out)))["target"] == "'-demo"

    code, exported, _ = run(capsys, "ledger", "export", "-c", str(config))
    assert code == 0
    assert exported.splitlines()[1].startswith("'-demo,,2026-03-21T00:00:00Z,available,")
    # ... and import reads its own escaping back: the same rows, the same export
    other = tmp_path / "other"
    other.mkdir()
    other_config = other / "config.yaml"
    other_config.write_text(config.read_text())
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(exported)
    code, out, err = run(capsys, "ledger", "import", "-c", str(other_config), str(csv_path))
    assert (code, err) == (0, "") and "3 minute rows added" in out
    with Ledger(other / "ledger.sqlite3", readonly=True) as copy:
        assert {r.target for r in copy.minute_rows()} == {"-demo"}
    assert run(capsys, "ledger", "export", "-c", str(other_config))[1] == exported


# -- case 5: read-only ledgers --------------------------------------------------------------


def test_read_commands_work_on_a_ledger_in_a_read_only_folder(
    demo_config: Path, capsys, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with Ledger(store / "ledger.sqlite3") as ledger:
        ledger.write_minutes(
            [available("demo", MARCH_1 + 24 * 60 * 20 + i) for i in range(5)]
            + [failed("demo", MARCH_1 + 24 * 60 * 20 + 5)]
        )
    before = digest(store / "ledger.sqlite3")
    with read_only_view(store, tmp_path / "ro") as view:
        config = tmp_path / "ro-config.yaml"
        config.write_text(
            demo_config.read_text().replace("ledger.sqlite3", str(view / "ledger.sqlite3"))
        )
        common = ("-c", str(config), "--target", "demo", "--month", "2026-03")
        now = ("--now", "2026-06-10T00:00:00Z")
        code, out, err = run(capsys, "report", *common, "--format", "json", *now)
        assert (code, err) == (0, "")
        assert json.loads(out)["minutes"]["apparent_failure"] == 1
        code, out, err = run(capsys, "ledger", "export", "-c", str(config))
        assert (code, err) == (0, "") and len(out.splitlines()) == 1 + 6 + 1  # + the probe row
        code, out, err = run(capsys, "evidence", *common, "--out", str(tmp_path / "pack"), *now)
        assert (code, err) == (0, "") and "(1 failed minutes)" in out
    assert digest(store / "ledger.sqlite3") == before
    assert sorted(os.listdir(store)) == ["ledger.sqlite3"]


def test_read_commands_leave_an_empty_file_untouched(demo_config: Path, capsys) -> None:
    path = demo_config.parent / "ledger.sqlite3"
    path.write_bytes(b"")
    for argv in (
        ("report", "-c", str(demo_config), "--target", "demo", "--month", "2026-04"),
        ("ledger", "export", "-c", str(demo_config)),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "an empty file, not a ledger yet" in err, err
    assert path.read_bytes() == b""
    assert sorted(os.listdir(path.parent)) == ["config.yaml", "ledger.sqlite3"]


def test_read_commands_explain_a_ledger_they_cannot_read_as_it_is(
    demo_config: Path, capsys
) -> None:
    path = demo_config.parent / "ledger.sqlite3"
    # An SQLite database with nothing in it (made with the sqlite3 shell, say)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE scratch (x)")
    db.execute("DROP TABLE scratch")
    db.close()
    before = digest(path)
    argv = ("report", "-c", str(demo_config), "--target", "demo", "--month", "2026-04")
    code, _, err = run(capsys, *argv)
    assert code == 2 and "an empty database, not a ledger yet" in err
    assert digest(path) == before
    # ... which `ledger migrate` turns into a ledger; then it reads
    code, out, err = run(capsys, "ledger", "migrate", "-c", str(demo_config))
    assert (code, err) == (0, "") and "up to date" in out
    assert run(capsys, *argv, "--now", "2026-06-10T00:00:00Z")[0] == 0
    # A ledger of an older schema is not upgraded by a command that only reads
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 0")
    db.close()
    before = digest(path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"ledger schema 0 is older than this version's {SCHEMA_VERSION}" in err
    assert "ledger migrate" in err
    assert digest(path) == before


def test_a_ledger_opened_while_read_only_writes_once_the_file_is_writable(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Ledger(path).close()
    with immutable(path):
        ledger = Ledger(path)  # SQLite opens the file read-only, and says so only on writes
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ledger.write_minutes([available("a", MARCH_1)])
    # SQLite keeps a connection it opened read-only read-only: the ledger opens it afresh
    assert ledger.write_minutes([available("a", MARCH_1)]) == [available("a", MARCH_1)]
    assert ledger.last_closed_minute("a") == MARCH_1
    ledger.close()


def test_a_prober_started_on_a_read_only_ledger_buffers_and_records_the_gap_later(
    tmp_path: Path,
) -> None:
    text = external_config("t")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    start = int(BASE // 60)
    ledger_path = tmp_path / "ledger.sqlite3"
    with Ledger(ledger_path) as ledger:
        ledger.write_minutes([available("t", start - 20 + i) for i in range(10)])  # to start-11

    async def scenario() -> None:
        clock = FakeClock(BASE + 5)
        with immutable(ledger_path):
            ledger = Ledger(ledger_path)
            prober = Prober(parse_config(text, path), ledger, clock=clock)
            await prober.start()  # the ten missed minutes cannot be written: no crash
            assert prober.readiness() == (False, "ledger not writable")
            assert prober.stats.ledger_write_errors == 1
            assert prober.writer.dropped == {"t": (("login",), start - 10, start)}
            clock.now = (start + 1) * 60 + 30  # past the stall limit: closes even if busy
            await prober.clockwork.close_due()  # the first minute closes into the write buffer
            assert sum(len(b) for b in prober.writer.pending) == 1
            assert prober.stats.ledger_write_errors == 2
        clock.now += 1  # writable again: the next tick writes the buffer, then the gap
        await prober.clockwork.close_due()
        assert prober.writer.ok and not prober.writer.pending and not prober.writer.dropped
        rows = {r.minute: (r.state, r.reason) for r in ledger.minute_rows("t") if not r.probe}
        down = (State.NO_DATA, Reason.PROBER_DOWN)
        assert [rows[m] for m in range(start - 10, start)] == [down] * 10
        assert start in rows and len(rows) == 21  # the buffered minute, as it was decided
        await prober.stop()
        ledger.close()

    asyncio.run(scenario())


def _box_config(tmp_path: Path, ledger: str = "ledger.sqlite3", per_minute: int = 1) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(external_config(ledger=ledger, per_minute=per_minute))
    return config


def test_a_daemon_on_a_read_only_ledger_starts_probes_and_says_so(tmp_path: Path) -> None:
    config = _box_config(tmp_path, per_minute=30)
    ledger_path = tmp_path / "ledger.sqlite3"
    with Ledger(ledger_path) as ledger:  # its newest minute 30 minutes ago: a gap to record
        ledger.write_minutes([available("box", now_minute() - 40 + i) for i in range(10)])
    with immutable(ledger_path):
        daemon = Daemon(config, free_port()).start()
        try:
            deadline = time.time() + 15
            while True:
                metrics = daemon.metrics()
                count = sample(
                    metrics, "im_probe_duration_seconds_count", target="box", probe="login"
                )
                if count:
                    break
                assert time.time() < deadline, "no attempt ran"
                time.sleep(0.5)
            assert daemon.get("/readyz") == (503, "ledger not writable\n")
            assert (sample(metrics, "im_ledger_write_errors_total") or 0) >= 1
        finally:
            assert daemon.stop() == 0
    log = daemon.log.read_text()
    assert "minutes missed while the prober was down are kept in memory" in log
    assert "Traceback" not in log and "internal error" not in log


# -- case 6: one daemon per ledger ------------------------------------------------------------


def test_the_ledger_lock_is_held_once_and_names_its_holder(tmp_path: Path) -> None:
    from prober.errors import UserError
    from prober.ledger.lock import LedgerLock

    ledger_path = tmp_path / "data" / "ledger.sqlite3"
    held = LedgerLock.acquire(ledger_path)
    with pytest.raises(
        UserError, match=rf"ledger.sqlite3: another im-prober daemon \(pid {os.getpid()}\)"
    ):
        LedgerLock.acquire(ledger_path, wait=0.3)
    held.release()
    LedgerLock.acquire(ledger_path).release()


def test_a_second_daemon_on_the_same_ledger_is_refused_until_the_first_is_gone(
    tmp_path: Path,
) -> None:
    config = _box_config(tmp_path)
    first = Daemon(config, free_port()).start()
    assert first.proc is not None
    second = run_in_foreground(config, f"127.0.0.1:{free_port()}")
    assert second.returncode == 2, second.stderr
    assert str(tmp_path / "ledger.sqlite3") in second.stderr
    assert f"another im-prober daemon (pid {first.proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    # A SIGKILL leaves no stale lock: the kernel released it with the process.
    first.stop(signal.SIGKILL)
    replacement = Daemon(config, free_port()).start()
    assert replacement.get("/healthz")[0] == 200
    assert replacement.stop() == 0


# -- case 8: evidence folders, future months ---------------------------------------------------


def test_evidence_refuses_a_folder_that_is_not_empty_unless_force_and_never_foreign_files(
    march_ledger: Path, capsys, tmp_path: Path
) -> None:
    pack_files = [
        "SHA256SUMS",
        "attempts.csv",
        "failed_minutes.csv",
        "failed_minutes.json",
        "report.html",
        "report.json",
        "report.txt",
        "summary.json",
        *CHAIN_FILES,  # the month's chained rows (an unsigned pack: no key, no signature)
    ]

    def evidence(out: Path, *extra: str) -> tuple[int, str, str]:
        return on_demo(
            capsys,
            march_ledger,
            "evidence",
            "--month",
            "2026-03",
            "--out",
            str(out),
            "--now",
            "2026-06-10T00:00:00Z",
            *extra,
        )

    pack = tmp_path / "pack"
    assert evidence(pack)[0] == 0
    first = {name: digest(pack / name) for name in pack_files}
    code, _, err = evidence(pack)
    assert code == 2 and "not empty" in err and "--force" in err
    code, _, err = evidence(pack, "--force")  # an earlier pack is replaced
    assert (code, err) == (0, "")
    assert sorted(os.listdir(pack)) == sorted(pack_files)
    assert digest(pack / "report.txt") == first["report.txt"]
    sums = dict(
        reversed(line.split("  ")) for line in (pack / "SHA256SUMS").read_text().splitlines()
    )
    assert sums == {name: digest(pack / name) for name in pack_files if name != "SHA256SUMS"}

    (pack / "notes.txt").write_text("mine\n")
    code, _, err = evidence(pack, "--force")
    assert code == 2 and "not part of an evidence pack (notes.txt)" in err
    assert (pack / "notes.txt").read_text() == "mine\n"
    assert sorted(os.listdir(pack)) == sorted([*pack_files, "notes.txt"])

    # a pack name planted as a link to a file elsewhere is not written through
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep\n")
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "attempts.csv").symlink_to(elsewhere)
    code, _, err = evidence(trap, "--force")
    assert code == 2 and "attempts.csv" in err
    assert elsewhere.read_text() == "keep\n"


def test_a_report_of_a_month_that_has_not_started_says_so_once(march_ledger: Path, capsys) -> None:
    argv = ("report", "--month", "2026-09", "--now", "2026-06-10T00:00:00Z")
    for fmt in ("text", "html"):
        code, out, _ = on_demo(capsys, march_ledger, *argv, "--format", fmt)
        assert code == 0
        assert "(in progress)" not in out
        assert "(not started yet)" in out and "NO DATA: the service month starts 2026-09-17" in out


def test_a_report_of_a_month_just_begun_is_in_progress(march_ledger: Path, capsys) -> None:
    code, out, _ = on_demo(
        capsys, march_ledger, "report", "--month", "2026-03", "--now", "2026-03-17T00:00:30+08:00"
    )
    assert code == 0 and "(in progress)" in out
    assert "NO DATA: no minute of the service month has ended yet" in out
    assert "not started" not in out
