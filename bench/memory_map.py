"""Where the daemon's memory goes: the real daemon probes N `http` targets (as
bench/daemon_bench.py) with tracemalloc on from its first import; after a warm-up that has
closed and written minutes, one snapshot of what Python allocated is grouped by the
module that allocated it, beside the process's RSS. The gap is C libraries' (OpenSSL,
SQLite's page cache), the allocator's free lists and, much the largest part here,
tracemalloc's own record of every live allocation: read the traced figures, not the RSS.

tracemalloc slows the daemon down (every allocation is traced), so the default size is
2,000 targets, which it still probes on time; per-target figures scale to other sizes.

    python bench/memory_map.py [--targets 2000] [--after 180] [--top 25]
    python bench/memory_map.py --child OUT AFTER -- <arguments of `prober run`>  (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_bench import ROOT, free_port, pinned, rss_mb, scrape, start_fast_server, write_config


def _owner(filename: str) -> str:
    """The module that allocated: this project's file, else the top-level package."""
    path = Path(filename)
    parts = path.parts
    if "prober" in parts and "site-packages" not in parts:
        return "/".join(parts[parts.index("prober") :])
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    return "stdlib " + path.stem


def child(out: Path, after: float, argv: list[str]) -> int:
    import tracemalloc

    tracemalloc.start(1)

    def snapshot() -> None:
        time.sleep(after)
        snap = tracemalloc.take_snapshot()
        by_owner: dict[str, int] = defaultdict(int)
        by_line: dict[str, int] = defaultdict(int)
        for stat in snap.statistics("lineno"):
            frame = stat.traceback[0]
            by_owner[_owner(frame.filename)] += stat.size
            by_line[f"{_owner(frame.filename)}:{frame.lineno}"] += stat.size
        traced, _peak = tracemalloc.get_traced_memory()
        rss = rss_mb(os.getpid())
        out.write_text(
            json.dumps({"traced": traced, "rss_mb": rss, "owners": by_owner, "lines": by_line})
        )

    threading.Thread(target=snapshot, daemon=True).start()
    sys.path.insert(0, str(ROOT))
    from prober.cli import main

    return main(["run", *argv])


def run(targets: int, after: float, top: int) -> None:
    server, url = start_fast_server()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "config.yaml"
        write_config(config, targets, url)
        out = folder / "memory.json"
        web = free_port()
        proc = subprocess.Popen(
            [
                *pinned(0),
                sys.executable,
                __file__,
                "--child",
                str(out),
                str(after),
                "--",
                "-c",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{web}",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(folder / "log", "w"),  # noqa: SIM115
        )
        try:
            deadline = time.time() + after + 120
            while not out.exists():
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError((folder / "log").read_text())
                time.sleep(1)
            time.sleep(1)  # the file is written whole by then
            metrics = scrape(f"http://127.0.0.1:{web}/metrics")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            server.terminate()
            server.wait()
        found = json.loads(out.read_text())
    attempts = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("im_probe_duration_seconds_count{")
    )
    traced = found["traced"] / 2**20
    print(
        f"{targets} targets, snapshot {after:.0f} s after start ({attempts:.0f} attempts so far): "
        f"RSS {found['rss_mb']:.0f} MB, traced by Python {traced:.0f} MB, "
        f"untraced (tracemalloc's own records among it) {found['rss_mb'] - traced:.0f} MB"
    )
    print(f"by module (top {top}):            MB   KB/target")
    for owner, size in sorted(found["owners"].items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {owner:34s} {size / 2**20:6.1f}  {size / 1024 / targets:6.2f}")
    print(f"by line (top {top}):")
    for line, size in sorted(found["lines"].items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {line:60s} {size / 2**20:6.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--after", type=float, default=180.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--child", type=Path)
    args, rest = parser.parse_known_args()
    if args.child is not None:
        after, rest = float(rest[0]), rest[1:]
        rest = rest[1:] if rest[:1] == ["--"] else rest
        raise SystemExit(child(args.child, after, rest))
    run(args.targets, args.after, args.top)


if __name__ == "__main__":
    main()
