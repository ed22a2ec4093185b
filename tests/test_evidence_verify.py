"""Signed evidence packs: made from a real chained ledger with a real key, checked by
`im-prober evidence verify` in another folder with nothing but the pack and the public key
(a subprocess, no config, no ledger); every kind of tampering is caught and named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from prober.ledger import chain
from prober.ledger.store import Ledger
from prober.records import Attempt
from prober.reports.chain_files import MINUTE_ROWS, SEGMENT, header
from prober.reports.signing import generate_key_pair
from prober.sla import Outcome, epoch_minute

from .cli_util import run
from .conftest import external_config
from .ledger_writer import decided

ROOT = Path(__file__).resolve().parents[1]
START = epoch_minute(datetime(2026, 11, 1, tzinfo=UTC))  # the service month's first minute
FAILED = {START + 30 + i for i in range(5)} | {START + 150}
CUT = START + 120  # the checkpoint is taken after this many minutes


def attempts_of(minute: int) -> list[Attempt]:
    failed = minute in FAILED
    return [
        Attempt(
            "box",
            "login",
            minute * 60 + 7.123456789,
            0.25 + minute % 7 / 1000,
            Outcome.FAILURE if failed else Outcome.SUCCESS,
            "timeout" if failed else "",
            None,
            503 if failed else None,
            "no answer within 1s" if failed else "",
            vantage="here",
        )
    ]


def write(ledger_path: Path, minutes: range) -> None:
    ledger = Ledger(ledger_path)
    try:
        ledger.write_minutes([decided("box", m, ("login",), attempts_of(m)) for m in minutes])
    finally:
        ledger.close()


class Site:
    """A prober's folder: config, key, ledger, checkpoint folder."""

    def __init__(self, root: Path, *, signed: bool = True) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.yaml"
        text = external_config(anchor="2026-01-01") + "vantage: here\n"
        if signed:
            generate_key_pair(root / "evidence.key")
            text += "evidence: {signing_key: {file: evidence.key}}\n"
            text += "checkpoints:\n  sinks: [{kind: file, path: checkpoints}]\n"
        self.config.write_text(text)
        self.public_key = root / "evidence.key.pub"
        self.ledger = root / "ledger.sqlite3"

    def pack(self, capsys, name: str = "pack", now: str = "2026-11-01T06:00:00Z") -> Path:
        out = self.root / name
        code, _, err = run(
            capsys, "evidence", "-c", str(self.config), "--target", "box", "--month", "2026-11",
            "--out", str(out), "--now", now,
        )  # fmt: skip
        assert (code, err) == (0, ""), err
        return out


@pytest.fixture
def site(tmp_path: Path, capsys) -> Site:
    """Six hours of a service month; a checkpoint after the first two."""
    made = Site(tmp_path / "prober")
    write(made.ledger, range(START, CUT))
    code, out, err = run(
        capsys, "ledger", "checkpoint", "-c", str(made.config), "--now", "2026-11-01T02:00:30Z"
    )
    assert (code, err) == (0, ""), err
    assert "delivered to 1 of 1 sinks" in out
    write(made.ledger, range(CUT, START + 360))
    return made


