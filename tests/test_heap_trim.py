"""The daemon gives the C allocator's free pages back once a minute (prober/daemon.py,
HeapTrim): on glibc, memory freed between live objects leaves the process's RSS."""

from __future__ import annotations

from pathlib import Path

import pytest

from prober.daemon import HeapTrim


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_free_pages_between_live_objects_leave_the_process() -> None:
    trim = HeapTrim()
    if not trim.available:
        pytest.skip("the C library has no malloc_trim")
    size, count = 100_000, 600  # below malloc's mmap threshold: from its heap
    # every other block stays alive, so what is freed lies between live blocks, where
    # free() alone cannot give it back
    blocks = [bytearray(b"x" * size) for _ in range(2 * count)]
    kept = blocks[1::2]
    before = rss_bytes()
    del blocks
    freed = rss_bytes()
    trim.once()
    after = rss_bytes()
    assert before - freed < size * count // 4  # free() alone gave back little
    assert freed - after > size * count // 2
    assert all(len(k) == size for k in kept)
