"""Hostile configs: deep nesting, alias bombs, huge files, secrets that never end. Loading is
bounded: `check-config` gives one clear error naming the file and line, quickly and in little
memory, and a running daemon's reload keeps the old config, says so in one log line and sets
im_config_last_reload_successful to 0, whatever the cause."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .chat_app import free_port
from .conftest import external_config
from .daemon_util import ROOT, Daemon, sample

GOOD = external_config(timeout="5s")

# Generous: today these end in seconds-to-minutes and gigabytes, or never.
WALL_LIMIT = 20.0
RSS_LIMIT_KB = 400 * 1024


def nested_lists(depth: int) -> str:
    return GOOD + "x: " + "[" * depth + "]" * depth + "\n"


def alias_bomb(levels: int = 9) -> str:
    """A billion laughs: nine levels of nine aliases stand for 9^9 strings."""
    lines = ['  a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"  a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]")
    return GOOD + "x:\n" + "\n".join(lines) + "\n"


def with_secret(path: str) -> str:
    return GOOD.replace('command: ["true"]', f'command: ["true"], env: {{KEY: {{file: {path}}}}}')


def check_config(config: Path, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """Run `check-config` as a real process; returns its exit code, stderr and peak RSS (KiB).
    Killed (and the test failed) if it runs past WALL_LIMIT."""
    err = Path(os.environ.get("TMPDIR", "/tmp")) if config.parent == Path("/dev") else config.parent
    err = err / f"stderr-{os.getpid()}.txt"
    with err.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prober", "check-config", "-c", str(config)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=handle,
        )
    deadline = time.monotonic() + WALL_LIMIT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, err.read_text(), usage.ru_maxrss
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"check-config still running after {WALL_LIMIT:.0f}s")
        time.sleep(0.05)


def assert_clean_error(config: Path, expected: str) -> None:
    code, err, rss = check_config(config)
    assert code == 2, err
    assert err.startswith(f"im-prober: error: {config}"), err
    assert expected in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.splitlines()) == 1
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"


def test_five_thousand_nested_lists_are_a_clean_error_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(nested_lists(5000))
    code, err, _ = check_config(config)
    assert code == 2 and f"{config}:8: " in err and "nest" in err, err
    assert "RecursionError" not in err and "Traceback" not in err


def test_nesting_past_the_limit_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD + "x:\n" + "".join(f"{'  ' * (i + 1)}k{i}:\n" for i in range(80)))
    assert_clean_error(config, "nested deeper than 64 levels")
    assert f"{config}:72: " in check_config(config)[1]  # k63: the 65th mapping


def test_a_billion_laughs_is_refused_at_the_alias_that_overflows(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(alias_bomb())
    assert_clean_error(config, "aliases make the document larger by more than 100,000 values")
    assert f"{config}:14: " in check_config(config)[1]  # a5 passes 100,000


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD + "x: &loop [1, *loop]\n")
    assert_clean_error(config, f"{config}:8: alias *loop refers to a value that contains it")


def test_a_config_past_sixteen_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD + "# " + "x" * (16 << 20) + "\n")
    assert_clean_error(config, "the file is larger than 16 MiB")


def test_a_large_plain_config_is_not_taken_for_a_bomb(tmp_path: Path) -> None:
    # 10,000 targets' worth of plain values (the scale goal), no alias: it loads. Run in a
    # process of its own, so this worker's memory stays small for the RSS measurements.
    code = (
        "from prober.config.yamlsource import load_yaml\n"
        "text = 'items:\\n' + ''.join(f'  - {{name: t{i}, a: 1, b: 2, c: [x, y, z]}}\\n'"
        " for i in range(60_000))\n"
        "print(len(load_yaml(text).data['items']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "60000"


def test_dev_zero_as_the_config_is_refused(tmp_path: Path) -> None:
    code, err, rss = check_config(Path("/dev/zero"))
    assert code == 2 and "/dev/zero: the file is larger than 16 MiB" in err, err
    assert rss < RSS_LIMIT_KB


def test_an_integer_too_long_to_convert_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD + "x: " + "9" * 5000 + "\n")
    assert_clean_error(config, f"{config}:8: this integer has too many digits")


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory", "too_big"])
def test_secret_files_are_read_bounded_and_only_from_regular_files(
    tmp_path: Path, kind: str
) -> None:
    if kind == "dev_zero":
        source, expected = "/dev/zero", "secret file /dev/zero is not a regular file"
    elif kind == "fifo":
        os.mkfifo(tmp_path / "key.fifo")  # nobody ever writes to it
        source, expected = "key.fifo", "secret file key.fifo is not a regular file"
    elif kind == "directory":
        (tmp_path / "keys").mkdir()
        source, expected = "keys", "secret file keys is not a regular file"
    else:
        (tmp_path / "key.txt").write_text("k" * (65 << 10))
        source, expected = "key.txt", "secret file key.txt is larger than 64 KiB"
    config = tmp_path / "config.yaml"
    config.write_text(with_secret(source))
    assert_clean_error(config, f"{config}:5: targets[0].external.env.KEY: {expected}")


def test_a_secret_file_of_64_kib_is_still_read(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("k" * (64 << 10))
    config = tmp_path / "config.yaml"
    config.write_text(with_secret("key.txt"))
    code, err, _ = check_config(config)
    assert code == 0, err


def test_thousands_of_distinct_secrets_load_in_linear_time(tmp_path: Path) -> None:
    names = [f"IM_BOMB_SECRET_{i}" for i in range(3000)]
    env = ", ".join(f"V{i}: {{env: {name}}}" for i, name in enumerate(names))
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace('command: ["true"]', f'command: ["true"], env: {{{env}}}'))
    code, err, _ = check_config(config, {name: f"value-of-{name}" for name in names})
    assert code == 0, err


def test_one_secret_referenced_through_aliases_is_read_once(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("k" * (60 << 10))
    refs = "[" + ", ".join(["*key"] * 20_000) + "]"
    config = tmp_path / "config.yaml"
    config.write_text(
        GOOD.replace('command: ["true"]', 'command: ["true"], env: {KEY: &key {file: key.txt}}')
        + f"x: {refs}\n"
    )
    code, err, rss = check_config(config)
    assert code == 2 and f"{config}:8: x: unknown key" in err, err
    # read once: 20,000 reads of 60 KiB would pass the 4 MiB budget and say so
    assert "add up to" not in err, err
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss} KiB"  # not 20,000 copies of 60 KiB


def test_secret_files_adding_up_past_four_mib_are_refused(tmp_path: Path) -> None:
    for i in range(70):
        (tmp_path / f"key{i}.txt").write_text(f"{i:02d}" * (32 << 10))
    env = ", ".join(f"K{i}: {{file: key{i}.txt}}" for i in range(70))
    config = tmp_path / "config.yaml"
    config.write_text(GOOD.replace('command: ["true"]', f'command: ["true"], env: {{{env}}}'))
    code, err, _ = check_config(config)
    # each reference past the budget is named; the first 64 fit (4 MiB)
    assert code == 2 and err.startswith(f"im-prober: error: {config}:5: "), err
    assert "targets[0].external.env.K64: the secrets add up to more than 4 MiB" in err
    assert "K63" not in err and "Traceback" not in err


BOMBS = {
    "nesting": lambda tmp: nested_lists(5000),
    "aliases": lambda tmp: alias_bomb(),
    "dev_zero_secret": lambda tmp: with_secret("/dev/zero"),
    "fifo_secret": lambda tmp: (os.mkfifo(tmp / "key.fifo"), with_secret("key.fifo"))[1],
}


def test_sighup_with_each_bomb_keeps_the_config_and_reports_failure(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(GOOD)
    daemon = Daemon(config, free_port())
    daemon.start()

    def reload_result(expected: float) -> None:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while sample(daemon.metrics(), "im_config_last_reload_successful") != expected:
            assert time.time() < deadline, f"reload did not report {expected}"
            time.sleep(0.1)

    try:
        for name, bomb in BOMBS.items():
            config.write_text(bomb(tmp_path))
            reload_result(0)
            assert daemon.get("/healthz")[0] == 200, name
            config.write_text(GOOD)
            reload_result(1)
    finally:
        assert daemon.stop() == 0
    log = daemon.log.read_text()
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == len(BOMBS), log
    assert "never retrieved" not in log and "Traceback" not in log
    assert "RecursionError" not in log and "MemoryError" not in log
    assert "nested deeper" in failures[0] or "nesting depth" in failures[0]
    assert "larger by more than 100,000 values" in failures[1]
    assert "/dev/zero is not a regular file" in failures[2]
    assert "key.fifo is not a regular file" in failures[3]
    assert log.count("configuration reloaded") == len(BOMBS)


def test_long_and_short_secrets_are_both_scrubbed() -> None:
    from prober.config.secrets import REDACTED, redact, remember

    long_secret = "-----BEGIN KEY-----" + "k" * 4000 + "-----END KEY-----"
    remember(long_secret)
    remember("short-canary-7c1f")
    text = f"a {long_secret} b short-canary-7c1f c {long_secret[:-1]}"
    scrubbed = redact(text)
    assert long_secret not in scrubbed and "short-canary-7c1f" not in scrubbed
    assert scrubbed.startswith(f"a {REDACTED} b {REDACTED} c ")