def verify_elsewhere(pack: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`im-prober evidence verify` as another machine runs it: a copy of the pack in a
    fresh folder, another working directory, no config anywhere near."""
    elsewhere = tmp_path / "elsewhere"
    if elsewhere.exists():
        shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    copy = elsewhere / "received"
    shutil.copytree(pack, copy)
    keys = [a for a in args if a.endswith(".pub")]
    for key in keys:
        shutil.copy(key, elsewhere / Path(key).name)
    argv = [a if not a.endswith(".pub") else Path(a).name for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_PROBER")}
    result = subprocess.run(
        [sys.executable, "-m", "prober", "evidence", "verify", "received", *argv],
        cwd=elsewhere,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout + result.stderr


def test_a_pack_made_here_verifies_elsewhere_with_only_the_public_key(
    site: Site, tmp_path: Path, capsys
) -> None:
    pack = site.pack(capsys)
    code, out = verify_elsewhere(pack, tmp_path, "--key", str(site.public_key))
    assert code == 0, out
    fingerprint = json.loads((pack / "summary.json").read_text())["signed_by"]
    assert f"proved: signed by key {fingerprint}, the key you trust" in out
    assert "proved: every file is listed in SHA256SUMS and matches its checksum (13 files)" in out
    assert "proved: 720 minute rows, 360 attempts chained without a break (3 chains" in out
    assert "extends checkpoint of 2026-11-01T02:00:30Z (manual, here)" in out
    assert "the report's 6 failed minutes and their 6 attempts" in out
    assert out.rstrip().endswith("result: everything checked holds")


def test_anyone_can_check_the_pack_without_this_program(site: Site, capsys) -> None:
    pack = site.pack(capsys)
    sums = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=pack)
    assert sums.returncode == 0
    signature = subprocess.run(
        ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(site.public_key), "-rawin",
         "-in", "SHA256SUMS", "-sigfile", "SHA256SUMS.sig"],
        cwd=pack, capture_output=True, text=True,
    )  # fmt: skip
    assert "Signature Verified Successfully" in signature.stdout, signature.stderr


def tampered(site: Site, tmp_path: Path, capsys, change: Callable[[Path], None], *args: str) -> str:
    pack = site.pack(capsys, name=f"pack-{len(list(site.root.iterdir()))}")
    change(pack)
    code, out = verify_elsewhere(pack, tmp_path, *args)
    assert code == 1, out
    assert "result: the pack does NOT hold" in out
    return out


def edit_line(path: Path, number: int, old: str, new: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    assert old in lines[number], lines[number]
    lines[number] = lines[number].replace(old, new, 1)
    path.write_text("".join(lines))


def test_an_edited_csv_row_is_caught_and_named(site: Site, tmp_path: Path, capsys) -> None:
    # a failed minute made available in the chained rows
    def flip(pack: Path) -> None:
        rows = (pack / MINUTE_ROWS).read_text().splitlines()
        failed = f",{START + 30},1,0,"  # minute, state apparent_failure, reason none
        number = next(
            i for i, r in enumerate(rows) if r.startswith("minutes,box,,,") and failed in r
        )
        edit_line(pack / MINUTE_ROWS, number, failed, f",{START + 30},0,0,")

    out = tampered(site, tmp_path, capsys, flip, "--key", str(site.public_key))
    assert "BROKEN: chain_minutes.csv does not match its checksum" in out
    assert "BROKEN: chain_minutes.csv line " in out
    assert "minutes of box (target level), minute 2026-11-01T00:30:00Z" in out
    assert "its hash does not follow from the row before it and its content" in out
    # and the claim no longer matches the chained rows either
    assert "failed_minutes.csv lists 1 minute the chain does not hold as failed" in out

    # an attempt's outcome changed in the claim's own table
    def soften(pack: Path) -> None:
        edit_line(pack / "attempts.csv", 1, ",failure,", ",client_error,")

    out = tampered(site, tmp_path, capsys, soften)
    assert "BROKEN: attempts.csv does not match its checksum" in out
    assert "BROKEN: attempts.csv has 1 attempt the chain does not hold" in out


def test_a_dropped_or_added_file_is_caught(site: Site, tmp_path: Path, capsys) -> None:
    out = tampered(site, tmp_path, capsys, lambda p: (p / "report.txt").unlink())
    assert "BROKEN: report.txt is listed in SHA256SUMS but missing" in out
    out = tampered(site, tmp_path, capsys, lambda p: (p / "notes.txt").write_text("hi\n"))
    assert "BROKEN: notes.txt is in the folder but not listed in SHA256SUMS: it was added" in out


def test_a_swapped_signature_or_another_key_is_caught(site: Site, tmp_path: Path, capsys) -> None:
    other = site.pack(capsys, name="other-pack", now="2026-11-01T05:00:00Z")

    def swap(pack: Path) -> None:
        shutil.copy(other / "SHA256SUMS.sig", pack / "SHA256SUMS.sig")

    out = tampered(site, tmp_path, capsys, swap)
    assert "BROKEN: the signature does not hold" in out

    # someone makes the whole pack over with a key of their own
    _, stranger = generate_key_pair(tmp_path / "stranger.key")

    def resign(pack: Path) -> None:
        from cryptography.hazmat.primitives import serialization

        private = serialization.load_pem_private_key((tmp_path / "stranger.key").read_bytes(), None)
        (pack / "public_key.pem").write_text(stranger.pem)
        lines = []
        for line in (pack / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split("  ")
            if name == "public_key.pem":
                digest = subprocess.run(
                    ["sha256sum", name], cwd=pack, capture_output=True, text=True
                ).stdout.split()[0]
            lines.append(f"{digest}  {name}")
        sums = "\n".join(lines) + "\n"
        (pack / "SHA256SUMS").write_text(sums)
        (pack / "SHA256SUMS.sig").write_bytes(private.sign(sums.encode()))  # type: ignore[union-attr]

    out = tampered(site, tmp_path, capsys, resign, "--key", str(site.public_key))
    assert f"BROKEN: signed by key {stranger.fingerprint}, NOT by the key you trust" in out


def test_history_rewritten_after_a_checkpoint_is_caught_even_with_the_key(
    site: Site, tmp_path: Path, capsys
) -> None:
    """Whoever holds the prober's key and ledger can rewrite the chain from a row on and
    sign a fresh pack; the checkpoint that left the machine earlier still says what the
    rows were."""
    from cryptography.hazmat.primitives import serialization

    pack = site.pack(capsys, name="rewritten")
    key = ("minutes", "box", "", "")
    path = pack / MINUTE_ROWS
    lines = path.read_text().splitlines()
    columns = header(MINUTE_ROWS)
    prev = None
    for number, line in enumerate(lines[1:], 1):
        cells = line.split(",")
        if tuple(cells[:4]) != key:
            continue
        seq = int(cells[4])
        values = [int(c) for c in cells[6:]]
        if prev is None:
            segment = json.loads((pack / SEGMENT).read_text())
            prev = bytes.fromhex(
                next(c for c in segment["chains"] if c["table"] == "minutes" and not c["probe"])[
                    "prev_hash"
                ]
            )
        if seq == 31:  # the first failed minute becomes available, and every hash after it
            values[columns.index("state") - 6] = 0
        digest, _ = chain.row_link(chain.ChainKey(*key), prev, seq, values)
        lines[number] = ",".join([*cells[:4], str(seq), digest.hex(), *map(str, values)])
        prev = digest
    path.write_text("\n".join(lines) + "\n")
    (pack / "failed_minutes.csv").write_text(
        "\n".join(
            r for r in (pack / "failed_minutes.csv").read_text().splitlines()
            if "T00:30:00Z" not in r
        ) + "\n"
    )  # fmt: skip
    report = json.loads((pack / "report.json").read_text())
    report["minutes"]["apparent_failure"] -= 1
    (pack / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    private = serialization.load_pem_private_key((site.root / "evidence.key").read_bytes(), None)
    sums = subprocess.run(
        ["sha256sum", *sorted(n for n in os.listdir(pack) if not n.startswith("SHA256SUMS"))],
        cwd=pack, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (pack / "SHA256SUMS").write_text(sums)
    (pack / "SHA256SUMS.sig").write_bytes(private.sign(sums.encode()))  # type: ignore[union-attr]
    code, out = verify_elsewhere(pack, tmp_path, "--key", str(site.public_key))
    assert code == 1, out
    assert "proved: signed by key" in out
    assert "proved: 720 minute rows, 360 attempts chained without a break" in out
    assert (
        "BROKEN: checkpoint of 2026-11-01T02:00:30Z (manual, here): 1 of its 3 heads on these "
        "chains differ from the pack's rows (first: minutes of box (target level) seq 120): "
        "the rows were rewritten after the checkpoint"
    ) in out


def test_an_unsigned_pack_is_made_and_verify_says_it_proves_nobody_made_it(
    tmp_path: Path, capsys
) -> None:
    plain = Site(tmp_path / "plain", signed=False)
    write(plain.ledger, range(START, START + 60))
    pack = plain.pack(capsys, now="2026-11-01T01:00:00Z")
    assert not (pack / "SHA256SUMS.sig").exists()
    code, out = verify_elsewhere(pack, tmp_path)
    assert code == 1, out
    assert "not proved: the pack is not signed" in out
    assert "result: nothing is broken, but the pack is not signed" in out
    generate_key_pair(tmp_path / "mine.key")
    code, out = verify_elsewhere(pack, tmp_path, "--key", str(tmp_path / "mine.key.pub"))
    assert code == 1 and "BROKEN: the pack is not signed" in out


def test_verify_of_something_that_is_not_a_pack_is_a_user_error(tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "evidence", "verify", str(tmp_path / "absent"))
    assert code == 2 and "no such folder" in err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    code, _, err = run(capsys, "evidence", "verify", str(tmp_path / "notes"))
    assert code == 2 and "not an evidence pack" in err
    (tmp_path / "k.pub").write_text("not a key")
    code, _, err = run(capsys, "evidence", "verify", str(tmp_path / "notes"), "--key",
                       str(tmp_path / "k.pub"))  # fmt: skip
    assert code == 2 and "not a PEM public key" in err


def test_the_pack_carries_the_newest_checkpoint_inside_the_month_signed_by_its_key(
    site: Site, tmp_path: Path, capsys
) -> None:
    # a checkpoint by another key whose heads are inside the month (a copy of this ledger),
    # and a later one of ours whose heads lie past the pack's rows: neither is carried
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    generate_key_pair(stranger / "evidence.key")
    foreign = stranger / "config.yaml"
    foreign.write_text(
        site.config.read_text().replace("checkpoints}", f"{site.root / 'checkpoints'}}}")
    )
    shutil.copy(site.ledger, stranger / "ledger.sqlite3")
    code, _, err = run(
        capsys, "ledger", "checkpoint", "-c", str(foreign), "--now", "2026-11-01T06:00:30Z"
    )
    assert code == 0, err
    write(site.ledger, range(START + 360, START + 400))
    code, _, err = run(
        capsys, "ledger", "checkpoint", "-c", str(site.config), "--now", "2026-11-01T06:40:30Z"
    )
    assert code == 0, err
    assert len(list((site.root / "checkpoints").iterdir())) == 3
    pack = site.pack(capsys)  # the month as of 06:00: rows up to minute 360
    carried = json.loads((pack / "checkpoint.json").read_text())
    assert carried["time"] == "2026-11-01T02:00:30Z"
    assert json.loads((pack / "summary.json").read_text())["checkpoint"] == "2026-11-01T02:00:30Z"
