"""The documentation a user who clones the repository reads: every file it points to is in
the repository, and the shipped example config validates the way its first line says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from prober.cli import main
from prober.reports.evidence import PACK_FILES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy/README.md"]
# `name.md`, `dir/file.py` … written in backticks or as a Markdown link target.
MENTION = re.compile(r"`([\w./-]+\.(?:md|py|yaml|yml|json|gz|txt))`|\]\(([^)#\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_a_document_points_to_is_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    missing = []
    for match in MENTION.finditer(text):
        name = match.group(1) or match.group(2)
        if name.startswith(("http://", "https://", "mailto:")) or "{" in name:
            continue
        if name in PACK_FILES:  # a file of an evidence pack, not of the repository
            continue
        candidates = [doc.parent / name, ROOT / name, ROOT / "prober" / name]
        found = any(c.exists() for c in candidates) or any(ROOT.rglob(Path(name).name))
        if not found:
            missing.append(name)
    assert missing == [], f"{doc.name} points to files that are not in the repository"


def test_no_document_sends_the_reader_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        for outside in ("DESIGN.md", "PERF_NOTES.md", "STYLE.md", "../shared", "shared/"):
            assert outside not in text, f"{doc.name} mentions {outside}"


def test_the_example_config_validates_as_its_first_lines_say(capsys) -> None:
    head = (ROOT / "config/example.yaml").read_text().splitlines()[1]
    assert head.startswith("# Validate with:  im-prober check-config")
    argv = head.split("im-prober ", 1)[1].split()
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "secret references not read" in out
    assert "<secret from env:MATRIX_PROBE_PASSWORD>" in out


def test_check_config_without_skip_secrets_names_each_unset_variable(capsys) -> None:
    code = main(["check-config", "-c", str(ROOT / "config/example.yaml")])
    assert code == 2
    err = capsys.readouterr().err
    assert "environment variable TENCENT_IM_SECRET_KEY is not set" in err
    assert "example.yaml:" in err


def test_make_outage_without_a_running_demo_says_so(tmp_path: Path) -> None:
    for pid_file in (None, "999999999\n"):  # no pid file; a pid file left by a dead demo
        if pid_file is not None:
            (tmp_path / "demo.pid").write_text(pid_file)
        result = subprocess.run(
            ["make", "-s", "-C", str(ROOT), "outage", f"DEMO_DIR={tmp_path}"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        )
        assert result.returncode != 0
        assert "no demo is running" in result.stderr
        assert "No such file" not in result.stderr


def test_make_outage_signals_a_running_demo(tmp_path: Path) -> None:
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys\n"
            "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
            "print('ready', flush=True)\n"
            "signal.sigwait({signal.SIGUSR1})\n"
            "sys.exit(7)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        (tmp_path / "demo.pid").write_text(f"{waiter.pid}\n")
        assert waiter.stdout is not None and waiter.stdout.readline() == "ready\n"
        result = subprocess.run(
            ["make", "-s", "-C", str(ROOT), "outage", f"DEMO_DIR={tmp_path}"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        )
        assert result.returncode == 0, result.stderr
        assert waiter.wait(10) == 7
    finally:
        waiter.kill()
