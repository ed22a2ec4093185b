"""Where the time goes in a py-spy profile: collapsed stacks (`py-spy record --format raw`,
as `bench/daemon_bench.py --profile` and `bench/loop_watch.py --profile` write them) summed
by thread, by module self (the samples whose innermost frame is in it: a library as a
whole, the prober's modules one by one), by function inclusive (a function's samples with
everything it called) and by function self (the samples where it was the innermost frame).

Without `--idle` py-spy keeps only samples of a thread that was running, so the shares
below are shares of the process's busy samples, close to its CPU.

    python bench/profile_summary.py FILE [--top 25] [--under NAME]

`--under NAME` keeps the stacks through a function whose name contains NAME (for example
`_run_once` for the event loop's thread) and gives the shares of those.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# a frame as py-spy writes it: "function (path/to/file.py:123)"; the line is left out of
# the function's key, so a function's samples add up across its lines
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def function_of(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    # the package or library and the module: prober/runtime/fleet.py, aiohttp/client.py
    parts = path.split("/")
    return f"{match['function']} ({'/'.join(parts[-2:])})"


def module_of(frame: str) -> str:
    """A library as one (aiohttp, asyncio), the prober's own modules each (runtime/fleet.py)."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    parts = match["file"].split("/")
    if "prober" in parts[:-1]:
        return "/".join(parts[parts.index("prober") :])
    return parts[0] if len(parts) > 1 else parts[-1]


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        frames, _, count = line.rpartition(" ")
        if not count.isdigit():
            raise SystemExit(f"{path}:{number}: not a collapsed stack (no sample count)")
        stacks.append((frames.split(";"), int(count)))
    return stacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", help="only the stacks through a function named so")
    args = parser.parse_args()
    stacks = read(args.file)
    if args.under:
        stacks = [(f, c) for f, c in stacks if any(args.under in frame for frame in f)]
    total = sum(count for _, count in stacks)
    if total == 0:
        raise SystemExit(f"{args.file}: no samples")
    threads: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for frames, count in stacks:
        threads[frames[0]] += count  # py-spy --threads: the thread is the outermost frame
        functions = [function_of(frame) for frame in frames[1:]]
        for function in set(functions):  # once per stack, however deep the recursion
            inclusive[function] += count
        if functions:
            own[functions[-1]] += count
            modules[module_of(frames[-1])] += count
    print(f"{args.file}: {total:,} samples" + (f" through {args.under!r}" if args.under else ""))
    for title, counter in (
        ("by thread", threads),
        ("by module, self", modules),
        ("by function, inclusive", inclusive),
        ("by function, self", own),
    ):
        print(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            print(f"  {count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
