"""The commands run in-process (prober.cli.main), as the CLI's tests call them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from prober.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """`im-prober <argv>`: its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def on_demo(capsys, config: Path, *argv: str) -> tuple[int, str, str]:
    """`im-prober <argv> -c <config> --target demo` (the demo config's one target)."""
    return run(capsys, *argv, "-c", str(config), "--target", "demo")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
