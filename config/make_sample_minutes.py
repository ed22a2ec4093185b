"""Regenerate config/sample-minutes.csv.gz: one service month of the `demo` target.

Deterministic (fixed seed), so the committed file can be checked by running this again.
Usage: python config/make_sample_minutes.py > /dev/null  (writes the file next to itself)
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def minute_of(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp()) // 60


def main() -> None:
    rng = random.Random(20261017)
    start, end = minute_of("2026-10-17T00:00"), minute_of("2026-11-17T00:00")
    states = {m: ("available", "") for m in range(start, end)}
    # A long outage, a few short blips, announced maintenance, the prober itself down a while.
    for m in range(minute_of("2026-10-23T14:07"), minute_of("2026-10-23T21:07")):
        states[m] = ("apparent_failure", "")
    for _ in range(8):
        first = rng.randrange(start, end - 10)
        for m in range(first, first + rng.randint(1, 9)):
            states[m] = ("apparent_failure", "")
    for m in range(minute_of("2026-11-01T02:00"), minute_of("2026-11-01T04:00")):
        states[m] = ("maintenance", "")
    for m in range(minute_of("2026-11-09T03:12"), minute_of("2026-11-09T06:32")):
        states[m] = ("no_data", "prober_down")
    for m in rng.sample(range(start, end), 30):
        if states[m][0] == "available":
            states[m] = ("no_data", "excluded_only")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["target", "probe", "minute", "state", "reason"])
    for m in range(start, end):
        stamp = datetime.fromtimestamp(m * 60, ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
        writer.writerow(["demo", "", stamp, *states[m]])
    out = Path(__file__).with_name("sample-minutes.csv.gz")
    out.write_bytes(gzip.compress(text.getvalue().encode(), mtime=0))


if __name__ == "__main__":
    main()
